//! FerrOVN hardware offload: SR-IOV PF/VF discovery from sysfs, eswitch mode through devlink,
//! VF representors, pod attachment decisions, OVS hw-offload settings, and offload truth from
//! the datapath flow dump.
//!
//! Pure decision cores (`attach`, `ovs_config`, `flows`, `port_name`, `devlink` message codec)
//! sit beside thin I/O shells (`sysfs::Sysfs`, `devlink::DevlinkSocket`).

pub mod attach;
pub mod devlink;
pub mod fixture;
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
