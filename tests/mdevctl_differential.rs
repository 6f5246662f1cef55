//! Differential test against mdevctl (Debian's 1.2.0, installed by `.ci/install-deps`) on
//! every project fixture and shared tree with mdev parents. mdevctl 1.2 has no alternative
//! root, so it runs in a user + mount namespace (`unshare -rm`) with the tree's `sys` bound on
//! `/sys` and the tree's `etc/mdevctl.d` on `/etc/mdevctl.d`. Compared: `mdevctl types
//! --dumpjson` with `vm-cli gpu mdev-types --json` (parents, type ids, available instances,
//! device API, name, description), and `mdevctl list --dumpjson` / `list --defined
//! --dumpjson` with `vm-cli gpu mdev-list --json` (active and defined devices, their parents,
//! types and start mode). Each tree gets one extra definition so that defined-only devices
//! are compared too.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn mdevctl(root: &Path, args: &str) -> Value {
    let script = format!(
        "mount --bind {sys} /sys && mount --bind {etc} /etc/mdevctl.d && mdevctl {args}",
        sys = root.join("sys").display(),
        etc = root.join("etc/mdevctl.d").display(),
    );
    let o = Command::new("unshare")
        .args(["-rm", "sh", "-c", &script])
        .output()
        .expect("unshare (util-linux) runs");
    assert!(
        o.status.success(),
        "mdevctl {args} on {}: {}",
        root.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    let out = String::from_utf8_lossy(&o.stdout);
    if out.trim().is_empty() {
        return Value::Array(Vec::new());
    }
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("mdevctl {args}: {e}: {out}"))
}

fn vm_cli(root: &Path, args: &[&str]) -> Value {
    let o = Command::new(env!("CARGO_BIN_EXE_vm-cli"))
        .arg("--host-root")
        .arg(root)
        .args(args)
        .output()
        .unwrap();
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "vm-cli {args:?}: {e}: {}",
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

/// mdevctl's `[{PARENT: [{ID: {...}}, …]}]` as (parent, id, fields).
fn flatten(v: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for by_parent in v.as_array().into_iter().flatten() {
        for (parent, items) in by_parent.as_object().into_iter().flatten() {
            for item in items.as_array().into_iter().flatten() {
                for (id, fields) in item.as_object().into_iter().flatten() {
                    out.push((parent.clone(), id.clone(), fields.clone()));
                }
            }
        }
    }
    out
}

fn s(v: &Value) -> String {
    v.as_str().unwrap_or("").to_string()
}

#[test]
fn types_and_devices_agree_with_mdevctl() {
    let mut compared = 0;
    for src in common::all_hosts() {
        let name = common::host_name(&src);
        if name.ends_with("malformed") {
            // Garbage attributes on purpose: mdevctl stops at the first non-UTF-8 file, where
            // vm-cli warns and goes on (tests/corrupted_hosts.rs covers that tree).
            continue;
        }
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("host");
        common::materialize(&src, &root);
        let Ok(mut parents) = std::fs::read_dir(root.join("sys/class/mdev_bus")) else {
            continue;
        };
        let Some(first) = parents.next().and_then(Result::ok) else {
            continue;
        };
        // What mdevctl 1.2 insists on, and one defined-only device.
        let etc = root.join("etc/mdevctl.d");
        for d in ["scripts.d/callouts", "scripts.d/notifiers"] {
            std::fs::create_dir_all(etc.join(d)).unwrap();
        }
        let parent = first.file_name().to_string_lossy().into_owned();
        let types = vm_cli(&root, &["gpu", "mdev-types", "--json"]);
        let Some(some_type) = types["types"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["parent"] == parent.as_str() && t["backend"] == "mdev")
            .map(|t| s(&t["type_id"]))
        else {
            continue;
        };
        std::fs::create_dir_all(etc.join(&parent)).unwrap();
        std::fs::write(
            etc.join(&parent).join("0e0e0e0e-0000-4000-8000-0000000000aa"),
            format!("{{\n  \"mdev_type\": \"{some_type}\",\n  \"start\": \"auto\",\n  \"attrs\": []\n}}"),
        )
        .unwrap();

        // Types.
        let theirs: BTreeSet<(String, String, String)> =
            flatten(&mdevctl(&root, "types --dumpjson"))
                .into_iter()
                .map(|(p, id, f)| {
                    let desc = f["description"].as_str().map(str::to_string);
                    (
                        p,
                        id,
                        format!(
                            "{} {} {:?} {:?}",
                            f["available_instances"],
                            f["device_api"],
                            f["name"].as_str(),
                            desc
                        ),
                    )
                })
                .collect();
        let ours: BTreeSet<(String, String, String)> = types["types"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["backend"] == "mdev")
            .map(|t| {
                let desc = t["description"]
                    .as_str()
                    .map(|d| d.trim_end().replace('\n', ", "));
                (
                    s(&t["parent"]),
                    s(&t["type_id"]),
                    format!(
                        "{} {} {:?} {:?}",
                        t["available_instances"],
                        t["device_api"],
                        t["name"].as_str(),
                        desc
                    ),
                )
            })
            .collect();
        assert_eq!(ours, theirs, "{name}: mdev types");

        // Devices: active (mdevctl list) and defined (mdevctl list --defined).
        let rows = vm_cli(&root, &["gpu", "mdev-list", "--json"]);
        let rows = rows["mdevs"].as_array().unwrap();
        let ours_active: BTreeSet<(String, String, String)> = rows
            .iter()
            .filter(|r| r["active"] == true)
            .map(|r| (s(&r["parent"]), s(&r["uuid"]), s(&r["type_id"])))
            .collect();
        let theirs_active: BTreeSet<(String, String, String)> =
            flatten(&mdevctl(&root, "list --dumpjson"))
                .into_iter()
                .map(|(p, u, f)| (p, u, s(&f["mdev_type"])))
                .collect();
        assert_eq!(ours_active, theirs_active, "{name}: active mdevs");
        let ours_defined: BTreeSet<(String, String, String, String)> = rows
            .iter()
            .filter(|r| !r["start"].is_null())
            .map(|r| {
                (
                    s(&r["parent"]),
                    s(&r["uuid"]),
                    s(&r["type_id"]),
                    s(&r["start"]),
                )
            })
            .collect();
        let theirs_defined: BTreeSet<(String, String, String, String)> =
            flatten(&mdevctl(&root, "list --defined --dumpjson"))
                .into_iter()
                .map(|(p, u, f)| (p, u, s(&f["mdev_type"]), s(&f["start"])))
                .collect();
        assert_eq!(ours_defined, theirs_defined, "{name}: defined mdevs");
        assert_eq!(ours_defined.len(), 1, "{name}: the added definition");
        println!("{name}: types, active and defined mdevs agree with mdevctl");
        compared += 1;
    }
    assert!(
        compared >= 3,
        "trees with mdev parents compared: {compared}"
    );
}
