//! Differential test against pciutils: on every fixture and shared tree, our scan sees the
//! same addresses, classes, vendor/device ids, drivers and IOMMU groups as
//! `lspci -A linux-sysfs -O sysfs.path=ROOT/sys/bus/pci -nnk -vmm -D`.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use vm_device::host::SimHost;
use vm_device::inventory::HostInventory;

#[derive(Debug, Default, Clone, PartialEq)]
struct LspciRecord {
    class: Option<u32>,
    prog_if: Option<u32>,
    vendor: Option<u16>,
    device: Option<u16>,
    driver: Option<String>,
    group: Option<u32>,
}

/// The hex id in the last `[....]` of an lspci -nn field.
fn bracket_hex(v: &str) -> Option<u32> {
    let start = v.rfind('[')?;
    let end = v[start..].find(']')? + start;
    u32::from_str_radix(&v[start + 1..end], 16).ok()
}

fn lspci(root: &std::path::Path) -> Result<BTreeMap<String, LspciRecord>, String> {
    let out = Command::new("lspci")
        .arg("-A")
        .arg("linux-sysfs")
        .arg("-O")
        .arg(format!("sysfs.path={}/sys/bus/pci", root.display()))
        .args(["-nnk", "-vmm", "-D"])
        .output()
        .map_err(|e| format!("cannot run lspci (install pciutils): {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut map = BTreeMap::new();
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let mut slot = None;
        let mut r = LspciRecord::default();
        for line in block.lines() {
            let Some((k, v)) = line.split_once(":\t") else {
                continue;
            };
            match k {
                "Slot" => slot = Some(v.to_string()),
                "Class" => r.class = bracket_hex(v),
                "ProgIf" => r.prog_if = u32::from_str_radix(v.trim(), 16).ok(),
                "Vendor" => r.vendor = bracket_hex(v).map(|x| x as u16),
                "Device" => r.device = bracket_hex(v).map(|x| x as u16),
                "Driver" => r.driver = Some(v.to_string()),
                "IOMMUGroup" => r.group = v.trim().parse().ok(),
                _ => {}
            }
        }
        if let Some(s) = slot {
            map.insert(s, r);
        }
    }
    Ok(map)
}

fn inv_warns(host: &std::path::Path, entry: &str) -> bool {
    let inv = HostInventory::scan(&SimHost::from_fixture(host).unwrap());
    inv.warnings.iter().any(|w| w.path.ends_with(entry))
}

#[test]
fn scan_agrees_with_lspci_on_every_host() {
    let mut compared = 0;
    let mut lspci_refused = Vec::new();
    for host in common::all_hosts() {
        let name = common::host_name(&host);
        let tmp = tempfile::tempdir().unwrap();
        common::materialize(&host, tmp.path());
        // lspci stops at an entry that is not an address; our scan skips it with a warning.
        // Drop such entries from lspci's copy so the rest can be compared.
        if let Ok(rd) = std::fs::read_dir(tmp.path().join("sys/bus/pci/devices")) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.parse::<vm_device_host::PciAddress>().is_err() {
                    std::fs::remove_file(e.path()).ok();
                    assert!(
                        inv_warns(&host, &n),
                        "{name}: our scan must warn about `{n}`"
                    );
                }
            }
        }
        let inv = HostInventory::scan(&SimHost::from_fixture(&host).unwrap());
        let theirs = match lspci(tmp.path()) {
            Ok(m) => m,
            Err(e) => {
                // lspci gives up on a function without `class` (our malformed host, hwloc's
                // GPU-only tree); our scan goes on with a warning instead.
                assert!(e.contains("Cannot open"), "{name}: lspci failed: {e}");
                assert!(
                    !inv.warnings.is_empty(),
                    "{name}: lspci refused it, we warned of nothing"
                );
                lspci_refused.push(name);
                continue;
            }
        };
        let strict = !name.ends_with("malformed");
        let ours: BTreeMap<String, _> = inv
            .functions
            .iter()
            .map(|f| (f.address.to_string(), f))
            .collect();
        assert_eq!(
            ours.keys().collect::<Vec<_>>(),
            theirs.keys().collect::<Vec<_>>(),
            "{name}: the same PCI functions"
        );
        for (addr, f) in &ours {
            let t = &theirs[addr];
            let ctx = format!("{name} {addr}");
            // Unparseable fields are None on our side (with a warning); compare the rest,
            // and on well-formed hosts require every field to be known.
            if strict {
                assert!(
                    f.class.is_some() && f.vendor_id.is_some() && f.device_id.is_some(),
                    "{ctx}: {f:?}"
                );
            }
            if let Some(c) = f.class {
                assert_eq!(Some(c >> 8), t.class, "{ctx}: class");
                if t.prog_if.is_some() {
                    assert_eq!(Some(c & 0xff), t.prog_if, "{ctx}: prog-if");
                }
            }
            if let Some(v) = f.vendor_id {
                assert_eq!(Some(v), t.vendor, "{ctx}: vendor");
            }
            if let Some(d) = f.device_id {
                assert_eq!(Some(d), t.device, "{ctx}: device");
            }
            assert_eq!(f.driver, t.driver, "{ctx}: driver");
            assert_eq!(f.iommu_group, t.group, "{ctx}: IOMMU group");
            compared += 1;
        }
    }
    assert!(compared > 100, "compared only {compared} functions");
    assert_eq!(
        lspci_refused,
        ["fixture-malformed", "public-hwloc-nvidiagpunumanodes"],
        "only the trees with functions lacking `class` are beyond lspci"
    );
}
