//! The lab's cluster DNS: CoreDNS (`make kube-coredns`) as the `kube-system/kube-dns` Service
//! on 10.96.0.10, the address every lab kubelet writes into its pods' resolv.conf. Without it
//! no pod resolves a Service name, and the upstream Services and NetworkPolicy e2e specs, which
//! reach Services by name, cannot run (docs/conformance.md). Manifest: deploy/kube/coredns.yaml.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use ferrovn_testkit::kube::{ControlPlane, IMAGE_PREFIX, KubeletNode, image_tar, pinned_version};

use crate::sys::{Step, loud_warning};

/// The kube-dns Service address: the kubelets' `clusterDNS` (testkit's node config).
pub const CLUSTER_DNS_IP: &str = "10.96.0.10";

/// deploy/kube/coredns.yaml, with `@IMAGE@` and `@APISERVER_PORT@` to fill in.
const MANIFEST: &str = include_str!("../kube/coredns.yaml");

/// How long the two CoreDNS replicas may take to be Ready once applied.
const ROLLOUT_TIMEOUT: &str = "180s";

/// The image build.sh writes (`<prefix>/coredns/coredns:<COREDNS_VERSION>`).
pub fn image() -> String {
    format!(
        "{IMAGE_PREFIX}/coredns/coredns:{}",
        pinned_version("COREDNS_VERSION").unwrap_or("unknown")
    )
}

/// The OCI tar of the image, or an error naming `make kube-coredns`.
pub fn image_path() -> anyhow::Result<PathBuf> {
    Ok(image_tar("coredns.tar")?)
}

/// The manifest for a cluster whose apiserver listens on 127.0.0.1:`api_port` (inside every
/// node's namespace, through the lab's forwarder).
pub fn render(image: &str, api_port: u16) -> String {
    MANIFEST
        .replace("@IMAGE@", image)
        .replace("@APISERVER_PORT@", &api_port.to_string())
}

/// Imports the image into every node's containerd, applies the manifest and waits until every
/// replica is Ready and the Service has their endpoints. Returns a note for the step line.
pub fn deploy(cp: &ControlPlane, nodes: &[KubeletNode], api_port: u16) -> anyhow::Result<String> {
    let tar = image_path()?;
    import(nodes, &tar)?;
    cp.kubectl_stdin(&["apply", "-f", "-"], &render(&image(), api_port))
        .context("kubectl apply of deploy/kube/coredns.yaml")?;
    let rollout = cp.kubectl(&[
        "-n",
        "kube-system",
        "rollout",
        "status",
        "deployment/coredns",
        &format!("--timeout={ROLLOUT_TIMEOUT}"),
    ]);
    if let Err(e) = rollout {
        let pods = cp
            .kubectl(&[
                "-n",
                "kube-system",
                "get",
                "pods",
                "-l",
                "k8s-app=kube-dns",
                "-o",
                "wide",
            ])
            .map(|o| o.stdout)
            .unwrap_or_default();
        bail!("CoreDNS not Ready within {ROLLOUT_TIMEOUT}: {e}\n{pods}");
    }
    let endpoints = cp.jsonpath(
        &[
            "-n",
            "kube-system",
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=kube-dns",
        ],
        "{.items[*].endpoints[*].addresses[0]}",
    );
    Ok(format!(
        "kube-dns {CLUSTER_DNS_IP} → {}",
        endpoints.split_whitespace().collect::<Vec<_>>().join(", ")
    ))
}

/// `up`'s step: [`deploy`], and when it fails a loud warning, not a failed lab (pods and
/// Services by address work without DNS; the upstream e2e specs by name do not).
pub fn up_step(cp: &ControlPlane, nodes: &[KubeletNode], api_port: u16) {
    let s = Step::begin(format!(
        "cluster DNS: CoreDNS as kube-system/kube-dns {CLUSTER_DNS_IP} (hostNetwork on each node)"
    ));
    match deploy(cp, nodes, api_port) {
        Ok(note) => s.done(&note),
        Err(e) => {
            s.fail();
            let mut lines =
                vec!["WARNING: no cluster DNS: pods cannot resolve Service names".to_string()];
            lines.extend(format!("{e:#}").lines().take(6).map(str::to_string));
            loud_warning(&lines);
        }
    }
}

fn import(nodes: &[KubeletNode], tar: &Path) -> anyhow::Result<()> {
    let t = tar.display().to_string();
    for n in nodes {
        n.ctr(&["images", "import", &t])
            .with_context(|| format!("importing {t} into the containerd of {}", n.name()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_fills_every_placeholder() {
        let m = render("ferrovn.invalid/coredns/coredns:v9", 40123);
        assert!(!m.contains('@'), "a placeholder is left:\n{m}");
        assert!(m.contains("image: ferrovn.invalid/coredns/coredns:v9"));
        assert!(m.contains(r#"value: "40123""#));
        assert!(m.contains(&format!("clusterIP: {CLUSTER_DNS_IP}")));
    }

    #[test]
    fn every_document_parses() {
        let m = render("x:y", 1);
        for doc in m.split("\n---\n") {
            let v: serde_json::Value = serde_norway::from_str(doc).unwrap();
            assert!(v.get("kind").is_some(), "no kind in:\n{doc}");
        }
    }
}
