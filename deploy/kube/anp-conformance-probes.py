#!/usr/bin/env python3
"""Rewrite the probe helper of the network-policy-api conformance suite (v0.1.x) for the lab.

    anp-conformance-probes.py PATH/conformance/utils/kubernetes/helper.go

deploy/kube/build.sh runs this on a copy of the suite's module; its sha256 is part of the
anp-conformance stamp, so any change here rebuilds the test binary. It exits non-zero, naming
what it expected, when the helper's layout changed and the rewrite no longer applies.

The suite's own PokeServer (one `kubectl exec ... /agnhost connect`, one verdict) is renamed
pokeServerOnce, unchanged. A new PokeServer, with the same signature, in front of it:

- SCTP: logs `SCTP PROBE SKIPPED (this kernel has no SCTP): ...` and runs nothing (this kernel
  has no SCTP; anp-conformance.sh counts these, never as passed probes).
- Retry: when the first attempt disagrees with the expected verdict, it probes again every
  500 ms until one attempt agrees, for at most 10 s after the first attempt started, the
  values of upstream's later suite (network-policy-api PR 353, `PokeTimeout` 10 s and
  `PokeInterval` 500 ms, on release-0.1 and in v0.2.0; v0.1.5 probes once, its TODO is
  issue 108). As upstream does after its retries, one more attempt must then agree too.
  Every probe whose first attempt disagreed is logged, with the time from the first attempt's
  start to the start of the attempt that agreed:
    PROBE CONVERGED after N retries (X.X s, converge_ms=N): <probe>
  and one that never agreed, or agreed and then not, fails the test as before:
    PROBE NOT CONVERGED after N retries (X.X s, bound 10s): <probe>
    PROBE FLAPPED after N retries (converge_ms=N, then the confirming attempt disagreed): <probe>
"""
import re
import sys

path = sys.argv[1]
src = open(path).read()

SIG = re.compile(
    r"func PokeServer(\(t \*testing\.T, client k8sclient\.Interface, kubeConfig \*rest\.Config, "
    r"clientNamespace, clientPod, protocol, targetHost string, targetPort int32, "
    r"timeout time\.Duration, shouldConnect bool\) bool \{\n\tt\.Helper\(\)\n)")
if len(SIG.findall(src)) != 1:
    sys.exit(f"anp-conformance-probes.py: {path}: PokeServer's signature changed; the probe rewrite does not apply")
for need in ('"fmt"', '"net"', '"time"'):
    if need not in src:
        sys.exit(f"anp-conformance-probes.py: {path}: no import {need}; the probe rewrite does not apply")

WRAPPER = '''// Added by FerrOVN's deploy/kube/build.sh (anp-conformance-probes.py): the bound and interval
// of upstream's later suite (PokeTimeout, PokeInterval); v0.1.5 probes once.
const (
	pokeRetryBound    = 10 * time.Second
	pokeRetryInterval = 500 * time.Millisecond
)

// PokeServer probes as pokeServerOnce does, and when the first attempt disagrees with
// shouldConnect, again every pokeRetryInterval until one attempt agrees (then one more must
// agree too) or pokeRetryBound has passed since the first attempt started. Every retried
// probe is logged with its convergence time; SCTP probes are logged and not run.
func PokeServer(t *testing.T, client k8sclient.Interface, kubeConfig *rest.Config, clientNamespace, clientPod, protocol, targetHost string, targetPort int32, timeout time.Duration, shouldConnect bool) bool {
	t.Helper()
	if protocol == "sctp" {
		t.Logf("SCTP PROBE SKIPPED (this kernel has no SCTP): /agnhost connect --protocol=sctp %s from %s/%s, expected to connect: %v",
			net.JoinHostPort(targetHost, fmt.Sprintf("%d", targetPort)), clientNamespace, clientPod, shouldConnect)
		return true
	}
	probe := fmt.Sprintf("/agnhost connect --timeout=%v --protocol=%s %s from %s/%s, expected to connect: %v",
		timeout, protocol, net.JoinHostPort(targetHost, fmt.Sprintf("%d", targetPort)), clientNamespace, clientPod, shouldConnect)
	once := func() bool {
		return pokeServerOnce(t, client, kubeConfig, clientNamespace, clientPod, protocol, targetHost, targetPort, timeout, shouldConnect)
	}
	start := time.Now()
	if once() {
		return true
	}
	noun := func(n int) string {
		if n == 1 {
			return "retry"
		}
		return "retries"
	}
	for retries := 1; ; retries++ {
		if time.Since(start)+pokeRetryInterval > pokeRetryBound {
			t.Logf("PROBE NOT CONVERGED after %d %s (%.1f s, bound %v): %s",
				retries-1, noun(retries-1), time.Since(start).Seconds(), pokeRetryBound, probe)
			return false
		}
		time.Sleep(pokeRetryInterval)
		attempt := time.Now()
		if !once() {
			continue
		}
		ms := attempt.Sub(start).Milliseconds()
		if !once() {
			t.Logf("PROBE FLAPPED after %d %s (converge_ms=%d, then the confirming attempt disagreed): %s",
				retries, noun(retries), ms, probe)
			return false
		}
		t.Logf("PROBE CONVERGED after %d %s (%.1f s, converge_ms=%d): %s",
			retries, noun(retries), float64(ms)/1000, ms, probe)
		return true
	}
}

// pokeServerOnce is the suite's own PokeServer (v0.1.5), renamed.
func pokeServerOnce'''

out = SIG.sub(lambda m: WRAPPER + m.group(1), src)
for must in ("func PokeServer(", "func pokeServerOnce(", "PROBE CONVERGED", "SCTP PROBE SKIPPED"):
    if must not in out:
        sys.exit(f"anp-conformance-probes.py: {path}: the rewrite did not produce {must!r}")
open(path, "w").write(out)
