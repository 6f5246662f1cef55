//! Text for people and JSON for scripts, from the same values. Nothing here decides.
//!
//! JSON documents carry `"schema": 1`; fields are only ever added within a schema version.

mod doctor;
pub mod passthrough;

pub use doctor::{doctor_json, doctor_text};

use serde_json::{json, Value};
use vm_device_host::PciAddress;

use crate::gpu_manager::BackendListing;
pub use crate::inventory::human_bytes;
use crate::inventory::{class_name, HostInventory, IommuKind, PciFunction};
use crate::ladder::Reason;
use crate::ladder::{Candidate, Decision, Preference};

/// JSON schema version of every document.
pub(crate) const SCHEMA: u32 = 1;

fn hex4(v: Option<u16>) -> Value {
    v.map(|v| Value::String(format!("{v:04x}")))
        .unwrap_or(Value::Null)
}

fn class_json(f: &PciFunction) -> Value {
    f.class
        .map(|c| Value::String(format!("{c:06x}")))
        .unwrap_or(Value::Null)
}

fn function_json(f: &PciFunction) -> Value {
    json!({
        "address": f.address.to_string(),
        "vendor_id": hex4(f.vendor_id),
        "device_id": hex4(f.device_id),
        "subsystem_vendor_id": hex4(f.subsystem_vendor_id),
        "subsystem_device_id": hex4(f.subsystem_device_id),
        "class": class_json(f),
        "class_name": f.class.and_then(class_name),
        "revision": f.revision.map(|r| format!("{r:02x}")),
        "vendor_name": f.vendor_name,
        "device_name": f.device_name,
        "driver": f.driver,
        "driver_override": f.driver_override,
        "iommu_group": f.iommu_group,
        "numa_node": f.numa_node,
    })
}

fn reason_json(r: &Reason) -> Value {
    json!({
        "code": r.code,
        "message": r.message,
        "evidence": r.evidence,
        "remedy": r.remedy,
    })
}

/// A rejected or listed candidate as JSON: `reason`, `reason_code`, `evidence` and `remedy`
/// of the first blocker (the one to fix first), and `reasons[]` with every blocker.
pub(crate) fn candidate_json(c: &Candidate) -> Value {
    let r = c.reason();
    json!({
        "mode": c.mode,
        "device": c.device(),
        "mdev_type": c.mdev_type(),
        "description": c.describe(),
        "available": c.is_available(),
        "reason": r.map(|r| r.message.clone()),
        "reason_code": r.map(|r| r.code),
        "evidence": r.map(|r| r.evidence.clone()).unwrap_or_default(),
        "remedy": r.and_then(|r| r.remedy.clone()),
        "reasons": c.reasons().iter().map(reason_json).collect::<Vec<_>>(),
        "target": c.target,
    })
}

fn selected_json(c: Option<&Candidate>) -> Value {
    match c {
        Some(c) => json!({
            "mode": c.mode,
            "device": c.device(),
            "mdev_type": c.mdev_type(),
            "description": c.describe(),
            "target": c.target,
        }),
        None => Value::Null,
    }
}

fn host_json(inv: &HostInventory) -> Value {
    let h = &inv.host;
    let modules: serde_json::Map<String, Value> = [
        "vfio",
        "vfio_pci",
        "vfio_iommu_type1",
        "mdev",
        "kvmgt",
        "nvidia_vgpu_vfio",
    ]
    .iter()
    .map(|m| {
        let v = if h.modules.is_some() {
            Value::Bool(h.module_loaded(m))
        } else {
            Value::Null
        };
        (m.to_string(), v)
    })
    .collect();
    json!({
        "iommu": {
            "enabled": h.iommu.enabled,
            "kind": h.iommu.kind,
            "units": h.iommu.units,
            "groups": h.iommu.group_count,
        },
        "cpu_vendor": h.cpu_vendor,
        "kernel_params": h.params,
        "modules": modules,
        "dev_vfio": h.dev_vfio,
        "dev_kvm": h.dev_kvm,
        "virtual_machine": {
            "guest": h.virtualization.guest,
            "hypervisor": h.virtualization.hypervisor,
            "evidence": h.virtualization.evidence,
        },
    })
}

/// `vm-cli gpu list --json`.
pub(crate) fn list_json(
    inv: &HostInventory,
    backends: &[Candidate],
    auto: Option<&Candidate>,
) -> Value {
    let gpus: Vec<Value> = inv
        .gpus
        .iter()
        .filter_map(|g| {
            let f = inv.function(&g.address)?;
            let mut v = function_json(f);
            let o = v.as_object_mut()?;
            o.insert("boot_vga".into(), json!(f.boot_vga));
            // Memory only from a source that knows it; a BAR is an address window and has
            // its own field.
            o.insert("vram_bytes".into(), json!(f.vram.map(|v| v.bytes)));
            o.insert(
                "vram_source".into(),
                json!(f.vram.map(|v| v.source.as_str())),
            );
            o.insert("vram_unknown".into(), json!(f.vram_unknown));
            o.insert(
                "largest_bar".into(),
                json!(f.largest_memory_bar().map(|b| json!({
                    "index": b.index,
                    "bytes": b.size,
                    "prefetchable": b.prefetchable,
                    "is_64bit": b.is_64bit,
                }))),
            );
            o.insert("device_nodes".into(), json!(f.device_nodes));
            o.insert("reset_method".into(), json!(f.reset_method));
            o.insert(
                "companions".into(),
                Value::Array(
                    g.companions
                        .iter()
                        .filter_map(|c| inv.function(c).map(function_json))
                        .collect(),
                ),
            );
            o.insert("sriov".into(), json!(f.sriov));
            o.insert("physfn".into(), json!(f.physfn));
            // Its types are under `mdev_parents[]` (once, not twice: a vGPU server has
            // hundreds).
            o.insert(
                "mdev_parent".into(),
                json!(inv.mdev_parent(&g.address).map(|p| &p.name)),
            );
            Some(v)
        })
        .collect();
    let parents: Vec<Value> = inv
        .mdev_parents
        .iter()
        .map(|p| {
            json!({
                "name": p.name,
                "pci_address": p.pci_address,
                "driver": p.driver,
                "display": p.display,
                "types": p.types,
            })
        })
        .collect();
    json!({
        "schema": SCHEMA,
        "host": host_json(inv),
        "gpus": gpus,
        "mdev_parents": parents,
        "mdev_devices": inv.mdev_devices,
        "backends": backends.iter().enumerate().map(|(i, c)| {
            let mut v = candidate_json(c);
            v.as_object_mut().map(|o| o.insert("index".into(), json!(i)));
            v
        }).collect::<Vec<_>>(),
        "auto": selected_json(auto),
        "warnings": inv.warnings,
    })
}

/// What the user asked for, echoed in a plan.
#[derive(Debug, Clone, Default)]
pub(crate) struct PlanRequest {
    /// `--kernel`.
    pub kernel: Option<String>,
    /// `--gpu-mode` (forced) or `None` for auto.
    pub gpu_mode: Option<crate::ladder::GpuMode>,
    /// `--gpu-device`.
    pub gpu_device: Option<PciAddress>,
    /// `--mdev-type`.
    pub mdev_type: Option<String>,
}

/// `vm-cli --kernel K --dry-run --json`.
pub(crate) fn plan_json(req: &PlanRequest, pref: &Preference, d: &Decision) -> Value {
    json!({
        "schema": SCHEMA,
        "kernel": req.kernel,
        "request": {
            "gpu_mode": req.gpu_mode.map(|m| m.as_str()).unwrap_or("auto"),
            "preferred": pref.preferred,
            "auto_fallback": pref.auto_fallback,
            "gpu_device": req.gpu_device,
            "mdev_type": req.mdev_type,
        },
        "considered": d.considered,
        "selected": selected_json(d.selected.as_ref()),
        "rejected": d.rejected.iter().map(candidate_json).collect::<Vec<_>>(),
    })
}

fn mark(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn function_line(f: &PciFunction) -> String {
    let mut parts = vec![f
        .class
        .and_then(class_name)
        .unwrap_or("unknown class")
        .to_string()];
    parts.push(match &f.driver {
        Some(d) => format!("driver {d}"),
        None => "no driver".into(),
    });
    if let Some(o) = &f.driver_override {
        parts.push(format!("override {o}"));
    }
    if let Some(g) = f.iommu_group {
        parts.push(format!("IOMMU group {g}"));
    }
    parts.join(" · ")
}

fn ids(f: &PciFunction) -> String {
    let h = |v: Option<u16>| {
        v.map(|v| format!("{v:04x}"))
            .unwrap_or_else(|| "????".into())
    };
    format!("[{}:{}]", h(f.vendor_id), h(f.device_id))
}

/// The listing of backends with indexes, as `print_available_backends` shows it.
pub(crate) fn backends_text(backends: &[Candidate]) -> String {
    BackendListing(backends.to_vec()).to_string()
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

fn host_text(inv: &HostInventory) -> String {
    let h = &inv.host;
    let iommu = if h.iommu.enabled {
        let kind = match h.iommu.kind {
            Some(IommuKind::IntelVtd) => "Intel VT-d",
            Some(IommuKind::AmdVi) => "AMD-Vi",
            Some(IommuKind::Other) => "other",
            None => "groups only",
        };
        format!(
            "on ({kind}{}{}, {} groups)",
            if h.iommu.units.is_empty() { "" } else { ": " },
            h.iommu.units.join(", "),
            h.iommu.group_count
        )
    } else {
        "off".into()
    };
    let cpu = match &h.cpu_vendor {
        Some(crate::inventory::CpuVendor::Intel) => "Intel".to_string(),
        Some(crate::inventory::CpuVendor::Amd) => "AMD".to_string(),
        Some(crate::inventory::CpuVendor::Other(o)) => o.clone(),
        None => "unknown".into(),
    };
    let mods = match &h.modules {
        Some(_) => ["vfio_pci", "vfio_iommu_type1", "kvmgt", "nvidia_vgpu_vfio"]
            .iter()
            .map(|m| format!("{m} {}", mark(h.module_loaded(m))))
            .collect::<Vec<_>>()
            .join(", "),
        None => "unknown".into(),
    };
    let machine = if h.virtualization.guest {
        format!(
            "  {}: {}\n",
            capitalize(&h.virtualization.describe()),
            h.virtualization.evidence.join(", ")
        )
    } else {
        String::new()
    };
    format!(
        "Host\n{machine}  IOMMU {iommu} · CPU {cpu} · /dev/vfio {} · /dev/kvm {}\n  modules: {mods}\n",
        mark(h.dev_vfio),
        mark(h.dev_kvm)
    )
}

/// `vm-cli gpu list`.
pub(crate) fn list_text(
    inv: &HostInventory,
    backends: &[Candidate],
    auto: Option<&Candidate>,
) -> String {
    let mut s = format!("GPUs ({})\n", inv.gpus.len());
    if inv.gpus.is_empty() {
        s.push_str("  none: no display-class PCI function on this host\n");
    }
    for g in &inv.gpus {
        let Some(f) = inv.function(&g.address) else {
            continue;
        };
        s.push_str(&format!(
            "  {}  {} {}\n",
            f.address,
            f.display_name(),
            ids(f)
        ));
        let mut line = function_line(f);
        if f.boot_vga == Some(true) {
            line.push_str(" · boot display");
        }
        if let Some(v) = f.vram {
            line.push_str(&format!(
                " · VRAM {} ({})",
                human_bytes(v.bytes),
                v.source.describe()
            ));
        }
        if let Some(b) = f.largest_memory_bar() {
            // An address window into the card, not its memory.
            line.push_str(&format!(
                " · BAR{} {}{}",
                b.index,
                human_bytes(b.size),
                if b.prefetchable { " prefetchable" } else { "" }
            ));
        }
        if let Some(sr) = &f.sriov {
            line.push_str(&format!(" · SR-IOV {}/{} VFs", sr.num_vfs, sr.total_vfs));
        }
        if let Some(pf) = f.physfn {
            line.push_str(&format!(" · VF of {pf}"));
        }
        s.push_str(&format!("      {line}\n"));
        for c in &g.companions {
            if let Some(cf) = inv.function(c) {
                s.push_str(&format!(
                    "      + {}  {} {} · {}\n",
                    cf.address,
                    cf.display_name(),
                    ids(cf),
                    function_line(cf)
                ));
            }
        }
    }
    if !inv.mdev_parents.is_empty() {
        s.push_str("\nMediated-device parents\n");
        for p in &inv.mdev_parents {
            s.push_str(&format!(
                "  {} ({}), {} active{}\n",
                p.name,
                p.driver.as_deref().unwrap_or("no driver"),
                p.active_count(),
                if p.display {
                    ""
                } else {
                    " · not a display device: never a GPU backend"
                }
            ));
            for t in &p.types {
                let avail = t
                    .available_instances
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "?".into());
                s.push_str(&format!("      {:<24} {avail} available\n", t.label()));
            }
        }
    }
    s.push('\n');
    s.push_str(&host_text(inv));
    s.push_str("\nBackends (highest priority first)\n");
    s.push_str(&backends_text(backends));
    s.push_str(&match auto {
        Some(c) => format!("\nAuto choice: {} {}\n", c.mode, c.describe()),
        None => "\nAuto choice: none: no GPU mode is available on this host\n".into(),
    });
    if !inv.warnings.is_empty() {
        s.push_str(&format!("\nWarnings ({})\n", inv.warnings.len()));
        for w in &inv.warnings {
            s.push_str(&format!("  {}: {}\n", w.path.display(), w.message));
        }
    }
    s
}

/// The plan for `--dry-run`.
pub(crate) fn plan_text(req: &PlanRequest, d: &Decision) -> String {
    let mut s = String::new();
    let modes: Vec<&str> = d.considered.iter().map(|m| m.as_str()).collect();
    s.push_str(&format!(
        "Plan for kernel {} (gpu mode {}; rungs tried: {})\n",
        req.kernel.as_deref().unwrap_or("-"),
        req.gpu_mode.map(|m| m.as_str()).unwrap_or("auto"),
        modes.join(" > ")
    ));
    match &d.selected {
        Some(c) => s.push_str(&format!("  selected: {} {}\n", c.mode, c.describe())),
        None => s.push_str("  selected: nothing\n"),
    }
    if !d.rejected.is_empty() {
        s.push_str("  passed over:\n");
        for c in &d.rejected {
            let reasons = c.reasons();
            let Some(first) = reasons.first() else {
                continue;
            };
            s.push_str(&format!(
                "    {} {}: {}\n",
                c.mode,
                c.describe(),
                first.message
            ));
            if let Some(fix) = &first.remedy {
                s.push_str(&format!("      fix: {fix}\n"));
            }
            for r in &reasons[1..] {
                s.push_str(&format!("      also: {}\n", r.message));
                if let Some(fix) = &r.remedy {
                    s.push_str(&format!("      fix: {fix}\n"));
                }
            }
        }
    }
    s
}
