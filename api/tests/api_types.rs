//! The custom resources read and write exactly Kube-OVN's JSON: a fully populated object in
//! Kube-OVN's field names survives a parse/serialise round trip unchanged, so no field is
//! misnamed in either direction.

// A test crate: its helpers outside #[test] fns assert by unwrapping too (clippy.toml allows it
// only inside #[test] fns and #[cfg(test)] modules).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![recursion_limit = "256"]

use ferrovn_api::crd::{
    Condition, ConditionStatus, Ip, IpCount, IpPool, ProviderNetwork, Subnet, Vlan, Vpc,
    find_condition, set_condition,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

fn round_trip<T: DeserializeOwned + Serialize>(input: Value) {
    let typed: T = serde_json::from_value(input.clone()).expect("parses");
    let output = serde_json::to_value(&typed).expect("serialises");
    assert_eq!(output, input, "round trip changed the object");
}

#[test]
fn subnet_round_trip() {
    round_trip::<Subnet>(json!({
        "apiVersion": "kubeovn.io/v1", "kind": "Subnet",
        "metadata": {"name": "team-a"},
        "spec": {
            "default": true, "vpc": "ovn-cluster", "protocol": "Dual",
            "namespaces": ["team-a"], "cidrBlock": "10.66.0.0/16,fd00:66::/64",
            "gateway": "10.66.0.1,fd00:66::1", "excludeIps": ["10.66.0.1..10.66.0.10"],
            "provider": "ovn", "gatewayType": "centralized", "gatewayNode": "node1,node2",
            "gatewayNodeSelectors": [{"matchLabels": {"gw": "true"}}],
            "natOutgoing": true, "externalEgressGateway": "192.168.0.1",
            "policyRoutingPriority": 1000, "policyRoutingTableID": 1000, "mtu": 1400,
            "private": true, "allowSubnets": ["10.16.0.0/16"], "vlan": "vlan10",
            "vips": ["10.66.0.100"], "logicalGateway": true, "disableGatewayCheck": true,
            "disableInterConnection": true, "enableDHCP": true, "dhcpV4Options": "a",
            "dhcpV6Options": "b", "enableIPv6RA": true, "ipv6RAConfigs": "address_mode=dhcpv6_stateful",
            "acls": [{"direction": "to-lport", "priority": 1005, "match": "ip4.src==10.10.0.2", "action": "drop"}],
            "allowEWTraffic": true,
            "natOutgoingPolicyRules": [{"match": {"srcIPs": "10.66.0.0/24", "dstIPs": "1.1.1.1"}, "action": "forward"}],
            "u2oInterconnectionIP": "10.66.0.250", "u2oInterconnection": true,
            "enableLb": false, "enableEcmp": true, "enableMulticastSnoop": true,
            "enableExternalLBAddress": true, "routeTable": "rt1",
            "namespaceSelectors": [{"matchLabels": {"team": "a"}}], "nodeNetwork": "n1"
        },
        "status": {
            "conditions": [{"type": "Ready", "status": "True", "reason": "Init", "message": "ok",
                            "lastUpdateTime": "2025-01-02T03:04:05Z", "lastTransitionTime": "2025-01-02T03:04:05Z"}],
            "v4availableIPs": 65523, "v4availableIPrange": "10.66.0.11-10.66.255.254",
            "v4usingIPs": 2, "v4usingIPrange": "10.66.0.11-10.66.0.12",
            "v6availableIPs": 18446744073709551614u64, "v6availableIPrange": "fd00:66::2-fd00:66::ffff:ffff:ffff:fffe",
            "v6usingIPs": 2, "v6usingIPrange": "fd00:66::3-fd00:66::4",
            "activateGateway": "node1", "dhcpV4OptionsUUID": "u4", "dhcpV6OptionsUUID": "u6",
            "u2oInterconnectionIP": "10.66.0.250", "u2oInterconnectionMAC": "0a:00:00:00:00:01",
            "u2oInterconnectionVPC": "ovn-cluster", "mcastQuerierIP": "10.66.0.251",
            "mcastQuerierMAC": "0a:00:00:00:00:02"
        }
    }));
}

#[test]
fn vpc_round_trip() {
    round_trip::<Vpc>(json!({
        "apiVersion": "kubeovn.io/v1", "kind": "Vpc",
        "metadata": {"name": "vpc-blue"},
        "spec": {
            "defaultSubnet": "blue-net", "namespaces": ["blue"],
            "staticRoutes": [{"policy": "policySrc", "cidr": "10.0.0.0/24", "nextHopIP": "10.0.1.254",
                              "ecmpMode": "ecmp_symmetric_reply", "bfdId": "b1", "routeTable": "rt1"}],
            "policyRoutes": [{"priority": 31000, "match": "ip4.src == 10.0.0.0/24", "action": "reroute", "nextHopIP": "10.0.1.253"}],
            "vpcPeerings": [{"remoteVpc": "vpc-red", "localConnectIP": "169.254.0.1/30"}],
            "enableExternal": true, "extraExternalSubnets": ["ext1"], "enableBfd": true,
            "bfdPort": {"enabled": true, "ip": "10.255.255.255", "nodeSelector": {"matchLabels": {"gw": "true"}}}
        },
        "status": {
            "conditions": [{"type": "Ready", "status": "False"}],
            "standby": true, "default": false, "defaultLogicalSwitch": "blue-net", "router": "vpc-blue",
            "tcpLoadBalancer": "t", "udpLoadBalancer": "u", "sctpLoadBalancer": "s",
            "tcpSessionLoadBalancer": "ts", "udpSessionLoadBalancer": "us", "sctpSessionLoadBalancer": "ss",
            "subnets": ["blue-net"], "vpcPeerings": ["vpc-red"], "enableExternal": true,
            "extraExternalSubnets": ["ext1"], "enableBfd": true
        }
    }));
}

#[test]
fn ip_round_trip() {
    round_trip::<Ip>(json!({
        "apiVersion": "kubeovn.io/v1", "kind": "IP",
        "metadata": {"name": "db-0.team-a"},
        "spec": {
            "podName": "db-0", "namespace": "team-a", "subnet": "team-a",
            "attachSubnets": ["dpdk-net"], "nodeName": "node1",
            "ipAddress": "10.66.0.20,fd00:66::20", "v4IpAddress": "10.66.0.20", "v6IpAddress": "fd00:66::20",
            "attachIps": ["172.18.0.9"], "macAddress": "00:00:00:53:6b:b6",
            "attachMacs": ["0a:00:00:12:00:09"], "containerID": "abc123", "podType": "StatefulSet"
        }
    }));
}

#[test]
fn ippool_vlan_provider_network_round_trip() {
    round_trip::<IpPool>(json!({
        "apiVersion": "kubeovn.io/v1", "kind": "IPPool",
        "metadata": {"name": "pool-1"},
        "spec": {"subnet": "ovn-default", "namespaces": ["ns-1"],
                 "ips": ["10.16.0.201", "10.16.0.210/30", "10.16.0.220..10.16.0.230"], "enableAddressSet": true},
        "status": {"v4AvailableIPs": 14, "v4AvailableIPRange": "10.16.0.201,10.16.0.210-10.16.0.213",
                   "v4UsingIPs": 1, "v4UsingIPRange": "10.16.0.201", "v6AvailableIPs": 0,
                   "v6AvailableIPRange": "", "v6UsingIPs": 0, "v6UsingIPRange": "",
                   "conditions": [{"type": "Ready", "status": "True"}]}
    }));
    round_trip::<Vlan>(json!({
        "apiVersion": "kubeovn.io/v1", "kind": "Vlan",
        "metadata": {"name": "vlan10"},
        "spec": {"id": 10, "provider": "net1"},
        "status": {"subnets": ["underlay"], "conditions": [{"type": "Error", "status": "False"}]}
    }));
    round_trip::<ProviderNetwork>(json!({
        "apiVersion": "kubeovn.io/v1", "kind": "ProviderNetwork",
        "metadata": {"name": "net1"},
        "spec": {"defaultInterface": "eth1",
                 "customInterfaces": [{"interface": "eth2", "nodes": ["node2"]}],
                 "nodeSelector": {"matchLabels": {"underlay": "true"}},
                 "excludeNodes": ["node3"], "exchangeLinkName": true,
                 "preserveVlanInterfaces": true, "vlanInterfaces": ["eth1.10"]},
        "status": {"ready": true, "readyNodes": ["node1"], "notReadyNodes": ["node2"], "vlans": ["vlan10"],
                   "conditions": [{"node": "node2", "type": "Ready", "status": "False", "reason": "InterfaceNotFound",
                                   "message": "eth2 not found"}]}
    }));
}

#[test]
fn provider_network_interface_per_node() {
    let pn: ProviderNetwork = serde_json::from_value(json!({
        "apiVersion": "kubeovn.io/v1", "kind": "ProviderNetwork", "metadata": {"name": "net1"},
        "spec": {"defaultInterface": "eth1", "customInterfaces": [{"interface": "eth2", "nodes": ["node2"]}],
                 "excludeNodes": ["node3"]}
    }))
    .unwrap();
    assert_eq!(pn.interface_for_node("node1"), Some("eth1"));
    assert_eq!(pn.interface_for_node("node2"), Some("eth2"));
    assert_eq!(pn.interface_for_node("node3"), None);
}

#[test]
fn deprecated_vlan_fields_still_work() {
    let v: Vlan = serde_json::from_value(json!({
        "apiVersion": "kubeovn.io/v1", "kind": "Vlan", "metadata": {"name": "old"},
        "spec": {"vlanId": 42, "providerInterfaceName": "eth9"}
    }))
    .unwrap();
    assert_eq!((v.tag(), v.provider_network()), (42, "eth9"));
}

#[test]
fn ip_counts_beyond_u64_are_bare_numbers() {
    let big = IpCount(1u128 << 64);
    assert_eq!(serde_json::to_string(&big).unwrap(), "18446744073709551616");
    assert_eq!(
        serde_json::from_str::<IpCount>("18446744073709551616").unwrap(),
        big
    );
    assert_eq!(
        serde_json::from_str::<IpCount>("\"42\"").unwrap(),
        IpCount(42)
    );
    assert_eq!(
        serde_json::from_str::<IpCount>("6.5533e4").unwrap(),
        IpCount(65533)
    );
    assert!(serde_json::from_str::<IpCount>("-1").is_err());
    assert!(serde_json::from_str::<IpCount>("\"many\"").is_err());
}

fn time(s: &str) -> Time {
    serde_json::from_value(json!(s)).unwrap()
}

#[test]
fn conditions_track_update_and_transition_times() {
    let mut conditions: Vec<Condition> = Vec::new();
    let t1 = time("2025-01-01T00:00:00Z");
    let t2 = time("2025-01-01T00:01:00Z");
    let t3 = time("2025-01-01T00:02:00Z");
    assert!(set_condition(
        &mut conditions,
        Condition::VALIDATED,
        ConditionStatus::False,
        "BadCidr",
        "x",
        &t1
    ));
    assert!(!set_condition(
        &mut conditions,
        Condition::VALIDATED,
        ConditionStatus::False,
        "BadCidr",
        "x",
        &t2
    ));
    assert!(set_condition(
        &mut conditions,
        Condition::VALIDATED,
        ConditionStatus::False,
        "BadCidr",
        "y",
        &t2
    ));
    let c = find_condition(&conditions, Condition::VALIDATED).unwrap();
    assert_eq!(
        (c.last_update_time.as_ref(), c.last_transition_time.as_ref()),
        (Some(&t2), Some(&t1))
    );
    assert!(set_condition(
        &mut conditions,
        Condition::VALIDATED,
        ConditionStatus::True,
        "Ok",
        "",
        &t3
    ));
    let c = find_condition(&conditions, Condition::VALIDATED).unwrap();
    assert_eq!(c.last_transition_time.as_ref(), Some(&t3));
    assert_eq!(conditions.len(), 1);
}
