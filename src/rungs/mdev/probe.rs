//! The mediated rung: mdev types, SR-IOV virtual functions, NVIDIA vendor-VFIO vGPU types.

use crate::inventory::{HostInventory, MdevParent, MdevTypeInfo};
use crate::ladder::{attr_evidence, Filter};
use crate::ladder::{Candidate, GpuMode, Reason, ReasonCode, Target};

const MODE: GpuMode = GpuMode::Mdev;

/// Mediated candidates, best first: available ones on the least-loaded parent first.
pub fn probe(inv: &HostInventory, filter: &Filter) -> Vec<Candidate> {
    let mut out = Vec::new();
    let in_scope = |p: &&MdevParent| filter.device.is_none() || p.pci_address == filter.device;
    // Only parents of display devices are GPU candidates; the others (a serial port, a
    // network function) are listed by `gpu mdev-types`, never chosen here.
    let mut parents: Vec<&MdevParent> = inv
        .mdev_parents
        .iter()
        .filter(in_scope)
        .filter(|p| p.display)
        .collect();
    // Least loaded first (mdevctl users expect spread), then by name for determinism.
    parents.sort_by_key(|p| (p.active_count(), p.name.clone()));
    let mut all_types: Vec<&MdevTypeInfo> = Vec::new();
    for p in &parents {
        all_types.extend(p.types.iter());
        let module_missing = p
            .vendor_module()
            .filter(|m| inv.host.modules.is_some() && !inv.host.module_loaded(m));
        for t in &p.types {
            if let Some(want) = &filter.mdev_type {
                if !t.matches(want) {
                    continue;
                }
            }
            out.push(type_candidate(p, t, module_missing));
        }
    }
    sriov_candidates(inv, filter, &mut out);
    missing_module_candidates(inv, filter, &mut out);

    if let Some(want) = &filter.mdev_type {
        let not_display = inv
            .mdev_parents
            .iter()
            .filter(in_scope)
            .filter(|p| !p.display)
            .find_map(|p| p.types.iter().find(|t| t.matches(want)).map(|t| (p, t)));
        if let (true, Some((p, t))) = (out.is_empty(), not_display) {
            return vec![Candidate::nothing(
                MODE,
                Reason::new(
                    ReasonCode::NotDisplay,
                    format!(
                        "mdev type {} on {} is not a display device: a VM gets no GPU from it",
                        t.label(),
                        p.name
                    ),
                )
                .evidence(format!(
                    "{}: not a display-class PCI function, nor one of the display mdev drivers ({})",
                    p.sysfs_path.display(),
                    crate::inventory::DISPLAY_MDEV_DRIVERS.join(", ")
                ))
                .remedy("pick a display type from `vm-cli gpu list` (mbochs, mdpy, a GPU's types)"),
            )];
        }
        if out.is_empty() {
            let mut names: Vec<String> = all_types.iter().map(|t| t.label()).collect();
            names.sort();
            names.dedup();
            let close = did_you_mean(want, &all_types);
            let mut r = Reason::new(
                ReasonCode::TypeNotFound,
                format!("no mdev type named `{want}` on {}", scope(filter)),
            )
            .evidence("/sys/class/mdev_bus/*/mdev_supported_types");
            r = r.remedy(match (close, names.is_empty()) {
                (Some(c), _) => format!("did you mean `{c}`? types here: {}", names.join(", ")),
                (None, false) => format!("types here: {}", names.join(", ")),
                (None, true) => "this host offers no mdev type".to_string(),
            });
            return vec![Candidate::nothing(MODE, r)];
        }
    }
    if out.is_empty() {
        let r = if let Some(dev) = filter.device {
            if inv.gpu(&dev).is_none() {
                crate::ladder::reasons::device_not_found(inv, &dev)
            } else {
                no_parent(inv).evidence(format!("{dev} is not an mdev parent and has no SR-IOV"))
            }
        } else {
            no_parent(inv)
        };
        out.push(Candidate::nothing(MODE, r));
    }
    // Available first, keeping the order above within each group.
    out.sort_by_key(|c| !c.is_available());
    out
}

fn scope(filter: &Filter) -> String {
    filter
        .device
        .map(|d| d.to_string())
        .unwrap_or_else(|| "this host".into())
}

fn no_parent(_inv: &HostInventory) -> Reason {
    Reason::new(
        ReasonCode::NoMdevParent,
        "no GPU offers mediated devices, SR-IOV virtual functions or vGPU types",
    )
    .evidence("/sys/class/mdev_bus is empty")
    .remedy("Intel iGPU (Broadwell to Comet Lake): `sudo modprobe kvmgt`; NVIDIA vGPU: install the vGPU host driver, then `sudo modprobe nvidia-vgpu-vfio`; AMD MxGPU / Intel SR-IOV: enable VFs with sriov_numvfs")
}

fn type_candidate(p: &MdevParent, t: &MdevTypeInfo, module_missing: Option<&str>) -> Candidate {
    let dir = format!(
        "/sys/class/mdev_bus/{}/mdev_supported_types/{}",
        p.name, t.id
    );
    let target = Target::MdevType {
        parent: p.name.clone(),
        type_id: t.id.clone(),
        type_name: t.name.clone(),
        available_instances: t.available_instances.unwrap_or(0),
    };
    if let Some(m) = module_missing {
        return Candidate::unavailable(
            MODE,
            target,
            Reason::new(
                ReasonCode::ModuleNotLoaded,
                format!(
                    "module {m} (mediated devices of {}) is not loaded",
                    p.driver.as_deref().unwrap_or("?")
                ),
            )
            .evidence("/proc/modules")
            .remedy(format!("sudo modprobe {}", m.replace('_', "-"))),
        );
    }
    match t.available_instances {
        Some(n) if n > 0 => Candidate::available(MODE, target),
        Some(_) => {
            let mut r = Reason::new(
                ReasonCode::NoInstances,
                format!("type {} on {} has no instance left", t.label(), p.name),
            )
            .evidence(format!("{dir}/available_instances = 0"));
            let room: Vec<String> = p
                .types
                .iter()
                .filter(|o| o.available_instances.unwrap_or(0) > 0)
                .map(|o| o.id.clone())
                .collect();
            let nvidia_one_type = p.driver.as_deref() == Some("nvidia") && p.active_count() > 0;
            r = r.remedy(if nvidia_one_type {
                let used: Vec<&str> = p
                    .types
                    .iter()
                    .filter(|o| !o.devices.is_empty())
                    .map(|o| o.id.as_str())
                    .collect();
                format!(
                    "an NVIDIA GPU runs one vGPU type at a time and {} already runs {}: pick that type or another GPU",
                    p.name,
                    used.join(", ")
                )
            } else if room.is_empty() {
                "remove an unused mediated device of this parent, or use another GPU".into()
            } else {
                format!("types with room on this parent: {}", room.join(", "))
            });
            Candidate::unavailable(MODE, target, r)
        }
        None => Candidate::unavailable(
            MODE,
            target,
            Reason::new(
                ReasonCode::UnreadableState,
                "available_instances is unreadable",
            )
            .evidence(format!("{dir}/available_instances")),
        ),
    }
}

fn sriov_candidates(inv: &HostInventory, filter: &Filter, out: &mut Vec<Candidate>) {
    for gpu in &inv.gpus {
        if filter.device.is_some_and(|d| d != gpu.address) {
            continue;
        }
        let Some(pf) = inv.function(&gpu.address) else {
            continue;
        };
        let Some(s) = &pf.sriov else { continue };
        if s.total_vfs == 0 {
            continue;
        }
        if s.vfs.is_empty() {
            if filter.mdev_type.is_none() {
                out.push(Candidate::unavailable(
                    MODE,
                    Target::SriovPf {
                        pf: pf.address,
                        total_vfs: s.total_vfs,
                    },
                    Reason::new(
                        ReasonCode::NoVfsEnabled,
                        format!(
                            "{} supports {} virtual functions, none enabled",
                            pf.address, s.total_vfs
                        ),
                    )
                    .evidence(attr_evidence(&pf.address, "sriov_numvfs", "0"))
                    .remedy(format!(
                        "echo {} | sudo tee /sys/bus/pci/devices/{}/sriov_numvfs",
                        s.total_vfs.min(4),
                        pf.address
                    )),
                ));
            }
            continue;
        }
        for vf_addr in &s.vfs {
            let Some(vf) = inv.function(vf_addr) else {
                continue;
            };
            if let Some(nv) = &vf.nvidia_vgpu {
                nvidia_candidates(inv, filter, vf_addr, nv, out);
                continue;
            }
            if filter.mdev_type.is_some() {
                continue;
            }
            let target = Target::SriovVf {
                pf: pf.address,
                vf: *vf_addr,
            };
            let free = matches!(vf.driver.as_deref(), None | Some("vfio-pci"));
            if !inv.host.iommu.enabled {
                out.push(Candidate::unavailable(
                    MODE,
                    target,
                    crate::ladder::reasons::iommu_off(&inv.host),
                ));
            } else if free {
                out.push(Candidate::available(MODE, target));
            } else {
                let drv = vf.driver.clone().unwrap_or_default();
                out.push(Candidate::unavailable(
                    MODE,
                    target,
                    Reason::new(
                        ReasonCode::VfInUse,
                        format!("{vf_addr} is in use by the host ({drv})"),
                    )
                    .evidence(format!("/sys/bus/pci/devices/{vf_addr}/driver -> {drv}"))
                    .remedy("use another virtual function, or unbind it from the host driver"),
                ));
            }
        }
    }
}

fn nvidia_candidates(
    inv: &HostInventory,
    filter: &Filter,
    vf: &vm_device_host::PciAddress,
    nv: &crate::inventory::NvidiaVgpuTypes,
    out: &mut Vec<Candidate>,
) {
    let base = format!("/sys/bus/pci/devices/{vf}/nvidia");
    if let Some(cur) = nv.current {
        if filter.mdev_type.is_none() {
            out.push(Candidate::unavailable(
                MODE,
                Target::NvidiaVgpu {
                    vf: *vf,
                    type_id: cur,
                    type_name: String::new(),
                },
                Reason::new(
                    ReasonCode::VfInUse,
                    format!("{vf} already runs vGPU type {cur}"),
                )
                .evidence(format!("{base}/current_vgpu_type = {cur}"))
                .remedy("use another virtual function"),
            ));
        }
        return;
    }
    for (id, name) in &nv.creatable {
        if let Some(want) = &filter.mdev_type {
            let w = want.to_ascii_lowercase();
            if w != format!("nvidia-{id}")
                && w != id.to_string()
                && !name.eq_ignore_ascii_case(want)
            {
                continue;
            }
        }
        let target = Target::NvidiaVgpu {
            vf: *vf,
            type_id: *id,
            type_name: name.clone(),
        };
        if inv.host.iommu.enabled {
            out.push(Candidate::available(MODE, target));
        } else {
            out.push(Candidate::unavailable(
                MODE,
                target,
                crate::ladder::reasons::iommu_off(&inv.host),
            ));
        }
    }
}

/// GPUs that could offer mdev types if their vendor module were loaded.
fn missing_module_candidates(inv: &HostInventory, filter: &Filter, out: &mut Vec<Candidate>) {
    if filter.mdev_type.is_some() {
        return;
    }
    for gpu in &inv.gpus {
        if filter.device.is_some_and(|d| d != gpu.address)
            || inv.mdev_parent(&gpu.address).is_some()
        {
            continue;
        }
        let Some(f) = inv.function(&gpu.address) else {
            continue;
        };
        if f.sriov.is_some() || f.physfn.is_some() {
            continue;
        }
        let module = match (f.vendor_id, f.driver.as_deref()) {
            (Some(0x8086), Some("i915")) => "kvmgt",
            (Some(0x10de), Some("nvidia")) => "nvidia-vgpu-vfio",
            _ => continue,
        };
        if inv.host.module_loaded(module) {
            continue;
        }
        out.push(Candidate::unavailable(
            MODE,
            Target::Gpu {
                address: gpu.address,
                companions: Vec::new(),
            },
            Reason::new(
                ReasonCode::ModuleNotLoaded,
                format!(
                    "{} offers no mdev types: {module} is not loaded",
                    gpu.address
                ),
            )
            .evidence(format!(
                "/sys/bus/pci/devices/{}/mdev_supported_types is missing",
                gpu.address
            ))
            .evidence("/proc/modules")
            .remedy(format!("sudo modprobe {module}")),
        ));
    }
}

/// The closest type id or name to `want` (edit distance ≤ 3, or a prefix match).
pub fn did_you_mean(want: &str, types: &[&MdevTypeInfo]) -> Option<String> {
    let w = want.to_ascii_lowercase();
    let mut best: Option<(usize, String)> = None;
    for t in types {
        for cand in std::iter::once(t.id.clone()).chain(t.name.clone()) {
            let c = cand.to_ascii_lowercase();
            let d = if c.starts_with(&w) || w.starts_with(&c) {
                1
            } else {
                levenshtein(&w, &c)
            };
            if d <= 3 && best.as_ref().is_none_or(|(bd, _)| d < *bd) {
                best = Some((d, cand));
            }
        }
    }
    best.map(|(_, c)| c)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}
