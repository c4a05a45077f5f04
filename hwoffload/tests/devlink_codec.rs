//! The devlink codec against byte images of the messages the kernel exchanges, written by hand
//! from the UAPI (linux/netlink.h, linux/genetlink.h, linux/devlink.h). Netlink is host byte
//! order; these images are little-endian (x86_64, aarch64).

// A test crate: its helpers outside #[test] fns assert by unwrapping too (clippy.toml allows it
// only inside #[test] fns and #[cfg(test)] modules).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg(target_endian = "little")]

use ferrovn_hwoffload::PciAddress;
use ferrovn_hwoffload::devlink::{
    self, DevlinkDevice, DevlinkError, EswitchMode, EswitchState, InlineMode,
};

/// The devlink family id. The controller assigns ids at registration; 0x15 is typical.
const FAMILY: u16 = 0x15;
/// Our socket's port id as the kernel writes it into replies' nlmsg_pid.
const PORTID: [u8; 4] = [0xd2, 0x04, 0x00, 0x00]; // 1234

fn pf() -> DevlinkDevice {
    DevlinkDevice::pci(&"0000:03:00.0".parse::<PciAddress>().unwrap())
}

#[rustfmt::skip]
const GETFAMILY_REQUEST: [u8; 32] = [
    // struct nlmsghdr
    0x20, 0x00, 0x00, 0x00, // nlmsg_len   = 32
    0x10, 0x00,             // nlmsg_type  = GENL_ID_CTRL (NLMSG_MIN_TYPE)
    0x01, 0x00,             // nlmsg_flags = NLM_F_REQUEST
    0x02, 0x00, 0x00, 0x00, // nlmsg_seq   = 2
    0x00, 0x00, 0x00, 0x00, // nlmsg_pid   = 0 (the kernel fills in ours)
    // struct genlmsghdr
    0x03,                   // cmd = CTRL_CMD_GETFAMILY
    0x01,                   // version = 1
    0x00, 0x00,             // reserved
    // struct nlattr CTRL_ATTR_FAMILY_NAME
    0x0c, 0x00,             // nla_len  = 12 (4 + "devlink\0")
    0x02, 0x00,             // nla_type = CTRL_ATTR_FAMILY_NAME
    b'd', b'e', b'v', b'l', b'i', b'n', b'k', 0x00,
];

#[rustfmt::skip]
const NEWFAMILY_REPLY: [u8; 92] = [
    0x5c, 0x00, 0x00, 0x00, // nlmsg_len   = 92
    0x10, 0x00,             // nlmsg_type  = GENL_ID_CTRL
    0x00, 0x00,             // nlmsg_flags = 0
    0x02, 0x00, 0x00, 0x00, // nlmsg_seq   = 2 (echoes the request)
    PORTID[0], PORTID[1], PORTID[2], PORTID[3], // nlmsg_pid = our port id
    0x01, 0x02, 0x00, 0x00, // genlmsghdr: cmd = CTRL_CMD_NEWFAMILY, version = 2 (nlctrl's)
    0x0c, 0x00, 0x02, 0x00, // CTRL_ATTR_FAMILY_NAME, len 12
    b'd', b'e', b'v', b'l', b'i', b'n', b'k', 0x00,
    0x06, 0x00, 0x01, 0x00, // CTRL_ATTR_FAMILY_ID (u16), len 6
    0x15, 0x00, 0x00, 0x00, //   0x0015 + 2 bytes padding
    0x08, 0x00, 0x03, 0x00, // CTRL_ATTR_VERSION (u32) = 1
    0x01, 0x00, 0x00, 0x00,
    0x08, 0x00, 0x04, 0x00, // CTRL_ATTR_HDRSIZE (u32) = 0
    0x00, 0x00, 0x00, 0x00,
    0x08, 0x00, 0x05, 0x00, // CTRL_ATTR_MAXATTR (u32) = 0xb4
    0xb4, 0x00, 0x00, 0x00,
    0x1c, 0x00, 0x07, 0x80, // CTRL_ATTR_MCAST_GROUPS | NLA_F_NESTED, len 28
    0x18, 0x00, 0x01, 0x80, //   group #1 | NLA_F_NESTED, len 24
    0x0b, 0x00, 0x02, 0x00, //     CTRL_ATTR_MCAST_GRP_NAME, len 11 ("config\0") + 1 pad
    b'c', b'o', b'n', b'f', b'i', b'g', 0x00, 0x00,
    0x08, 0x00, 0x01, 0x00, //     CTRL_ATTR_MCAST_GRP_ID (u32) = 5
    0x05, 0x00, 0x00, 0x00,
];

#[rustfmt::skip]
const ESWITCH_GET_REQUEST: [u8; 48] = [
    0x30, 0x00, 0x00, 0x00, // nlmsg_len   = 48
    0x15, 0x00,             // nlmsg_type  = devlink family id
    0x01, 0x00,             // nlmsg_flags = NLM_F_REQUEST
    0x03, 0x00, 0x00, 0x00, // nlmsg_seq   = 3
    0x00, 0x00, 0x00, 0x00, // nlmsg_pid   = 0
    0x1d, 0x01, 0x00, 0x00, // genlmsghdr: cmd = DEVLINK_CMD_ESWITCH_GET (29), version 1
    0x08, 0x00, 0x01, 0x00, // DEVLINK_ATTR_BUS_NAME, len 8
    b'p', b'c', b'i', 0x00,
    0x11, 0x00, 0x02, 0x00, // DEVLINK_ATTR_DEV_NAME, len 17 ("0000:03:00.0\0") + 3 pad
    b'0', b'0', b'0', b'0', b':', b'0', b'3', b':', b'0', b'0', b'.', b'0', 0x00, 0x00, 0x00, 0x00,
];

#[rustfmt::skip]
const ESWITCH_GET_REPLY_SWITCHDEV: [u8; 72] = [
    0x48, 0x00, 0x00, 0x00, // nlmsg_len   = 72
    0x15, 0x00,             // nlmsg_type  = devlink
    0x00, 0x00,             // nlmsg_flags = 0
    0x03, 0x00, 0x00, 0x00, // nlmsg_seq   = 3
    PORTID[0], PORTID[1], PORTID[2], PORTID[3],
    0x1d, 0x01, 0x00, 0x00, // cmd = DEVLINK_CMD_ESWITCH_GET, version 1
    0x08, 0x00, 0x01, 0x00, b'p', b'c', b'i', 0x00, // DEVLINK_ATTR_BUS_NAME
    0x11, 0x00, 0x02, 0x00, // DEVLINK_ATTR_DEV_NAME
    b'0', b'0', b'0', b'0', b':', b'0', b'3', b':', b'0', b'0', b'.', b'0', 0x00, 0x00, 0x00, 0x00,
    0x06, 0x00, 0x19, 0x00, // DEVLINK_ATTR_ESWITCH_MODE (25, u16), len 6
    0x01, 0x00, 0x00, 0x00, //   DEVLINK_ESWITCH_MODE_SWITCHDEV + pad
    0x05, 0x00, 0x1a, 0x00, // DEVLINK_ATTR_ESWITCH_INLINE_MODE (26, u8), len 5
    0x00, 0x00, 0x00, 0x00, //   DEVLINK_ESWITCH_INLINE_MODE_NONE + pad
    0x05, 0x00, 0x3e, 0x00, // DEVLINK_ATTR_ESWITCH_ENCAP_MODE (62, u8), len 5
    0x01, 0x00, 0x00, 0x00, //   DEVLINK_ESWITCH_ENCAP_MODE_BASIC + pad
];

#[rustfmt::skip]
const ESWITCH_SET_REQUEST: [u8; 56] = [
    0x38, 0x00, 0x00, 0x00, // nlmsg_len   = 56
    0x15, 0x00,             // nlmsg_type  = devlink
    0x05, 0x00,             // nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK
    0x04, 0x00, 0x00, 0x00, // nlmsg_seq   = 4
    0x00, 0x00, 0x00, 0x00,
    0x1e, 0x01, 0x00, 0x00, // cmd = DEVLINK_CMD_ESWITCH_SET (30), version 1
    0x08, 0x00, 0x01, 0x00, b'p', b'c', b'i', 0x00,
    0x11, 0x00, 0x02, 0x00,
    b'0', b'0', b'0', b'0', b':', b'0', b'3', b':', b'0', b'0', b'.', b'0', 0x00, 0x00, 0x00, 0x00,
    0x06, 0x00, 0x19, 0x00, // DEVLINK_ATTR_ESWITCH_MODE
    0x01, 0x00, 0x00, 0x00, //   switchdev + pad
];

#[rustfmt::skip]
const ESWITCH_SET_ACK: [u8; 36] = [
    0x24, 0x00, 0x00, 0x00, // nlmsg_len   = 36
    0x02, 0x00,             // nlmsg_type  = NLMSG_ERROR
    0x00, 0x01,             // nlmsg_flags = NLM_F_CAPPED (success ACKs carry only the header)
    0x04, 0x00, 0x00, 0x00, // nlmsg_seq   = 4
    PORTID[0], PORTID[1], PORTID[2], PORTID[3],
    0x00, 0x00, 0x00, 0x00, // error = 0: success
    // the request's nlmsghdr
    0x38, 0x00, 0x00, 0x00, 0x15, 0x00, 0x05, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
];

#[rustfmt::skip]
const ESWITCH_GET_ENODEV: [u8; 36] = [
    0x24, 0x00, 0x00, 0x00, // nlmsg_len   = 36
    0x02, 0x00,             // NLMSG_ERROR
    0x00, 0x01,             // NLM_F_CAPPED (we set NETLINK_CAP_ACK)
    0x03, 0x00, 0x00, 0x00, // seq 3
    PORTID[0], PORTID[1], PORTID[2], PORTID[3],
    0xed, 0xff, 0xff, 0xff, // error = -19 (-ENODEV): no devlink instance pci/0000:03:00.0
    0x30, 0x00, 0x00, 0x00, 0x15, 0x00, 0x01, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
];

#[rustfmt::skip]
const ESWITCH_SET_EOPNOTSUPP: [u8; 36] = [
    0x24, 0x00, 0x00, 0x00,
    0x02, 0x00, 0x00, 0x01, // NLMSG_ERROR, NLM_F_CAPPED
    0x04, 0x00, 0x00, 0x00,
    PORTID[0], PORTID[1], PORTID[2], PORTID[3],
    0xa1, 0xff, 0xff, 0xff, // error = -95 (-EOPNOTSUPP)
    0x38, 0x00, 0x00, 0x00, 0x15, 0x00, 0x05, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
];

/// -EBUSY with an extended-ack message (mlx5: NL_SET_ERR_MSG_MOD, so "mlx5_core: " prefixed).
#[rustfmt::skip]
const ESWITCH_SET_EBUSY_EXTACK: [u8; 88] = [
    0x58, 0x00, 0x00, 0x00, // nlmsg_len   = 88
    0x02, 0x00,             // NLMSG_ERROR
    0x00, 0x03,             // NLM_F_CAPPED | NLM_F_ACK_TLVS
    0x04, 0x00, 0x00, 0x00,
    PORTID[0], PORTID[1], PORTID[2], PORTID[3],
    0xf0, 0xff, 0xff, 0xff, // error = -16 (-EBUSY)
    0x38, 0x00, 0x00, 0x00, 0x15, 0x00, 0x05, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x33, 0x00, 0x01, 0x00, // NLMSGERR_ATTR_MSG, len 51 (4 + 46 bytes of text + NUL) + 1 pad
    b'm', b'l', b'x', b'5', b'_', b'c', b'o', b'r', b'e', b':', b' ',
    b'C', b'a', b'n', b'\'', b't', b' ', b'c', b'h', b'a', b'n', b'g', b'e', b' ',
    b'm', b'o', b'd', b'e', b',', b' ', b'E', b'-', b'S', b'w', b'i', b't', b'c', b'h', b' ',
    b'i', b's', b' ', b'b', b'u', b's', b'y', 0x00, 0x00,
];

/// "Not registered": nlctrl answers a lookup for an unknown family with -ENOENT.
#[rustfmt::skip]
const GETFAMILY_ENOENT: [u8; 36] = [
    0x24, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00,
    PORTID[0], PORTID[1], PORTID[2], PORTID[3],
    0xfe, 0xff, 0xff, 0xff, // error = -2 (-ENOENT)
    0x20, 0x00, 0x00, 0x00, 0x10, 0x00, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
];

#[test]
fn encodes_the_family_lookup_byte_for_byte() {
    assert_eq!(devlink::encode_get_family(2, "devlink"), GETFAMILY_REQUEST);
}

#[test]
fn decodes_the_family_id_skipping_nested_attributes() {
    assert_eq!(
        devlink::decode_family_reply(&NEWFAMILY_REPLY, 2, "devlink").unwrap(),
        FAMILY
    );
}

#[test]
fn a_reply_for_another_family_is_refused() {
    let e = devlink::decode_family_reply(&NEWFAMILY_REPLY, 2, "ethtool").unwrap_err();
    assert!(e.to_string().contains("expected \"ethtool\""), "{e}");
}

#[test]
fn an_unregistered_family_is_reported_as_such() {
    let e = devlink::decode_family_reply(&GETFAMILY_ENOENT, 2, "devlink").unwrap_err();
    assert!(matches!(e, DevlinkError::FamilyNotRegistered { .. }), "{e}");
    assert!(e.to_string().contains("CONFIG_NET_DEVLINK"), "{e}");
}

#[test]
fn encodes_eswitch_get_and_set_byte_for_byte() {
    assert_eq!(
        devlink::encode_eswitch_get(FAMILY, 3, &pf()),
        ESWITCH_GET_REQUEST
    );
    assert_eq!(
        devlink::encode_eswitch_set(FAMILY, 4, &pf(), EswitchMode::Switchdev),
        ESWITCH_SET_REQUEST
    );
}

#[test]
fn decodes_the_eswitch_state() {
    let state =
        devlink::decode_eswitch_reply(&ESWITCH_GET_REPLY_SWITCHDEV, 3, FAMILY, &pf()).unwrap();
    assert_eq!(
        state,
        EswitchState {
            mode: EswitchMode::Switchdev,
            inline_mode: Some(InlineMode::None),
            encap_basic: Some(true)
        }
    );
    // legacy: the same reply with mode 0
    let mut legacy = ESWITCH_GET_REPLY_SWITCHDEV;
    legacy[52] = 0; // the mode's value byte: 16 nlmsghdr + 4 genl + 8 bus + 20 dev + 4 nla header
    let state = devlink::decode_eswitch_reply(&legacy, 3, FAMILY, &pf()).unwrap();
    assert_eq!(state.mode, EswitchMode::Legacy);
    // an unknown mode value is an error, not a guess
    legacy[52] = 7;
    let e = devlink::decode_eswitch_reply(&legacy, 3, FAMILY, &pf()).unwrap_err();
    assert!(e.to_string().contains("unknown eswitch mode 7"), "{e}");
}

#[test]
fn decodes_the_set_ack() {
    devlink::decode_ack(&ESWITCH_SET_ACK, 4, "eswitch set", &pf()).unwrap();
}

#[test]
fn enodev_names_the_device_and_what_to_check() {
    let e = devlink::decode_eswitch_reply(&ESWITCH_GET_ENODEV, 3, FAMILY, &pf()).unwrap_err();
    assert!(matches!(e, DevlinkError::NoDevice { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("pci/0000:03:00.0") && msg.contains("ENODEV"),
        "{msg}"
    );
}

#[test]
fn eopnotsupp_and_extack_messages_are_surfaced() {
    let e = devlink::decode_ack(&ESWITCH_SET_EOPNOTSUPP, 4, "eswitch set", &pf()).unwrap_err();
    assert!(
        matches!(e, DevlinkError::NotSupported { message: None, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("EOPNOTSUPP"), "{e}");

    let e = devlink::decode_ack(&ESWITCH_SET_EBUSY_EXTACK, 4, "eswitch set", &pf()).unwrap_err();
    match &e {
        DevlinkError::Kernel { errno, message, .. } => {
            assert_eq!(*errno, 16);
            assert_eq!(
                message.as_deref(),
                Some("mlx5_core: Can't change mode, E-Switch is busy")
            );
        }
        other => panic!("expected a kernel error, got {other:?}"),
    }
    assert!(
        e.to_string()
            .contains("kernel says \"mlx5_core: Can't change mode, E-Switch is busy\""),
        "{e}"
    );
}

#[test]
fn uncapped_error_replies_skip_the_echoed_request_before_the_tlvs() {
    // Without NETLINK_CAP_ACK the kernel echoes the whole request (56 bytes) before the TLVs.
    let mut reply = Vec::new();
    let text = b"mlx5_core: Can't change mode, E-Switch is busy\0";
    let tlv_len = 4 + text.len();
    let total = 16 + 4 + ESWITCH_SET_REQUEST.len() + tlv_len.next_multiple_of(4);
    reply.extend_from_slice(&(total as u32).to_le_bytes());
    reply.extend_from_slice(&[0x02, 0x00, 0x00, 0x02]); // NLMSG_ERROR, NLM_F_ACK_TLVS only
    reply.extend_from_slice(&4u32.to_le_bytes());
    reply.extend_from_slice(&PORTID);
    reply.extend_from_slice(&(-16i32).to_le_bytes());
    reply.extend_from_slice(&ESWITCH_SET_REQUEST);
    reply.extend_from_slice(&(tlv_len as u16).to_le_bytes());
    reply.extend_from_slice(&1u16.to_le_bytes());
    reply.extend_from_slice(text);
    reply.resize(total, 0);
    let e = devlink::decode_ack(&reply, 4, "eswitch set", &pf()).unwrap_err();
    assert!(e.to_string().contains("E-Switch is busy"), "{e}");
}

#[test]
fn replies_to_other_requests_and_truncation_are_not_mistaken_for_ours() {
    let e = devlink::decode_ack(&ESWITCH_SET_ACK, 9, "eswitch set", &pf()).unwrap_err();
    assert!(
        e.to_string().contains("no message with sequence number 9"),
        "{e}"
    );
    let e = devlink::decode_eswitch_reply(&ESWITCH_GET_REPLY_SWITCHDEV[..40], 3, FAMILY, &pf())
        .unwrap_err();
    assert!(matches!(e, DevlinkError::Malformed { .. }), "{e}");
    // A data reply where an ACK was expected, and the reverse.
    assert!(devlink::decode_ack(&ESWITCH_GET_REPLY_SWITCHDEV, 3, "eswitch set", &pf()).is_err());
    assert!(devlink::decode_eswitch_reply(&ESWITCH_SET_ACK, 4, FAMILY, &pf()).is_err());
}

#[test]
fn two_messages_in_one_datagram_are_both_seen() {
    // The kernel may batch a reply and an ACK; ours is found by sequence number.
    let mut both = ESWITCH_SET_ACK.to_vec();
    both.extend_from_slice(&ESWITCH_GET_REPLY_SWITCHDEV);
    let state = devlink::decode_eswitch_reply(&both, 3, FAMILY, &pf()).unwrap();
    assert_eq!(state.mode, EswitchMode::Switchdev);
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200), seq in 0u32..6) {
            let _ = devlink::decode_family_reply(&bytes, seq, "devlink");
            let _ = devlink::decode_eswitch_reply(&bytes, seq, FAMILY, &pf());
            let _ = devlink::decode_ack(&bytes, seq, "eswitch set", &pf());
        }

        #[test]
        fn mutated_real_replies_never_panic(at in 0usize..72, value: u8) {
            let mut reply = ESWITCH_GET_REPLY_SWITCHDEV;
            reply[at] = value;
            let _ = devlink::decode_eswitch_reply(&reply, 3, FAMILY, &pf());
        }
    }
}
