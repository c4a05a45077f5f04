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
//! A UDP flow fares worse: each of its datagrams is `+new` while its entry saw no reply, so
//! each is dropped the same way, and each refreshes the entry (30 s), so a client that keeps
//! sending on one socket never gets through.
//!
//! The agent watches the learnt affinity flows on the integration bridge. When a window
//! opens (a learnt flow appears, or its age drops), it deletes what the opening packet left:
//! the client's `SYN_SENT` entries to that VIP and port, and its UDP entries to that VIP and
//! port whose reply comes from the window's backend. The next SYN or datagram then is a fresh
//! connection to the VIP, meets the learnt flow and goes to the chosen backend: the first
//! TCP connection completes one retransmission (about a second) late instead of never.
//! Established TCP connections are never touched, and the expiry stays OVN's: the learnt
//! flow's idle timeout is the Service's `timeoutSeconds`.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::ct_reflush::{OvsTarget, ReflushError};

/// The OpenFlow table ovn-controller 25.03 puts learnt affinity flows in
/// (`OFTABLE_CHK_LB_AFFINITY`).
pub const LB_AFFINITY_TABLE: u8 = 78;

/// How often the agent reads the learnt flows: well inside TCP's first retransmission
/// timeout (1 s), so the retransmitted SYN finds the entry gone.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// One client's affinity to one VIP and port, as a learnt flow says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Window {
    pub metadata: u64,
    pub proto: u8,
    pub client: IpAddr,
    pub vip: IpAddr,
    pub port: u16,
    /// The backend the flow sends the client to (IPv4 only: OVN loads it into `reg4`/`reg2`).
    pub backend: Option<SocketAddr>,
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

/// `set_field:0xa100020->reg4,set_field:0x1f90/0xffff->reg2`: 10.16.0.32:8080.
fn backend_v4(actions: &str) -> Option<SocketAddr> {
    let load = |reg: &str| {
        actions.split(',').find_map(|a| {
            let v = a.strip_prefix("set_field:")?.strip_suffix(reg)?;
            number(v.split('/').next()?)
        })
    };
    let ip = u32::try_from(load("->reg4")?).ok()?;
    let port = u16::try_from(load("->reg2")? & 0xffff).ok()?;
    Some(SocketAddr::new(Ipv4Addr::from(ip).into(), port))
}

/// The learnt flows of `ovs-ofctl dump-flows <bridge> table=78` and each one's age in
/// milliseconds.
pub fn windows(dump: &str) -> BTreeMap<Window, u64> {
    let mut out = BTreeMap::new();
    for line in dump.lines() {
        let Some((m, actions)) = line.split_once(" actions=") else {
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
            backend: backend_v4(actions),
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

/// A conntrack entry a window's opening packet left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stuck {
    pub zone: u16,
    pub proto: u8,
    pub client: IpAddr,
    pub vip: IpAddr,
    pub sport: u16,
    pub dport: u16,
}

/// The entries of `ovs-appctl dpctl/dump-conntrack` output from a client of `open` to its VIP
/// and port that its opening packet left: TCP ones still `SYN_SENT` (an established
/// connection is never touched), UDP ones to the window's backend (userspace conntrack does
/// not say whether a UDP entry saw a reply; an older flow to that backend that loses its
/// entry is re-created to the same backend by the learnt flow). Other protocols: none.
pub fn stuck(dump: &str, open: &[Window]) -> Vec<Stuck> {
    let mut out = Vec::new();
    for line in dump.lines() {
        let proto = if line.starts_with("tcp,") && line.contains("state=SYN_SENT") {
            6
        } else if line.starts_with("udp,") {
            17
        } else {
            continue;
        };
        let reply = line
            .split_once("reply=(")
            .and_then(|(_, r)| r.split_once(')'))
            .map(|(r, _)| r)
            .unwrap_or_default();
        let reply_src = field(reply, "src")
            .and_then(|s| s.parse::<IpAddr>().ok())
            .zip(field(reply, "sport").and_then(|s| s.parse::<u16>().ok()))
            .map(|(ip, port)| SocketAddr::new(ip, port));
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
        let of_window = |w: &&Window| {
            w.proto == proto
                && w.client == client
                && w.vip == vip
                && w.port == dport
                && (proto == 6 || (w.backend.is_some() && w.backend == reply_src))
        };
        if open.iter().any(|w| of_window(&w)) {
            out.push(Stuck {
                zone,
                proto,
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
            "{src}={},{dst}={},ct_nw_proto={},ct_tp_src={},ct_tp_dst={}",
            s.client, s.vip, s.proto, s.sport, s.dport
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
        cookie=0x1, duration=20.5s, table=78, n_packets=3, n_bytes=222, idle_timeout=60, idle_age=0, tcp6,metadata=0x2,ipv6_src=fd00::21,ipv6_dst=fd00:96::c,tp_dst=443 actions=set_field:0x4000/0x4000->reg10\n \
        cookie=0x7904e6b, duration=0.205s, table=78, n_packets=1, n_bytes=43, idle_timeout=2, idle_age=0, udp,metadata=0x2,nw_src=10.16.0.33,nw_dst=10.96.0.12,tp_dst=81 actions=set_field:0x4000/0x4000->reg10,set_field:0xa100020->reg4,set_field:0x1f91/0xffff->reg2\n";

    fn w(meta: u64, client: &str, vip: &str, port: u16) -> Window {
        Window {
            metadata: meta,
            proto: 6,
            client: client.parse().unwrap(),
            vip: vip.parse().unwrap(),
            port,
            backend: None,
        }
    }

    fn udp(client: &str, backend: &str) -> Window {
        Window {
            proto: 17,
            backend: Some(backend.parse().unwrap()),
            ..w(2, client, "10.96.0.12", 81)
        }
    }

    #[test]
    fn learnt_flows_are_read_with_their_age() {
        let got = windows(FLOWS);
        let want = BTreeMap::from([
            (
                Window {
                    backend: Some("10.16.0.32:8080".parse().unwrap()),
                    ..w(1, "10.16.0.33", "10.96.0.12", 80)
                },
                1388,
            ),
            (w(2, "fd00::21", "fd00:96::c", 443), 20500),
            (udp("10.16.0.33", "10.16.0.32:8081"), 205),
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
icmp,orig=(src=10.16.0.33,dst=10.96.0.12,id=1,type=8,code=0),reply=(src=10.96.0.12,dst=10.16.0.33,id=1,type=0,code=0),zone=8
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
                    proto: 6,
                    client: "10.16.0.33".parse().unwrap(),
                    vip: "10.96.0.12".parse().unwrap(),
                    sport: 45208,
                    dport: 80
                },
                Stuck {
                    zone: 0,
                    proto: 6,
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

    #[test]
    fn udp_entries_to_the_window_backend_are_deleted_others_kept() {
        let dump = "\
udp,orig=(src=10.16.0.33,dst=10.96.0.12,sport=54414,dport=81),reply=(src=10.16.0.32,dst=10.16.0.33,sport=8081,dport=54414),zone=8,mark=2
udp,orig=(src=10.16.0.33,dst=10.96.0.12,sport=60443,dport=81),reply=(src=10.16.0.31,dst=10.16.0.33,sport=8081,dport=60443),zone=8,mark=2
udp,orig=(src=10.16.0.34,dst=10.96.0.12,sport=60444,dport=81),reply=(src=10.16.0.32,dst=10.16.0.34,sport=8081,dport=60444),zone=9,mark=2
";
        let got = stuck(dump, &[udp("10.16.0.33", "10.16.0.32:8081")]);
        assert_eq!(
            got,
            vec![Stuck {
                zone: 8,
                proto: 17,
                client: "10.16.0.33".parse().unwrap(),
                vip: "10.96.0.12".parse().unwrap(),
                sport: 54414,
                dport: 81
            }]
        );
        assert_eq!(
            flush_args(&got[0])[2],
            "ct_nw_src=10.16.0.33,ct_nw_dst=10.96.0.12,ct_nw_proto=17,ct_tp_src=54414,ct_tp_dst=81"
        );
        // without a known backend (IPv6 windows) no UDP entry is touched
        let v6ish = Window {
            backend: None,
            ..udp("10.16.0.33", "10.16.0.32:8081")
        };
        assert!(stuck(dump, &[v6ish]).is_empty());
    }
}
