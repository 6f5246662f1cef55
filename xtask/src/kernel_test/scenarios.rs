//! The scenario table: what runs in the guest, what its output must contain, and what the
//! host checks afterwards. Add a scenario by adding a row here and a script under
//! `guest/scenarios/` (busybox ash, sourcing `/ktest/lib.sh`).

use std::collections::BTreeMap;
use std::path::Path;

/// One scenario of `cargo xtask kernel-test`.
pub struct Scenario {
    /// Name: `KTEST <name> PASS|FAIL`, `--scenario <name>`, `/ktest/scenarios/<name>.sh`.
    pub name: &'static str,
    /// One line on what it proves.
    pub about: &'static str,
    /// The guest script (busybox ash). It sources `/ktest/lib.sh` and ends with `finish` or `die`.
    pub script: &'static str,
    /// Substrings that must each appear in some output line of the scenario for a PASS:
    /// proof that the steps that matter actually ran.
    pub expect: &'static [&'static str],
    /// A host-side check over the scenario's output lines and artifact directory, run after
    /// the guest said PASS; `Err` turns the verdict into FAIL.
    pub host_check: Option<HostCheck>,
}

/// A host-side check: (output lines of the scenario, its artifact directory) → detail or error.
pub type HostCheck = fn(&[String], &Path) -> Result<String, String>;

/// Every scenario, in run order. Each leaves the guest as it found it, so any subset can run.
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "record",
        about: "vm-cli host record inside the guest; the tree agrees with sysfs",
        script: include_str!("guest/scenarios/record.sh"),
        expect: &["ok tree has sys/bus/pci/devices"],
        host_check: Some(check_record),
    },
    Scenario {
        name: "gpu-list",
        about: "vm-cli gpu list --json agrees with sysfs (addresses, ids, class, drivers, groups)",
        script: include_str!("guest/scenarios/gpu-list.sh"),
        expect: &["ok vm-cli gpu list --json printed"],
        host_check: Some(check_gpu_list),
    },
    Scenario {
        name: "lab-iommu",
        about: "the emulated Intel IOMMU made the groups the topology implies",
        script: include_str!("guest/scenarios/lab-iommu.sh"),
        expect: &[
            "ok iommu groups populated",
            "share group",
            "ok /dev/vfio/vfio exists",
        ],
        host_check: None,
    },
    Scenario {
        name: "lab-vfio-bind",
        about: "driver_override/unbind/drivers_probe moves 01:00.0 to vfio-pci and back",
        script: include_str!("guest/scenarios/lab-vfio-bind.sh"),
        expect: &[
            "ok 0000:01:00.0 bound to vfio-pci",
            "appeared",
            "ok 0000:01:00.0 back on",
        ],
        host_check: Some(super::differential::check_lab_vfio_bind),
    },
    Scenario {
        name: "lab-shared-group",
        about: "both members of the bridge's shared group go to vfio-pci and back",
        script: include_str!("guest/scenarios/lab-shared-group.sh"),
        expect: &["ok 0000:06:02.0 on vfio-pci", "gone"],
        host_check: Some(super::differential::check_lab_shared_group),
    },
    Scenario {
        name: "lab-mdev",
        about: "create and remove an mbochs mediated device through sysfs",
        script: include_str!("guest/scenarios/lab-mdev.sh"),
        expect: &["created", "appeared", "removed"],
        host_check: Some(super::differential::check_lab_mdev),
    },
    Scenario {
        name: "passthrough",
        about: "vm-cli gpu prepare/release of 01:00.0 with VFIO in between, the shared group 11 as one, boot VGA refused",
        script: include_str!("guest/scenarios/passthrough.sh"),
        expect: &[
            "ok gpu prepare 0000:01:00.0 exits 0",
            "ok config read through VFIO: vendor 0x1234",
            "ok DMA map/unmap released",
            "ok gpu release 0000:01:00.0 exits 0",
            "ok 0000:06:02.0 (same group",
            "ok gpu prepare 0000:02:00.0 (boot VGA) refused with exit 3",
            "snapshot 4-end",
        ],
        host_check: Some(super::differential::check_passthrough),
    },
    Scenario {
        name: "crash-restore",
        about: "kill -9 of vm-cli gpu prepare mid-way (after 4 changes), then gpu restore: every driver and override as before",
        script: include_str!("guest/scenarios/crash-restore.sh"),
        expect: &[
            "ok vm-cli died of SIGKILL",
            "ok killed mid-way: 0000:06:01.0 unbound",
            "ok gpu restore exits 0",
            "ok driver links, driver_override and /dev/vfio after restore equal the listing before",
            "snapshot 2-restored",
        ],
        host_check: Some(super::differential::check_crash_restore),
    },
    Scenario {
        name: "mdev",
        about: "vm-cli mdev-create/remove on mbochs, mdpy, mtty with VFIO in between; mdpy full: exit 3 and the kernel's EUSERS",
        script: include_str!("guest/scenarios/mdev.sh"),
        expect: &[
            "ok vfio_smoke",
            "ok gpu mdev-remove",
            "ok create #5 refused with exit 3",
            "ok the kernel itself refuses a create beyond capacity (EUSERS)",
            "snapshot 4-end",
        ],
        host_check: Some(super::differential::check_mdev),
    },
];

/// Finds a scenario by name.
pub fn find(name: &str) -> Option<&'static Scenario> {
    SCENARIOS.iter().find(|s| s.name == name)
}

/// Facts the guest read from sysfs for one PCI function (`fact ADDR vendor=.. ...` lines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciFact {
    /// `0x1234`
    pub vendor: String,
    /// `0x1111`
    pub device: String,
    /// `0x038000`
    pub class: String,
    /// Driver name, or `None`.
    pub driver: Option<String>,
    /// IOMMU group number, or `None`.
    pub iommu_group: Option<String>,
}

/// Parses the `fact` lines of a scenario's output, keyed by PCI address.
pub fn parse_facts(lines: &[String]) -> BTreeMap<String, PciFact> {
    let mut out = BTreeMap::new();
    for line in lines {
        let Some(rest) = line.strip_prefix("fact ") else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let Some(addr) = words.next() else { continue };
        let mut kv = BTreeMap::new();
        for w in words {
            if let Some((k, v)) = w.split_once('=') {
                kv.insert(k, v);
            }
        }
        let get = |k: &str| kv.get(k).map(|v| v.to_string()).unwrap_or_default();
        let opt = |k: &str| kv.get(k).filter(|v| **v != "-").map(|v| v.to_string());
        out.insert(
            addr.to_string(),
            PciFact {
                vendor: get("vendor"),
                device: get("device"),
                class: get("class"),
                driver: opt("driver"),
                iommu_group: opt("iommu_group"),
            },
        );
    }
    out
}

/// `0x1234`, `1234`, `"0x1234"` or the number 4660 → 4660.
fn hex_value(v: &serde_json::Value) -> Option<u64> {
    match v {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => {
            let s = s.trim();
            u64::from_str_radix(s.strip_prefix("0x").unwrap_or(s), 16).ok()
        }
        _ => None,
    }
}

fn hex_text(s: &str) -> Option<u64> {
    u64::from_str_radix(s.trim().strip_prefix("0x").unwrap_or(s.trim()), 16).ok()
}

/// A JSON string or number as text, `None` for null/absent.
fn plain_text(v: Option<&serde_json::Value>) -> Option<String> {
    match v? {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) if s.is_empty() || s == "none" || s == "-" => None,
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        other => Some(other.to_string()),
    }
}

/// gpu-list: every display-class function (class 0x03xxxx) of sysfs is in `gpus[]` with the
/// same vendor, device, class, driver and IOMMU group, and nothing else is; and vm-cli on
/// the simulator, over the tree recorded right after, prints the same document
/// ([`super::differential::gpu_list_on_sim`]).
pub fn check_gpu_list(lines: &[String], art: &Path) -> Result<String, String> {
    let facts = check_gpu_list_facts(lines, art)?;
    let vm_cli = super::target_dir(&super::workspace_root()).join("debug/vm-cli");
    let sim = super::differential::gpu_list_on_sim(art, &vm_cli)?;
    Ok(format!("{facts}; {sim}"))
}

/// The sysfs half of [`check_gpu_list`]: `gpus.json` against the `fact` lines.
pub fn check_gpu_list_facts(lines: &[String], art: &Path) -> Result<String, String> {
    let facts = parse_facts(lines);
    if facts.is_empty() {
        return Err("the guest printed no `fact` lines to compare with".into());
    }
    let file = art.join("gpus.json");
    let text = std::fs::read_to_string(&file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let doc: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        format!(
            "{} is not JSON ({e}); first bytes: {:?}",
            file.display(),
            text.chars().take(80).collect::<String>()
        )
    })?;
    let gpus = doc
        .get("gpus")
        .and_then(|g| g.as_array())
        .ok_or_else(|| format!("{}: no `gpus` array at the top level", file.display()))?;
    let want: BTreeMap<&String, &PciFact> = facts
        .iter()
        .filter(|(_, f)| f.class.starts_with("0x03"))
        .collect();
    let mut problems = Vec::new();
    let mut seen = Vec::new();
    for (i, g) in gpus.iter().enumerate() {
        let Some(addr) = g.get("address").and_then(|a| a.as_str()) else {
            problems.push(format!("gpus[{i}] has no string `address`"));
            continue;
        };
        seen.push(addr.to_string());
        let Some(f) = want.get(&addr.to_string()) else {
            problems.push(format!(
                "{addr} is listed but sysfs has no display-class function there"
            ));
            continue;
        };
        for (key, fact) in [
            ("vendor_id", &f.vendor),
            ("device_id", &f.device),
            ("class", &f.class),
        ] {
            let got = g.get(key).and_then(hex_value);
            if got != hex_text(fact) {
                problems.push(format!(
                    "{addr} {key}: vm-cli {:?}, sysfs {fact}",
                    g.get(key)
                ));
            }
        }
        let drv = plain_text(g.get("driver"));
        if drv != f.driver {
            problems.push(format!(
                "{addr} driver: vm-cli {drv:?}, sysfs {:?}",
                f.driver
            ));
        }
        let grp = plain_text(g.get("iommu_group"));
        if grp != f.iommu_group {
            problems.push(format!(
                "{addr} iommu_group: vm-cli {grp:?}, sysfs {:?}",
                f.iommu_group
            ));
        }
    }
    for addr in want.keys() {
        if !seen.iter().any(|s| s == *addr) {
            problems.push(format!(
                "{addr} (display class in sysfs) is missing from gpus[]"
            ));
        }
    }
    if problems.is_empty() {
        Ok(format!(
            "{} GPUs match sysfs (address, ids, class, driver, group)",
            want.len()
        ))
    } else {
        Err(problems.join("; "))
    }
}

/// record: the recorded tree agrees with the sysfs facts the guest printed before recording.
pub fn check_record(lines: &[String], art: &Path) -> Result<String, String> {
    let facts = parse_facts(lines);
    if facts.is_empty() {
        return Err("the guest printed no `fact` lines to compare with".into());
    }
    let tree = art.join("tree");
    let devs = tree.join("sys/bus/pci/devices");
    let mut problems = Vec::new();
    for (addr, f) in &facts {
        let d = devs.join(addr);
        if !d.is_dir() {
            problems.push(format!("{addr}: missing from {}", devs.display()));
            continue;
        }
        let attr = |n: &str| {
            std::fs::read_to_string(d.join(n))
                .map(|s| s.trim_end().to_string())
                .unwrap_or_else(|e| format!("<{e}>"))
        };
        for (n, want) in [
            ("vendor", &f.vendor),
            ("device", &f.device),
            ("class", &f.class),
        ] {
            let got = attr(n);
            if got != *want {
                problems.push(format!("{addr} {n}: tree {got}, sysfs {want}"));
            }
        }
        let link = |n: &str| {
            std::fs::read_link(d.join(n))
                .ok()
                .and_then(|t| t.file_name().map(|x| x.to_string_lossy().into_owned()))
        };
        if link("driver") != f.driver {
            problems.push(format!(
                "{addr} driver: tree {:?}, sysfs {:?}",
                link("driver"),
                f.driver
            ));
        }
        if link("iommu_group") != f.iommu_group {
            problems.push(format!(
                "{addr} iommu_group: tree {:?}, sysfs {:?}",
                link("iommu_group"),
                f.iommu_group
            ));
        }
        // the group link must resolve inside the tree, to a group that lists the device back
        if let Some(g) = &f.iommu_group {
            let back = tree
                .join("sys/kernel/iommu_groups")
                .join(g)
                .join("devices")
                .join(addr);
            if std::fs::symlink_metadata(&back).is_err() {
                problems.push(format!("{addr}: group {g} of the tree does not list it"));
            }
        }
    }
    if problems.is_empty() {
        Ok(format!("{} PCI functions agree with sysfs", facts.len()))
    } else {
        Err(problems.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn names_are_unique_and_scripts_source_the_library() {
        let mut names: Vec<_> = SCENARIOS.iter().map(|s| s.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), SCENARIOS.len());
        for s in SCENARIOS {
            assert!(s.script.contains(". /ktest/lib.sh"), "{}", s.name);
            assert!(!s.expect.is_empty(), "{} has no expected lines", s.name);
        }
    }

    #[test]
    fn facts_parse_with_absent_driver_and_group() {
        let f = parse_facts(&lines(&[
            "fact 0000:00:00.0 vendor=0x8086 device=0x29c0 class=0x060000 driver=- iommu_group=0",
            "ok something else",
        ]));
        assert_eq!(f.len(), 1);
        let h = &f["0000:00:00.0"];
        assert_eq!(h.driver, None);
        assert_eq!(h.iommu_group.as_deref(), Some("0"));
    }

    fn facts_two() -> Vec<String> {
        lines(&[
            "fact 0000:00:02.0 vendor=0x1b36 device=0x000c class=0x060400 driver=pcieport iommu_group=1",
            "fact 0000:01:00.0 vendor=0x1234 device=0x1111 class=0x038000 driver=bochs-drm iommu_group=7",
        ])
    }

    #[test]
    fn gpu_list_accepts_matching_json_in_either_number_style() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("gpus.json"),
            r#"{"schema":1,"gpus":[{"address":"0000:01:00.0","vendor_id":"0x1234","device_id":4369,"class":"038000","driver":"bochs-drm","iommu_group":7}]}"#,
        )
        .unwrap();
        let ok = check_gpu_list_facts(&facts_two(), dir.path()).unwrap();
        assert!(ok.contains("1 GPUs"), "{ok}");
    }

    #[test]
    fn gpu_list_reports_wrong_driver_and_missing_gpu() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("gpus.json"),
            r#"{"gpus":[{"address":"0000:01:00.0","vendor_id":"0x1234","device_id":"0x1111","class":"0x038000","driver":"vfio-pci","iommu_group":"7"}]}"#,
        )
        .unwrap();
        let err = check_gpu_list_facts(&facts_two(), dir.path()).unwrap_err();
        assert!(err.contains("driver"), "{err}");
        std::fs::write(dir.path().join("gpus.json"), r#"{"gpus":[]}"#).unwrap();
        let err = check_gpu_list_facts(&facts_two(), dir.path()).unwrap_err();
        assert!(err.contains("missing from gpus[]"), "{err}");
        std::fs::write(dir.path().join("gpus.json"), "usage: vm-cli").unwrap();
        assert!(check_gpu_list_facts(&facts_two(), dir.path()).is_err());
    }

    #[test]
    fn record_check_compares_the_tree_with_the_facts() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        let real = tree.join("sys/devices/pci0000:00/0000:00:02.0/0000:01:00.0");
        std::fs::create_dir_all(&real).unwrap();
        std::fs::create_dir_all(tree.join("sys/bus/pci/devices")).unwrap();
        std::fs::create_dir_all(tree.join("sys/kernel/iommu_groups/7/devices")).unwrap();
        for (n, v) in [
            ("vendor", "0x1234\n"),
            ("device", "0x1111\n"),
            ("class", "0x038000\n"),
        ] {
            std::fs::write(real.join(n), v).unwrap();
        }
        std::os::unix::fs::symlink("../../../../bus/pci/drivers/bochs-drm", real.join("driver"))
            .unwrap();
        std::os::unix::fs::symlink(
            "../../../../kernel/iommu_groups/7",
            real.join("iommu_group"),
        )
        .unwrap();
        std::os::unix::fs::symlink(
            "../../../devices/pci0000:00/0000:00:02.0/0000:01:00.0",
            tree.join("sys/bus/pci/devices/0000:01:00.0"),
        )
        .unwrap();
        std::os::unix::fs::symlink(
            "../../../../devices/pci0000:00/0000:00:02.0/0000:01:00.0",
            tree.join("sys/kernel/iommu_groups/7/devices/0000:01:00.0"),
        )
        .unwrap();
        let one = &facts_two()[1..];
        assert!(check_record(one, dir.path()).is_ok());
        // the root port is not in the tree
        let err = check_record(&facts_two(), dir.path()).unwrap_err();
        assert!(err.contains("0000:00:02.0: missing"), "{err}");
    }
}
