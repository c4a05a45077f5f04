//! How the node agent's failures reach the runtime: CNI error codes in the plugin range and the
//! one mapping from each internal error to a [`CniError`] (every attachment kind uses these).

use ferrovn_cni::spec::CniError;

use crate::ovs::OvsError;
use crate::plumbing::PlumbError;

/// The agent's own CNI error codes (the spec leaves 100+ to plugins; the plugin uses 100..=109,
/// the vhost helper path 120..=122, SR-IOV 130..=131).
pub mod agent_code {
    /// The controller has not allocated the pod within the wait.
    pub const NOT_ALLOCATED: u32 = 110;
    /// The allocation exists but cannot be used (bad annotation).
    pub const BAD_ALLOCATION: u32 = 111;
    /// Creating or configuring the pod interface failed.
    pub const PLUMBING_FAILED: u32 = 112;
    /// The node's OVSDB refused or could not be reached.
    pub const OVS_FAILED: u32 = 113;
    /// ovn-controller did not mark the port installed in time.
    pub const NOT_INSTALLED: u32 = 114;
    /// The agent is shutting down (SIGTERM) and takes no new requests.
    pub const SHUTTING_DOWN: u32 = 115;
}

pub fn err(code: u32, msg: impl Into<String>, details: impl ToString) -> CniError {
    CniError::new(code, msg, details.to_string())
}

pub fn from_ovs(e: OvsError) -> CniError {
    match e {
        OvsError::NotInstalled { .. } => err(
            agent_code::NOT_INSTALLED,
            "OVN did not install the pod's port in time",
            e,
        ),
        other => err(agent_code::OVS_FAILED, "node OVS database failed", other),
    }
}

pub fn from_plumb(e: PlumbError) -> CniError {
    err(
        agent_code::PLUMBING_FAILED,
        "plumbing the pod interface failed",
        e,
    )
}

/// A failed step of attaching `what` (a device, a socket) on the node.
pub fn plumbing(what: &str, e: impl std::fmt::Display) -> CniError {
    err(
        agent_code::PLUMBING_FAILED,
        format!("plumbing {what} failed"),
        e,
    )
}
