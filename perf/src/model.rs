//! What a run produces: measurements with every sample, the environment, and the Markdown
//! summary (each scenario beside its baseline as a ratio).

use crate::stats::{Summary, summarize};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Whether a measurement has numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum Status {
    Ok,
    /// Cannot run in this environment (reason says why); never a number.
    Unavailable {
        reason: String,
    },
    /// Tried and failed (error text).
    Failed {
        error: String,
    },
}

/// One scenario row: a path, a placement, a test and optionally a frame size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    /// Unique, stable: `<path>/<placement>/<test>[/<frame>]`.
    pub id: String,
    /// Path id (`ovs-veth`, `ovs-dpdk`, `vhost-helper`, `raw-testpmd`, `bridge-cni`, `loopback`,
    /// `ferrovn-cni`, `ipam`).
    pub path: String,
    /// `same-node`, `cross-node`, `host`, `local`.
    pub placement: String,
    /// `udp-flood`, `tcp`, `udp`, `ping`, `testpmd`, `add-ready`, `pods-per-s`, `ops`.
    pub test: String,
    pub frame_bytes: Option<u32>,
    pub unit: String,
    pub higher_is_better: bool,
    /// Every sample (per repetition, per 1 s window, or per packet for latency).
    pub samples: Vec<f64>,
    pub summary: Option<Summary>,
    /// Id of the baseline measured in the same run.
    pub baseline: Option<String>,
    pub is_baseline: bool,
    /// Busy or pinned cores this scenario used.
    pub cores: u32,
    pub note: String,
    pub status: Status,
}

impl Measurement {
    pub fn new(path: &str, placement: &str, test: &str, frame: Option<u32>, unit: &str) -> Self {
        let id = match frame {
            Some(f) => format!("{path}/{placement}/{test}/{f}"),
            None => format!("{path}/{placement}/{test}"),
        };
        Measurement {
            id,
            path: path.into(),
            placement: placement.into(),
            test: test.into(),
            frame_bytes: frame,
            unit: unit.into(),
            higher_is_better: !matches!(unit, "ms" | "us"),
            samples: Vec::new(),
            summary: None,
            baseline: None,
            is_baseline: false,
            cores: 0,
            note: String::new(),
            status: Status::Ok,
        }
    }

    pub fn baseline_of(mut self, id: impl Into<String>) -> Self {
        self.baseline = Some(id.into());
        self
    }

    pub fn as_baseline(mut self) -> Self {
        self.is_baseline = true;
        self
    }

    pub fn cores(mut self, n: u32) -> Self {
        self.cores = n;
        self
    }

    pub fn note(mut self, n: impl Into<String>) -> Self {
        self.note = n.into();
        self
    }

    /// Sets the samples (and summary); no finite sample makes it `Failed`.
    pub fn with_samples(mut self, samples: Vec<f64>) -> Self {
        self.summary = summarize(&samples);
        if self.summary.is_none() && self.status == Status::Ok {
            self.status = Status::Failed {
                error: "no samples".into(),
            };
        }
        self.samples = samples;
        self
    }

    pub fn unavailable(mut self, reason: impl Into<String>) -> Self {
        self.status = Status::Unavailable {
            reason: reason.into(),
        };
        self
    }

    pub fn failed(mut self, error: impl std::fmt::Display) -> Self {
        self.status = Status::Failed {
            error: format!("{error:#}"),
        };
        self
    }
}

/// The machine and software the numbers came from.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Environment {
    pub hostname: String,
    pub cpu_model: String,
    pub cores: usize,
    pub memory_mib: u64,
    pub hugepages_total_2m: u64,
    pub hugepages_free_2m: u64,
    pub kernel: String,
    pub dpdk: String,
    pub ovs: String,
    pub ovn: String,
    pub iperf3: String,
    pub git_commit: String,
    pub started_utc: String,
    /// Which node of a bare-metal config ran this part (`local` in quick/smoke mode).
    pub node: String,
}

/// A whole run (or the merge of several nodes' runs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub mode: String,
    pub environments: Vec<Environment>,
    pub config: serde_json::Value,
    pub duration_secs: f64,
    pub measurements: Vec<Measurement>,
}

fn fmt_value(v: f64) -> String {
    let a = v.abs();
    if a >= 1000.0 {
        format!("{v:.0}")
    } else if a >= 100.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// Escapes `|` so free text cannot break a table row.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

impl Report {
    pub fn find(&self, id: &str) -> Option<&Measurement> {
        self.measurements.iter().find(|m| m.id == id)
    }

    /// scenario median / baseline median (both in the same unit), when both have numbers.
    pub fn ratio(&self, m: &Measurement) -> Option<f64> {
        let b = self.find(m.baseline.as_deref()?)?;
        let (s, bs) = (m.summary?, b.summary?);
        (bs.median != 0.0 && b.unit == m.unit).then(|| s.median / bs.median)
    }

    /// The Markdown summary: one row per measurement, grouped by test.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "# ferrovn-perf results ({} mode, {:.0} s)\n\n",
            self.mode, self.duration_secs
        ));
        for e in &self.environments {
            out.push_str(&format!(
                "- node `{}`: {} ({} cores, {} MiB), kernel {}, DPDK {}, OVS {}, OVN {}, hugepages {}/{} free, commit {}, {}\n",
                cell(&e.node),
                cell(&e.cpu_model),
                e.cores,
                e.memory_mib,
                cell(&e.kernel),
                cell(&e.dpdk),
                cell(&e.ovs),
                cell(&e.ovn),
                e.hugepages_free_2m,
                e.hugepages_total_2m,
                cell(&e.git_commit),
                cell(&e.started_utc),
            ));
        }
        out.push_str(
            "\nValue = median over samples (min–max); latency rows also give p99. \
             Ratio = scenario median / baseline median measured in this run \
             (throughput: higher is better; latency: lower is better). \
             Cores = busy or pinned cores the scenario used.\n\n",
        );
        let mut tests: BTreeMap<&str, Vec<&Measurement>> = BTreeMap::new();
        for m in &self.measurements {
            tests.entry(m.test.as_str()).or_default().push(m);
        }
        for (test, rows) in tests {
            out.push_str(&format!("## {test}\n\n"));
            out.push_str(
                "| scenario | frame | value | min–max | p99 | unit | baseline | baseline value | ratio | cores | notes |\n",
            );
            out.push_str("|---|---|---|---|---|---|---|---|---|---|---|\n");
            for m in rows {
                let frame = m.frame_bytes.map(|f| format!("{f} B")).unwrap_or_default();
                let (value, range, p99) = match (&m.status, m.summary) {
                    (Status::Ok, Some(s)) => (
                        fmt_value(s.median),
                        format!("{}–{}", fmt_value(s.min), fmt_value(s.max)),
                        if m.higher_is_better {
                            String::new()
                        } else {
                            fmt_value(s.p99)
                        },
                    ),
                    (Status::Unavailable { reason }, _) => (
                        format!("unavailable: {}", cell(reason)),
                        String::new(),
                        String::new(),
                    ),
                    (Status::Failed { error }, _) => (
                        format!("failed: {}", cell(error)),
                        String::new(),
                        String::new(),
                    ),
                    (Status::Ok, None) => ("no samples".into(), String::new(), String::new()),
                };
                let base = m.baseline.as_deref().and_then(|b| self.find(b));
                let base_name = match (m.is_baseline, &m.baseline) {
                    (true, None) => "(is a baseline)".to_string(),
                    (_, Some(b)) => format!("`{b}`"),
                    (false, None) => "—".into(),
                };
                let base_val = base
                    .and_then(|b| b.summary)
                    .map(|s| fmt_value(s.median))
                    .unwrap_or_default();
                let ratio = self
                    .ratio(m)
                    .map(|r| {
                        if r.abs() < 0.1 {
                            format!("{r:.3}×")
                        } else {
                            format!("{r:.2}×")
                        }
                    })
                    .unwrap_or_default();
                let name = if m.is_baseline {
                    format!("`{}` (baseline)", m.id)
                } else {
                    format!("`{}`", m.id)
                };
                out.push_str(&format!(
                    "| {name} | {frame} | {value} | {range} | {p99} | {} | {base_name} | {base_val} | {ratio} | {} | {} |\n",
                    m.unit,
                    m.cores,
                    cell(&m.note)
                ));
            }
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(ms: Vec<Measurement>) -> Report {
        Report {
            mode: "smoke".into(),
            environments: vec![Environment::default()],
            config: serde_json::Value::Null,
            duration_secs: 1.0,
            measurements: ms,
        }
    }

    #[test]
    fn ratio_and_rows() {
        let b = Measurement::new("bridge-cni", "same-node", "tcp", None, "Gbit/s")
            .as_baseline()
            .with_samples(vec![10.0, 12.0, 8.0]);
        let m = Measurement::new("ovs-veth", "same-node", "tcp", None, "Gbit/s")
            .baseline_of("bridge-cni/same-node/tcp")
            .note("a | b")
            .with_samples(vec![5.0]);
        let u = Measurement::new("ovs-dpdk", "cross-node", "testpmd", Some(64), "Mpps")
            .unavailable("needs 4 cores");
        let r = report(vec![b, m.clone(), u]);
        assert_eq!(r.ratio(&m), Some(0.5));
        let md = r.markdown();
        assert!(md.contains("| `ovs-veth/same-node/tcp` |"));
        assert!(md.contains("0.50×"));
        let tiny = Measurement::new("ovs-veth", "same-node", "tcp", None, "Gbit/s")
            .baseline_of("bridge-cni/same-node/tcp")
            .with_samples(vec![0.05]);
        assert!(
            report(vec![r.measurements[0].clone(), tiny])
                .markdown()
                .contains("0.005×")
        );
        assert!(md.contains("unavailable: needs 4 cores"));
        assert!(md.contains("a \\| b"));
        // every row has the same number of cells as the header
        for line in md.lines().filter(|l| l.starts_with("| `")) {
            assert_eq!(line.replace("\\|", "").matches('|').count(), 12, "{line}");
        }
    }

    #[test]
    fn no_samples_is_failed_and_has_no_ratio() {
        let m = Measurement::new("x", "y", "z", None, "Mpps").with_samples(vec![f64::NAN]);
        assert!(matches!(m.status, Status::Failed { .. }));
        let r = report(vec![m.clone()]);
        assert_eq!(r.ratio(&m), None);
        assert!(m.higher_is_better);
        assert!(!Measurement::new("x", "y", "ping", None, "ms").higher_is_better);
    }
}
