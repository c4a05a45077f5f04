//! FerrOVN hardware offload: SR-IOV PF/VF discovery from sysfs, eswitch mode through devlink,
//! VF representors, pod attachment decisions, OVS hw-offload settings, and offload truth from
//! the datapath flow dump.
//!
//! Pure decision cores (`attach`, `ovs_config`, `flows`, `port_name`, `devlink` message codec)
//! sit beside thin I/O shells (`sysfs::Sysfs`, `devlink::DevlinkSocket`).
//!
//! How the node agent uses it:
//! - startup, `offload` profile: `Sysfs::new("/").physical_functions()`, optionally
//!   `set_num_vfs`, `DevlinkSocket::connect()?.eswitch(&DevlinkDevice::pci(&pf.pci_address))`,
//!   then `plan_offload_config(&other_config, &settings)`: write `set`/`remove`, restart
//!   ovs-vswitchd when `restart_vswitchd`.
//! - CNI ADD with `deviceID`: `sysfs.find_vf(&device_id.parse()?)` →
//!   `plan_vf_attachment(&loc, PodDatapath::Kernel | Dpdk, &policy)` → move `PodVf::Netdev`
//!   into the pod (or hand out `PodVf::Pci`), add `representor_bridge_port(..)` to br-int.
//! - periodically: `parse_dump_flows(<ovs-appctl dpctl/dump-flows -m>)` →
//!   `offload_report(&flows, &representors, &OffloadContext::new(..))` →
//!   `render_offload_metrics(..)` and the pod status.

pub mod attach;
pub mod devlink;
pub mod flows;
pub mod metrics;
pub mod netlink;
pub mod ovs_config;
pub mod pci;
pub mod port_name;
pub mod sysfs;

pub use attach::{
    AttachError, BridgePort, DpdkDriverPolicy, PodDatapath, PodVf, VfAttachment,
    plan_vf_attachment, representor_bridge_port,
};
pub use devlink::{DevlinkDevice, DevlinkError, DevlinkSocket, EswitchMode, EswitchState};
pub use flows::{
    DpFlow, NotOffloadedReason, Offload, OffloadContext, OffloadStatus, PortOffloadReport,
    offload_report, parse_dump_flows,
};
pub use metrics::{PodOffload, render_offload_metrics};
pub use ovs_config::{OffloadSettings, OtherConfigPlan, TcPolicy, plan_offload_config};
pub use pci::{PciAddress, PciAddressError};
pub use port_name::{PortName, PortNameError};
pub use sysfs::{NumVfsChange, PhysicalFunction, Sysfs, SysfsError, VfLocation, VirtualFunction};
