//! The built `ferrovn-cni`, invoked as a runtime invokes it, against a fake node agent.

// A test crate: its helpers outside #[test] fns assert by unwrapping too (clippy.toml allows it
// only inside #[test] fns and #[cfg(test)] modules).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use common::*;
use ferrovn_cni::protocol::{Request, Response};
use ferrovn_cni::spec::{CniResult, Dns, Interface, IpConfig, Route, code};
use serde_json::{Value, json};

const NETNS: &str = "/var/run/netns/cni-3f2a9c0d1e";

fn agent_result() -> CniResult {
    CniResult {
        interfaces: vec![
            Interface {
                name: "3f2a9c0d_h".into(),
                mac: Some("ee:ee:ee:00:00:01".into()),
                ..Interface::default()
            },
            Interface {
                name: "eth0".into(),
                mac: Some("0a:58:0a:10:00:05".into()),
                mtu: Some(1400),
                sandbox: Some(NETNS.into()),
                socket_path: Some("/var/run/ferrovn/vhost/3f2a9c0d/sock0".into()),
                pci_id: None,
            },
        ],
        ips: vec![
            IpConfig {
                address: "10.16.0.5/16".parse().unwrap(),
                gateway: Some("10.16.0.1".parse().unwrap()),
                interface: Some(1),
            },
            IpConfig {
                address: "fd00:10:16::5/64".parse().unwrap(),
                gateway: Some("fd00:10:16::1".parse().unwrap()),
                interface: Some(1),
            },
        ],
        routes: vec![Route {
            dst: Some("0.0.0.0/0".parse().unwrap()),
            gw: Some("10.16.0.1".parse().unwrap()),
            mtu: Some(1400),
            ..Route::default()
        }],
        dns: Dns {
            nameservers: vec!["10.96.0.10".into()],
            search: vec!["default.svc.cluster.local".into()],
            ..Dns::default()
        },
    }
}

fn conf(agent: &FakeAgent, version: &str) -> Value {
    json!({
        "cniVersion": version,
        "name": "ovn",
        "type": "ferrovn-cni",
        "server_socket": agent.socket_str(),
        "provider": "ovn",
        "mtu": 1400,
        "vhost_user_socket_volume_name": "vhostuser-sockets",
        "vhost_user_socket_name": "sock0",
        "deviceID": "0000:04:00.5",
        "runtimeConfig": {"mac": "0a:58:0a:10:00:05"}
    })
}

fn add_agent() -> FakeAgent {
    FakeAgent::start(|req| match req {
        Request::Add(_) => Response::with_result(agent_result()),
        _ => Response::ok(),
    })
}

#[test]
fn add_returns_the_agents_result_in_1_1_0_shape() {
    let agent = add_agent();
    let run = plugin(&pod_env("ADD", NETNS), &conf(&agent, "1.1.0").to_string());
    assert_eq!(run.code, 0, "stdout {} stderr {}", run.stdout, run.stderr);
    let v = &run.stdout;
    assert_eq!(v["cniVersion"], "1.1.0");
    assert_eq!(v["interfaces"][1]["name"], "eth0");
    assert_eq!(v["interfaces"][1]["sandbox"], NETNS);
    assert_eq!(v["interfaces"][1]["mtu"], 1400);
    assert_eq!(
        v["interfaces"][1]["socketPath"],
        "/var/run/ferrovn/vhost/3f2a9c0d/sock0"
    );
    assert_eq!(
        v["ips"],
        json!([
            {"address": "10.16.0.5/16", "gateway": "10.16.0.1", "interface": 1},
            {"address": "fd00:10:16::5/64", "gateway": "fd00:10:16::1", "interface": 1}
        ])
    );
    assert_eq!(
        v["routes"],
        json!([{"dst": "0.0.0.0/0", "gw": "10.16.0.1", "mtu": 1400}])
    );
    assert_eq!(v["dns"]["nameservers"], json!(["10.96.0.10"]));

    let reqs = agent.requests();
    assert_eq!(reqs.len(), 1);
    let Request::Add(r) = &reqs[0] else {
        panic!("expected add, got {:?}", reqs[0])
    };
    let pod = r.pod.as_ref().expect("pod identity");
    assert_eq!(
        (pod.namespace.as_str(), pod.name.as_str()),
        ("default", "web-0")
    );
    assert_eq!(pod.uid.as_deref(), Some("6b1c-44"));
    assert_eq!(pod.infra_container_id.as_deref(), Some("3f2a9c0d1e"));
    assert_eq!(r.container_id, "3f2a9c0d1e");
    assert_eq!(r.netns.as_deref(), Some(NETNS));
    assert_eq!(r.ifname, "eth0");
    assert_eq!(r.provider.as_deref(), Some("ovn"));
    assert_eq!(r.mtu, Some(1400));
    assert_eq!(r.device_id.as_deref(), Some("0000:04:00.5"));
    let vu = r.vhost_user.as_ref().expect("vhost-user fields");
    assert_eq!(vu.socket_volume_name.as_deref(), Some("vhostuser-sockets"));
    assert_eq!(vu.socket_name.as_deref(), Some("sock0"));
    assert_eq!(r.netconf["runtimeConfig"]["mac"], "0a:58:0a:10:00:05");
}

#[test]
fn add_converts_to_older_versions_when_asked() {
    let agent = add_agent();
    for version in ["0.4.0", "0.3.1", "0.3.0"] {
        let run = plugin(&pod_env("ADD", NETNS), &conf(&agent, version).to_string());
        assert_eq!(run.code, 0, "{version}: {}", run.stdout);
        let v = &run.stdout;
        assert_eq!(v["cniVersion"], version);
        assert_eq!(v["ips"][0]["version"], "4");
        assert_eq!(v["ips"][1]["version"], "6");
        assert!(v["interfaces"][1].get("socketPath").is_none(), "{v}");
        assert!(v["interfaces"][1].get("mtu").is_none(), "{v}");
        assert_eq!(
            v["routes"],
            json!([{"dst": "0.0.0.0/0", "gw": "10.16.0.1"}])
        );
    }
    let run = plugin(&pod_env("ADD", NETNS), &conf(&agent, "1.0.0").to_string());
    assert!(run.stdout["ips"][0].get("version").is_none());
}

#[test]
fn add_chains_after_a_prev_result() {
    let agent = add_agent();
    let mut c = conf(&agent, "1.0.0");
    c["prevResult"] = json!({
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "lo0", "sandbox": NETNS}],
        "ips": [{"address": "192.168.9.2/24", "interface": 0}]
    });
    let run = plugin(&pod_env("ADD", NETNS), &c.to_string());
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert_eq!(run.stdout["interfaces"].as_array().map(Vec::len), Some(3));
    assert_eq!(run.stdout["ips"][0]["interface"], 0);
    assert_eq!(
        run.stdout["ips"][1]["interface"], 2,
        "our IPs point at our eth0"
    );
}

#[test]
fn agent_errors_reach_the_runtime_unchanged() {
    let agent = FakeAgent::start(|_| {
        Response::error(
            113,
            "port not installed by OVN",
            "Interface 3f2a9c0d_h has no external_ids:ovn-installed after 60s",
        )
    });
    let run = plugin(&pod_env("ADD", NETNS), &conf(&agent, "1.1.0").to_string());
    assert_eq!(assert_cni_error(&run), 113);
    assert_eq!(run.stdout["msg"], "port not installed by OVN");
    assert!(run.stderr.contains("port not installed"), "{}", run.stderr);
}

#[test]
fn del_of_unknown_succeeds_and_is_idempotent() {
    let agent = FakeAgent::start(|req| match req {
        Request::Del(_) => Response::error(code::UNKNOWN_CONTAINER, "no such attachment", ""),
        _ => Response::error(100, "unexpected", ""),
    });
    let mut env = pod_env("DEL", NETNS);
    // Runtimes may DEL after the netns is gone and without pod args.
    env.retain(|(k, _)| *k != "CNI_NETNS" && *k != "CNI_ARGS");
    for _ in 0..2 {
        let run = plugin(&env, &conf(&agent, "1.1.0").to_string());
        assert_eq!(run.code, 0, "{}", run.stdout);
        assert!(run.raw_stdout.is_empty(), "DEL prints nothing on success");
    }
    let reqs = agent.requests();
    assert_eq!(reqs.len(), 2);
    let Request::Del(r) = &reqs[0] else {
        panic!("{:?}", reqs[0])
    };
    assert_eq!(r.netns, None);
    assert_eq!(r.pod, None);
}

#[test]
fn del_forwards_prev_result_when_given() {
    let agent = FakeAgent::start(|_| Response::ok());
    let mut c = conf(&agent, "1.1.0");
    c["prevResult"] = agent_result().to_json(ferrovn_cni::spec::CniVersion::V1_1_0, false);
    let run = plugin(&pod_env("DEL", NETNS), &c.to_string());
    assert_eq!(run.code, 0, "{}", run.stdout);
    let Request::Del(r) = &agent.requests()[0] else {
        panic!()
    };
    assert_eq!(r.prev_result.as_ref().map(|p| p.ips.len()), Some(2));
}

#[test]
fn agent_down_means_try_again_later() {
    let dir = tempfile::tempdir().unwrap();
    // Socket file missing.
    let missing = dir.path().join("missing.sock");
    // Socket file present but nobody listening (agent crashed).
    let stale = dir.path().join("stale.sock");
    drop(UnixListener::bind(&stale).unwrap());
    for sock in [&missing, &stale] {
        let c = json!({"cniVersion": "1.1.0", "name": "ovn", "type": "ferrovn-cni",
                       "server_socket": sock.to_string_lossy()});
        for cmd in ["ADD", "DEL", "CHECK"] {
            let mut c = c.clone();
            c["prevResult"] = agent_result().to_json(ferrovn_cni::spec::CniVersion::V1_1_0, false);
            let run = plugin(&pod_env(cmd, NETNS), &c.to_string());
            assert_eq!(
                assert_cni_error(&run),
                code::TRY_AGAIN_LATER as u64,
                "{cmd} {sock:?}"
            );
            assert!(
                run.stdout["details"]
                    .as_str()
                    .unwrap()
                    .contains(&*sock.to_string_lossy()),
                "details name the socket: {}",
                run.stdout
            );
        }
        let run = plugin(&[("CNI_COMMAND", "STATUS")], &c.to_string());
        assert_eq!(assert_cni_error(&run), code::NOT_AVAILABLE as u64);
    }
}

#[test]
fn agent_hanging_up_means_try_again_later() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("hangup.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    std::thread::spawn(move || {
        // Accept, read nothing useful, close: an agent dying mid-request.
        while let Ok((s, _)) = listener.accept() {
            drop(s);
        }
    });
    let c = json!({"cniVersion": "1.1.0", "name": "ovn", "type": "ferrovn-cni",
                   "server_socket": sock.to_string_lossy()});
    let run = plugin(&pod_env("ADD", NETNS), &c.to_string());
    assert_eq!(assert_cni_error(&run), code::TRY_AGAIN_LATER as u64);
}

#[test]
fn slow_agent_times_out_with_the_configured_bound() {
    let agent = FakeAgent::start(|_| {
        std::thread::sleep(Duration::from_secs(5));
        Response::ok()
    });
    let mut c = conf(&agent, "1.1.0");
    c["agent_timeout_seconds"] = json!(0.4);
    let started = Instant::now();
    let run = plugin(&pod_env("ADD", NETNS), &c.to_string());
    let took = started.elapsed();
    assert_eq!(assert_cni_error(&run), code::AGENT_TIMEOUT as u64);
    assert!(
        took < Duration::from_secs(4),
        "the plugin gave up after {took:?}, not after the agent's 5 s"
    );
    assert!(
        run.stdout["details"]
            .as_str()
            .unwrap()
            .contains("agent_timeout_seconds")
    );
}

#[test]
fn garbage_from_the_agent_is_a_bad_reply() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("garbage.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    std::thread::spawn(move || {
        use std::io::{BufRead, BufReader, Write};
        while let Ok((s, _)) = listener.accept() {
            let mut line = String::new();
            let _ = BufReader::new(&s).read_line(&mut line);
            let _ = (&s).write_all(b"HTTP/1.1 200 OK\r\n\r\n{}\n");
        }
    });
    let c = json!({"cniVersion": "1.1.0", "name": "ovn", "type": "ferrovn-cni",
                   "server_socket": sock.to_string_lossy()});
    let run = plugin(&pod_env("ADD", NETNS), &c.to_string());
    assert_eq!(assert_cni_error(&run), code::AGENT_BAD_REPLY as u64);
}

#[test]
fn check_validates_prev_result_then_asks_the_agent() {
    let agent = FakeAgent::start(|req| match req {
        Request::Check(r) if r.prev_result.as_ref().is_some_and(|p| p.ips.len() == 2) => {
            Response::ok()
        }
        _ => Response::error(120, "check failed", "address missing"),
    });
    // A prevResult as the runtime cached it from ADD (in the 0.4.0 shape).
    let mut c = conf(&agent, "0.4.0");
    c["prevResult"] = agent_result().to_json(ferrovn_cni::spec::CniVersion::V0_4_0, false);
    let run = plugin(&pod_env("CHECK", NETNS), &c.to_string());
    assert_eq!(run.code, 0, "{} {}", run.stdout, run.stderr);
    assert!(run.raw_stdout.is_empty());

    // Missing prevResult.
    let run = plugin(&pod_env("CHECK", NETNS), &conf(&agent, "1.1.0").to_string());
    assert_eq!(assert_cni_error(&run), code::INVALID_NETCONF as u64);
    assert!(run.stdout["msg"].as_str().unwrap().contains("prevResult"));

    // Broken prevResult names the field.
    let mut c = conf(&agent, "1.1.0");
    c["prevResult"] = json!({"interfaces": [{"name": "eth0", "sandbox": NETNS}],
                             "ips": [{"address": "10.16.0.5", "interface": 0}]});
    let run = plugin(&pod_env("CHECK", NETNS), &c.to_string());
    assert_eq!(assert_cni_error(&run), code::INVALID_NETCONF as u64);
    assert!(
        run.stdout["msg"]
            .as_str()
            .unwrap()
            .contains("prevResult.ips[0].address")
    );

    // prevResult without our interface.
    let mut c = conf(&agent, "1.1.0");
    c["prevResult"] = json!({"interfaces": [{"name": "net9", "sandbox": NETNS}], "ips": []});
    let run = plugin(&pod_env("CHECK", NETNS), &c.to_string());
    assert_eq!(assert_cni_error(&run), code::INVALID_NETCONF as u64);

    // The agent's verdict is passed on.
    let mut c = conf(&agent, "1.1.0");
    c["prevResult"] = json!({"interfaces": [{"name": "eth0", "sandbox": NETNS}],
                             "ips": [{"address": "10.16.0.5/16", "interface": 0}]});
    let run = plugin(&pod_env("CHECK", NETNS), &c.to_string());
    assert_eq!(assert_cni_error(&run), 120);

    // CHECK did not exist before 0.4.0.
    let mut c = conf(&agent, "0.3.1");
    c["prevResult"] = agent_result().to_json(ferrovn_cni::spec::CniVersion::V0_3_1, false);
    let run = plugin(&pod_env("CHECK", NETNS), &c.to_string());
    assert_eq!(assert_cni_error(&run), code::INCOMPATIBLE_VERSION as u64);
}

#[test]
fn status_reflects_agent_readiness() {
    let ready = FakeAgent::start(|_| Response::ok());
    let run = plugin(
        &[("CNI_COMMAND", "STATUS")],
        &conf(&ready, "1.1.0").to_string(),
    );
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert!(run.raw_stdout.is_empty());
    assert!(matches!(ready.requests()[0], Request::Status(_)));

    let not_ready = FakeAgent::start(|_| {
        Response::error(
            code::NOT_AVAILABLE,
            "plugin not available",
            "ovn-controller not connected",
        )
    });
    let run = plugin(
        &[("CNI_COMMAND", "STATUS")],
        &conf(&not_ready, "1.1.0").to_string(),
    );
    assert_eq!(assert_cni_error(&run), code::NOT_AVAILABLE as u64);
    assert_eq!(run.stdout["details"], "ovn-controller not connected");

    // A broken agent is "not available" too, not some other code.
    let broken = FakeAgent::start(|_| Response::error(130, "boom", ""));
    let run = plugin(
        &[("CNI_COMMAND", "STATUS")],
        &conf(&broken, "1.1.0").to_string(),
    );
    assert_eq!(assert_cni_error(&run), code::NOT_AVAILABLE as u64);

    // STATUS did not exist before 1.1.0.
    let run = plugin(
        &[("CNI_COMMAND", "STATUS")],
        &conf(&ready, "1.0.0").to_string(),
    );
    assert_eq!(assert_cni_error(&run), code::INCOMPATIBLE_VERSION as u64);
}

#[test]
fn gc_forwards_valid_attachments() {
    let agent = FakeAgent::start(|_| Response::ok());
    let mut c = conf(&agent, "1.1.0");
    c["cni.dev/valid-attachments"] = json!([
        {"containerID": "aaa111", "ifname": "eth0"},
        {"containerID": "bbb222", "ifname": "net1"}
    ]);
    let env = [("CNI_COMMAND", "GC"), ("CNI_PATH", "/opt/cni/bin")];
    let run = plugin(&env, &c.to_string());
    assert_eq!(run.code, 0, "{}", run.stdout);
    let Request::Gc(g) = &agent.requests()[0] else {
        panic!()
    };
    assert_eq!(g.network, "ovn");
    let keys: Vec<(&str, &str)> = g
        .valid_attachments
        .iter()
        .map(|k| (k.container_id.as_str(), k.ifname.as_str()))
        .collect();
    assert_eq!(keys, [("aaa111", "eth0"), ("bbb222", "net1")]);

    // Without the list the plugin refuses instead of letting the agent wipe everything.
    let run = plugin(&env, &conf(&agent, "1.1.0").to_string());
    assert_eq!(assert_cni_error(&run), code::INVALID_NETCONF as u64);
    assert_eq!(agent.requests().len(), 1);
}

#[test]
fn version_lists_supported_versions() {
    let run = plugin(&[("CNI_COMMAND", "VERSION")], r#"{"cniVersion":"1.0.0"}"#);
    assert_eq!(run.code, 0);
    assert_eq!(
        run.stdout,
        json!({"cniVersion": "1.0.0", "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]})
    );
    let run = plugin(&[("CNI_COMMAND", "VERSION")], "");
    assert_eq!(run.stdout["cniVersion"], "1.1.0");
}

#[test]
fn ipam_only_mode_returns_an_ipam_result() {
    let agent = FakeAgent::start(|req| match req {
        Request::IpamAdd(_) => Response::with_result(CniResult {
            ips: vec![IpConfig {
                address: "172.30.0.20/24".parse().unwrap(),
                gateway: Some("172.30.0.1".parse().unwrap()),
                interface: None,
            }],
            routes: vec![Route {
                dst: Some("0.0.0.0/0".parse().unwrap()),
                ..Route::default()
            }],
            ..CniResult::default()
        }),
        Request::IpamDel(_) => Response::ok(),
        _ => Response::error(100, "wrong op", ""),
    });
    let c = json!({
        "cniVersion": "0.4.0", "name": "macnet", "type": "macvlan", "master": "eth1",
        "ipam": {"type": "ferrovn", "server_socket": agent.socket_str(),
                 "subnet": "attach-net", "provider": "macnet.default"}
    });
    let run = plugin(&pod_env("ADD", NETNS), &c.to_string());
    assert_eq!(run.code, 0, "{} {}", run.stdout, run.stderr);
    assert_eq!(
        run.stdout,
        json!({"cniVersion": "0.4.0",
               "ips": [{"version": "4", "address": "172.30.0.20/24", "gateway": "172.30.0.1"}],
               "routes": [{"dst": "0.0.0.0/0"}], "dns": {}})
    );
    let run = plugin(&pod_env("DEL", NETNS), &c.to_string());
    assert_eq!(run.code, 0, "{}", run.stdout);
    let reqs = agent.requests();
    let Request::IpamAdd(r) = &reqs[0] else {
        panic!("{:?}", reqs[0])
    };
    assert_eq!(r.subnet.as_deref(), Some("attach-net"));
    assert_eq!(r.provider.as_deref(), Some("macnet.default"));
    assert_eq!(r.pod.as_ref().map(|p| p.name.as_str()), Some("web-0"));
    assert!(matches!(reqs[1], Request::IpamDel(_)));
}

/// (environment, stdin, expected code, text the error must contain)
type BadInput<'a> = (Vec<(&'a str, &'a str)>, String, u32, &'a str);

#[test]
fn bad_input_gives_spec_errors_naming_the_field() {
    let agent = add_agent();
    let good = conf(&agent, "1.1.0").to_string();
    let cases: Vec<BadInput> = vec![
        (
            pod_env("ADD", NETNS),
            "{not json".into(),
            code::DECODE_FAILURE,
            "JSON",
        ),
        (
            pod_env("ADD", NETNS),
            "".into(),
            code::DECODE_FAILURE,
            "stdin",
        ),
        (
            pod_env("ADD", NETNS),
            "[1,2,3]".into(),
            code::DECODE_FAILURE,
            "object",
        ),
        (vec![], good.clone(), code::INVALID_ENV, "CNI_COMMAND"),
        (
            vec![("CNI_COMMAND", "ADD")],
            good.clone(),
            code::INVALID_ENV,
            "CNI_NETNS",
        ),
        (
            vec![
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "x1"),
                ("CNI_NETNS", NETNS),
            ],
            good.clone(),
            code::INVALID_ENV,
            "CNI_IFNAME",
        ),
        (
            pod_env("ADD", NETNS)
                .into_iter()
                .map(|(k, v)| {
                    if k == "CNI_ARGS" {
                        (k, "K8S_POD_NAME")
                    } else {
                        (k, v)
                    }
                })
                .collect(),
            good.clone(),
            code::INVALID_ENV,
            "CNI_ARGS",
        ),
        (
            pod_env("ADD", NETNS)
                .into_iter()
                .map(|(k, v)| {
                    if k == "CNI_ARGS" {
                        (k, "FOO=1;K8S_POD_NAME=a")
                    } else {
                        (k, v)
                    }
                })
                .collect(),
            good.clone(),
            code::INVALID_ENV,
            "FOO",
        ),
        (
            pod_env("ADD", NETNS)
                .into_iter()
                .map(|(k, v)| {
                    if k == "CNI_IFNAME" {
                        (k, "way-too-long-ifname")
                    } else {
                        (k, v)
                    }
                })
                .collect(),
            good.clone(),
            code::INVALID_ENV,
            "CNI_IFNAME",
        ),
        (
            pod_env("FROB", NETNS),
            good.clone(),
            code::INVALID_ENV,
            "CNI_COMMAND",
        ),
        (
            pod_env("ADD", NETNS),
            good.replace("\"1.1.0\"", "\"0.2.0\""),
            code::INCOMPATIBLE_VERSION,
            "0.2.0",
        ),
        (
            pod_env("ADD", NETNS),
            good.replace("\"mtu\":1400", "\"mtu\":\"big\""),
            code::INVALID_NETCONF,
            "mtu",
        ),
    ];
    for (env, stdin, want, needle) in cases {
        let run = plugin(&env, &stdin);
        let got = assert_cni_error(&run);
        assert_eq!(
            got, want as u64,
            "env {env:?} stdin {stdin:?}: {}",
            run.stdout
        );
        let text = format!("{} {}", run.stdout["msg"], run.stdout["details"]);
        assert!(text.contains(needle), "{text} should name {needle}");
    }
    assert!(
        agent.requests().is_empty(),
        "no bad input reached the agent"
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
    #[test]
    fn random_stdin_to_the_binary_gives_well_formed_errors(
        bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
        cmd in proptest::sample::select(vec!["ADD", "DEL", "CHECK", "STATUS", "GC"]),
    ) {
        let run = exec(std::path::Path::new(BIN), &[], &pod_env(cmd, NETNS), &bytes);
        proptest::prop_assert_ne!(run.code, 0);
        proptest::prop_assert!(run.stdout["code"].is_u64());
        proptest::prop_assert!(run.stdout["msg"].is_string());
        proptest::prop_assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    }
}
