#!/usr/bin/env bash
# The network-policy-api conformance suite for AdminNetworkPolicy and BaselineAdminNetworkPolicy
# (anp-conformance.test, `make kube-anp-conformance`) against the lab's cluster
# (docs/conformance.md). The lab must be up (`make anp-conformance` brings it up first). The
# suite's pods run the agnhost image the lab imported (build.sh rewrote the manifests to its
# ferrovn.invalid/... name), so nothing is ever pulled.
#
#   [E2E_NAME=dir] anp-conformance.sh STATE_DIR [FOCUS]
# FOCUS: a Go regexp matched against whole test names (AdminNetworkPolicyEgressTCP, ...); empty: all.
# Last line: anp-conformance passed=N failed=N skipped=N sctp_probes_skipped=N, over the
# suite's tests (not its subtests); a failed test's failing probes are listed above it. This
# kernel has no SCTP: the four SCTP-only tests are skipped, and the SCTP probes inside the TCP
# and UDP tests are not run (build.sh), counted in sctp_probes_skipped and listed per test;
# such a test passes on its TCP and UDP probes alone.
set -euo pipefail
STATE=${1:?state dir}
FOCUS=${2:-}
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck disable=SC1091
. "$HERE/versions.env"
KDIR=${FERROVN_CACHE:-/var/cache/ferrovn}/kube/$K8S_VERSION
BIN=$KDIR/bin
KUBECONFIG=$STATE/kube/admin.kubeconfig
for f in "$BIN/anp-conformance.test" "$BIN/kubectl" "$KUBECONFIG"; do
    [ -e "$f" ] || { echo "anp-conformance: $f missing (make kube-anp-conformance; make lab)" >&2; exit 1; }
done
kubectl() { "$BIN/kubectl" --kubeconfig "$KUBECONFIG" "$@"; }
for crd in adminnetworkpolicies baselineadminnetworkpolicies; do
    kubectl get crd "$crd.policy.networking.k8s.io" >/dev/null ||
        { echo "anp-conformance: the lab has no $crd CRD (deploy/crds)" >&2; exit 1; }
done
RUN=$STATE/${E2E_NAME:-anp-conformance}
rm -rf "$RUN" && mkdir -p "$RUN"
# The suite's own objects, as the binary embeds them: deleted after the run even when the
# suite could not clean up itself (a failed set-up, an interrupted run).
MANIFESTS=$KDIR/src/anp-conformance/anpconf/base
cleanup() {
    [ -d "$MANIFESTS" ] && kubectl delete -R -f "$MANIFESTS" --ignore-not-found --wait=false >/dev/null 2>&1
    return 0
}
trap cleanup EXIT
args=(-test.v -test.timeout 90m -all-features)
[ -n "$FOCUS" ] && args+=(-test.run "TestANPConformance/^($FOCUS)\$")
echo "anp-conformance: network-policy-api $NETPOL_API_VERSION, all features; focus: ${FOCUS:-all}; log $RUN/anp.log"
set +e
(cd "$RUN" && KUBECONFIG=$KUBECONFIG "$BIN/anp-conformance.test" "${args[@]}" >"$RUN/anp.log" 2>&1)
rc=$?
set -e
python3 - "$RUN/anp.log" "$rc" <<'PY'
import re, sys
log, rc = sys.argv[1], int(sys.argv[2])
top = "TestANPConformance"
result = re.compile(r"^\s*--- (PASS|FAIL|SKIP): " + top + r"/(\S+) \(")
header = re.compile(r"^=== (RUN|CONT|NAME|PAUSE)\s+" + top + r"/([^/\s]+)")
probe = re.compile(r"FAILED Command was \[?(.*?)\]?$")
sctp_skip = re.compile(r"SCTP PROBE SKIPPED")
current, probes, order, verdict, failed_subtests, unrun_sctp = None, {}, [], {}, {}, {}
top_failed = False
for line in open(log, errors="replace"):
    line = line.rstrip("\n")
    m = header.match(line)
    if m:
        current = m.group(2)
        continue
    m = result.match(line)
    if m and "/" not in m.group(2):
        name = m.group(2)
        if name not in verdict:
            order.append(name)
        verdict[name] = m.group(1)
        continue
    if m and m.group(1) == "FAIL":
        test, sub = m.group(2).split("/", 1)
        failed_subtests.setdefault(test, []).append(sub.replace("_", " "))
        continue
    if sctp_skip.search(line) and current:
        unrun_sctp[current] = unrun_sctp.get(current, 0) + 1
        continue
    m = probe.search(line)
    if m and current:
        probes.setdefault(current, []).append(m.group(1))
    if re.match(r"^--- FAIL: " + top + r" ", line):
        top_failed = True
counts = {"PASS": 0, "FAIL": 0, "SKIP": 0}
for name in order:
    v = verdict[name]
    counts[v] += 1
    unrun = f" ({unrun_sctp[name]} SCTP probes not run: this kernel has no SCTP)" if unrun_sctp.get(name) else ""
    if v == "FAIL":
        cmds = probes.get(name, [])
        sctp = sum("--protocol=sctp" in c for c in cmds)
        note = f" ({len(cmds)} probes failed, {sctp} of them SCTP)" if cmds else ""
        print(f"  FAILED: {name}{note}{unrun}")
        for sub in failed_subtests.get(name, []):
            print(f"    subtest: {sub}")
        for c in cmds:
            print(f"      {c}")
    elif v == "SKIP":
        print(f"  skipped: {name}")
    elif unrun:
        print(f"  passed, TCP and UDP probes only: {name}{unrun}")
    else:
        print(f"  passed: {name}")
if (top_failed and not order) or (not order and rc != 0):
    print(f"anp-conformance: the suite failed before its tests (exit {rc}); see the log")
    counts["FAIL"] = max(counts["FAIL"], 1)
elif rc != 0 and not counts["FAIL"]:
    # e.g. the test binary's timeout panic, which prints no verdict for the test it stopped
    print(f"anp-conformance: the suite exited {rc} with no failed test; see the log")
    counts["FAIL"] = 1
print(f"anp-conformance passed={counts['PASS']} failed={counts['FAIL']} skipped={counts['SKIP']} "
      f"sctp_probes_skipped={sum(unrun_sctp.values())}")
sys.exit(1 if counts["FAIL"] else 0)
PY
