//! Offload truth: parse `ovs-appctl dpctl/dump-flows -m [type=offloaded|ovs|...]` and say per
//! port (representor) whether its datapath flows are offloaded, and why not.
//!
//! Line format (OVS lib/dpctl.c `format_dpif_flow`, lib/dpif.c `dpif_flow_stats_format`):
//! `ufid:<uuid>, <key,...>, packets:<n>, bytes:<n>, used:<%.3fs|never>[, flags:<tcp>]
//! [, offloaded:yes|partial][, dp:<ovs|tc|dpdk>], actions:<actions>[, dp-extra-info:<...>]`.
//! The userspace datapath adds header lines (`flow-dump from the main thread:`, `flow-dump from
//! pmd on cpu core: N`), which carry no flow.

use std::collections::BTreeMap;

use crate::devlink::EswitchMode;

/// How far a flow is offloaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offload {
    /// Only in the OVS datapath (no `offloaded:` field).
    None,
    /// Matching in hardware, actions in software (`offloaded:partial`, DPDK rte_flow mark).
    Partial,
    /// Entirely in hardware / tc (`offloaded:yes`).
    Full,
}

/// One datapath flow.
#[derive(Debug, Clone, PartialEq)]
pub struct DpFlow {
    pub ufid: Option<String>,
    /// The `in_port(...)` value: a port name with `-m`/names, else an odp port number.
    pub in_port: Option<String>,
    pub packets: u64,
    pub bytes: u64,
    /// Seconds since last use, `None` for `never`.
    pub used_secs: Option<f64>,
    pub offload: Offload,
    /// `dp:` layer: `ovs`, `tc`, `dpdk`.
    pub dp: Option<String>,
    pub actions: String,
}

/// A line that looks like a flow but is not one OVS would print.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("dump-flows line {line_number}: {reason}: {line:?}")]
pub struct FlowParseError {
    pub line_number: usize,
    pub line: String,
    pub reason: String,
}

/// Byte offsets of `,` at parenthesis depth 0.
fn top_level_commas(s: &str) -> Vec<usize> {
    let mut depth = 0i32;
    let mut out = Vec::new();
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => out.push(i),
            _ => {}
        }
    }
    out
}

/// Parses a whole dump; header and blank lines are skipped.
pub fn parse_dump_flows(text: &str) -> Result<Vec<DpFlow>, FlowParseError> {
    let mut flows = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with("flow-dump from") {
            continue;
        }
        flows.push(parse_flow_line(line).map_err(|reason| FlowParseError {
            line_number: i + 1,
            line: line.to_string(),
            reason,
        })?);
    }
    Ok(flows)
}

fn parse_flow_line(line: &str) -> Result<DpFlow, String> {
    // Split into fields at depth-0 commas; "actions:" starts the tail that may hold more commas.
    let commas = top_level_commas(line);
    let mut starts = vec![0];
    starts.extend(commas.iter().map(|c| c + 1));
    let actions_at = starts
        .iter()
        .copied()
        .find(|&s| line[s..].trim_start().starts_with("actions:"))
        .ok_or("no actions: field")?;
    let head = &line[..actions_at];
    let mut tail = line[actions_at..].trim_start()["actions:".len()..].to_string();
    if let Some(extra) = tail.find(", dp-extra-info:") {
        tail.truncate(extra);
    }

    let mut flow = DpFlow {
        ufid: None,
        in_port: None,
        packets: 0,
        bytes: 0,
        used_secs: None,
        offload: Offload::None,
        dp: None,
        actions: tail.trim().to_string(),
    };
    let (mut saw_packets, mut saw_bytes, mut saw_used) = (false, false, false);
    let head_commas = top_level_commas(head);
    let mut from = 0;
    for end in head_commas.iter().copied().chain([head.len()]) {
        let field = head[from..end].trim();
        from = end + 1;
        if field.is_empty() {
            continue;
        }
        if let Some(v) = field.strip_prefix("ufid:") {
            flow.ufid = Some(v.to_string());
        } else if let Some(v) = field
            .strip_prefix("in_port(")
            .and_then(|v| v.strip_suffix(')'))
        {
            flow.in_port = Some(v.to_string());
        } else if let Some(v) = field.strip_prefix("packets:") {
            flow.packets = v
                .parse()
                .map_err(|_| format!("packets {v:?} is not a number"))?;
            saw_packets = true;
        } else if let Some(v) = field.strip_prefix("bytes:") {
            flow.bytes = v
                .parse()
                .map_err(|_| format!("bytes {v:?} is not a number"))?;
            saw_bytes = true;
        } else if let Some(v) = field.strip_prefix("used:") {
            flow.used_secs = match v {
                "never" => None,
                _ => Some(
                    v.strip_suffix('s')
                        .and_then(|n| n.parse().ok())
                        .ok_or_else(|| format!("used {v:?} is neither never nor <seconds>s"))?,
                ),
            };
            saw_used = true;
        } else if let Some(v) = field.strip_prefix("offloaded:") {
            flow.offload = match v {
                "yes" => Offload::Full,
                "partial" => Offload::Partial,
                other => return Err(format!("offloaded:{other} is neither yes nor partial")),
            };
        } else if let Some(v) = field.strip_prefix("dp:") {
            flow.dp = Some(v.to_string());
        }
        // Other fields are the match (eth(...), ipv4(...), flags:...): not needed here.
    }
    if !(saw_packets && saw_bytes && saw_used) {
        return Err("missing packets:/bytes:/used: statistics".into());
    }
    Ok(flow)
}

/// Node facts that decide whether offload can happen at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffloadContext {
    /// Eswitch mode of the PF the port's VF belongs to (`None`: unknown / not queried).
    pub eswitch_mode: Option<EswitchMode>,
    /// Effective `other_config:hw-offload` of the running vswitchd.
    pub hw_offload_enabled: bool,
    /// `datapath_type` of br-int: `system` (kernel, tc offload) or `netdev` (userspace).
    pub datapath_type: String,
}

impl OffloadContext {
    /// From what the agent reads: the PF's eswitch mode (devlink), `Open_vSwitch other_config`
    /// and br-int's `datapath_type` (empty means OVS's default, `system`).
    pub fn new(
        eswitch_mode: Option<EswitchMode>,
        other_config: &BTreeMap<String, String>,
        datapath_type: &str,
    ) -> Self {
        OffloadContext {
            eswitch_mode,
            hw_offload_enabled: crate::ovs_config::OffloadSettings::effective(other_config)
                .hw_offload,
            datapath_type: if datapath_type.is_empty() {
                "system"
            } else {
                datapath_type
            }
            .to_string(),
        }
    }
}

/// Flow actions tc/NIC offload commonly cannot take, seen in a software-only flow.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum SoftwareOnlyAction {
    /// `ct(...nat...)`: OVN load balancers and SNAT/DNAT (needs CT-NAT offload support).
    ConntrackNat,
    /// `userspace(...)`: packets go up to vswitchd (controller actions, slow path).
    Userspace,
    /// `check_pkt_len(...)`: OVN gateway MTU checks.
    CheckPktLen,
    /// `sample(...)`: sFlow/IPFIX sampling.
    Sample,
}

fn software_only_actions(actions: &str) -> Vec<SoftwareOnlyAction> {
    let mut out = Vec::new();
    let mut rest = actions;
    while let Some(at) = rest.find("ct(") {
        // The ct(...) argument list, up to its matching parenthesis.
        let args = &rest[at + 3..];
        let mut depth = 1;
        let end = args
            .char_indices()
            .find(|&(_, c)| {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                depth == 0
            })
            .map(|(i, _)| i)
            .unwrap_or(args.len());
        if args[..end].contains("nat") {
            out.push(SoftwareOnlyAction::ConntrackNat);
        }
        rest = &args[end..];
    }
    for (needle, kind) in [
        ("userspace(", SoftwareOnlyAction::Userspace),
        ("check_pkt_len(", SoftwareOnlyAction::CheckPktLen),
        ("sample(", SoftwareOnlyAction::Sample),
    ] {
        if actions.contains(needle) {
            out.push(kind);
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Why a port's flows are not (all) offloaded. Configuration reasons come first: they explain
/// everything after them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotOffloadedReason {
    EswitchNotSwitchdev {
        mode: Option<EswitchMode>,
    },
    HwOffloadDisabled,
    UserspaceDatapath {
        datapath_type: String,
    },
    NoFlows,
    /// `count` flows stay in software; the actions that explain some of them.
    FlowsInSoftware {
        count: usize,
        actions: Vec<SoftwareOnlyAction>,
    },
    /// `count` flows match in hardware but run their actions in software.
    PartiallyOffloaded {
        count: usize,
    },
}

impl NotOffloadedReason {
    /// A short stable label (metric label values).
    pub fn label(&self) -> &'static str {
        match self {
            NotOffloadedReason::EswitchNotSwitchdev { .. } => "eswitch_not_switchdev",
            NotOffloadedReason::HwOffloadDisabled => "hw_offload_disabled",
            NotOffloadedReason::UserspaceDatapath { .. } => "userspace_datapath",
            NotOffloadedReason::NoFlows => "no_flows",
            NotOffloadedReason::FlowsInSoftware { .. } => "flows_in_software",
            NotOffloadedReason::PartiallyOffloaded { .. } => "partially_offloaded",
        }
    }
}

impl std::fmt::Display for NotOffloadedReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotOffloadedReason::EswitchNotSwitchdev { mode } => match mode {
                Some(m) => write!(f, "the PF's eswitch is in {m} mode, not switchdev"),
                None => write!(
                    f,
                    "the PF's eswitch mode is unknown (devlink unavailable), so not known to be switchdev"
                ),
            },
            NotOffloadedReason::HwOffloadDisabled => {
                write!(
                    f,
                    "OVS other_config:hw-offload is not true (set it and restart ovs-vswitchd)"
                )
            }
            NotOffloadedReason::UserspaceDatapath { datapath_type } => write!(
                f,
                "br-int uses the {datapath_type} (userspace) datapath: tc offload needs datapath_type=system"
            ),
            NotOffloadedReason::NoFlows => write!(
                f,
                "no datapath flows for this port (no traffic yet, or flows expired)"
            ),
            NotOffloadedReason::FlowsInSoftware { count, actions } => {
                write!(f, "{count} flow(s) stay in software")?;
                if !actions.is_empty() {
                    let names: Vec<&str> = actions
                        .iter()
                        .map(|a| match a {
                            SoftwareOnlyAction::ConntrackNat => {
                                "ct with NAT (load balancer / SNAT)"
                            }
                            SoftwareOnlyAction::Userspace => "userspace (slow path)",
                            SoftwareOnlyAction::CheckPktLen => "check_pkt_len",
                            SoftwareOnlyAction::Sample => "sample",
                        })
                        .collect();
                    write!(
                        f,
                        " using actions tc commonly cannot offload: {}",
                        names.join(", ")
                    )?;
                }
                Ok(())
            }
            NotOffloadedReason::PartiallyOffloaded { count } => {
                write!(
                    f,
                    "{count} flow(s) only partially offloaded (match in hardware, actions in software)"
                )
            }
        }
    }
}

/// Offload state of one port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OffloadStatus {
    /// Every flow of the port is in hardware.
    Offloaded,
    /// Some flows are.
    Partial,
    NotOffloaded,
}

/// The report for one port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortOffloadReport {
    pub port: String,
    pub flows: usize,
    pub offloaded_flows: usize,
    pub status: OffloadStatus,
    /// Empty exactly when `status` is `Offloaded`.
    pub reasons: Vec<NotOffloadedReason>,
}

/// Per port (by `in_port` name), whether its flows are offloaded and why not.
pub fn offload_report(
    flows: &[DpFlow],
    ports: &[&str],
    ctx: &OffloadContext,
) -> Vec<PortOffloadReport> {
    let mut by_port: BTreeMap<&str, Vec<&DpFlow>> = BTreeMap::new();
    for f in flows {
        if let Some(p) = f.in_port.as_deref() {
            by_port.entry(p).or_default().push(f);
        }
    }
    ports
        .iter()
        .map(|&port| {
            let mine = by_port.get(port).map(Vec::as_slice).unwrap_or_default();
            let full = mine.iter().filter(|f| f.offload == Offload::Full).count();
            let partial = mine
                .iter()
                .filter(|f| f.offload == Offload::Partial)
                .count();
            let software: Vec<&&DpFlow> =
                mine.iter().filter(|f| f.offload == Offload::None).collect();
            let mut reasons = Vec::new();
            if ctx.eswitch_mode != Some(EswitchMode::Switchdev) {
                reasons.push(NotOffloadedReason::EswitchNotSwitchdev {
                    mode: ctx.eswitch_mode,
                });
            }
            if !ctx.hw_offload_enabled {
                reasons.push(NotOffloadedReason::HwOffloadDisabled);
            }
            if ctx.datapath_type == "netdev" {
                reasons.push(NotOffloadedReason::UserspaceDatapath {
                    datapath_type: ctx.datapath_type.clone(),
                });
            }
            if mine.is_empty() {
                reasons.push(NotOffloadedReason::NoFlows);
            }
            if !software.is_empty() {
                let mut actions: Vec<SoftwareOnlyAction> = software
                    .iter()
                    .flat_map(|f| software_only_actions(&f.actions))
                    .collect();
                actions.sort();
                actions.dedup();
                reasons.push(NotOffloadedReason::FlowsInSoftware {
                    count: software.len(),
                    actions,
                });
            }
            if partial > 0 {
                reasons.push(NotOffloadedReason::PartiallyOffloaded { count: partial });
            }
            let status = if !mine.is_empty() && full == mine.len() {
                // Flows in hardware are the ground truth, whatever the context claims.
                reasons.clear();
                OffloadStatus::Offloaded
            } else if full + partial > 0 {
                OffloadStatus::Partial
            } else {
                OffloadStatus::NotOffloaded
            };
            PortOffloadReport {
                port: port.to_string(),
                flows: mine.len(),
                offloaded_flows: full,
                status,
                reasons,
            }
        })
        .collect()
}
