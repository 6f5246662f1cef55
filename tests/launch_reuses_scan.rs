//! A launch is planned on the scan its decision was made on: planning an mdev launch with
//! the manager's inventory lists no sysfs directory again, and plans what `plan_launch`
//! (which scans for itself) plans.

use std::path::PathBuf;
use std::sync::Arc;

use vm_device::gpu_manager::{GpuMode, Target, UnifiedGpuManager};
use vm_device::gpu_mdev::UuidSource;
use vm_device::host::SimHost;
use vm_device::launch::{
    plan_launch, plan_launch_in, Accel, AccelChoice, LaunchOptions, QemuBinary, QemuVersion,
};
use vm_device_sim::Op;

const LAB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/real/qemu-q35-viommu");

fn opts() -> LaunchOptions {
    LaunchOptions {
        kernel: "/boot/vmlinuz".into(),
        initrd: None,
        append: None,
        memory_bytes: 1 << 30,
        cpus: 1,
        x_vga: false,
        allow_boot_vga: false,
        state_dir: "/run/vm-device".into(),
        run_dir: "/run/user/1000/vm-device/vm-42".into(),
        backend_command: vec!["/usr/bin/vm-cli".into()],
        mdev_uuid: UuidSource::Given("2f1a6c3e-0d4b-4e8a-9f10-5b7c2d9e8a01".into()),
        tuning: Default::default(),
    }
}

fn qemu() -> QemuBinary {
    QemuBinary {
        path: "/usr/bin/qemu-system-x86_64".into(),
        version: QemuVersion::new(10, 0, 0),
        data_dirs: Vec::new(),
        module_dir: None,
    }
}

fn kvm() -> AccelChoice {
    AccelChoice {
        accel: Accel::Kvm,
        why: "test".into(),
    }
}

#[test]
fn an_mdev_launch_is_planned_without_a_second_scan() {
    let sim = Arc::new(SimHost::from_fixture(PathBuf::from(LAB)).unwrap());
    let mut mgr = UnifiedGpuManager::with_host(sim.clone());
    mgr.scan_backends().unwrap();
    let c = mgr
        .candidates(GpuMode::Mdev)
        .unwrap()
        .iter()
        .find(|c| c.is_available() && matches!(c.target, Target::MdevType { .. }))
        .cloned()
        .expect("the lab has an available mdev type");
    let inv = mgr.inventory().unwrap();
    sim.clear_ops();
    let reused = plan_launch_in(sim.as_ref(), inv, &c, qemu(), kvm(), &opts()).unwrap();
    let listed: Vec<_> = sim
        .ops()
        .into_iter()
        .filter(|o| matches!(o, Op::List(_)))
        .collect();
    assert!(
        listed.is_empty(),
        "planning on the manager's scan lists the host again: {listed:?}"
    );
    // The scan it would have made finds the same plan.
    let fresh = plan_launch(sim.as_ref(), &c, qemu(), kvm(), &opts()).unwrap();
    assert_eq!(reused, fresh);
    assert!(sim.ops().iter().any(|o| matches!(o, Op::List(_))));
}
