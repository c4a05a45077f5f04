//! The CRD manifests of our custom resources, generated from the Rust types so the schema the
//! API server enforces is the one the controller parses. Written to `deploy/crds/` by
//! `cargo run -p ferrovn-api --example crdgen`; the `crds_fresh` test fails when the
//! committed files differ from what the types generate.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use super::anp::{AdminNetworkPolicy, BaselineAdminNetworkPolicy, POLICY_GROUP};
use super::crd::{Ip, IpPool, ProviderNetwork, Subnet, Vlan, Vpc};
use super::security_group::SecurityGroup;

/// Where the manifests live, relative to the repository root.
pub const CRD_DIR: &str = "deploy/crds";
/// The annotation a CRD of a protected (`*.k8s.io`) group needs, and the network-policy-api's
/// approval it points to.
const API_APPROVED_KEY: &str = "api-approved.kubernetes.io";
const API_APPROVED_VALUE: &str = "https://github.com/kubernetes-sigs/network-policy-api/pull/30";
/// The command that regenerates them.
pub const REGENERATE_COMMAND: &str = "cargo run -p ferrovn-api --example crdgen";

/// The CRDs of every resource FerrOVN serves: `kubeovn.io`, and the `policy.networking.k8s.io`
/// admin policies (for clusters that do not install them from elsewhere).
pub fn crds() -> Vec<CustomResourceDefinition> {
    let mut admin = vec![AdminNetworkPolicy::crd(), BaselineAdminNetworkPolicy::crd()];
    for crd in &mut admin {
        // The API server refuses CRDs of a `*.k8s.io` group without this mark; the API is
        // upstream's approved one.
        crd.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(API_APPROVED_KEY.into(), API_APPROVED_VALUE.into());
    }
    let mut all = vec![
        Subnet::crd(),
        Vpc::crd(),
        Ip::crd(),
        IpPool::crd(),
        Vlan::crd(),
        ProviderNetwork::crd(),
        SecurityGroup::crd(),
    ];
    all.extend(admin);
    all
}

/// `<plural>.<group>.yaml`, e.g. `subnets.kubeovn.io.yaml`.
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or("unnamed"))
}

/// One CRD as a YAML document with a header saying how it was made.
pub fn render(crd: &CustomResourceDefinition) -> Result<String, serde_norway::Error> {
    let body = serde_norway::to_string(crd)?;
    let source = if crd.spec.group == POLICY_GROUP {
        "api/src/anp.rs"
    } else if crd.spec.names.kind == "SecurityGroup" {
        "api/src/security_group.rs"
    } else {
        "api/src/crd.rs"
    };
    Ok(format!(
        "# Generated from the Rust types in {source} by `{REGENERATE_COMMAND}`.\n\
         # Do not edit by hand.\n{body}"
    ))
}

/// Every CRD file: (file name, contents), sorted by file name.
pub fn render_all() -> Result<Vec<(String, String)>, serde_norway::Error> {
    let mut files = crds()
        .iter()
        .map(|crd| Ok((file_name(crd), render(crd)?)))
        .collect::<Result<Vec<_>, serde_norway::Error>>()?;
    files.sort();
    Ok(files)
}
