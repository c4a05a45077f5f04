#!/usr/bin/env bash
# The network-policy-api conformance suite for AdminNetworkPolicy and BaselineAdminNetworkPolicy
# (anp-conformance.test, `make kube-anp-conformance`) against the lab's cluster
# (docs/conformance.md). The lab must be up (`make anp-conformance` brings it up first). The
# suite's pods run the agnhost image the lab imported (build.sh rewrote the manifests to its
# ferrovn.invalid/... name), so nothing is ever pulled.
#
#   [E2E_NAME=dir] anp-conformance.sh STATE_DIR [FOCUS]
# FOCUS: a Go regexp matched against whole test names (AdminNetworkPolicyEgressTCP, ...); empty: all.
# Last line: anp-conformance passed=N failed=N skipped=N sctp_probes_skipped=N
# first_probe_retried=N max_converge_ms=N, over the suite's tests (not its subtests); a failed
# test's failing probes are listed above it. This kernel has no SCTP: the four SCTP-only tests
# are skipped, and the SCTP probes inside the TCP and UDP tests are not run (build.sh), counted
# in sctp_probes_skipped and listed per test; such a test passes on its TCP and UDP probes
# alone. A probe whose first attempt disagreed is retried for up to 10 s, as upstream's later
# suite does (build.sh, anp-conformance-probes.py): first_probe_retried counts those, each is
# listed under its test with its convergence time, max_converge_ms is the longest that
# converged, and the line above the last gives the verdicts the suite would have had without
# the retry (v0.1.5 as released: a test with a retried probe fails).
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
# The wrapper's verdict on a probe whose first attempt disagreed (anp-conformance-probes.py);
# the attempts' own `FAILED Command was` lines are in the log above each.
retried = re.compile(r"PROBE (CONVERGED|NOT CONVERGED|FLAPPED) (after .*)$")
converge = re.compile(r"converge_ms=(\d+)")
sctp_skip = re.compile(r"SCTP PROBE SKIPPED")
current, probes, order, verdict, failed_subtests, unrun_sctp = None, {}, [], {}, {}, {}
converged = {}
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
    m = retried.search(line)
    if m and current:
        if m.group(1) == "CONVERGED":
            converged.setdefault(current, []).append((int(converge.search(line).group(1)), m.group(2)))
        else:
            probes.setdefault(current, []).append(f"{m.group(1)} {m.group(2)}")
        continue
    if re.match(r"^--- FAIL: " + top + r" ", line):
        top_failed = True
counts = {"PASS": 0, "FAIL": 0, "SKIP": 0}
unretried = {"PASS": 0, "FAIL": 0, "SKIP": 0}
for name in order:
    v = verdict[name]
    counts[v] += 1
    conv, cmds = converged.get(name, []), probes.get(name, [])
    unretried["FAIL" if v == "PASS" and (conv or cmds) else v] += 1
    unrun = f" ({unrun_sctp[name]} SCTP probes not run: this kernel has no SCTP)" if unrun_sctp.get(name) else ""
    retry = (f" ({len(conv)} probes converged after a retry, longest {max(ms for ms, _ in conv)} ms)"
             if conv else "")
    if v == "FAIL":
        note = f" ({len(cmds)} probes never agreed within the retry bound)" if cmds else ""
        print(f"  FAILED: {name}{note}{retry}{unrun}")
        for sub in failed_subtests.get(name, []):
            print(f"    subtest: {sub}")
        for c in cmds:
            print(f"      {c}")
    elif v == "SKIP":
        print(f"  skipped: {name}")
    elif unrun:
        print(f"  passed, TCP and UDP probes only: {name}{retry}{unrun}")
    else:
        print(f"  passed: {name}{retry}")
    for ms, what in conv:
        print(f"      converged {what}")
if (top_failed and not order) or (not order and rc != 0):
    print(f"anp-conformance: the suite failed before its tests (exit {rc}); see the log")
    counts["FAIL"] = max(counts["FAIL"], 1)
elif rc != 0 and not counts["FAIL"]:
    # e.g. the test binary's timeout panic, which prints no verdict for the test it stopped
    print(f"anp-conformance: the suite exited {rc} with no failed test; see the log")
    counts["FAIL"] = 1
n_retried = sum(len(v) for v in converged.values()) + sum(len(v) for v in probes.values())
all_ms = [ms for v in converged.values() for ms, _ in v]
print(f"anp-conformance without the retry (first probes only, as v0.1.5 runs them): "
      f"passed={unretried['PASS']} failed={unretried['FAIL']} skipped={unretried['SKIP']}")
print(f"anp-conformance passed={counts['PASS']} failed={counts['FAIL']} skipped={counts['SKIP']} "
      f"sctp_probes_skipped={sum(unrun_sctp.values())} first_probe_retried={n_retried} "
      f"max_converge_ms={max(all_ms, default=0)}")
sys.exit(1 if counts["FAIL"] else 0)
PY
