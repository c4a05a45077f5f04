#!/usr/bin/env bash
# The DPDK test image the lab's DPDK pods run: Debian 12's dpdk-testpmd (package dpdk-dev) with
# the shared libraries it links, the DPDK drivers a vhost-user pod needs (vdev bus,
# virtio-user net, ring mempool, and the TAP PMD through which a pod's kernel side becomes a
# Service client; EAL loads every driver in its plugin directory, so only these are there) and
# a static busybox for a shell (and ip, wget); /var/run (DPDK's runtime dir) is the image's /tmp. Written as an OCI tar (deploy/kube/oci-image.py,
# no daemon, no registry) that `ferrovn-lab up` imports into each lab node's containerd.
#
#   build.sh [OUT_DIR]     default $FERROVN_CACHE/testpmd (a no-op when the recipe is unchanged)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${1:-${FERROVN_CACHE:-/var/cache/ferrovn}/testpmd}
# keep in sync with deploy/src/lab.rs (TESTPMD_IMAGE)
REF=ferrovn.invalid/ferrovn/dpdk-testpmd:22.11
TESTPMD=/usr/bin/dpdk-testpmd
BUSYBOX=/bin/busybox
for f in "$TESTPMD" "$BUSYBOX"; do
    [ -x "$f" ] || { echo "testpmd image: $f missing (make deps: dpdk-dev, busybox-static)" >&2; exit 1; }
done
PMDS=$(dirname "$(readlink -f "$(ldd "$TESTPMD" | awk '/librte_eal/ {print $3}')")")/dpdk
PMDS=$(ls -d "$PMDS"/pmds-* | head -1)
DRIVERS=(librte_bus_vdev librte_net_virtio librte_mempool_ring librte_net_tap)

args=()
declare -A seen
# A file as the host has it: the real file at its real path, and the name it was found by as
# a symlink to it. Libraries keep their host layout: testpmd links some drivers that EAL also
# finds in its plugin directory, and the two names must be one file (a second copy of a driver
# library would register its drivers twice).
add() { # PATH [DST]
    local src=$1 dst=${2:-$1} real
    real=$(readlink -f "$src")
    if [ -z "${seen[$real]:-}" ]; then
        seen[$real]=1
        args+=(--file "$real:${dst%/*}/${real##*/}:0755")
    fi
    if [ "${dst##*/}" != "${real##*/}" ] && [ -z "${seen[$dst]:-}" ]; then
        seen[$dst]=1
        args+=(--symlink "$dst:${real##*/}")
    fi
}
libs_of() { ldd "$1" | awk '/=> \// {print $3} $1 ~ /^\/.*ld-linux/ {print $1}'; }
add "$TESTPMD" /usr/bin/dpdk-testpmd
for l in $(libs_of "$TESTPMD"); do add "$l"; done
for d in "${DRIVERS[@]}"; do
    so="$PMDS/$d.so"
    [ -e "$so" ] || { echo "testpmd image: $so missing" >&2; exit 1; }
    # EAL loads the plugin directory's *.so and *.so.<ABI version> (.so.23.0) files
    add "$(readlink -f "$so")"
    for l in $(libs_of "$so"); do add "$l"; done
done
add "$BUSYBOX" /bin/busybox

RECIPE="ref=$REF $(sha256sum "$TESTPMD" "$HERE/build.sh" "$HERE/../../kube/oci-image.py" | cut -c1-16 | tr '\n' ' ')"
mkdir -p "$OUT"
if [ -f "$OUT/testpmd.tar" ] && [ "$(cat "$OUT/testpmd.tar.stamp" 2>/dev/null)" = "$RECIPE" ]; then
    echo "testpmd image: up to date ($OUT/testpmd.tar)"
    exit 0
fi
python3 "$HERE/../../kube/oci-image.py" --ref "$REF" --out "$OUT/testpmd.tar.tmp" "${args[@]}" \
    --symlink /var/run:/tmp --busybox-applets /bin --cmd '["dpdk-testpmd", "--help"]'
mv "$OUT/testpmd.tar.tmp" "$OUT/testpmd.tar"
echo "$RECIPE" >"$OUT/testpmd.tar.stamp"
echo "testpmd image: $REF -> $OUT/testpmd.tar ($(du -h "$OUT/testpmd.tar" | cut -f1))"
