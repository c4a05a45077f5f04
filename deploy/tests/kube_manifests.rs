//! deploy/ against a real kube-apiserver (ferrovn-testkit's ControlPlane, built by
//! `make kube-bins`): every CRD is accepted and served with our printer columns, and every
//! manifest we ship passes the server's own validation (`kubectl apply --dry-run=server`); the
//! controller Deployment, the node agent DaemonSets and the vhost helper DaemonSet are stored
//! as written and each DaemonSet wants exactly the nodes of its profile label (the helper: the
//! kernel agent's).

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

    workloads_as_installed(&cp);
}

/// deploy/ferrovn.yaml as the apiserver stored it: the controller Deployment and one node
/// agent DaemonSet per profile, each DaemonSet placed by the `ovn.kubernetes.io/ovs_dp_type`
/// label, with the agent's privileges and host mounts.
fn workloads_as_installed(cp: &ControlPlane) {
    let ks = ["-n", "kube-system"];
    let get = |kind: &str, name: &str, expr: &str| {
        let mut args = ks.to_vec();
        args.extend(["get", kind, name]);
        cp.jsonpath(&args, expr)
    };
    assert_eq!(
        get(
            "deployment",
            "ferrovn-controller",
            "{.spec.template.spec.serviceAccountName} {.spec.replicas} {.spec.template.spec.containers[0].image} {.spec.template.spec.containers[0].imagePullPolicy}"
        ),
        "ferrovn-controller 2 ferrovn.invalid/ferrovn:dev Never"
    );
    for (ds, operator) in [
        ("ferrovn-node-kernel", "NotIn"),
        ("ferrovn-node-dpdk", "In"),
    ] {
        let t = ".spec.template.spec";
        assert_eq!(
            get(
                "daemonset",
                ds,
                &format!(
                    "{{{t}.serviceAccountName}} {{{t}.hostNetwork}} {{{t}.hostPID}} \
                     {{{t}.containers[0].securityContext.privileged}} {{{t}.initContainers[0].name}} \
                     {{{t}.containers[0].imagePullPolicy}} \
                     {{{t}.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].key}} \
                     {{{t}.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].operator}}"
                )
            ),
            format!(
                "ferrovn-node true true true install-cni Never ovn.kubernetes.io/ovs_dp_type {operator}"
            ),
            "{ds}"
        );
        let mounts = get(
            "daemonset",
            ds,
            &format!(
                "{{range {t}.containers[0].volumeMounts[*]}}{{.mountPath}}={{.mountPropagation}} {{end}}"
            ),
        );
        let mounts: Vec<&str> = mounts.split_whitespace().collect();
        for needed in [
            "/run/openvswitch=",
            "/run/ferrovn=",
            "/var/run/netns=HostToContainer",
            "/var/lib/kubelet=HostToContainer",
            "/etc/cni/net.d=",
            "/opt/cni/bin=",
        ] {
            assert!(mounts.contains(&needed), "{ds}: {needed} in {mounts:?}");
        }
        assert_eq!(
            mounts.contains(&"/dev/hugepages=HostToContainer"),
            ds == "ferrovn-node-dpdk",
            "{ds}: hugepages only for DPDK: {mounts:?}"
        );
    }

    // The vhost helper: privileged on the node's network, its relay CPUs from ferrovn-config,
    // the agent's later bind mounts under /run/ferrovn propagated into it.
    let t = ".spec.template.spec";
    assert_eq!(
        get(
            "daemonset",
            "ferrovn-vhost",
            &format!(
                "{{{t}.hostNetwork}} {{{t}.containers[0].securityContext.privileged}} \
                 {{{t}.containers[0].imagePullPolicy}} {{{t}.containers[0].command[0]}} \
                 {{{t}.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].operator}} \
                 {{{t}.containers[0].env[0].valueFrom.configMapKeyRef.key}}"
            )
        ),
        "true true Never /usr/local/bin/ferrovn-vhost NotIn vhost-cores"
    );
    let mounts = get(
        "daemonset",
        "ferrovn-vhost",
        &format!(
            "{{range {t}.containers[0].volumeMounts[*]}}{{.mountPath}}={{.mountPropagation}} {{end}}"
        ),
    );
    assert!(
        mounts
            .split_whitespace()
            .any(|m| m == "/run/ferrovn=HostToContainer"),
        "ferrovn-vhost mounts: {mounts}"
    );

    // One agent per node, by label: no label and `kernel` -> kernel DaemonSet, `userspace` -> DPDK.
    cp.kubectl_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Node\nmetadata: {name: plain}\n---\n\
         apiVersion: v1\nkind: Node\nmetadata: {name: kern, labels: {ovn.kubernetes.io/ovs_dp_type: kernel}}\n---\n\
         apiVersion: v1\nkind: Node\nmetadata: {name: fast, labels: {ovn.kubernetes.io/ovs_dp_type: userspace}}\n",
    )
    .expect("apply three Nodes");
    // deploy/examples has Nodes too: count every Node's label
    let labels = cp.jsonpath(
        &["get", "nodes"],
        "{range .items[*]}{.metadata.labels.ovn\\.kubernetes\\.io/ovs_dp_type}{\"|\"}{end}",
    );
    let labels: Vec<&str> = labels.split_terminator('|').collect();
    let want_dpdk = labels.iter().filter(|l| **l == "userspace").count();
    let want_kernel = labels.len() - want_dpdk;
    assert!(want_dpdk >= 1 && want_kernel >= 2, "node labels {labels:?}");
    let want = (want_kernel.to_string(), want_dpdk.to_string());
    let start = std::time::Instant::now();
    loop {
        let kernel = get(
            "daemonset",
            "ferrovn-node-kernel",
            "{.status.desiredNumberScheduled}",
        );
        let dpdk = get(
            "daemonset",
            "ferrovn-node-dpdk",
            "{.status.desiredNumberScheduled}",
        );
        let helper = get(
            "daemonset",
            "ferrovn-vhost",
            "{.status.desiredNumberScheduled}",
        );
        if (&kernel, &dpdk, &helper) == (&want.0, &want.1, &want.0) {
            break;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "desired pods per DaemonSet: kernel {kernel:?}, dpdk {dpdk:?}, vhost helper {helper:?}, want {want:?} (helper: as kernel; node labels {labels:?})"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}

/// The lab imports agnhost under the tag deploy/kube/versions.env pins; a manifest naming
/// another tag would leave its pod in ImagePullBackOff (no registry here), so a version bump
/// must touch every manifest too.
#[test]
fn every_agnhost_image_in_deploy_is_the_pinned_tag() {
    let tag = ferrovn_testkit::kube::pinned_version("AGNHOST_TAG").expect("AGNHOST_TAG pinned");
    let want = format!("e2e-test-images/agnhost:{tag}");
    let mut seen = 0;
    for f in yaml_files(&deploy_dir()) {
        let text = std::fs::read_to_string(&f).unwrap();
        for (n, line) in text.lines().enumerate() {
            let Some(at) = line.find("e2e-test-images/agnhost:") else {
                continue;
            };
            seen += 1;
            let image = line[at..].split_whitespace().next().unwrap();
            assert_eq!(image, want, "{}:{}", f.display(), n + 1);
        }
    }
    assert!(seen > 0, "no manifest under deploy/ runs agnhost");
}
