#!/usr/bin/env bash
# Builds (once, cached) the Debian 13 root filesystem that holds FerrOVN's OVS 3.5 / OVN 25.03
# (plain and DPDK ovs-vswitchd, ovsdb-server, ovn-northd, ovn-controller and their CLI tools),
# and a directory of launchers that run those programs from it on this host.
#
# Why a rootfs: Debian 12 ships OVS 3.1 / OVN 23.03 (no userspace TSO through Geneve, no ACL
# tiers); Debian 13's packages need a newer libc than the host's. The same tree is the content of
# FerrOVN's OVS/OVN container image.
#
# Output (FERROVN_CACHE defaults to /var/cache/ferrovn):
#   $FERROVN_CACHE/ovs-ovn/<key>/rootfs   the Debian 13 tree
#   $FERROVN_CACHE/ovs-ovn/<key>/bin      one launcher per program (put it first on PATH)
#   $FERROVN_CACHE/ovs-ovn/current        symlink to the newest complete <key>
# <key> hashes this script, so a changed package list builds a new tree; a second run with the
# same script is a no-op. Prints the bin directory on its last line.
set -euo pipefail

CACHE=${FERROVN_CACHE:-/var/cache/ferrovn}
SUITE=trixie
PACKAGES=(
  openvswitch-switch openvswitch-switch-dpdk openvswitch-common
  ovn-central ovn-host ovn-common
  librte-bus-vdev25 librte-mempool-ring25 librte-net-af-packet25 librte-net-ring25 librte-net-null25
)
# Programs the tests, the lab and the perf harness run, and where Debian 13 installs them.
PROGRAMS=(
  usr/sbin/ovsdb-server usr/bin/ovsdb-tool usr/bin/ovsdb-client
  usr/bin/ovs-vsctl usr/bin/ovs-appctl usr/bin/ovs-ofctl usr/bin/ovs-dpctl
  usr/lib/openvswitch-switch/ovs-vswitchd usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk
  usr/bin/ovn-northd usr/bin/ovn-controller usr/bin/ovn-nbctl usr/bin/ovn-sbctl
  usr/bin/ovn-appctl usr/bin/ovn-trace usr/bin/ovn-detrace
)
# DPDK 24.11's drivers are plugins in packages of their own (openvswitch-switch-dpdk pulls only
# the libraries it links): the vdev bus, the ring mempool, and af_packet / ring / null ports (a
# DPDK node's uplink here is an af_packet port on a veth).
# dpdk-testpmd stays the host's (Debian 12 dpdk-dev, DPDK 22.11, the same DPDK the vhost helper
# links): vhost-user is a wire protocol, so it talks to OVS-DPDK 3.5 with DPDK 24.11 as it is.

self=$(readlink -f "$0")
key=$(sha256sum "$self" | cut -c1-12)
top=$CACHE/ovs-ovn
dir=$top/$key
root=$dir/rootfs
bin=$dir/bin

if [ -f "$dir/complete" ]; then
  ln -sfn "$key" "$top/current"
  echo "$bin"
  exit 0
fi

if [ "$(id -u)" != 0 ]; then
  echo "ovs-ovn: building the Debian 13 rootfs needs root (debootstrap)" >&2
  exit 1
fi
if ! command -v debootstrap >/dev/null; then
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null
fi

# The Debian mirror this host already uses (no mirror name is written into the repository).
mirror=$(
  { grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources || true
    grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list || true
  } | awk '{print $2}' | grep -v -- '-security' | grep '/debian/\?$' | head -n1 || true
)
if [ -z "$mirror" ]; then
  echo "ovs-ovn: no Debian mirror found in /etc/apt/sources.list{,.d} to fetch $SUITE from" >&2
  exit 1
fi

start=$(date +%s)
# Trees of older versions of this script are not used any more.
find "$top" -mindepth 1 -maxdepth 1 -type d ! -name "$key" -exec rm -rf {} + 2>/dev/null || true
rm -rf "$dir"
mkdir -p "$dir"
tmp=$dir/rootfs.partial
echo "ovs-ovn: debootstrap $SUITE with ${PACKAGES[*]} into $root" >&2
# Package scripts must not try to start services in the tree (there is no init in it).
debootstrap --variant=minbase --include="$(IFS=,; echo "${PACKAGES[*]}")" \
  --keyring=/usr/share/keyrings/debian-archive-trixie-stable.gpg \
  "$SUITE" "$tmp" "$mirror" >"$dir/debootstrap.log" 2>&1 || {
    echo "ovs-ovn: debootstrap failed; last lines of $dir/debootstrap.log:" >&2
    tail -n 20 "$dir/debootstrap.log" >&2
    exit 1
  }
# Nothing from the package cache is needed at run time.
rm -rf "$tmp"/var/cache/apt/archives/*.deb "$tmp"/var/lib/apt/lists/*
mv "$tmp" "$root"

mkdir -p "$bin"
for p in "${PROGRAMS[@]}"; do
  if [ ! -x "$root/$p" ]; then
    echo "ovs-ovn: $p is missing from the $SUITE packages" >&2
    exit 1
  fi
  name=$(basename "$p")
  # A private mount namespace (slave: the host's later mounts, e.g. vhost-user socket
  # directories, still reach the daemon; nothing propagates back) in which the rootfs' /usr and
  # its loader cache replace the host's. The host's /run, /tmp, /var, /dev, /proc, /sys and
  # network namespaces stay as they are. `unshare` and `sh` exec in place, so the PID a caller
  # gets is the daemon's own PID.
  cat >"$bin/$name" <<EOF
#!/bin/sh
exec unshare --mount --propagation slave /bin/sh -c 'mount --bind "\$0/usr" /usr && mount --bind "\$0/etc/ld.so.cache" /etc/ld.so.cache && exec "\$@"' "$root" "/$p" "\$@"
EOF
  chmod 0755 "$bin/$name"
done
if [ -z "$(find "$root/usr/lib" -name 'librte_net_af_packet.so*' -print -quit)" ]; then
  echo "ovs-ovn: no DPDK af_packet driver in the rootfs (package librte-net-af-packet25)" >&2
  exit 1
fi
# The schemas the tests and the lab create databases from.
ln -sfn "$root/usr/share" "$dir/share"

# Record what is inside, for the lab's banner and the notes.
chroot "$root" dpkg-query -W -f='${Package} ${Version}\n' "${PACKAGES[@]}" >"$dir/versions"
touch "$dir/complete"
ln -sfn "$key" "$top/current"
echo "ovs-ovn: built in $(( $(date +%s) - start )) s: $(du -sh "$root" | cut -f1)" >&2
cat "$dir/versions" >&2
echo "$bin"
