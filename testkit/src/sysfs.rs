//! Builds sysfs trees shaped like the kernel's (relative symlinks, the same directories and
//! attribute files), for tests here and in the node agent. Nothing here touches the real /sys.
//!
//! Layout written under `<root>/sys`:
//! ```text
//! devices/pci0000:00/0000:00:02.0/<pci>/            one directory per PCI function
//!     sriov_totalvfs, sriov_numvfs, virtfn<N> -> ../<vf pci>     (PF)
//!     physfn -> ../<pf pci>                                     (VF)
//!     driver -> ../../../../bus/pci/drivers/<driver>
//!     net/<netdev>/{phys_switch_id,phys_port_name,device -> ../../../<pci>}
//! class/net/<netdev> -> ../../devices/pci0000:00/0000:00:02.0/<pci>/net/<netdev>
//! bus/pci/devices/<pci> -> ../../../devices/pci0000:00/0000:00:02.0/<pci>
//! devices/virtual/net/lo  (a netdev without a device, as on every host)
//! ```

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

const PCI_PARENT: &str = "devices/pci0000:00/0000:00:02.0";

/// A representor netdev of a VF.
#[derive(Debug, Clone)]
pub struct RepresentorSpec {
    pub netdev: String,
    pub port_name: String,
}

/// A VF to create.
#[derive(Debug, Clone)]
pub struct VfSpec {
    pub pci: String,
    pub driver: Option<String>,
    pub netdev: Option<String>,
    pub representor: Option<RepresentorSpec>,
}

/// A PF to create.
#[derive(Debug, Clone)]
pub struct PfSpec {
    pub netdev: String,
    pub pci: String,
    pub driver: String,
    pub total_vfs: u32,
    pub switch_id: Option<String>,
    pub port_name: Option<String>,
    pub vfs: Vec<VfSpec>,
}

/// A fixture tree rooted at `root` (pass `root` to `Sysfs::new`).
#[derive(Debug, Clone)]
pub struct SysfsFixture {
    root: PathBuf,
}

fn symlink(target: impl AsRef<Path>, link: &Path) -> io::Result<()> {
    if let Some(parent) = link.parent() {
        fs::create_dir_all(parent)?;
    }
    std::os::unix::fs::symlink(target, link)
}

/// Switch id used by `mlx5_dual_port`: both ports of a ConnectX share the system image GUID.
pub const MLX5_SWITCH_ID: &str = "b8599f0300c0ffee";

impl SysfsFixture {
    /// An empty tree with `lo` only.
    pub fn new(root: impl Into<PathBuf>) -> io::Result<Self> {
        let f = SysfsFixture { root: root.into() };
        let lo = f.sys().join("devices/virtual/net/lo");
        fs::create_dir_all(&lo)?;
        fs::write(lo.join("address"), "00:00:00:00:00:00\n")?;
        symlink(
            "../../devices/virtual/net/lo",
            &f.sys().join("class/net/lo"),
        )?;
        for driver in ["mlx5_core", "vfio-pci"] {
            fs::create_dir_all(f.sys().join("bus/pci/drivers").join(driver))?;
        }
        Ok(f)
    }

    /// A ConnectX-5/6 in switchdev mode on port 0 and unused port 1, as mlx5 exposes it:
    /// PF `enp3s0f0np0` (0000:03:00.0, `p0`, 8 VFs possible, 4 created: VF 0-2 on mlx5_core with
    /// netdevs `enp3s0f0v0..2`, VF 3 on vfio-pci without netdev), representors
    /// `enp3s0f0npf0vf0..3` (`pf0vf0..3`), and PF `enp3s0f1np1` (0000:03:00.1, `p1`, no VFs),
    /// both on switch `MLX5_SWITCH_ID`.
    pub fn mlx5_dual_port(root: impl Into<PathBuf>) -> io::Result<Self> {
        let f = SysfsFixture::new(root)?;
        f.add_pf(&Self::mlx5_port0())?;
        f.add_pf(&PfSpec {
            netdev: "enp3s0f1np1".into(),
            pci: "0000:03:00.1".into(),
            driver: "mlx5_core".into(),
            total_vfs: 8,
            switch_id: Some(MLX5_SWITCH_ID.into()),
            port_name: Some("p1".into()),
            vfs: vec![],
        })?;
        Ok(f)
    }

    /// Port 0 of `mlx5_dual_port`, for tests that vary it.
    pub fn mlx5_port0() -> PfSpec {
        PfSpec {
            netdev: "enp3s0f0np0".into(),
            pci: "0000:03:00.0".into(),
            driver: "mlx5_core".into(),
            total_vfs: 8,
            switch_id: Some(MLX5_SWITCH_ID.into()),
            port_name: Some("p0".into()),
            vfs: (0..4)
                .map(|i| VfSpec {
                    pci: format!("0000:03:00.{}", i + 2),
                    driver: Some(if i == 3 { "vfio-pci" } else { "mlx5_core" }.into()),
                    netdev: (i != 3).then(|| format!("enp3s0f0v{i}")),
                    representor: Some(RepresentorSpec {
                        netdev: format!("enp3s0f0npf0vf{i}"),
                        port_name: format!("pf0vf{i}"),
                    }),
                })
                .collect(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn sys(&self) -> PathBuf {
        self.root.join("sys")
    }

    /// The directory of a PCI function.
    pub fn pci_dir(&self, pci: &str) -> PathBuf {
        self.sys().join(PCI_PARENT).join(pci)
    }

    /// The directory of a netdev (what `class/net/<netdev>` links to).
    pub fn netdev_dir(&self, pci: &str, netdev: &str) -> PathBuf {
        self.pci_dir(pci).join("net").join(netdev)
    }

    fn add_function(&self, pci: &str, driver: Option<&str>) -> io::Result<PathBuf> {
        let dir = self.pci_dir(pci);
        fs::create_dir_all(&dir)?;
        fs::write(dir.join("vendor"), "0x15b3\n")?;
        if let Some(driver) = driver {
            symlink(
                format!("../../../../bus/pci/drivers/{driver}"),
                &dir.join("driver"),
            )?;
        }
        symlink(
            format!("../../../{PCI_PARENT}/{pci}"),
            &self.sys().join("bus/pci/devices").join(pci),
        )?;
        Ok(dir)
    }

    /// A netdev of PCI function `pci`, with optional `phys_switch_id` / `phys_port_name`
    /// (absent files stand for the kernel's EOPNOTSUPP).
    pub fn add_netdev(
        &self,
        pci: &str,
        netdev: &str,
        switch_id: Option<&str>,
        port_name: Option<&str>,
    ) -> io::Result<()> {
        let dir = self.netdev_dir(pci, netdev);
        fs::create_dir_all(&dir)?;
        symlink(format!("../../../{pci}"), &dir.join("device"))?;
        if let Some(id) = switch_id {
            fs::write(dir.join("phys_switch_id"), format!("{id}\n"))?;
        }
        if let Some(name) = port_name {
            fs::write(dir.join("phys_port_name"), format!("{name}\n"))?;
        }
        symlink(
            format!("../../{PCI_PARENT}/{pci}/net/{netdev}"),
            &self.sys().join("class/net").join(netdev),
        )
    }

    /// A PF with its VFs and representors.
    pub fn add_pf(&self, pf: &PfSpec) -> io::Result<()> {
        let dir = self.add_function(&pf.pci, Some(&pf.driver))?;
        fs::write(dir.join("sriov_totalvfs"), format!("{}\n", pf.total_vfs))?;
        fs::write(dir.join("sriov_numvfs"), format!("{}\n", pf.vfs.len()))?;
        self.add_netdev(
            &pf.pci,
            &pf.netdev,
            pf.switch_id.as_deref(),
            pf.port_name.as_deref(),
        )?;
        for (index, vf) in pf.vfs.iter().enumerate() {
            let vf_dir = self.add_function(&vf.pci, vf.driver.as_deref())?;
            symlink(format!("../{}", pf.pci), &vf_dir.join("physfn"))?;
            symlink(
                format!("../{}", vf.pci),
                &dir.join(format!("virtfn{index}")),
            )?;
            if let Some(netdev) = &vf.netdev {
                self.add_netdev(&vf.pci, netdev, None, None)?;
            }
            if let Some(rep) = &vf.representor {
                self.add_netdev(
                    &pf.pci,
                    &rep.netdev,
                    pf.switch_id.as_deref(),
                    Some(&rep.port_name),
                )?;
            }
        }
        Ok(())
    }
}
