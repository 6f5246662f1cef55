//! The mediated rung's rules, each written once: which vendor module would make a GPU an
//! mdev parent, and the closest type name to one that does not exist. The probe (`gpu list`,
//! the ladder) and the type choice of `mdev-create` ([`super::types`]) both ask here.

use crate::inventory::{HostInventory, MdevParent, MdevTypeInfo, PciFunction};

/// The vendor module an existing mdev parent's types need that is not loaded (an mdev
/// parent whose module was unloaded keeps listing types it cannot create). Without
/// `/proc/modules` nothing can be told: the types being listed means it is loaded.
pub fn parent_module_missing(inv: &HostInventory, p: &MdevParent) -> Option<&'static str> {
    p.vendor_module()
        .filter(|m| inv.host.modules.is_some() && !inv.host.module_loaded(m))
}

/// The kernel module that would make `f` an mdev parent, when one would: `kvmgt` for an
/// Intel GPU on `i915` (GVT-g), `nvidia-vgpu-vfio` for an NVIDIA GPU on `nvidia` (the vGPU
/// manager's mdev module). GPUs with SR-IOV, and their VFs, get none: their vGPUs are
/// virtual functions (Intel SR-IOV; NVIDIA since Ampere, with vendor-specific VFIO), and
/// GVT-g and the mdev vGPU manager do not drive them.
pub fn mdev_module_for(f: &PciFunction) -> Option<&'static str> {
    if f.sriov.is_some() || f.physfn.is_some() {
        return None;
    }
    match (f.vendor_id, f.driver.as_deref()) {
        (Some(0x8086), Some("i915")) => Some("kvmgt"),
        (Some(0x10de), Some("nvidia")) => Some("nvidia-vgpu-vfio"),
        _ => None,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn did_you_mean_finds_a_near_type_name_and_nothing_far() {
        let t = MdevTypeInfo {
            id: "i915-GVTg_V5_4".into(),
            name: Some("GVTg_V5_4".into()),
            description: None,
            device_api: None,
            available_instances: None,
            devices: Vec::new(),
        };
        assert_eq!(
            did_you_mean("i915-GVTg_V5_8", &[&t]).as_deref(),
            Some("i915-GVTg_V5_4")
        );
        assert_eq!(did_you_mean("nvidia-35", &[&t]), None);
    }
}
