//! Offload truth from `ovs-appctl dpctl/dump-flows -m` output: samples in the exact format of
//! OVS lib/dpctl.c format_dpif_flow (the netdev one captured from this machine's OVS 3.1).

use ferrovn_hwoffload::flows::SoftwareOnlyAction;
use ferrovn_hwoffload::{
    EswitchMode, NotOffloadedReason, Offload, OffloadContext, OffloadStatus, PodOffload,
    offload_report, parse_dump_flows, render_offload_metrics,
};

/// Kernel datapath, ConnectX in switchdev, hw-offload=true: pod on VF0 talks to pod on VF1
/// (OVN logical switch, no ACL state), all in hardware.
const TC_ALL_OFFLOADED: &str = "\
ufid:1c0e6a0e-3f7b-4a55-9c43-0d0a8d9a1f01, skb_priority(0/0),skb_mark(0/0),ct_state(0/0),ct_zone(0/0),ct_mark(0/0),ct_label(0/0),recirc_id(0),dp_hash(0/0),in_port(enp3s0f0npf0vf0),packet_type(ns=0,id=0),eth(src=0a:58:0a:10:00:0b,dst=0a:58:0a:10:00:0c),eth_type(0x0800),ipv4(src=10.16.0.11/0.0.0.0,dst=10.16.0.12/0.0.0.0,proto=6/0,tos=0/0x3,ttl=64/0,frag=no),tcp(src=40312/0,dst=5201/0), packets:1093421, bytes:1652123811, used:0.020s, flags:P., offloaded:yes, dp:tc, actions:enp3s0f0npf0vf1
ufid:7d3ef1c2-0b9a-4f0e-8e4e-52c1a7b0c2d2, skb_priority(0/0),skb_mark(0/0),ct_state(0/0),ct_zone(0/0),ct_mark(0/0),ct_label(0/0),recirc_id(0),dp_hash(0/0),in_port(enp3s0f0npf0vf1),packet_type(ns=0,id=0),eth(src=0a:58:0a:10:00:0c,dst=0a:58:0a:10:00:0b),eth_type(0x0800),ipv4(src=10.16.0.12/0.0.0.0,dst=10.16.0.11/0.0.0.0,proto=6/0,tos=0/0x3,ttl=64/0,frag=no),tcp(src=5201/0,dst=40312/0), packets:512003, bytes:33792198, used:0.020s, flags:., offloaded:yes, dp:tc, actions:enp3s0f0npf0vf0
";

/// Same node, VF2's pod reaches a ClusterIP (OVN load balancer: ct with nat) that tc did not
/// take, plus one offloaded ARP flow; VF3's pod sends nothing.
const TC_MIXED: &str = "\
ufid:a1b2c3d4-0000-4000-8000-000000000001, recirc_id(0),dp_hash(0/0),in_port(enp3s0f0npf0vf2),packet_type(ns=0,id=0),eth(src=0a:58:0a:10:00:0d,dst=0a:58:0a:10:00:01),eth_type(0x0800),ipv4(src=10.16.0.13,dst=10.96.0.10,proto=6,frag=no),tcp(dst=80), packets:12, bytes:888, used:1.204s, flags:S, dp:ovs, actions:ct(zone=11,nat),recirc(0x3)
ufid:a1b2c3d4-0000-4000-8000-000000000002, recirc_id(0x3),in_port(enp3s0f0npf0vf2),ct_state(+new+trk),eth(),eth_type(0x0800),ipv4(frag=no), packets:12, bytes:888, used:1.204s, dp:ovs, actions:ct(commit,zone=11,nat(dst=10.16.0.12:8080)),recirc(0x4)
ufid:a1b2c3d4-0000-4000-8000-000000000003, recirc_id(0),in_port(enp3s0f0npf0vf2),eth(src=0a:58:0a:10:00:0d,dst=ff:ff:ff:ff:ff:ff),eth_type(0x0806),arp(op=1), packets:2, bytes:84, used:5.001s, offloaded:yes, dp:tc, actions:enp3s0f0npf0vf0,enp3s0f0npf0vf1,enp3s0f0np0
";

/// Captured here: OVS 3.1 netdev datapath, hw-offload=true, a veth standing in for the representor.
const NETDEV_CAPTURED: &str = "\
flow-dump from the main thread:
ufid:8defe9b3-4fb5-4816-bff2-6c1c0b0176e3, skb_priority(0/0),skb_mark(0/0),ct_state(0/0),ct_zone(0/0),ct_mark(0/0),ct_label(0/0),recirc_id(0),dp_hash(0/0),in_port(rep0),packet_type(ns=0,id=0),eth(src=c2:93:3f:f3:ba:45,dst=ff:ff:ff:ff:ff:ff),eth_type(0x0806),arp(sip=10.99.0.1,tip=10.99.0.2,op=1,sha=c2:93:3f:f3:ba:45/00:00:00:00:00:00,tha=00:00:00:00:00:00/00:00:00:00:00:00), packets:1, bytes:42, used:1.012s, dp:ovs, actions:br-int, dp-extra-info:miniflow_bits(5,2)
ufid:306e2ddc-3e76-4afc-9bbf-dee2e4506d23, skb_priority(0/0),skb_mark(0/0),ct_state(0/0),ct_zone(0/0),ct_mark(0/0),ct_label(0/0),recirc_id(0),dp_hash(0/0),in_port(rep0),packet_type(ns=0,id=0),eth(src=c2:93:3f:f3:ba:45,dst=33:33:ff:f3:ba:45),eth_type(0x86dd),ipv6(src=::/::,dst=ff02::1:fff3:ba45/::,label=0/0,proto=58/0,tclass=0/0,hlimit=255/0,frag=no),icmpv6(type=135/0,code=0/0),nd(target=fe80::c093:3fff:fef3:ba45/::,sll=00:00:00:00:00:00/00:00:00:00:00:00,tll=00:00:00:00:00:00/00:00:00:00:00:00), packets:0, bytes:0, used:never, dp:ovs, actions:br-int, dp-extra-info:miniflow_bits(5,1)
";

/// OVS-DPDK with rte_flow: match in hardware, actions in software.
const DPDK_PARTIAL: &str = "\
flow-dump from pmd on cpu core: 1
ufid:0d7a0b5e-1111-4222-8333-944455556666, recirc_id(0),in_port(dpdk-vf0),packet_type(ns=0,id=0),eth(src=0a:58:0a:10:00:0b,dst=0a:58:0a:10:00:0c),eth_type(0x0800),ipv4(frag=no), packets:800000, bytes:51200000, used:0.001s, offloaded:partial, dp:ovs, actions:dpdk-vf1
";

fn switchdev_ctx() -> OffloadContext {
    OffloadContext {
        eswitch_mode: Some(EswitchMode::Switchdev),
        hw_offload_enabled: true,
        datapath_type: "system".into(),
    }
}

#[test]
fn parses_every_field_of_a_tc_offloaded_flow() {
    let flows = parse_dump_flows(TC_ALL_OFFLOADED).unwrap();
    assert_eq!(flows.len(), 2);
    let f = &flows[0];
    assert_eq!(
        f.ufid.as_deref(),
        Some("1c0e6a0e-3f7b-4a55-9c43-0d0a8d9a1f01")
    );
    assert_eq!(f.in_port.as_deref(), Some("enp3s0f0npf0vf0"));
    assert_eq!((f.packets, f.bytes), (1_093_421, 1_652_123_811));
    assert_eq!(f.used_secs, Some(0.02));
    assert_eq!(f.offload, Offload::Full);
    assert_eq!(f.dp.as_deref(), Some("tc"));
    assert_eq!(f.actions, "enp3s0f0npf0vf1");
}

#[test]
fn parses_the_captured_netdev_dump_with_headers_never_and_extra_info() {
    let flows = parse_dump_flows(NETDEV_CAPTURED).unwrap();
    assert_eq!(flows.len(), 2);
    assert!(
        flows
            .iter()
            .all(|f| f.offload == Offload::None && f.dp.as_deref() == Some("ovs"))
    );
    assert_eq!(flows[1].used_secs, None);
    assert_eq!(
        flows[0].actions, "br-int",
        "dp-extra-info is not part of the actions"
    );
}

#[test]
fn actions_with_nested_commas_stay_whole() {
    let flows = parse_dump_flows(TC_MIXED).unwrap();
    assert_eq!(
        flows[1].actions,
        "ct(commit,zone=11,nat(dst=10.16.0.12:8080)),recirc(0x4)"
    );
    assert_eq!(
        flows[2].actions,
        "enp3s0f0npf0vf0,enp3s0f0npf0vf1,enp3s0f0np0"
    );
}

#[test]
fn all_flows_in_tc_means_offloaded() {
    let flows = parse_dump_flows(TC_ALL_OFFLOADED).unwrap();
    let r = offload_report(
        &flows,
        &["enp3s0f0npf0vf0", "enp3s0f0npf0vf1"],
        &switchdev_ctx(),
    );
    for port in &r {
        assert_eq!(port.status, OffloadStatus::Offloaded, "{port:?}");
        assert!(port.reasons.is_empty());
        assert_eq!(port.flows, port.offloaded_flows);
    }
}

#[test]
fn load_balancer_flows_in_software_are_named_and_idle_ports_say_no_flows() {
    let flows = parse_dump_flows(TC_MIXED).unwrap();
    let r = offload_report(
        &flows,
        &["enp3s0f0npf0vf2", "enp3s0f0npf0vf3"],
        &switchdev_ctx(),
    );
    assert_eq!(r[0].status, OffloadStatus::Partial);
    assert_eq!((r[0].flows, r[0].offloaded_flows), (3, 1));
    assert_eq!(
        r[0].reasons,
        vec![NotOffloadedReason::FlowsInSoftware {
            count: 2,
            actions: vec![SoftwareOnlyAction::ConntrackNat]
        }]
    );
    assert!(
        r[0].reasons[0]
            .to_string()
            .contains("ct with NAT (load balancer / SNAT)")
    );
    assert_eq!(r[1].status, OffloadStatus::NotOffloaded);
    assert_eq!(r[1].reasons, vec![NotOffloadedReason::NoFlows]);
}

#[test]
fn configuration_reasons_come_first() {
    let flows = parse_dump_flows(NETDEV_CAPTURED).unwrap();
    let ctx = OffloadContext {
        eswitch_mode: Some(EswitchMode::Legacy),
        hw_offload_enabled: false,
        datapath_type: "netdev".into(),
    };
    let r = offload_report(&flows, &["rep0"], &ctx);
    let labels: Vec<&str> = r[0].reasons.iter().map(|x| x.label()).collect();
    assert_eq!(
        labels,
        [
            "eswitch_not_switchdev",
            "hw_offload_disabled",
            "userspace_datapath",
            "flows_in_software"
        ]
    );
    assert!(r[0].reasons[0].to_string().contains("legacy mode"));
}

#[test]
fn partial_offload_is_not_full_offload() {
    let flows = parse_dump_flows(DPDK_PARTIAL).unwrap();
    let ctx = OffloadContext {
        eswitch_mode: Some(EswitchMode::Switchdev),
        hw_offload_enabled: true,
        datapath_type: "netdev".into(),
    };
    let r = offload_report(&flows, &["dpdk-vf0"], &ctx);
    assert_eq!(r[0].status, OffloadStatus::Partial);
    assert!(
        r[0].reasons
            .contains(&NotOffloadedReason::PartiallyOffloaded { count: 1 })
    );
}

#[test]
fn slow_path_and_other_software_actions_are_recognised() {
    let dump = "ufid:00000000-0000-4000-8000-000000000009, recirc_id(0),in_port(r1),eth(),eth_type(0x0800),ipv4(frag=no), packets:3, bytes:300, used:0.100s, dp:ovs, actions:userspace(pid=3765,controller(reason=1,dont_send=0,continuation=0,recirc_id=7,rule_cookie=0x1,controller_id=0,max_len=65535)),check_pkt_len(size=1414,gt(drop),le(r2))\n";
    let r = offload_report(&parse_dump_flows(dump).unwrap(), &["r1"], &switchdev_ctx());
    assert_eq!(
        r[0].reasons,
        vec![NotOffloadedReason::FlowsInSoftware {
            count: 1,
            actions: vec![
                SoftwareOnlyAction::Userspace,
                SoftwareOnlyAction::CheckPktLen
            ]
        }]
    );
    // ct without nat (a plain stateful ACL) is not flagged as NAT.
    let dump = "recirc_id(0),in_port(r1),eth(),eth_type(0x0800),ipv4(frag=no), packets:3, bytes:300, used:0.100s, dp:ovs, actions:ct(zone=4),recirc(0x9)\n";
    let r = offload_report(&parse_dump_flows(dump).unwrap(), &["r1"], &switchdev_ctx());
    assert_eq!(
        r[0].reasons,
        vec![NotOffloadedReason::FlowsInSoftware {
            count: 1,
            actions: vec![]
        }]
    );
}

#[test]
fn malformed_lines_are_rejected_with_line_numbers() {
    for (dump, reason) in [
        (
            "flow-dump from the main thread:\nin_port(a), packets:1, bytes:1, used:never\n",
            "no actions",
        ),
        (
            "in_port(a), packets:x, bytes:1, used:never, actions:drop\n",
            "packets \"x\"",
        ),
        (
            "in_port(a), packets:1, bytes:1, used:soon, actions:drop\n",
            "used \"soon\"",
        ),
        (
            "in_port(a), packets:1, bytes:1, used:1.0s, offloaded:maybe, actions:drop\n",
            "offloaded:maybe",
        ),
        ("in_port(a), actions:drop\n", "missing packets"),
    ] {
        let e = parse_dump_flows(dump).unwrap_err();
        assert!(e.to_string().contains(reason), "{e}");
        assert!(e.line_number >= 1);
    }
    assert!(parse_dump_flows("").unwrap().is_empty());
}

#[test]
fn metric_lines_say_which_pod_is_offloaded_and_why_not() {
    let flows = parse_dump_flows(&format!("{TC_ALL_OFFLOADED}{TC_MIXED}")).unwrap();
    let r = offload_report(
        &flows,
        &["enp3s0f0npf0vf0", "enp3s0f0npf0vf2", "enp3s0f0npf0vf3"],
        &switchdev_ctx(),
    );
    let text = render_offload_metrics(&[
        PodOffload {
            pod: "default/iperf-client",
            report: &r[0],
        },
        PodOffload {
            pod: "default/web",
            report: &r[1],
        },
        PodOffload {
            pod: "default/idle",
            report: &r[2],
        },
    ])
    .unwrap();
    eprintln!("{text}");
    assert!(
        text.contains("# TYPE ferrovn_pod_flows_offloaded gauge"),
        "{text}"
    );
    assert!(text.contains(
        "ferrovn_pod_flows_offloaded{pod=\"default/iperf-client\",interface=\"enp3s0f0npf0vf0\",reason=\"\"} 1"
    ), "{text}");
    assert!(text.contains(
        "ferrovn_pod_flows_offloaded{pod=\"default/web\",interface=\"enp3s0f0npf0vf2\",reason=\"flows_in_software\"} 0"
    ), "{text}");
    assert!(text.contains("reason=\"no_flows\"} 0"), "{text}");
    assert!(text.contains(
        "ferrovn_pod_flows{pod=\"default/web\",interface=\"enp3s0f0npf0vf2\",state=\"software_or_partial\"} 2"
    ), "{text}");
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn parser_never_panics(s in "[ -~\n]{0,300}") {
            let _ = parse_dump_flows(&s);
        }

        #[test]
        fn offloaded_iff_every_flow_is_in_hardware(states in proptest::collection::vec(0u8..3, 0..8)) {
            let dump: String = states.iter().enumerate().map(|(i, s)| {
                let o = match s { 0 => "", 1 => ", offloaded:partial", _ => ", offloaded:yes" };
                format!("ufid:{i}, in_port(r), packets:1, bytes:1, used:0.001s{o}, dp:tc, actions:x\n")
            }).collect();
            let r = &offload_report(&parse_dump_flows(&dump).unwrap(), &["r"], &switchdev_ctx())[0];
            let all_full = !states.is_empty() && states.iter().all(|&s| s == 2);
            prop_assert_eq!(r.status == OffloadStatus::Offloaded, all_full);
            prop_assert_eq!(r.reasons.is_empty(), all_full);
            prop_assert_eq!(r.flows, states.len());
        }
    }
}

#[test]
fn context_from_what_the_agent_reads() {
    let oc: std::collections::BTreeMap<String, String> =
        [("hw-offload".to_string(), "true".to_string())]
            .into_iter()
            .collect();
    let ctx = OffloadContext::new(Some(EswitchMode::Switchdev), &oc, "");
    assert_eq!(
        ctx,
        switchdev_ctx(),
        "empty datapath_type is OVS's default, system"
    );
    let ctx = OffloadContext::new(None, &Default::default(), "netdev");
    assert!(!ctx.hw_offload_enabled);
    assert_eq!(ctx.datapath_type, "netdev");
}
