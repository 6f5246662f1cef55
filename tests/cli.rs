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

/// `--kernel` (or `--initrd`) that is missing or a directory: refused before the GPU is
/// prepared or QEMU started (issue 12: the GPU was prepared, then QEMU failed).
#[test]
fn a_missing_kernel_is_refused_before_any_host_change() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let qemu = tmp.path().join("qemu-system-x86_64");
    let ran = tmp.path().join("qemu-ran");
    std::fs::write(
        &qemu,
        format!(
            "#!/bin/sh\ncase \"$1\" in --version) echo 'QEMU emulator version 10.0.2 (fake)'; exit 0;; esac\ntouch {}\nexit 0\n",
            ran.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&qemu, std::fs::Permissions::from_mode(0o755)).unwrap();
    let kernel = tmp.path().join("vmlinuz");
    std::fs::write(&kernel, b"kernel").unwrap();
    let state = tmp.path().join("state");
    let h = host("intel-desktop-gvtg-dgpu");
    let (k, s, q) = (
        kernel.display().to_string(),
        state.display().to_string(),
        qemu.display().to_string(),
    );
    let dir = tmp.path().display().to_string();
    for (what, extra) in [
        ("--kernel", vec!["--kernel", "/nonexistent/vmlinuz"]),
        ("--kernel", vec!["--kernel", dir.as_str()]),
        (
            "--initrd",
            vec!["--kernel", k.as_str(), "--initrd", "/nonexistent/initrd"],
        ),
    ] {
        let mut args = vec![
            "--host-root",
            h.as_str(),
            "--state-dir",
            s.as_str(),
            "--qemu",
            q.as_str(),
            "--gpu-mode",
            "passthrough",
            "--gpu-device",
            "0000:01:00.0",
        ];
        args.extend(extra);
        let (c, _, e) = run(&args);
        assert_eq!(c, 2, "{args:?}: {e}");
        assert!(e.contains(what) && e.contains("nothing was changed"), "{e}");
        assert!(!e.contains("starting"), "{e}");
        assert!(!ran.exists(), "QEMU ran");
        assert!(
            !state.join("journal").exists(),
            "a journal was written: {e}"
        );
    }
}

/// A write error on standard output (`>/dev/full`) is exit 1, in JSON and text.
#[test]
fn a_failed_write_to_standard_output_is_exit_1() {
    let h = host("intel-desktop-gvtg-dgpu");
    for json in [false, true] {
        let mut args = vec!["--host-root", h.as_str(), "gpu", "list"];
        if json {
            args.push("--json");
        }
        let out = Command::new(env!("CARGO_BIN_EXE_vm-cli"))
            .args(&args)
            .stdout(std::fs::File::create("/dev/full").unwrap())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("writing to standard output"), "{err}");
    }
}

/// `--json host record DIR` prints JSON.
#[test]
fn host_record_prints_json_with_json() {
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("rec");
    let (c, o, e) = run(&[
        "--json",
        "--host-root",
        &host("intel-desktop-gvtg-dgpu"),
        "host",
        "record",
        &out_dir.display().to_string(),
    ]);
    assert_eq!(c, 0, "{e}");
    let v: serde_json::Value = serde_json::from_str(&o).unwrap_or_else(|_| panic!("{o}"));
    assert_eq!(v["command"], "host record");
    assert!(v["pci_functions"].as_u64().unwrap() > 0, "{v}");
}

/// `host record` of a tree with a link that leads nowhere (dangling, or a loop) warns about
/// it and records the rest, instead of aborting.
#[test]
fn host_record_warns_about_a_broken_link_and_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("host");
    common::materialize(
        &common::repo().join("fixtures/hosts/intel-desktop-gvtg-dgpu"),
        &root,
    );
    let bad = root.join("sys/bus/pci/devices/0000:09:00.0");
    std::os::unix::fs::symlink("0000:09:00.0", &bad).unwrap();
    let out_dir = tmp.path().join("rec");
    let (c, o, e) = run(&[
        "--host-root",
        &root.display().to_string(),
        "host",
        "record",
        &out_dir.display().to_string(),
    ]);
    assert_eq!(c, 0, "{e}");
    assert!(e.contains("warning") && e.contains("0000:09:00.0"), "{e}");
    assert!(o.contains("left out"), "{o}");
    assert!(out_dir.join("sys/bus/pci/devices/0000:01:00.0").exists());
}
