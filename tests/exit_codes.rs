//! One exit-code mapping: the same failure exits with the same documented code whichever
//! path meets it (README, "Exit codes"). A bad UUID is a usage error (2) both in `gpu
//! mdev-create --mdev-uuid` and when a launch plans an mdev with a given UUID (it was 3 in
//! the launch path).

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use vm_device::gpu_manager::{GpuMode, Target, UnifiedGpuManager};
use vm_device::gpu_mdev::UuidSource;
use vm_device::host::SimHost;
use vm_device::launch::{plan_launch, Accel, AccelChoice, LaunchOptions, QemuBinary, QemuVersion};

const LAB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/real/qemu-q35-viommu");
const USAGE: i32 = 2;

fn opts(uuid: UuidSource) -> LaunchOptions {
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
        mdev_uuid: uuid,
        tuning: Default::default(),
    }
}

#[test]
fn a_bad_uuid_is_a_usage_error_in_the_launch_path_too() {
    let sim = SimHost::from_fixture(PathBuf::from(LAB)).unwrap();
    let mut mgr = UnifiedGpuManager::with_host(Arc::new(sim.fork()));
    mgr.scan_backends().unwrap();
    let c = mgr
        .candidates(GpuMode::Mdev)
        .unwrap()
        .iter()
        .find(|c| c.is_available() && matches!(c.target, Target::MdevType { .. }))
        .cloned()
        .expect("the lab has an available mdev type");
    let qemu = QemuBinary {
        path: "/usr/bin/qemu-system-x86_64".into(),
        version: QemuVersion::new(10, 0, 0),
        data_dirs: Vec::new(),
        module_dir: None,
    };
    let accel = AccelChoice {
        accel: Accel::Kvm,
        why: "test".into(),
    };
    let err = plan_launch(
        &sim,
        &c,
        qemu,
        accel,
        &opts(UuidSource::Given("nope".into())),
    )
    .expect_err("`nope` is no UUID");
    assert!(err.to_string().contains("is not a UUID"), "{err}");
    assert_eq!(err.exit_code(), USAGE, "{err}");
}

#[test]
fn a_bad_uuid_is_a_usage_error_in_mdev_create() {
    let o = Command::new(env!("CARGO_BIN_EXE_vm-cli"))
        .args(["--host-root", LAB, "gpu", "mdev-create", "--mdev-type"])
        .args(["mbochs-small", "--mdev-uuid", "nope"])
        .env_remove("VM_CONFIG_ROOT")
        .env_remove("VM_STATE_DIR")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("is not a UUID"), "{stderr}");
    assert_eq!(o.status.code(), Some(USAGE), "{stderr}");
}
