//! A real Kubernetes control plane for one test suite: etcd, kube-apiserver,
//! kube-controller-manager and kube-scheduler, built by `make kube-bins`
//! (deploy/kube/build.sh), all on 127.0.0.1 with free ports, in a private temp dir.
//!
//! The apiserver runs with real certificates, `--authorization-mode=Node,RBAC` and the
//! NodeRestriction and ValidatingAdmissionPolicy admission plugins, so what a test proves about
//! RBAC or admission holds in a cluster. Dropping the [`ControlPlane`] kills every process it
//! started (by PID) and deletes the temp dir; should the test process die without unwinding,
//! the kernel kills the components (parent-death signal of the thread that started them).
//!
//! The lab's control plane outlives the command that starts it: [`ControlPlane::start_persistent`]
//! runs the same components detached, in a directory of the caller's, with PID files;
//! [`ControlPlane::open`] attaches to it from another process and [`ControlPlane::stop_persistent`]
//! stops it by PID and removes the directory.
//!
//! ```no_run
//! use ferrovn_testkit::kube::ControlPlane;
//! let cp = ControlPlane::start().unwrap();
//! cp.kubectl(&["apply", "-f", "deploy/crds"]).unwrap();
//! let sa = cp.service_account_kubeconfig("kube-system", "ferrovn-controller").unwrap();
//! println!("{} took {:?} to start", sa.display(), cp.startup_time());
//! ```

mod ferrovn_image;
mod forward;
mod kube_proxy;
mod node;
mod pki;
mod process;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub use ferrovn_image::{FERROVN_IMAGE, ferrovn_image_tar};
pub use forward::LoopbackRelay;
pub use kube_proxy::{KubeProxy, metric_value};
pub use node::{
    HostPaths, IMAGE_PREFIX, KubeletNode, NODE_BINARIES, NodeSpec, NodeStopReport, agnhost_image,
    busybox_image, check_node_binaries, image_tar, pause_image,
};
pub use pki::{APISERVER_SANS, CertPair, Pki};
use process::{Component, log_tail, stop_pid_file};

/// The pinned versions, shared with deploy/kube/build.sh.
const VERSIONS_ENV: &str = include_str!("../../../deploy/kube/versions.env");

/// The Service CIDR of the cluster (the apiserver's `kubernetes` Service gets 10.96.0.1).
pub const SERVICE_CIDR: &str = "10.96.0.0/16";

/// How long the whole control plane may take to become usable.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// The components, in start order (stopped in reverse).
const COMPONENTS: [&str; 4] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
];

/// Written into a persistent control plane's directory once it serves: what
/// [`ControlPlane::open`] needs besides the files.
const STATE_FILE: &str = "control-plane.json";

/// How long ServiceAccount tokens of a test's control plane are valid.
const TEST_TOKEN_DURATION: &str = "1h";

/// How [`ControlPlane::start_with`] runs the control plane.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `None`: a private temp dir, everything dies with the [`ControlPlane`] (tests).
    /// `Some(dir)`: persistent in `dir` (created; must hold no running control plane):
    /// detached components with PID files that outlive this process, stopped by
    /// [`ControlPlane::stop_persistent`].
    pub persistent_dir: Option<PathBuf>,
    /// kube-controller-manager controllers to leave out (`--controllers=*,-<name>`), e.g.
    /// `node-lifecycle-controller` for Nodes that no kubelet heartbeats.
    pub disabled_controllers: Vec<String>,
    /// Validity of the ServiceAccount tokens it mints (`kubectl create token --duration`);
    /// default one hour.
    pub token_duration: Option<String>,
    /// The apiserver's connections into the cluster (to kubelets: `exec`, `logs`,
    /// `port-forward`; to pods and services) go through an HTTP CONNECT proxy listening on this
    /// unix socket (its `cluster` egress selection): kubelets in network namespaces of their
    /// own are reachable that way while the apiserver stays on the machine's loopback.
    pub cluster_egress_uds: Option<PathBuf>,
}

/// Where a control plane lives.
#[derive(Debug)]
enum Home {
    Scoped(tempfile::TempDir),
    Persistent(PathBuf),
}

impl Home {
    fn path(&self) -> &Path {
        match self {
            Home::Scoped(t) => t.path(),
            Home::Persistent(p) => p,
        }
    }
}

fn pid_file(dir: &Path, component: &str) -> PathBuf {
    dir.join("run").join(format!("{component}.pid"))
}

/// What [`ControlPlane::stop_persistent`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StopReport {
    /// Components that were running and were stopped.
    pub stopped: Vec<String>,
    /// True if the directory was there and is now removed.
    pub removed_dir: bool,
}

/// The binaries [`ControlPlane::start`] needs.
pub const REQUIRED_BINARIES: [&str; 5] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
];

/// Why a control plane could not be started or used.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error(
        "{name} not found in {dir}: run `make kube-bins` (deploy/kube/build.sh builds it), \
         or point FERROVN_KUBE_BIN at a directory that has it"
    )]
    MissingBinary { name: String, dir: String },
    #[error(
        "{name} not found in {dir}: run `make {target}` (deploy/kube/build.sh builds it), \
         or point FERROVN_KUBE_BIN at a directory that has it"
    )]
    MissingNodePart {
        name: String,
        dir: String,
        target: String,
    },
    #[error("cannot run {program}: {reason}")]
    Spawn { program: String, reason: String },
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("timed out after {after:?} waiting for {what}; log {log}:\n{log_tail}")]
    Timeout {
        what: String,
        after: Duration,
        log: String,
        log_tail: String,
    },
    #[error("{component} exited ({status}); log {log}:\n{log_tail}")]
    Exited {
        component: String,
        status: String,
        log: String,
        log_tail: String,
    },
    #[error("{what}: {reason}")]
    Io { what: String, reason: String },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> KubeError {
    let what = what.into();
    move |e| KubeError::Io {
        what,
        reason: e.to_string(),
    }
}

/// A value of deploy/kube/versions.env, e.g. `pinned_version("K8S_VERSION")` = `"v1.37.2"`.
pub fn pinned_version(key: &str) -> Option<&'static str> {
    VERSIONS_ENV.lines().find_map(|l| {
        let (k, v) = l.trim().split_once('=')?;
        (k == key).then_some(v.trim())
    })
}

/// Where `make kube-bins` puts the binaries: `$FERROVN_KUBE_BIN`, else
/// `${FERROVN_CACHE:-/var/cache/ferrovn}/kube/<k8s version>/bin`.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("FERROVN_KUBE_BIN").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("FERROVN_CACHE")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/ferrovn"));
    cache
        .join("kube")
        .join(pinned_version("K8S_VERSION").unwrap_or("unknown"))
        .join("bin")
}

/// The path of one built binary, or [`KubeError::MissingBinary`].
pub fn binary(name: &str) -> Result<PathBuf, KubeError> {
    let dir = bin_dir();
    let path = dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(KubeError::MissingBinary {
            name: name.into(),
            dir: dir.display().to_string(),
        })
    }
}

/// What a successful command printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
}

/// Runs `program args` (stdin from `input`); non-zero exit is [`KubeError::Command`] naming the
/// whole command line and its stderr.
fn run(program: &Path, args: &[&str], input: Option<&str>) -> Result<Output, KubeError> {
    let command = format!("{} {}", program.display(), args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| KubeError::Spawn {
            program: program.display().to_string(),
            reason: e.to_string(),
        })?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(text.as_bytes())
            .map_err(io_err(format!("stdin of {command}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(io_err(format!("wait for {command}")))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() {
        Ok(Output { stdout, stderr })
    } else {
        Err(KubeError::Command {
            command,
            status: out.status.to_string(),
            stderr: stderr.trim().to_string(),
        })
    }
}

/// A kubeconfig for `server`, trusting `ca`, as one user.
fn kubeconfig(server: &str, ca: &Path, user: &str, credentials: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: testkit\n  cluster:\n    server: {server}\n    \
         certificate-authority: {ca}\nusers:\n- name: {user}\n  user:\n{credentials}contexts:\n\
         - name: testkit\n  context:\n    cluster: testkit\n    user: {user}\n    namespace: default\n\
         current-context: testkit\n",
        ca = ca.display(),
    )
}

fn cert_credentials(pair: &CertPair) -> String {
    format!(
        "    client-certificate: {}\n    client-key: {}\n",
        pair.cert.display(),
        pair.key.display()
    )
}

/// A running control plane. See the module docs.
#[derive(Debug)]
pub struct ControlPlane {
    // Field order is drop order: processes first (clients before servers), then the directory.
    scheduler: Component,
    controller_manager: Component,
    apiserver: Component,
    etcd: Component,
    dir: Home,
    pki: Pki,
    kubectl: PathBuf,
    server: String,
    admin_kubeconfig: PathBuf,
    startup: Duration,
    token_duration: String,
}

impl ControlPlane {
    /// Starts etcd, kube-apiserver, kube-controller-manager and kube-scheduler, and waits until
    /// the apiserver is ready and the controller-manager has created the `default`
    /// ServiceAccount (so pods can be created).
    pub fn start() -> Result<ControlPlane, KubeError> {
        Self::start_with(&Options::default())
    }

    /// Like [`ControlPlane::start`], persistent in `dir` (see [`Options::persistent_dir`]).
    /// On failure the components already started are stopped; `dir` keeps their logs.
    pub fn start_persistent(dir: &Path, options: &Options) -> Result<ControlPlane, KubeError> {
        let options = Options {
            persistent_dir: Some(dir.to_path_buf()),
            ..options.clone()
        };
        Self::start_with(&options)
    }

    /// Starts a control plane as `options` say.
    pub fn start_with(options: &Options) -> Result<ControlPlane, KubeError> {
        let Some(dir) = &options.persistent_dir else {
            return Self::start_inner(options);
        };
        if let Some(running) = COMPONENTS.iter().find(|c| {
            std::fs::read_to_string(pid_file(dir, c))
                .ok()
                .and_then(|p| p.trim().parse::<u32>().ok())
                .is_some_and(process::alive)
        }) {
            return Err(KubeError::Io {
                what: format!("start a control plane in {}", dir.display()),
                reason: format!(
                    "{running} of an earlier one still runs there (stop it with ControlPlane::stop_persistent)"
                ),
            });
        }
        let started = Self::start_inner(options);
        if started.is_err() {
            for c in COMPONENTS.iter().rev() {
                let _ = stop_pid_file(&pid_file(dir, c), &dir.display().to_string());
            }
        }
        started
    }

    fn start_inner(options: &Options) -> Result<ControlPlane, KubeError> {
        let t0 = Instant::now();
        // All of them before anything starts: a missing one is reported, not half a cluster.
        let [etcd_bin, apiserver_bin, kcm_bin, scheduler_bin, kubectl] =
            REQUIRED_BINARIES.map(binary);
        let (etcd_bin, apiserver_bin, kcm_bin, scheduler_bin, kubectl) = (
            etcd_bin?,
            apiserver_bin?,
            kcm_bin?,
            scheduler_bin?,
            kubectl?,
        );
        let dir = match &options.persistent_dir {
            Some(p) => Home::Persistent(p.clone()),
            None => Home::Scoped(
                tempfile::Builder::new()
                    .prefix("ferrovn-kube-")
                    .tempdir()
                    .map_err(io_err("temp dir"))?,
            ),
        };
        let d = dir.path().to_path_buf();
        let logs = d.join("logs");
        std::fs::create_dir_all(&logs).map_err(io_err(format!("create {}", logs.display())))?;
        let pid_file = |component: &str| {
            options
                .persistent_dir
                .as_ref()
                .map(|p| pid_file(p, component))
        };
        if options.persistent_dir.is_some() {
            let run = d.join("run");
            std::fs::create_dir_all(&run).map_err(io_err(format!("create {}", run.display())))?;
        }

        let pki = Pki::create(&d.join("pki"))?;
        let serving = pki.serving_cert("apiserver")?;
        let kubelet_client = pki.client_cert(
            "apiserver-kubelet-client",
            "kube-apiserver-kubelet-client",
            &["system:masters"],
        )?;
        let admin = pki.client_cert("admin", "ferrovn-testkit-admin", &["system:masters"])?;
        let kcm_cert =
            pki.client_cert("controller-manager", "system:kube-controller-manager", &[])?;
        let scheduler_cert = pki.client_cert("scheduler", "system:kube-scheduler", &[])?;

        // one set of handed-out ports per process, shared with every other harness
        let port = || {
            crate::names::free_port().map_err(|e| KubeError::Io {
                what: "free port on 127.0.0.1".into(),
                reason: e.to_string(),
            })
        };
        let (etcd_client, etcd_peer, api_port) = (port()?, port()?, port()?);
        let server = format!("https://127.0.0.1:{api_port}");
        let write_kubeconfig = |name: &str, user: &str, pair: &CertPair| {
            let path = d.join(format!("{name}.kubeconfig"));
            std::fs::write(
                &path,
                kubeconfig(&server, &pki.ca.cert, user, &cert_credentials(pair)),
            )
            .map_err(io_err(format!("write {}", path.display())))?;
            Ok::<_, KubeError>(path)
        };
        let admin_kubeconfig = write_kubeconfig("admin", "admin", &admin)?;
        let kcm_kubeconfig =
            write_kubeconfig("controller-manager", "kube-controller-manager", &kcm_cert)?;
        let scheduler_kubeconfig =
            write_kubeconfig("scheduler", "kube-scheduler", &scheduler_cert)?;

        let s = |p: &Path| p.display().to_string();
        let etcd_url = format!("http://127.0.0.1:{etcd_client}");
        let peer_url = format!("http://127.0.0.1:{etcd_peer}");
        let etcd = Component::spawn(
            "etcd",
            &etcd_bin,
            vec![
                "--name=testkit".into(),
                format!("--data-dir={}", s(&d.join("etcd"))),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=testkit={peer_url}"),
                // A test's data is thrown away: no fsync (etcd spends most of its time there).
                "--unsafe-no-fsync=true".into(),
                "--log-level=warn".into(),
            ],
            logs.join("etcd.log"),
            pid_file("etcd"),
        )?;

        let mut egress = Vec::new();
        if let Some(uds) = &options.cluster_egress_uds {
            let path = d.join("egress-selector.yaml");
            std::fs::write(
                &path,
                format!(
                    "apiVersion: apiserver.k8s.io/v1beta1\nkind: EgressSelectorConfiguration\n\
                     egressSelections:\n- name: cluster\n  connection:\n    \
                     proxyProtocol: HTTPConnect\n    transport:\n      uds:\n        \
                     udsName: {}\n",
                    uds.display()
                ),
            )
            .map_err(io_err(format!("write {}", path.display())))?;
            egress.push(format!("--egress-selector-config-file={}", s(&path)));
        }
        let apiserver = Component::spawn(
            "kube-apiserver",
            &apiserver_bin,
            [
                egress,
                vec![
                    format!("--etcd-servers={etcd_url}"),
                    "--bind-address=127.0.0.1".into(),
                    "--advertise-address=127.0.0.1".into(),
                    // The `kubernetes` Service's Endpoints may not hold a loopback address (1.37
                    // refuses to start); nothing in a loopback-only cluster could use them anyway.
                    "--endpoint-reconciler-type=none".into(),
                    format!("--secure-port={api_port}"),
                    format!("--tls-cert-file={}", s(&serving.cert)),
                    format!("--tls-private-key-file={}", s(&serving.key)),
                    format!("--client-ca-file={}", s(&pki.ca.cert)),
                    format!("--kubelet-client-certificate={}", s(&kubelet_client.cert)),
                    format!("--kubelet-client-key={}", s(&kubelet_client.key)),
                    format!("--service-cluster-ip-range={SERVICE_CIDR}"),
                    "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
                    format!("--service-account-key-file={}", s(&pki.sa_pub)),
                    format!("--service-account-signing-key-file={}", s(&pki.sa_key)),
                    "--authorization-mode=Node,RBAC".into(),
                    "--enable-admission-plugins=NodeRestriction,ValidatingAdmissionPolicy".into(),
                    "--allow-privileged=true".into(),
                    format!("--cert-dir={}", s(&d.join("apiserver-certs"))),
                    "--profiling=false".into(),
                    "--v=1".into(),
                ],
            ]
            .concat(),
            logs.join("kube-apiserver.log"),
            pid_file("kube-apiserver"),
        )?;

        // The controller-manager gives up when the apiserver is not healthy within 10 s, which
        // on a loaded machine it may not be (its RBAC bootstrap comes last): start the clients
        // once it is ready.
        let mut etcd = etcd;
        let mut apiserver = apiserver;
        let start = Instant::now();
        loop {
            let ready = run(
                &kubectl,
                &[
                    &format!("--kubeconfig={}", s(&admin_kubeconfig)),
                    "get",
                    "--raw",
                    "/readyz",
                ],
                None,
            )
            .is_ok_and(|o| o.stdout.trim() == "ok");
            if ready {
                break;
            }
            etcd.check_alive()?;
            apiserver.check_alive()?;
            if start.elapsed() > START_TIMEOUT {
                return Err(KubeError::Timeout {
                    what: "kube-apiserver /readyz".into(),
                    after: START_TIMEOUT,
                    log: apiserver.log().display().to_string(),
                    log_tail: log_tail(apiserver.log()),
                });
            }
            std::thread::sleep(Duration::from_millis(250));
        }

        let kcm = Component::spawn(
            "kube-controller-manager",
            &kcm_bin,
            vec![
                format!("--kubeconfig={}", s(&kcm_kubeconfig)),
                // Serving only a health endpoint would need another free port and delegated
                // authn; nothing in the tests reads it.
                "--secure-port=0".into(),
                "--leader-elect=false".into(),
                "--use-service-account-credentials=true".into(),
                format!("--service-account-private-key-file={}", s(&pki.sa_key)),
                format!("--root-ca-file={}", s(&pki.ca.cert)),
                format!("--cluster-signing-cert-file={}", s(&pki.ca.cert)),
                format!("--cluster-signing-key-file={}", s(&pki.ca.key)),
                format!("--service-cluster-ip-range={SERVICE_CIDR}"),
                std::iter::once("--controllers=*".to_string())
                    .chain(options.disabled_controllers.iter().map(|c| format!("-{c}")))
                    .collect::<Vec<_>>()
                    .join(","),
                "--v=1".into(),
            ],
            logs.join("kube-controller-manager.log"),
            pid_file("kube-controller-manager"),
        )?;
        let scheduler = Component::spawn(
            "kube-scheduler",
            &scheduler_bin,
            vec![
                format!("--kubeconfig={}", s(&scheduler_kubeconfig)),
                "--secure-port=0".into(),
                "--leader-elect=false".into(),
                "--v=1".into(),
            ],
            logs.join("kube-scheduler.log"),
            pid_file("kube-scheduler"),
        )?;

        let mut cp = ControlPlane {
            scheduler,
            controller_manager: kcm,
            apiserver,
            etcd,
            dir,
            pki,
            kubectl,
            server,
            admin_kubeconfig,
            startup: Duration::ZERO,
            token_duration: options
                .token_duration
                .clone()
                .unwrap_or_else(|| TEST_TOKEN_DURATION.into()),
        };
        cp.wait_ready(START_TIMEOUT.saturating_sub(t0.elapsed()))?;
        cp.wait_for(
            "the default ServiceAccount (made by kube-controller-manager)",
            START_TIMEOUT.saturating_sub(t0.elapsed()),
            true,
            |cp| {
                cp.kubectl(&[
                    "-n",
                    "default",
                    "get",
                    "serviceaccount",
                    "default",
                    "-o",
                    "name",
                ])
                .is_ok()
            },
        )?;
        cp.startup = t0.elapsed();
        if options.persistent_dir.is_some() {
            let state = serde_json::json!({
                "server": cp.server,
                "startup_ms": cp.startup.as_millis() as u64,
                "token_duration": cp.token_duration,
            });
            let path = d.join(STATE_FILE);
            std::fs::write(&path, state.to_string())
                .map_err(io_err(format!("write {}", path.display())))?;
        }
        Ok(cp)
    }

    /// Attaches to the persistent control plane in `dir` (started by
    /// [`ControlPlane::start_persistent`], maybe by another process). Dropping the handle leaves
    /// it running. `Err` if `dir` holds none, or one of its components is not running.
    pub fn open(dir: &Path) -> Result<ControlPlane, KubeError> {
        let state_path = dir.join(STATE_FILE);
        let text = std::fs::read_to_string(&state_path).map_err(io_err(format!(
            "read {} (no control plane was started there)",
            state_path.display()
        )))?;
        let state: serde_json::Value = serde_json::from_str(&text).map_err(|e| KubeError::Io {
            what: format!("parse {}", state_path.display()),
            reason: e.to_string(),
        })?;
        let field = |k: &str| state.get(k).and_then(serde_json::Value::as_str);
        let server = field("server")
            .ok_or_else(|| KubeError::Io {
                what: format!("parse {}", state_path.display()),
                reason: "no server".into(),
            })?
            .to_string();
        let token_duration = field("token_duration")
            .unwrap_or(TEST_TOKEN_DURATION)
            .to_string();
        let startup = Duration::from_millis(
            state
                .get("startup_ms")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0),
        );
        let logs = dir.join("logs");
        let [etcd, apiserver, controller_manager, scheduler] = COMPONENTS
            .map(|c| Component::adopt(c, pid_file(dir, c), logs.join(format!("{c}.log"))));
        let mut cp = ControlPlane {
            scheduler,
            controller_manager,
            apiserver,
            etcd,
            dir: Home::Persistent(dir.to_path_buf()),
            pki: Pki::open(&dir.join("pki"))?,
            kubectl: binary("kubectl")?,
            server,
            admin_kubeconfig: dir.join("admin.kubeconfig"),
            startup,
            token_duration,
        };
        cp.etcd.check_alive()?;
        cp.apiserver.check_alive()?;
        cp.controller_manager.check_alive()?;
        cp.scheduler.check_alive()?;
        Ok(cp)
    }

    /// Stops the persistent control plane in `dir` by its PID files (scheduler and
    /// controller-manager first, etcd last; SIGTERM, SIGKILL after 10 s; a PID now used by
    /// another process is left alone) and removes `dir`. Nothing there: nothing to do.
    pub fn stop_persistent(dir: &Path) -> Result<StopReport, KubeError> {
        let mut report = StopReport::default();
        if !dir.exists() {
            return Ok(report);
        }
        let marker = dir.display().to_string();
        for c in COMPONENTS.iter().rev() {
            if stop_pid_file(&pid_file(dir, c), &marker)? {
                report.stopped.push(c.to_string());
            }
        }
        std::fs::remove_dir_all(dir).map_err(io_err(format!("remove {}", dir.display())))?;
        report.removed_dir = true;
        Ok(report)
    }

    /// How long [`ControlPlane::start`] took, from finding the binaries to a usable cluster.
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// The apiserver URL, `https://127.0.0.1:<port>`.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The cluster CA (it signed the apiserver's serving certificate).
    pub fn ca_cert(&self) -> &Path {
        &self.pki.ca.cert
    }

    /// The certificates and keys of this control plane (to mint more client certificates).
    pub fn pki(&self) -> &Pki {
        &self.pki
    }

    /// The control plane's directory: a private temp dir, or the persistent one (logs are in
    /// `logs/`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A kubeconfig of a `system:masters` user (cluster-admin): for setting up tests only.
    pub fn admin_kubeconfig(&self) -> &Path {
        &self.admin_kubeconfig
    }

    /// The kubectl binary the control plane was built with.
    pub fn kubectl_path(&self) -> &Path {
        &self.kubectl
    }

    /// `kubectl --kubeconfig <admin> args`.
    pub fn kubectl(&self, args: &[&str]) -> Result<Output, KubeError> {
        self.kubectl_as(&self.admin_kubeconfig, args, None)
    }

    /// `kubectl apply -f <dir>` of CustomResourceDefinitions as admin, then waits (60 s) until
    /// every CRD of the cluster is Established, so objects of those kinds can be created next.
    pub fn apply_crds(&self, dir: &Path) -> Result<(), KubeError> {
        let dir = dir.to_string_lossy();
        self.kubectl(&["apply", "-f", &dir])?;
        self.kubectl(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd",
            "--all",
        ])?;
        Ok(())
    }

    /// `kubectl <args> -o jsonpath=<expr>` as admin: its output. A failing kubectl fails the
    /// calling test, naming the command and its stderr.
    pub fn jsonpath(&self, args: &[&str], expr: &str) -> String {
        let o = format!("jsonpath={expr}");
        let mut all = args.to_vec();
        all.extend(["-o", &o]);
        self.kubectl(&all).unwrap_or_else(|e| panic!("{e}")).stdout
    }

    /// `kubectl --kubeconfig <admin> args` with `input` on stdin (e.g. `apply -f -`).
    pub fn kubectl_stdin(&self, args: &[&str], input: &str) -> Result<Output, KubeError> {
        self.kubectl_as(&self.admin_kubeconfig, args, Some(input))
    }

    /// `kubectl --kubeconfig <kubeconfig> args`: to act as another user.
    pub fn kubectl_as(
        &self,
        kubeconfig: &Path,
        args: &[&str],
        input: Option<&str>,
    ) -> Result<Output, KubeError> {
        let kc = format!("--kubeconfig={}", kubeconfig.display());
        let mut all = vec![kc.as_str()];
        all.extend_from_slice(args);
        run(&self.kubectl, &all, input)
    }

    /// A kubeconfig that authenticates as ServiceAccount `namespace/name` with a bound token
    /// from the TokenRequest API (`kubectl create token`, valid one hour unless
    /// [`Options::token_duration`] says otherwise). Creates the
    /// ServiceAccount if it does not exist yet.
    pub fn service_account_kubeconfig(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<PathBuf, KubeError> {
        self.token_kubeconfig(namespace, name, None)
    }

    /// Like [`ControlPlane::service_account_kubeconfig`], with a token bound to Node `node`
    /// (`kubectl create token --bound-object-kind Node --bound-object-name <node>`): the
    /// apiserver puts the node name into the user's extra info
    /// (`authentication.kubernetes.io/node-name`), as for a pod-bound token of a pod on that
    /// node. The Node must exist.
    pub fn node_bound_service_account_kubeconfig(
        &self,
        namespace: &str,
        name: &str,
        node: &str,
    ) -> Result<PathBuf, KubeError> {
        self.token_kubeconfig(namespace, name, Some(("Node", node)))
    }

    /// Like [`ControlPlane::service_account_kubeconfig`], with a token bound to Pod
    /// `namespace/pod` (which must exist and run as that ServiceAccount): the token a kubelet
    /// projects into the pod. Its user carries the pod's node as
    /// `authentication.kubernetes.io/node-name`.
    pub fn pod_bound_service_account_kubeconfig(
        &self,
        namespace: &str,
        name: &str,
        pod: &str,
    ) -> Result<PathBuf, KubeError> {
        self.token_kubeconfig(namespace, name, Some(("Pod", pod)))
    }

    /// `bound`: (kind, name) of the object the token is bound to.
    fn token_kubeconfig(
        &self,
        namespace: &str,
        name: &str,
        bound: Option<(&str, &str)>,
    ) -> Result<PathBuf, KubeError> {
        if self
            .kubectl(&["-n", namespace, "get", "serviceaccount", name, "-o", "name"])
            .is_err()
        {
            self.kubectl(&["-n", namespace, "create", "serviceaccount", name])?;
        }
        let duration = format!("--duration={}", self.token_duration);
        let mut args = vec!["-n", namespace, "create", "token", name, &duration];
        if let Some((kind, object)) = bound {
            args.extend(["--bound-object-kind", kind, "--bound-object-name", object]);
        }
        let token = self.kubectl(&args)?.stdout.trim().to_string();
        let user = format!("system:serviceaccount:{namespace}:{name}");
        let file = match bound {
            Some((kind, object)) => format!(
                "sa-{namespace}-{name}-{}-{object}.kubeconfig",
                kind.to_lowercase()
            ),
            None => format!("sa-{namespace}-{name}.kubeconfig"),
        };
        let path = self.dir.path().join(file);
        std::fs::write(
            &path,
            kubeconfig(
                &self.server,
                &self.pki.ca.cert,
                &user,
                &format!("    token: {token}\n"),
            ),
        )
        .map_err(io_err(format!("write {}", path.display())))?;
        Ok(path)
    }

    /// A kubeconfig with a client certificate for `user` in `groups`, e.g. a kubelet's
    /// (`system:node:<name>`, `["system:nodes"]`).
    pub fn client_kubeconfig(&self, user: &str, groups: &[&str]) -> Result<PathBuf, KubeError> {
        let stem: String = user
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let pair = self
            .pki
            .client_cert(&format!("user-{stem}"), user, groups)?;
        let path = self.dir.path().join(format!("user-{stem}.kubeconfig"));
        std::fs::write(
            &path,
            kubeconfig(
                &self.server,
                &self.pki.ca.cert,
                user,
                &cert_credentials(&pair),
            ),
        )
        .map_err(io_err(format!("write {}", path.display())))?;
        Ok(path)
    }

    /// Stops the apiserver (SIGTERM, graceful; SIGKILL after 10 s): every watch is cut, every
    /// request fails until [`ControlPlane::start_apiserver`].
    pub fn stop_apiserver(&mut self) {
        self.apiserver.stop();
    }

    /// Kills the apiserver (SIGKILL), as a crash or a lost machine would: no graceful
    /// shutdown (which takes about 10 s here), connections just break.
    pub fn kill_apiserver(&mut self) {
        self.apiserver.kill();
    }

    /// Starts the apiserver again on the same port, with the same etcd, and waits for /readyz.
    pub fn start_apiserver(&mut self) -> Result<(), KubeError> {
        self.apiserver.restart()?;
        self.wait_ready(START_TIMEOUT)
    }

    /// PIDs of the processes this control plane runs (name, pid), for tests that check cleanup.
    pub fn pids(&self) -> Vec<(String, u32)> {
        [
            &self.etcd,
            &self.apiserver,
            &self.controller_manager,
            &self.scheduler,
        ]
        .iter()
        .filter_map(|c| c.pid().map(|p| (c.name().to_string(), p)))
        .collect()
    }

    /// Log file of a component (`etcd`, `kube-apiserver`, `kube-controller-manager`, `kube-scheduler`).
    pub fn log_path(&self, component: &str) -> PathBuf {
        self.dir
            .path()
            .join("logs")
            .join(format!("{component}.log"))
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<(), KubeError> {
        self.wait_for("kube-apiserver /readyz", timeout, false, |cp| {
            cp.kubectl(&["get", "--raw", "/readyz"])
                .is_ok_and(|o| o.stdout.trim() == "ok")
        })
    }

    /// Polls `probe` until true; fails early, with the log, if a component exited.
    fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        all_components: bool,
        probe: impl Fn(&ControlPlane) -> bool,
    ) -> Result<(), KubeError> {
        let start = Instant::now();
        loop {
            if probe(self) {
                return Ok(());
            }
            self.etcd.check_alive()?;
            self.apiserver.check_alive()?;
            if all_components {
                self.controller_manager.check_alive()?;
                self.scheduler.check_alive()?;
            }
            if start.elapsed() > timeout {
                let log = if all_components {
                    self.controller_manager.log()
                } else {
                    self.apiserver.log()
                };
                return Err(KubeError::Timeout {
                    what: what.into(),
                    after: timeout,
                    log: log.display().to_string(),
                    log_tail: log_tail(log),
                });
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}
