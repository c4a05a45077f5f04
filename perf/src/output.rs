//! Writes a report directory: results.json (every sample + environment), summary.md, SVG plots.

use crate::model::{Report, Status};
use crate::stats::cdf;
use crate::svg::{Series, line_chart};
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Rate vs frame size: one series per `path placement` among rows of `test`.
pub fn rate_series(report: &Report, test: &str) -> Vec<Series> {
    let mut by: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for m in report.measurements.iter().filter(|m| m.test == test) {
        let (Some(f), Some(s), Status::Ok) = (m.frame_bytes, m.summary, &m.status) else {
            continue;
        };
        by.entry(format!("{} {}", m.path, m.placement))
            .or_default()
            .push((f64::from(f), s.median));
    }
    by.into_iter()
        .map(|(label, mut points)| {
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            Series { label, points }
        })
        .collect()
}

/// Latency CDFs of every row of `test`.
pub fn cdf_series(report: &Report, test: &str) -> Vec<Series> {
    report
        .measurements
        .iter()
        .filter(|m| m.test == test && m.status == Status::Ok && !m.samples.is_empty())
        .map(|m| Series {
            label: format!("{} {}", m.path, m.placement),
            points: cdf(&m.samples),
        })
        .collect()
}

/// file name, title, x label, y label, series, staircase
type Plot = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    Vec<Series>,
    bool,
);

/// Writes everything; returns the files written.
pub fn write(report: &Report, dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut files = Vec::new();
    let json = dir.join("results.json");
    std::fs::write(&json, serde_json::to_vec_pretty(report)?).context("results.json")?;
    files.push(json);
    let md = dir.join("summary.md");
    std::fs::write(&md, report.markdown()).context("summary.md")?;
    files.push(md);
    let plots: [Plot; 4] = [
        (
            "dpdk-rate-vs-frame.svg",
            "DPDK pods: packet rate vs frame size (testpmd)",
            "frame size (B)",
            "Mpps",
            rate_series(report, "testpmd"),
            false,
        ),
        (
            "kernel-rate-vs-frame.svg",
            "Kernel pods: UDP packet rate vs frame size",
            "frame size (B)",
            "Mpps received",
            rate_series(report, "udp-flood"),
            false,
        ),
        (
            "latency-cdf.svg",
            "Ping RTT CDF",
            "RTT (ms)",
            "fraction of pings",
            cdf_series(report, "ping"),
            true,
        ),
        (
            "add-ready-cdf.svg",
            "CNI ADD -> ready latency CDF",
            "ms",
            "fraction of pods",
            cdf_series(report, "add-ready"),
            true,
        ),
    ];
    for (name, title, x, y, series, step) in plots {
        if series.iter().all(|s| s.points.is_empty()) {
            continue;
        }
        let p = dir.join(name);
        std::fs::write(&p, line_chart(title, x, y, &series, step))
            .with_context(|| name.to_string())?;
        files.push(p);
    }
    Ok(files)
}

/// Joins result directories of several nodes into one report.
pub fn merge(dirs: &[PathBuf]) -> Result<Report> {
    let mut merged: Option<Report> = None;
    for d in dirs {
        let p = d.join("results.json");
        let text = std::fs::read_to_string(&p).with_context(|| format!("{}", p.display()))?;
        let r: Report =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))?;
        match &mut merged {
            None => merged = Some(r),
            Some(m) => {
                let node = r
                    .environments
                    .first()
                    .map(|e| e.node.clone())
                    .unwrap_or_default();
                m.environments.extend(r.environments);
                m.duration_secs = m.duration_secs.max(r.duration_secs);
                for x in r.measurements {
                    // the same row from two nodes: keep both, the second one renamed
                    let mut x = x;
                    if m.find(&x.id).is_some() {
                        x.id = format!("{}@{node}", x.id);
                    }
                    m.measurements.push(x);
                }
            }
        }
    }
    merged.context("no result directories given")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Environment, Measurement};

    fn report(node: &str, rows: Vec<Measurement>) -> Report {
        Report {
            mode: "full".into(),
            environments: vec![Environment {
                node: node.into(),
                ..Environment::default()
            }],
            config: serde_json::Value::Null,
            duration_secs: 3.0,
            measurements: rows,
        }
    }

    #[test]
    fn write_then_merge_two_nodes() {
        let a = tempfile::tempdir().expect("tmp");
        let b = tempfile::tempdir().expect("tmp");
        let out = tempfile::tempdir().expect("tmp");
        let row = |p: &str| {
            Measurement::new(p, "same-node", "testpmd", Some(64), "Mpps")
                .with_samples(vec![1.0, 2.0])
        };
        write(&report("dpdk-1", vec![row("raw-testpmd")]), a.path()).expect("write a");
        let files = write(
            &report("kernel-1", vec![row("raw-testpmd"), row("ovs-dpdk")]),
            b.path(),
        )
        .expect("write b");
        assert!(files.iter().any(|f| f.ends_with("dpdk-rate-vs-frame.svg")));
        // no ping rows: no latency plot
        assert!(!files.iter().any(|f| f.ends_with("latency-cdf.svg")));
        let m = merge(&[a.path().to_path_buf(), b.path().to_path_buf()]).expect("merge");
        assert_eq!(m.environments.len(), 2);
        let ids: Vec<&str> = m.measurements.iter().map(|x| x.id.as_str()).collect();
        assert_eq!(
            ids,
            vec![
                "raw-testpmd/same-node/testpmd/64",
                "raw-testpmd/same-node/testpmd/64@kernel-1",
                "ovs-dpdk/same-node/testpmd/64"
            ]
        );
        write(&m, out.path()).expect("write merged");
        assert!(merge(&[out.path().join("missing")]).is_err());
        assert!(merge(&[]).is_err());
    }
}
