//! Lets the first TCP connection of a `sessionAffinity: ClientIP` window through on the
//! userspace datapath (docs/services.md, "sessionAffinity: ClientIP").
//!
//! What OVN 25.03 does there, measured: the SYN that opens a client's affinity window is
//! committed to conntrack (DNAT to the chosen backend, `SYN_SENT`), learns the affinity flow
//! and is dropped (northd's `commit_lb_aff(...); /* drop */`). The client's retransmitted SYN
//! then meets that entry: the switch's first `ct_lb_mark` already DNATs it to the backend and
//! userspace conntrack marks it `+new` (no reply seen), so the affinity check (which matches
//! the VIP as destination) misses, and the learn stage (`ct.new`, `reg4 == VIP`, destination
//! the backend) matches again and drops it again. Every retransmission of that connection
//! dies the same way until the entry's 30 s `SYN_SENT` timeout; the learnt flow is never hit.
//!
//! The agent watches the learnt affinity flows on the integration bridge. When a window
//! opens (a learnt flow appears, or its age drops), it deletes the client's `SYN_SENT`
//! entries to that VIP and port. The retransmitted SYN then is a fresh connection to the
//! VIP, meets the learnt flow and goes to the chosen backend: the first connection completes
//! one retransmission (about a second) late instead of never. Established connections are
//! never touched, and the expiry stays OVN's: the learnt flow's idle timeout is the
//! Service's `timeoutSeconds`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use crate::ct_reflush::{OvsTarget, ReflushError};

/// The OpenFlow table ovn-controller 25.03 puts learnt affinity flows in
/// (`OFTABLE_CHK_LB_AFFINITY`).
pub const LB_AFFINITY_TABLE: u8 = 78;

/// How often the agent reads the learnt flows: well inside TCP's first retransmission
/// timeout (1 s), so the retransmitted SYN finds the entry gone.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// One client's affinity to one VIP and port, as a learnt flow says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Window {
    pub metadata: u64,
    pub proto: u8,
    pub client: IpAddr,
    pub vip: IpAddr,
    pub port: u16,
}

fn field<'a>(s: &'a str, key: &str) -> Option<&'a str> {
    s.split([',', ' '])
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

fn number(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

/// The learnt flows of `ovs-ofctl dump-flows <bridge> table=78` and each one's age in
/// milliseconds.
pub fn windows(dump: &str) -> BTreeMap<Window, u64> {
    let mut out = BTreeMap::new();
    for line in dump.lines() {
        let Some((m, _actions)) = line.split_once(" actions=") else {
            continue;
        };
        let proto = if m.contains(" tcp,") || m.contains(" tcp6,") {
            6
        } else if m.contains(" udp,") || m.contains(" udp6,") {
            17
        } else if m.contains(" sctp,") || m.contains(" sctp6,") {
            132
        } else {
            continue;
        };
        let ips = |v4: &str, v6: &str| {
            field(m, v4)
                .or_else(|| field(m, v6))
                .and_then(|s| s.parse::<IpAddr>().ok())
        };
        let (Some(metadata), Some(client), Some(vip), Some(port), Some(age)) = (
            field(m, "metadata").and_then(number),
            ips("nw_src", "ipv6_src"),
            ips("nw_dst", "ipv6_dst"),
            field(m, "tp_dst").and_then(|p| p.parse().ok()),
            field(m, "duration")
                .and_then(|d| d.strip_suffix('s'))
                .and_then(|d| d.parse::<f64>().ok()),
        ) else {
            continue;
        };
        let w = Window {
            metadata,
            proto,
            client,
            vip,
            port,
        };
        out.insert(w, (age * 1000.0) as u64);
    }
    out
}

/// The windows of `now` that opened since `before` was read: new, or younger than they were.
pub fn opened(before: &BTreeMap<Window, u64>, now: &BTreeMap<Window, u64>) -> Vec<Window> {
    now.iter()
        .filter(|(w, age)| before.get(w).is_none_or(|b| *age < b))
        .map(|(w, _)| *w)
        .collect()
}

/// A conntrack entry a window's opening SYN left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stuck {
    pub zone: u16,
    pub client: IpAddr,
    pub vip: IpAddr,
    pub sport: u16,
    pub dport: u16,
}

/// The TCP entries of `ovs-appctl dpctl/dump-conntrack` output that are still `SYN_SENT`
/// from a client of `open` to its VIP and port.
pub fn stuck(dump: &str, open: &[Window]) -> Vec<Stuck> {
    let mut out = Vec::new();
    for line in dump.lines() {
        if !line.starts_with("tcp,") || !line.contains("state=SYN_SENT") {
            continue;
        }
        let Some(orig) = line
            .split_once("orig=(")
            .and_then(|(_, r)| r.split_once(')'))
            .map(|(o, _)| o)
        else {
            continue;
        };
        let ip = |k| field(orig, k).and_then(|s| s.parse::<IpAddr>().ok());
        let port = |k| field(orig, k).and_then(|s| s.parse::<u16>().ok());
        let (Some(client), Some(vip), Some(sport), Some(dport)) =
            (ip("src"), ip("dst"), port("sport"), port("dport"))
        else {
            continue;
        };
        let zone = line
            .rsplit_once("),")
            .and_then(|(_, tail)| field(tail, "zone"))
            .and_then(|z| z.parse().ok())
            .unwrap_or(0);
        if open
            .iter()
            .any(|w| w.proto == 6 && w.client == client && w.vip == vip && w.port == dport)
        {
            out.push(Stuck {
                zone,
                client,
                vip,
                sport,
                dport,
            });
        }
    }
    out
}

/// `ovs-appctl dpctl/flush-conntrack` arguments deleting exactly `s`.
pub fn flush_args(s: &Stuck) -> Vec<String> {
    let (src, dst) = match s.vip {
        IpAddr::V4(_) => ("ct_nw_src", "ct_nw_dst"),
        IpAddr::V6(_) => ("ct_ipv6_src", "ct_ipv6_dst"),
    };
    vec![
        "dpctl/flush-conntrack".into(),
        format!("zone={}", s.zone),
        format!(
            "{src}={},{dst}={},ct_nw_proto=6,ct_tp_src={},ct_tp_dst={}",
            s.client, s.vip, s.sport, s.dport
        ),
    ]
}

async fn dump_windows(ovs: &OvsTarget) -> Result<BTreeMap<Window, u64>, ReflushError> {
    let mgmt = ovs.rundir().join(format!("{}.mgmt", ovs.bridge));
    let out = ovs
        .run(
            "ovs-ofctl",
            &[
                "-O".into(),
                "OpenFlow15".into(),
                "dump-flows".into(),
                format!("unix:{}", mgmt.display()),
                format!("table={LB_AFFINITY_TABLE}"),
            ],
        )
        .await?;
    Ok(windows(&out))
}

/// One round: reads the learnt flows, and for windows opened since `seen` deletes the
/// entries their opening SYN left. Returns how many entries it deleted.
pub async fn round(
    ovs: &OvsTarget,
    seen: &mut BTreeMap<Window, u64>,
) -> Result<usize, ReflushError> {
    let now = dump_windows(ovs).await?;
    let open = opened(seen, &now);
    *seen = now;
    if open.is_empty() {
        return Ok(0);
    }
    let dump = ovs.appctl(&["dpctl/dump-conntrack".into()]).await?;
    let stuck = stuck(&dump, &open);
    for s in &stuck {
        ovs.appctl(&flush_args(s)).await?;
    }
    Ok(stuck.len())
}

/// Runs [`round`] every [`POLL_INTERVAL`] until the task is dropped.
pub async fn run(ovs: OvsTarget) {
    let mut seen = BTreeMap::new();
    let mut failing = false;
    loop {
        match round(&ovs, &mut seen).await {
            Ok(0) => failing = false,
            Ok(n) => {
                failing = false;
                tracing::debug!(
                    entries = n,
                    "affinity window opened: SYN_SENT entries deleted"
                );
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "affinity windows not watched");
                }
                failing = true;
            }
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLOWS: &str = "OFPST_FLOW reply (OF1.5) (xid=0x6):\n \
        cookie=0x8749c501, duration=1.388s, table=78, n_packets=0, n_bytes=0, idle_timeout=5, idle_age=1, tcp,metadata=0x1,nw_src=10.16.0.33,nw_dst=10.96.0.12,tp_dst=80 actions=set_field:0x4000/0x4000->reg10,set_field:0xa100020->reg4,set_field:0x1f90/0xffff->reg2\n \
        cookie=0x1, duration=20.5s, table=78, n_packets=3, n_bytes=222, idle_timeout=60, idle_age=0, tcp6,metadata=0x2,ipv6_src=fd00::21,ipv6_dst=fd00:96::c,tp_dst=443 actions=set_field:0x4000/0x4000->reg10\n";

    fn w(meta: u64, client: &str, vip: &str, port: u16) -> Window {
        Window {
            metadata: meta,
            proto: 6,
            client: client.parse().unwrap(),
            vip: vip.parse().unwrap(),
            port,
        }
    }

    #[test]
    fn learnt_flows_are_read_with_their_age() {
        let got = windows(FLOWS);
        let want = BTreeMap::from([
            (w(1, "10.16.0.33", "10.96.0.12", 80), 1388),
            (w(2, "fd00::21", "fd00:96::c", 443), 20500),
        ]);
        assert_eq!(got, want);
        assert!(windows("OFPST_FLOW reply (OF1.5) (xid=0x6):\n").is_empty());
    }

    #[test]
    fn a_window_opens_when_its_flow_appears_or_gets_younger() {
        let a = w(1, "10.16.0.33", "10.96.0.12", 80);
        let b = w(1, "10.16.0.34", "10.96.0.12", 80);
        let before = BTreeMap::from([(a, 3000), (b, 500)]);
        // a expired and was learnt again (younger); b kept ageing; c is new
        let c = w(1, "10.16.0.35", "10.96.0.12", 80);
        let now = BTreeMap::from([(a, 100), (b, 700), (c, 50)]);
        assert_eq!(opened(&before, &now), vec![a, c]);
        assert!(opened(&now, &now).is_empty());
    }

    #[test]
    fn only_syn_sent_entries_of_an_open_window_are_deleted() {
        let dump = "\
tcp,orig=(src=10.16.0.33,dst=10.96.0.12,sport=45208,dport=80),reply=(src=10.16.0.31,dst=10.16.0.33,sport=8080,dport=45208),zone=8,mark=2,protoinfo=(state=SYN_SENT)
tcp,orig=(src=10.16.0.33,dst=10.96.0.12,sport=45209,dport=80),reply=(src=10.16.0.31,dst=10.16.0.33,sport=8080,dport=45209),zone=8,mark=2,protoinfo=(state=ESTABLISHED)
tcp,orig=(src=10.16.0.34,dst=10.96.0.12,sport=45210,dport=80),reply=(src=10.16.0.31,dst=10.16.0.34,sport=8080,dport=45210),zone=9,mark=2,protoinfo=(state=SYN_SENT)
tcp,orig=(src=10.16.0.33,dst=10.96.0.13,sport=45211,dport=80),reply=(src=10.16.0.31,dst=10.16.0.33,sport=8080,dport=45211),zone=8,protoinfo=(state=SYN_SENT)
udp,orig=(src=10.16.0.33,dst=10.96.0.12,sport=5000,dport=80),reply=(src=10.16.0.31,dst=10.16.0.33,sport=8080,dport=5000),zone=8
tcp,orig=(src=fd00::21,dst=fd00:96::c,sport=40000,dport=443),reply=(src=fd00::31,dst=fd00::21,sport=8443,dport=40000),protoinfo=(state=SYN_SENT)
";
        let open = [
            w(1, "10.16.0.33", "10.96.0.12", 80),
            w(2, "fd00::21", "fd00:96::c", 443),
        ];
        let got = stuck(dump, &open);
        assert_eq!(
            got,
            vec![
                Stuck {
                    zone: 8,
                    client: "10.16.0.33".parse().unwrap(),
                    vip: "10.96.0.12".parse().unwrap(),
                    sport: 45208,
                    dport: 80
                },
                Stuck {
                    zone: 0,
                    client: "fd00::21".parse().unwrap(),
                    vip: "fd00:96::c".parse().unwrap(),
                    sport: 40000,
                    dport: 443
                },
            ]
        );
        assert_eq!(
            flush_args(&got[0]),
            [
                "dpctl/flush-conntrack",
                "zone=8",
                "ct_nw_src=10.16.0.33,ct_nw_dst=10.96.0.12,ct_nw_proto=6,ct_tp_src=45208,ct_tp_dst=80"
            ]
        );
        assert_eq!(
            flush_args(&got[1])[2],
            "ct_ipv6_src=fd00::21,ct_ipv6_dst=fd00:96::c,ct_nw_proto=6,ct_tp_src=40000,ct_tp_dst=443"
        );
    }
}
