//! vm-cli behaviour: exit codes, remedies per CPU vendor, preference and fallback, filters.

mod common;

use std::process::Command;

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vm-cli"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `vm-cli --host-root HOST --kernel k ARGS… --dry-run`.
fn dry_run(host: &str, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["--host-root", host, "--kernel", "k"];
    all.extend_from_slice(args);
    all.push("--dry-run");
    run(&all)
}

fn host(name: &str) -> String {
    common::repo()
        .join("fixtures/hosts")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn usage_errors_exit_2_and_say_what_is_wrong() {
    let (c, _, e) = run(&["--bogus"]);
    assert_eq!(c, 2, "{e}");
    let (c, _, e) = run(&["--kernel", "k", "--gpu-device", "01:00", "--dry-run"]);
    assert_eq!(c, 2);
    assert!(e.contains("not a PCI address"), "{e}");
    let (c, _, e) = run(&["--kernel", "k", "--gpu-mode", "vgpu"]);
    assert_eq!(c, 2);
    assert!(e.contains("unknown GPU mode"), "{e}");
    let (c, _, e) = run(&[]);
    assert_eq!(c, 2);
    assert!(e.contains("--kernel"), "{e}");
    let (c, o, _) = run(&["--help"]);
    assert_eq!(c, 0);
    assert!(o.contains("Exit codes"));
}

#[test]
fn forced_passthrough_without_iommu_exits_3_with_the_cpu_vendors_parameters() {
    let (c, _, e) = dry_run(&host("intel-iommu-off"), &["--gpu-mode", "passthrough"]);
    assert_eq!(c, 3, "{e}");
    assert!(e.contains("intel_iommu=on iommu=pt"), "{e}");
    let (c, _, e) = dry_run(&host("amd-iommu-off"), &["--gpu-mode", "passthrough"]);
    assert_eq!(c, 3, "{e}");
    assert!(e.contains("amd_iommu=on iommu=pt"), "{e}");
    assert!(!e.contains("intel_iommu"), "{e}");
}

#[test]
fn preferred_mode_falls_back_down_the_ladder_and_not_when_told() {
    let h = host("intel-iommu-off");
    let (c, o, _) = dry_run(&h, &["--prefer-mode", "passthrough", "--json"]);
    assert_eq!(c, 0);
    let v: serde_json::Value = serde_json::from_str(&o).unwrap();
    assert_eq!(v["selected"]["mode"], "wgpu");
    assert_eq!(v["rejected"][0]["reason_code"], "iommu_disabled");
    let (c, _, _) = dry_run(&h, &["--prefer-mode", "passthrough", "--no-fallback"]);
    assert_eq!(c, 3);
    // Preferring wgpu never climbs back up to passthrough, though it is available.
    let (c, o, _) = run(&[
        "--host-root",
        &host("intel-desktop-gvtg-dgpu"),
        "--kernel",
        "k",
        "--prefer-mode",
        "wgpu",
        "--dry-run",
        "--json",
    ]);
    assert_eq!(c, 0);
    let v: serde_json::Value = serde_json::from_str(&o).unwrap();
    assert_eq!(v["selected"]["mode"], "wgpu");
}

#[test]
fn gpu_device_restricts_every_rung() {
    let h = host("bmc-datacenter-nvidia-vgpu");
    // 0000:3b:00.0 runs an mdev: passthrough refused, mdev offered on that GPU only.
    let (c, o, e) = dry_run(&h, &["--gpu-device", "0000:3b:00.0", "--json"]);
    assert_eq!(c, 0, "{e}");
    let v: serde_json::Value = serde_json::from_str(&o).unwrap();
    assert_eq!(v["selected"]["mode"], "mdev");
    assert_eq!(v["selected"]["device"], "0000:3b:00.0");
    assert_eq!(v["rejected"][0]["reason_code"], "active_mdevs");
    let (c, _, e) = dry_run(
        &h,
        &["--gpu-device", "0000:99:00.0", "--gpu-mode", "passthrough"],
    );
    assert_eq!(c, 3);
    assert!(e.contains("not a PCI function of this host"), "{e}");
}

#[test]
fn mdev_type_by_name_and_did_you_mean() {
    let h = host("bmc-datacenter-nvidia-vgpu");
    let (c, o, e) = dry_run(
        &h,
        &["--gpu-mode", "mdev", "--mdev-type", "GRID T4-2Q", "--json"],
    );
    assert_eq!(c, 0, "{e}");
    let v: serde_json::Value = serde_json::from_str(&o).unwrap();
    let t = v["selected"]["mdev_type"].as_str().unwrap().to_string();
    assert!(t.starts_with("nvidia-"), "{t}");
    let (c, _, e) = dry_run(&h, &["--gpu-mode", "mdev", "--mdev-type", "GRID T4-2"]);
    assert_eq!(c, 3);
    assert!(e.contains("did you mean"), "{e}");
}

#[test]
fn boot_display_is_refused_unless_allowed() {
    let h = host("single-gpu-boot-display");
    let (c, _, e) = dry_run(&h, &["--gpu-mode", "passthrough"]);
    assert_eq!(c, 3);
    assert!(e.contains("boot display"), "{e}");
    let (c, _, e) = dry_run(&h, &["--gpu-mode", "passthrough", "--allow-boot-vga"]);
    assert_eq!(c, 0, "{e}");
}

#[test]
fn launching_without_a_qemu_names_the_flag_that_gives_one() {
    let (c, _, e) = run(&[
        "--host-root",
        &host("no-gpu-server"),
        "--kernel",
        "k",
        "--qemu",
        "/nonexistent/qemu-system-x86_64",
    ]);
    assert_eq!(c, 1);
    assert!(e.contains("--qemu PATH"), "{e}");
}

/// `vm-cli … | head`: standard output closed before vm-cli writes. The commands end quietly
/// with their usual exit code instead of panicking on the broken pipe.
#[test]
fn a_closed_standard_output_is_no_panic() {
    let h = host("intel-desktop-gvtg-dgpu");
    for args in [
        vec!["--host-root", h.as_str(), "gpu", "list"],
        vec!["--host-root", h.as_str(), "gpu", "list", "--json"],
        vec!["--host-root", h.as_str(), "gpu", "doctor"],
        vec!["--host-root", h.as_str(), "--kernel", "k", "--dry-run"],
        vec!["--host-root", h.as_str(), "gpu", "mdev-types"],
    ] {
        let (read, write) = std::io::pipe().unwrap();
        drop(read);
        let out = Command::new(env!("CARGO_BIN_EXE_vm-cli"))
            .args(&args)
            .stdout(write)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
    }
}
