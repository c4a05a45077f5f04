//! The control plane's certificates and keys, made with the `openssl` command (Debian `openssl`).
//!
//! One CA signs everything: the apiserver's serving certificate, the client certificates of the
//! admin, controller-manager, scheduler, kubelets and of the apiserver itself (towards kubelets).
//! The service-account signing key is a separate key pair. EC P-256 keys: they take
//! milliseconds to make, where RSA takes a noticeable part of a test's start.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::KubeError;

/// Subject alternative names of the apiserver's serving certificate: the loopback address the
/// tests dial, and the in-cluster names and Service IP (first address of 10.96.0.0/16) pods use.
pub const APISERVER_SANS: &str = "IP:127.0.0.1,DNS:localhost,IP:10.96.0.1,DNS:kubernetes,\
DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local";

/// A certificate and its key, as files.
#[derive(Debug, Clone)]
pub struct CertPair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The CA and the service-account key pair of one control plane.
#[derive(Debug, Clone)]
pub struct Pki {
    dir: PathBuf,
    pub ca: CertPair,
    /// Service-account token signing key (private, for the apiserver and controller-manager).
    pub sa_key: PathBuf,
    /// Its public half (for the apiserver's token verification).
    pub sa_pub: PathBuf,
}

fn openssl(args: &[&str]) -> Result<(), KubeError> {
    let out = Command::new("openssl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| KubeError::Spawn {
            program: "openssl (Debian package openssl, installed by `make deps`)".into(),
            reason: e.to_string(),
        })?;
    if out.status.success() {
        return Ok(());
    }
    Err(KubeError::Command {
        command: format!("openssl {}", args.join(" ")),
        status: out.status.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    })
}

fn path_str(p: &Path) -> Result<&str, KubeError> {
    p.to_str().ok_or_else(|| KubeError::Io {
        what: format!("path {}", p.display()),
        reason: "not UTF-8".into(),
    })
}

fn new_key(path: &Path) -> Result<(), KubeError> {
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        path_str(path)?,
    ])
}

impl Pki {
    /// Makes a CA and the service-account key pair in `dir`.
    pub fn create(dir: &Path) -> Result<Pki, KubeError> {
        std::fs::create_dir_all(dir).map_err(|e| KubeError::Io {
            what: format!("create {}", dir.display()),
            reason: e.to_string(),
        })?;
        let ca = CertPair {
            cert: dir.join("ca.crt"),
            key: dir.join("ca.key"),
        };
        new_key(&ca.key)?;
        openssl(&[
            "req",
            "-x509",
            "-new",
            "-key",
            path_str(&ca.key)?,
            "-subj",
            "/CN=ferrovn-testkit-ca",
            "-days",
            "30",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
            "-out",
            path_str(&ca.cert)?,
        ])?;
        let sa_key = dir.join("sa.key");
        let sa_pub = dir.join("sa.pub");
        new_key(&sa_key)?;
        openssl(&[
            "pkey",
            "-in",
            path_str(&sa_key)?,
            "-pubout",
            "-out",
            path_str(&sa_pub)?,
        ])?;
        Ok(Pki {
            dir: dir.into(),
            ca,
            sa_key,
            sa_pub,
        })
    }

    /// The CA and service-account keys [`Pki::create`] made in `dir` earlier (maybe in another
    /// process).
    pub fn open(dir: &Path) -> Result<Pki, KubeError> {
        let pki = Pki {
            dir: dir.into(),
            ca: CertPair {
                cert: dir.join("ca.crt"),
                key: dir.join("ca.key"),
            },
            sa_key: dir.join("sa.key"),
            sa_pub: dir.join("sa.pub"),
        };
        for f in [&pki.ca.cert, &pki.ca.key, &pki.sa_key, &pki.sa_pub] {
            if !f.is_file() {
                return Err(KubeError::Io {
                    what: format!("open the PKI in {}", dir.display()),
                    reason: format!("{} missing", f.display()),
                });
            }
        }
        Ok(pki)
    }

    /// A client certificate for user `cn` in `groups` (X.509 CN and O, as the apiserver reads them).
    pub fn client_cert(
        &self,
        file_stem: &str,
        cn: &str,
        groups: &[&str],
    ) -> Result<CertPair, KubeError> {
        let mut subj = String::new();
        for g in groups {
            subj.push_str(&format!("/O={g}"));
        }
        subj.push_str(&format!("/CN={cn}"));
        self.sign(file_stem, &subj, "extendedKeyUsage=clientAuth")
    }

    /// The apiserver's serving certificate ([`APISERVER_SANS`]).
    pub fn serving_cert(&self, file_stem: &str) -> Result<CertPair, KubeError> {
        self.sign(
            file_stem,
            "/CN=kube-apiserver",
            &format!("extendedKeyUsage=serverAuth\nsubjectAltName={APISERVER_SANS}"),
        )
    }

    fn sign(&self, stem: &str, subj: &str, extensions: &str) -> Result<CertPair, KubeError> {
        let pair = CertPair {
            cert: self.dir.join(format!("{stem}.crt")),
            key: self.dir.join(format!("{stem}.key")),
        };
        let csr = self.dir.join(format!("{stem}.csr"));
        let ext = self.dir.join(format!("{stem}.ext"));
        new_key(&pair.key)?;
        openssl(&[
            "req",
            "-new",
            "-key",
            path_str(&pair.key)?,
            "-subj",
            subj,
            "-out",
            path_str(&csr)?,
        ])?;
        std::fs::write(
            &ext,
            format!("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n{extensions}\n"),
        )
        .map_err(|e| KubeError::Io {
            what: format!("write {}", ext.display()),
            reason: e.to_string(),
        })?;
        openssl(&[
            "x509",
            "-req",
            "-in",
            path_str(&csr)?,
            "-CA",
            path_str(&self.ca.cert)?,
            "-CAkey",
            path_str(&self.ca.key)?,
            // a serial of its own: `-CAcreateserial` shares `ca.srl`, and two nodes' certificates
            // signed at once read it half-written ("Unable to load number")
            "-set_serial",
            &cert_serial(),
            "-days",
            "30",
            "-extfile",
            path_str(&ext)?,
            "-out",
            path_str(&pair.cert)?,
        ])?;
        Ok(pair)
    }
}

/// A certificate serial unique within this CA: the time in nanoseconds, this process and a
/// counter.
fn cert_serial() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("0x{nanos:x}{:08x}{n:08x}", std::process::id())
}
