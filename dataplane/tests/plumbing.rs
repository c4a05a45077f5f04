//! Veth plumbing against the real kernel: a host netns and a pod netns created per test.

// A test crate: its helpers outside #[test] fns assert by unwrapping too (clippy.toml allows it
// only inside #[test] fns and #[cfg(test)] modules).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use ferrovn_dataplane::plumbing::{
    PlumbError, PodRoute, Removal, VethSpec, list_host_veths, plumb_veth, plumb_veth_blocking,
    unplumb_veth_blocking,
};
use ferrovn_testkit::names::unique_tag;
use ferrovn_testkit::netns::Netns;
use serde_json::Value;

fn ns_pair() -> (Netns, Netns) {
    let tag = unique_tag();
    let host = Netns::create(&format!("fvt-{tag}-h")).expect("host netns");
    let pod = Netns::create(&format!("fvt-{tag}-p")).expect("pod netns");
    (host, pod)
}

fn spec(host: &Netns, pod: &Netns, cid: &str) -> VethSpec {
    VethSpec {
        container_id: cid.into(),
        pod_netns: pod.path(),
        pod_ifname: "eth0".into(),
        host_netns: Some(host.path()),
        mac: "0a:58:0a:10:00:0b".parse().expect("mac"),
        mtu: 1400,
        addresses: vec![
            "10.16.0.11/24".parse().expect("v4"),
            "fd00:10:16::b/64".parse().expect("v6"),
        ],
        gateways: vec![
            "10.16.0.1".parse().expect("gw4"),
            "fd00:10:16::1".parse().expect("gw6"),
        ],
        routes: vec![
            PodRoute {
                dst: "10.96.0.0/12".parse().expect("dst"),
                via: Some("10.16.0.254".parse().expect("via")),
            },
            PodRoute {
                dst: "172.31.0.0/16".parse().expect("dst"),
                via: None,
            },
        ],
        ipv6_link_local: false,
        tx_offload: false,
    }
}

fn ip_json(ns: &Netns, args: &[&str]) -> Value {
    let mut all = vec!["-j"];
    all.extend_from_slice(args);
    serde_json::from_str(&ns.ip(all).expect("ip -j")).expect("ip json")
}

fn link_names(ns: &Netns) -> Vec<String> {
    ip_json(ns, &["link", "show"])
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|l| l["ifname"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn plumbs_addresses_routes_mac_mtu_and_checksum_off_then_removes_everything() {
    let (host, pod) = ns_pair();
    let s = spec(&host, &pod, "c0ffee01");
    let made = plumb_veth_blocking(&s).expect("plumb");
    assert_eq!(made.host_ifname, s.host_ifname());
    assert!(made.host_ifname.len() <= 15);

    // pod side: MAC, MTU, up, addresses
    let link = &ip_json(&pod, &["link", "show", "eth0"])[0];
    assert_eq!(link["address"], "0a:58:0a:10:00:0b");
    assert_eq!(link["mtu"], 1400);
    assert!(
        link["flags"]
            .as_array()
            .expect("flags")
            .iter()
            .any(|f| f == "UP")
    );
    let lo = &ip_json(&pod, &["link", "show", "lo"])[0];
    assert!(
        lo["flags"]
            .as_array()
            .expect("flags")
            .iter()
            .any(|f| f == "UP")
    );
    let addrs: Vec<String> = ip_json(&pod, &["addr", "show", "eth0"])[0]["addr_info"]
        .as_array()
        .expect("addr_info")
        .iter()
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap_or(""), a["prefixlen"]))
        .collect();
    assert!(addrs.contains(&"10.16.0.11/24".to_string()), "{addrs:?}");
    assert!(addrs.contains(&"fd00:10:16::b/64".to_string()), "{addrs:?}");

    // routes
    let r4 = pod.ip(["route", "show"]).expect("routes");
    assert!(r4.contains("default via 10.16.0.1 dev eth0"), "{r4}");
    assert!(r4.contains("10.96.0.0/12 via 10.16.0.254 dev eth0"), "{r4}");
    assert!(r4.contains("172.31.0.0/16 dev eth0"), "{r4}");
    let r6 = pod.ip(["-6", "route", "show"]).expect("routes6");
    assert!(r6.contains("default via fd00:10:16::1 dev eth0"), "{r6}");

    // tx checksum offload off (and TSO with it)
    let k = pod.run(5, "ethtool", ["-k", "eth0"]).expect("ethtool");
    assert!(k.contains("tx-checksumming: off"), "{k}");
    // TSO depends on tx checksum offload: the kernel drops it with it
    assert!(k.contains("tx-tcp-segmentation: off"), "{k}");
    assert!(k.contains("tx-tcp6-segmentation: off"), "{k}");

    // host side: same MTU, up, alias tag
    let h = &ip_json(&host, &["link", "show", &made.host_ifname])[0];
    assert_eq!(h["mtu"], 1400);
    assert_eq!(h["ifalias"], made.owner_tag.as_str());
    assert!(
        h["flags"]
            .as_array()
            .expect("flags")
            .iter()
            .any(|f| f == "UP")
    );
    // a dual-stack pod keeps IPv6; the host end (a bare bridge port) never has it
    assert_eq!(ipv6_disabled(&pod, "eth0"), "0");
    assert_eq!(ipv6_disabled(&host, &made.host_ifname), "1");
    assert!(inet6_addrs(&host, &made.host_ifname).is_empty());
    let listed = list_host_veths(Some(&host.path())).expect("list");
    assert_eq!(
        listed,
        vec![(made.host_ifname.clone(), made.owner_tag.clone())]
    );

    // removal leaves nothing, and is idempotent
    let r = unplumb_veth_blocking(Some(&host.path()), &made.host_ifname, &made.owner_tag)
        .expect("unplumb");
    assert_eq!(r, Removal::Deleted);
    assert_eq!(link_names(&pod), vec!["lo".to_string()]);
    assert_eq!(link_names(&host), vec!["lo".to_string()]);
    assert!(pod.ip(["route", "show"]).expect("routes").trim().is_empty());
    let again = unplumb_veth_blocking(Some(&host.path()), &made.host_ifname, &made.owner_tag)
        .expect("unplumb again");
    assert_eq!(again, Removal::AlreadyGone);
}

fn ipv6_disabled(ns: &Netns, ifname: &str) -> String {
    ns.run(
        5,
        "sysctl",
        ["-n", &format!("net.ipv6.conf.{ifname}.disable_ipv6")],
    )
    .expect("sysctl")
    .trim()
    .to_string()
}

fn inet6_addrs(ns: &Netns, ifname: &str) -> Vec<Value> {
    ip_json(ns, &["-6", "addr", "show", "dev", ifname])
        .as_array()
        .and_then(|links| links.first())
        .and_then(|l| l["addr_info"].as_array().cloned())
        .unwrap_or_default()
}

#[test]
fn ipv4_only_pod_has_no_ipv6_on_either_end() {
    let (host, pod) = ns_pair();
    let mut s = spec(&host, &pod, "c0ffee0a");
    s.addresses.retain(|a| a.addr().is_ipv4());
    s.gateways.retain(|g| g.is_ipv4());
    let made = plumb_veth_blocking(&s).expect("plumb");
    // turned off before link up: no link-local address, no DAD/MLD/RS ever sent into OVN
    assert_eq!(ipv6_disabled(&pod, "eth0"), "1");
    assert_eq!(ipv6_disabled(&host, &made.host_ifname), "1");
    assert!(inet6_addrs(&pod, "eth0").is_empty());
    assert!(inet6_addrs(&host, &made.host_ifname).is_empty());
    let r6 = pod.ip(["-6", "route", "show"]).expect("routes6");
    assert!(!r6.contains("eth0"), "{r6}");
    // IPv4 as before
    let r4 = pod.ip(["route", "show"]).expect("routes");
    assert!(r4.contains("default via 10.16.0.1 dev eth0"), "{r4}");
    unplumb_veth_blocking(Some(&host.path()), &made.host_ifname, &made.owner_tag).expect("unplumb");
    assert_eq!(link_names(&host), vec!["lo".to_string()]);
}

#[test]
fn ipv4_only_pod_keeps_ipv6_link_local_when_asked() {
    let (host, pod) = ns_pair();
    let mut s = spec(&host, &pod, "c0ffee0b");
    s.addresses.retain(|a| a.addr().is_ipv4());
    s.gateways.retain(|g| g.is_ipv4());
    s.ipv6_link_local = true;
    let made = plumb_veth_blocking(&s).expect("plumb");
    assert_eq!(ipv6_disabled(&pod, "eth0"), "0");
    // the kernel adds the link-local address once the link is up (DAD may still run)
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut addrs = inet6_addrs(&pod, "eth0");
    while addrs.is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        addrs = inet6_addrs(&pod, "eth0");
    }
    assert!(
        addrs
            .iter()
            .any(|a| a["local"].as_str().is_some_and(|l| l.starts_with("fe80:"))),
        "{addrs:?}"
    );
    // the host end never has IPv6
    assert_eq!(ipv6_disabled(&host, &made.host_ifname), "1");
    unplumb_veth_blocking(Some(&host.path()), &made.host_ifname, &made.owner_tag).expect("unplumb");
}

#[test]
fn existing_pod_interface_is_an_error_and_leaves_nothing_behind() {
    let (host, pod) = ns_pair();
    pod.ip([
        "link", "add", "eth0", "type", "veth", "peer", "name", "other0",
    ])
    .expect("veth");
    let s = spec(&host, &pod, "c0ffee02");
    let err = plumb_veth_blocking(&s).expect_err("must fail");
    assert!(
        matches!(err, PlumbError::PodInterfaceExists { .. }),
        "{err}"
    );
    assert!(err.to_string().contains(pod.name()), "{err}");
    assert_eq!(link_names(&host), vec!["lo".to_string()]);
}

#[test]
fn failing_step_is_named_and_rolled_back() {
    let (host, pod) = ns_pair();
    let mut s = spec(&host, &pod, "c0ffee03");
    // a gateway outside every on-link prefix cannot be a next hop
    s.gateways = vec!["10.99.0.1".parse().expect("gw")];
    let err = plumb_veth_blocking(&s).expect_err("must fail");
    let msg = err.to_string();
    assert!(
        msg.contains("adding route 0.0.0.0/0 via 10.99.0.1"),
        "{msg}"
    );
    assert!(msg.contains("eth0") && msg.contains(pod.name()), "{msg}");
    assert_eq!(link_names(&host), vec!["lo".to_string()]);
    assert_eq!(link_names(&pod), vec!["lo".to_string()]);
}

#[test]
fn missing_pod_netns_names_the_path() {
    let (host, _pod) = ns_pair();
    let mut s = spec(&host, &_pod, "c0ffee04");
    s.pod_netns = "/var/run/netns/fvt-does-not-exist".into();
    let err = plumb_veth_blocking(&s).expect_err("must fail");
    assert!(
        err.to_string()
            .contains("/var/run/netns/fvt-does-not-exist"),
        "{err}"
    );
}

#[test]
fn removal_never_deletes_a_namesake_and_readd_replaces_own_leftover() {
    let (host, pod) = ns_pair();
    let s = spec(&host, &pod, "c0ffee05");
    let made = plumb_veth_blocking(&s).expect("plumb");
    let err = unplumb_veth_blocking(Some(&host.path()), &made.host_ifname, "ferrovn:other:eth0")
        .expect_err("not ours");
    assert!(matches!(err, PlumbError::NotOurs { .. }), "{err}");
    assert!(link_names(&host).contains(&made.host_ifname));

    // a second ADD for the same container interface first removes the stale pair: the pod end
    // must be gone before the new pair can take its name
    let mut s2 = s.clone();
    s2.mac = "0a:58:0a:10:00:0c".parse().expect("mac");
    // the old pod end still exists in the pod netns, so this is a pod-side collision unless
    // the stale pair is deleted first (it is)
    let made2 = plumb_veth_blocking(&s2).expect("re-plumb");
    assert_eq!(made2.host_ifname, made.host_ifname);
    let link = &ip_json(&pod, &["link", "show", "eth0"])[0];
    assert_eq!(link["address"], "0a:58:0a:10:00:0c");

    // a foreign interface with our host name blocks plumbing instead of being deleted
    unplumb_veth_blocking(Some(&host.path()), &made.host_ifname, &made.owner_tag).expect("unplumb");
    host.ip([
        "link",
        "add",
        &made.host_ifname,
        "type",
        "veth",
        "peer",
        "name",
        "other0",
    ])
    .expect("veth");
    let err = plumb_veth_blocking(&s).expect_err("namesake");
    assert!(matches!(err, PlumbError::NotOurs { .. }), "{err}");
    assert!(link_names(&host).contains(&made.host_ifname));
}

#[test]
fn async_plumbing_does_not_move_the_runtime_threads() {
    let (host, pod) = ns_pair();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("rt");
    let own_ns = std::fs::read_link("/proc/thread-self/ns/net").expect("own ns");
    let s = spec(&host, &pod, "c0ffee06");
    let made = rt.block_on(async {
        let made = tokio::time::timeout(Duration::from_secs(20), plumb_veth(s))
            .await
            .expect("in time")
            .expect("plumb");
        // a worker thread's namespace is still the process's
        let worker_ns =
            tokio::spawn(async { std::fs::read_link("/proc/thread-self/ns/net").expect("ns") })
                .await
                .expect("join");
        assert_eq!(worker_ns, own_ns);
        made
    });
    assert!(link_names(&host).contains(&made.host_ifname));
    assert_eq!(
        std::fs::read_link("/proc/thread-self/ns/net").expect("ns"),
        own_ns
    );
}

#[test]
fn pod_keeps_tx_offloads_when_the_node_runs_userspace_tso() {
    let (host, pod) = ns_pair();
    let mut s = spec(&host, &pod, "c0ffee0f");
    s.tx_offload = true;
    let made = plumb_veth_blocking(&s).expect("plumb");
    let k = pod.run(5, "ethtool", ["-k", "eth0"]).expect("ethtool");
    assert!(k.contains("tx-checksumming: on"), "{k}");
    assert!(k.contains("tx-tcp-segmentation: on"), "{k}");
    unplumb_veth_blocking(Some(&host.path()), &made.host_ifname, &made.owner_tag).expect("unplumb");
}
