//! The seam between the agent and the ways a pod interface reaches br-int.
//!
//! Every kind of attachment implements [`Attachment`]: the few steps that differ (what is made
//! on the node before the OVS port, what an after-port step does, how it is undone, released,
//! checked, and whether its pod is alive). The steps every kind shares are the trait's provided
//! methods and this module's functions, written once: the pod's external_ids and QoS
//! ([`base_port`]), the OVS port + `ovn-installed` wait + undo on failure
//! ([`Attachment::add`]), DEL ([`Attachment::remove`]), the CNI result ([`cni_result`]).
//!
//! The kind is stored in the Interface's external_ids ([`KIND_KEY`]) and every later operation
//! (DEL, CHECK, GC) dispatches on it ([`Kind::of_record`], [`with_kind!`]); records an older agent
//! made carry no such key and are recognised by their old markers.
//!
//! | kind | module | the pod gets | on br-int |
//! |---|---|---|---|
//! | `veth` | [`veth`] | a veth end in its netns | the host veth end |
//! | `vhost-user` | [`vhost_user`] | a vhost-user socket (OVS-DPDK node) | `dpdkvhostuserclient` |
//! | `vhost-helper` | [`vhost_helper`] | the same socket, served by `ferrovn-vhost` (kernel node) | a veth to the helper |
//! | `sriov-vf` | [`sriov_vf`] | an SR-IOV VF (netdev or PCI address) | the VF's representor |

pub mod seam;
pub mod sriov_vf;
pub mod veth;
pub mod vhost_helper;
pub mod vhost_user;

pub use seam::{
    AddRequest, Attachment, Env, KIND_KEY, Kind, Liveness, base_port, cni_result, legacy, lsp_name,
    netns_liveness,
};

/// Runs `$body` with `$k` bound to the [`Attachment`] of `$kind`. Dispatch is static: each arm
/// sees its concrete type, so the futures stay `Send` without boxing.
#[macro_export]
#[doc(hidden)]
macro_rules! with_kind {
    ($kind:expr, |$k:ident| $body:expr) => {
        match $kind {
            $crate::attach::Kind::Veth => {
                let $k = &$crate::attach::veth::Veth;
                $body
            }
            $crate::attach::Kind::VhostUser => {
                let $k = &$crate::attach::vhost_user::VhostUser;
                $body
            }
            $crate::attach::Kind::VhostHelper => {
                let $k = &$crate::attach::vhost_helper::VhostHelper;
                $body
            }
            $crate::attach::Kind::SriovVf => {
                let $k = &$crate::attach::sriov_vf::SriovVf;
                $body
            }
        }
    };
}
pub use with_kind;
