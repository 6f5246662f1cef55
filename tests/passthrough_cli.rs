//! `vm-cli gpu prepare / release / restore` on the simulator: the plan printed by
//! `--dry-run` (text and JSON), exit codes of refusals, the journal a prepare leaves, and
//! `gpu list` naming who holds a prepared group.

use std::process::Command;

const Q35: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/real/qemu-q35-viommu");

fn run(state: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vm-cli"))
        .args(["--host-root", Q35, "--state-dir"])
        .arg(state)
        .args(args)
        .env_remove("VM_HOST_ROOT")
        .env_remove("VM_STATE_DIR")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn dry_run_prints_every_write_with_its_undo_and_changes_nothing() {
    let state = tempfile::tempdir().unwrap();
    let (c, o, e) = run(
        state.path(),
        &["gpu", "prepare", "0000:06:01.0", "--dry-run"],
    );
    assert_eq!(c, 0, "{e}");
    assert!(
        o.contains("echo 0000:06:02.0 > /sys/bus/pci/drivers/bochs-drm/unbind"),
        "{o}"
    );
    assert!(
        o.contains("undo: echo 0000:06:01.0 > /sys/bus/pci/drivers/bochs-drm/bind"),
        "{o}"
    );
    assert!(o.contains("check /dev/vfio/11 exists"), "{o}");
    assert!(o.contains("stays: 0000:05:00.0 (Bridge)"), "{o}");
    assert!(
        !state.path().join("journal").exists(),
        "a dry run journals nothing"
    );

    let (c, o, e) = run(
        state.path(),
        &["gpu", "prepare", "0000:01:00.0", "--dry-run", "--json"],
    );
    assert_eq!(c, 0, "{e}");
    let v: serde_json::Value = serde_json::from_str(&o).unwrap();
    assert_eq!(v["schema"], 1);
    assert_eq!(v["iommu_group"], 7);
    assert_eq!(v["plan"]["steps"].as_array().unwrap().len(), 5);
    assert_eq!(v["plan"]["steps"][0]["action"]["op"], "write");
    assert_eq!(v["moved"][0]["driver"], "bochs-drm");
}

#[test]
fn refusals_exit_3_with_evidence_and_remedy() {
    let state = tempfile::tempdir().unwrap();
    let (c, o, e) = run(state.path(), &["gpu", "prepare", "0000:02:00.0"]);
    assert_eq!(c, 3, "{o}{e}");
    assert!(e.contains("boot display"), "{e}");
    assert!(e.contains("--allow-boot-vga"), "{e}");
    let (c, o, _) = run(state.path(), &["--json", "gpu", "prepare", "0000:02:00.0"]);
    assert_eq!(c, 3);
    let v: serde_json::Value = serde_json::from_str(&o).unwrap();
    assert_eq!(v["reasons"][0]["code"], "boot_display");
    let (c, _, e) = run(state.path(), &["gpu", "prepare", "0000:00:1f.2"]);
    assert_eq!(c, 3, "{e}");
    assert!(e.contains("is not a GPU"), "{e}");
}

#[test]
fn a_prepare_leaves_a_detached_journal_that_gpu_list_and_restore_report() {
    let state = tempfile::tempdir().unwrap();
    let (c, o, e) = run(state.path(), &["gpu", "prepare", "0000:01:00.0"]);
    assert_eq!(c, 0, "{e}");
    assert!(o.contains("vm-cli gpu release 0000:01:00.0"), "{o}");
    let journal = state.path().join("journal/group-7.json");
    let j: serde_json::Value = serde_json::from_slice(&std::fs::read(&journal).unwrap()).unwrap();
    assert_eq!(j["detached"], true);
    assert_eq!(j["state"], "prepared");
    assert_eq!(j["steps"].as_array().unwrap().len(), 3);
    assert!(j["steps"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["status"] == "done"));

    let (_, o, _) = run(state.path(), &["gpu", "list"]);
    assert!(o.contains("group-7"), "{o}");
    assert!(o.contains("gpu release"), "{o}");
    let (c, o, _) = run(state.path(), &["gpu", "restore"]);
    assert_eq!(c, 0);
    assert!(o.contains("left alone"), "{o}");
    assert!(journal.exists());
}
