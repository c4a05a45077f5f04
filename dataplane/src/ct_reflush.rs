//! A second conntrack flush for backends that left a `ct_flush` load balancer, once this node's
//! datapath no longer sends new connections to them (docs/services.md, "DPDK pods as Service
//! clients").
//!
//! Why ovn-controller's own flush is not enough: it sends the flush (an OpenFlow `CT_FLUSH`
//! filtered by VIP, port and backend) right behind the bundle that replaces the load balancer's
//! group, and ovs-vswitchd runs both at once. The datapath flows are only revalidated against
//! the new group afterwards, by the revalidator threads. Until then a running flow's next
//! packet misses conntrack (its entry was just flushed), meets the cached flow that still
//! picks the removed backend, and commits a fresh entry to it. From then on every packet of
//! that flow is `+est` and follows the entry, whatever the tables say, so a UDP flow that
//! never idles stays on the removed backend for good. On OVS-DPDK at a million packets per
//! second the window is always hit; a slow kernel pod hits it less often.
//!
//! The agent repeats the same flush after the window closed: once no group on the
//! integration bridge still has a bucket to the backend (or a deadline passed, when another
//! load balancer keeps the same backend), and after two full revalidation rounds
//! (`revalidator/wait`), so no cached flow to the backend can create an entry again.
//!
//! The input is the Southbound `Load_Balancer` rows the node-port pass reads anyway; the tuples
//! are OVN's own (ovn-controller `lb_data_removed_five_tuples_*`): for every row with
//! `options:ct_flush=true`, (protocol, VIP, backend) of each VIP's backends, and a tuple is
//! flushed when it was there on the previous read and is not now.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::nodeport::{L4, LbRow};

/// The option OVN reads to flush a removed backend's conntrack entries (ovn-nb(5)).
pub const CT_FLUSH_OPTION: &str = "ct_flush";

/// How long the agent waits for ovn-controller to drop a backend from its groups before it
/// flushes anyway (the backend may legitimately stay in another load balancer's group).
pub const GROUP_DEADLINE: Duration = Duration::from_secs(10);

/// One (protocol, VIP, backend) whose conntrack entries OVN flushes when the backend leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LbTuple {
    pub l4: L4,
    pub vip: SocketAddr,
    pub backend: SocketAddr,
}

/// `"10.0.0.1:80"` / `"[fd00::1]:80"`; a template (`^VAR`) or a VIP without port is `None`:
/// OVN's flush needs both, and template values live in the chassis' variables.
fn sockaddr(s: &str) -> Option<SocketAddr> {
    s.trim().parse().ok()
}

/// The flushable tuples of `lbs`: rows with `ct_flush=true`, VIPs and backends with ports.
pub fn tuples(lbs: &[LbRow]) -> BTreeSet<LbTuple> {
    let mut out = BTreeSet::new();
    for lb in lbs {
        if lb.options.get(CT_FLUSH_OPTION).map(String::as_str) != Some("true") {
            continue;
        }
        let Some(l4) = L4::parse(&lb.protocol) else {
            continue;
        };
        for (vip, backends) in &lb.vips {
            let Some(vip) = sockaddr(vip) else { continue };
            for b in backends.split(',').filter_map(sockaddr) {
                if b.is_ipv4() == vip.is_ipv4() {
                    out.insert(LbTuple {
                        l4,
                        vip,
                        backend: b,
                    });
                }
            }
        }
    }
    out
}

/// What was flushable before and is not now: the backends OVN just removed.
pub fn removed(before: &BTreeSet<LbTuple>, now: &BTreeSet<LbTuple>) -> BTreeSet<LbTuple> {
    before.difference(now).copied().collect()
}

fn proto_number(l4: L4) -> u8 {
    match l4 {
        L4::Tcp => 6,
        L4::Udp => 17,
        L4::Sctp => 132,
    }
}

/// `ovs-appctl dpctl/flush-conntrack` arguments for one tuple, in every zone (no `zone=`):
/// original direction to the VIP and port, reply direction from the backend and its port,
/// the same filter ovn-controller sends.
pub fn flush_args(t: &LbTuple) -> Vec<String> {
    let (dst, src) = match t.vip.ip() {
        IpAddr::V4(_) => ("ct_nw_dst", "ct_nw_src"),
        IpAddr::V6(_) => ("ct_ipv6_dst", "ct_ipv6_src"),
    };
    vec![
        "dpctl/flush-conntrack".to_string(),
        format!(
            "{dst}={},ct_nw_proto={},ct_tp_dst={}",
            t.vip.ip(),
            proto_number(t.l4),
            t.vip.port()
        ),
        format!("{src}={},ct_tp_src={}", t.backend.ip(), t.backend.port()),
    ]
}

/// The backends of `wanted` that some group bucket in `ovs-ofctl dump-groups` output still
/// NATs to (`nat(dst=10.16.0.12:9)`, `nat(dst=[fd00::c]:9)`), i.e. ovn-controller has not
/// replaced that group yet.
pub fn still_in_groups(dump: &str, wanted: &BTreeSet<SocketAddr>) -> BTreeSet<SocketAddr> {
    let mut found = BTreeSet::new();
    for chunk in dump.split("nat(dst=").skip(1) {
        let end = chunk.find([')', ',']).unwrap_or(chunk.len());
        if let Some(a) = sockaddr(&chunk[..end]).filter(|a| wanted.contains(a)) {
            found.insert(a);
        }
    }
    found
}

#[derive(Debug, thiserror::Error)]
pub enum ReflushError {
    #[error("ovs-vswitchd pid file {path}: {reason}")]
    PidFile { path: PathBuf, reason: String },
    #[error("{cmd}: {reason}")]
    Command { cmd: String, reason: String },
}

/// Where ovs-vswitchd listens: its control socket (from the pid file) and the bridge's
/// OpenFlow management socket, both in its run dir.
#[derive(Debug, Clone)]
pub struct OvsTarget {
    pub pidfile: PathBuf,
    pub bridge: String,
}

impl OvsTarget {
    pub(crate) fn rundir(&self) -> &Path {
        self.pidfile.parent().unwrap_or(Path::new("/"))
    }

    /// `<rundir>/ovs-vswitchd.ctl` when ovs-vswitchd was started with that `--unixctl` (the
    /// lab, the tests), else OVS's default `<rundir>/ovs-vswitchd.<pid>.ctl`.
    fn ctl(&self) -> Result<PathBuf, ReflushError> {
        let plain = self.rundir().join("ovs-vswitchd.ctl");
        if plain.exists() {
            return Ok(plain);
        }
        let err = |reason: String| ReflushError::PidFile {
            path: self.pidfile.clone(),
            reason,
        };
        let pid = std::fs::read_to_string(&self.pidfile).map_err(|e| err(e.to_string()))?;
        let pid: u32 = pid
            .trim()
            .parse()
            .map_err(|_| err(format!("{:?} is not a process id", pid.trim())))?;
        Ok(self.rundir().join(format!("ovs-vswitchd.{pid}.ctl")))
    }

    pub(crate) async fn run(&self, program: &str, args: &[String]) -> Result<String, ReflushError> {
        let cmd = format!("{program} {}", args.join(" "));
        let out = tokio::time::timeout(
            Duration::from_secs(30),
            tokio::process::Command::new(program)
                .args(args)
                .kill_on_drop(true)
                .output(),
        )
        .await
        .map_err(|_| ReflushError::Command {
            cmd: cmd.clone(),
            reason: "no answer within 30 s".into(),
        })?
        .map_err(|e| ReflushError::Command {
            cmd: cmd.clone(),
            reason: e.to_string(),
        })?;
        if !out.status.success() {
            return Err(ReflushError::Command {
                cmd,
                reason: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub(crate) async fn appctl(&self, args: &[String]) -> Result<String, ReflushError> {
        let mut all = vec!["-t".to_string(), self.ctl()?.display().to_string()];
        all.extend(args.iter().cloned());
        self.run("ovs-appctl", &all).await
    }

    async fn dump_groups(&self) -> Result<String, ReflushError> {
        let mgmt = self.rundir().join(format!("{}.mgmt", self.bridge));
        self.run(
            "ovs-ofctl",
            &[
                "-O".into(),
                "OpenFlow15".into(),
                "dump-groups".into(),
                format!("unix:{}", mgmt.display()),
            ],
        )
        .await
    }
}

/// Flushes `gone` once no group NATs to its backends any more (or after `deadline`) and the
/// datapath flows were revalidated twice. Returns how long it waited for the groups.
pub async fn reflush(
    ovs: &OvsTarget,
    gone: &BTreeSet<LbTuple>,
    deadline: Duration,
) -> Result<Duration, ReflushError> {
    let t0 = Instant::now();
    let backends: BTreeSet<SocketAddr> = gone.iter().map(|t| t.backend).collect();
    loop {
        let left = still_in_groups(&ovs.dump_groups().await?, &backends);
        if left.is_empty() || t0.elapsed() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let waited = t0.elapsed();
    // `revalidator/wait` answers at the end of a round that may have started before the new
    // group was in place; the second one is a round that started after. ovs-vswitchd refuses
    // it with more than one datapath type (one revalidator set each): then wait out more than
    // two rounds (at most `other_config:max-revalidator`, 500 ms by default, apart).
    for _ in 0..2 {
        if ovs.appctl(&["revalidator/wait".to_string()]).await.is_err() {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            break;
        }
    }
    for t in gone {
        ovs.appctl(&flush_args(t)).await?;
    }
    Ok(waited)
}

/// Remembers the flushable tuples between Southbound reads and flushes what left, in the
/// background so the node-port pass never waits for it.
#[derive(Debug)]
pub struct Reflusher {
    ovs: OvsTarget,
    seen: Option<BTreeSet<LbTuple>>,
}

impl Reflusher {
    pub fn new(ovs: OvsTarget) -> Self {
        Reflusher { ovs, seen: None }
    }

    /// Feeds one Southbound read. The first read only sets the baseline: what left before the
    /// agent started was ovn-controller's alone to flush.
    pub fn observe(&mut self, lbs: &[LbRow]) {
        let now = tuples(lbs);
        let gone = match &self.seen {
            Some(before) => removed(before, &now),
            None => BTreeSet::new(),
        };
        self.seen = Some(now);
        if gone.is_empty() {
            return;
        }
        let ovs = self.ovs.clone();
        tokio::spawn(async move {
            match reflush(&ovs, &gone, GROUP_DEADLINE).await {
                Ok(waited) => tracing::info!(
                    tuples = gone.len(),
                    waited_ms = waited.as_millis() as u64,
                    "conntrack of removed load-balancer backends flushed again"
                ),
                Err(e) => tracing::warn!(error = %e, "conntrack of removed backends not flushed"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn lb(proto: &str, flush: bool, vips: &[(&str, &str)]) -> LbRow {
        let mut options = BTreeMap::new();
        if flush {
            options.insert(CT_FLUSH_OPTION.to_string(), "true".to_string());
        }
        LbRow {
            name: "svc:default/sink:udp".into(),
            protocol: proto.into(),
            vips: vips
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            options,
        }
    }

    fn t(l4: L4, vip: &str, backend: &str) -> LbTuple {
        LbTuple {
            l4,
            vip: vip.parse().unwrap(),
            backend: backend.parse().unwrap(),
        }
    }

    #[test]
    fn only_ct_flush_rows_with_ports_give_tuples() {
        let lbs = [
            lb(
                "udp",
                true,
                &[
                    ("10.96.0.50:9", "10.16.0.11:9,10.16.0.12:9"),
                    ("[fd00:96::50]:9", "[fd00:10:16::b]:9"),
                    ("^VIP_50:9", "^BACKENDS_50"),
                    ("10.96.0.51:9", ""),
                ],
            ),
            lb("tcp", false, &[("10.96.0.80:80", "10.16.0.11:8080")]),
        ];
        let got = tuples(&lbs);
        let want = BTreeSet::from([
            t(L4::Udp, "10.96.0.50:9", "10.16.0.11:9"),
            t(L4::Udp, "10.96.0.50:9", "10.16.0.12:9"),
            t(L4::Udp, "[fd00:96::50]:9", "[fd00:10:16::b]:9"),
        ]);
        assert_eq!(got, want);
    }

    #[test]
    fn a_removed_backend_is_flushed_by_vip_port_and_backend_in_every_zone() {
        let before = tuples(&[lb(
            "udp",
            true,
            &[("10.96.0.50:9", "10.16.0.11:9,10.16.0.12:9")],
        )]);
        let now = tuples(&[lb("udp", true, &[("10.96.0.50:9", "10.16.0.11:9")])]);
        let gone = removed(&before, &now);
        assert_eq!(
            gone,
            BTreeSet::from([t(L4::Udp, "10.96.0.50:9", "10.16.0.12:9")])
        );
        let args = flush_args(gone.iter().next().unwrap());
        assert_eq!(
            args,
            [
                "dpctl/flush-conntrack",
                "ct_nw_dst=10.96.0.50,ct_nw_proto=17,ct_tp_dst=9",
                "ct_nw_src=10.16.0.12,ct_tp_src=9"
            ]
        );
        assert!(!args.iter().any(|a| a.starts_with("zone=")));
        let v6 = flush_args(&t(L4::Tcp, "[fd00:96::50]:80", "[fd00:10:16::b]:8080"));
        assert_eq!(
            v6[1..],
            [
                "ct_ipv6_dst=fd00:96::50,ct_nw_proto=6,ct_tp_dst=80",
                "ct_ipv6_src=fd00:10:16::b,ct_tp_src=8080"
            ]
        );
    }

    #[test]
    fn group_buckets_are_read_from_ofctl_output() {
        let dump = "OFPST_GROUP_DESC reply (OF1.5) (xid=0x2):\n \
            group_id=1,type=select,selection_method=dp_hash,bucket=bucket_id:0,weight:100,actions=ct(commit,table=20,zone=NXM_NX_REG13[0..15],nat(dst=10.16.0.11:9),exec(load:0x1->NXM_NX_CT_MARK[1]))\n \
            group_id=2,type=select,bucket=bucket_id:0,actions=ct(commit,table=20,zone=NXM_NX_REG13[0..15],nat(dst=[fd00:10:16::b]:9),exec(load:0x1->NXM_NX_CT_MARK[1]))\n";
        let wanted: BTreeSet<SocketAddr> = ["10.16.0.11:9", "10.16.0.12:9", "[fd00:10:16::b]:9"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let want: BTreeSet<SocketAddr> = ["10.16.0.11:9", "[fd00:10:16::b]:9"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(still_in_groups(dump, &wanted), want);
        assert!(still_in_groups("", &wanted).is_empty());
    }

    proptest! {
        /// Against a model: a tuple is flushed exactly when some backend of some VIP of a
        /// ct_flush row was there before and no such row has it now.
        #[test]
        fn removed_matches_the_model(
            before in proptest::collection::btree_map(0u8..4, proptest::collection::btree_set(0u8..6, 0..4), 0..4),
            now in proptest::collection::btree_map(0u8..4, proptest::collection::btree_set(0u8..6, 0..4), 0..4),
        ) {
            let row = |m: &BTreeMap<u8, BTreeSet<u8>>| {
                let vips: Vec<(String, String)> = m
                    .iter()
                    .map(|(v, bs)| {
                        (
                            format!("10.96.0.{v}:53"),
                            bs.iter().map(|b| format!("10.16.0.{b}:5353")).collect::<Vec<_>>().join(","),
                        )
                    })
                    .collect();
                let refs: Vec<(&str, &str)> = vips.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
                tuples(&[lb("udp", true, &refs)])
            };
            let gone = removed(&row(&before), &row(&now));
            for (v, bs) in &before {
                for b in bs {
                    let kept = now.get(v).is_some_and(|n| n.contains(b));
                    let tuple = t(L4::Udp, &format!("10.96.0.{v}:53"), &format!("10.16.0.{b}:5353"));
                    prop_assert_eq!(gone.contains(&tuple), !kept);
                }
            }
            let total: usize = before.values().map(BTreeSet::len).sum();
            prop_assert!(gone.len() <= total);
        }
    }
}
