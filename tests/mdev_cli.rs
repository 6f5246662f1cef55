//! `vm-cli gpu mdev-types | mdev-create | mdev-remove | sriov` against fixture hosts: output,
//! JSON schema 1 and exit codes.

mod mdev_common;

use std::process::{Command, Output};

use mdev_common::*;
use serde_json::Value;

fn vm_cli(root: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vm-cli"))
        .arg("--host-root")
        .arg(root)
        .args(args)
        .env_remove("VM_CONFIG_ROOT")
        .env_remove("VM_STATE_DIR")
        .output()
        .expect("run vm-cli")
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

#[test]
fn mdev_types_lists_every_sample_type_as_json() {
    let o = vm_cli(QEMU_LAB, &["gpu", "mdev-types", "--json"]);
    assert_eq!(o.status.code(), Some(0));
    let v = json(&o);
    assert_eq!(v["schema"], 1);
    let ids: Vec<&str> = v["types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["type_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "mbochs-large",
            "mbochs-medium",
            "mbochs-small",
            "mdpy-hd",
            "mdpy-vga",
            "mdpy-xga",
            "mtty-1",
            "mtty-2"
        ]
    );
    let mtty1 = &v["types"][6];
    assert_eq!(mtty1["available_instances"], 24);
    assert_eq!(mtty1["description"], Value::Null);
    assert_eq!(mtty1["name"], "Single port serial");
}

#[test]
fn mdev_types_of_an_unknown_parent_exits_3() {
    let o = vm_cli(QEMU_LAB, &["gpu", "mdev-types", "--gpu-device", "mbochz"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("parents here: mbochs, mdpy, mtty"));
}

#[test]
fn dry_run_create_prints_the_plan_with_its_undo() {
    let o = vm_cli(
        QEMU_LAB,
        &[
            "gpu",
            "mdev-create",
            "--mdev-type",
            "mdpy-xga",
            "--vm-name",
            "web",
            "--index",
            "1",
            "--dry-run",
            "--json",
        ],
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v = json(&o);
    let uuid = vm_device::gpu_mdev::ids::for_vm("web", 1).to_string();
    assert_eq!(v["device"], uuid.as_str());
    assert_eq!(v["dry_run"], true);
    assert_eq!(v["choice"]["backend"], "mdev");
    assert_eq!(v["choice"]["parent"], "mdpy");
    assert_eq!(
        v["plan"]["steps"][0]["action"]["path"],
        "/sys/class/mdev_bus/mdpy/mdev_supported_types/mdpy-xga/create"
    );
    assert_eq!(
        v["plan"]["steps"][0]["inverse"]["path"],
        format!("/sys/bus/mdev/devices/{uuid}/remove").as_str()
    );
    assert_eq!(v["plan"]["key"], "mdev-mdpy");
    assert_eq!(v["plan"]["steps"][1]["action"]["op"], "verify");
    assert_eq!(v["expect"][0]["state"], "mdev_active");
    assert_eq!(v["verified"], Value::Array(Vec::new()));
}

#[test]
fn create_reports_the_group_and_the_qemu_device() {
    let o = vm_cli(
        QEMU_LAB,
        &[
            "gpu",
            "mdev-create",
            "--mdev-type",
            "mbochs-small",
            "--mdev-uuid",
            "5e5e5e5e-0000-4000-8000-000000000001",
        ],
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("IOMMU group 12, /dev/vfio/12"), "{text}");
    assert!(
        text.contains("sysfsdev=/sys/bus/mdev/devices/5e5e5e5e-0000-4000-8000-000000000001"),
        "{text}"
    );
}

#[test]
fn usage_and_availability_errors_have_their_exit_codes() {
    let bad_uuid = vm_cli(
        QEMU_LAB,
        &[
            "gpu",
            "mdev-create",
            "--mdev-type",
            "mtty-1",
            "--mdev-uuid",
            "nope",
        ],
    );
    assert_eq!(bad_uuid.status.code(), Some(2));
    let unknown = vm_cli(QEMU_LAB, &["gpu", "mdev-create", "--mdev-type", "mtty-3"]);
    assert_eq!(unknown.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("did you mean"));
    let gone = vm_cli(
        QEMU_LAB,
        &["gpu", "mdev-remove", "5e5e5e5e-0000-4000-8000-000000000001"],
    );
    assert_eq!(gone.status.code(), Some(3));
}

/// `vm-cli --host-root LAB --sim-state DIR ARGS…`, with this machine's config and state
/// variables out of the way.
fn vm_cli_persistent(sim_state: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vm-cli"))
        .args(["--host-root", QEMU_LAB, "--sim-state"])
        .arg(sim_state)
        .args(args)
        .env_remove("VM_CONFIG_ROOT")
        .env_remove("VM_STATE_DIR")
        .output()
        .expect("run vm-cli")
}

#[test]
fn a_persisted_create_is_defined_for_the_next_command() {
    // The definition goes to the simulated host (its tree, kept by --sim-state), never to
    // this machine's /etc, so the next vm-cli lists it as mdevctl would.
    let state = tempfile::tempdir().unwrap();
    let o = vm_cli_persistent(
        state.path(),
        &[
            "gpu",
            "mdev-create",
            "--mdev-type",
            "mtty-2",
            "--vm-name",
            "tty-vm",
            "--persist",
        ],
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let uuid = vm_device::gpu_mdev::ids::for_vm("tty-vm", 0).to_string();
    let o = vm_cli_persistent(state.path(), &["gpu", "mdev-list", "--json"]);
    assert_eq!(o.status.code(), Some(0));
    let v = json(&o);
    let row = v["mdevs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["uuid"] == uuid.as_str())
        .unwrap_or_else(|| panic!("{uuid} not listed: {v}"));
    assert_eq!(row["parent"], "mtty");
    assert_eq!(row["type_id"], "mtty-2");
    assert_eq!(row["active"], true);
    assert_eq!(row["start"], "manual", "{row}");
    // Removing the device keeps its definition, as with mdevctl: it is defined, not active.
    let o = vm_cli_persistent(state.path(), &["gpu", "mdev-remove", &uuid]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v = json(&vm_cli_persistent(
        state.path(),
        &["gpu", "mdev-list", "--json"],
    ));
    let row = v["mdevs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["uuid"] == uuid.as_str())
        .unwrap_or_else(|| panic!("{uuid} not listed: {v}"));
    assert_eq!(row["active"], false);
    assert_eq!(row["start"], "manual");
}

#[test]
fn sriov_dry_run_goes_through_zero() {
    let o = vm_cli(
        &fixture_dir("sriov-pf-with-vfs"),
        &[
            "gpu",
            "sriov",
            "--gpu-device",
            "0000:41:00.0",
            "--num-vfs",
            "2",
            "--dry-run",
        ],
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let text = String::from_utf8_lossy(&o.stdout);
    let w0 = text
        .find("echo 0 > /sys/bus/pci/devices/0000:41:00.0/sriov_numvfs")
        .unwrap();
    let w2 = text
        .find("echo 2 > /sys/bus/pci/devices/0000:41:00.0/sriov_numvfs")
        .unwrap();
    assert!(w0 < w2, "{text}");
}

#[test]
fn mdev_types_tables_of_every_mediated_fixture() {
    // What a person reads: pinned, reviewed with `cargo insta review`.
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path("snapshots/mdev");
    settings.set_prepend_module_to_snapshot(false);
    settings.bind(|| {
        for (name, dir) in [
            ("qemu-q35-viommu", QEMU_LAB.to_string()),
            (
                "intel-desktop-gvtg-dgpu",
                fixture_dir("intel-desktop-gvtg-dgpu"),
            ),
            (
                "bmc-datacenter-nvidia-vgpu",
                fixture_dir("bmc-datacenter-nvidia-vgpu"),
            ),
            ("sriov-pf-with-vfs", fixture_dir("sriov-pf-with-vfs")),
        ] {
            let o = vm_cli(&dir, &["gpu", "mdev-types"]);
            let text = format!(
                "exit {}\n{}",
                o.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&o.stdout)
            );
            insta::assert_snapshot!(format!("mdev-types-{name}"), text);
        }
    });
}

/// `gpu mdev-list`: active devices and mdevctl definitions (read through the host, so from
/// the tree on a simulated host), merged by UUID; unreadable definitions are warnings.
#[test]
fn mdev_list_merges_active_devices_and_mdevctl_definitions() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("host");
    let cp = Command::new("cp")
        .arg("-a")
        .arg(fixture_dir("bmc-datacenter-nvidia-vgpu"))
        .arg(&root)
        .status()
        .unwrap();
    assert!(cp.success());
    let defs = root.join("etc/mdevctl.d");
    let def = |parent: &str, name: &str, body: &str| {
        std::fs::create_dir_all(defs.join(parent)).unwrap();
        std::fs::write(defs.join(parent).join(name), body).unwrap();
    };
    // The active device on 0000:3b:00.0, defined to start at boot.
    def(
        "0000:3b:00.0",
        "5b2e8f3a-6c1d-4e7a-9b0f-1d2c3e4f5a01",
        "{\n  \"mdev_type\": \"nvidia-231\",\n  \"start\": \"auto\"\n}",
    );
    // Defined only.
    def(
        "0000:5e:00.0",
        "0e0e0e0e-0000-4000-8000-000000000001",
        "{\n  \"mdev_type\": \"nvidia-222\",\n  \"start\": \"manual\",\n  \"attrs\": []\n}",
    );
    // Not definitions.
    def("0000:5e:00.0", "notes.txt", "hello");
    def(
        "0000:5e:00.0",
        "0e0e0e0e-0000-4000-8000-000000000002",
        "{\"start\": 3}",
    );
    let r = root.to_str().unwrap();
    let o = vm_cli(r, &["gpu", "mdev-list", "--json"]);
    assert_eq!(o.status.code(), Some(0));
    let v = json(&o);
    assert_eq!(v["schema"], 1);
    let rows = v["mdevs"].as_array().unwrap();
    assert_eq!(rows.len(), 4, "{rows:?}");
    let row = |uuid: &str| rows.iter().find(|r| r["uuid"] == uuid).unwrap().clone();
    let a = row("5b2e8f3a-6c1d-4e7a-9b0f-1d2c3e4f5a01");
    assert_eq!(
        (a["active"].clone(), a["start"].clone()),
        (true.into(), "auto".into())
    );
    assert_eq!(a["iommu_group"], 20);
    let d = row("0e0e0e0e-0000-4000-8000-000000000001");
    assert_eq!(d["active"], false);
    assert_eq!(d["start"], "manual");
    assert_eq!(d["type_id"], "nvidia-222");
    assert_eq!(d["iommu_group"], Value::Null);
    let b = row("5b2e8f3a-6c1d-4e7a-9b0f-1d2c3e4f5a02");
    assert_eq!(
        (b["active"].clone(), b["start"].clone()),
        (true.into(), Value::Null)
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("notes.txt: the file name is not a UUID"),
        "{err}"
    );
    assert!(
        err.contains("0e0e0e0e-0000-4000-8000-000000000002: not an mdevctl definition"),
        "{err}"
    );
    let o = vm_cli(r, &["gpu", "mdev-list"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("5b2e8f3a-6c1d-4e7a-9b0f-1d2c3e4f5a01")
                && l.ends_with("active, defined (auto)")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("0e0e0e0e-0000-4000-8000-000000000001")
                && l.ends_with("defined (manual)")),
        "{text}"
    );
}

/// Refusals exit 3, as README documents: a UUID already in use, more VFs than the PF has.
#[test]
fn refusals_of_mdev_create_and_sriov_exit_3() {
    let o = vm_cli(
        &fixture_dir("bmc-datacenter-nvidia-vgpu"),
        &[
            "gpu",
            "mdev-create",
            "--mdev-type",
            "nvidia-222",
            "--mdev-uuid",
            "5b2e8f3a-6c1d-4e7a-9b0f-1d2c3e4f5a01",
            "--dry-run",
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("already exists"), "{err}");
    let o = vm_cli(
        &fixture_dir("sriov-pf-with-vfs"),
        &[
            "gpu",
            "sriov",
            "--gpu-device",
            "0000:41:00.0",
            "--num-vfs",
            "999",
            "--dry-run",
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("sriov_totalvfs"), "{err}");
}

/// mdevctl keeps its own scripts under `/etc/mdevctl.d/scripts.d/{callouts,notifiers}`:
/// not a parent, so `gpu mdev-list` neither lists nor warns about them.
#[test]
fn mdev_list_skips_mdevctls_own_scripts_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("host");
    std::fs::create_dir_all(&root).unwrap();
    vm_device_sim::copy_fixture(
        std::path::Path::new(&fixture_dir("intel-desktop-gvtg-dgpu")),
        &root,
    )
    .unwrap();
    for d in ["callouts", "notifiers"] {
        let dir = root.join("etc/mdevctl.d/scripts.d").join(d);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("hook"), "#!/bin/sh\n").unwrap();
    }
    let o = vm_cli(&root.display().to_string(), &["gpu", "mdev-list"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(!err.contains("scripts.d"), "{err}");
}
