//! Two `ferrovn-controller --kube` replicas on a real control plane (ferrovn-testkit) and a real
//! OVN NB, both as the controller's ServiceAccount of deploy/rbac.yaml: the leader is killed
//! outright (SIGKILL: it cannot release the Lease), the standby takes the Lease once it expires
//! and allocates a new pod, and no address is handed out twice.

// A test crate: its helpers outside #[test] fns assert by unwrapping too (clippy.toml allows it
// only inside #[test] fns and #[cfg(test)] modules).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod real_controller;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use ferrovn_testkit::kube::ControlPlane;
use ferrovn_testkit::ovsdb::OvnCentral;
use ferrovn_testkit::wait::assert_within;
use real_controller::{Controller, install_crds_and_rbac};

/// `--lease-duration` of both replicas (seconds).
const LEASE_SECONDS: u64 = 6;

/// Waits for `cond` (failing the test with `what` after `timeout`); returns how long it took.
fn timed_wait(what: &str, timeout: Duration, cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    assert_within(timeout, what, cond);
    start.elapsed()
}

fn get(cp: &ControlPlane, args: &[&str], expr: &str) -> String {
    let o = format!("jsonpath={expr}");
    let mut all = args.to_vec();
    all.extend(["-o", &o]);
    cp.kubectl(&all).map(|o| o.stdout).unwrap_or_default()
}

fn pod_ip(cp: &ControlPlane, pod: &str) -> String {
    get(
        cp,
        &["-n", "default", "get", "pod", pod],
        "{.metadata.annotations.ovn\\.kubernetes\\.io/ip_address}",
    )
}

fn holder(cp: &ControlPlane) -> String {
    get(
        cp,
        &["-n", "kube-system", "get", "lease", "ferrovn-controller"],
        "{.spec.holderIdentity}",
    )
}

fn pod(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  \
         nodeName: node-1\n  containers:\n  - name: c\n    image: registry.k8s.io/pause:3.10\n"
    )
}

const SETUP: &str = "apiVersion: v1\nkind: Node\nmetadata:\n  name: node-1\n---\n\
apiVersion: kubeovn.io/v1\nkind: Subnet\nmetadata:\n  name: ovn-default\nspec:\n  protocol: IPv4\n  \
cidrBlock: 10.16.0.0/16\n  gateway: 10.16.0.1\n  excludeIps: [10.16.0.1]\n  default: true\n  \
provider: ovn\n  vpc: ovn-cluster\n";

#[test]
fn standby_takes_over_within_the_lease_after_the_leader_is_killed() {
    let cp = ControlPlane::start().expect("control plane (make kube-bins)");
    eprintln!("control plane up in {:?}", cp.startup_time());
    install_crds_and_rbac(&cp);
    cp.kubectl_stdin(&["apply", "-f", "-"], SETUP)
        .expect("node + subnet");
    let sa = cp
        .service_account_kubeconfig("kube-system", "ferrovn-controller")
        .expect("ServiceAccount kubeconfig");
    let central = OvnCentral::start().expect("OVN central (make deps)");
    let tmp = tempfile::tempdir().expect("tmp");

    let a = Controller::spawn(
        &sa,
        &central.nb_remote(),
        tmp.path(),
        "ctrl-a",
        LEASE_SECONDS,
    );
    timed_wait("ctrl-a leads", Duration::from_secs(60), || {
        holder(&cp) == "ctrl-a"
    });
    let mut b = Controller::spawn(
        &sa,
        &central.nb_remote(),
        tmp.path(),
        "ctrl-b",
        LEASE_SECONDS,
    );
    cp.kubectl_stdin(&["apply", "-f", "-"], &pod("before"))
        .expect("pod");
    timed_wait("pod before allocated", Duration::from_secs(60), || {
        !pod_ip(&cp, "before").is_empty()
    });
    assert_eq!(holder(&cp), "ctrl-a", "the standby never stole the Lease");
    let first = pod_ip(&cp, "before");

    // SIGKILL: no release, the standby must wait for the Lease to expire.
    let killed_at = Instant::now();
    drop(a);
    cp.kubectl_stdin(&["apply", "-f", "-"], &pod("after"))
        .expect("pod");
    timed_wait(
        "ctrl-b leads",
        Duration::from_secs(3 * LEASE_SECONDS),
        || {
            b.assert_running();
            holder(&cp) == "ctrl-b"
        },
    );
    let takeover = killed_at.elapsed();
    timed_wait("pod after allocated", Duration::from_secs(30), || {
        !pod_ip(&cp, "after").is_empty()
    });
    let allocated = killed_at.elapsed();
    eprintln!("takeover after {takeover:?}, new pod allocated after {allocated:?}");
    // Lease duration plus one retry period (2/15 of it) plus scheduling slack.
    assert!(
        takeover <= Duration::from_secs(LEASE_SECONDS + 3),
        "took over after {takeover:?} (lease {LEASE_SECONDS} s):\n{}",
        b.log()
    );

    let second = pod_ip(&cp, "after");
    assert_eq!(
        pod_ip(&cp, "before"),
        first,
        "the old pod keeps its address"
    );
    let distinct: BTreeSet<_> = [&first, &second].into_iter().collect();
    assert_eq!(distinct.len(), 2, "{first} handed out twice");
    for (p, ip) in [("before", &first), ("after", &second)] {
        let lsp = central
            .nbctl(&[
                "--bare",
                "--columns=addresses",
                "find",
                "Logical_Switch_Port",
                &format!("name={p}.default"),
            ])
            .expect("nbctl");
        assert!(
            lsp.trim().ends_with(ip.as_str()),
            "NB port {p}: {lsp:?} vs {ip}"
        );
    }
}
