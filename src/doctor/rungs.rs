//! Mediated and wgpu checks, built on the candidates the rung probes already computed.

use std::collections::BTreeMap;

use super::host::module_check;
use super::remedy;
use super::{candidate_key, Check, Options, Status};
use crate::host::HostOps;
use crate::inventory::{HostInventory, PciFunction};
use crate::ladder::{Candidate, GpuMode, ReasonCode, Target};

const MDEV: Option<GpuMode> = Some(GpuMode::Mdev);
const WGPU: Option<GpuMode> = Some(GpuMode::Wgpu);

/// Intel GVT-g exists for Broadwell to Comet Lake only (gen 8 to 9.5); later iGPUs print
/// "Unsupported device. GVT-g is disabled" (intel/gvt-linux#190). By PCI device-id prefix.
fn gvtg_support(f: &PciFunction) -> Option<(bool, &'static str)> {
    if f.vendor_id != Some(0x8086) || !f.is_display() {
        return None;
    }
    let hi = (f.device_id? >> 8) as u8;
    Some(match hi {
        0x16 => (true, "Broadwell"),
        0x19 => (true, "Skylake"),
        0x59 => (true, "Kaby Lake"),
        0x87 => (true, "Amber Lake"),
        0x3e => (true, "Coffee Lake"),
        0x9b => (true, "Comet Lake"),
        0x8a => (false, "Ice Lake"),
        0x9a => (false, "Tiger Lake"),
        0x4c => (false, "Rocket Lake"),
        0x46 => (false, "Alder Lake"),
        0xa7 => (false, "Raptor Lake"),
        0x7d => (false, "Meteor Lake"),
        0x56 => (false, "DG2 (Arc, Flex)"),
        0x0b => (false, "Data Center GPU Max (Ponte Vecchio)"),
        _ => return None,
    })
}

pub(super) fn mdev_checks(
    host: &dyn HostOps,
    inv: &HostInventory,
    candidates: &[Candidate],
    opts: &Options,
    out: &mut Vec<Check>,
) {
    let gpus: Vec<&PciFunction> = inv
        .gpus
        .iter()
        .filter(|g| opts.device.is_none_or(|d| d == g.address))
        .filter_map(|g| inv.function(&g.address))
        .filter(|f| f.physfn.is_none())
        .collect();
    // kvmgt matters for i915 GPUs that may have GVT-g (not for DG2, Tiger Lake and later).
    let intel = gpus.iter().any(|f| {
        f.vendor_id == Some(0x8086)
            && f.driver.as_deref() == Some("i915")
            && gvtg_support(f).is_none_or(|(ok, _)| ok)
    });
    // nvidia_vgpu_vfio (mdev era) matters unless the GPU's VFs already use NVIDIA's
    // vendor-VFIO interface (`nvidia/creatable_vgpu_types` on each VF).
    let vendor_vfio = |f: &PciFunction| {
        f.sriov.as_ref().is_some_and(|s| {
            s.vfs
                .iter()
                .any(|vf| inv.function(vf).is_some_and(|v| v.nvidia_vgpu.is_some()))
        })
    };
    let nvidia = gpus.iter().any(|f| {
        f.vendor_id == Some(0x10de) && f.driver.as_deref() == Some("nvidia") && !vendor_vfio(f)
    });
    let any_parent = !inv.mdev_parents.is_empty();
    if intel || nvidia || any_parent {
        out.push(module_check(host, inv, "mdev", MDEV, Status::Warn));
    }
    if intel {
        out.push(module_check(host, inv, "kvmgt", MDEV, Status::Warn));
    }
    if nvidia {
        out.push(module_check(
            host,
            inv,
            "nvidia_vgpu_vfio",
            MDEV,
            Status::Warn,
        ));
    }

    // GVT-g generation of each Intel GPU that is not already an mdev parent; one with
    // SR-IOV gets its mediated devices that way (the SR-IOV check below covers it).
    for f in gpus.iter().filter(|f| {
        f.driver.as_deref() == Some("i915")
            && inv.mdev_parent(&f.address).is_none()
            && f.sriov.is_none()
    }) {
        let Some((ok, gen)) = gvtg_support(f) else {
            continue;
        };
        let id = format!("gpu.{}.gvtg", f.address);
        let ev = format!(
            "/sys/bus/pci/devices/{}/device = 0x{:04x} ({gen})",
            f.address,
            f.device_id.unwrap_or(0)
        );
        out.push(if ok {
            Check::new(id, MDEV, Status::Ok, format!("{gen} supports GVT-g"))
                .device(f.address.to_string())
                .evidence(ev)
        } else {
            Check::new(
                id,
                MDEV,
                Status::Fail,
                format!("{gen} has no GVT-g (it ends at Comet Lake): kvmgt will offer no types"),
            )
            .device(f.address.to_string())
            .evidence(ev)
            .remedy(format!(
                "# this GPU has no mediated devices: use passthrough or the wgpu rung, or check for SR-IOV (i915-sriov-dkms):\nls /sys/bus/pci/devices/{}/sriov_totalvfs",
                f.address
            ))
        });
    }

    // One check per parent (mdev parent, SR-IOV PF, vGPU PF): ok when anything there is
    // available, else the first reason the probe gave.
    let mut by_key: BTreeMap<String, Vec<&Candidate>> = BTreeMap::new();
    for c in candidates.iter().filter(|c| c.mode == GpuMode::Mdev) {
        match candidate_key(inv, c) {
            Some(k) => by_key.entry(k).or_default().push(c),
            None => {
                if let Some(r) = c.reason() {
                    let mut ch = Check::new("mdev.parents", MDEV, Status::Fail, r.message.clone())
                        .remedy(remedy::from_reason(r).unwrap_or_else(|| {
                            "# see which types each parent offers:\nvm-cli gpu list".into()
                        }));
                    ch.evidence = r.evidence.clone();
                    out.push(ch);
                }
            }
        }
    }
    for (key, list) in by_key {
        let id = if key.parse::<vm_device_host::PciAddress>().is_ok() {
            format!("gpu.{key}.mdev")
        } else {
            format!("mdev.{key}")
        };
        let avail: Vec<&&Candidate> = list.iter().filter(|c| c.is_available()).collect();
        if !avail.is_empty() {
            const SHOWN: usize = 6;
            let mut what: Vec<String> = avail.iter().take(SHOWN).map(|c| c.describe()).collect();
            if avail.len() > SHOWN {
                what.push(format!(
                    "and {} more (vm-cli gpu list shows all)",
                    avail.len() - SHOWN
                ));
            }
            out.push(
                Check::new(
                    id,
                    MDEV,
                    Status::Ok,
                    format!("{key} offers {} mediated option(s)", avail.len()),
                )
                .device(key.clone())
                .evidence(what.join("; ")),
            );
            continue;
        }
        let Some(r) = list.iter().find_map(|c| c.reason()) else {
            continue;
        };
        let mut ch = Check::new(id, MDEV, Status::Fail, r.message.clone())
            .device(key.clone())
            .remedy_opt(remedy::from_reason(r));
        ch.evidence = r.evidence.clone();
        // Every type with no room is listed, not only the first.
        for c in list.iter().skip(1) {
            if let Some(o) = c.reason().filter(|o| o.code == ReasonCode::NoInstances) {
                ch.evidence.extend(o.evidence.iter().cloned());
            }
        }
        if ch.remedy.is_none() {
            ch.remedy = Some(format!(
                "# see what the parent offers:\nls /sys/class/mdev_bus/{key}/mdev_supported_types"
            ));
        }
        out.push(ch);
    }
}

/// Values `wgpu::Backends::from_env` understands (comma-separated).
const WGPU_BACKENDS: [&str; 11] = [
    "vulkan", "vk", "dx12", "d3d12", "metal", "mtl", "opengl", "gles", "gl", "webgpu", "noop",
];

pub(super) fn wgpu_checks(
    inv: &HostInventory,
    candidates: &[Candidate],
    opts: &Options,
    out: &mut Vec<Check>,
) {
    out.push(match opts.wgpu_backend.as_deref() {
        None | Some("") => Check::new(
            "wgpu.backend",
            WGPU,
            Status::Ok,
            "WGPU_BACKEND is unset: every backend is tried",
        )
        .evidence("environment: WGPU_BACKEND unset"),
        Some(v) => {
            let bad: Vec<&str> = v
                .split(',')
                .map(str::trim)
                .filter(|b| !WGPU_BACKENDS.contains(&b.to_ascii_lowercase().as_str()))
                .collect();
            if bad.is_empty() {
                Check::new(
                    "wgpu.backend",
                    WGPU,
                    Status::Ok,
                    format!("WGPU_BACKEND={v}: only that backend is tried"),
                )
                .evidence(format!("environment: WGPU_BACKEND={v}"))
            } else {
                Check::new(
                    "wgpu.backend",
                    WGPU,
                    Status::Warn,
                    format!(
                        "WGPU_BACKEND={v}: `{}` is not a backend wgpu knows",
                        bad.join(", ")
                    ),
                )
                .evidence(format!("environment: WGPU_BACKEND={v}"))
                .remedy(
                    "export WGPU_BACKEND=vulkan  # or gl; `unset WGPU_BACKEND` tries every backend",
                )
            }
        }
    });

    let list: Vec<&Candidate> = candidates
        .iter()
        .filter(|c| c.mode == GpuMode::Wgpu)
        .collect();
    let install = driver_packages(inv);
    let adapters: Vec<&vm_device_host::AdapterInfo> = list
        .iter()
        .filter_map(|c| match &c.target {
            Target::Adapter { info } => Some(info),
            _ => None,
        })
        .collect();
    if adapters.is_empty() {
        let r = list.iter().find_map(|c| c.reason());
        let mut ch = Check::new(
            "wgpu.adapters",
            WGPU,
            Status::Fail,
            r.map_or("wgpu found no adapter".to_string(), |r| r.message.clone()),
        );
        if let Some(r) = r {
            ch.evidence = r.evidence.clone();
        }
        let fix = if r.is_some_and(|r| r.code == ReasonCode::AdapterNotOnDevice) {
            format!("# leave out --gpu-device to render on any adapter, or install this GPU's Vulkan driver:\n{install}")
        } else {
            format!("{install}\nvulkaninfo --summary  # lists the Vulkan devices afterwards")
        };
        out.push(ch.remedy(fix));
        return;
    }
    let mut per_backend: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for a in &adapters {
        per_backend.entry(&a.backend).or_default().push(&a.name);
    }
    let summary: Vec<String> = per_backend
        .iter()
        .map(|(b, names)| format!("{b}: {}", names.len()))
        .collect();
    let mut ch = if adapters.iter().all(|a| a.is_cpu()) {
        Check::new(
            "wgpu.adapters",
            WGPU,
            Status::Warn,
            format!(
                "only software adapters ({}): rendering runs on the CPU",
                summary.join(", ")
            ),
        )
        .remedy(format!(
            "{install}\nvulkaninfo --summary  # lists the Vulkan devices afterwards"
        ))
    } else {
        Check::new(
            "wgpu.adapters",
            WGPU,
            Status::Ok,
            format!("adapters found ({})", summary.join(", ")),
        )
    };
    ch.evidence
        .push("wgpu::Instance::enumerate_adapters".into());
    for (b, names) in per_backend {
        ch.evidence.push(format!("{b}: {}", names.join(", ")));
    }
    out.push(ch);
}

/// The packages that bring a Vulkan driver for this host's GPUs (Debian names).
fn driver_packages(inv: &HostInventory) -> String {
    let vendors: Vec<u16> = inv
        .gpus
        .iter()
        .filter_map(|g| inv.function(&g.address)?.vendor_id)
        .collect();
    let mut lines = Vec::new();
    if vendors.iter().any(|v| *v == 0x1002 || *v == 0x8086) || !vendors.contains(&0x10de) {
        lines.push(
            "sudo apt install mesa-vulkan-drivers  # AMD, Intel, and the lavapipe CPU renderer; Fedora: sudo dnf install mesa-vulkan-drivers".to_string(),
        );
    }
    if vendors.contains(&0x10de) {
        lines.push(
            "sudo apt install nvidia-vulkan-icd  # NVIDIA's Vulkan ICD, with the nvidia driver"
                .to_string(),
        );
    }
    lines.join("\n")
}
