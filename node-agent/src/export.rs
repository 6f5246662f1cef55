//! What the node offers, for other tools: KubeVirt's `permittedHostDevices` and libvirt's
//! `<hostdev>`. Both are computed from one inventory and change nothing.

use serde_json::{json, Value};
use vm_device::inventory::HostInventory;
use vm_device::rungs::mdev::{lifecycle, Choice, TypeRequest};
use vm_passthrough::PciAddress;

use crate::config::{Config, PassthroughSel};
use crate::offer;

/// An export that cannot be made, saying why.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ExportError(pub String);

/// The `permittedHostDevices` object (KubeVirt CR `spec.configuration.permittedHostDevices`)
/// for what the agent with `cfg` offers on the host of `inv`, every entry with
/// `externalResourceProvider: true` (the agent, not KubeVirt, serves the devices).
/// `available` is what `"passthrough": "available"` resolves to on this host.
pub fn kubevirt(
    inv: &HostInventory,
    cfg: &Config,
    available: &[PciAddress],
) -> Result<Value, ExportError> {
    let gpus: Vec<PciAddress> = match &cfg.passthrough {
        PassthroughSel::Available => available.to_vec(),
        PassthroughSel::Addresses(a) => a.clone(),
    };
    let mut pci: Vec<(String, String)> = Vec::new();
    for addr in &gpus {
        let f = inv
            .functions
            .iter()
            .find(|f| f.address == *addr)
            .ok_or_else(|| {
                ExportError(format!(
                    "passthrough {addr}: no such PCI function on this host"
                ))
            })?;
        let (v, d) = f.vendor_id.zip(f.device_id).ok_or_else(|| {
            ExportError(format!(
                "passthrough {addr}: its vendor and device ids cannot be read"
            ))
        })?;
        let entry = (format!("{v:04X}:{d:04X}"), offer::pci_resource(v, d));
        if !pci.contains(&entry) {
            pci.push(entry);
        }
    }
    let mut mdev: Vec<(String, String)> = Vec::new();
    for m in &cfg.mdev {
        let req = lifecycle::CreateRequest {
            ty: TypeRequest {
                wanted: m.mdev_type.clone(),
                parent: m.parent.clone(),
                numa_node: m.numa_node,
            },
            ..Default::default()
        };
        let planned = lifecycle::plan_create(inv, &req)
            .map_err(|e| ExportError(format!("mdev {}: {e}", m.mdev_type)))?;
        let entry = match &planned.choice {
            Choice::Mdev {
                parent, type_id, ..
            } => {
                // KubeVirt matches mdevNameSelector against the type's `name` attribute.
                let name = inv
                    .mdev_parents
                    .iter()
                    .find(|p| &p.name == parent)
                    .and_then(|p| p.types.iter().find(|t| &t.id == type_id))
                    .and_then(|t| t.name.clone())
                    .unwrap_or_else(|| type_id.clone());
                (name, offer::mdev_resource(type_id))
            }
            Choice::NvidiaVfio { vf, type_id, .. } => {
                // A vendor-VFIO vGPU is a PCI device (the VF) to KubeVirt.
                let f = inv.functions.iter().find(|f| f.address == *vf);
                let (v, d) = f
                    .and_then(|f| f.vendor_id.zip(f.device_id))
                    .ok_or_else(|| {
                        ExportError(format!("mdev {}: VF {vf} unreadable", m.mdev_type))
                    })?;
                let e = (
                    format!("{v:04X}:{d:04X}"),
                    offer::mdev_resource(&format!("nvidia-{type_id}")),
                );
                if !pci.contains(&e) {
                    pci.push(e);
                }
                continue;
            }
        };
        if !mdev.contains(&entry) {
            mdev.push(entry);
        }
    }
    let mut out = serde_json::Map::new();
    if !pci.is_empty() {
        out.insert(
            "pciHostDevices".into(),
            pci.iter()
                .map(|(sel, res)| {
                    json!({"pciVendorSelector": sel, "resourceName": res, "externalResourceProvider": true})
                })
                .collect(),
        );
    }
    if !mdev.is_empty() {
        out.insert(
            "mediatedDevices".into(),
            mdev.iter()
                .map(|(sel, res)| {
                    json!({"mdevNameSelector": sel, "resourceName": res, "externalResourceProvider": true})
                })
                .collect(),
        );
    }
    Ok(json!({ "permittedHostDevices": Value::Object(out) }))
}

/// `value` as YAML (block style; every string double-quoted, which YAML reads as JSON does).
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    yaml(value, 0, &mut out);
    out
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => Value::String(s.clone()).to_string(),
        Value::Array(a) if a.is_empty() => "[]".into(),
        Value::Object(o) if o.is_empty() => "{}".into(),
        other => other.to_string(),
    }
}

fn is_block(v: &Value) -> bool {
    matches!(v, Value::Array(a) if !a.is_empty()) || matches!(v, Value::Object(o) if !o.is_empty())
}

fn yaml(v: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(o) if !o.is_empty() => {
            for (k, val) in o {
                if is_block(val) {
                    out.push_str(&format!("{pad}{k}:\n"));
                    yaml(val, indent + 2, out);
                } else {
                    out.push_str(&format!("{pad}{k}: {}\n", scalar(val)));
                }
            }
        }
        Value::Array(a) if !a.is_empty() => {
            for item in a {
                if is_block(item) {
                    let mut inner = String::new();
                    yaml(item, indent + 2, &mut inner);
                    // The first line of the item goes after the dash.
                    out.push_str(&format!("{pad}- {}", &inner[indent + 2..]));
                } else {
                    out.push_str(&format!("{pad}- {}\n", scalar(item)));
                }
            }
        }
        other => out.push_str(&format!("{pad}{}\n", scalar(other))),
    }
}

/// A libvirt `<hostdev>` for `device`: a PCI address (a GPU or VF, `managed='no'`: the
/// agent or `vm-cli gpu prepare` binds it to vfio-pci), or an mdev UUID
/// (`<hostdev type='mdev'>`).
pub fn libvirt(inv: &HostInventory, device: &str) -> Result<String, ExportError> {
    if let Ok(addr) = device.parse::<PciAddress>() {
        if !inv.functions.iter().any(|f| f.address == addr) {
            return Err(ExportError(format!(
                "{addr}: no such PCI function on this host"
            )));
        }
        let (dom, bus, slot, func) = (addr.domain, addr.bus, addr.device, addr.function);
        return Ok(format!(
            "<hostdev mode='subsystem' type='pci' managed='no'>\n  <source>\n    \
             <address domain='0x{dom:04x}' bus='0x{bus:02x}' slot='0x{slot:02x}' function='0x{func:x}'/>\n  \
             </source>\n</hostdev>\n"
        ));
    }
    let uuid = device.to_ascii_lowercase();
    if inv.mdev_devices.iter().any(|m| m.uuid == uuid) {
        // QEMU's dma-buf displays need OpenGL; the guest's own driver drives the display
        // (as vm-cli does for everything but the mdpy sample).
        Ok(format!(
            "<hostdev mode='subsystem' type='mdev' model='vfio-pci' display='off'>\n  \
             <source>\n    <address uuid='{uuid}'/>\n  </source>\n</hostdev>\n"
        ))
    } else {
        Err(ExportError(format!(
            "{device:?} is neither a PCI address (DDDD:BB:DD.F) nor an active mdev's UUID on this host"
        )))
    }
}
