//! Discovery and `sriov_numvfs` against sysfs trees shaped like mlx5's, well-formed and broken.

// A test crate: its helpers outside #[test] fns assert by unwrapping too (clippy.toml allows it
// only inside #[test] fns and #[cfg(test)] modules).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;

use ferrovn_hwoffload::{PciAddress, PortName, Sysfs, SysfsError};
use ferrovn_testkit::sysfs::{MLX5_SWITCH_ID, PfSpec, RepresentorSpec, SysfsFixture, VfSpec};

fn pci(s: &str) -> PciAddress {
    s.parse().unwrap()
}

#[test]
fn discovers_both_mlx5_ports_with_vfs_drivers_netdevs_and_representors() {
    let dir = tempfile::tempdir().unwrap();
    let fx = SysfsFixture::mlx5_dual_port(dir.path()).unwrap();
    let pfs = Sysfs::new(fx.root()).physical_functions().unwrap();

    // Representors share the PF's PCI function and the VF netdevs are not SR-IOV capable:
    // exactly the two PFs come out.
    let names: Vec<&str> = pfs.iter().map(|p| p.netdev.as_str()).collect();
    assert_eq!(names, ["enp3s0f0np0", "enp3s0f1np1"]);

    let p0 = &pfs[0];
    assert_eq!(p0.pci_address, pci("0000:03:00.0"));
    assert_eq!(p0.driver.as_deref(), Some("mlx5_core"));
    assert_eq!((p0.total_vfs, p0.num_vfs), (8, 4));
    assert_eq!(p0.switch_id.as_deref(), Some(MLX5_SWITCH_ID));
    assert_eq!(
        p0.port_name,
        Some(PortName::Uplink {
            port: 0,
            split: None
        })
    );
    assert_eq!(p0.pf_number, 0);
    assert_eq!(p0.uplink_representor.as_deref(), Some("enp3s0f0np0"));
    assert!(p0.unparsed_port_names.is_empty());
    assert_eq!(p0.vfs.len(), 4);
    for (i, vf) in p0.vfs.iter().enumerate() {
        assert_eq!(vf.index as usize, i);
        assert_eq!(vf.pci_address, pci(&format!("0000:03:00.{}", i + 2)));
        assert_eq!(
            vf.representor.as_deref(),
            Some(format!("enp3s0f0npf0vf{i}").as_str())
        );
    }
    assert_eq!(p0.vfs[0].driver.as_deref(), Some("mlx5_core"));
    assert_eq!(p0.vfs[0].netdev.as_deref(), Some("enp3s0f0v0"));
    assert_eq!(p0.vfs[3].driver.as_deref(), Some("vfio-pci"));
    assert_eq!(p0.vfs[3].netdev, None);

    // Same switch id (one ConnectX = one system image GUID), but pf0vfN are not port 1's.
    let p1 = &pfs[1];
    assert_eq!((p1.total_vfs, p1.num_vfs, p1.pf_number), (8, 0, 1));
    assert!(p1.vfs.is_empty());
    assert_eq!(p1.uplink_representor.as_deref(), Some("enp3s0f1np1"));
}

#[test]
fn finds_a_vf_by_its_cni_device_id() {
    let dir = tempfile::tempdir().unwrap();
    let fx = SysfsFixture::mlx5_dual_port(dir.path()).unwrap();
    let sysfs = Sysfs::new(fx.root());
    let loc = sysfs.find_vf(&pci("0000:03:00.4")).unwrap();
    assert_eq!(loc.pf.netdev, "enp3s0f0np0");
    assert_eq!(loc.vf.index, 2);
    assert_eq!(loc.vf.netdev.as_deref(), Some("enp3s0f0v2"));
    assert_eq!(loc.vf.representor.as_deref(), Some("enp3s0f0npf0vf2"));

    // The PF itself is no VF; an absent device is named as such.
    let e = sysfs.find_vf(&pci("0000:03:00.1")).unwrap_err();
    assert!(matches!(e, SysfsError::NotAVirtualFunction { .. }), "{e}");
    assert!(e.to_string().contains("physfn"), "{e}");
    let e = sysfs.find_vf(&pci("0000:81:00.2")).unwrap_err();
    assert!(matches!(e, SysfsError::NoSuchPciDevice { .. }), "{e}");
    assert!(e.to_string().contains("0000:81:00.2"), "{e}");
}

#[test]
fn legacy_mlx5_representor_names_match_through_the_pf_function() {
    // Kernels before devlink ports: representors named by VF index only, PF without a port name.
    let dir = tempfile::tempdir().unwrap();
    let fx = SysfsFixture::new(dir.path()).unwrap();
    let mut pf = SysfsFixture::mlx5_port0();
    pf.netdev = "enp3s0f0".into();
    pf.port_name = None;
    for (i, vf) in pf.vfs.iter_mut().enumerate() {
        vf.representor = Some(RepresentorSpec {
            netdev: format!("enp3s0f0_{i}"),
            port_name: i.to_string(),
        });
    }
    fx.add_pf(&pf).unwrap();
    // A second PF (other function) on the same switch with its own legacy representor "0".
    fx.add_pf(&PfSpec {
        netdev: "enp3s0f1".into(),
        pci: "0000:03:00.1".into(),
        driver: "mlx5_core".into(),
        total_vfs: 8,
        switch_id: Some(MLX5_SWITCH_ID.into()),
        port_name: None,
        vfs: vec![VfSpec {
            pci: "0000:03:08.0".into(),
            driver: Some("mlx5_core".into()),
            netdev: Some("enp3s0f1v0".into()),
            representor: Some(RepresentorSpec {
                netdev: "enp3s0f1_0".into(),
                port_name: "0".into(),
            }),
        }],
    })
    .unwrap();
    let sysfs = Sysfs::new(fx.root());
    let p0 = sysfs.physical_function("enp3s0f0").unwrap();
    assert_eq!(p0.uplink_representor, None);
    let reps: Vec<_> = p0
        .vfs
        .iter()
        .map(|v| v.representor.clone().unwrap())
        .collect();
    assert_eq!(
        reps,
        ["enp3s0f0_0", "enp3s0f0_1", "enp3s0f0_2", "enp3s0f0_3"]
    );
    let loc = sysfs.find_vf(&pci("0000:03:08.0")).unwrap();
    assert_eq!(loc.pf.netdev, "enp3s0f1");
    assert_eq!(loc.vf.representor.as_deref(), Some("enp3s0f1_0"));
}

#[test]
fn legacy_eswitch_mode_has_vfs_but_no_representors() {
    let dir = tempfile::tempdir().unwrap();
    let fx = SysfsFixture::new(dir.path()).unwrap();
    let mut pf = SysfsFixture::mlx5_port0();
    pf.switch_id = None;
    for vf in &mut pf.vfs {
        vf.representor = None;
    }
    fx.add_pf(&pf).unwrap();
    let loc = Sysfs::new(fx.root()).find_vf(&pci("0000:03:00.2")).unwrap();
    assert_eq!(loc.pf.switch_id, None);
    assert_eq!(loc.vf.representor, None);
    assert_eq!(loc.vf.netdev.as_deref(), Some("enp3s0f0v0"));
}

#[test]
fn missing_sriov_numvfs_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let fx = SysfsFixture::mlx5_dual_port(dir.path()).unwrap();
    let file = fx.pci_dir("0000:03:00.1").join("sriov_numvfs");
    fs::remove_file(&file).unwrap();
    let e = Sysfs::new(fx.root()).physical_functions().unwrap_err();
    assert!(
        matches!(e, SysfsError::Read { ref path, .. } if path.ends_with("device/sriov_numvfs")),
        "{e}"
    );
    assert!(
        e.to_string().contains("enp3s0f1np1/device/sriov_numvfs"),
        "{e}"
    );
    assert!(e.to_string().contains("No such file"), "{e}");
    // The other PF stays usable on its own.
    assert_eq!(
        Sysfs::new(fx.root())
            .physical_function("enp3s0f0np0")
            .unwrap()
            .num_vfs,
        4
    );
}

#[test]
fn missing_sriov_totalvfs_means_not_a_pf() {
    let dir = tempfile::tempdir().unwrap();
    let fx = SysfsFixture::mlx5_dual_port(dir.path()).unwrap();
    fs::remove_file(fx.pci_dir("0000:03:00.1").join("sriov_totalvfs")).unwrap();
    let sysfs = Sysfs::new(fx.root());
    let names: Vec<_> = sysfs
        .physical_functions()
        .unwrap()
        .into_iter()
        .map(|p| p.netdev)
        .collect();
    assert_eq!(names, ["enp3s0f0np0"]);
    let e = sysfs.physical_function("enp3s0f1np1").unwrap_err();
    assert!(
        e.to_string().contains("is not an SR-IOV physical function"),
        "{e}"
    );
    assert!(e.to_string().contains("sriov_totalvfs"), "{e}");
    let e = sysfs.physical_function("eth9").unwrap_err();
    assert!(matches!(e, SysfsError::NoSuchNetdev { .. }), "{e}");
}

#[test]
fn garbage_in_sriov_totalvfs_is_a_parse_error_naming_the_value() {
    let dir = tempfile::tempdir().unwrap();
    let fx = SysfsFixture::mlx5_dual_port(dir.path()).unwrap();
    fs::write(fx.pci_dir("0000:03:00.0").join("sriov_totalvfs"), "eight\n").unwrap();
    let e = Sysfs::new(fx.root())
        .physical_function("enp3s0f0np0")
        .unwrap_err();
    assert!(matches!(e, SysfsError::Parse { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("\"eight\" is not a non-negative integer"),
        "{e}"
    );
}

#[test]
fn dangling_virtfn_link_is_reported_with_its_target() {
    let dir = tempfile::tempdir().unwrap();
    let fx = SysfsFixture::mlx5_dual_port(dir.path()).unwrap();
    // The VF's function directory vanished (hot-unplug race) but virtfn2 still points to it.
    fs::remove_dir_all(fx.pci_dir("0000:03:00.4")).unwrap();
    let e = Sysfs::new(fx.root())
        .physical_function("enp3s0f0np0")
        .unwrap_err();
    assert!(matches!(e, SysfsError::DanglingLink { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("virtfn2") && msg.contains("0000:03:00.4") && msg.contains("dangling"),
        "{msg}"
    );
}

#[test]
fn vf_without_representor_and_unparseable_port_names_are_visible() {
    let dir = tempfile::tempdir().unwrap();
    let fx = SysfsFixture::new(dir.path()).unwrap();
    let mut pf = SysfsFixture::mlx5_port0();
    pf.vfs[1].representor = None;
    pf.vfs[2].representor = Some(RepresentorSpec {
        netdev: "enp3s0f0r2".into(),
        port_name: "vport-3".into(),
    });
    fx.add_pf(&pf).unwrap();
    let loc = Sysfs::new(fx.root()).find_vf(&pci("0000:03:00.3")).unwrap();
    assert_eq!(loc.vf.representor, None);
    assert_eq!(
        loc.pf.unparsed_port_names,
        vec![("enp3s0f0r2".to_string(), "vport-3".to_string())]
    );
    let loc = Sysfs::new(fx.root()).find_vf(&pci("0000:03:00.4")).unwrap();
    assert_eq!(loc.vf.representor, None);
    // Still one PF: the oddly named representor is not mistaken for one.
    assert_eq!(Sysfs::new(fx.root()).physical_functions().unwrap().len(), 1);
}

#[test]
fn set_num_vfs_writes_zero_first_when_changing_a_non_zero_count() {
    let dir = tempfile::tempdir().unwrap();
    let fx = SysfsFixture::mlx5_dual_port(dir.path()).unwrap();
    let sysfs = Sysfs::new(fx.root());
    let file = fx.pci_dir("0000:03:00.0").join("sriov_numvfs");

    let change = sysfs.set_num_vfs("enp3s0f0np0", 8).unwrap();
    assert_eq!(
        (change.previous, change.requested, change.writes.clone()),
        (4, 8, vec![0, 8])
    );
    assert_eq!(fs::read_to_string(&file).unwrap(), "8");

    let change = sysfs.set_num_vfs("enp3s0f0np0", 8).unwrap();
    assert!(change.writes.is_empty());
    let change = sysfs.set_num_vfs("enp3s0f0np0", 0).unwrap();
    assert_eq!(change.writes, vec![0]);
    let change = sysfs.set_num_vfs("enp3s0f1np1", 2).unwrap();
    assert_eq!(change.writes, vec![2]);
    assert_eq!(
        fs::read_to_string(fx.pci_dir("0000:03:00.1").join("sriov_numvfs")).unwrap(),
        "2"
    );
}

#[test]
fn set_num_vfs_refuses_more_than_total_and_reports_write_failures() {
    let dir = tempfile::tempdir().unwrap();
    let fx = SysfsFixture::mlx5_dual_port(dir.path()).unwrap();
    let sysfs = Sysfs::new(fx.root());
    let e = sysfs.set_num_vfs("enp3s0f0np0", 9).unwrap_err();
    assert!(
        e.to_string()
            .contains("cannot set 9 VFs, the device supports at most 8"),
        "{e}"
    );
    let e = sysfs.set_num_vfs("lo", 1).unwrap_err();
    assert!(matches!(e, SysfsError::NotSriovCapable { .. }), "{e}");

    // We run as root, so permissions cannot make the write fail; a directory in place of the
    // attribute does (EISDIR), and the error names the file and the value.
    let file = fx.pci_dir("0000:03:00.1").join("sriov_numvfs");
    fs::remove_file(&file).unwrap();
    fs::create_dir(&file).unwrap();
    fs::write(file.join("x"), "").unwrap();
    let e = sysfs.set_num_vfs("enp3s0f1np1", 1).unwrap_err();
    assert!(e.to_string().contains("sriov_numvfs"), "{e}");
}

#[test]
fn device_id_to_attachment_on_the_mlx5_tree() {
    use ferrovn_hwoffload::{DpdkDriverPolicy, PodDatapath, PodVf, plan_vf_attachment};
    let dir = tempfile::tempdir().unwrap();
    let fx = SysfsFixture::mlx5_dual_port(dir.path()).unwrap();
    let sysfs = Sysfs::new(fx.root());
    let policy = DpdkDriverPolicy::default();

    let kernel = plan_vf_attachment(
        &sysfs.find_vf(&pci("0000:03:00.2")).unwrap(),
        PodDatapath::Kernel,
        &policy,
    )
    .unwrap();
    assert_eq!(
        kernel.pod_side,
        PodVf::Netdev {
            netdev: "enp3s0f0v0".into()
        }
    );
    assert_eq!(kernel.representor, "enp3s0f0npf0vf0");

    let dpdk = plan_vf_attachment(
        &sysfs.find_vf(&pci("0000:03:00.5")).unwrap(),
        PodDatapath::Dpdk,
        &policy,
    )
    .unwrap();
    assert_eq!(
        dpdk.pod_side,
        PodVf::Pci {
            pci_address: pci("0000:03:00.5"),
            driver: "vfio-pci".into()
        }
    );
    assert_eq!(dpdk.representor, "enp3s0f0npf0vf3");

    // VF 1 is still on mlx5_core: a DPDK pod asking for it is told what to rebind.
    let e = plan_vf_attachment(
        &sysfs.find_vf(&pci("0000:03:00.3")).unwrap(),
        PodDatapath::Dpdk,
        &policy,
    )
    .unwrap_err();
    assert!(e.to_string().contains("bound to mlx5_core"), "{e}");
}

#[test]
fn the_real_sys_of_this_machine_reads_without_error() {
    // No SR-IOV NIC here: discovery must still walk the real /sys (virtio, veth, lo, whatever
    // other tests create meanwhile) and return consistent PFs, most likely none.
    let pfs = Sysfs::new("/").physical_functions().unwrap();
    eprintln!(
        "SR-IOV PFs on this machine: {:?}",
        pfs.iter().map(|p| &p.netdev).collect::<Vec<_>>()
    );
    for pf in &pfs {
        assert!(pf.num_vfs <= pf.total_vfs, "{pf:?}");
        assert_eq!(pf.vfs.len() as u32, pf.num_vfs, "{pf:?}");
    }
    let e = Sysfs::new("/").find_vf(&pci("ffff:ff:1f.7")).unwrap_err();
    assert!(matches!(e, SysfsError::NoSuchPciDevice { .. }), "{e}");
}
