#!/usr/bin/env bash
# Builds (once, cached) a Debian 12 root filesystem with OVS 3.1 + OVS-DPDK 3.1 (DPDK 22.11),
# the datapath FerrOVN ran before the move to OVS 3.5 / OVN 25.03 (issue: OVS 3.5 everywhere),
# laid out like deploy/images/ovs-ovn/build.sh's output, so the perf harness can run the old
# build and the new one on the same machine in the same session:
#
#   dir=$(bash perf/scripts/ovs31-baseline.sh)
#   FERROVN_OVS_DIR=$dir FERROVN_DPDK_VSWITCHD=$dir/bin/ovs-vswitchd-dpdk PATH=$dir/bin:$PATH \
#     target/release/ferrovn-perf --quick
#
# Only for that comparison: tests, the lab and images use the Debian 13 tree.
set -euo pipefail

CACHE=${FERROVN_CACHE:-/var/cache/ferrovn}
SUITE=bookworm
PACKAGES=(
  openvswitch-switch openvswitch-switch-dpdk openvswitch-common
  librte-bus-vdev23 librte-mempool-ring23 librte-net-af-packet23 librte-net-ring23 librte-net-null23
)
PROGRAMS=(
  usr/sbin/ovsdb-server usr/bin/ovsdb-tool usr/bin/ovsdb-client
  usr/bin/ovs-vsctl usr/bin/ovs-appctl usr/bin/ovs-ofctl usr/bin/ovs-dpctl
  usr/lib/openvswitch-switch/ovs-vswitchd usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk
)
dir=$CACHE/ovs-baseline/$SUITE
root=$dir/rootfs
bin=$dir/bin
if [ -f "$dir/complete" ]; then echo "$dir"; exit 0; fi
[ "$(id -u)" = 0 ] || { echo "ovs31-baseline: needs root (debootstrap)" >&2; exit 1; }
command -v debootstrap >/dev/null || {
  echo "ovs31-baseline: debootstrap missing (make deps ovs-ovn installs it)" >&2; exit 1; }
mirror=$(
  { grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources || true
    grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list || true
  } | awk '{print $2}' | grep -v -- '-security' | grep '/debian/\?$' | head -n1 || true
)
[ -n "$mirror" ] || { echo "ovs31-baseline: no Debian mirror in /etc/apt/sources.list{,.d}" >&2; exit 1; }
rm -rf "$dir"; mkdir -p "$dir"
debootstrap --variant=minbase --include="$(IFS=,; echo "${PACKAGES[*]}")" \
  --keyring=/usr/share/keyrings/debian-archive-bookworm-stable.gpg \
  "$SUITE" "$root.partial" "$mirror" >"$dir/debootstrap.log" 2>&1 || {
    tail -n 20 "$dir/debootstrap.log" >&2; exit 1; }
rm -rf "$root.partial"/var/cache/apt/archives/*.deb "$root.partial"/var/lib/apt/lists/*
mv "$root.partial" "$root"
mkdir -p "$bin"
for p in "${PROGRAMS[@]}"; do
  [ -x "$root/$p" ] || { echo "ovs31-baseline: $p missing from the $SUITE packages" >&2; exit 1; }
  # Same launcher as build.sh: the rootfs' /usr in a private mount namespace, host /run and
  # network namespaces untouched.
  cat >"$bin/$(basename "$p")" <<EOS
#!/bin/sh
exec unshare --mount --propagation slave /bin/sh -c 'mount --bind "\$0/usr" /usr && mount --bind "\$0/etc/ld.so.cache" /etc/ld.so.cache && exec "\$@"' "$root" "/$p" "\$@"
EOS
  chmod 0755 "$bin/$(basename "$p")"
done
ln -sfn "$root/usr/share" "$dir/share"
chroot "$root" dpkg-query -W -f='${Package} ${Version}\n' "${PACKAGES[@]}" >"$dir/versions"
touch "$dir/complete"
echo "$dir"
