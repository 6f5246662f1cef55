//! Module loads and unloads (rules 33–35).
//!
//! Loadable modules: every module already in `/proc/modules`, the names listed one a line
//! in the fixture's optional `.fixture/modules-available`, and the standard VFIO set
//! ([`STANDARD`]). Names are normalised as modprobe does (`-` and `_` are the same).

use std::collections::BTreeSet;
use std::path::Path;

use vm_device_host::HostError;

use super::{errno, group_of, is_vfio_driver, mdev, pci, sync_vfio_node};
use crate::tree::Tree;
use crate::State;

/// Modules every simulated host can load: the VFIO stack.
pub const STANDARD: &[&str] = &[
    "vfio",
    "vfio_iommu_type1",
    "vfio_pci_core",
    "vfio_pci",
    "vfio_virqfd",
    "irqbypass",
];

/// Modprobe's spelling-insensitive name (`vfio-pci` → `vfio_pci`).
pub fn normalise(name: &str) -> String {
    name.trim().replace('-', "_")
}

/// What each module pulls in with it (modprobe loads dependencies and `vfio`'s soft
/// dependency `vfio_iommu_type1` first).
fn deps(name: &str) -> &'static [&'static str] {
    match name {
        "vfio" => &["vfio_iommu_type1"],
        "vfio_pci_core" => &["vfio", "irqbypass", "vfio_virqfd"],
        "vfio_pci" => &["vfio_pci_core"],
        "vfio_iommu_type1" => &[],
        _ => &[],
    }
}

pub(crate) fn available(tree: &Tree, root: &Path) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = STANDARD.iter().map(|s| s.to_string()).collect();
    if let Ok(t) = std::fs::read_to_string(root.join(".fixture/modules-available")) {
        out.extend(
            t.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(normalise),
        );
    }
    out.extend(loaded(tree));
    out
}

/// Names in `/proc/modules`, in file order.
pub(crate) fn loaded(tree: &Tree) -> Vec<String> {
    tree.read(Path::new("/proc/modules"))
        .map(|b| {
            String::from_utf8_lossy(&b)
                .lines()
                .filter_map(|l| l.split_whitespace().next().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn release(tree: &Tree) -> String {
    tree.text(Path::new("/proc/kernel-release"))
        .filter(|r| !r.is_empty())
        .or_else(|| {
            let v = tree.text(Path::new("/proc/version"))?;
            v.split_whitespace().nth(2).map(str::to_string)
        })
        .unwrap_or_else(|| "UNKNOWN-RELEASE".into())
}

/// `modprobe NAME`: loads it with its dependencies; loading an already loaded module does
/// nothing. Loading `vfio` creates `/dev/vfio/vfio`; loading `vfio_pci` registers the
/// `vfio-pci` driver and binds every unbound function whose override is `vfio-pci`.
pub(crate) fn load(st: &mut State, name: &str) -> Result<(), HostError> {
    let n = normalise(name);
    if n.is_empty() || !st.kernel.modules_available.contains(&n) {
        return Err(HostError::Module {
            module: name.to_string(),
            detail: format!(
                "modprobe: FATAL: Module {name} not found in directory /lib/modules/{}",
                release(&st.tree)
            ),
        });
    }
    insert(st, &n);
    Ok(())
}

fn insert(st: &mut State, n: &str) {
    if loaded(&st.tree).iter().any(|m| m == n) {
        return;
    }
    for d in deps(n) {
        insert(st, d);
    }
    let p = Path::new("/proc/modules");
    let old = st.tree.read(p).unwrap_or_default();
    let mut text = format!("{n} 16384 0 - Live 0x0000000000000000\n").into_bytes();
    text.extend_from_slice(&old);
    st.tree.put_file(p, text);
    match n {
        "vfio" => {
            let node = Path::new("/dev/vfio/vfio");
            if !st.tree.has(node) {
                st.tree.put_file(node, Vec::new());
            }
        }
        "vfio_pci" => {
            st.tree
                .ensure_dir(Path::new("/sys/bus/pci/drivers/vfio-pci"));
            pci::attach_overrides(st, "vfio-pci");
        }
        _ => mdev::reregister_parent(st, n),
    }
}

/// `modprobe -r NAME` / `delete_module(NAME, O_NONBLOCK)` (rules 33–35): `EAGAIN` while in
/// use (another loaded module depends on it, a VFIO device fd of its devices is open, a
/// container uses `vfio_iommu_type1`); unloading `vfio_pci` unbinds its functions and keeps
/// their overrides; unloading an mdev parent removes its mediated devices and its parent.
pub(crate) fn unload(st: &mut State, name: &str) -> Result<(), HostError> {
    let n = normalise(name);
    let fail = |detail: String| HostError::Module {
        module: name.to_string(),
        detail,
    };
    let lines = loaded(&st.tree);
    if !lines.contains(&n) {
        return Err(fail(format!(
            "modprobe: FATAL: Module {n} is not currently loaded"
        )));
    }
    let busy = || {
        fail(format!(
            "modprobe: can't unload module '{n}': Resource temporarily unavailable (errno {})",
            errno::EAGAIN
        ))
    };
    if users(&st.tree, &n).next().is_some() {
        return Err(busy());
    }
    match n.as_str() {
        "vfio_pci" => {
            let bound: Vec<_> = pci::all_devices(&st.tree)
                .into_iter()
                .filter(|(_, d)| pci::bound_driver(&st.tree, d).as_deref() == Some("vfio-pci"))
                .collect();
            if bound.iter().any(|(a, _)| super::device_fd_open(st, a)) {
                return Err(busy());
            }
            for (a, d) in &bound {
                pci::unbind(st, d, a);
            }
            st.tree.remove(Path::new("/sys/bus/pci/drivers/vfio-pci"));
        }
        "vfio_iommu_type1" if !st.kernel.claimed.is_empty() => return Err(busy()),
        _ => {
            if let Some(parent) = mdev::parent_of_module(&st.tree, &n) {
                if mdev::parent_in_use(st, &parent) {
                    return Err(busy());
                }
                mdev::unregister_parent(st, &parent);
            } else if pci::registered(&st.tree, &n.replace('_', "-")) {
                let drv = n.replace('_', "-");
                let bound: Vec<_> = pci::all_devices(&st.tree)
                    .into_iter()
                    .filter(|(_, d)| pci::bound_driver(&st.tree, d).as_deref() == Some(&drv))
                    .collect();
                if bound.iter().any(|(a, _)| super::device_fd_open(st, a)) {
                    return Err(busy());
                }
                for (a, d) in &bound {
                    pci::unbind(st, d, a);
                }
                if !is_vfio_driver(&drv) {
                    st.tree
                        .remove(&Path::new("/sys/bus/pci/drivers").join(&drv));
                }
            }
        }
    }
    let p = Path::new("/proc/modules");
    let old = String::from_utf8_lossy(&st.tree.read(p).unwrap_or_default()).into_owned();
    let kept: String = old
        .lines()
        .filter(|l| l.split_whitespace().next() != Some(n.as_str()))
        .map(|l| format!("{l}\n"))
        .collect();
    st.tree.put_file(p, kept.into_bytes());
    // Groups whose node depended on the unloaded driver lose it (rule 35).
    for (_, d) in pci::all_devices(&st.tree) {
        if let Some(g) = group_of(&st.tree, &d) {
            sync_vfio_node(&mut st.tree, &mut st.kernel, g);
        }
    }
    Ok(())
}

/// Loaded modules that list `n` among their users (`/proc/modules` fourth column).
fn users<'a>(tree: &'a Tree, n: &'a str) -> impl Iterator<Item = String> + 'a {
    let text = tree
        .read(Path::new("/proc/modules"))
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let mut out = Vec::new();
    for l in text.lines() {
        let mut f = l.split_whitespace();
        if f.next() != Some(n) {
            continue;
        }
        let by = f.nth(2).unwrap_or("-");
        out.extend(
            by.split(',')
                .filter(|u| !u.is_empty() && *u != "-")
                .map(str::to_string)
                .filter(|u| loaded(tree).contains(u)),
        );
    }
    out.into_iter()
}
