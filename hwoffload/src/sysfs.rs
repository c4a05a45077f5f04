//! SR-IOV discovery from sysfs, with the sysfs root as a parameter so the same code reads the
//! real `/sys` (`Sysfs::new("/")`) and fixture trees shaped like the kernel's.
//!
//! Kernel facts this relies on (Documentation/ABI/testing/sysfs-bus-pci, sysfs-class-net):
//! - `/sys/class/net/<if>` links to the netdev's directory; `device` inside it links to its PCI
//!   function. A PF's function has `sriov_totalvfs`, `sriov_numvfs` and `virtfn<N>` links to its VFs;
//!   a VF's function has `physfn`, `driver` (when bound) and `net/<if>` (when a netdev driver is bound).
//! - In switchdev mode the representors are netdevs of the PF's function (their `device` is the PF)
//!   with `phys_switch_id` equal to the PF's and a `phys_port_name` such as `pf0vf3`; the PF netdev
//!   itself becomes the uplink representor (`p0`). Reading either attribute fails with
//!   EOPNOTSUPP on netdevs that have none.
//! - `sriov_numvfs` only accepts a change from 0 or to 0 (EBUSY otherwise).

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::pci::PciAddress;
use crate::port_name::PortName;

/// Errors of sysfs discovery and of `sriov_numvfs` changes; each names the file involved.
#[derive(Debug, thiserror::Error)]
pub enum SysfsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path}: {value:?} is not {expected}")]
    Parse {
        path: PathBuf,
        value: String,
        expected: &'static str,
    },
    #[error("{path} is a dangling symlink (to {target}): the device it names is gone")]
    DanglingLink { path: PathBuf, target: PathBuf },
    #[error("no network interface {netdev}: {path} does not exist")]
    NoSuchNetdev { netdev: String, path: PathBuf },
    #[error("{netdev} is not an SR-IOV physical function: {path} does not exist")]
    NotSriovCapable { netdev: String, path: PathBuf },
    #[error("PCI device {pci} does not exist ({path} is missing)")]
    NoSuchPciDevice { pci: PciAddress, path: PathBuf },
    #[error("PCI device {pci} is not an SR-IOV virtual function ({path} is missing)")]
    NotAVirtualFunction { pci: PciAddress, path: PathBuf },
    #[error(
        "the PF {pf} of VF {vf} has no network interface (no netdev under {path}): is its driver loaded?"
    )]
    PfWithoutNetdev {
        pf: PciAddress,
        vf: PciAddress,
        path: PathBuf,
    },
    #[error("VF {vf} points to PF {pf} ({pf_netdev}) but the PF lists no virtfn link to it")]
    VfNotListed {
        vf: PciAddress,
        pf: PciAddress,
        pf_netdev: String,
    },
    #[error("{netdev}: cannot set {requested} VFs, the device supports at most {total} ({path})")]
    TooManyVfs {
        netdev: String,
        requested: u32,
        total: u32,
        path: PathBuf,
    },
    #[error("cannot write {value:?} to {path}: {source}{hint}")]
    Write {
        path: PathBuf,
        value: String,
        source: io::Error,
        hint: &'static str,
    },
}

/// A sysfs tree: `/` on a node, a fixture directory in tests.
#[derive(Debug, Clone)]
pub struct Sysfs {
    root: PathBuf,
}

/// An SR-IOV physical function and what hangs off it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhysicalFunction {
    pub netdev: String,
    pub pci_address: PciAddress,
    pub driver: Option<String>,
    pub total_vfs: u32,
    pub num_vfs: u32,
    /// `phys_switch_id` (hex), present when the NIC's eswitch exposes ports (switchdev-capable).
    pub switch_id: Option<String>,
    /// The PF netdev's own `phys_port_name` (`p0` when it is the uplink representor).
    pub port_name: Option<PortName>,
    /// The PF number representors use (`pf<N>vf<M>`): from `p<N>`, else the PCI function.
    pub pf_number: u32,
    /// The uplink representor netdev (in switchdev mode, usually the PF netdev itself).
    pub uplink_representor: Option<String>,
    pub vfs: Vec<VirtualFunction>,
    /// Netdevs on the same switch whose `phys_port_name` could not be parsed: `(netdev, value)`.
    pub unparsed_port_names: Vec<(String, String)>,
}

/// One VF of a PF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualFunction {
    /// N of `virtfn<N>`; the VF number in `pf<M>vf<N>`.
    pub index: u32,
    pub pci_address: PciAddress,
    /// The bound driver (`mlx5_core`, `vfio-pci`, ...), `None` when unbound.
    pub driver: Option<String>,
    /// The VF's own netdev, present only while a netdev driver is bound to it.
    pub netdev: Option<String>,
    /// Its representor netdev, present in switchdev mode.
    pub representor: Option<String>,
}

/// A VF found by its PCI address, with its PF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VfLocation {
    pub pf: PhysicalFunction,
    pub vf: VirtualFunction,
}

/// What `set_num_vfs` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumVfsChange {
    pub netdev: String,
    pub previous: u32,
    pub requested: u32,
    /// The values written to `sriov_numvfs`, in order (empty: nothing to change).
    pub writes: Vec<u32>,
}

#[derive(Debug, Clone)]
struct NetdevInfo {
    name: String,
    pci: Option<PciAddress>,
    switch_id: Option<String>,
    port_name_raw: Option<String>,
    sriov_capable: bool,
}

impl NetdevInfo {
    fn port_name(&self) -> Option<Result<PortName, String>> {
        self.port_name_raw
            .as_ref()
            .map(|raw| raw.parse::<PortName>().map_err(|_| raw.clone()))
    }

    /// A PF netdev: on an SR-IOV capable function and not a representor (representors of
    /// switchdev NICs hang off the PF's function too).
    fn is_pf_candidate(&self) -> bool {
        self.sriov_capable && matches!(self.port_name(), None | Some(Ok(PortName::Uplink { .. })))
    }
}

const EOPNOTSUPP: i32 = 95;

fn read_trimmed(path: &Path) -> Result<String, SysfsError> {
    fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|source| SysfsError::Read {
            path: path.to_path_buf(),
            source,
        })
}

/// Attributes the kernel refuses with EOPNOTSUPP (or that are absent) read as `None`.
fn read_optional(path: &Path) -> Result<Option<String>, SysfsError> {
    match fs::read_to_string(path) {
        Ok(s) => {
            let s = s.trim();
            Ok((!s.is_empty()).then(|| s.to_string()))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(EOPNOTSUPP) => {
            Ok(None)
        }
        Err(source) => Err(SysfsError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn read_u32(path: &Path) -> Result<u32, SysfsError> {
    let value = read_trimmed(path)?;
    value.parse().map_err(|_| SysfsError::Parse {
        path: path.to_path_buf(),
        value,
        expected: "a non-negative integer",
    })
}

/// The final path component of a symlink's target (`driver` → `mlx5_core`), `None` if absent.
fn link_name(path: &Path) -> Option<String> {
    let target = fs::read_link(path).ok()?;
    Some(target.file_name()?.to_string_lossy().into_owned())
}

/// Follows a symlink to a PCI function directory and parses its name.
fn resolve_pci(link: &Path) -> Result<Option<PciAddress>, SysfsError> {
    if fs::symlink_metadata(link).is_err() {
        return Ok(None);
    }
    let resolved = fs::canonicalize(link).map_err(|_| SysfsError::DanglingLink {
        path: link.to_path_buf(),
        target: fs::read_link(link).unwrap_or_default(),
    })?;
    let name = resolved
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    name.parse().map(Some).map_err(|_| SysfsError::Parse {
        path: link.to_path_buf(),
        value: name,
        expected: "a link to a PCI function (DDDD:BB:DD.F)",
    })
}

fn first_dir_entry(dir: &Path) -> Option<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names.into_iter().next()
}

impl Sysfs {
    /// `root` is the directory holding `sys/` (`/` on a node).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Sysfs { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn class_net(&self) -> PathBuf {
        self.root.join("sys/class/net")
    }

    fn pci_device_dir(&self, pci: &PciAddress) -> PathBuf {
        self.root.join("sys/bus/pci/devices").join(pci.to_string())
    }

    fn netdevs(&self) -> Result<Vec<NetdevInfo>, SysfsError> {
        // Only listing class/net can fail: a sysfs without it is not a sysfs.
        let class_net = self.class_net();
        let entries = fs::read_dir(&class_net).map_err(|source| SysfsError::Read {
            path: class_net.clone(),
            source,
        })?;
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let dir = class_net.join(&name);
            let device = dir.join("device");
            // A netdev whose device link dangles is not one we can use; other netdevs matter more.
            let pci = resolve_pci(&device).ok().flatten();
            out.push(NetdevInfo {
                pci,
                // Drivers refuse these attributes in assorted ways (EOPNOTSUPP, EINVAL, ENODATA)
                // and netdevs can vanish mid-scan: whatever cannot be read is no switch port.
                switch_id: read_optional(&dir.join("phys_switch_id")).ok().flatten(),
                port_name_raw: read_optional(&dir.join("phys_port_name")).ok().flatten(),
                sriov_capable: pci.is_some() && device.join("sriov_totalvfs").exists(),
                name,
            });
        }
        Ok(out)
    }

    /// All SR-IOV physical functions with their VFs and representors, sorted by netdev name.
    pub fn physical_functions(&self) -> Result<Vec<PhysicalFunction>, SysfsError> {
        let netdevs = self.netdevs()?;
        let mut by_pci: BTreeMap<PciAddress, &NetdevInfo> = BTreeMap::new();
        for n in netdevs.iter().filter(|n| n.is_pf_candidate()) {
            if let Some(pci) = n.pci {
                by_pci.entry(pci).or_insert(n);
            }
        }
        let mut pfs = by_pci
            .values()
            .map(|n| self.load_pf(n, &netdevs))
            .collect::<Result<Vec<_>, _>>()?;
        pfs.sort_by(|a, b| a.netdev.cmp(&b.netdev));
        Ok(pfs)
    }

    /// One physical function by netdev name.
    pub fn physical_function(&self, netdev: &str) -> Result<PhysicalFunction, SysfsError> {
        let netdevs = self.netdevs()?;
        let info =
            netdevs
                .iter()
                .find(|n| n.name == netdev)
                .ok_or_else(|| SysfsError::NoSuchNetdev {
                    netdev: netdev.to_string(),
                    path: self.class_net().join(netdev),
                })?;
        if !info.sriov_capable {
            return Err(SysfsError::NotSriovCapable {
                netdev: netdev.to_string(),
                path: self.class_net().join(netdev).join("device/sriov_totalvfs"),
            });
        }
        self.load_pf(info, &netdevs)
    }

    fn load_pf(
        &self,
        pf: &NetdevInfo,
        netdevs: &[NetdevInfo],
    ) -> Result<PhysicalFunction, SysfsError> {
        let device = self.class_net().join(&pf.name).join("device");
        let pci_address = pf.pci.ok_or_else(|| SysfsError::NotSriovCapable {
            netdev: pf.name.clone(),
            path: device.clone(),
        })?;
        let total_vfs = read_u32(&device.join("sriov_totalvfs"))?;
        let num_vfs = read_u32(&device.join("sriov_numvfs"))?;
        let port_name = match pf.port_name() {
            Some(Ok(p)) => Some(p),
            _ => None,
        };
        let pf_number = match port_name {
            Some(PortName::Uplink { port, .. }) => port,
            _ => u32::from(pci_address.function),
        };
        let same_switch: Vec<&NetdevInfo> = match &pf.switch_id {
            Some(id) => netdevs
                .iter()
                .filter(|n| n.switch_id.as_ref() == Some(id))
                .collect(),
            None => Vec::new(),
        };
        let uplink_representor = same_switch
            .iter()
            .find(|n| matches!(n.port_name(), Some(Ok(PortName::Uplink { port, split: None })) if port == pf_number))
            .map(|n| n.name.clone());
        let unparsed_port_names = same_switch
            .iter()
            .filter_map(|n| match n.port_name() {
                Some(Err(raw)) => Some((n.name.clone(), raw)),
                _ => None,
            })
            .collect();

        let mut vfs = Vec::new();
        let entries = fs::read_dir(&device).map_err(|source| SysfsError::Read {
            path: device.clone(),
            source,
        })?;
        for entry in entries.filter_map(|e| e.ok()) {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(index) = name
                .strip_prefix("virtfn")
                .and_then(|i| i.parse::<u32>().ok())
            else {
                continue;
            };
            let link = device.join(&name);
            let Some(vf_pci) = resolve_pci(&link)? else {
                continue;
            };
            let vf_dir = fs::canonicalize(&link).map_err(|source| SysfsError::Read {
                path: link.clone(),
                source,
            })?;
            let representor = same_switch
                .iter()
                .find(|n| match n.port_name() {
                    Some(Ok(PortName::VfRepresentor {
                        controller: None,
                        pf: Some(p),
                        vf,
                    })) => p == pf_number && vf == index,
                    // Legacy mlx5 names carry no PF number: the representor's function tells.
                    Some(Ok(PortName::VfRepresentor {
                        controller: None,
                        pf: None,
                        vf,
                    })) => vf == index && n.pci.is_none_or(|p| p == pci_address),
                    _ => false,
                })
                .map(|n| n.name.clone());
            vfs.push(VirtualFunction {
                index,
                pci_address: vf_pci,
                driver: link_name(&vf_dir.join("driver")),
                netdev: first_dir_entry(&vf_dir.join("net")),
                representor,
            });
        }
        vfs.sort_by_key(|v| v.index);

        Ok(PhysicalFunction {
            netdev: pf.name.clone(),
            pci_address,
            driver: link_name(&device.join("driver")),
            total_vfs,
            num_vfs,
            switch_id: pf.switch_id.clone(),
            port_name,
            pf_number,
            uplink_representor,
            vfs,
            unparsed_port_names,
        })
    }

    /// Finds a VF by PCI address (the CNI `deviceID` Multus and the SR-IOV device plugin pass).
    pub fn find_vf(&self, vf: &PciAddress) -> Result<VfLocation, SysfsError> {
        let dir = self.pci_device_dir(vf);
        if fs::symlink_metadata(&dir).is_err() {
            return Err(SysfsError::NoSuchPciDevice {
                pci: *vf,
                path: dir,
            });
        }
        let physfn = dir.join("physfn");
        let pf_pci = resolve_pci(&physfn)?.ok_or_else(|| SysfsError::NotAVirtualFunction {
            pci: *vf,
            path: physfn.clone(),
        })?;
        let netdevs = self.netdevs()?;
        let pf_info = netdevs
            .iter()
            .find(|n| n.is_pf_candidate() && n.pci == Some(pf_pci))
            .ok_or_else(|| SysfsError::PfWithoutNetdev {
                pf: pf_pci,
                vf: *vf,
                path: self.pci_device_dir(&pf_pci).join("net"),
            })?;
        let pf = self.load_pf(pf_info, &netdevs)?;
        let found = pf.vfs.iter().find(|v| v.pci_address == *vf).cloned();
        match found {
            Some(vf) => Ok(VfLocation { pf, vf }),
            None => Err(SysfsError::VfNotListed {
                vf: *vf,
                pf: pf_pci,
                pf_netdev: pf.netdev,
            }),
        }
    }

    /// Sets the number of VFs of a PF, writing 0 first when changing a non-zero count (the kernel
    /// refuses non-zero → non-zero with EBUSY).
    pub fn set_num_vfs(&self, pf_netdev: &str, requested: u32) -> Result<NumVfsChange, SysfsError> {
        let netdev_dir = self.class_net().join(pf_netdev);
        if fs::symlink_metadata(&netdev_dir).is_err() {
            return Err(SysfsError::NoSuchNetdev {
                netdev: pf_netdev.to_string(),
                path: netdev_dir,
            });
        }
        let device = netdev_dir.join("device");
        let total_path = device.join("sriov_totalvfs");
        if !total_path.exists() {
            return Err(SysfsError::NotSriovCapable {
                netdev: pf_netdev.to_string(),
                path: total_path,
            });
        }
        let total = read_u32(&total_path)?;
        let num_path = device.join("sriov_numvfs");
        if requested > total {
            return Err(SysfsError::TooManyVfs {
                netdev: pf_netdev.to_string(),
                requested,
                total,
                path: total_path,
            });
        }
        let previous = read_u32(&num_path)?;
        let writes = match (previous, requested) {
            (p, r) if p == r => vec![],
            (0, r) => vec![r],
            (_, 0) => vec![0],
            (_, r) => vec![0, r],
        };
        for value in &writes {
            write_attr(&num_path, &value.to_string())?;
        }
        Ok(NumVfsChange {
            netdev: pf_netdev.to_string(),
            previous,
            requested,
            writes,
        })
    }
}

fn write_attr(path: &Path, value: &str) -> Result<(), SysfsError> {
    use std::io::Write;
    let result = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .and_then(|mut f| f.write_all(value.as_bytes()));
    result.map_err(|source| {
        let hint = match source.raw_os_error() {
            Some(libc::EBUSY) => " (VFs in use or a non-zero count is set: write 0 first and make sure no VF is assigned)",
            Some(libc::ENOMEM) | Some(libc::ERANGE) => " (the firmware cannot create that many VFs: check SRIOV_EN / NUM_OF_VFS in the NIC firmware settings)",
            Some(libc::EINVAL) => " (value rejected by the driver)",
            Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EROFS) => " (needs root and a writable /sys)",
            _ => "",
        };
        SysfsError::Write {
            path: path.to_path_buf(),
            value: value.to_string(),
            source,
            hint,
        }
    })
}
