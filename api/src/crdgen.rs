//! The CRD manifests of our custom resources, generated from the Rust types so the schema the
//! API server enforces is the one the controller parses. Written to `deploy/crds/` by
//! `cargo run -p ferrovn-api --example crdgen`; the `crds_fresh` test fails when the
//! committed files differ from what the types generate.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use super::crd::{Ip, IpPool, ProviderNetwork, Subnet, Vlan, Vpc};

/// Where the manifests live, relative to the repository root.
pub const CRD_DIR: &str = "deploy/crds";
/// The command that regenerates them.
pub const REGENERATE_COMMAND: &str = "cargo run -p ferrovn-api --example crdgen";

/// The CRDs of every `kubeovn.io` resource FerrOVN serves.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        Subnet::crd(),
        Vpc::crd(),
        Ip::crd(),
        IpPool::crd(),
        Vlan::crd(),
        ProviderNetwork::crd(),
    ]
}

/// `<plural>.<group>.yaml`, e.g. `subnets.kubeovn.io.yaml`.
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or("unnamed"))
}

/// One CRD as a YAML document with a header saying how it was made.
pub fn render(crd: &CustomResourceDefinition) -> Result<String, serde_norway::Error> {
    let body = serde_norway::to_string(crd)?;
    Ok(format!(
        "# Generated from the Rust types in api/src/crd.rs by `{REGENERATE_COMMAND}`.\n\
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
