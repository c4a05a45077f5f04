//! Golden values of every derived name that must survive an upgrade. They were computed by the
//! code before it moved into this crate (control's `plan::names` and `ipam::mac`, dataplane's
//! `types::host_ifname` and `dpdk::vhost::port_name`). If one of these fails, the change
//! renames veths under running pods, orphans OVS ports or moves router and pod MACs: do not
//! update the value, restore the function.

use ferrovn_api::names::{
    attachment_id, candidate_mac, host_ifname, join_port_name, lb_group_name, localnet_port_name,
    lsp_name, router_port_mac, router_port_name, service_lb_name, stable_hash,
    switch_router_port_name, vhost_port_name,
};

const CID_A: &str = "3f2a9c0d1e4b5a6978877665544332211aabbccddeeff00112233445566778899";
const CID_B: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// The controller's default seed (`ferrovn_control::controller::DEFAULT_MAC_SEED`).
const DEFAULT_MAC_SEED: u64 = 0x4665_7272_4f56_4e00;

#[test]
fn host_veth_and_vhost_port_names() {
    for (cid, ifname, host, vhost) in [
        (CID_A, "eth0", "fv61cb04a2f4b17", "vh61cb04a2f4b17"),
        (CID_A, "net1", "fv1049aa66ee55d", "vh1049aa66ee55d"),
        (CID_B, "eth0", "fva98dd7637ef76", "vha98dd7637ef76"),
        (CID_B, "net1", "fv8819150958a60", "vh8819150958a60"),
        ("c1", "eth0", "fvbcd778a1816a5", "vhbcd778a1816a5"),
        ("c1", "net1", "fv71d9e6cb85735", "vh71d9e6cb85735"),
        (
            "lab-web-0-5d1c",
            "eth0",
            "fva7227af941564",
            "vha7227af941564",
        ),
        (
            "lab-web-0-5d1c",
            "net1",
            "fv07f2accfdad7e",
            "vh07f2accfdad7e",
        ),
    ] {
        assert_eq!(host_ifname(cid, ifname), host, "{cid} {ifname}");
        assert_eq!(vhost_port_name(cid, ifname), vhost, "{cid} {ifname}");
        // the vhost-user socket directory is named by the bare id
        assert_eq!(attachment_id(cid, ifname), host[2..], "{cid} {ifname}");
    }
}

#[test]
fn router_port_macs() {
    for (port, mac) in [
        ("ovn-cluster-ovn-default", "0a:58:22:75:55:28"),
        ("ovn-cluster-join", "0a:58:16:54:a7:f2"),
        ("ovn-cluster-team-a", "0a:58:c9:cd:b2:a7"),
        ("vpc-blue-blue-1", "0a:58:55:74:8c:97"),
        ("", "0a:58:4f:d0:bf:c1"),
    ] {
        assert_eq!(router_port_mac(port).to_string(), mac, "{port:?}");
    }
}

#[test]
fn nb_port_names() {
    assert_eq!(lsp_name("web-0", "default", "ovn"), "web-0.default");
    assert_eq!(lsp_name("web-0", "default", ""), "web-0.default");
    assert_eq!(
        lsp_name("web-0", "team-a", "net1.default.ovn"),
        "web-0.team-a.net1.default.ovn"
    );
    assert_eq!(
        router_port_name("ovn-cluster", "ovn-default"),
        "ovn-cluster-ovn-default"
    );
    assert_eq!(
        switch_router_port_name("ovn-default", "ovn-cluster"),
        "ovn-default-ovn-cluster"
    );
    assert_eq!(join_port_name("kind-worker"), "node-kind-worker");
    assert_eq!(localnet_port_name("underlay"), "localnet.underlay");
}

#[test]
fn nb_load_balancer_names() {
    assert_eq!(lb_group_name("ovn-cluster"), "ferrovn-lbs-ovn-cluster");
    assert_eq!(
        service_lb_name("default", "web", "tcp"),
        "svc:default/web:tcp"
    );
}

/// (seed, namespace, name, provider, [attempt 0, 1, 2], stable hash of the owner).
type CandidateGolden = (
    u64,
    &'static str,
    &'static str,
    &'static str,
    [&'static str; 3],
    u64,
);

const CANDIDATES: [CandidateGolden; 12] = [
    (
        DEFAULT_MAC_SEED,
        "default",
        "web-0",
        "ovn",
        [
            "0e:8e:12:5e:ef:a0",
            "0e:2a:b8:8f:03:f4",
            "0e:57:26:07:05:5c",
        ],
        0x875b_99f7_39b5_145d,
    ),
    (
        DEFAULT_MAC_SEED,
        "kube-system",
        "coredns-7db6d8ff4d-abcde",
        "ovn",
        [
            "0e:c7:a5:b3:89:43",
            "0e:33:98:6d:ea:14",
            "0e:b3:06:b1:27:f7",
        ],
        0x6371_635d_fe0f_218f,
    ),
    (
        DEFAULT_MAC_SEED,
        "",
        "node-kind-worker",
        "ovn",
        [
            "0e:aa:02:51:ef:a1",
            "0e:1f:70:a6:2e:00",
            "0e:02:b5:c2:df:e0",
        ],
        0x566f_86c6_5b6c_838e,
    ),
    (
        DEFAULT_MAC_SEED,
        "default",
        "dpdk-0",
        "dpdk-net.default.ovn",
        [
            "0e:cb:85:2d:b7:8f",
            "0e:45:19:c1:ee:5e",
            "0e:cd:74:18:e4:b5",
        ],
        0x23e5_c0b1_b9b9_882f,
    ),
    (
        0,
        "default",
        "web-0",
        "ovn",
        [
            "0e:76:4e:3e:cb:12",
            "0e:f3:27:6d:34:3c",
            "0e:b6:20:e8:18:98",
        ],
        0x5cae_b257_1a75_64af,
    ),
    (
        0,
        "kube-system",
        "coredns-7db6d8ff4d-abcde",
        "ovn",
        [
            "0e:75:5f:59:7f:67",
            "0e:3e:36:57:bc:2d",
            "0e:a9:6e:13:fb:cd",
        ],
        0x49c5_eed2_56a4_7897,
    ),
    (
        0,
        "",
        "node-kind-worker",
        "ovn",
        [
            "0e:83:b5:e3:fc:e6",
            "0e:4b:67:9e:09:77",
            "0e:f3:a9:e7:05:fa",
        ],
        0x479e_769f_dde1_5909,
    ),
    (
        0,
        "default",
        "dpdk-0",
        "dpdk-net.default.ovn",
        [
            "0e:76:dd:56:90:03",
            "0e:90:ad:c5:c9:d1",
            "0e:f3:10:57:4f:71",
        ],
        0x5189_c5be_9baa_6573,
    ),
    (
        7,
        "default",
        "web-0",
        "ovn",
        [
            "0e:bf:bf:62:4b:ca",
            "0e:12:c7:56:ee:69",
            "0e:c3:7a:24:b4:55",
        ],
        0xae2a_8208_4cf9_7944,
    ),
    (
        7,
        "kube-system",
        "coredns-7db6d8ff4d-abcde",
        "ovn",
        [
            "0e:21:13:45:c0:d2",
            "0e:fc:43:3b:5c:20",
            "0e:88:04:a9:11:7a",
        ],
        0xdfb0_686f_75ec_e0bd,
    ),
    (
        7,
        "",
        "node-kind-worker",
        "ovn",
        [
            "0e:bc:80:fd:ae:52",
            "0e:e5:c2:22:35:ad",
            "0e:14:ef:bc:d6:1f",
        ],
        0xe0e7_df83_ed29_9e0e,
    ),
    (
        7,
        "default",
        "dpdk-0",
        "dpdk-net.default.ovn",
        [
            "0e:8f:02:82:f4:e2",
            "0e:11:a6:e1:b5:4a",
            "0e:43:cb:fa:10:02",
        ],
        0xf159_05fb_31c8_85bd,
    ),
];

#[test]
fn candidate_macs_and_owner_hashes() {
    for (seed, ns, name, provider, macs, hash) in CANDIDATES {
        for (attempt, want) in (0u32..).zip(macs) {
            assert_eq!(
                candidate_mac(seed, ns, name, provider, attempt).to_string(),
                want,
                "seed {seed:#x} {ns}/{name} ({provider}) attempt {attempt}"
            );
        }
        // the IPAM's recovery orders conflicting records by this hash with seed 0
        assert_eq!(
            stable_hash(seed, &[ns, name, provider]),
            hash,
            "seed {seed:#x} {ns}/{name} ({provider})"
        );
    }
}
