//! Upstream kube-proxy in nftables mode, in a network namespace of its own, against a
//! [`super::ControlPlane`]: the anchor FerrOVN's Service sync is compared with
//! (`bench-services`, `kubeproxy_sync_10k_s`).
//!
//! Its rules live in the private namespace (`table ip kube-proxy`, `table ip6 kube-proxy`), so
//! nothing of it reaches the machine's own ruleset. The namespace holds the Node's InternalIP
//! (on `lo`) and a [`LoopbackRelay`] to the apiserver. Dropping the handle kills
//! kube-proxy by PID, flushes the namespace's ruleset and deletes the namespace.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::forward::LoopbackRelay;
use super::process::{Component, log_tail};
use super::{ControlPlane, KubeError, binary};
use crate::netns::Netns;

/// Where kube-proxy serves its Prometheus metrics inside its namespace (the namespace is
/// private, so a fixed port cannot collide).
const METRICS: &str = "127.0.0.1:10249";

/// A running kube-proxy; dropping it cleans up everything it created.
#[derive(Debug)]
pub struct KubeProxy {
    // Field order is drop order: kube-proxy first, then its relay, then the namespace.
    process: Component,
    _relay: LoopbackRelay,
    netns: Netns,
    log: PathBuf,
}

impl KubeProxy {
    /// Starts kube-proxy (`--proxy-mode=nftables`) as node `node` (the Node object should exist
    /// with `node_ip` as InternalIP, or kube-proxy waits 30 s for it), in a new namespace
    /// `netns_name` that holds `node_ip`. Its log goes to `dir`.
    pub fn start(
        cp: &ControlPlane,
        netns_name: &str,
        node: &str,
        node_ip: &str,
        cluster_cidr: &str,
        dir: &Path,
    ) -> Result<KubeProxy, KubeError> {
        let program = binary("kube-proxy")?;
        let port: u16 = cp
            .server()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| KubeError::Io {
                what: "apiserver URL".into(),
                reason: format!("no port in {}", cp.server()),
            })?;
        let ns_err = |e: crate::error::Error| KubeError::Io {
            what: format!("network namespace {netns_name}"),
            reason: e.to_string(),
        };
        let netns = Netns::create(netns_name).map_err(ns_err)?;
        // The node address sits on `lo` (this kernel may lack the dummy link type): kube-proxy
        // only needs it to be local.
        netns
            .ip(["addr", "add", &format!("{node_ip}/32"), "dev", "lo"])
            .map_err(ns_err)?;
        let relay = LoopbackRelay::start(&netns.path(), port)?;
        let log = dir.join(format!("kube-proxy-{netns_name}.log"));
        let args = vec![
            "netns".into(),
            "exec".into(),
            netns_name.into(),
            program.display().to_string(),
            format!("--kubeconfig={}", cp.admin_kubeconfig().display()),
            "--proxy-mode=nftables".into(),
            format!("--hostname-override={node}"),
            format!("--cluster-cidr={cluster_cidr}"),
            format!("--metrics-bind-address={METRICS}"),
            "--healthz-bind-address=127.0.0.1:10256".into(),
            // The conntrack table size is global to the machine: leave it alone.
            "--conntrack-max-per-core=0".into(),
            // High enough for the client to list 10k Services quickly.
            "--kube-api-qps=1000".into(),
            "--kube-api-burst=2000".into(),
            "--v=2".into(),
        ];
        // `ip netns exec` execs kube-proxy in place: the PID is kube-proxy's.
        let process = Component::spawn("kube-proxy", Path::new("ip"), args, log.clone(), None)?;
        Ok(KubeProxy {
            process,
            _relay: relay,
            netns,
            log,
        })
    }

    /// kube-proxy's log.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// The namespace kube-proxy programs.
    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    /// `Err` with its log tail once kube-proxy has exited.
    pub fn check_alive(&mut self) -> Result<(), KubeError> {
        self.process.check_alive()
    }

    /// The text of its `/metrics` endpoint.
    pub fn metrics(&self) -> Result<String, KubeError> {
        self.in_netns(
            "curl",
            &[
                "-sS",
                "--max-time",
                "10",
                &format!("http://{METRICS}/metrics"),
            ],
        )
    }

    /// `nft args` inside its namespace (stdout).
    pub fn nft(&self, args: &[&str]) -> Result<String, KubeError> {
        self.in_netns("nft", args)
    }

    fn in_netns(&self, program: &str, args: &[&str]) -> Result<String, KubeError> {
        let mut cmd: Command = self.netns.command(program);
        cmd.args(args);
        let out = cmd.output().map_err(|e| KubeError::Spawn {
            program: program.into(),
            reason: e.to_string(),
        })?;
        if !out.status.success() {
            return Err(KubeError::Command {
                command: format!(
                    "ip netns exec {} {program} {}",
                    self.netns.name(),
                    args.join(" ")
                ),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The last lines of its log (for an error message).
    pub fn log_tail(&self) -> String {
        log_tail(&self.log)
    }
}

impl Drop for KubeProxy {
    fn drop(&mut self) {
        // kube-proxy would rewrite its tables while we delete them: stop it first.
        self.process.kill();
        let _ = self.in_netns("nft", &["flush", "ruleset"]);
    }
}

/// The value of an unlabelled-or-labelled Prometheus sample `name{labels}` whose label set
/// contains `label` (e.g. `ip_family="IPv4"`; empty matches any), from a metrics text.
pub fn metric_value(text: &str, name: &str, label: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (key, value) = l.rsplit_once(' ')?;
        let (metric, labels) = match key.split_once('{') {
            Some((m, rest)) => (m, rest),
            None => (key, ""),
        };
        (metric == name && labels.contains(label)).then(|| value.parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::metric_value;

    #[test]
    fn metric_value_picks_the_labelled_sample() {
        let text = "# HELP x\n\
                    kubeproxy_sync_full_proxy_rules_duration_seconds_sum{ip_family=\"IPv4\"} 12.5\n\
                    kubeproxy_sync_full_proxy_rules_duration_seconds_sum{ip_family=\"IPv6\"} 0.01\n\
                    kubeproxy_sync_full_proxy_rules_duration_seconds_count{ip_family=\"IPv4\"} 1\n\
                    plain 3\n";
        assert_eq!(
            metric_value(
                text,
                "kubeproxy_sync_full_proxy_rules_duration_seconds_sum",
                "ip_family=\"IPv6\""
            ),
            Some(0.01)
        );
        assert_eq!(
            metric_value(
                text,
                "kubeproxy_sync_full_proxy_rules_duration_seconds_count",
                "IPv4"
            ),
            Some(1.0)
        );
        assert_eq!(metric_value(text, "plain", ""), Some(3.0));
        assert_eq!(metric_value(text, "missing", ""), None);
    }
}
