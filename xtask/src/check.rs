//! `check-fixtures`: runs pciutils' `lspci` against every generated fixture and compares what
//! it prints with what the generator meant to write (ids, class, driver, IOMMU group).

use std::path::Path;
use std::process::Command;

use crate::fixtures;
use crate::hostgen::LspciExpect;

/// Fixtures lspci cannot read on purpose.
const SKIP: &[&str] = &["malformed"];

/// Parses `lspci -vmm -nn` output into one map per record.
fn parse_vmm(text: &str) -> Vec<Vec<(String, String)>> {
    text.split("\n\n")
        .filter(|r| !r.trim().is_empty())
        .map(|r| {
            r.lines()
                .filter_map(|l| l.split_once(":\t"))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

/// The id in the last `[...]` of a `-nn` value (`NVIDIA Corporation [10de]` -> `10de`).
fn bracket_id(v: &str) -> Option<String> {
    let open = v.rfind('[')?;
    let close = v[open..].find(']')? + open;
    Some(v[open + 1..close].to_string())
}

/// Compares one fixture's lspci output with the model; returns every mismatch.
pub fn compare(name: &str, lspci_out: &str, want: &[LspciExpect]) -> Vec<String> {
    let got = parse_vmm(lspci_out);
    let mut errs = Vec::new();
    if got.len() != want.len() {
        errs.push(format!(
            "{name}: lspci lists {} functions, the generator wrote {}",
            got.len(),
            want.len()
        ));
    }
    for (g, w) in got.iter().zip(want) {
        let field = |k: &str| g.iter().find(|(kk, _)| kk == k).map(|(_, v)| v.clone());
        let id = |k: &str| field(k).and_then(|v| bracket_id(&v));
        let mut check = |what: &str, got: Option<String>, want: Option<String>| {
            if got != want {
                errs.push(format!(
                    "{name} {}: {what}: lspci says {got:?}, generator wrote {want:?}",
                    w.slot
                ));
            }
        };
        check("Slot", field("Slot"), Some(w.slot.clone()));
        check("Class", id("Class"), Some(w.class.clone()));
        check("Vendor", id("Vendor"), Some(w.vendor.clone()));
        check("Device", id("Device"), Some(w.device.clone()));
        check("SVendor", id("SVendor"), Some(w.svendor.clone()));
        check("SDevice", id("SDevice"), Some(w.sdevice.clone()));
        check("Rev", field("Rev"), w.rev.clone());
        check("ProgIf", field("ProgIf"), Some(w.progif.clone()));
        check("Driver", field("Driver"), w.driver.clone());
        check("IOMMUGroup", field("IOMMUGroup"), w.iommu_group.clone());
    }
    errs
}

/// Runs `lspci -A linux-sysfs -O sysfs.path=DIR/sys/bus/pci -nnk -vmm -D` on one tree.
pub fn run_lspci(dir: &Path) -> Result<String, String> {
    let out = Command::new("lspci")
        .arg("-A")
        .arg("linux-sysfs")
        .arg("-O")
        .arg(format!("sysfs.path={}", dir.join("sys/bus/pci").display()))
        .args(["-nnk", "-vmm", "-D"])
        .output()
        .map_err(|e| {
            format!("cannot run lspci ({e}); install pciutils (apt-get install pciutils)")
        })?;
    if !out.status.success() {
        return Err(format!(
            "lspci failed on {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    String::from_utf8(out.stdout)
        .map_err(|e| format!("lspci printed non-UTF-8 on {}: {e}", dir.display()))
}

/// `check-fixtures [--dir DIR]`: DIR holds the generated hosts (default `fixtures/hosts`).
pub fn check_cmd(args: &[String]) -> Result<(), String> {
    let mut dir = fixtures::default_out();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--dir" => dir = it.next().ok_or("--dir needs a directory")?.into(),
            other => {
                return Err(format!(
                "check-fixtures: unknown argument {other:?} (usage: check-fixtures [--dir DIR])"
            ))
            }
        }
    }
    let mut errs = Vec::new();
    for f in fixtures::all() {
        if SKIP.contains(&f.name) {
            continue;
        }
        let want = (f.build)().lspci_expect().map_err(|e| e.to_string())?;
        let out = run_lspci(&dir.join(f.name))?;
        let e = compare(f.name, &out, &want);
        println!(
            "{}: {} functions, {}",
            f.name,
            want.len(),
            if e.is_empty() {
                "lspci agrees"
            } else {
                "MISMATCH"
            }
        );
        errs.extend(e);
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs.join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expect(slot: &str, driver: Option<&str>, group: Option<&str>) -> LspciExpect {
        LspciExpect {
            slot: slot.into(),
            class: "0300".into(),
            vendor: "10de".into(),
            device: "2206".into(),
            svendor: "1458".into(),
            sdevice: "403b".into(),
            rev: Some("a1".into()),
            progif: "00".into(),
            driver: driver.map(Into::into),
            iommu_group: group.map(Into::into),
        }
    }

    const OUT: &str = "Slot:\t0000:01:00.0\nClass:\tVGA compatible controller [0300]\nVendor:\tNVIDIA Corporation [10de]\nDevice:\tGA102 [GeForce RTX 3080] [2206]\nSVendor:\tGigabyte Technology Co., Ltd [1458]\nSDevice:\tDevice [403b]\nRev:\ta1\nProgIf:\t00\nDriver:\tnouveau\nIOMMUGroup:\t1\n\n";

    #[test]
    fn matching_output_passes() {
        assert!(compare(
            "t",
            OUT,
            &[expect("0000:01:00.0", Some("nouveau"), Some("1"))]
        )
        .is_empty());
    }

    #[test]
    fn wrong_driver_group_or_count_is_reported() {
        let e = compare("t", OUT, &[expect("0000:01:00.0", Some("vfio-pci"), None)]);
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].contains("Driver") && e[1].contains("IOMMUGroup"));
        let e = compare("t", OUT, &[]);
        assert!(e[0].contains("lists 1 functions"), "{e:?}");
    }
}
