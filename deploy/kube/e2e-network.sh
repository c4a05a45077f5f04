#!/usr/bin/env bash
# The upstream network e2e suite (e2e-network.test, `make kube-e2e-bins`) against the lab's
# cluster (docs/conformance.md). The lab must be up (`make e2e-network` brings it up first).
# Images: the suite asks for registry.k8s.io/e2e-test-images/...; KUBE_TEST_REPO_LIST maps that
# registry to the names the lab imported into every node's containerd (ferrovn.invalid/...),
# so nothing is ever pulled.
#
#   [E2E_NAME=dir] e2e-network.sh STATE_DIR [FOCUS] [SKIP]
# Last line: e2e-network passed=N failed=N skipped=N (from the JUnit report: specs the focus
# selects; skipped = selected but skipped, by SKIP or by the suite itself).
set -euo pipefail
STATE=${1:?state dir}
FOCUS=${2:-'\[sig-network\] Networking Granular Checks: Pods'}
SKIP=${3:-'\[Feature:SCTPConnectivity\]'}
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck disable=SC1091
. "$HERE/versions.env"
BIN=${FERROVN_CACHE:-/var/cache/ferrovn}/kube/$K8S_VERSION/bin
KUBECONFIG=$STATE/kube/admin.kubeconfig
for f in "$BIN/e2e-network.test" "$BIN/kubectl" "$KUBECONFIG"; do
    [ -e "$f" ] || { echo "e2e-network: $f missing (make kube-e2e-bins; make lab)" >&2; exit 1; }
done
# E2E_NAME: the run's directory under the state dir, so two runs (two focuses) can share a lab
RUN=$STATE/${E2E_NAME:-e2e-network}
rm -rf "$RUN" && mkdir -p "$RUN/report"
cat >"$RUN/repo-list.yaml" <<YAML
promoterE2eRegistry: ferrovn.invalid/e2e-test-images
buildImageRegistry: ferrovn.invalid/build-image
dockerLibraryRegistry: ferrovn.invalid/library
gcRegistry: ferrovn.invalid
gcEtcdRegistry: ferrovn.invalid
privateRegistry: ferrovn.invalid/private
sigStorageRegistry: ferrovn.invalid/sig-storage
invalidRegistry: ferrovn.invalid/invalid
YAML
nodes=$("$BIN/kubectl" --kubeconfig "$KUBECONFIG" get nodes -o name | wc -l)
echo "e2e-network: $nodes nodes; focus: $FOCUS; skip: $SKIP; log $RUN/e2e.log"
set +e
(cd "$RUN" && KUBE_TEST_REPO_LIST=$RUN/repo-list.yaml "$BIN/e2e-network.test" \
    -kubeconfig "$KUBECONFIG" -kubectl-path "$BIN/kubectl" -provider skeleton \
    -num-nodes "$nodes" -report-dir "$RUN/report" \
    -ginkgo.focus "$FOCUS" -ginkgo.skip "$SKIP" -ginkgo.no-color -ginkgo.v \
    -ginkgo.timeout 1h >"$RUN/e2e.log" 2>&1)
rc=$?
set -e
grep -E '^(•|\[FAIL\]|  \[FAILED\]|Ran |FAIL!|SUCCESS!)' "$RUN/e2e.log" | tail -20 || true
python3 - "$RUN/report" "$FOCUS" "$rc" <<'PY'
import glob, re, sys, xml.etree.ElementTree as ET
report, focus, rc = sys.argv[1], re.compile(sys.argv[2]), int(sys.argv[3])
counts = {"passed": 0, "failed": 0, "skipped": 0}
files = glob.glob(report + "/junit*.xml")
for f in files:
    for tc in ET.parse(f).getroot().iter("testcase"):
        name = tc.get("name", "")
        if not focus.search(name):
            continue
        status = tc.get("status") or (
            "failed" if tc.find("failure") is not None or tc.find("error") is not None
            else "skipped" if tc.find("skipped") is not None else "passed")
        if status in ("failed", "panicked", "interrupted", "timedout", "aborted"):
            counts["failed"] += 1
            print(f"  FAILED: {name}")
        elif status == "skipped":
            counts["skipped"] += 1
            print(f"  skipped: {name}")
        elif status == "passed":
            counts["passed"] += 1
            print(f"  passed: {name}")
if not files:
    print(f"e2e-network: no JUnit report (the suite exited {rc}; see the log)")
    counts["failed"] = max(counts["failed"], 1)
print(f"e2e-network passed={counts['passed']} failed={counts['failed']} skipped={counts['skipped']}")
sys.exit(1 if counts["failed"] or (rc != 0 and not files) else 0)
PY
