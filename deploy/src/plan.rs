//! Pure: the pods a set of manifests asks for, with every interface the runtime (and Multus)
//! would request through CNI, in the order a runtime makes the calls.

use std::collections::BTreeMap;

use ferrovn_api::nad::{Attachment, NETWORKS_ANNOTATION, parse_networks};
use ferrovn_control::manifest::Manifest;
use serde_json::{Value, json};

use crate::model::{IfPlan, NODES, PodPlan, VhostSpec};

/// The primary network's netconf, as `/etc/cni/net.d/10-ferrovn.conflist` gives it.
pub fn primary_netconf() -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": "ferrovn",
        "type": "ferrovn-cni",
        "provider": "ovn",
    })
}

/// The single plugin config of a NAD's `spec.config` (a plain config, or the first of our
/// plugins in a conflist), with `name`/`cniVersion` filled as Multus does.
fn nad_netconf(nad_name: &str, config: &str) -> Result<Value, String> {
    let v: Value = serde_json::from_str(config).map_err(|e| format!("spec.config: {e}"))?;
    let mut conf = match v.get("plugins").and_then(Value::as_array) {
        Some(list) => {
            let mut p = list
                .iter()
                .find(|p| {
                    matches!(
                        p.get("type").and_then(Value::as_str),
                        Some("kube-ovn" | "ferrovn" | "ferrovn-cni")
                    )
                })
                .cloned()
                .ok_or_else(|| "conflist without a kube-ovn/ferrovn plugin".to_string())?;
            if let (Some(obj), Some(ver)) = (p.as_object_mut(), v.get("cniVersion")) {
                obj.entry("cniVersion").or_insert(ver.clone());
            }
            p
        }
        None => v,
    };
    let obj = conf
        .as_object_mut()
        .ok_or_else(|| "spec.config is not a JSON object".to_string())?;
    obj.entry("name").or_insert(json!(nad_name));
    obj.entry("cniVersion").or_insert(json!("1.0.0"));
    Ok(conf)
}

/// Every pod of `manifest` that has a network of its own (not `hostNetwork`), sorted by
/// namespace/name.
pub fn plan_pods(manifest: &Manifest) -> Vec<PodPlan> {
    let mut nads: BTreeMap<(String, String), Result<(Attachment, Value), String>> = BTreeMap::new();
    for nad in manifest.network_attachment_definitions() {
        let name = nad.metadata.name.clone().unwrap_or_default();
        let ns = nad
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let entry = match nad.attachment() {
            Ok(Some(a)) => nad_netconf(&name, &nad.spec.config).map(|c| (a, c)),
            Ok(None) => Err("its plugin is not FerrOVN's (the lab runs only ferrovn-cni)".into()),
            Err(e) => Err(e.to_string()),
        };
        nads.insert((ns, name), entry);
    }
    let mut out = Vec::new();
    for pod in manifest.pods() {
        // the node's own network: the runtime makes no CNI call, the controller allocates
        // nothing (CoreDNS, FerrOVN's own pods)
        if pod.spec.as_ref().and_then(|s| s.host_network) == Some(true) {
            continue;
        }
        let namespace = pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let name = pod.metadata.name.clone().unwrap_or_default();
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        let mut problem = None;
        if node.is_empty() {
            problem = Some(format!(
                "no spec.nodeName: not scheduled (yet) to {} or {}",
                NODES[0], NODES[1]
            ));
        } else if !NODES.contains(&node.as_str()) {
            problem = Some(format!(
                "spec.nodeName {node:?} is not a lab node ({} or {})",
                NODES[0], NODES[1]
            ));
        }
        let mut interfaces = vec![IfPlan {
            ifname: "eth0".into(),
            provider: "ovn".into(),
            netconf: primary_netconf(),
            vhost: None,
        }];
        let networks = pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(NETWORKS_ANNOTATION));
        if let Some(value) = networks {
            match parse_networks(value) {
                Err(e) => problem = problem.or(Some(e.to_string())),
                Ok(selections) => {
                    for (i, sel) in selections.iter().enumerate() {
                        let nad_ns = sel.namespace_or(&namespace).to_string();
                        let ifname = sel
                            .interface
                            .clone()
                            .unwrap_or_else(|| format!("net{}", i + 1));
                        match nads.get(&(nad_ns.clone(), sel.name.clone())) {
                            None => {
                                problem = problem.or(Some(format!(
                                    "NetworkAttachmentDefinition {nad_ns}/{} not found",
                                    sel.name
                                )))
                            }
                            Some(Err(e)) => {
                                problem = problem.or(Some(format!(
                                    "NetworkAttachmentDefinition {nad_ns}/{}: {e}",
                                    sel.name
                                )))
                            }
                            Some(Ok((Attachment::IpamOnly { plugin_type, .. }, _))) => {
                                problem = problem.or(Some(format!(
                                    "attachment {ifname}: plugin {plugin_type:?} with FerrOVN IPAM is not run by the lab"
                                )))
                            }
                            Some(Ok((Attachment::Ovn { provider, vhost_user, .. }, conf))) => {
                                let vhost = vhost_user.as_ref().map(|v| VhostSpec {
                                    volume: v.volume_name.clone(),
                                    socket: v.socket_name.clone().unwrap_or_else(|| "sock".into()),
                                });
                                interfaces.push(IfPlan {
                                    ifname,
                                    provider: provider.clone(),
                                    netconf: conf.clone(),
                                    vhost,
                                });
                            }
                        }
                    }
                }
            }
        }
        out.push(PodPlan {
            namespace,
            name,
            node,
            interfaces,
            problem,
        });
    }
    out.sort_by_key(PodPlan::key);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrovn_control::manifest::load_str;

    const DPDK: &str = r#"
apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata: {name: dpdk-net, namespace: default}
spec:
  config: '{"cniVersion": "0.3.1", "type": "kube-ovn", "server_socket": "/run/x.sock", "provider": "dpdk-net.default.ovn", "vhost_user_socket_volume_name": "vhostuser-sockets", "vhost_user_socket_name": "sock"}'
---
apiVersion: kubeovn.io/v1
kind: Subnet
metadata: {name: dpdk-net}
spec: {protocol: IPv4, provider: dpdk-net.default.ovn, cidrBlock: 172.18.0.0/24}
---
apiVersion: v1
kind: Pod
metadata:
  name: testpmd
  namespace: default
  annotations:
    k8s.v1.cni.cncf.io/networks: '[{"name": "dpdk-net", "interface": "net1"}]'
spec:
  nodeName: lab-dpdk
  containers: [{name: c, image: x}]
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: default}
spec:
  containers: [{name: c, image: x}]
"#;

    #[test]
    fn dpdk_pod_gets_primary_and_vhost_attachment() {
        let m = load_str(DPDK, "t.yaml").unwrap();
        let pods = plan_pods(&m);
        assert_eq!(pods.len(), 2);
        let t = &pods[0];
        assert_eq!(t.key(), "default/testpmd");
        assert!(t.problem.is_none(), "{:?}", t.problem);
        assert!(t.is_dpdk());
        assert_eq!(t.interfaces.len(), 2);
        assert_eq!(t.interfaces[0].ifname, "eth0");
        let net1 = &t.interfaces[1];
        assert_eq!(net1.ifname, "net1");
        assert_eq!(net1.provider, "dpdk-net.default.ovn");
        assert_eq!(
            net1.vhost,
            Some(VhostSpec {
                volume: "vhostuser-sockets".into(),
                socket: "sock".into()
            })
        );
        assert_eq!(net1.netconf["name"], "dpdk-net");
        assert_eq!(net1.netconf["cniVersion"], "0.3.1");
    }

    #[test]
    fn host_network_pods_are_not_planned() {
        let host = r#"
apiVersion: v1
kind: Pod
metadata: {name: dns, namespace: kube-system}
spec:
  nodeName: lab-kernel
  hostNetwork: true
  containers: [{name: c, image: x}]
"#;
        let m = load_str(&format!("{DPDK}---{host}"), "t.yaml").unwrap();
        let keys: Vec<String> = plan_pods(&m).iter().map(PodPlan::key).collect();
        assert_eq!(keys, ["default/testpmd", "default/web"]);
    }

    #[test]
    fn pod_without_node_is_reported() {
        let m = load_str(DPDK, "t.yaml").unwrap();
        let pods = plan_pods(&m);
        let web = &pods[1];
        assert!(
            web.problem
                .as_deref()
                .unwrap_or("")
                .contains("no spec.nodeName")
        );
        assert!(!web.is_dpdk());
    }

    #[test]
    fn the_shipped_examples_plan_cleanly() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        let m = ferrovn_control::manifest::load_dir(&dir).unwrap();
        let pods = plan_pods(&m);
        assert!(pods.len() >= 5);
        for p in &pods {
            assert!(p.problem.is_none(), "{}: {:?}", p.key(), p.problem);
        }
        let dpdk: Vec<_> = pods.iter().filter(|p| p.is_dpdk()).collect();
        assert_eq!(dpdk.len(), 2);
        assert!(dpdk.iter().any(|p| p.node == crate::model::NODE_DPDK));
        assert!(dpdk.iter().any(|p| p.node == crate::model::NODE_KERNEL));
        let kernel_nodes: std::collections::BTreeSet<_> = pods
            .iter()
            .filter(|p| !p.is_dpdk())
            .map(|p| p.node.as_str())
            .collect();
        assert_eq!(kernel_nodes.len(), 2);
        let problems = ferrovn_control::manifest::validate(&m);
        assert!(problems.is_empty(), "{problems:?}");
    }
}
