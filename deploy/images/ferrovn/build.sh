#!/usr/bin/env bash
# FerrOVN's image, built without a registry or a container daemon:
#
#   deploy/images/ferrovn/build.sh [--print-tar]
#
# One image, ferrovn.invalid/ferrovn:dev, for every FerrOVN container of deploy/ferrovn.yaml
# (controller, node agent, the install-cni init container) and the vhost helper:
#
#   ours    /usr/local/bin/ferrovn-{controller,node,cni,vhost} (stripped), from target/release
#           (make ferrovn-image builds them: CARGO_PROFILE_RELEASE_DEBUG=false)
#   tools   what the agent runs besides itself: `nft` (natOutgoing), `tc`, and for whoever
#           debugs a node, `ip`, `ovs-vsctl`, `ovs-appctl`, `ovs-ofctl`, each with exactly its
#           library closure, taken from the Debian 13 OVS 3.5 / OVN 25.03 rootfs
#           (deploy/images/ovs-ovn/build.sh) after `apt-get install nftables iproute2` in a
#           chroot of a copy of it; glibc from there too (our binaries need only libc, libm,
#           libgcc_s). The rootfs itself (250 MB) is not shipped: nothing in the image runs
#           ovsdb-server, ovs-vswitchd or ovn-controller.
#   DPDK    ferrovn-vhost links the host's DPDK 22.11 (Debian 12, sonames .so.23), which
#           Debian 13 does not have (24.11, .so.25): its library closure (glibc excepted) and
#           the EAL plugins it loads (vdev bus, ring mempool, vhost, af_packet and tap PMDs) come
#           from the host
#   shell   the host's static busybox (make deps: busybox-static) as /bin/sh with its applets,
#           for the install-cni init container (install, mv, ln)
#
# Output: ${FERROVN_CACHE:-/var/cache/ferrovn}/images/ferrovn.tar (an OCI image layout tar,
# `ctr -n k8s.io images import`), with ferrovn.tar.stamp. FERROVN_IMAGE_BINS_DIR (default
# target/release) and FERROVN_IMAGE_TAR change where the binaries come from and where the tar
# goes (the tests build it from their debug binaries). Binaries are stripped in the image. The stamp holds the sha256 of every
# binary, the base rootfs key and this script's and the writer's hashes: a second run with the
# same binaries is a no-op. docs/kubernetes.md has the timings.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../../.." && pwd)
CACHE=${FERROVN_CACHE:-/var/cache/ferrovn}
OUT=$CACHE/images
TAR=${FERROVN_IMAGE_TAR:-$OUT/ferrovn.tar}
REF=ferrovn.invalid/ferrovn:dev
BIN_DIR=${FERROVN_IMAGE_BINS_DIR:-$REPO/target/release}
OVS_DIR=${FERROVN_OVS_DIR:-$CACHE/ovs-ovn/current}
BINS=(ferrovn-controller ferrovn-node ferrovn-cni ferrovn-vhost)
EXTRA_PACKAGES=(nftables iproute2)
# Programs taken from the rootfs (with their libraries), as `command -v` finds them there.
TOOLS=(nft tc ip ovs-vsctl ovs-appctl ovs-ofctl)
BUSYBOX=/bin/busybox
# The EAL plugins ferrovn-vhost needs (EAL loads every file of its plugin directory, so only
# these go there; a plugin whose libraries are missing would stop rte_eal_init).
DPDK_PMD_DIR=/usr/lib/x86_64-linux-gnu/dpdk/pmds-23.0
# af_packet and tap: the helper's kernel side (`"kernel":"af_packet"`, the agent's choice, or "tap")
DPDK_PMDS=(librte_bus_vdev.so.23 librte_mempool_ring.so.23 librte_net_vhost.so.23
    librte_net_af_packet.so.23 librte_net_tap.so.23)

if [ "${1:-}" = --print-tar ]; then
    echo "$TAR"
    exit 0
fi

for b in "${BINS[@]}"; do
    if [ ! -x "$BIN_DIR/$b" ]; then
        echo "ferrovn-image: $BIN_DIR/$b missing (make ferrovn-image builds it)" >&2
        exit 1
    fi
done
if [ ! -d "$OVS_DIR/rootfs" ]; then
    echo "ferrovn-image: no OVS/OVN rootfs in $OVS_DIR (make ovs-ovn)" >&2
    exit 1
fi
base_key=$(basename "$(readlink -f "$OVS_DIR")")
recipe="ref=$REF base=$base_key extra=${EXTRA_PACKAGES[*]} tools=${TOOLS[*]} pmds=${DPDK_PMDS[*]}"
recipe="$recipe busybox=$(sha256sum "$BUSYBOX" 2>/dev/null | cut -c1-12)"
recipe="$recipe script=$(sha256sum "$HERE/build.sh" | cut -c1-12)"
recipe="$recipe writer=$(sha256sum "$REPO/deploy/kube/oci-image.py" | cut -c1-12)"
for b in "${BINS[@]}"; do recipe="$recipe $b=$(sha256sum "$BIN_DIR/$b" | cut -c1-16)"; done
up_to_date() { [ -f "$TAR" ] && [ "$(cat "$TAR.stamp" 2>/dev/null)" = "$recipe" ]; }
if up_to_date; then
    echo "ferrovn-image: up to date ($TAR)"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "ferrovn-image: needs root (chroot into a copy of the rootfs)" >&2
    exit 1
fi

mkdir -p "$OUT" "$(dirname "$TAR")"
exec 9>"$OUT/.ferrovn.lock" # one build at a time (the base is shared)
flock 9
if up_to_date; then
    echo "ferrovn-image: up to date ($TAR, built by a concurrent run)"
    exit 0
fi
t0=$(date +%s)
stage=$TAR.stage
rm -rf "$stage"
# The base (tools + glibc, no FerrOVN binary) depends on nothing of ours: kept between builds.
base=$OUT/ferrovn-base-$(echo "$base_key ${EXTRA_PACKAGES[*]} ${TOOLS[*]} $(sha256sum <"$HERE/build.sh" | cut -d" " -f1)" | sha256sum | cut -c1-12)
if [ ! -f "$base/.complete" ]; then
    rm -rf "$OUT"/ferrovn-base-* "$OUT/ferrovn-rootfs.partial"
    full=$OUT/ferrovn-rootfs.partial
    cp -a "$OVS_DIR/rootfs" "$full"
    # apt in the chroot needs name resolution and /proc; both only for this step, in a mount
    # namespace of its own (nothing stays mounted). ldd there lists each tool's libraries.
    cp /etc/resolv.conf "$full/etc/resolv.conf"
    unshare --mount --propagation private sh -ec '
        mount -t proc proc "$1/proc"
        chroot "$1" /usr/bin/env PATH=/usr/sbin:/usr/bin DEBIAN_FRONTEND=noninteractive sh -ec "
            apt-get -q update
            apt-get -q install -y --no-install-recommends $2
            for t in $3; do p=\$(command -v \$t); echo \$p; ldd \$p; done >/closure.txt"
    ' sh "$full" "${EXTRA_PACKAGES[*]}" "${TOOLS[*]}" >"$OUT/ferrovn-base.log" 2>&1 || {
        echo "ferrovn-image: apt-get install ${EXTRA_PACKAGES[*]} in the rootfs failed:" >&2
        tail -n 20 "$OUT/ferrovn-base.log" >&2
        exit 1
    }
    part=$base.partial
    rm -rf "$part"
    mkdir -p "$part/usr/bin" "$part/usr/sbin" "$part/usr/lib/x86_64-linux-gnu" "$part/usr/lib64" \
        "$part/etc" "$part/run" "$part/var/run" "$part/root" "$part/tmp"
    # Debian's merged /usr
    for d in bin sbin lib lib64; do ln -s "usr/$d" "$part/$d"; done
    rmdir "$part/var/run" && ln -s ../run "$part/var/run"
    # each tool at its path, each library (resolved) under its soname in the multiarch dir
    while read -r first second third _; do
        case $first in
        /*/ld-linux-x86-64.so.2)
            install -m 0755 "$full$(readlink -f "$full$first" | sed "s|^$full||")" \
                "$part/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
            ln -sfn ../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 "$part/usr/lib64/ld-linux-x86-64.so.2"
            ;;
        /*) install -m 0755 "$full$first" "$part/usr/${first#/usr/}" ;;
        *)
            [ "$second" = "=>" ] && [ "${third#/}" != "$third" ] || continue
            real=$(cd "$full" && readlink -f "./$third" | sed "s|^$full||")
            install -m 0644 "$full$real" "$part/usr/lib/x86_64-linux-gnu/$first"
            ;;
        esac
    done <"$full/closure.txt"
    cp -a "$full/etc/ethertypes" "$full/etc/iproute2" "$part/etc/" 2>/dev/null || true
    : >"$part/etc/resolv.conf"
    rm -rf "$full"
    touch "$part/.complete"
    mv "$part" "$base"
fi
t1=$(date +%s)

# The image's tree: a copy of the base, our files added.
cp -a "$base" "$stage"
rm -f "$stage/.complete"
install -m 0755 "$BUSYBOX" "$stage/usr/bin/busybox"
for a in $("$BUSYBOX" --list); do
    [ -e "$stage/usr/bin/$a" ] || [ -e "$stage/usr/sbin/$a" ] || ln -s busybox "$stage/usr/bin/$a"
done
mkdir -p "$stage/usr/local/bin"
for b in "${BINS[@]}"; do
    strip -o "$stage/usr/local/bin/$b" "$BIN_DIR/$b"
    chmod 0755 "$stage/usr/local/bin/$b"
done
lib=$stage/usr/lib/x86_64-linux-gnu
mkdir -p "$stage$DPDK_PMD_DIR"
closure=("$BIN_DIR/ferrovn-vhost")
for p in "${DPDK_PMDS[@]}"; do
    install -m 0644 "$(readlink -f "$DPDK_PMD_DIR/$p")" "$stage$DPDK_PMD_DIR/$p"
    # EAL loads only the files of its plugin dir named `*.so` or `*.so.23.0` (its ABI version),
    # as Debian's dev symlinks are: a bare `.so.23` is skipped, and without the ring mempool
    # driver the helper's mbuf pool fails (EINVAL)
    ln -sfn "$p" "$stage$DPDK_PMD_DIR/${p%.so.*}.so"
    closure+=("$DPDK_PMD_DIR/$p")
done
# Every library of the closure the base lacks (by soname), glibc excepted: the base's is newer.
ldd "${closure[@]}" | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}' | sort -u |
    while read -r soname path; do
        case $soname in
        libc.so.* | libm.so.* | libpthread.so.* | libdl.so.* | librt.so.* | ld-linux*) continue ;;
        esac
        [ -e "$lib/$soname" ] && continue
        install -m 0644 "$(readlink -f "$path")" "$lib/$soname"
    done
# The binaries start in the image's root: a missing library shows here, not in a pod.
for b in "${BINS[@]}"; do
    # the CNI plugin answers the CNI VERSION command, the others --version
    if [ "$b" = ferrovn-cni ]; then
        check=(env CNI_COMMAND=VERSION "/usr/local/bin/$b")
    else
        check=("/usr/local/bin/$b" --version)
    fi
    if ! echo '{"cniVersion":"1.0.0"}' | chroot "$stage" "${check[@]}" >/dev/null 2>"$TAR.check.log"; then
        echo "ferrovn-image: /usr/local/bin/$b does not start in the image:" >&2
        cat "$TAR.check.log" >&2
        exit 1
    fi
done
for t in "${TOOLS[@]}"; do
    in_image=(chroot "$stage" /usr/bin/env PATH=/usr/sbin:/usr/bin "$t")
    if ! "${in_image[@]}" --version >/dev/null 2>&1 && ! "${in_image[@]}" -V >/dev/null 2>"$TAR.check.log"; then
        echo "ferrovn-image: $t does not start in the image:" >&2
        cat "$TAR.check.log" >&2
        exit 1
    fi
done
python3 "$REPO/deploy/kube/oci-image.py" --ref "$REF" --out "$TAR" --tree "$stage" >/dev/null
rm -rf "$stage" "$TAR.check.log"
echo "$recipe" >"$TAR.stamp"
t2=$(date +%s)
echo "ferrovn-image: $REF -> $TAR ($(du -h "$TAR" | cut -f1); base $((t1 - t0)) s, image $((t2 - t1)) s)"
