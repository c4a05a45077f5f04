//! The allocation records of manifest mode: one JSON file per pod interface (and per node join
//! port) under the state directory, written atomically, read back at start to recover the
//! IPAM. The node agent reads the same files to learn a pod's addresses. Format: see
//! `docs/controller.md`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ipam::{ExistingAllocation, MacAddr, OwnerKey, RecordSource};
use ferrovn_api::annotations::{Annotations, OVN_PROVIDER, PodKey, annotation_key};

/// The format version in every file.
pub const FORMAT_VERSION: u32 = 1;

/// One allocation record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocationRecord {
    pub version: u32,
    /// `pod` or `node`.
    pub kind: String,
    /// Empty for nodes.
    pub namespace: String,
    /// The pod (or node) name.
    pub name: String,
    /// `ovn` for the primary interface, `<nad>.<namespace>.ovn` for an attachment.
    pub provider: String,
    /// The node the pod runs on (empty while unscheduled).
    pub node: String,
    /// The Logical_Switch_Port (the OVS interface's `external_ids:iface-id`); empty for
    /// IPAM-only attachments.
    pub port_name: String,
    /// Kube-OVN's pod annotations for this interface: `<provider>.kubernetes.io/ip_address`,
    /// `mac_address`, `cidr`, `gateway`, `logical_switch`, `logical_router`, `allocated`.
    pub annotations: Annotations,
}

impl AllocationRecord {
    fn get(&self, key: PodKey) -> Option<&str> {
        self.annotations
            .get(&annotation_key(&self.provider, key.name()))
            .map(String::as_str)
    }

    /// The owner key the IPAM knows this record by.
    pub fn owner(&self) -> OwnerKey {
        if self.kind == "node" {
            crate::controller::desired::node_owner(&self.name)
        } else {
            OwnerKey::new(&self.namespace, &self.name, &self.provider)
        }
    }

    /// The record as an IPAM recovery record (`None` if it holds no usable allocation).
    pub fn to_existing(&self) -> Option<ExistingAllocation> {
        let subnet = self.get(PodKey::LogicalSwitch)?.to_string();
        let ips: Vec<IpAddr> = self
            .get(PodKey::IpAddress)?
            .split(',')
            .filter_map(|s| s.trim().parse().ok())
            .collect();
        if ips.is_empty() {
            return None;
        }
        let mac = self
            .get(PodKey::MacAddress)
            .and_then(|m| m.parse::<MacAddr>().ok());
        Some(ExistingAllocation {
            owner: self.owner(),
            subnet,
            ips,
            mac,
            source: RecordSource::PodAnnotation,
        })
    }
}

/// Why a record could not be written.
#[derive(Debug, thiserror::Error)]
#[error("allocation record {}: {source}", path.display())]
pub struct StateError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// The path of a record: `allocations/<namespace>/<pod>.json` for a primary interface,
/// `allocations/<namespace>/<pod>@<provider>.json` for an attachment, `nodes/<node>.json`.
pub fn record_path(state_dir: &Path, r: &AllocationRecord) -> PathBuf {
    if r.kind == "node" {
        return state_dir.join("nodes").join(format!("{}.json", r.name));
    }
    let file = if r.provider == OVN_PROVIDER {
        format!("{}.json", r.name)
    } else {
        format!("{}@{}.json", r.name, r.provider)
    };
    state_dir.join("allocations").join(&r.namespace).join(file)
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let err = |source| StateError {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(err)?;
    let tmp = dir.join(format!(
        ".{}.tmp.{}",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("record"),
        std::process::id()
    ));
    let mut f = fs::File::create(&tmp).map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)?;
    fs::rename(&tmp, path).map_err(err)
}

/// The records on disk, and what the last pass wrote (so unchanged files are not rewritten).
#[derive(Debug, Default)]
pub struct StateFiles {
    pub dir: PathBuf,
    /// Path → hash of the content last written or read (not the bytes: 100k records).
    written: BTreeMap<PathBuf, u64>,
}

/// What one [`StateFiles::sync`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateSync {
    pub written: usize,
    pub removed: usize,
}

impl StateFiles {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        StateFiles {
            dir: dir.into(),
            written: BTreeMap::new(),
        }
    }

    /// Every readable record under the state directory, and one line per unreadable file.
    pub fn read_all(&mut self) -> (Vec<AllocationRecord>, Vec<String>) {
        let mut files = Vec::new();
        for sub in ["allocations", "nodes"] {
            collect_json(&self.dir.join(sub), &mut files);
        }
        files.sort();
        let mut out = Vec::new();
        let mut bad = Vec::new();
        for f in files {
            match fs::read(&f) {
                Ok(bytes) => match serde_json::from_slice::<AllocationRecord>(&bytes) {
                    Ok(r) => {
                        self.written.insert(f.clone(), content_hash(&bytes));
                        out.push(r);
                    }
                    Err(e) => bad.push(format!("{}: {e}", f.display())),
                },
                Err(e) => bad.push(format!("{}: {e}", f.display())),
            }
        }
        (out, bad)
    }

    /// Makes the directory hold exactly `records`: writes new and changed ones, removes the
    /// files of records no longer present (only `*.json` files this layout names).
    pub fn sync(&mut self, records: &[AllocationRecord]) -> Result<StateSync, StateError> {
        let mut out = StateSync::default();
        let mut keep = BTreeSet::new();
        for r in records {
            let path = record_path(&self.dir, r);
            let mut bytes = serde_json::to_vec_pretty(r).unwrap_or_default();
            bytes.push(b'\n');
            keep.insert(path.clone());
            let hash = content_hash(&bytes);
            if self.written.get(&path) == Some(&hash) {
                continue;
            }
            // First sight of this file in this process: it may be on disk already.
            let known = self.written.contains_key(&path);
            if !known && fs::read(&path).ok().as_ref() == Some(&bytes) {
                self.written.insert(path, hash);
                continue;
            }
            write_atomic(&path, &bytes)?;
            self.written.insert(path, hash);
            out.written += 1;
        }
        let mut on_disk = Vec::new();
        for sub in ["allocations", "nodes"] {
            collect_json(&self.dir.join(sub), &mut on_disk);
        }
        for f in on_disk {
            if !keep.contains(&f) {
                match fs::remove_file(&f) {
                    Ok(()) => out.removed += 1,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(source) => return Err(StateError { path: f, source }),
                }
                self.written.remove(&f);
                if let Some(parent) = f.parent() {
                    // Only succeeds when empty: leaves namespaces with other pods alone.
                    let _ = fs::remove_dir(parent);
                }
            }
        }
        Ok(out)
    }
}

fn content_hash(bytes: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

fn collect_json(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let hidden = e.file_name().to_string_lossy().starts_with('.');
        if hidden {
            continue;
        }
        if p.is_dir() {
            collect_json(&p, out);
        } else if p.extension().and_then(|x| x.to_str()) == Some("json") {
            out.push(p);
        }
    }
}
