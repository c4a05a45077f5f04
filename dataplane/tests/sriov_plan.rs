//! The VF attachment plan from a sysfs tree shaped like a dual-port ConnectX (a fixture, not
//! the real /sys): representor and pod-side netdev by PCI address, DPDK driver checks, and
//! errors naming the device.

use ferrovn_dataplane::sriov::{SriovConfig, plan_for_device, vf_code};
use ferrovn_hwoffload::PodVf;
use ferrovn_testkit::sysfs::SysfsFixture;
use serde_json::json;

#[test]
fn plan_from_fixture() {
    let dir = tempfile::tempdir().expect("dir");
    SysfsFixture::mlx5_dual_port(dir.path()).expect("fixture");
    let cfg = SriovConfig {
        sysfs_root: dir.path().to_path_buf(),
        ..SriovConfig::default()
    };
    let p = plan_for_device(&cfg, "0000:03:00.2", &json!({})).expect("vf0");
    assert_eq!(p.representor, "enp3s0f0npf0vf0");
    assert_eq!(
        p.pod_side,
        PodVf::Netdev {
            netdev: "enp3s0f0v0".into()
        }
    );
    let p = plan_for_device(&cfg, "0000:03:00.5", &json!({})).expect("vf3 dpdk");
    assert!(matches!(p.pod_side, PodVf::Pci { .. }));
    let e = plan_for_device(&cfg, "0000:03:00.2", &json!({"dpdk": true})).expect_err("drv");
    assert_eq!(e.code, vf_code::VF_UNUSABLE);
    assert!(
        e.msg.contains("0000:03:00.2") && e.details.contains("vfio-pci"),
        "{e:?}"
    );
    let e = plan_for_device(&cfg, "0000:09:00.1", &json!({})).expect_err("absent");
    assert_eq!(e.code, vf_code::VF_NOT_FOUND);
    assert!(e.msg.contains("0000:09:00.1"), "{e:?}");
}
