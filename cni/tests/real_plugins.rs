//! IPAM-only mode for real: Debian's `macvlan` plugin (containernetworking-plugins) delegates
//! IPAM to `ferrovn` through CNI_PATH, inside network namespaces this test creates.

// A test crate: its helpers outside #[test] fns assert by unwrapping too (clippy.toml allows it
// only inside #[test] fns and #[cfg(test)] modules).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use ferrovn_cni::protocol::{Request, Response};
use ferrovn_cni::spec::{CniResult, IpConfig, Route};
use ferrovn_testkit::names::unique_tag;
use ferrovn_testkit::netns::Netns;
use ferrovn_testkit::require::{Need, require};
use serde_json::json;

/// Debian `containernetworking-plugins`.
const MACVLAN: &str = "/usr/lib/cni/macvlan";

fn ip(args: &[&str]) -> std::process::Output {
    Command::new("ip").args(args).output().expect("run ip")
}

#[test]
fn macvlan_takes_its_address_from_ferrovn_ipam() {
    let needs = [Need::Root, Need::Tool("ip"), Need::Program(MACVLAN.into())];
    if !require("macvlan_takes_its_address_from_ferrovn_ipam", &needs) {
        return;
    }
    let agent = FakeAgent::start(|req| match req {
        Request::IpamAdd(_) => Response::with_result(CniResult {
            ips: vec![IpConfig {
                address: "172.31.77.10/24".parse().unwrap(),
                gateway: Some("172.31.77.1".parse().unwrap()),
                interface: None,
            }],
            routes: vec![Route {
                dst: Some("172.31.0.0/16".parse().unwrap()),
                gw: Some("172.31.77.1".parse().unwrap()),
                ..Route::default()
            }],
            ..CniResult::default()
        }),
        Request::IpamDel(_) => Response::ok(),
        _ => Response::error(100, "unexpected op", ""),
    });

    // CNI_PATH: our binary under the IPAM type name, then the distro plugins.
    let bin_dir = agent.dir.path().join("bin");
    std::fs::create_dir(&bin_dir).unwrap();
    std::os::unix::fs::symlink(BIN, bin_dir.join("ferrovn")).unwrap();
    let cni_path = format!("{}:/usr/lib/cni", bin_dir.display());

    let tag = unique_tag();
    let host_ns = Netns::create(&format!("fcni-h{tag}")).expect("host netns");
    let pod_ns = Netns::create(&format!("fcni-p{tag}")).expect("pod netns");
    let (host, pod) = (host_ns.name().to_string(), pod_ns.name().to_string());
    // The macvlan master lives in a "host" namespace of our own, not the machine's.
    let out = ip(&[
        "-n", &host, "link", "add", "mvm0", "type", "veth", "peer", "name", "mvm1",
    ]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        ip(&["-n", &host, "link", "set", "mvm0", "up"])
            .status
            .success()
    );
    let netns_path = format!("/var/run/netns/{pod}");

    for (i, version) in ["1.0.0", "0.3.1"].iter().enumerate() {
        let ifname = format!("net{}", i + 1);
        let container_id = format!("ctr{tag}x{i}");
        let conf = json!({
            "cniVersion": version,
            "name": "macnet",
            "type": "macvlan",
            "master": "mvm0",
            "mode": "bridge",
            "ipam": {
                "type": "ferrovn",
                "server_socket": agent.socket_str(),
                "subnet": "attach-net",
                "provider": "macnet.default"
            }
        })
        .to_string();
        let env = |cmd: &'static str| -> Vec<(&'static str, String)> {
            vec![
                ("CNI_COMMAND", cmd.to_string()),
                ("CNI_CONTAINERID", container_id.clone()),
                ("CNI_NETNS", netns_path.clone()),
                ("CNI_IFNAME", ifname.clone()),
                ("CNI_PATH", cni_path.clone()),
                (
                    "CNI_ARGS",
                    "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=mv-0".to_string(),
                ),
            ]
        };
        let add_env = env("ADD");
        let add_env: Vec<(&str, &str)> = add_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let run = exec(
            Path::new("ip"),
            &["netns", "exec", &host, MACVLAN],
            &add_env,
            conf.as_bytes(),
        );
        assert_eq!(
            run.code, 0,
            "macvlan ADD ({version}): {} {}",
            run.stdout, run.stderr
        );
        assert_eq!(run.stdout["cniVersion"], *version);
        assert_eq!(run.stdout["ips"][0]["address"], "172.31.77.10/24");
        assert_eq!(run.stdout["interfaces"][0]["name"], ifname.as_str());

        // The address really is on the pod's interface, with our route.
        let addr = ip(&["-n", &pod, "-o", "addr", "show", "dev", &ifname]);
        let addr = String::from_utf8_lossy(&addr.stdout);
        assert!(addr.contains("inet 172.31.77.10/24"), "{addr}");
        let routes = ip(&["-n", &pod, "route", "show", "dev", &ifname]);
        let routes = String::from_utf8_lossy(&routes.stdout);
        assert!(routes.contains("172.31.0.0/16 via 172.31.77.1"), "{routes}");

        let del_env = env("DEL");
        let del_env: Vec<(&str, &str)> = del_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let run = exec(
            Path::new("ip"),
            &["netns", "exec", &host, MACVLAN],
            &del_env,
            conf.as_bytes(),
        );
        assert_eq!(
            run.code, 0,
            "macvlan DEL ({version}): {} {}",
            run.stdout, run.stderr
        );
        let gone = ip(&["-n", &pod, "link", "show", &ifname]);
        assert!(!gone.status.success(), "{ifname} removed by DEL");
    }

    let reqs = agent.requests();
    let ops: Vec<&str> = reqs.iter().map(Request::op).collect();
    assert_eq!(ops, ["ipam_add", "ipam_del", "ipam_add", "ipam_del"]);
    let Request::IpamAdd(r) = &reqs[0] else {
        panic!()
    };
    assert_eq!(r.subnet.as_deref(), Some("attach-net"));
    assert_eq!(r.provider.as_deref(), Some("macnet.default"));
    assert_eq!(r.ifname, "net1");
    assert_eq!(r.pod.as_ref().map(|p| p.name.as_str()), Some("mv-0"));
}
