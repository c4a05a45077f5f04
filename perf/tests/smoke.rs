//! `ferrovn-perf --smoke` (as root): the outputs are produced and well-formed: JSON parses and
//! has the environment and every scenario with samples or a reason; the Markdown table has a
//! row for every scenario; each SVG is XML with an <svg> root and data elements.

use std::path::Path;
use std::process::Command;

use ferrovn_testkit::require::{Need, REQUIRE_ALL, require, require_all};

/// One row of each smoke family: loopback, bridge plugin, raw testpmd, IPAM.
const SMOKE_ROWS: [&str; 7] = [
    "loopback/host/tcp",
    "loopback/host/udp-flood/64",
    "loopback/host/ping",
    "bridge-cni/same-node/tcp",
    "bridge-cni/same-node/udp-flood/1500",
    "raw-testpmd/same-node/testpmd/64",
    "ipam/local/ops",
];

/// Minimal XML well-formedness: balanced start/end tags, attributes quoted, one root element.
/// Returns the root element's name.
fn xml_root(text: &str) -> Result<String, String> {
    let mut stack: Vec<String> = Vec::new();
    let mut root: Option<String> = None;
    let mut rest = text;
    while let Some(start) = rest.find('<') {
        let between = &rest[..start];
        if stack.is_empty() && root.is_some() && !between.trim().is_empty() {
            return Err(format!("text after the root element: {between:?}"));
        }
        rest = &rest[start..];
        let end = rest.find('>').ok_or("unterminated tag")?;
        let tag = &rest[1..end];
        rest = &rest[end + 1..];
        if tag.starts_with('?') || tag.starts_with('!') {
            continue;
        }
        if let Some(name) = tag.strip_prefix('/') {
            let open = stack
                .pop()
                .ok_or(format!("</{name}> without a start tag"))?;
            if open != name.trim() {
                return Err(format!("<{open}> closed by </{name}>"));
            }
            continue;
        }
        if !tag.matches('"').count().is_multiple_of(2) {
            return Err(format!("unbalanced quotes in <{tag}>"));
        }
        let name = tag
            .split_whitespace()
            .next()
            .ok_or("empty tag")?
            .trim_end_matches('/')
            .to_string();
        if stack.is_empty() {
            if root.is_some() {
                return Err(format!("second root element <{name}>"));
            }
            root = Some(name.clone());
        }
        if !tag.ends_with('/') {
            stack.push(name);
        }
    }
    if !stack.is_empty() {
        return Err(format!("unclosed elements {stack:?}"));
    }
    root.ok_or_else(|| "no element".into())
}

#[test]
fn xml_checker_catches_bad_documents() {
    assert_eq!(
        xml_root("<?xml version=\"1.0\"?><svg a=\"1\"><g/></svg>"),
        Ok("svg".into())
    );
    assert!(xml_root("<svg><g></svg>").is_err());
    assert!(xml_root("<svg></svg><svg></svg>").is_err());
    assert!(xml_root("<svg a=\"1></svg>").is_err());
}

#[test]
fn smoke_run_writes_well_formed_outputs() {
    let needs = [
        Need::Root,
        Need::Tool("iperf3"),
        Need::Tool("dpdk-testpmd"),
        Need::Program("/usr/lib/cni/bridge".into()),
        Need::Hugepages(64),
    ];
    if !require("smoke_run_writes_well_formed_outputs", &needs) {
        return;
    }
    let out = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferrovn-perf"))
        .args(["--smoke", "--out"])
        .arg(out.path())
        .spawn()
        .expect("run ferrovn-perf");
    // names of everything the run creates start with fvp-<tag>-
    let prefix = format!("fvp-{:x}-", child.id() % 0x10000);
    let status = child.wait().expect("wait");
    assert!(status.success(), "ferrovn-perf --smoke failed");

    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("results.json")).expect("results.json"),
    )
    .expect("results.json parses");
    let env = &json["environments"][0];
    for key in ["cpu_model", "kernel", "dpdk", "ovs", "ovn", "git_commit"] {
        assert!(
            env[key].as_str().is_some_and(|s| !s.is_empty()),
            "environment.{key}"
        );
    }
    assert!(env["cores"].as_u64().is_some_and(|c| c >= 1));
    let rows = json["measurements"].as_array().expect("measurements");
    let ids: Vec<&str> = rows.iter().filter_map(|m| m["id"].as_str()).collect();
    for want in SMOKE_ROWS {
        assert!(ids.contains(&want), "missing row {want} in {ids:?}");
    }
    if require_all() {
        // in CI every smoke family must really have run: "unavailable" is a missing tool
        for want in SMOKE_ROWS {
            let m = rows.iter().find(|m| m["id"] == want).expect("row");
            assert_eq!(
                m["status"]["state"], "ok",
                "{want} did not run ({REQUIRE_ALL}=1): {}",
                m["status"]
            );
        }
    }
    for m in rows {
        let state = m["status"]["state"].as_str().expect("status");
        if state == "ok" {
            let samples = m["samples"].as_array().expect("samples");
            assert!(!samples.is_empty(), "{} has no samples", m["id"]);
            assert!(
                m["summary"]["median"].as_f64().is_some(),
                "{} summary",
                m["id"]
            );
        } else {
            assert!(
                m["status"]["reason"]
                    .as_str()
                    .or(m["status"]["error"].as_str())
                    .is_some_and(|r| !r.is_empty()),
                "{} is {state} without a reason",
                m["id"]
            );
        }
    }
    // the kernel baselines must really have measured something here
    for id in [
        "loopback/host/tcp",
        "bridge-cni/same-node/ping",
        "ipam/local/ops",
    ] {
        let m = rows.iter().find(|m| m["id"] == id).expect("row");
        assert_eq!(m["status"]["state"], "ok", "{id}: {}", m["status"]);
        assert!(
            m["summary"]["median"].as_f64().is_some_and(|v| v > 0.0),
            "{id}"
        );
    }

    let md = std::fs::read_to_string(out.path().join("summary.md")).expect("summary.md");
    for id in &ids {
        assert!(
            md.lines().any(|l| l.starts_with(&format!("| `{id}`"))),
            "summary.md has no row for {id}"
        );
    }
    assert!(md.contains("| scenario | frame | value |"));
    // a scenario beside its baseline as a ratio
    assert!(
        md.lines()
            .any(|l| l.starts_with("| `bridge-cni/same-node/tcp`") && l.contains('×')),
        "bridge row without a ratio to loopback"
    );

    let svgs: Vec<_> = std::fs::read_dir(out.path())
        .expect("out dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "svg"))
        .collect();
    let names: Vec<String> = svgs
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    for want in [
        "dpdk-rate-vs-frame.svg",
        "kernel-rate-vs-frame.svg",
        "latency-cdf.svg",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "missing {want} in {names:?}"
        );
    }
    for p in &svgs {
        let text = std::fs::read_to_string(p).expect("svg");
        assert_eq!(xml_root(&text).as_deref(), Ok("svg"), "{}", p.display());
        assert!(
            text.contains("<polyline class=\"data\"") || text.contains("<circle class=\"data\""),
            "{} has no data elements",
            p.display()
        );
    }
    // nothing left behind: namespaces, DPDK runtime dirs, hugetlbfs mounts of this run
    let netns = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["netns", "list"])
            .output()
            .expect("ip")
            .stdout,
    )
    .into_owned();
    assert!(!netns.contains(&prefix), "namespaces left: {netns}");
    let run_dirs: Vec<String> = std::fs::read_dir("/var/run/dpdk")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        !run_dirs.iter().any(|d| d.starts_with(&prefix)),
        "DPDK runtime dirs left: {run_dirs:?}"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    assert!(!mounts.contains(&prefix), "mounts left");
    assert!(!Path::new(&std::env::temp_dir().join(format!("{prefix}huge-raw"))).exists());
}
