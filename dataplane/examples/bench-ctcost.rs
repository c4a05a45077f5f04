//! What conntrack costs pod↔pod, and what the cuts give back (run as root):
//! `cargo run --release -p ferrovn-dataplane --example bench-ctcost`.
//!
//! One OVN logical switch `ls1` (with router `lr1`, as in a Kube-OVN cluster), two pods, and the
//! NB shapes of the Services and NetworkPolicy issues applied one after another with
//! `ovn-nbctl --wait=hv`, **interleaved** (every round measures every shape once, `BENCH_ROUNDS`
//! rounds, default 3) and reported as medians:
//! - `none`: no load balancer, no ACL;
//! - `group0`: the VPC's Load_Balancer_Group attached to the switch, empty (0 Services);
//! - `group1k`: the same group holding 1,000 Services (1,000 TCP load balancers) plus the test
//!   Service whose backend is pod 2 (so pod 2 is a Service backend, as most pods are);
//! - `acl`: one stateful ACL (`allow-related`) on the switch, no load balancer;
//! - `acl_other`: a stateful ACL selecting only a third port: pods 1 and 2 are not selected;
//! - `*_bypass`: the same plus FerrOVN's conntrack bypass (two `allow-stateless` ACLs; switch-wide
//!   for the Services shapes, as planned by default; on the port
//!   group of the pods no policy selects, keyed on the VPC's pod subnets and target ports:
//!   control/src/plan/ctbypass.rs); `group1k_bypass` is the Services fix, `acl_other_bypass` the
//!   policy one;
//! - `vip1k` / `vip1k_bypass`: pod 1 → the test Service's VIP (backend pod 2) with the group of
//!   1,000 Services, instead of pod 1 → pod 2's IP;
//! - `np_stateful`: a NetworkPolicy selecting both pods and allowing ingress from both (e.g.
//!   "pods of this app talk to each other"), as FerrOVN planned it before the policy bypass: its
//!   port group with a tier-2 drop and an `allow-related` from the peers' address set;
//!   `np_sym`: the same plus the policy bypass FerrOVN now plans for it (plan::ctbypass,
//!   `plan_policy_bypass`: both pods accept each other on every port and neither's egress is
//!   isolated, so two tier-3 `allow-stateless` marks on the port group keep them out of
//!   conntrack). `dpdk_policy_ratio` of bench-policy is `np_sym`.
//!
//! DPDK path: two vhost-user pods on OVS-DPDK (one PMD on cpu1), ONE testpmd (cpu0) driving both
//! in `5tswap` (L2, L3 and L4 addresses swapped: every packet is a reply to the last one, so both
//! directions are one real UDP flow pod 1 (10.16.0.21:9) ↔ pod 2 (10.16.0.22:9) or ↔ the VIP
//! 10.96.200.1:9), `start tx_first 8`, 64 B; rate = both ports' rx.
//! Kernel path: two veth pods on a plain ovs-vswitchd (netdev datapath, userspace TSO on, the
//! cni-bench's node), iperf3 TCP 3 s pod 1 → pod 2 (or → VIP 10.96.200.1:5201).
//!
//! For each shape the first round prints how many datapath flows of the PMD / main thread carry a
//! `ct(` action (`ovs-appctl dpif/dump-flows`) and the ovn-trace verdict (does pod 1 → pod 2
//! pass a `ct_` action), so the numbers come with the reason.
//! `BENCH_PHASES=dpdk,kernel` (default both), `BENCH_SECS` (default 4) window,
//! `BENCH_SHAPES=none,group1k,...` to restrict. Last line:
//! `ctcost-bench podpod_with_lbs_ratio=X podpod_with_lbs_nofix_ratio=X vip_vs_direct_ratio=X
//! dpdk_acl_ratio=X dpdk_acl_other_bypass_ratio=X dpdk_np_stateful_ratio=X dpdk_policy_ratio=X
//! kernel_with_lbs_ratio=X kernel_tcp_gbps_none=X` (abridged: every ratio of the shapes above)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use ferrovn_dataplane::alloc::FileAllocations;
use ferrovn_testkit::binaries::{agent_binary, cni_plugin_binary};
use ferrovn_testkit::cluster::{
    POD_SUBNET, add_switch_with_router, allocate_pod, lsp_name, nbctl, wait_chassis_count,
};
use ferrovn_testkit::cni::{CniCall, cni_netconf, run_cni};
use ferrovn_testkit::dpdk::{HugepageLease, PodMemory, Testpmd, TestpmdSpec, last_pps};
use ferrovn_testkit::dpdk_node::{DPDK_PROVIDER, DpdkNode, DpdkNodeSpec};
use ferrovn_testkit::error::Error;
use ferrovn_testkit::names::{short_rand, unique_tag};
use ferrovn_testkit::netns::Netns;
use ferrovn_testkit::ovs_node::{Node, NodeConfig};
use ferrovn_testkit::ovsdb::OvnCentral;
use ferrovn_testkit::wait::wait_until;
use serde_json::json;

const VIP: &str = "10.96.200.1";
const SERVICES: usize = 1000;
const SHAPES: [&str; 11] = [
    "none",
    "group0",
    "group1k",
    "group1k_bypass",
    "acl",
    "acl_other",
    "acl_other_bypass",
    "vip1k",
    "vip1k_bypass",
    "np_stateful",
    "np_sym",
];

fn env_usize(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn secs() -> u64 {
    env_usize("BENCH_SECS", 4) as u64
}

fn sleep(s: f64) {
    std::thread::sleep(Duration::from_secs_f64(s));
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    if s.is_empty() {
        return f64::NAN;
    }
    s[s.len() / 2]
}

/// The NB objects every shape draws from, created once: two LB groups (empty, and 1,000
/// Services + the test Service), the address sets and port group of the bypass.
struct Nb<'a> {
    central: &'a OvnCentral,
    group0: String,
    group1k: String,
    group_test: String,
    pods: [String; 2],
    other: String,
}

impl<'a> Nb<'a> {
    fn setup(central: &'a OvnCentral, pods: [String; 2], pod_ips: [&str; 2]) -> Result<Self> {
        let uuid = |args: &[&str]| -> Result<String> {
            Ok(nbctl(central, args)?.trim().trim_matches('"').to_string())
        };
        let group0 = uuid(&["create", "Load_Balancer_Group", "name=ferrovn-lbs-empty"])?;
        let group1k = uuid(&["create", "Load_Balancer_Group", "name=ferrovn-lbs-bench"])?;
        let group_test = uuid(&["create", "Load_Balancer_Group", "name=ferrovn-lbs-test"])?;
        for chunk in (0..SERVICES).collect::<Vec<_>>().chunks(100) {
            let mut args: Vec<String> = Vec::new();
            for &i in chunk {
                let vip = format!("10.96.{}.{}", i / 250, i % 250 + 1);
                let bes: Vec<String> = (0..3)
                    .map(|k| {
                        let n = i * 3 + k;
                        format!("10.16.{}.{}", 1 + n / 250, n % 250 + 1)
                    })
                    .collect();
                let bes: Vec<String> = bes.iter().map(|b| format!("{b}:8080")).collect();
                args.extend([
                    "--".to_string(),
                    format!("--id=@l{i}"),
                    "create".into(),
                    "Load_Balancer".into(),
                    format!("name=svc-{i}"),
                    "protocol=tcp".into(),
                    format!("vips:\"{vip}:80\"=\"{}\"", bes.join(",")),
                    "--".into(),
                    "add".into(),
                    "Load_Balancer_Group".into(),
                    group1k.clone(),
                    "load_balancer".into(),
                    format!("@l{i}"),
                ]);
            }
            let a: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
            nbctl(central, &a)?;
        }
        // the test Service: UDP 9 for testpmd, TCP 5201 for iperf3, backend pod 2, in its own
        // group (attached with the big one unless a shape says the pods back no Service)
        {
            let g = &group_test;
            nbctl(
                central,
                &[
                    "--",
                    "--id=@u",
                    "create",
                    "Load_Balancer",
                    "protocol=udp",
                    &format!("vips:\"{VIP}:9\"=\"{}:9\"", pod_ips[1]),
                    "--",
                    "--id=@t",
                    "create",
                    "Load_Balancer",
                    "protocol=tcp",
                    &format!("vips:\"{VIP}:5201\"=\"{}:5201\"", pod_ips[1]),
                    "--",
                    "add",
                    "Load_Balancer_Group",
                    g,
                    "load_balancer",
                    "@u",
                    "@t",
                ],
            )?;
        }
        let set = |name: &str, v: &[String]| -> Result<()> {
            nbctl(
                central,
                &[
                    "create",
                    "Address_Set",
                    &format!("name={name}"),
                    &format!("addresses=[{}]", v.join(",")),
                ],
            )
            .map(drop)
            .map_err(Into::into)
        };
        set("ferrovn_podnets_bench_v4", &["10.16.0.0/16".to_string()])?;
        set(
            "np_bench_peers",
            &pod_ips.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )?;
        nbctl(central, &["pg-add", "np_bench"])?;
        nbctl(central, &["pg-add", "ferrovn_ctbypass"])?;
        let other = "other.default".to_string();
        nbctl(
            central,
            &[
                "lsp-add",
                "ls1",
                &other,
                "--",
                "lsp-set-addresses",
                &other,
                "0a:58:0a:10:00:63 10.16.0.99",
            ],
        )?;
        Ok(Nb {
            central,
            group0,
            group1k,
            group_test,
            pods,
            other,
        })
    }

    fn nb(&self, args: &[&str]) -> Result<String> {
        nbctl(self.central, args).map_err(Into::into)
    }

    fn clear(&self) -> Result<()> {
        self.nb(&["clear", "Logical_Switch", "ls1", "load_balancer_group"])?;
        self.nb(&["acl-del", "ls1"])?;
        self.nb(&["--type=port-group", "acl-del", "ferrovn_ctbypass"])?;
        self.nb(&["clear", "Port_Group", "ferrovn_ctbypass", "ports"])?;
        self.nb(&["--type=port-group", "acl-del", "np_bench"])?;
        self.nb(&["clear", "Port_Group", "np_bench", "ports"])?;
        Ok(())
    }

    /// One ACL of port group `pg` with a tier (what the planner writes; `acl-add` has no tier).
    fn pg_acl(
        &self,
        pg: &str,
        direction: &str,
        priority: u16,
        tier: u8,
        m: &str,
        action: &str,
    ) -> Result<()> {
        self.nb(&[
            "--id=@a",
            "create",
            "ACL",
            &format!("direction={direction}"),
            &format!("priority={priority}"),
            &format!("tier={tier}"),
            &format!("match=\"{m}\""),
            &format!("action={action}"),
            "--",
            "add",
            "Port_Group",
            pg,
            "acls",
            "@a",
        ])
        .map(drop)
    }

    /// The NetworkPolicy of `np_*` as control/src/plan/netpol plans it (ingress of both pods
    /// from both, every port), and with `bypass` the policy bypass of plan::ctbypass (no
    /// Service load balancer on this switch in these shapes: every TCP/UDP/SCTP port is free).
    fn np(&self, bypass: bool) -> Result<()> {
        let mut args = vec!["pg-set-ports", "np_bench"];
        args.extend(self.pods.iter().map(String::as_str));
        self.nb(&args)?;
        self.pg_acl(
            "np_bench",
            "to-lport",
            2000,
            2,
            "outport == @np_bench && ip",
            "drop",
        )?;
        self.pg_acl(
            "np_bench",
            "to-lport",
            2001,
            2,
            "outport == @np_bench && ip && (ip4.src == $np_bench_peers)",
            "allow-related",
        )?;
        if bypass {
            self.pg_acl(
                "np_bench",
                "from-lport",
                1,
                3,
                "inport == @np_bench && (ip4.dst == $np_bench_peers) && (tcp || udp || sctp)",
                "allow-stateless",
            )?;
            self.pg_acl(
                "np_bench",
                "to-lport",
                1,
                3,
                "outport == @np_bench && !flags.loopback && (ip4.src == $np_bench_peers) && \
                 (tcp || udp || sctp)",
                "allow-stateless",
            )?;
        }
        Ok(())
    }

    /// FerrOVN's conntrack bypass as control/src/plan/ctbypass.rs plans it for this VPC (pod
    /// subnets {10.16.0.0/16}; Service target ports tcp {5201, 8080}, udp {9}). `named`: the form
    /// for a switch with ports a policy selects, where the eligible pods are named (here through
    /// a port group); otherwise the switch-wide form the planner uses by default.
    fn bypass(&self, named: bool) -> Result<()> {
        const FROM: &str = "ip4 && ip4.dst == $ferrovn_podnets_bench_v4 && ((tcp && (tcp.dst <= 5200 || (tcp.dst >= 5202 && tcp.dst <= 8079) || tcp.dst >= 8081)) || (udp && (udp.dst <= 8 || udp.dst >= 10)) || sctp)";
        const TO: &str = "!flags.loopback && ip4 && ip4.src == $ferrovn_podnets_bench_v4 && ((tcp && (tcp.src <= 5200 || (tcp.src >= 5202 && tcp.src <= 8079) || tcp.src >= 8081)) || (udp && (udp.src <= 8 || udp.src >= 10)) || sctp)";
        if !named {
            self.nb(&["acl-add", "ls1", "from-lport", "1", FROM, "allow-stateless"])?;
            self.nb(&["acl-add", "ls1", "to-lport", "1", TO, "allow-stateless"])?;
            return Ok(());
        }
        let ports: Vec<&str> = self.pods.iter().map(String::as_str).collect();
        let mut args = vec!["pg-set-ports", "ferrovn_ctbypass"];
        args.extend(ports);
        self.nb(&args)?;
        let from = format!("inport == @ferrovn_ctbypass && {FROM}");
        let to = format!("outport == @ferrovn_ctbypass && {TO}");
        for (dir, m) in [("from-lport", from), ("to-lport", to)] {
            self.nb(&[
                "acl-add",
                "ferrovn_ctbypass",
                dir,
                "1",
                &m,
                "allow-stateless",
            ])?;
        }
        Ok(())
    }

    fn apply(&self, shape: &str) -> Result<()> {
        self.clear()?;
        let group = |g: &str| self.nb(&["add", "Logical_Switch", "ls1", "load_balancer_group", g]);
        match shape {
            "none" => {}
            "group0" => drop(group(&self.group0)?),
            "group1k" | "vip1k" => {
                group(&self.group1k)?;
                group(&self.group_test)?;
            }
            "group1k_bypass" | "vip1k_bypass" => {
                group(&self.group1k)?;
                group(&self.group_test)?;
                self.bypass(false)?;
            }
            "acl" => {
                self.nb(&[
                    "acl-add",
                    "ls1",
                    "from-lport",
                    "1000",
                    "ip4",
                    "allow-related",
                ])?;
                self.nb(&["acl-add", "ls1", "to-lport", "1000", "ip4", "allow-related"])?;
            }
            "acl_other" | "acl_other_bypass" => {
                let m = format!("inport == \"{}\" && ip4", self.other);
                self.nb(&["acl-add", "ls1", "from-lport", "1000", &m, "allow-related"])?;
                let m = format!("outport == \"{}\" && ip4", self.other);
                self.nb(&["acl-add", "ls1", "to-lport", "1000", &m, "allow-related"])?;
                if shape == "acl_other_bypass" {
                    self.bypass(true)?;
                }
            }
            "np_stateful" => self.np(false)?,
            "np_sym" => self.np(true)?,
            other => bail!("unknown shape {other}"),
        }
        self.nb(&["--wait=hv", "--timeout=120", "sync"])?;
        Ok(())
    }
}

/// The ovn-trace verdict for one packet: the `ct_*`/`ct_lb*` actions it passes.
fn trace_ct(central: &OvnCentral, inport: &str, flow: &str) -> String {
    let m = format!("inport == \"{inport}\" && {flow}");
    let out = Command::new("ovn-trace")
        .arg(format!("--db={}", central.sb_remote()))
        .args(["--minimal", "ls1", &m])
        .stderr(Stdio::null())
        .output();
    let text = match out {
        Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned(),
        Err(e) => return format!("ovn-trace: {e}"),
    };
    if std::env::var_os("BENCH_TRACE_DUMP").is_some() {
        eprintln!("--- ovn-trace {m}\n{text}");
    }
    let cts: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("ct_") || l.contains(" ct_") || l.starts_with("ct("))
        .map(|l| l.split('{').next().unwrap_or(l).trim().to_string())
        .collect();
    if cts.is_empty() {
        "no ct".into()
    } else {
        cts.join(" | ")
    }
}

fn ct_flows(node: &Node) -> String {
    match node.appctl_vswitchd(["dpif/dump-flows", "br-int"]) {
        Ok(t) => {
            let all = t.lines().filter(|l| l.contains("actions:")).count();
            let ct = t.lines().filter(|l| l.contains("ct(")).count();
            let recirc = t.lines().filter(|l| l.contains("recirc_id(0x")).count();
            format!("{all} megaflows, {ct} with ct(), {recirc} after recirculation")
        }
        Err(e) => format!("dump-flows: {e}"),
    }
}

#[allow(clippy::too_many_arguments)]
fn cni_add(
    plugin: &Path,
    node: &Node,
    pod: &str,
    cid: &str,
    netns: &Netns,
    ifname: &str,
    uid: &str,
    extra: serde_json::Value,
) -> Result<serde_json::Value> {
    let stdin = cni_netconf("1.1.0", "net", &node.agent_socket(), &extra);
    let args =
        format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod};K8S_POD_UID={uid}");
    let out = run_cni(
        plugin,
        &CniCall {
            command: "ADD",
            container_id: cid,
            netns: &netns.path().display().to_string(),
            ifname,
            args: &args,
            stdin: &stdin,
        },
    )?;
    if out.exit_code != 0 {
        bail!(
            "ADD {pod}: {} {}; agent: {}",
            out.stdout,
            out.stderr,
            node.agent_log()
        );
    }
    Ok(out.json())
}

type Samples = BTreeMap<String, Vec<f64>>;

fn shapes() -> Vec<String> {
    match std::env::var("BENCH_SHAPES") {
        Ok(s) => s.split(',').map(str::to_string).collect(),
        Err(_) => SHAPES.iter().map(|s| s.to_string()).collect(),
    }
}

/// Raw values per shape, and per shape its **paired** ratios: each measurement of a shape sits
/// between two measurements of `none`, and is divided by their mean, so a load swing of the
/// shared machine hits both sides of a ratio alike.
struct Measured {
    raw: Samples,
    paired: Samples,
}

fn rounds<F>(
    label: &str,
    nb: &Nb<'_>,
    node: &Node,
    trace: &dyn Fn(&str) -> String,
    mut measure: F,
) -> Result<Measured>
where
    F: FnMut(&str) -> Result<f64>,
{
    let mut m = Measured {
        raw: Samples::new(),
        paired: Samples::new(),
    };
    let n = env_usize("BENCH_ROUNDS", 3);
    let mut run = |shape: &str, first: bool, m: &mut Measured| -> Result<f64> {
        nb.apply(shape)?;
        let v = measure(shape)?;
        if first {
            println!(
                "{label} {shape:<26} {v:>8.3}  trace: {}; dpif: {}",
                trace(shape),
                ct_flows(node)
            );
        } else {
            println!("{label} {shape:<26} {v:>8.3}  (load {})", load());
        }
        m.raw.entry(shape.to_string()).or_default().push(v);
        Ok(v)
    };
    for r in 0..n {
        let mut before = run("none", r == 0, &mut m)?;
        for shape in shapes().iter().filter(|s| *s != "none") {
            let v = run(shape, r == 0, &mut m)?;
            let after = run("none", false, &mut m)?;
            let base = (before + after) / 2.0;
            if base > 0.0 {
                m.paired.entry(shape.clone()).or_default().push(v / base);
            }
            before = after;
        }
    }
    nb.clear()?;
    Ok(m)
}

// ---------------------------------------------------------------------------------------------
// DPDK: vhost-user pods, testpmd 5tswap

fn dpdk_phase(
    work: &Path,
    tag: &str,
    rnd: &str,
    mem: &PodMemory,
    huge: Option<&Path>,
) -> Result<Measured> {
    let dir = work.join("dpdk");
    std::fs::create_dir_all(&dir)?;
    let lab = DpdkNode::start(
        &DpdkNodeSpec {
            prefix: "fvc",
            tag,
            rnd,
            work: &dir,
            agent: &agent_binary()?,
            plugin: &cni_plugin_binary()?,
            huge_dir: huge,
            extra_agent_args: vec![],
        },
        |_| Ok(()),
    )?;
    let central = &lab.central;
    add_switch_with_router(central, &POD_SUBNET)?;
    let provider = DPDK_PROVIDER;
    let pods = [
        ("dp1", "10.16.0.21", "0a:58:0a:10:00:15"),
        ("dp2", "10.16.0.22", "0a:58:0a:10:00:16"),
    ];
    let mut infos = Vec::new();
    for (i, (pod, ip, mac)) in pods.iter().enumerate() {
        infos.push(lab.add_dpdk_pod(&POD_SUBNET, pod, ip, mac, i as u32)?);
    }
    let lsps = [lsp_name("dp1", provider), lsp_name("dp2", provider)];
    let nb = Nb::setup(central, lsps.clone(), ["10.16.0.21", "10.16.0.22"])?;
    let trace = |shape: &str| {
        let dst = if shape.starts_with("vip") {
            VIP
        } else {
            "10.16.0.22"
        };
        let flow = format!(
            "eth.src == 0a:58:0a:10:00:15 && eth.dst == 0a:58:0a:10:00:16 && ip4.src == 10.16.0.21 && ip4.dst == {dst} && ip.ttl == 64 && udp && udp.src == {p} && udp.dst == {p}",
            p = if shape.starts_with("vip") { 9 } else { 7 }
        );
        let fwd = trace_ct(central, &lsps[0], &flow);
        let flow = "eth.src == 0a:58:0a:10:00:16 && eth.dst == 0a:58:0a:10:00:15 && ip4.src == 10.16.0.22 && ip4.dst == 10.16.0.21 && ip.ttl == 64 && udp && udp.src == 7 && udp.dst == 7";
        let back = trace_ct(central, &lsps[1], flow);
        format!("p1->{dst}: {fwd}; p2->p1: {back}")
    };
    let measure = |shape: &str| -> Result<f64> {
        let dst = if shape.starts_with("vip") {
            VIP
        } else {
            "10.16.0.22"
        };
        let vdevs = infos
            .iter()
            .enumerate()
            .map(|(i, p)| p.vdev(i as u32))
            .collect();
        let mut t = Testpmd::start(&TestpmdSpec {
            prefix: format!("fvcp{rnd}"),
            netns: Some(&infos[0].netns),
            cpu: 0,
            memory: mem.clone(),
            vdevs,
            forward_mode: "5tswap".into(),
            app_args: vec![
                "--port-topology=loop".into(),
                "--txpkts=64".into(),
                format!("--tx-ip=10.16.0.21,{dst}"),
                format!(
                    "--tx-udp={p},{p}",
                    p = if shape.starts_with("vip") { 9 } else { 7 }
                ),
                format!("--eth-peer=0,{}", infos[1].info.mac),
                format!("--eth-peer=1,{}", infos[0].info.mac),
            ],
            log: work.join(format!("vhost-{shape}.log")),
            interactive: true,
        })?;
        let up = lab.wait_vhost_up(&infos.iter().collect::<Vec<_>>(), Duration::from_secs(30));
        if !up {
            bail!("vhost ports not up: {}", t.log_text());
        }
        t.command("start tx_first 8")?;
        sleep(2.0);
        t.command("show port stats all")?;
        sleep(secs() as f64);
        t.command("show port stats all")?;
        sleep(1.0);
        let _ = t.command("stop");
        let _ = t.command("quit");
        wait_until(Duration::from_secs(10), || !t.is_running());
        let mpps = last_pps(&t.log_text(), "Rx", 2) / 1e6;
        t.stop();
        // the vhost ports need a moment to go down and the PMD to forget them
        sleep(1.0);
        Ok(mpps)
    };
    let out = rounds("dpdk  ", &nb, &lab.node, &trace, measure)?;
    drop(infos);
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// kernel: veth pods on the netdev datapath, iperf3

fn iperf_gbps(client: &Netns, server: &Netns, dst: &str, port: &str) -> Result<f64> {
    let mut srv = server
        .command("iperf3")
        .args(["-s", "-1", "-p", port])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    sleep(0.5);
    let out = client.run(30, "iperf3", ["-c", dst, "-p", port, "-t", "3", "-J"]);
    let _ = srv.kill();
    let _ = srv.wait();
    let j: serde_json::Value = serde_json::from_str(&out?)?;
    j["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|b| b / 1e9)
        .context("iperf3 JSON without end.sum_received")
}

fn kernel_phase(work: &Path, tag: &str) -> Result<Measured> {
    let central = OvnCentral::start().map_err(|e| Error::Setup(e.to_string()))?;
    let sb = central.sb_remote();
    let allocs_dir = work.join("allocs-veth");
    let allocs = FileAllocations::new(&allocs_dir);
    let mut node = Node::start(
        &format!("fvc-{tag}-k"),
        &NodeConfig::plain(&format!("fvc-{tag}-k")),
    )?;
    node.start_agent(&agent_binary()?, &sb, &allocs_dir, &[])?;
    node.start_ovn_controller()?;
    wait_chassis_count(&central, 1, Duration::from_secs(30))?;
    add_switch_with_router(&central, &POD_SUBNET)?;
    let plugin = cni_plugin_binary()?;
    let pods = [
        ("vp1", "10.16.0.31", "0a:58:0a:10:00:1f"),
        ("vp2", "10.16.0.32", "0a:58:0a:10:00:20"),
    ];
    let mut nss = Vec::new();
    for (i, (pod, ip, mac)) in pods.iter().enumerate() {
        allocate_pod(&central, &allocs, &POD_SUBNET, "ovn", pod, ip, mac)?;
        let ns = Netns::create(&format!("fvc-{tag}-{pod}"))?;
        cni_add(
            &plugin,
            &node,
            pod,
            &format!("cv{i}{}", tag.replace('x', "")),
            &ns,
            "eth0",
            "u",
            json!({"mtu": 1500}),
        )?;
        nss.push(ns);
    }
    let lsps = [lsp_name("vp1", "ovn"), lsp_name("vp2", "ovn")];
    let nb = Nb::setup(&central, lsps.clone(), ["10.16.0.31", "10.16.0.32"])?;
    if !nss[0].ping_until("10.16.0.32", Duration::from_secs(10)) {
        bail!("kernel pods cannot ping each other");
    }
    let trace = |shape: &str| {
        let (dst, mac, port) = if shape.starts_with("vip") {
            (VIP, "0a:58:0a:10:00:01", 5201)
        } else {
            ("10.16.0.32", "0a:58:0a:10:00:20", 5202)
        };
        let flow = format!(
            "eth.src == 0a:58:0a:10:00:1f && eth.dst == {mac} && ip4.src == 10.16.0.31 && ip4.dst == {dst} && ip.ttl == 64 && tcp && tcp.src == 40000 && tcp.dst == {port}"
        );
        let fwd = trace_ct(&central, &lsps[0], &flow);
        let flow = format!(
            "eth.src == 0a:58:0a:10:00:20 && eth.dst == 0a:58:0a:10:00:1f && ip4.src == 10.16.0.32 && ip4.dst == 10.16.0.31 && ip.ttl == 64 && tcp && tcp.src == {port} && tcp.dst == 40000"
        );
        let back = trace_ct(&central, &lsps[1], &flow);
        format!("p1->{dst}: {fwd}; p2->p1: {back}")
    };
    let measure = |shape: &str| -> Result<f64> {
        // the direct flow uses a port no Service targets; the VIP's backend port is 5201
        let (dst, port) = if shape.starts_with("vip") {
            (VIP, "5201")
        } else {
            ("10.16.0.32", "5202")
        };
        iperf_gbps(&nss[0], &nss[1], dst, port)
    };
    let out = rounds("kernel", &nb, &node, &trace, measure)?;
    drop(nss);
    drop(node);
    Ok(out)
}

fn report(label: &str, m: &Measured) {
    println!("\n{label}: medians over rounds (load now {})", load());
    for (shape, v) in &m.raw {
        let paired = m.paired.get(shape);
        println!(
            "  {shape:<26} median {:>8.3}  paired vs none {:>5}  samples {:?}  paired {:?}",
            median(v),
            paired
                .map(|p| format!("{:.2}", median(p)))
                .unwrap_or("1".into()),
            v.iter()
                .map(|x| (x * 1000.0).round() / 1000.0)
                .collect::<Vec<_>>(),
            paired
                .map(|p| p
                    .iter()
                    .map(|x| (x * 100.0).round() / 100.0)
                    .collect::<Vec<_>>())
                .unwrap_or_default()
        );
    }
}

/// Median of the paired ratios of `a` (against the `none` around it).
fn ratio(m: &Measured, a: &str) -> String {
    match m.paired.get(a) {
        Some(x) if !x.is_empty() => format!("{:.2}", median(x)),
        _ => "na".into(),
    }
}

/// Median over rounds of (paired ratio of `a`) / (paired ratio of `b`).
fn ratio_of(m: &Measured, a: &str, b: &str) -> String {
    match (m.paired.get(a), m.paired.get(b)) {
        (Some(x), Some(y)) if !x.is_empty() && x.len() == y.len() => {
            let r: Vec<f64> = x.iter().zip(y).map(|(p, q)| p / q).collect();
            format!("{:.2}", median(&r))
        }
        _ => "na".into(),
    }
}

fn main() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("run as root (hugepages, namespaces, OVS)");
    }
    let tag = unique_tag();
    let rnd = short_rand();
    let phases = std::env::var("BENCH_PHASES").unwrap_or_else(|_| "dpdk,kernel".into());
    let work = tempfile::Builder::new().prefix("fvc-").tempdir_in("/tmp")?;
    println!("ctcost-bench: load at start {}", load());
    let empty = || Measured {
        raw: Samples::new(),
        paired: Samples::new(),
    };
    let mut dpdk = empty();
    if phases.contains("dpdk") {
        let huge_dir = PathBuf::from(format!("/tmp/fvch{rnd}"));
        let lease = HugepageLease::acquire(&format!("bench-ctcost-{tag}"), 640, &huge_dir).ok();
        let mem = match &lease {
            Some(_) => PodMemory::Hugepages {
                dir: huge_dir.clone(),
                mib: 256,
            },
            None => {
                eprintln!("!!! no hugepages: --no-huge (slower)");
                PodMemory::NoHuge { mib: 256 }
            }
        };
        dpdk = dpdk_phase(
            work.path(),
            &tag,
            &rnd,
            &mem,
            lease.as_ref().map(|l| l.mount()),
        )?;
        report("dpdk Mpps (64 B, both directions)", &dpdk);
    }
    let mut kernel = empty();
    if phases.contains("kernel") {
        kernel = kernel_phase(work.path(), &tag)?;
        report("kernel TCP Gbit/s", &kernel);
    }
    println!(
        "ctcost-bench podpod_with_lbs_ratio={} podpod_with_lbs_nofix_ratio={} podpod_group0_ratio={} vip_vs_direct_ratio={} vip_nofix_vs_direct_ratio={} dpdk_acl_ratio={} dpdk_acl_other_ratio={} dpdk_acl_other_bypass_ratio={} dpdk_np_stateful_ratio={} dpdk_policy_ratio={} kernel_with_lbs_nofix_ratio={} kernel_with_lbs_ratio={} kernel_acl_ratio={} kernel_tcp_gbps_none={:.2} load={}",
        ratio(&dpdk, "group1k_bypass"),
        ratio(&dpdk, "group1k"),
        ratio(&dpdk, "group0"),
        ratio_of(&dpdk, "vip1k_bypass", "group1k_bypass"),
        ratio_of(&dpdk, "vip1k", "group1k"),
        ratio(&dpdk, "acl"),
        ratio(&dpdk, "acl_other"),
        ratio(&dpdk, "acl_other_bypass"),
        ratio(&dpdk, "np_stateful"),
        ratio(&dpdk, "np_sym"),
        ratio(&kernel, "group1k"),
        ratio(&kernel, "group1k_bypass"),
        ratio(&kernel, "acl"),
        kernel
            .raw
            .get("none")
            .map(|v| median(v))
            .unwrap_or(f64::NAN),
        load()
    );
    Ok(())
}
