//! A real generic netlink round trip on this kernel: resolving the devlink family either works
//! (a dynamic id above the controller's) or fails as "family not registered"; never a hang,
//! a garbled reply or a panic. Then a query for a PCI device that cannot exist here.

use ferrovn_hwoffload::devlink::{self, DevlinkDevice, DevlinkError, DevlinkSocket};

#[test]
fn resolving_the_devlink_family_on_this_kernel_gives_an_id_or_a_clear_error() {
    match DevlinkSocket::connect() {
        Ok(mut socket) => {
            eprintln!("devlink family id on this kernel: {}", socket.family());
            assert!(
                socket.family() > 0x10,
                "family ids are allocated above GENL_ID_CTRL"
            );
            // No PCI device sits at domain ffff here: the kernel must say ENODEV, not succeed.
            let nowhere = DevlinkDevice::pci(&"ffff:ff:1f.7".parse().unwrap());
            let e = socket.eswitch(&nowhere).unwrap_err();
            eprintln!("eswitch show on {nowhere}: {e}");
            assert!(matches!(e, DevlinkError::NoDevice { .. }), "{e:?}");
        }
        Err(e) => {
            eprintln!("devlink on this kernel: {e}");
            assert!(
                matches!(e, DevlinkError::FamilyNotRegistered { .. }),
                "the only acceptable failure is an absent family, got: {e:?}"
            );
        }
    }
}

#[test]
fn the_codec_reads_a_real_kernel_family_reply() {
    // nlctrl describes itself on every kernel: a real NEWFAMILY reply (with ops and multicast
    // groups) through the same encoder and decoder, and its id is GENL_ID_CTRL.
    assert_eq!(
        devlink::resolve_family("nlctrl").unwrap(),
        devlink::GENL_ID_CTRL
    );
    let e = devlink::resolve_family("ferrovn-none").unwrap_err();
    assert!(
        matches!(e, DevlinkError::FamilyNotRegistered { ref family } if family == "ferrovn-none"),
        "{e:?}"
    );
    // Names longer than GENL_NAMSIZ (16) fail the controller's policy: a real extended ack,
    // whose text must come through.
    let e = devlink::resolve_family("ferrovn-name-too-long").unwrap_err();
    match &e {
        DevlinkError::Kernel { errno, message, .. } => {
            assert_eq!(*errno, libc::EINVAL);
            assert!(message.as_deref().is_some_and(|m| !m.is_empty()), "{e:?}");
        }
        other => panic!("expected EINVAL with an extended ack, got {other:?}"),
    }
    eprintln!("{e}");
}
