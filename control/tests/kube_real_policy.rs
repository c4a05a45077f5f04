//! What `ferrovn-controller --kube` tells the authors of policies, against a real Kubernetes
//! control plane (ferrovn-testkit, `make kube-bins`) as its own ServiceAccount (deploy/rbac.yaml):
//! the `Ready` condition of AdminNetworkPolicies and the BaselineAdminNetworkPolicy (`True`
//! when applied, `False` naming the field when left out), and one Warning Event naming the
//! field for an invalid NetworkPolicy, an invalid SecurityGroup and a BaselineAdminNetworkPolicy
//! left out, objects the API server accepts but the controller cannot apply. And how soon a
//! lone policy edit reaches the NB.

// A test crate: its helpers outside #[test] fns assert by unwrapping too (clippy.toml allows it
// only inside #[test] fns and #[cfg(test)] modules).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod real_controller;

use std::time::{Duration, Instant};

use ferrovn_testkit::kube::ControlPlane;
use ferrovn_testkit::ovsdb::OvnCentral;
use ferrovn_testkit::wait::assert_within;
use real_controller::{Controller, install_crds_and_rbac};
use serde_json::Value;

const POLICIES: &str = r#"
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: good}
spec:
  priority: 10
  subject: {namespaces: {}}
  ingress:
  - {name: deny-y, action: Deny, from: [{namespaces: {matchLabels: {team: blue}}}]}
---
apiVersion: policy.networking.k8s.io/v1alpha1
kind: BaselineAdminNetworkPolicy
metadata: {name: other}
spec:
  subject: {namespaces: {}}
  ingress:
  - {name: deny-z, action: Deny, from: [{namespaces: {matchLabels: {team: red}}}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: typo
  namespace: default
  annotations: {ovn.kubernetes.io/network_policy_for: eth1}
spec:
  podSelector: {}
  policyTypes: [Ingress]
---
apiVersion: kubeovn.io/v1
kind: SecurityGroup
metadata: {name: broken}
spec:
  ingressRules:
  - {ipVersion: ipv4, protocol: all, remoteType: address, remoteAddress: 10.0.0.0/8, policy: permit, priority: 1}
"#;

/// The `Ready` condition of `kind`/`name`: (status, reason, message).
fn ready(cp: &ControlPlane, kind: &str, name: &str) -> (String, String, String) {
    let get = |field: &str| {
        cp.jsonpath(
            &["get", kind, name],
            &format!("{{.status.conditions[?(@.type==\"Ready\")].{field}}}"),
        )
    };
    (get("status"), get("reason"), get("message"))
}

/// Every events.k8s.io Event about an object of `kind`.
fn events_about(cp: &ControlPlane, kind: &str) -> Vec<Value> {
    let out = cp
        .kubectl(&["get", "events.events.k8s.io", "-A", "-o", "json"])
        .expect("get events")
        .stdout;
    let list: Value = serde_json::from_str(&out).expect("Event list JSON");
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|e| e["regarding"]["kind"] == kind)
        .cloned()
        .collect()
}

#[test]
fn admin_policies_get_ready_conditions_and_invalid_policies_get_events() {
    let cp = ControlPlane::start().expect("control plane (make kube-bins)");
    install_crds_and_rbac(&cp);
    let sa = cp
        .service_account_kubeconfig("kube-system", "ferrovn-controller")
        .expect("ServiceAccount kubeconfig");
    cp.kubectl_stdin(&["apply", "-f", "-"], POLICIES)
        .expect("the policies (the API server accepts each)");
    let central = OvnCentral::start().expect("OVN central (make deps)");
    let tmp = tempfile::tempdir().expect("tmp");
    let mut controller = Controller::spawn(&sa, &central.nb_remote(), tmp.path(), "ctrl-a", 6);

    assert_within(Duration::from_secs(60), "ANP good Ready", || {
        controller.assert_running();
        ready(&cp, "adminnetworkpolicy", "good").0 == "True"
    });
    let (_, reason, message) = ready(&cp, "adminnetworkpolicy", "good");
    assert_eq!(reason, "Applied");
    assert!(message.contains("anp.good"), "{message}");
    assert_within(Duration::from_secs(30), "BANP other not Ready", || {
        ready(&cp, "baselineadminnetworkpolicy", "other").0 == "False"
    });
    let (_, reason, message) = ready(&cp, "baselineadminnetworkpolicy", "other");
    assert_eq!(reason, "ValidationFailed");
    assert!(
        message.contains("metadata.name") && message.contains("\"default\""),
        "{message}"
    );

    assert_within(Duration::from_secs(30), "Events about both", || {
        !events_about(&cp, "NetworkPolicy").is_empty()
            && !events_about(&cp, "SecurityGroup").is_empty()
            && !events_about(&cp, "BaselineAdminNetworkPolicy").is_empty()
    });
    // The BANP left out of the plan gets its Event too; the applied ANP none.
    let banp = events_about(&cp, "BaselineAdminNetworkPolicy");
    assert_eq!(banp.len(), 1, "{banp:#?}");
    assert_eq!(banp[0]["type"], "Warning");
    assert_eq!(banp[0]["regarding"]["name"], "other");
    assert_eq!(
        banp[0]["regarding"]["apiVersion"],
        "policy.networking.k8s.io/v1alpha1"
    );
    let note = banp[0]["note"].as_str().unwrap_or_default();
    assert!(note.contains("metadata.name"), "{note}");
    assert!(events_about(&cp, "AdminNetworkPolicy").is_empty());
    let np = events_about(&cp, "NetworkPolicy");
    assert_eq!(np.len(), 1, "{np:#?}");
    assert_eq!(np[0]["type"], "Warning");
    assert_eq!(np[0]["reason"], "ValidationFailed");
    assert_eq!(np[0]["regarding"]["name"], "typo");
    assert_eq!(np[0]["regarding"]["namespace"], "default");
    assert_eq!(np[0]["regarding"]["apiVersion"], "networking.k8s.io/v1");
    let note = np[0]["note"].as_str().unwrap_or_default();
    assert!(
        note.contains("metadata.annotations[ovn.kubernetes.io/network_policy_for]"),
        "{note}"
    );
    let sg = events_about(&cp, "SecurityGroup");
    assert_eq!(sg.len(), 1, "{sg:#?}");
    assert_eq!(sg[0]["regarding"]["name"], "broken");
    let note = sg[0]["note"].as_str().unwrap_or_default();
    assert!(note.contains("spec.ingressRules[0].policy"), "{note}");

    // Fixed: the BANP is renamed, the annotation corrected. The new BANP becomes Ready; no
    // further Event about the NetworkPolicy appears.
    cp.kubectl(&["delete", "baselineadminnetworkpolicy", "other"])
        .expect("delete BANP other");
    cp.kubectl_stdin(
        &["apply", "-f", "-"],
        "apiVersion: policy.networking.k8s.io/v1alpha1\nkind: BaselineAdminNetworkPolicy\n\
         metadata: {name: default}\nspec:\n  subject: {namespaces: {}}\n  ingress: []\n",
    )
    .expect("BANP default");
    cp.kubectl(&[
        "-n",
        "default",
        "annotate",
        "--overwrite",
        "networkpolicy",
        "typo",
        "ovn.kubernetes.io/network_policy_for=ovn",
    ])
    .expect("annotation fixed");
    assert_within(Duration::from_secs(30), "BANP default Ready", || {
        controller.assert_running();
        ready(&cp, "baselineadminnetworkpolicy", "default").0 == "True"
    });
    assert_eq!(events_about(&cp, "NetworkPolicy").len(), 1);

    let log = controller.log();
    assert!(
        !log.contains("forbidden") && !log.contains("Forbidden"),
        "RBAC refused a request:\n{log}"
    );
    assert!(!log.contains("write-back: "), "a write failed:\n{log}");
    let status = controller.terminate();
    assert!(status.success(), "exit after SIGTERM: {status:?}");
}

/// ANP `name`'s port group in the NB (empty: not planned yet). Its rules match nobody here
/// (no pods), so the port group is all the plan writes for it.
fn anp_port_group(central: &OvnCentral, name: &str) -> String {
    central
        .nbctl(&[
            "--bare",
            "--columns=_uuid",
            "find",
            "Port_Group",
            &format!("name=anp.{name}"),
        ])
        .expect("ovn-nbctl find Port_Group")
        .trim()
        .to_string()
}

/// A policy edit after a quiet spell starts a pass at once instead of waiting out the
/// debounce: with `--debounce-ms 3000` (pass due 3 s after the last event, were it trailing)
/// a new ANP's port group is in the NB well within those 3 s. Prints the API-to-NB time.
#[test]
fn a_lone_policy_edit_reaches_the_nb_without_waiting_out_the_debounce() {
    const DEBOUNCE_MS: u64 = 3000;
    let cp = ControlPlane::start().expect("control plane (make kube-bins)");
    install_crds_and_rbac(&cp);
    let sa = cp
        .service_account_kubeconfig("kube-system", "ferrovn-controller")
        .expect("ServiceAccount kubeconfig");
    let central = OvnCentral::start().expect("OVN central (make deps)");
    let tmp = tempfile::tempdir().expect("tmp");
    let mut controller = Controller::spawn_debounced(
        &sa,
        &central.nb_remote(),
        tmp.path(),
        "ctrl-a",
        6,
        DEBOUNCE_MS,
    );
    let anp = |name: &str, priority: u32| {
        format!(
            "apiVersion: policy.networking.k8s.io/v1alpha1\nkind: AdminNetworkPolicy\n\
             metadata: {{name: {name}}}\nspec:\n  priority: {priority}\n  \
             subject: {{namespaces: {{}}}}\n  ingress:\n  - {{name: deny, action: Deny, \
             from: [{{namespaces: {{matchLabels: {{team: blue}}}}}}]}}\n"
        )
    };
    cp.kubectl_stdin(&["apply", "-f", "-"], &anp("first", 10))
        .expect("ANP first");
    assert_within(Duration::from_secs(60), "ANP first in the NB", || {
        controller.assert_running();
        !anp_port_group(&central, "first").is_empty()
    });
    // The quiet spell: no event and no pass for longer than the debounce. The controller's
    // own writes (the ANP's status, the built-in subnets) are events that get trailing passes,
    // each of which may write again; every pass that writes logs it, and a pass is due at most
    // one debounce after the event that asks for it. So: a log unchanged for twice the
    // debounce (the lease renewals are not watched, the next resync is minutes away).
    let settle = Duration::from_millis(2 * DEBOUNCE_MS + 500);
    let (mut len, mut since) = (controller.log().len(), Instant::now());
    assert_within(Duration::from_secs(120), "the controller idle", || {
        let now = controller.log().len();
        if now != len {
            (len, since) = (now, Instant::now());
        }
        std::thread::sleep(Duration::from_millis(100));
        since.elapsed() > settle
    });
    let before = Instant::now();
    cp.kubectl_stdin(&["apply", "-f", "-"], &anp("second", 20))
        .expect("ANP second");
    let applied = Instant::now();
    assert_within(Duration::from_secs(30), "ANP second in the NB", || {
        controller.assert_running();
        !anp_port_group(&central, "second").is_empty()
    });
    let (from_apply, from_start) = (applied.elapsed(), before.elapsed());
    println!(
        "anp-to-nb debounce_ms={DEBOUNCE_MS} after_kubectl_ms={} incl_kubectl_ms={}",
        from_apply.as_millis(),
        from_start.as_millis()
    );
    // Counted from kubectl's return (the object was stored before): a trailing pass would
    // come no sooner than the debounce after that.
    assert!(
        from_apply < Duration::from_millis(DEBOUNCE_MS * 3 / 4),
        "the edit waited {from_apply:?}, as if the pass were due only after the debounce:\n{}",
        controller.log()
    );
    let status = controller.terminate();
    assert!(status.success(), "exit after SIGTERM: {status:?}");
}
