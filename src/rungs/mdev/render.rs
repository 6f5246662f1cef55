//! Text and JSON (schema 1) for the mediated-rung commands. Renders values; decides nothing.

use serde_json::{json, Value};

use super::lifecycle::Planned;
use super::persist::DeviceRow;
use super::plan::MdevPlan;
use super::types::{Backend, TypeRow};
use super::{MdevError, Verified};

/// `vm-cli gpu mdev-types` as a table.
pub fn types_text(rows: &[TypeRow]) -> String {
    if rows.is_empty() {
        return "no mdev parent and no NVIDIA vendor-VFIO GPU on this host\n".into();
    }
    let header = [
        "PARENT",
        "TYPE",
        "NAME",
        "AVAILABLE",
        "ACTIVE",
        "API",
        "DESCRIPTION",
    ];
    let cells: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            let mut desc = r
                .description
                .clone()
                .unwrap_or_default()
                .replace('\n', ", ");
            if let Some(m) = &r.module_missing {
                desc = format!("(module {m} not loaded) {desc}");
            }
            [
                r.parent.clone(),
                r.type_id.clone(),
                r.name.clone().unwrap_or_else(|| "-".into()),
                r.available_instances.to_string(),
                r.active.len().to_string(),
                r.device_api.clone().unwrap_or_else(|| "-".into()),
                desc.trim().to_string(),
            ]
        })
        .collect();
    table(header, &cells)
}

/// Left-aligned columns two spaces apart, the last one unpadded.
fn table<const N: usize>(header: [&str; N], cells: &[[String; N]]) -> String {
    let mut width = header.map(str::len);
    for c in cells {
        for (w, v) in width.iter_mut().zip(c.iter()) {
            *w = (*w).max(v.chars().count());
        }
    }
    let line = |vals: &[String]| {
        let mut s = String::new();
        for (i, v) in vals.iter().enumerate() {
            if i + 1 == vals.len() {
                s.push_str(v);
            } else {
                s.push_str(&format!("{v:<w$}  ", w = width[i]));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(&header.map(String::from));
    for c in cells {
        out.push_str(&line(c));
    }
    out
}

/// `vm-cli gpu mdev-list`: one line per mediated device, active or defined.
pub fn devices_text(rows: &[DeviceRow]) -> String {
    if rows.is_empty() {
        return "no mediated device is active or defined in /etc/mdevctl.d\n".into();
    }
    let cells: Vec<[String; 5]> = rows
        .iter()
        .map(|r| {
            let state = match (r.active, r.start) {
                (true, Some(s)) => format!("active, defined ({})", s.name()),
                (true, None) => "active".into(),
                (false, Some(s)) => format!("defined ({})", s.name()),
                (false, None) => "-".into(),
            };
            [
                r.uuid.clone(),
                r.parent.clone(),
                r.type_id.clone().unwrap_or_else(|| "-".into()),
                r.iommu_group.map_or("-".into(), |g| g.to_string()),
                state,
            ]
        })
        .collect();
    table(["UUID", "PARENT", "TYPE", "GROUP", "STATE"], &cells)
}

/// `vm-cli gpu mdev-list --json`.
pub fn devices_json(rows: &[DeviceRow]) -> Value {
    json!({ "schema": 1, "mdevs": rows })
}

/// `vm-cli gpu mdev-types --json`.
pub fn types_json(rows: &[TypeRow]) -> Value {
    json!({ "schema": 1, "types": rows })
}

fn verified_text(v: &[Verified]) -> String {
    let mut out = String::new();
    for x in v {
        match x {
            Verified::Mdev {
                uuid,
                iommu_group,
                vfio_group,
                ..
            } => out.push_str(&format!(
                "  IOMMU group {iommu_group}, {}\n  QEMU: -device vfio-pci,sysfsdev=/sys/bus/mdev/devices/{uuid}\n",
                vfio_group.display()
            )),
            Verified::Vfs { vfs } => {
                for (a, g) in vfs {
                    out.push_str(&format!("  VF {a}, IOMMU group {g}\n"));
                }
            }
            Verified::NvidiaType { vf_dir, type_id } if *type_id != 0 => out.push_str(&format!(
                "  {} carries type {type_id}; pass it through as a vfio-pci device\n",
                vf_dir.display()
            )),
            _ => {}
        }
    }
    out
}

/// The result of a create or remove, for people.
pub fn change_text(verb: &str, p: &Planned, verified: &[Verified], dry_run: bool) -> String {
    let what = match &p.choice {
        super::Choice::Mdev {
            parent, type_id, ..
        } => format!("mediated device {} ({type_id} on {parent})", p.device),
        super::Choice::NvidiaVfio { vf, type_id, .. } => {
            format!("NVIDIA vGPU type {type_id} on VF {vf}")
        }
    };
    if dry_run {
        return format!(
            "would {verb} {what}; plan (nothing changed):\n{}",
            p.plan.to_text()
        );
    }
    format!("{verb}d {what}\n{}", verified_text(verified))
}

/// The result of a create or remove, as JSON.
pub fn change_json(command: &str, p: &Planned, verified: &[Verified], dry_run: bool) -> Value {
    json!({
        "schema": 1,
        "command": command,
        "dry_run": dry_run,
        "device": p.device,
        "sysfs_path": p.sysfs_path,
        "choice": p.choice,
        "plan": p.plan.plan,
        "expect": p.plan.expect,
        "verified": verified,
    })
}

/// `vm-cli gpu sriov` for people.
pub fn sriov_text(
    pf: &str,
    count: u32,
    plan: &MdevPlan,
    verified: &[Verified],
    dry_run: bool,
) -> String {
    if plan.plan.steps.is_empty() {
        return format!("{pf} already has {count} virtual functions; nothing to do\n");
    }
    if dry_run {
        return format!(
            "would set {pf} to {count} virtual functions; plan (nothing changed):\n{}",
            plan.to_text()
        );
    }
    format!(
        "{pf} now has {count} virtual functions\n{}",
        verified_text(verified)
    )
}

/// `vm-cli gpu sriov --json`.
pub fn sriov_json(
    pf: &str,
    count: u32,
    plan: &MdevPlan,
    verified: &[Verified],
    dry_run: bool,
) -> Value {
    json!({
        "schema": 1,
        "command": "sriov",
        "dry_run": dry_run,
        "pf": pf,
        "num_vfs": count,
        "plan": plan.plan,
        "expect": plan.expect,
        "verified": verified,
    })
}

/// An error as JSON (schema 1), with the errno's name when the kernel refused.
pub fn error_json(command: &str, e: &MdevError) -> Value {
    json!({
        "schema": 1,
        "command": command,
        "error": e.to_string(),
        "errno": e.errno().map(super::errno_name),
        "undone": e.undone(),
        "left_changes": e.left_changes(),
    })
}

/// True when `rows` include vendor-VFIO types (the table then explains ACTIVE as VFs).
pub fn has_vendor_vfio(rows: &[TypeRow]) -> bool {
    rows.iter().any(|r| r.backend == Backend::NvidiaVfio)
}
