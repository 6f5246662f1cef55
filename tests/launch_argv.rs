//! The QEMU command line of every rung, planned on fixture hosts (insta snapshots in
//! `tests/snapshots/launch-*.snap`), and the QEMU version checks. Planning changes nothing
//! on the host: the simulator's tree is byte-equal afterwards.

use std::path::PathBuf;
use std::sync::Arc;

use vm_device::gpu_manager::{Candidate, GpuMode, Target, UnifiedGpuManager};
use vm_device::gpu_mdev::UuidSource;
use vm_device::host::SimHost;
use vm_device::launch::{
    plan_launch, Accel, AccelChoice, LaunchError, LaunchOptions, QemuBinary, QemuError, QemuVersion,
};

const UUID: &str = "2f1a6c3e-0d4b-4e8a-9f10-5b7c2d9e8a01";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/hosts")
        .join(name)
}

fn qemu(major: u32, minor: u32) -> QemuBinary {
    QemuBinary {
        path: "/usr/bin/qemu-system-x86_64".into(),
        version: QemuVersion::new(major, minor, 0),
        data_dirs: Vec::new(),
        module_dir: None,
    }
}

fn opts(x_vga: bool) -> LaunchOptions {
    LaunchOptions {
        kernel: "/boot/vmlinuz".into(),
        initrd: Some("/boot/initrd.img".into()),
        append: Some("console=ttyS0 root=/dev/vda1".into()),
        memory_bytes: 4 << 30,
        cpus: 4,
        x_vga,
        allow_boot_vga: false,
        state_dir: "/run/vm-device".into(),
        run_dir: "/run/user/1000/vm-device/vm-42".into(),
        backend_command: vec!["/usr/bin/vm-cli".into(), "gpu".into(), "serve-wgpu".into()],
        mdev_uuid: UuidSource::Given(UUID.into()),
        tuning: Default::default(),
    }
}

fn kvm() -> AccelChoice {
    AccelChoice {
        accel: Accel::Kvm,
        why: "test".into(),
    }
}

fn tcg() -> AccelChoice {
    AccelChoice {
        accel: Accel::Tcg,
        why: "test".into(),
    }
}

/// The first available candidate of `mode` whose target `pick` accepts.
fn candidate(sim: &SimHost, mode: GpuMode, pick: impl Fn(&Target) -> bool) -> Candidate {
    let mut mgr = UnifiedGpuManager::with_host(Arc::new(sim.fork()));
    mgr.scan_backends().unwrap();
    mgr.candidates(mode)
        .unwrap()
        .iter()
        .find(|c| c.is_available() && pick(&c.target))
        .cloned()
        .unwrap_or_else(|| panic!("no available {mode} candidate of that kind"))
}

fn snapshot(
    name: &str,
    fx: &str,
    mode: GpuMode,
    pick: impl Fn(&Target) -> bool,
    x_vga: bool,
    accel: AccelChoice,
) {
    let sim = SimHost::from_fixture(fixture(fx)).unwrap();
    let before = sim.snapshot();
    let c = candidate(&sim, mode, pick);
    let plan = plan_launch(&sim, &c, qemu(10, 0), accel, &opts(x_vga)).unwrap();
    assert_eq!(sim.snapshot(), before, "planning changed the host");
    let text = format!(
        "candidate: {}\n\n{}\nargv:\n{}\n",
        c.describe(),
        plan.change.text(),
        plan.argv.join("\n")
    );
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path("snapshots");
    s.set_prepend_module_to_snapshot(false);
    s.bind(|| insta::assert_snapshot!(format!("launch-{name}"), text));
}

#[test]
fn passthrough_keeps_the_multifunction_gpu_and_its_audio_together() {
    snapshot(
        "passthrough-gpu-with-audio",
        "intel-desktop-gvtg-dgpu",
        GpuMode::Passthrough,
        |t| matches!(t, Target::Gpu { .. }),
        false,
        kvm(),
    );
}

#[test]
fn passthrough_x_vga_only_when_asked() {
    snapshot(
        "passthrough-x-vga",
        "amd-vi-workstation",
        GpuMode::Passthrough,
        |t| matches!(t, Target::Gpu { .. }),
        true,
        kvm(),
    );
}

#[test]
fn gvtg_mdev_without_display_under_display_none() {
    // GVT-g's display is a dma-buf one: QEMU needs OpenGL for it, vm-cli runs -display none
    snapshot(
        "mdev-gvtg",
        "intel-desktop-gvtg-dgpu",
        GpuMode::Mdev,
        |t| matches!(t, Target::MdevType { .. }),
        false,
        kvm(),
    );
}

#[test]
fn nvidia_vgpu_mdev_without_display() {
    snapshot(
        "mdev-nvidia-vgpu",
        "bmc-datacenter-nvidia-vgpu",
        GpuMode::Mdev,
        |t| matches!(t, Target::MdevType { .. }),
        false,
        kvm(),
    );
}

#[test]
fn sriov_vf_is_passed_through() {
    snapshot(
        "mdev-sriov-vf",
        "sriov-pf-with-vfs",
        GpuMode::Mdev,
        |t| matches!(t, Target::SriovVf { .. }),
        false,
        kvm(),
    );
}

#[test]
fn nvidia_vendor_vfio_vgpu_on_its_vf() {
    snapshot(
        "mdev-nvidia-vendor-vfio",
        "sriov-pf-with-vfs",
        GpuMode::Mdev,
        |t| matches!(t, Target::NvidiaVgpu { .. }),
        false,
        kvm(),
    );
}

#[test]
fn wgpu_is_vhost_user_gpu_on_shared_memfd_memory() {
    snapshot(
        "wgpu-tcg",
        "no-gpu-server",
        GpuMode::Wgpu,
        |t| matches!(t, Target::Adapter { .. }),
        false,
        tcg(),
    );
}

#[test]
fn wgpu_under_tcg_needs_qemu_8_and_says_so() {
    let sim = SimHost::from_fixture(fixture("no-gpu-server")).unwrap();
    let c = candidate(&sim, GpuMode::Wgpu, |_| true);
    let err = plan_launch(&sim, &c, qemu(7, 2), tcg(), &opts(false)).unwrap_err();
    match &err {
        LaunchError::Qemu(QemuError::TooOld { found, needed, .. }) => {
            assert_eq!(*found, QemuVersion::new(7, 2, 0));
            assert_eq!(*needed, QemuVersion::new(8, 0, 0));
        }
        other => panic!("expected TooOld, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("needs QEMU 8.0.0 or newer"), "{msg}");
    assert!(msg.contains("--qemu PATH"), "{msg}");
    // With KVM, 7.2 runs vhost-user-gpu.
    assert!(plan_launch(&sim, &c, qemu(7, 2), kvm(), &opts(false)).is_ok());
}

#[test]
fn a_pf_without_vfs_is_refused_with_the_command_that_enables_them() {
    let sim = SimHost::from_fixture(fixture("intel-flex-sriov-idle")).unwrap();
    let mut mgr = UnifiedGpuManager::with_host(Arc::new(sim.fork()));
    mgr.scan_backends().unwrap();
    let Some(c) = mgr
        .candidates(GpuMode::Mdev)
        .unwrap()
        .iter()
        .find(|c| matches!(c.target, Target::SriovPf { .. }))
        .cloned()
    else {
        panic!("intel-flex-sriov-idle has an SR-IOV PF candidate");
    };
    let err = plan_launch(&sim, &c, qemu(10, 0), kvm(), &opts(false)).unwrap_err();
    assert!(err.to_string().contains("vm-cli gpu sriov"), "{err}");
    assert_eq!(err.exit_code(), 3);
}

fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let t = to.join(e.file_name());
        let ft = e.file_type().unwrap();
        if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(e.path()).unwrap(), &t).unwrap();
        } else if ft.is_dir() {
            std::fs::create_dir_all(&t).unwrap();
            copy_tree(&e.path(), &t);
        } else {
            std::fs::copy(e.path(), &t).unwrap();
        }
    }
}

#[test]
fn kvm_only_where_it_can_boot_a_stock_kernel() {
    use vm_device::launch::choose_accel;
    let sim = SimHost::from_fixture(fixture("no-gpu-server")).unwrap();
    assert_eq!(choose_accel(&sim).accel, Accel::Kvm);

    let no_kvm = tempfile::tempdir().unwrap();
    copy_tree(&fixture("no-gpu-server"), no_kvm.path());
    std::fs::remove_file(no_kvm.path().join("dev/kvm")).unwrap();
    let c = choose_accel(&SimHost::from_fixture(no_kvm.path()).unwrap());
    assert_eq!(c.accel, Accel::Tcg);
    assert!(c.why.contains("/dev/kvm"), "{}", c.why);

    let pvm = tempfile::tempdir().unwrap();
    copy_tree(&fixture("no-gpu-server"), pvm.path());
    std::fs::create_dir_all(pvm.path().join("sys/module/kvm_pvm")).unwrap();
    let c = choose_accel(&SimHost::from_fixture(pvm.path()).unwrap());
    assert_eq!(c.accel, Accel::Tcg);
    assert!(c.why.contains("PVM"), "{}", c.why);
}
