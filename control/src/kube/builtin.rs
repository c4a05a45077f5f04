//! The built-in subnets (`ovn-default` and `join`, or whatever `--default-subnet` /
//! `--join-subnet` name them) as Subnet objects, as Kube-OVN's install has them, so
//! `kubectl get subnets` lists them with their address counts.
//!
//! The controller serves these subnets whether or not an object exists (the implicit subnet of
//! [`crate::controller::desired::implicit_subnets`]). The object it creates holds exactly the
//! implicit subnet's non-default fields (`cidrBlock`, and `natOutgoing: true` for
//! `ovn-default`), so reading it back changes nothing. It is only created (never patched or deleted): once it exists it is the user's
//! to edit, and a user's own `ovn-default` is never touched.

use serde_json::{Map, Value, json};

use crate::controller::BuildOptions;
use crate::controller::desired::implicit_subnets;
use ferrovn_api::crd::SubnetSpec;

use super::store::{ClusterStore, Kind};
use super::writeback::{PlannedWrite, Target};

/// The fields of `spec` that differ from their defaults: what the object must say for the
/// controller to read it back as exactly `spec`.
fn non_default(spec: &SubnetSpec) -> Map<String, Value> {
    let defaults = serde_json::to_value(SubnetSpec::default()).unwrap_or(Value::Null);
    match serde_json::to_value(spec) {
        Ok(Value::Object(m)) => m
            .into_iter()
            .filter(|(k, v)| defaults.get(k) != Some(v))
            .collect(),
        _ => Map::new(),
    }
}

/// A create for each built-in subnet that has no Subnet object.
pub fn plan_builtin_subnets(store: &ClusterStore, build: &BuildOptions) -> Vec<PlannedWrite> {
    implicit_subnets(build)
        .into_iter()
        .filter_map(|s| {
            let name = s.metadata.name.clone()?;
            if store.get(Kind::Subnet, None, &name).is_some() {
                return None;
            }
            Some(PlannedWrite {
                target: Target::SubnetCreate { name: name.clone() },
                body: json!({
                    "apiVersion": ferrovn_api::crd::API_VERSION,
                    "kind": "Subnet",
                    "metadata": { "name": name },
                    "spec": non_default(&s.spec),
                }),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::desired::read_cluster;
    use crate::kube::store::Change;
    use crate::manifest::Object;
    use ferrovn_api::crd::Subnet;

    #[test]
    fn missing_builtins_are_created_and_read_back_as_the_implicit_ones() {
        let build = BuildOptions::default();
        let mut store = ClusterStore::new();
        let implicit = read_cluster(&store.to_manifest(), &build);
        let writes = plan_builtin_subnets(&store, &build);
        let names: Vec<String> = writes.iter().map(|w| w.target.to_string()).collect();
        assert_eq!(
            names,
            ["Subnet ovn-default (create)", "Subnet join (create)"]
        );
        for w in &writes {
            let s: Subnet = serde_json::from_value(w.body.clone()).unwrap();
            store.apply(Change::Applied(Object::Subnet(Box::new(s))));
        }
        assert_eq!(plan_builtin_subnets(&store, &build), []);
        // The objects say what the implicit subnets said: the same subnets, the same default.
        let explicit = read_cluster(&store.to_manifest(), &build);
        assert_eq!(
            format!("{:?}", explicit.subnets),
            format!("{:?}", implicit.subnets)
        );
        assert_eq!(explicit.issues, implicit.issues);
    }
}
