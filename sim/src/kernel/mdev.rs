//! Mediated devices (rules 26–33): `TYPE/create`, `UUID/remove`, capacity pools.
//!
//! Capacity is a pool per parent, and the pool's policy is chosen in one place,
//! `Pool::learn`, from the parent's driver (or name) and its type names:
//!
//! | parent | policy | refusal |
//! | --- | --- | --- |
//! | `mbochs` | one memory pool: `available = floor(free MB / type MB)`, type MB from the description (`4 MB video memory`) | `ENOSPC` |
//! | `mtty` | one port pool: `available = floor(free ports / ports per type)` (`mtty-2` = 2 ports) | `ENOSPC` |
//! | `mdpy` | one shared count (`max_instances`), every type shows the same number | `EUSERS` |
//! | NVIDIA (`nvidia-*` types or an `nvidia` parent) | a count per type (`max_instance=` of the description, else what the fixture showed); once an instance exists on the GPU, every other type reads 0 until the last is removed | `ENOSPC` |
//! | any other (GVT-g `i915-GVTg_V5_*`, …) | a count per type, independent of the others | `ENOSPC` |
//!
//! Pool sizes are learned from the tree when a parent is first touched: free capacity from
//! the `available_instances` values, used capacity from the mdevs that already exist.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use super::{
    device_fd_open, err, errno, group_of, lowest_free_group, pci::parse_ulong, sync_vfio_node,
    text_value, PendingWrite,
};
use crate::tree::{Entry, Tree};
use crate::State;

/// A parent's capacity pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Pool {
    /// Units (MB, ports) shared by every type; each type costs `per_type` units.
    Units {
        total: u64,
        per_type: BTreeMap<String, u64>,
        errno: i32,
    },
    /// One count shared by every type.
    Shared { max: u64 },
    /// An independent count per type.
    PerType { max: BTreeMap<String, u64> },
    /// A count per type, one type at a time (NVIDIA).
    OneType { max: BTreeMap<String, u64> },
}

/// True when canonical `p` is an mdev's directory (it has an `mdev_type` link).
pub(crate) fn is_mdev_dir(tree: &Tree, p: &Path) -> bool {
    matches!(tree.node(p), Some(Entry::Dir { .. }))
        && matches!(tree.node(&p.join("mdev_type")), Some(Entry::Link(_)))
}

fn types_dir(parent: &Path) -> PathBuf {
    parent.join("mdev_supported_types")
}

fn type_names(tree: &Tree, parent: &Path) -> Vec<String> {
    tree.list(&types_dir(parent)).unwrap_or_default()
}

/// Number of mdevs of each type of `parent` (from each type's `devices/`).
fn used(tree: &Tree, parent: &Path) -> BTreeMap<String, u64> {
    type_names(tree, parent)
        .into_iter()
        .map(|t| {
            let n = tree
                .list(&types_dir(parent).join(&t).join("devices"))
                .map(|l| l.len() as u64)
                .unwrap_or(0);
            (t, n)
        })
        .collect()
}

/// The name that picks a parent's policy and mdev driver: its bound driver, else its
/// directory name (the sample parents are virtual devices named after their module).
fn parent_name(tree: &Tree, parent: &Path) -> String {
    tree.link_name(&parent.join("driver")).unwrap_or_else(|| {
        parent
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    })
}

/// The mdev driver an mdev of `parent` binds to (`/sys/bus/mdev/drivers/NAME`): the parent's
/// own name when such a driver exists, else the only mdev driver, else the parent's name.
fn mdev_driver(tree: &Tree, parent: &Path) -> String {
    let name = parent_name(tree, parent);
    let drivers = tree
        .list(Path::new("/sys/bus/mdev/drivers"))
        .unwrap_or_default();
    if drivers.contains(&name) {
        name
    } else if drivers.len() == 1 {
        drivers[0].clone()
    } else {
        name
    }
}

fn first_number_before(text: &str, unit: &str) -> Option<u64> {
    let idx = text.find(unit)?;
    text[..idx]
        .split_whitespace()
        .last()
        .and_then(|w| w.parse().ok())
}

impl Pool {
    /// Learns `parent`'s pool from the tree as it is now. The policy table is in the module
    /// documentation.
    pub(crate) fn learn(tree: &Tree, parent: &Path) -> Pool {
        let name = parent_name(tree, parent);
        let types = type_names(tree, parent);
        let used = used(tree, parent);
        let avail = |t: &str| -> u64 {
            tree.text(&types_dir(parent).join(t).join("available_instances"))
                .and_then(|s| s.parse().ok())
                .unwrap_or(0)
        };
        let desc = |t: &str| tree.text(&types_dir(parent).join(t).join("description"));
        let u = |t: &str| used.get(t).copied().unwrap_or(0);
        let units = |per_type: BTreeMap<String, u64>, errno: i32| {
            let free = per_type
                .iter()
                .map(|(t, c)| avail(t) * c)
                .max()
                .unwrap_or(0);
            let taken: u64 = per_type.iter().map(|(t, c)| u(t) * c).sum();
            Pool::Units {
                total: free + taken,
                per_type,
                errno,
            }
        };
        if name == "mbochs" {
            let per_type = types
                .iter()
                .map(|t| {
                    let mb = desc(t)
                        .and_then(|d| first_number_before(&d, "MB"))
                        .unwrap_or(match t.rsplit('-').next() {
                            Some("medium") => 16,
                            Some("large") => 64,
                            _ => 4,
                        });
                    (t.clone(), mb.max(1))
                })
                .collect();
            return units(per_type, errno::ENOSPC);
        }
        if name == "mtty" {
            let per_type = types
                .iter()
                .map(|t| {
                    let ports = t
                        .rsplit('-')
                        .next()
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(1u64);
                    (t.clone(), ports.max(1))
                })
                .collect();
            return units(per_type, errno::ENOSPC);
        }
        if name == "mdpy" {
            let total_used: u64 = used.values().sum();
            let free = types.iter().map(|t| avail(t)).min().unwrap_or(0);
            return Pool::Shared {
                max: free + total_used,
            };
        }
        let max: BTreeMap<String, u64> = types
            .iter()
            .map(|t| {
                let declared = desc(t).and_then(|d| {
                    let i = d.find("max_instance=")?;
                    d[i + "max_instance=".len()..]
                        .split(|c: char| !c.is_ascii_digit())
                        .next()?
                        .parse()
                        .ok()
                });
                (t.clone(), declared.unwrap_or(avail(t) + u(t)))
            })
            .collect();
        if name == "nvidia" || types.iter().any(|t| t.starts_with("nvidia-")) {
            Pool::OneType { max }
        } else {
            Pool::PerType { max }
        }
    }

    /// `available_instances` of type `t` given the instances per type.
    pub(crate) fn available(&self, t: &str, used: &BTreeMap<String, u64>) -> u64 {
        let u = |x: &str| used.get(x).copied().unwrap_or(0);
        match self {
            Pool::Units {
                total, per_type, ..
            } => {
                let taken: u64 = per_type.iter().map(|(x, c)| u(x) * c).sum();
                let cost = per_type.get(t).copied().unwrap_or(1).max(1);
                total.saturating_sub(taken) / cost
            }
            Pool::Shared { max } => max.saturating_sub(used.values().sum()),
            Pool::PerType { max } => max.get(t).copied().unwrap_or(0).saturating_sub(u(t)),
            Pool::OneType { max } => {
                if used.iter().any(|(x, n)| *n > 0 && x != t) {
                    0
                } else {
                    max.get(t).copied().unwrap_or(0).saturating_sub(u(t))
                }
            }
        }
    }

    /// The errno of a create beyond capacity (rule 28).
    pub(crate) fn full_errno(&self) -> i32 {
        match self {
            Pool::Units { errno, .. } => *errno,
            Pool::Shared { .. } => errno::EUSERS,
            Pool::PerType { .. } | Pool::OneType { .. } => errno::ENOSPC,
        }
    }
}

fn pool<'a>(st: &'a mut State, parent: &Path) -> &'a Pool {
    if !st.kernel.pools.contains_key(parent) {
        let p = Pool::learn(&st.tree, parent);
        st.kernel.pools.insert(parent.to_path_buf(), p);
    }
    &st.kernel.pools[parent]
}

/// Rewrites every type's `available_instances` of `parent` (rule 29).
fn refresh_available(st: &mut State, parent: &Path) {
    let used = used(&st.tree, parent);
    let pool = pool(st, parent).clone();
    for t in type_names(&st.tree, parent) {
        let n = pool.available(&t, &used);
        st.tree.put_file(
            &types_dir(parent).join(&t).join("available_instances"),
            format!("{n}\n").into_bytes(),
        );
    }
}

/// Rule 26: canonical 8-4-4-4-12 hex, any case; stored lower case.
pub(crate) fn parse_uuid(value: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(value.strip_suffix(b"\n").unwrap_or(value)).ok()?;
    let b = s.as_bytes();
    if b.len() != 36 {
        return None;
    }
    for (i, c) in b.iter().enumerate() {
        let dash = matches!(i, 8 | 13 | 18 | 23);
        if dash != (*c == b'-') || (!dash && !c.is_ascii_hexdigit()) {
            return None;
        }
    }
    Some(s.to_ascii_lowercase())
}

/// Every mdev parent directory (`/sys/class/mdev_bus/*`, resolved).
fn parents(tree: &Tree) -> Vec<PathBuf> {
    let bus = Path::new("/sys/class/mdev_bus");
    tree.list(bus)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|n| tree.resolve(&bus.join(n), true).ok())
        .collect()
}

/// The directory of the mdev `uuid`, wherever its parent is.
fn find_mdev(tree: &Tree, uuid: &str) -> Option<PathBuf> {
    if let Ok(p) = tree.resolve(&Path::new("/sys/bus/mdev/devices").join(uuid), true) {
        if is_mdev_dir(tree, &p) {
            return Some(p);
        }
    }
    parents(tree)
        .into_iter()
        .map(|p| p.join(uuid))
        .find(|p| is_mdev_dir(tree, p))
}

/// `TYPE/create` (rules 26–31).
pub(crate) fn create(st: &mut State, type_dir: &Path, value: &[u8]) -> io::Result<()> {
    let uuid = parse_uuid(value).ok_or_else(|| err(errno::EINVAL))?;
    let Some(parent) = type_dir
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
    else {
        return Err(err(errno::ENOENT));
    };
    let ty = type_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if find_mdev(&st.tree, &uuid).is_some() || st.tree.has(&parent.join(&uuid)) {
        return Err(err(errno::EEXIST));
    }
    let used_now = used(&st.tree, &parent);
    let pool = pool(st, &parent).clone();
    let drv = mdev_driver(&st.tree, &parent);
    if pool.available(&ty, &used_now) == 0 {
        let e = pool.full_errno();
        if e == errno::ENOSPC {
            st.kernel
                .dmesg
                .push(format!("{drv}: probe of {uuid} failed with error -{e}"));
        }
        return Err(err(e));
    }
    let group = lowest_free_group(&st.tree);
    let dev = parent.join(&uuid);
    let gdir = PathBuf::from(format!("/sys/kernel/iommu_groups/{group}"));
    let drv_dir = Path::new("/sys/bus/mdev/drivers").join(&drv);
    let t = &mut st.tree;
    t.ensure_dir(&dev);
    t.put_link(&dev.join("driver"), &drv_dir);
    t.put_link(&dev.join("iommu_group"), &gdir);
    t.put_link(&dev.join("mdev_type"), type_dir);
    t.put_link(&dev.join("subsystem"), Path::new("/sys/bus/mdev"));
    t.ensure_dir(&type_dir.join("devices"));
    t.put_link(&type_dir.join("devices").join(&uuid), &dev);
    t.put_link(&Path::new("/sys/bus/mdev/devices").join(&uuid), &dev);
    t.put_link(&drv_dir.join(&uuid), &dev);
    t.put_link(&gdir.join("devices").join(&uuid), &dev);
    t.put_file(&gdir.join("type"), b"unknown\n".to_vec());
    t.put_file(&gdir.join("name"), b"vfio-noiommu\n".to_vec());
    t.put_file(&gdir.join("reserved_regions"), Vec::new());
    sync_vfio_node(&mut st.tree, &mut st.kernel, group);
    st.kernel
        .dmesg
        .push(format!("{drv} {uuid}: Adding to iommu group {group}"));
    refresh_available(st, &parent);
    Ok(())
}

/// `UUID/remove` (rules 25, 32): `0` does nothing, any other integer removes, anything else
/// is `EINVAL`; with the device fd open the kernel blocks (see [`PendingWrite`]).
pub(crate) fn store_remove(st: &mut State, dev: &Path, value: &[u8]) -> io::Result<()> {
    let v = parse_ulong(&text_value(value)).ok_or_else(|| err(errno::EINVAL))?;
    if v == 0 {
        return Ok(());
    }
    let uuid = dev
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if device_fd_open(st, &uuid) {
        if !st
            .kernel
            .pending
            .contains(&PendingWrite::MdevRemove(uuid.clone()))
        {
            st.kernel.pending.push(PendingWrite::MdevRemove(uuid));
        }
        return Err(err(errno::ETIMEDOUT));
    }
    remove_now(st, &uuid);
    Ok(())
}

/// Removes mdev `uuid` and everything that came with it, synchronously.
pub(crate) fn remove_now(st: &mut State, uuid: &str) {
    let Some(dev) = find_mdev(&st.tree, uuid) else {
        return;
    };
    let Some(parent) = dev.parent().map(Path::to_path_buf) else {
        return;
    };
    // Learn the pool before the tree changes.
    pool(st, &parent);
    let group = group_of(&st.tree, &dev);
    let type_dir = st.tree.resolve(&dev.join("mdev_type"), true).ok();
    let drv = st.tree.link_name(&dev.join("driver"));
    let t = &mut st.tree;
    t.remove(&dev);
    if let Some(td) = type_dir {
        t.remove(&td.join("devices").join(uuid));
    }
    t.remove(&Path::new("/sys/bus/mdev/devices").join(uuid));
    if let Some(d) = &drv {
        t.remove_pruned(&Path::new("/sys/bus/mdev/drivers").join(d).join(uuid));
    }
    if let Some(g) = group {
        t.remove(&PathBuf::from(format!("/sys/kernel/iommu_groups/{g}")));
        sync_vfio_node(&mut st.tree, &mut st.kernel, g);
        st.kernel.dmesg.push(format!(
            "{} {uuid}: Removing from iommu group {g}",
            drv.unwrap_or_default()
        ));
    }
    refresh_available(st, &parent);
}

/// The parent device registered by module `module` (`mbochs` → its virtual device).
pub(crate) fn parent_of_module(tree: &Tree, module: &str) -> Option<PathBuf> {
    parents(tree)
        .into_iter()
        .find(|p| mdev_driver(tree, p).replace('-', "_") == module)
}

/// True when a device fd of one of `parent`'s mdevs is open.
pub(crate) fn parent_in_use(st: &State, parent: &Path) -> bool {
    st.tree
        .list(parent)
        .unwrap_or_default()
        .iter()
        .any(|n| is_mdev_dir(&st.tree, &parent.join(n)) && device_fd_open(st, n))
}

/// Module unload of a parent (rule 33): its mdevs go, then the parent itself. The parent is
/// remembered so that loading the module again brings it back with full counts.
pub(crate) fn unregister_parent(st: &mut State, parent: &Path) {
    let mdevs: Vec<String> = st
        .tree
        .list(parent)
        .unwrap_or_default()
        .into_iter()
        .filter(|n| is_mdev_dir(&st.tree, &parent.join(n)))
        .collect();
    for u in mdevs {
        remove_now(st, &u);
    }
    let drv = mdev_driver(&st.tree, parent);
    let class: Vec<String> = st
        .tree
        .list(Path::new("/sys/class/mdev_bus"))
        .unwrap_or_default()
        .into_iter()
        .filter(|n| {
            st.tree
                .resolve(&Path::new("/sys/class/mdev_bus").join(n), true)
                .ok()
                .as_deref()
                == Some(parent)
        })
        .collect();
    for n in &class {
        st.tree.remove(&Path::new("/sys/class/mdev_bus").join(n));
    }
    st.tree
        .remove(&Path::new("/sys/bus/mdev/drivers").join(&drv));
    st.tree.remove(parent);
    let pool = st.kernel.pools.remove(parent);
    st.kernel.unloaded_parents.insert(
        drv.replace('-', "_"),
        super::UnloadedParent {
            parent: parent.to_path_buf(),
            class_links: class,
            driver: drv,
            pool,
        },
    );
}

/// Loading a parent module again: the parent and its types come back, no mdev, full counts.
pub(crate) fn reregister_parent(st: &mut State, module: &str) {
    let Some(u) = st.kernel.unloaded_parents.remove(module) else {
        return;
    };
    st.tree.restore_base(&u.parent);
    for n in &u.class_links {
        let l = Path::new("/sys/class/mdev_bus").join(n);
        st.tree.restore_base(&l);
        if !st.tree.has(&l) {
            st.tree.put_link(&l, &u.parent);
        }
    }
    let d = Path::new("/sys/bus/mdev/drivers").join(&u.driver);
    st.tree.restore_base(&d);
    st.tree.ensure_dir(&d);
    // The fixture may have had mdevs of this parent: a fresh load has none.
    let stale: Vec<String> = st
        .tree
        .list(&u.parent)
        .unwrap_or_default()
        .into_iter()
        .filter(|n| is_mdev_dir(&st.tree, &u.parent.join(n)))
        .collect();
    for n in stale {
        st.tree.remove(&u.parent.join(&n));
        st.tree.remove(&d.join(&n));
    }
    for t in type_names(&st.tree, &u.parent) {
        let devs = types_dir(&u.parent).join(&t).join("devices");
        for n in st.tree.list(&devs).unwrap_or_default() {
            st.tree.remove(&devs.join(n));
        }
    }
    if let Some(p) = u.pool {
        st.kernel.pools.insert(u.parent.clone(), p);
    }
    refresh_available(st, &u.parent);
}
