//! Prometheus rendering of offload truth: `ferrovn_pod_flows_offloaded{pod,interface,reason}`
//! is 1 when every datapath flow of the pod's representor is in hardware, else 0 with the
//! first reason as a label; `ferrovn_pod_flows` counts flows by state.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::flows::{OffloadStatus, PortOffloadReport};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OffloadLabels {
    pod: String,
    interface: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FlowLabels {
    pod: String,
    interface: String,
    state: String,
}

/// One pod interface and its report (`pod` as `namespace/name`).
#[derive(Debug, Clone)]
pub struct PodOffload<'a> {
    pub pod: &'a str,
    pub report: &'a PortOffloadReport,
}

/// Renders the offload metrics in the Prometheus / OpenMetrics text format.
pub fn render_offload_metrics(pods: &[PodOffload<'_>]) -> Result<String, std::fmt::Error> {
    let offloaded = Family::<OffloadLabels, Gauge>::default();
    let flows = Family::<FlowLabels, Gauge>::default();
    let mut registry = Registry::with_prefix("ferrovn");
    registry.register(
        "pod_flows_offloaded",
        "1 when all datapath flows of the pod interface are offloaded to hardware, else 0 (reason label says why)",
        offloaded.clone(),
    );
    registry.register(
        "pod_flows",
        "Datapath flows of the pod interface by offload state",
        flows.clone(),
    );
    for p in pods {
        let r = p.report;
        let reason = r
            .reasons
            .first()
            .map(|x| x.label())
            .unwrap_or("")
            .to_string();
        offloaded
            .get_or_create(&OffloadLabels {
                pod: p.pod.to_string(),
                interface: r.port.clone(),
                reason,
            })
            .set(i64::from(r.status == OffloadStatus::Offloaded));
        for (state, n) in [
            ("offloaded", r.offloaded_flows),
            ("software_or_partial", r.flows - r.offloaded_flows),
        ] {
            flows
                .get_or_create(&FlowLabels {
                    pod: p.pod.to_string(),
                    interface: r.port.clone(),
                    state: state.to_string(),
                })
                .set(n as i64);
        }
    }
    let mut out = String::new();
    encode(&mut out, &registry)?;
    Ok(out)
}
