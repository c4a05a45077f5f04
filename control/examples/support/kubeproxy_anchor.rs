//! The same-run anchor of `bench-services`: upstream kube-proxy (nftables mode) syncing the
//! same 10,000 Services × 10 endpoints from a real apiserver.
//!
//! A real control plane (testkit) gets the Services (ClusterIPs allocated by the apiserver)
//! and their EndpointSlices, created in parallel over the API. Only then kube-proxy starts in a
//! network namespace of its own, so its first sync sees all of them at once, like FerrOVN's
//! first pass. The figure is kube-proxy's own `kubeproxy_sync_full_proxy_rules_duration_seconds`
//! of that first full IPv4 sync, and it counts only once the namespace's ruleset is checked to
//! hold every Service IP and every endpoint's DNAT target.

use std::error::Error;
use std::time::{Duration, Instant};

use ferrovn_testkit::kube::{ControlPlane, KubeProxy, metric_value, pinned_version};
use ferrovn_testkit::names::unique_tag;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, PostParams};
use serde_json::json;

type Result<T = ()> = std::result::Result<T, Box<dyn Error>>;

/// Namespaces the bench spreads its Services over (as in the NB part: `ns-<i % 50>`).
const NAMESPACES: usize = 50;
/// Creates in flight against the apiserver.
const IN_FLIGHT: usize = 32;
/// How long kube-proxy may take from start to a complete ruleset.
const SYNC_DEADLINE: Duration = Duration::from_secs(600);
const NODE: &str = "node-0";
const NODE_IP: &str = "172.18.0.2";

/// What kube-proxy did with the Services.
pub struct Anchor {
    /// Its first full IPv4 sync (its own metric), seconds.
    pub sync_s: f64,
    /// From its start to a ruleset holding every Service, seconds (includes listing them).
    pub ready_s: f64,
    pub create_s: f64,
    pub cluster_ips: usize,
    /// Endpoint DNAT targets in its Service chains.
    pub endpoint_chains: usize,
    pub version: &'static str,
}

fn service(i: usize) -> Result<Service> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": format!("svc-{i}"), "namespace": format!("ns-{}", i % NAMESPACES)},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]},
    }))?)
}

/// Runs the anchor for `slices` (one per Service `i`, named and labelled as `svc-<i>`).
pub fn measure(rt: &tokio::runtime::Runtime, slices: Vec<EndpointSlice>) -> Result<Anchor> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("needs root (kube-proxy runs in a network namespace of its own)".into());
    }
    let services = slices.len();
    let endpoints: usize = slices.iter().map(|s| s.endpoints.len()).sum();
    let cp = ControlPlane::start()?;
    let mut objects = String::new();
    for n in 0..NAMESPACES {
        objects.push_str(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: ns-{n}}}\n---\n"
        ));
    }
    objects.push_str(&format!(
        "apiVersion: v1\nkind: Node\nmetadata: {{name: {NODE}}}\n"
    ));
    cp.kubectl_stdin(&["apply", "-f", "-"], &objects)?;
    // kube-proxy waits up to 30 s for its Node's addresses; the status is its own subresource.
    let status = json!({"status": {"addresses": [{"type": "InternalIP", "address": NODE_IP}]}});
    cp.kubectl(&[
        "patch",
        "node",
        NODE,
        "--subresource=status",
        "--type=merge",
        "-p",
        &status.to_string(),
    ])?;

    let create_s = rt.block_on(async {
        let client = ferrovn_control::kube::client_from_kubeconfig(cp.admin_kubeconfig()).await?;
        let started = Instant::now();
        let pp = PostParams::default();
        futures::stream::iter(0..services)
            .map(|i| {
                let client = client.clone();
                let pp = pp.clone();
                async move {
                    let ns = format!("ns-{}", i % NAMESPACES);
                    Api::<Service>::namespaced(client, &ns)
                        .create(&pp, &service(i)?)
                        .await?;
                    Ok::<_, Box<dyn Error>>(())
                }
            })
            .buffer_unordered(IN_FLIGHT)
            .try_collect::<Vec<_>>()
            .await?;
        futures::stream::iter(slices)
            .map(|s| {
                let client = client.clone();
                let pp = pp.clone();
                async move {
                    let ns = s.metadata.namespace.clone().unwrap_or_default();
                    Api::<EndpointSlice>::namespaced(client, &ns)
                        .create(&pp, &s)
                        .await?;
                    Ok::<_, Box<dyn Error>>(())
                }
            })
            .buffer_unordered(IN_FLIGHT)
            .try_collect::<Vec<_>>()
            .await?;
        Ok::<_, Box<dyn Error>>(started.elapsed().as_secs_f64())
    })?;
    println!(
        "kube-proxy anchor: {services} Services and their EndpointSlices ({endpoints} endpoints) \
         created over the API in {create_s:.1} s"
    );

    let started = Instant::now();
    let mut kp = KubeProxy::start(
        &cp,
        &format!("kpb{}", unique_tag()),
        NODE,
        NODE_IP,
        "10.16.0.0/16",
        cp.dir(),
    )?;
    let want_ips = services + 1; // and the apiserver's own `kubernetes` Service
    let mut last = String::from("no metrics yet");
    loop {
        if started.elapsed() > SYNC_DEADLINE {
            return Err(format!(
                "kube-proxy did not program {want_ips} Service IPs within {SYNC_DEADLINE:?} \
                 ({last}); log {}:\n{}",
                kp.log().display(),
                kp.log_tail()
            )
            .into());
        }
        kp.check_alive()?;
        std::thread::sleep(Duration::from_millis(100));
        let Ok(metrics) = kp.metrics() else {
            continue;
        };
        let full = "kubeproxy_sync_full_proxy_rules_duration_seconds";
        let v4 = "ip_family=\"IPv4\"";
        let count = metric_value(&metrics, &format!("{full}_count"), v4).unwrap_or(0.0);
        if count < 1.0 {
            continue;
        }
        let ready_s = started.elapsed().as_secs_f64();
        let sum = metric_value(&metrics, &format!("{full}_sum"), v4).unwrap_or(f64::NAN);
        let cluster_ips = set_elements(&kp, "cluster-ips")?;
        let endpoint_chains = dnat_targets(&kp.nft(&["list", "table", "ip", "kube-proxy"])?);
        last = format!(
            "after {count} full syncs: {cluster_ips} Service IPs, {endpoint_chains} DNAT targets"
        );
        if cluster_ips < want_ips || endpoint_chains < endpoints {
            continue;
        }
        if count > 1.0 {
            // The first sync alone did not finish the job; its duration is not the figure.
            return Err(format!(
                "kube-proxy needed {count} full syncs ({sum:.2} s in all) to program the Services"
            )
            .into());
        }
        return Ok(Anchor {
            sync_s: sum,
            ready_s,
            create_s,
            cluster_ips,
            endpoint_chains,
            version: pinned_version("K8S_VERSION").unwrap_or("unknown"),
        });
    }
}

/// Endpoint DNAT targets in a listing of kube-proxy's table: the `<n> : <ip> . <port>` entries
/// of each Service chain's `numgen random mod N map`. kube-proxy 1.37 DNATs there directly and
/// makes no per-endpoint chains when no masquerading is needed.
fn dnat_targets(listing: &str) -> usize {
    listing
        .split(", ")
        .flat_map(|part| part.split('{'))
        .filter(|entry| {
            let mut words = entry.split_whitespace();
            let (Some(n), Some(":"), Some(ip), Some("."), Some(port)) = (
                words.next(),
                words.next(),
                words.next(),
                words.next(),
                words.next(),
            ) else {
                return false;
            };
            n.parse::<u32>().is_ok()
                && ip.parse::<std::net::IpAddr>().is_ok()
                && port.trim_end_matches('}').trim().parse::<u16>().is_ok()
        })
        .count()
}

/// Elements of the set `name` in kube-proxy's `ip` table.
fn set_elements(kp: &KubeProxy, name: &str) -> Result<usize> {
    let out = kp.nft(&["-j", "list", "set", "ip", "kube-proxy", name])?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    Ok(v["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o["set"]["elem"].as_array())
        .map(Vec::len)
        .sum())
}
