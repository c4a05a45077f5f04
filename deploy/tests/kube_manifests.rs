//! deploy/ against a real kube-apiserver (ferrovn-testkit's ControlPlane, built by
//! `make kube-bins`): every CRD is accepted and served with our printer columns, and every
//! manifest we ship passes the server's own validation (`kubectl apply --dry-run=server`).

// A test crate: its helpers outside #[test] fns assert by unwrapping too (clippy.toml allows it
// only inside #[test] fns and #[cfg(test)] modules).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use ferrovn_testkit::kube::ControlPlane;

fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every YAML file under `dir`, sorted (directories first walked, so the order is stable).
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            // The build wrapper's sources are not Kubernetes objects.
            if p.file_name().is_some_and(|n| n == "kube") {
                continue;
            }
            out.extend(yaml_files(&p));
        } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            out.push(p);
        }
    }
    out
}

#[test]
fn crds_and_every_manifest_are_accepted_by_a_real_apiserver() {
    let cp = ControlPlane::start().expect("control plane (make kube-bins)");
    eprintln!("control plane up in {:?}", cp.startup_time());

    // (a) The CRDs apply, become Established, and `kubectl get` shows our printer columns.
    let crds = deploy_dir().join("crds");
    let crd_files = yaml_files(&crds);
    assert!(
        crd_files.len() >= 6,
        "CRDs in {}: {crd_files:?}",
        crds.display()
    );
    cp.kubectl(&["apply", "-f", crds.to_str().unwrap()])
        .expect("kubectl apply -f deploy/crds");
    cp.kubectl(&[
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd",
        "subnets.kubeovn.io",
        "vpcs.kubeovn.io",
        "ips.kubeovn.io",
        "ippools.kubeovn.io",
        "vlans.kubeovn.io",
        "provider-networks.kubeovn.io",
    ])
    .expect("CRDs established");
    cp.kubectl_stdin(
        &["apply", "-f", "-"],
        "apiVersion: kubeovn.io/v1\nkind: Subnet\nmetadata:\n  name: columns\nspec:\n  \
         protocol: IPv4\n  cidrBlock: 10.77.0.0/24\n  gateway: 10.77.0.1\n  provider: ovn\n  \
         vpc: ovn-cluster\n  excludeIps: [10.77.0.1]\n",
    )
    .expect("apply a Subnet");
    let table = cp
        .kubectl(&["get", "subnets"])
        .expect("kubectl get subnets")
        .stdout;
    let mut lines = table.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "NAME",
            "PROVIDER",
            "VPC",
            "PROTOCOL",
            "CIDR",
            "PRIVATE",
            "NAT",
            "DEFAULT",
            "GATEWAYTYPE",
            "V4USED",
            "V4AVAILABLE",
            "V6USED",
            "V6AVAILABLE",
            "EXCLUDEIPS"
        ],
        "kubectl get subnets:\n{table}"
    );
    let row: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        row[..5],
        ["columns", "ovn", "ovn-cluster", "IPv4", "10.77.0.0/24"],
        "kubectl get subnets:\n{table}"
    );
    for (kind, column) in [
        ("vpcs", "DEFAULTSUBNET"),
        ("ips", "V4IP"),
        ("ippools", "SUBNET"),
        ("vlans", "PROVIDER"),
        ("provider-networks", "DEFAULTINTERFACE"),
    ] {
        // Served: an empty list, not "the server doesn't have a resource type".
        cp.kubectl(&["get", kind])
            .unwrap_or_else(|e| panic!("kubectl get {kind}: {e}"));
        let described = cp
            .kubectl(&[
                "get",
                "crd",
                &format!("{kind}.kubeovn.io"),
                "-o",
                "jsonpath={.spec.versions[0].additionalPrinterColumns[*].name}",
            ])
            .expect("printer columns")
            .stdout
            .to_uppercase();
        assert!(
            described.split_whitespace().any(|c| c == column),
            "{kind}: printer columns {described}"
        );
    }

    // An object the schema must refuse is refused by the apiserver, naming the field.
    let bad = cp.kubectl_stdin(
        &["apply", "-f", "-"],
        "apiVersion: kubeovn.io/v1\nkind: Subnet\nmetadata:\n  name: bad\nspec:\n  \
         protocol: IPv4\n  cidrBlock: 10.78.0.0/24\n  gatewayType: sideways\n",
    );
    let err = bad
        .expect_err("a Subnet with gatewayType=sideways is refused")
        .to_string();
    assert!(err.contains("gatewayType"), "{err}");

    // (b) Everything in deploy/ passes server-side dry-run, in file order; then it is applied
    // for real, so later files find the namespaces and objects earlier ones define.
    let mut files = yaml_files(&deploy_dir());
    files.retain(|f| !f.starts_with(&crds));
    assert!(
        files.iter().any(|f| f.ends_with("rbac.yaml")),
        "deploy/rbac.yaml: {files:?}"
    );
    for f in &files {
        let out = cp
            .kubectl(&["apply", "--dry-run=server", "-f", f.to_str().unwrap()])
            .unwrap_or_else(|e| panic!("server dry-run of {}: {e}", f.display()));
        assert!(
            out.stdout.contains("(server dry run)"),
            "{}: {out:?}",
            f.display()
        );
        cp.kubectl(&["apply", "-f", f.to_str().unwrap()])
            .unwrap_or_else(|e| panic!("apply {}: {e}", f.display()));
    }
}
