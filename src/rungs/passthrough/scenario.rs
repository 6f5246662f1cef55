//! Passthrough scenarios that run unchanged on the simulator and on a real kernel (the QEMU
//! harness): each takes a host and a state directory, drives the public API, and checks
//! what the host shows through [`HostOps`]. On success it returns notes for the log; on
//! failure, what it expected and what it found.

use std::path::{Path, PathBuf};

use vm_device_host::{HostOps, PciAddress};

use super::{iommu_group_of, prepare, PassthroughError, PciDeviceInfo, PrepareOptions, VFIO_PCI};
use crate::ladder::ReasonCode;

/// What a scenario returns: notes on success, the broken expectation on failure.
pub type ScenarioResult = Result<Vec<String>, String>;

fn opts(state_dir: &Path, allow_boot_vga: bool) -> PrepareOptions {
    PrepareOptions {
        allow_boot_vga,
        state_dir: state_dir.to_path_buf(),
    }
}

/// A member's address, driver and override.
type MemberState = (PciAddress, Option<String>, Option<String>);

/// Driver and override of every member of `group`, sorted by address.
fn group_state(host: &dyn HostOps, group: u32) -> Result<Vec<MemberState>, String> {
    let dir = PathBuf::from(format!("/sys/kernel/iommu_groups/{group}/devices"));
    let names = host.list_dir(&dir).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for n in names {
        let Ok(a) = n.parse::<PciAddress>() else {
            continue;
        };
        let i = PciDeviceInfo::read(host, &a).map_err(|e| e.to_string())?;
        out.push((a, i.driver, i.driver_override));
    }
    Ok(out)
}

fn group_of(host: &dyn HostOps, addr: &PciAddress) -> Result<u32, String> {
    iommu_group_of(host, addr).map_err(|e| e.to_string())
}

/// Prepare `addr`, check every moved device is on vfio-pci with `/dev/vfio/N` present and a
/// journal on disk, release, and check every group member is back on its driver and
/// override with the journal gone.
pub fn round_trip(host: &dyn HostOps, state_dir: &Path, addr: &PciAddress) -> ScenarioResult {
    let group = group_of(host, addr)?;
    let before = group_state(host, group)?;
    let dev_vfio = PathBuf::from(format!("/dev/vfio/{group}"));
    let had_dev = host.exists(&dev_vfio);
    let prepared = prepare(host, addr, &opts(state_dir, false)).map_err(|e| e.to_string())?;
    let mut notes = vec![format!(
        "{} step(s), {} device(s) moved",
        prepared.plan().plan.steps.len(),
        prepared.plan().moved.len()
    )];
    for m in &prepared.plan().moved {
        let i = PciDeviceInfo::read(host, &m.address).map_err(|e| e.to_string())?;
        if i.driver.as_deref() != Some(VFIO_PCI) {
            return Err(format!(
                "{} is on {:?} after prepare, expected vfio-pci",
                m.address, i.driver
            ));
        }
        notes.push(format!("{} ({:?}) on vfio-pci", m.address, m.role));
    }
    if !host.exists(&dev_vfio) {
        return Err(format!("{} missing after prepare", dev_vfio.display()));
    }
    let journal = prepared.journal_path();
    if !journal.exists() {
        return Err(format!(
            "journal {} missing while prepared",
            journal.display()
        ));
    }
    prepared.release().map_err(|e| e.to_string())?;
    let after = group_state(host, group)?;
    if after != before {
        return Err(format!(
            "group {group} after release: {after:?}, before prepare: {before:?}"
        ));
    }
    if host.exists(&dev_vfio) != had_dev {
        return Err(format!(
            "{} exists={} after release, {} before",
            dev_vfio.display(),
            !had_dev,
            had_dev
        ));
    }
    if journal.exists() {
        return Err(format!("journal {} left after release", journal.display()));
    }
    notes.push("released: drivers and overrides as before".into());
    Ok(notes)
}

/// Prepare must be refused with `code` and change nothing.
pub fn refused_with(
    host: &dyn HostOps,
    state_dir: &Path,
    addr: &PciAddress,
    code: ReasonCode,
) -> ScenarioResult {
    let group = group_of(host, addr).ok();
    let before = match group {
        Some(g) => group_state(host, g)?,
        None => Vec::new(),
    };
    match prepare(host, addr, &opts(state_dir, false)) {
        Ok(p) => {
            let moved = p.plan().moved.len();
            drop(p);
            Err(format!(
                "prepare of {addr} succeeded ({moved} moved); expected a refusal {code:?}"
            ))
        }
        Err(PassthroughError::Refused { reasons, .. }) => {
            if !reasons.iter().any(|r| r.code == code) {
                return Err(format!("refused for {reasons:?}, expected {code:?}"));
            }
            if let Some(g) = group {
                if group_state(host, g)? != before {
                    return Err("a refused prepare changed the group".into());
                }
            }
            Ok(reasons.iter().map(|r| r.message.clone()).collect())
        }
        Err(e) => Err(format!("expected a refusal {code:?}, got: {e}")),
    }
}

/// The boot display is refused by default and prepared with `--allow-boot-vga`.
pub fn boot_vga_override(
    host: &dyn HostOps,
    state_dir: &Path,
    addr: &PciAddress,
) -> ScenarioResult {
    let mut notes = refused_with(host, state_dir, addr, ReasonCode::BootDisplay)?;
    let p = prepare(host, addr, &opts(state_dir, true)).map_err(|e| e.to_string())?;
    notes.push(format!(
        "with --allow-boot-vga: {} device(s) moved",
        p.plan().moved.len()
    ));
    p.release().map_err(|e| e.to_string())?;
    Ok(notes)
}

/// `addr` and every companion on its slot move together (HDMI audio), and come back.
pub fn companion_moves_too(
    host: &dyn HostOps,
    state_dir: &Path,
    addr: &PciAddress,
    companion: &PciAddress,
) -> ScenarioResult {
    let p = prepare(host, addr, &opts(state_dir, false)).map_err(|e| e.to_string())?;
    if !p.plan().moved.iter().any(|m| m.address == *companion) {
        return Err(format!("{companion} is not in the plan of {addr}"));
    }
    let i = PciDeviceInfo::read(host, companion).map_err(|e| e.to_string())?;
    if i.driver.as_deref() != Some(VFIO_PCI) {
        return Err(format!(
            "{companion} is on {:?}, expected vfio-pci",
            i.driver
        ));
    }
    p.release().map_err(|e| e.to_string())?;
    Ok(vec![format!("{companion} moved with {addr} and came back")])
}

/// A group already on vfio-pci: the plan changes nothing and release restores nothing.
pub fn already_on_vfio(host: &dyn HostOps, state_dir: &Path, addr: &PciAddress) -> ScenarioResult {
    let group = group_of(host, addr)?;
    let before = group_state(host, group)?;
    let p = prepare(host, addr, &opts(state_dir, false)).map_err(|e| e.to_string())?;
    if p.plan().plan.changes() != 0 || !p.plan().moved.is_empty() {
        return Err(format!(
            "expected no change, the plan has {} change(s)",
            p.plan().plan.changes()
        ));
    }
    let report = p.release().map_err(|e| e.to_string())?;
    if !report.undone.is_empty() {
        return Err(format!("release undid {} step(s)", report.undone.len()));
    }
    if group_state(host, group)? != before {
        return Err("the group changed".into());
    }
    Ok(vec!["nothing to change, nothing to restore".into()])
}

/// Two prepares of one group: the second is refused as busy while the first holds it, and
/// succeeds after the first released.
pub fn concurrent_prepare(
    host: &dyn HostOps,
    state_dir: &Path,
    addr: &PciAddress,
    other_in_group: &PciAddress,
) -> ScenarioResult {
    let first = prepare(host, addr, &opts(state_dir, false)).map_err(|e| e.to_string())?;
    let msg = match prepare(host, other_in_group, &opts(state_dir, false)) {
        Ok(_) => return Err("the second prepare of the same group succeeded".into()),
        Err(e @ PassthroughError::Busy { .. }) => e.to_string(),
        Err(e) => return Err(format!("the second prepare failed otherwise: {e}")),
    };
    first.release().map_err(|e| e.to_string())?;
    let again = prepare(host, other_in_group, &opts(state_dir, false))
        .map_err(|e| format!("after release: {e}"))?;
    again.release().map_err(|e| e.to_string())?;
    Ok(vec![msg])
}
