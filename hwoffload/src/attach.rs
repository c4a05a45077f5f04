//! Pod attachment with a VF: what the node agent must do, decided from plain data.
//!
//! Input is the `VfLocation` sysfs discovery returns for the CNI `deviceID` (the VF's PCI
//! address, as Multus and the SR-IOV device plugin pass it). Kernel pods get the VF netdev moved
//! into their network namespace; DPDK pods get the PCI address (the VF must be bound to a
//! userspace-capable driver); either way the VF's representor goes onto br-int with the
//! logical switch port's iface-id, so OVN flows for the pod match on the representor.

use crate::pci::PciAddress;
use crate::sysfs::VfLocation;

/// How the pod uses its VF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodDatapath {
    /// The pod's kernel stack uses the VF netdev.
    Kernel,
    /// A DPDK application in the pod drives the VF by PCI address.
    Dpdk,
}

/// Drivers acceptable for a DPDK pod's VF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DpdkDriverPolicy {
    pub allowed: Vec<String>,
}

impl Default for DpdkDriverPolicy {
    /// `vfio-pci` only. NVIDIA/Mellanox NICs are bifurcated: their DPDK PMD runs on a VF bound
    /// to `mlx5_core`; add it for such nodes.
    fn default() -> Self {
        DpdkDriverPolicy {
            allowed: vec!["vfio-pci".into()],
        }
    }
}

/// The pod side of the attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodVf {
    /// Move this netdev into the pod's netns (then rename, MAC, IP, MTU as for a veth end).
    Netdev { netdev: String },
    /// Give this PCI address to the DPDK application (pod annotation / device info).
    Pci {
        pci_address: PciAddress,
        driver: String,
    },
}

/// Everything the agent needs to plumb one VF-backed pod interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VfAttachment {
    pub pf: String,
    pub vf_index: u32,
    pub vf_pci: PciAddress,
    pub pod_side: PodVf,
    /// The representor netdev to add to br-int with `external_ids:iface-id=<lsp>`.
    pub representor: String,
}

/// An OVS port to create on the integration bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgePort {
    pub bridge: String,
    /// Port and Interface name: the representor netdev.
    pub name: String,
    /// `external_ids` of the Interface row (`iface-id` is what ovn-controller binds on).
    pub external_ids: Vec<(String, String)>,
}

/// Why a VF cannot be attached as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttachError {
    #[error(
        "VF {vf} (PF {pf} VF {index}) has no representor{}: is the eswitch of {pf} in switchdev \
         mode (`devlink dev eswitch show pci/{pf_pci}`)?{}",
        match .switch_id { None => " and the PF has no phys_switch_id", Some(_) => "" },
        unparsed(.unparsed_port_names)
    )]
    NoRepresentor {
        vf: PciAddress,
        pf: String,
        pf_pci: PciAddress,
        index: u32,
        switch_id: Option<String>,
        unparsed_port_names: Vec<(String, String)>,
    },
    #[error(
        "VF {vf} is bound to {}, but a DPDK pod needs one of [{}]: rebind it: \
         echo {vf} > /sys/bus/pci/devices/{vf}/driver/unbind; \
         echo {want} > /sys/bus/pci/devices/{vf}/driver_override; \
         echo {vf} > /sys/bus/pci/drivers_probe",
        .found.as_deref().unwrap_or("no driver"),
        .allowed.join(", "),
        want = .allowed.first().map(String::as_str).unwrap_or("vfio-pci")
    )]
    WrongDriverForDpdk {
        vf: PciAddress,
        found: Option<String>,
        allowed: Vec<String>,
    },
    #[error("VF {vf} has no network interface for a kernel pod {}", no_netdev_why(.driver))]
    NoNetdevForKernelPod {
        vf: PciAddress,
        driver: Option<String>,
    },
}

/// Drivers that take a VF away from the kernel network stack.
const USERSPACE_DRIVERS: &[&str] = &["vfio-pci", "uio_pci_generic", "igb_uio"];

fn no_netdev_why(driver: &Option<String>) -> String {
    match driver.as_deref() {
        None => "(bound to no driver): bind it to its netdev driver (for mlx5: mlx5_core)".into(),
        Some(d) if USERSPACE_DRIVERS.contains(&d) => format!(
            "(bound to {d}, a userspace driver): bind it to its netdev driver (for mlx5: \
             mlx5_core) or give the pod a DPDK attachment"
        ),
        Some(d) => format!(
            "(bound to {d}, but no netdev is visible in this network namespace): it is probably \
             already inside a pod's namespace, or the driver is still probing"
        ),
    }
}

fn unparsed(names: &[(String, String)]) -> String {
    if names.is_empty() {
        return String::new();
    }
    let list: Vec<String> = names.iter().map(|(n, v)| format!("{n}={v:?}")).collect();
    format!(
        " Netdevs on the same switch with a phys_port_name FerrOVN cannot read: {}",
        list.join(", ")
    )
}

/// Decides how to attach the VF at `location` to a pod.
pub fn plan_vf_attachment(
    location: &VfLocation,
    datapath: PodDatapath,
    dpdk_drivers: &DpdkDriverPolicy,
) -> Result<VfAttachment, AttachError> {
    let vf = &location.vf;
    let pf = &location.pf;
    let representor = vf
        .representor
        .clone()
        .ok_or_else(|| AttachError::NoRepresentor {
            vf: vf.pci_address,
            pf: pf.netdev.clone(),
            pf_pci: pf.pci_address,
            index: vf.index,
            switch_id: pf.switch_id.clone(),
            unparsed_port_names: pf.unparsed_port_names.clone(),
        })?;
    let pod_side = match datapath {
        PodDatapath::Kernel => match &vf.netdev {
            Some(netdev) => PodVf::Netdev {
                netdev: netdev.clone(),
            },
            None => {
                return Err(AttachError::NoNetdevForKernelPod {
                    vf: vf.pci_address,
                    driver: vf.driver.clone(),
                });
            }
        },
        PodDatapath::Dpdk => match &vf.driver {
            Some(d) if dpdk_drivers.allowed.iter().any(|a| a == d) => PodVf::Pci {
                pci_address: vf.pci_address,
                driver: d.clone(),
            },
            found => {
                return Err(AttachError::WrongDriverForDpdk {
                    vf: vf.pci_address,
                    found: found.clone(),
                    allowed: dpdk_drivers.allowed.clone(),
                });
            }
        },
    };
    Ok(VfAttachment {
        pf: pf.netdev.clone(),
        vf_index: vf.index,
        vf_pci: vf.pci_address,
        pod_side,
        representor,
    })
}

/// The br-int port for an attachment's representor, bound to logical switch port `iface_id`.
pub fn representor_bridge_port(
    attachment: &VfAttachment,
    bridge: &str,
    iface_id: &str,
) -> BridgePort {
    BridgePort {
        bridge: bridge.to_string(),
        name: attachment.representor.clone(),
        external_ids: vec![
            ("iface-id".to_string(), iface_id.to_string()),
            ("vf-pci-address".to_string(), attachment.vf_pci.to_string()),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sysfs::{PhysicalFunction, VirtualFunction};

    fn location(
        driver: Option<&str>,
        netdev: Option<&str>,
        representor: Option<&str>,
    ) -> VfLocation {
        VfLocation {
            pf: PhysicalFunction {
                netdev: "enp3s0f0np0".into(),
                pci_address: "0000:03:00.0".parse().unwrap(),
                driver: Some("mlx5_core".into()),
                total_vfs: 8,
                num_vfs: 4,
                switch_id: Some("b8599f0300c0ffee".into()),
                port_name: None,
                pf_number: 0,
                uplink_representor: Some("enp3s0f0np0".into()),
                vfs: vec![],
                unparsed_port_names: vec![],
            },
            vf: VirtualFunction {
                index: 1,
                pci_address: "0000:03:00.3".parse().unwrap(),
                driver: driver.map(Into::into),
                netdev: netdev.map(Into::into),
                representor: representor.map(Into::into),
            },
        }
    }

    #[test]
    fn kernel_pod_gets_the_vf_netdev_and_br_int_gets_the_representor() {
        let loc = location(
            Some("mlx5_core"),
            Some("enp3s0f0v1"),
            Some("enp3s0f0npf0vf1"),
        );
        let a =
            plan_vf_attachment(&loc, PodDatapath::Kernel, &DpdkDriverPolicy::default()).unwrap();
        assert_eq!(
            a.pod_side,
            PodVf::Netdev {
                netdev: "enp3s0f0v1".into()
            }
        );
        assert_eq!(a.representor, "enp3s0f0npf0vf1");
        let port = representor_bridge_port(&a, "br-int", "default.pod1");
        assert_eq!(port.name, "enp3s0f0npf0vf1");
        assert!(
            port.external_ids
                .contains(&("iface-id".into(), "default.pod1".into()))
        );
    }

    #[test]
    fn dpdk_pod_gets_the_pci_address_when_the_driver_is_allowed() {
        let loc = location(Some("vfio-pci"), None, Some("enp3s0f0npf0vf1"));
        let a = plan_vf_attachment(&loc, PodDatapath::Dpdk, &DpdkDriverPolicy::default()).unwrap();
        assert_eq!(
            a.pod_side,
            PodVf::Pci {
                pci_address: "0000:03:00.3".parse().unwrap(),
                driver: "vfio-pci".into()
            }
        );
        // mlx5 bifurcated: allowed only when the policy says so.
        let loc = location(
            Some("mlx5_core"),
            Some("enp3s0f0v1"),
            Some("enp3s0f0npf0vf1"),
        );
        let e =
            plan_vf_attachment(&loc, PodDatapath::Dpdk, &DpdkDriverPolicy::default()).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("bound to mlx5_core") && msg.contains("[vfio-pci]"),
            "{msg}"
        );
        assert!(
            msg.contains("driver_override") && msg.contains("0000:03:00.3"),
            "{msg}"
        );
        let mlx = DpdkDriverPolicy {
            allowed: vec!["vfio-pci".into(), "mlx5_core".into()],
        };
        assert!(plan_vf_attachment(&loc, PodDatapath::Dpdk, &mlx).is_ok());
    }

    #[test]
    fn unbound_vf_for_dpdk_and_vfio_vf_for_kernel_pod_are_refused_clearly() {
        let loc = location(None, None, Some("r"));
        let e =
            plan_vf_attachment(&loc, PodDatapath::Dpdk, &DpdkDriverPolicy::default()).unwrap_err();
        assert!(e.to_string().contains("bound to no driver"), "{e}");
        let loc = location(Some("vfio-pci"), None, Some("r"));
        let e = plan_vf_attachment(&loc, PodDatapath::Kernel, &DpdkDriverPolicy::default())
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("no network interface for a kernel pod (bound to vfio-pci, a userspace"),
            "{e}"
        );
        // A netdev driver but no netdev in sight: the VF is already in some pod.
        let loc = location(Some("mlx5_core"), None, Some("r"));
        let e = plan_vf_attachment(&loc, PodDatapath::Kernel, &DpdkDriverPolicy::default())
            .unwrap_err();
        assert!(
            e.to_string().contains("already inside a pod's namespace"),
            "{e}"
        );
        let loc = location(None, None, Some("r"));
        let e = plan_vf_attachment(&loc, PodDatapath::Kernel, &DpdkDriverPolicy::default())
            .unwrap_err();
        assert!(e.to_string().contains("(bound to no driver)"), "{e}");
    }

    #[test]
    fn missing_representor_points_at_switchdev_and_unreadable_port_names() {
        let mut loc = location(Some("mlx5_core"), Some("enp3s0f0v1"), None);
        loc.pf.unparsed_port_names = vec![("enp3s0f0r1".into(), "vport-2".into())];
        let e = plan_vf_attachment(&loc, PodDatapath::Kernel, &DpdkDriverPolicy::default())
            .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("no representor") && msg.contains("switchdev"),
            "{msg}"
        );
        assert!(
            msg.contains("devlink dev eswitch show pci/0000:03:00.0"),
            "{msg}"
        );
        assert!(msg.contains("enp3s0f0r1=\"vport-2\""), "{msg}");
    }
}
