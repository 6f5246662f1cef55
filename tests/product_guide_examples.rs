//! The product guide's three programs (`examples/gpu_*_example.rs`) run against recorded
//! hosts and do what the guide says: select, initialize and report; prepare and release;
//! create and remove.

mod common;

use std::path::PathBuf;
use std::process::Command;

/// `cargo test` builds the examples next to the test binaries' `deps/`.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().join("examples");
    let p = dir.join(name);
    assert!(
        p.is_file(),
        "{} was not built (cargo test builds examples)",
        p.display()
    );
    p
}

fn run(name: &str, host: &str) -> String {
    let state = tempfile::tempdir().unwrap();
    let out = Command::new(example(name))
        .env(
            "VM_HOST_ROOT",
            common::repo().join("fixtures/hosts").join(host),
        )
        .env("VM_STATE_DIR", state.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{name} on {host}: {}\n{text}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn unified_example_initializes_the_auto_choice_and_falls_back() {
    let t = run("gpu_unified_example", "intel-desktop-gvtg-dgpu");
    assert!(t.contains("auto: passthrough GPU 0000:01:00.0"), "{t}");
    assert!(t.contains("passthrough: prepared=1 vfio_devices=2"), "{t}");
    assert!(t.contains("Selected: Passthrough"), "{t}");
    let t = run("gpu_unified_example", "intel-iommu-off");
    assert!(t.contains("GPU Passthrough not available"), "{t}");
    assert!(t.contains("Selected: Wgpu"), "{t}");
}

#[test]
fn passthrough_example_prepares_opens_and_releases() {
    let t = run("gpu_passthrough_example", "amd-vi-workstation");
    assert!(t.contains("Found GPU: Amd"), "{t}");
    assert!(t.contains("0000:0c:00.1 open through VFIO"), "{t}");
    assert!(t.contains("released 0000:0c:00.0"), "{t}");
}

#[test]
fn mdev_example_creates_and_removes() {
    let t = run("gpu_mdev_example", "bmc-datacenter-nvidia-vgpu");
    assert!(t.contains("GRID T4-2Q (nvidia-231)"), "{t}");
    assert!(t.contains("Created mdev device: "), "{t}");
    assert!(t.contains("Removed it again"), "{t}");
}
