//! `ferrovn-node`: the FerrOVN node agent. Configures the node's OVS for OVN through OVSDB,
//! serves the CNI socket the `ferrovn-cni` plugin talks to, plumbs pods, and garbage-collects
//! ports of vanished pods. Stopping or restarting it never touches running pods.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use ferrovn_dataplane::agent::{Agent, AgentConfig, NodeProfile};
use ferrovn_dataplane::alloc::{
    AllocationError, AllocationSource, FileAllocations, PodAllocation, PodRef,
};
use ferrovn_dataplane::dpdk::vhost::{DynPodAnnotator, FileAnnotations};
use ferrovn_dataplane::kube_api::{KubeAllocations, KubeNodeSink, KubePodAnnotator};
use ferrovn_dataplane::ovs::NodeOvsConfig;
use ferrovn_dataplane::report::{
    ChassisReportConfig, FileReportSink, LogReportSink, NodeReportSink, run_chassis_reporter,
};
use ferrovn_dataplane::server;
use ferrovn_dataplane::vswitchd_rxbuf::RxBufferTuner;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Profile {
    /// Decide from the `ovn.kubernetes.io/ovs_dp_type` label and the node (docs/dpdk.md).
    Auto,
    Kernel,
    Dpdk,
}

#[derive(Debug, Parser)]
#[command(version, about = "FerrOVN node agent")]
struct Args {
    /// The node's Open_vSwitch database.
    #[arg(
        long,
        env = "FERROVN_OVS_DB",
        default_value = "unix:/var/run/openvswitch/db.sock"
    )]
    ovs_db: String,
    /// OVN Southbound remote(s) for ovn-controller (external_ids:ovn-remote).
    #[arg(long, env = "FERROVN_SB_REMOTE")]
    sb_remote: String,
    /// Chassis name (external_ids:system-id) and hostname; defaults to the host name.
    #[arg(long, env = "FERROVN_NODE_NAME")]
    node_name: Option<String>,
    /// Tunnel endpoint IP of this node (external_ids:ovn-encap-ip).
    #[arg(long, env = "FERROVN_ENCAP_IP")]
    encap_ip: String,
    /// `kernel`/`dpdk` act like the `ovn.kubernetes.io/ovs_dp_type` label `kernel`/`userspace`.
    #[arg(long, value_enum, default_value = "auto")]
    profile: Profile,
    /// Node labels (JSON object) for `--profile auto`; with `--kube` the agent reads the Node.
    #[arg(long, env = "FERROVN_NODE_LABELS_FILE")]
    node_labels_file: Option<PathBuf>,
    /// DPDK node configuration (JSON, docs/dpdk.md).
    #[arg(long, env = "FERROVN_DPDK_CONFIG")]
    dpdk_config: Option<PathBuf>,
    /// The DPDK ovs-vswitchd whose presence makes the DPDK profile possible (default: Debian's
    /// /usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk; FerrOVN's OVS/OVN image has it there
    /// too, the lab's is in the OVS/OVN rootfs).
    #[arg(long, env = "FERROVN_DPDK_VSWITCHD")]
    dpdk_vswitchd: Option<PathBuf>,
    /// Lab: where the node's profile annotations (node-annotations.json), chassis annotations
    /// (chassis-node-annotations.json) and metrics textfiles (metrics.prom,
    /// chassis-metrics.prom) are written.
    #[arg(long, env = "FERROVN_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Short host directory for vhost-user socket bind mounts.
    #[arg(long, default_value = "/run/ferrovn/vhu")]
    vhost_dir: PathBuf,
    /// kubelet root (pod volumes live under <root>/pods/<uid>/volumes).
    #[arg(long, default_value = "/var/lib/kubelet")]
    kubelet_root: PathBuf,
    /// Mount namespace for the vhost-user bind mounts (e.g. /proc/1/ns/mnt); default: own.
    #[arg(long)]
    host_mount_ns: Option<PathBuf>,
    /// Control socket of the vhost helper (`ferrovn-vhost`) that serves vhost-user pods on a
    /// kernel-profile node.
    #[arg(
        long,
        env = "FERROVN_VHOST_HELPER_SOCKET",
        default_value = "/run/ferrovn/vhost.sock"
    )]
    vhost_helper_socket: PathBuf,
    /// Seconds between checks that the vhost helper has every port (re-adds after a helper
    /// restart, removes ports of vanished pods); kernel profile only.
    #[arg(long, default_value_t = 2)]
    vhost_helper_interval_secs: u64,
    /// Lab: directory where pod annotations are written (<ns>/<pod>.json); with --kube they are
    /// patched onto the Pod instead.
    #[arg(long, env = "FERROVN_POD_ANNOTATIONS_DIR")]
    pod_annotations_dir: Option<PathBuf>,
    /// OVS datapath type of br-int; defaults from the profile (kernel: system, dpdk: netdev).
    /// Use `netdev` on kernel-profile nodes without the OVS kernel module.
    #[arg(long, env = "FERROVN_DATAPATH_TYPE")]
    datapath_type: Option<String>,
    #[arg(long, default_value = "br-int")]
    bridge: String,
    /// Unix socket the CNI plugin connects to.
    #[arg(
        long,
        env = "FERROVN_CNI_SOCKET",
        default_value = "/run/ferrovn/cni.sock"
    )]
    socket: PathBuf,
    /// Lab: directory of allocation files written by the controller (<ns>/<pod>.json).
    #[arg(
        long,
        env = "FERROVN_ALLOCATIONS_DIR",
        default_value = "/run/ferrovn/allocations"
    )]
    allocations_dir: PathBuf,
    /// Pod MTU when the netconf does not give one.
    #[arg(long, default_value_t = 1400)]
    mtu: u32,
    /// OVN-native egress (DPDK nodes): the node's uplink as an OVS-DPDK port,
    /// `af_packet:<interface>`, `tap:<name>` or `pci:<address>`, on `--egress-bridge`, mapped to
    /// `--egress-physnet` for the gateway router's localnet port (docs/node-connectivity.md).
    #[arg(long)]
    egress_uplink: Option<ferrovn_dataplane::ovn_egress::UplinkDevice>,
    #[arg(long, default_value = "br-ext")]
    egress_bridge: String,
    #[arg(long, default_value = "ext")]
    egress_physnet: String,
    #[arg(long, default_value_t = 30)]
    allocation_timeout_secs: u64,
    #[arg(long, default_value_t = 30)]
    install_timeout_secs: u64,
    /// Seconds between gratuitous ARPs announcing the tunnel IP (0: off; otherwise at least
    /// 15). Other nodes' OVS forgets a tunnel endpoint 15 minutes after last hearing of it and
    /// then black-holes busy flows to it (docs/node-agent.md, "Tunnel endpoint announcements").
    #[arg(long, default_value_t = 60, value_parser = parse_announce_interval)]
    tunnel_announce_interval_secs: u64,
    /// Seconds between garbage-collection passes (0: off).
    #[arg(long, default_value_t = 30)]
    gc_interval_secs: u64,
    /// Receive buffer (bytes, as SO_RCVBUF reports it) the agent gives each of ovs-vswitchd's
    /// AF_PACKET sockets on a userspace-datapath node; 0 leaves them at the kernel default
    /// (docs/node-agent.md, "Veth pods on the userspace datapath").
    #[arg(long, default_value_t = ferrovn_dataplane::vswitchd_rxbuf::DEFAULT_RCVBUF_BYTES)]
    vswitchd_rxbuf_bytes: usize,
    /// ovs-vswitchd's pid file (default: ovs-vswitchd.pid beside the --ovs-db socket).
    #[arg(long, env = "FERROVN_VSWITCHD_PIDFILE")]
    vswitchd_pidfile: Option<PathBuf>,
    /// On SIGTERM: seconds to let requests in flight finish (new ones are refused at once);
    /// below the pod's terminationGracePeriodSeconds (30 by default).
    #[arg(long, default_value_t = 25)]
    drain_timeout_secs: u64,
    #[command(flatten)]
    offload: ferrovn_dataplane::offload::OffloadArgs,
    /// Cluster mode: pod allocations from the Pod objects, node labels from the Node, node
    /// annotations (chassis, profile, offload) patched onto the Node, pod annotations
    /// (vhost-user, SR-IOV, offload truth) patched onto the Pod. Client configuration: the
    /// in-cluster service account, else KUBECONFIG / ~/.kube/config.
    #[arg(long, env = "FERROVN_KUBE")]
    kube: bool,
    /// Cluster mode with this kubeconfig (implies --kube).
    #[arg(long, env = "FERROVN_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Lab: the controller's record of this node (`<controller-state>/nodes/<node>.json`): its
    /// join allocation, for the join port `ovn0`. With --kube the Node's annotations are read.
    #[arg(long, env = "FERROVN_NODE_FILE")]
    node_file: Option<PathBuf>,
    /// Seconds between looks at the node's join allocation (join port `ovn0` and its routes);
    /// 0: no join port.
    #[arg(long, default_value_t = 5)]
    join_port_interval_secs: u64,
    /// Do not watch the OVN Southbound for this node's chassis nor publish the chassis
    /// annotations (`ovn.kubernetes.io/chassis`, `tunnel_interface`).
    #[arg(long)]
    no_chassis_report: bool,
    /// Seconds between looks at the Southbound's load balancers for node ports on this node's
    /// addresses, steered into OVN with nftables (table `inet ferrovn-nodeport`, removed when
    /// the agent stops; docs/services.md); 0: none.
    #[arg(long, default_value_t = 3)]
    node_port_interval_secs: u64,
    /// Do not repeat ovn-controller's conntrack flush of backends removed from `ct_flush`
    /// (UDP) load balancers once this node's datapath flows no longer pick them (rides on the
    /// node-port pass; docs/services.md, "DPDK pods as Service clients").
    #[arg(long)]
    no_ct_reflush: bool,
    /// Do not let the first TCP connection of a `sessionAffinity: ClientIP` window through
    /// (OVN drops its SYN and, on the userspace datapath, every retransmission; the agent
    /// deletes that connection's conntrack entry; docs/services.md).
    #[arg(long)]
    no_affinity_unstick: bool,
}

/// The allocation source of the mode: files (lab, default) or Pod objects (`--kube`).
enum Allocations {
    File(FileAllocations),
    Kube(Box<KubeAllocations>),
}

impl AllocationSource for Allocations {
    async fn lookup(
        &self,
        pod: &PodRef,
        provider: &str,
    ) -> Result<Option<PodAllocation>, AllocationError> {
        match self {
            Allocations::File(f) => f.lookup(pod, provider).await,
            Allocations::Kube(k) => k.lookup(pod, provider).await,
        }
    }

    async fn wait_for(
        &self,
        pod: &PodRef,
        provider: &str,
        deadline: std::time::Instant,
    ) -> Result<Option<PodAllocation>, AllocationError> {
        match self {
            Allocations::File(f) => f.wait_for(pod, provider, deadline).await,
            Allocations::Kube(k) => k.wait_for(pod, provider, deadline).await,
        }
    }
}

/// Publishes `annotations` (the node's `what` annotations) through `sink`, retrying every few
/// seconds until it works.
async fn publish_until_done<S: NodeReportSink>(
    sink: S,
    what: &'static str,
    annotations: ferrovn_dataplane::report::Annotations,
) {
    loop {
        match sink.publish(&annotations).await {
            Ok(changed) => {
                tracing::info!(to = %sink.describe(), changed = ?changed, "published the node {what} annotations");
                return;
            }
            Err(e) => {
                tracing::warn!(to = %sink.describe(), error = %e, "publishing the node {what} annotations failed; retrying");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    }
}

/// 0 or >= 15 s: a remote OVS learns from an announcement only when it reaches its slow path,
/// and identical announcements less than its datapath flow idle time (10 s) apart are
/// answered from the cached flow, never seen again.
fn parse_announce_interval(s: &str) -> Result<u64, String> {
    let v: u64 = s.parse().map_err(|e| format!("{e}"))?;
    if v != 0 && v < ferrovn_dataplane::tunnel_announce::MIN_INTERVAL_SECS {
        return Err(format!(
            "{v} s is too short: 0 (off) or at least {} s (OVS caches an identical announcement for 10 s and learns nothing from the repeats)",
            ferrovn_dataplane::tunnel_announce::MIN_INTERVAL_SECS
        ));
    }
    Ok(v)
}

/// The join port `ovn0` and the natOutgoing masquerade (docs/node-connectivity.md), from the
/// Node (`--kube`) or the controller's node record (`--node-file`); neither: none.
async fn spawn_join_port(
    args: &Args,
    name: &str,
    kube: Option<&kube::Client>,
) -> anyhow::Result<()> {
    use ferrovn_dataplane::{join_port, nat_outgoing};
    let cfg = join_port::JoinPortConfig {
        node: name.to_string(),
        bridge: args.bridge.clone(),
        mtu: args.mtu,
        interval: Duration::from_secs(args.join_port_interval_secs),
    };
    // its own OVSDB connection: CNI requests never wait behind it
    let ovs = ferrovn_dataplane::ovs::OvsClient::connect(&args.ovs_db)
        .await
        .with_context(|| format!("connecting to {}", args.ovs_db))?;
    match (kube, &args.node_file) {
        (Some(client), _) => {
            let source = join_port::SharedNodeSource::new(
                join_port::KubeNodeSource {
                    client: client.clone(),
                    node: name.to_string(),
                },
                cfg.interval / 2,
            );
            tokio::spawn(nat_outgoing::run(
                name.to_string(),
                cfg.interval,
                source.clone(),
            ));
            tokio::spawn(join_port::run(cfg, ovs, source));
        }
        (None, Some(path)) => {
            let source = join_port::FileNodeSource { path: path.clone() };
            tokio::spawn(nat_outgoing::run(
                name.to_string(),
                cfg.interval,
                source.clone(),
            ));
            tokio::spawn(join_port::run(cfg, ovs, source));
        }
        (None, None) => tracing::info!(
            "no join port: neither --kube nor --node-file says where the node's join allocation is"
        ),
    }
    Ok(())
}

/// Plumbs the OVN-native egress uplink, retrying until OVSDB takes it (DPDK may still be
/// initialising), then reports OVS-DPDK's verdict on the device once.
async fn keep_egress_uplink(ovs_db: String, spec: ferrovn_dataplane::ovn_egress::UplinkSpec) {
    use ferrovn_dataplane::ovn_egress::{ensure_uplink, uplink_error};
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tick.tick().await;
        let ovs = match ferrovn_dataplane::ovs::OvsClient::connect(&ovs_db).await {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(error = %e, "egress uplink: OVSDB not reachable yet");
                continue;
            }
        };
        match ensure_uplink(&ovs, &spec).await {
            Ok(changes) => {
                tracing::info!(?changes, bridge = %spec.bridge, physnet = %spec.physnet, "egress uplink configured");
                tokio::time::sleep(Duration::from_secs(2)).await;
                match uplink_error(&ovs, &spec.port).await {
                    Ok(Some(e)) => {
                        tracing::error!(port = %spec.port, error = %e, "egress uplink refused by OVS-DPDK")
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "egress uplink: reading its error column"),
                }
                return;
            }
            Err(e) => tracing::warn!(error = %e, "egress uplink: retrying"),
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    let name = args.node_name.clone().unwrap_or_else(hostname);
    // First of all: a second agent on this node refuses before it touches OVS or the API. The
    // lock lives as long as main. Requests that arrive before the agent is ready wait in the
    // socket's backlog.
    let server::CniSocket {
        listener,
        lock: _socket_lock,
    } = server::bind(&args.socket)?;
    let kube_client = if args.kube || args.kubeconfig.is_some() {
        let client = ferrovn_dataplane::kube_api::client(args.kubeconfig.as_deref())
            .await
            .context("cluster mode (--kube)")?;
        tracing::info!(node = %name, "cluster mode: pods and node from the Kubernetes API");
        Some(client)
    } else {
        None
    };
    // cluster mode reads the Node's ovs_dp_type label (a labels file, if given, still wins)
    let node_label = match (&kube_client, args.profile, &args.node_labels_file) {
        (Some(client), Profile::Auto, None) => {
            let labels = ferrovn_dataplane::kube_api::node_labels(client, &name)
                .await
                .with_context(|| format!("reading the labels of Node {name}"))?;
            labels
                .get(ferrovn_dataplane::profile::OVS_DP_TYPE_LABEL)
                .cloned()
        }
        _ => None,
    };
    let decision = ferrovn_dataplane::dpdk::node::decide(
        &ferrovn_dataplane::dpdk::node::DecideArgs {
            forced_label: match args.profile {
                Profile::Auto => node_label,
                Profile::Kernel => Some("kernel".into()),
                Profile::Dpdk => Some("userspace".into()),
            },
            labels_file: args.node_labels_file.clone(),
            dpdk_config: args.dpdk_config.clone(),
            state_dir: args.state_dir.clone(),
            dpdk_vswitchd: args.dpdk_vswitchd.clone(),
        },
        &args.ovs_db,
    )
    .await?;
    let profile = decision.profile;
    if profile == NodeProfile::Dpdk {
        ferrovn_dataplane::dpdk::node::apply(&args.ovs_db, &decision).await?;
    }
    if let Some(client) = &kube_client {
        let annotations = decision.annotations();
        if !annotations.is_empty() {
            tokio::spawn(publish_until_done(
                KubeNodeSink::new(client.clone(), &name),
                "profile",
                annotations,
            ));
        }
    }
    // pod annotations (vhost-user, SR-IOV PCI address, offload truth): the Pod in a cluster
    let pod_annotations: Option<std::sync::Arc<dyn DynPodAnnotator>> = match (
        &kube_client,
        &args.pod_annotations_dir,
    ) {
        (Some(client), dir) => {
            if let Some(dir) = dir {
                tracing::warn!(dir = %dir.display(), "--pod-annotations-dir is ignored with --kube: pod annotations are patched onto the Pods");
            }
            Some(std::sync::Arc::new(KubePodAnnotator::new(client.clone())))
        }
        (None, Some(dir)) => Some(std::sync::Arc::new(FileAnnotations::new(dir))),
        (None, None) => None,
    };
    let cfg = AgentConfig {
        node: NodeOvsConfig {
            system_id: name.clone(),
            hostname: name.clone(),
            ovn_remote: args.sb_remote.clone(),
            encap_type: "geneve".into(),
            encap_ip: args.encap_ip.clone(),
            bridge: args.bridge.clone(),
            datapath_type: args
                .datapath_type
                .clone()
                .unwrap_or_else(|| profile.default_datapath_type().to_string()),
        },
        ovs_remote: args.ovs_db.clone(),
        profile,
        host_netns: None,
        default_mtu: args.mtu,
        allocation_timeout: Duration::from_secs(args.allocation_timeout_secs),
        install_timeout: Duration::from_secs(args.install_timeout_secs),
        vhost: ferrovn_dataplane::dpdk::vhost::VhostConfig {
            dir: args.vhost_dir.clone(),
            volumes: std::sync::Arc::new(ferrovn_dataplane::dpdk::vhost::KubeletVolumes {
                root: args.kubelet_root.clone(),
            }),
            host_mount_ns: args.host_mount_ns.clone(),
            annotations: pod_annotations,
        },
        vhost_helper: ferrovn_dataplane::dpdk::helper_attach::HelperConfig {
            control_socket: args.vhost_helper_socket.clone(),
            ..Default::default()
        },
        sriov: args.offload.sriov_config(args.state_dir.clone())?,
    };
    let allocations = match &kube_client {
        Some(client) => Allocations::Kube(Box::new(
            KubeAllocations::new(client.clone()).watching(&name),
        )),
        None => Allocations::File(FileAllocations::new(&args.allocations_dir)),
    };
    let agent = Agent::start(cfg, allocations)
        .await
        .with_context(|| format!("configuring OVS through {}", args.ovs_db))?;
    // the offload profile's outcome (hw-offload, restart-required): the Node in a cluster, the
    // state dir's offload-node-annotations.json otherwise (written by Agent::start)
    if let Some(client) = &kube_client {
        let annotations = agent.offload_start().annotations();
        if !annotations.is_empty() {
            tokio::spawn(publish_until_done(
                KubeNodeSink::new(client.clone(), &name),
                "offload",
                annotations,
            ));
        }
    }
    let tso = agent.userspace_tso();
    tracing::info!(socket = %args.socket.display(), ovs = %args.ovs_db,
        userspace_tso = tso.active, vswitchd_restart_required = tso.restart_required,
        "ferrovn-node ready");

    if !args.no_chassis_report {
        let mut report = ChassisReportConfig::new(&args.sb_remote, &name, &args.encap_ip);
        report.state_dir = args.state_dir.clone();
        match (&kube_client, &args.state_dir) {
            (Some(client), _) => {
                tokio::spawn(run_chassis_reporter(
                    report,
                    KubeNodeSink::new(client.clone(), &name),
                ));
            }
            (None, Some(dir)) => {
                tokio::spawn(run_chassis_reporter(
                    report,
                    FileReportSink::in_state_dir(dir),
                ));
            }
            (None, None) => {
                tokio::spawn(run_chassis_reporter(report, LogReportSink));
            }
        }
    }

    if args.offload.offload_check_secs > 0 {
        ferrovn_dataplane::agent::spawn_offload_checks(
            agent.clone(),
            Duration::from_secs(args.offload.offload_check_secs),
        );
    }

    if args.tunnel_announce_interval_secs > 0 {
        match args.encap_ip.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(ip)) => {
                tokio::spawn(ferrovn_dataplane::tunnel_announce::run(
                    ip,
                    Duration::from_secs(args.tunnel_announce_interval_secs),
                ));
            }
            Ok(std::net::IpAddr::V6(ip)) => tracing::info!(
                %ip,
                "IPv6 tunnel endpoint: not announced (OVS learns it from neighbor advertisements)"
            ),
            Err(e) => {
                tracing::warn!(encap_ip = %args.encap_ip, error = %e, "tunnel IP not announced")
            }
        }
    }

    if agent.config().node.datapath_type == "netdev" && args.vswitchd_rxbuf_bytes > 0 {
        match args
            .vswitchd_pidfile
            .clone()
            .or_else(|| RxBufferTuner::pidfile_beside(&args.ovs_db))
        {
            Some(pidfile) => {
                let tuner = RxBufferTuner::new(pidfile, args.vswitchd_rxbuf_bytes);
                tokio::spawn(keep_vswitchd_rxbufs(tuner));
            }
            None => tracing::warn!(ovs_db = %args.ovs_db,
                "ovs-vswitchd's packet-socket buffers left at the kernel default: no pid file beside a non-unix OVS database; pass --vswitchd-pidfile"),
        }
    }

    if args.join_port_interval_secs > 0 {
        spawn_join_port(&args, &name, kube_client.as_ref()).await?;
    }
    if let Some(device) = args.egress_uplink.clone() {
        let spec = ferrovn_dataplane::ovn_egress::UplinkSpec {
            bridge: args.egress_bridge.clone(),
            physnet: args.egress_physnet.clone(),
            port: "uplink".into(),
            device,
            pmd_threads: decision
                .settings
                .as_ref()
                .map_or(1, |s| s.pmd_cpus.len().max(1) as u32),
        };
        spec.validate()?;
        tokio::spawn(keep_egress_uplink(args.ovs_db.clone(), spec));
    }

    if args.gc_interval_secs > 0 {
        let gc_agent = agent.clone();
        let every = Duration::from_secs(args.gc_interval_secs);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                if let Err(e) = gc_agent.gc_once().await {
                    tracing::warn!(error = %e.msg, details = %e.details, "GC pass failed");
                }
            }
        });
    }

    if profile == NodeProfile::Kernel && args.vhost_helper_interval_secs > 0 {
        // its own OVSDB connection: a slow helper never delays CNI requests
        let ovs = ferrovn_dataplane::ovs::OvsClient::connect(&args.ovs_db)
            .await
            .with_context(|| format!("connecting to {}", args.ovs_db))?;
        tokio::spawn(ferrovn_dataplane::dpdk::helper_attach::reconcile_loop(
            agent.config().vhost_helper.clone(),
            ovs,
            args.bridge.clone(),
            agent.config().host_netns.clone(),
            Duration::from_secs(args.vhost_helper_interval_secs),
        ));
    }

    if !args.no_affinity_unstick {
        match args
            .vswitchd_pidfile
            .clone()
            .or_else(|| RxBufferTuner::pidfile_beside(&args.ovs_db))
        {
            Some(pidfile) => {
                tokio::spawn(ferrovn_dataplane::affinity_unstick::run(
                    ferrovn_dataplane::ct_reflush::OvsTarget {
                        pidfile,
                        bridge: args.bridge.clone(),
                    },
                ));
            }
            None => tracing::warn!(ovs_db = %args.ovs_db,
                "first connections of ClientIP affinity windows not let through: no ovs-vswitchd pid file beside a non-unix OVS database; pass --vswitchd-pidfile"),
        }
    }

    // node ports from other nodes and the outside; told to stop (and remove its table) below
    let reflush = if args.no_ct_reflush {
        None
    } else {
        match args
            .vswitchd_pidfile
            .clone()
            .or_else(|| RxBufferTuner::pidfile_beside(&args.ovs_db))
        {
            Some(pidfile) => Some(ferrovn_dataplane::ct_reflush::Reflusher::new(
                ferrovn_dataplane::ct_reflush::OvsTarget {
                    pidfile,
                    bridge: args.bridge.clone(),
                },
            )),
            None => {
                tracing::warn!(ovs_db = %args.ovs_db,
                    "removed UDP backends' conntrack not flushed again: no ovs-vswitchd pid file beside a non-unix OVS database; pass --vswitchd-pidfile");
                None
            }
        }
    };
    let node_ports = (args.node_port_interval_secs > 0).then(|| {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(ferrovn_dataplane::nodeport::run(
            args.sb_remote.clone(),
            Duration::from_secs(args.node_port_interval_secs),
            async move {
                let _ = rx.await;
            },
            reflush,
            Some(name.clone()),
        ));
        (tx, task)
    });

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    let result = match server::serve_until(
        agent,
        listener,
        shutdown,
        Duration::from_secs(args.drain_timeout_secs),
    )
    .await
    {
        Ok(server::Stopped::Drained) => Ok(()),
        Ok(server::Stopped::TimedOut { in_flight }) => {
            tracing::warn!(
                in_flight,
                "drain timeout: stopping with requests in flight (the runtime retries them)"
            );
            Ok(())
        }
        Err(e) => Err(anyhow::Error::new(e).context("accepting on the CNI socket")),
    };
    if let Some((tx, task)) = node_ports {
        let _ = tx.send(());
        let _ = tokio::time::timeout(Duration::from_secs(15), task).await;
    }
    // pods keep running; only the socket goes
    let _ = std::fs::remove_file(&args.socket);
    tracing::info!("ferrovn-node stopped");
    result
}

/// Raises the receive buffer of every new ovs-vswitchd packet socket (a veth pod's port), once a
/// second; a failure is logged once per distinct error, never fatal: pods still work, only
/// slower under load.
async fn keep_vswitchd_rxbufs(mut tuner: RxBufferTuner) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_error = String::new();
    loop {
        tick.tick().await;
        // a join error only happens when the runtime shuts down
        let Ok((back, result)) = tokio::task::spawn_blocking(move || {
            let r = tuner.tune_once();
            (tuner, r)
        })
        .await
        else {
            return;
        };
        tuner = back;
        match result {
            Ok(r) if r.raised > 0 => {
                tracing::debug!(
                    raised = r.raised,
                    sockets = r.sockets,
                    "ovs-vswitchd packet-socket buffers raised"
                );
                last_error.clear();
            }
            Ok(_) => last_error.clear(),
            Err(e) => {
                let text = e.to_string();
                if text != last_error {
                    tracing::warn!(error = %text, "ovs-vswitchd packet-socket buffers not raised");
                    last_error = text;
                }
            }
        }
    }
}
