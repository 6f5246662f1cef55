//! NVIDIA vendor-specific VFIO vGPU (vGPU 17+, kernel 6.8+): `VF/nvidia/current_vgpu_type`
//! and `creatable_vgpu_types`.
//!
//! Not measured (no such GPU in the lab); the model follows `docs/anchors.md` §0 and
//! §6: writing a type id listed in the VF's `creatable_vgpu_types` to `current_vgpu_type`
//! creates the vGPU, writing `0` destroys it; `creatable_vgpu_types` is capacity dependent
//! and shrinks on sibling VFs as vGPUs are created (homogeneous mode: once one type is in use
//! on a GPU only that type stays creatable, back when the last vGPU is gone). Choices made
//! where the sources are silent (documented as the simulator's, not NVIDIA's):
//!
//! - the types a GPU supports are the union of the `creatable_vgpu_types` its VFs show when
//!   first touched (or just before `sriov_numvfs` ← 0 removes them); lines that do not start
//!   with a number (a header) are kept as they are. A GPU whose VFs the simulator never saw
//!   gets VFs without `nvidia/` from `sriov_numvfs`: nothing says which types it has;
//! - a type's capacity on one GPU is `floor(largest framebuffer / its framebuffer)`, the
//!   framebuffer read from the name's `-NNC`/`-NNQ`… suffix (`NVIDIA H100-20C` = 20), capped
//!   by the number of VFs; without a parsable suffix, the number of VFs;
//! - a configured VF lists no creatable type; writing a non-zero id to a configured VF is
//!   `EBUSY` (tools write `0` first), an id it does not list is `EINVAL`, a non-number is
//!   `EINVAL`, `0` on an unconfigured VF succeeds and changes nothing; clearing while the
//!   VF's VFIO device fd is open is `EBUSY`.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use super::{device_fd_open, err, errno, sriov, text_value};
use crate::State;

/// What the simulator knows about one GPU's vGPU types.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct NvPf {
    /// Lines of `creatable_vgpu_types` that are not types (a header), kept verbatim.
    header: Vec<String>,
    /// Supported types in first-seen order: id and the line as the driver printed it.
    types: Vec<(u32, String)>,
    /// Instances each type can have on this GPU.
    cap: BTreeMap<u32, u64>,
}

fn type_line_id(line: &str) -> Option<u32> {
    line.split(':').next()?.trim().parse().ok()
}

/// Framebuffer size from a vGPU type name (`NVIDIA H200X-1-18C` → 18).
fn framebuffer(line: &str) -> Option<u64> {
    let name = line.split_once(':')?.1.trim();
    let last = name.rsplit('-').next()?;
    let digits: String = last.chars().take_while(char::is_ascii_digit).collect();
    let rest = &last[digits.len()..];
    (!digits.is_empty() && rest.len() == 1 && rest.chars().all(|c| c.is_ascii_uppercase()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// The VF group a VF belongs to: its PF's VFs, or the device alone when it has no `physfn`.
fn siblings(st: &State, vf: &Path) -> (PathBuf, Vec<PathBuf>) {
    match st.tree.resolve(&vf.join("physfn"), true) {
        Ok(pf) if st.tree.has(&pf) => {
            let v = sriov::vfs(st, &pf).into_iter().map(|(_, _, d)| d).collect();
            (pf, v)
        }
        _ => (vf.to_path_buf(), vec![vf.to_path_buf()]),
    }
}

fn current(st: &State, vf: &Path) -> u32 {
    st.tree
        .text(&vf.join("nvidia/current_vgpu_type"))
        .and_then(|t| t.parse().ok())
        .unwrap_or(0)
}

fn learn(st: &mut State, pf: &Path, vfs: &[PathBuf]) {
    if st.kernel.nvidia.contains_key(pf) {
        return;
    }
    let mut nv = NvPf::default();
    for vf in vfs {
        let Some(b) = st.tree.read(&vf.join("nvidia/creatable_vgpu_types")).ok() else {
            continue;
        };
        for line in String::from_utf8_lossy(&b).lines() {
            match type_line_id(line) {
                Some(id) if !nv.types.iter().any(|(i, _)| *i == id) => {
                    nv.types.push((id, line.to_string()));
                }
                Some(_) => {}
                None if !line.trim().is_empty() && !nv.header.contains(&line.to_string()) => {
                    nv.header.push(line.to_string())
                }
                None => {}
            }
        }
    }
    let n_vfs = vfs.len() as u64;
    let largest = nv.types.iter().filter_map(|(_, l)| framebuffer(l)).max();
    for (id, line) in &nv.types {
        let cap = match (largest, framebuffer(line)) {
            (Some(big), Some(fb)) if fb > 0 => (big / fb).min(n_vfs),
            _ => n_vfs,
        };
        nv.cap.insert(*id, cap);
    }
    st.kernel.nvidia.insert(pf.to_path_buf(), nv);
}

/// Learns `pf`'s vGPU types from its VFs (before they go away), when any VF has them.
pub(crate) fn learn_pf(st: &mut State, pf: &Path) {
    let vfs: Vec<PathBuf> = sriov::vfs(st, pf).into_iter().map(|(_, _, d)| d).collect();
    if vfs.iter().any(|v| st.tree.has(&v.join("nvidia"))) {
        learn(st, pf, &vfs);
    }
}

/// Rewrites `creatable_vgpu_types` of every VF of `pf`.
fn refresh(st: &mut State, pf: &Path, vfs: &[PathBuf]) {
    let Some(nv) = st.kernel.nvidia.get(pf).cloned() else {
        return;
    };
    let mut used: BTreeMap<u32, u64> = BTreeMap::new();
    for vf in vfs {
        let c = current(st, vf);
        if c != 0 {
            *used.entry(c).or_default() += 1;
        }
    }
    for vf in vfs {
        let file = vf.join("nvidia/creatable_vgpu_types");
        if !st.tree.has(&vf.join("nvidia")) {
            continue;
        }
        let mut lines = nv.header.clone();
        if current(st, vf) == 0 {
            for (id, line) in &nv.types {
                let others = used.iter().any(|(u, n)| *n > 0 && u != id);
                let left =
                    nv.cap.get(id).copied().unwrap_or(0) > used.get(id).copied().unwrap_or(0);
                if !others && left {
                    lines.push(line.clone());
                }
            }
        }
        let mut text = lines.join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        st.tree.put_file(&file, text.into_bytes());
    }
}

/// New VFs of an NVIDIA GPU get an `nvidia/` directory like their siblings had.
pub(crate) fn on_vfs_changed(st: &mut State, pf: &Path) {
    let Some(nv) = st.kernel.nvidia.get(pf).cloned() else {
        return;
    };
    let vfs: Vec<PathBuf> = sriov::vfs(st, pf).into_iter().map(|(_, _, d)| d).collect();
    for vf in &vfs {
        let dir = vf.join("nvidia");
        if !st.tree.has(&dir) {
            st.tree
                .put_file(&dir.join("current_vgpu_type"), b"0\n".to_vec());
            st.tree.put_file(
                &dir.join("creatable_vgpu_types"),
                nv.header.join("\n").into_bytes(),
            );
        }
    }
    refresh(st, pf, &vfs);
}

/// `VF/nvidia/current_vgpu_type`.
pub(crate) fn store_current_type(st: &mut State, vf: &Path, value: &[u8]) -> io::Result<()> {
    let id: u32 = text_value(value).parse().map_err(|_| err(errno::EINVAL))?;
    let (pf, vfs) = siblings(st, vf);
    learn(st, &pf, &vfs);
    let cur = current(st, vf);
    let addr = vf
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if id == 0 {
        if cur == 0 {
            return Ok(());
        }
        if device_fd_open(st, &addr) {
            return Err(err(errno::EBUSY));
        }
    } else {
        if cur != 0 {
            return Err(err(errno::EBUSY));
        }
        let listed = st
            .tree
            .read(&vf.join("nvidia/creatable_vgpu_types"))
            .map(|b| {
                String::from_utf8_lossy(&b)
                    .lines()
                    .any(|l| type_line_id(l) == Some(id))
            })
            .unwrap_or(false);
        if !listed {
            return Err(err(errno::EINVAL));
        }
    }
    st.tree.put_file(
        &vf.join("nvidia/current_vgpu_type"),
        format!("{id}\n").into_bytes(),
    );
    refresh(st, &pf, &vfs);
    Ok(())
}
