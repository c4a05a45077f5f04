//! Health check node ports (dataplane/src/health_node_port.rs): which count a node serves,
//! from the rows the controller's Service planner writes, and the HTTP answers a load balancer
//! (or the upstream e2e suite's `curl`) gets from a real listener.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use ferrovn_control::plan::services::{HEALTH_CHECK_LOCAL_OPTION, HEALTH_CHECK_NODE_PORT_OPTION};
use ferrovn_dataplane::health_node_port::{self, HealthPort, HealthServer};
use ferrovn_dataplane::nodeport::LbRow;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn row(name: &str, protocol: &str, port: &str, local: &str) -> LbRow {
    LbRow {
        name: name.into(),
        protocol: protocol.into(),
        vips: BTreeMap::new(),
        options: BTreeMap::from([
            (HEALTH_CHECK_NODE_PORT_OPTION.to_string(), port.to_string()),
            (HEALTH_CHECK_LOCAL_OPTION.to_string(), local.to_string()),
        ]),
    }
}

fn addrs(a: &[&str]) -> BTreeSet<IpAddr> {
    a.iter().map(|s| s.parse().unwrap()).collect()
}

#[test]
fn each_node_serves_the_count_listed_for_its_own_addresses() {
    // the agent reads the options the controller writes
    assert_eq!(health_node_port::PORT_OPTION, HEALTH_CHECK_NODE_PORT_OPTION);
    assert_eq!(health_node_port::LOCAL_OPTION, HEALTH_CHECK_LOCAL_OPTION);
    let counts = "172.18.0.2=2,100.64.0.2=2,172.18.0.3=0,100.64.0.3=0";
    let lbs = vec![
        row("svc:web/front:tcp", "tcp", "32100", counts),
        // the same Service's UDP row says the same: one listener
        row("svc:web/front:udp", "udp", "32100", counts),
        row("svc:web/other:tcp", "tcp", "32101", "172.18.0.3=1"),
        // a row without a health check node port
        LbRow {
            name: "svc:web/plain:tcp".into(),
            protocol: "tcp".into(),
            vips: BTreeMap::new(),
            options: BTreeMap::new(),
        },
    ];
    let hp = |service: &str, n: u32| HealthPort {
        service: service.into(),
        local_endpoints: n,
    };
    assert_eq!(
        health_node_port::plan(&lbs, &addrs(&["172.18.0.2", "100.64.0.2", "10.0.0.1"])),
        BTreeMap::from([(32100, hp("web/front", 2)), (32101, hp("web/other", 0))])
    );
    assert_eq!(
        health_node_port::plan(&lbs, &addrs(&["172.18.0.3"])),
        BTreeMap::from([(32100, hp("web/front", 0)), (32101, hp("web/other", 1))])
    );
}

/// `GET /healthz` on 127.0.0.1:`port`: (status code, body).
async fn get(port: u16) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await?;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: node\r\nUser-Agent: curl\r\n\r\n")
        .await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {out:?}"));
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string());
    Ok((code, body.unwrap_or_default()))
}

#[tokio::test]
async fn a_health_check_node_port_answers_200_with_ready_endpoints_503_without_and_closes() {
    let port = ferrovn_testkit::names::free_port().unwrap();
    let mut server = HealthServer::new(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let plan = |n: u32| {
        BTreeMap::from([(
            port,
            HealthPort {
                service: "web/front".into(),
                local_endpoints: n,
            },
        )])
    };
    assert!(server.apply(plan(1)).await.is_empty());
    assert_eq!(server.ports(), vec![port]);
    let (code, body) = get(port).await.unwrap();
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["localEndpoints"], 1);
    assert_eq!(v["service"]["namespace"], "web");
    assert_eq!(v["service"]["name"], "front");

    // the last ready endpoint starts terminating: the same listener says 503 at once
    assert!(server.apply(plan(0)).await.is_empty());
    let (code, body) = get(port).await.unwrap();
    assert_eq!(code, 503, "{body}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["localEndpoints"],
        0
    );

    // the Service goes: the port is closed
    assert!(server.apply(BTreeMap::new()).await.is_empty());
    assert!(server.ports().is_empty());
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(port).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "port {port} still answers after its Service went"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_port_taken_by_another_process_is_reported_once_and_retried() {
    let port = ferrovn_testkit::names::free_port().unwrap();
    let taken = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
    let mut server = HealthServer::new(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let plan = BTreeMap::from([(
        port,
        HealthPort {
            service: "web/front".into(),
            local_endpoints: 1,
        },
    )]);
    let failed = server.apply(plan.clone()).await;
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].0, port);
    // the same failure is not reported again
    assert!(server.apply(plan.clone()).await.is_empty());
    assert!(server.ports().is_empty());
    // once the port is free, the next pass serves it
    drop(taken);
    assert!(server.apply(plan).await.is_empty());
    assert_eq!(get(port).await.unwrap().0, 200);
}
