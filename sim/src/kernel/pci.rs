//! PCI binding (rules 4–19, 24, 25, 36): `driver_override`, `enable`, `reset`,
//! `reset_method`, `drivers_probe`, `drivers/X/{bind,unbind,new_id,remove_id}`.

use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use vm_device_host::PciAddress;

use super::{
    device_fd_open, err, errno, group_in_use, group_of, is_vfio_driver, strip_newline,
    sync_vfio_node, text_value, NativeDrm, PendingWrite,
};
use crate::tree::{Entry, Tree};
use crate::State;

/// Reset methods the 6.1 kernel knows (`pci_reset_fn_methods`).
const RESET_METHODS: &[&str] = &[
    "device_specific",
    "acpi",
    "flr",
    "af_flr",
    "pm",
    "bus",
    "cxl_bus",
];

const NULL_OVERRIDE: &str = "(null)";

/// Every PCI function of the tree: address and canonical directory.
pub(crate) fn all_devices(tree: &Tree) -> Vec<(String, PathBuf)> {
    tree.list(Path::new("/sys/bus/pci/devices"))
        .unwrap_or_default()
        .into_iter()
        .filter_map(|a| device_dir(tree, &a).map(|d| (a, d)))
        .collect()
}

/// The canonical directory of PCI function `addr`, when it exists.
pub(crate) fn device_dir(tree: &Tree, addr: &str) -> Option<PathBuf> {
    if PciAddress::from_str(addr).is_err() {
        return None;
    }
    let dir = tree
        .resolve(&Path::new("/sys/bus/pci/devices").join(addr), true)
        .ok()?;
    matches!(tree.node(&dir), Some(Entry::Dir { .. })).then_some(dir)
}

/// True when canonical `p` is a PCI function's directory (`…/DDDD:BB:DD.F` under
/// `/sys/devices`).
pub(crate) fn is_device_dir(tree: &Tree, p: &Path) -> bool {
    p.starts_with("/sys/devices")
        && p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| PciAddress::from_str(n).is_ok())
        && matches!(tree.node(p), Some(Entry::Dir { .. }))
}

fn hex(tree: &Tree, p: &Path) -> Option<u32> {
    let t = tree.text(p)?;
    u32::from_str_radix(t.trim_start_matches("0x"), 16).ok()
}

/// `vendor` and `device` of the function at `dir`.
pub(crate) fn ids(tree: &Tree, dir: &Path) -> Option<(u16, u16)> {
    let v = hex(tree, &dir.join("vendor"))?;
    let d = hex(tree, &dir.join("device"))?;
    Some((u16::try_from(v).ok()?, u16::try_from(d).ok()?))
}

/// `class` of the function at `dir` (`0x030000`).
pub(crate) fn class(tree: &Tree, dir: &Path) -> Option<u32> {
    hex(tree, &dir.join("class"))
}

fn addr_of(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn driver_dir(driver: &str) -> PathBuf {
    Path::new("/sys/bus/pci/drivers").join(driver)
}

/// True when PCI driver `driver` is registered (`/sys/bus/pci/drivers/X` exists).
pub(crate) fn registered(tree: &Tree, driver: &str) -> bool {
    matches!(tree.node(&driver_dir(driver)), Some(Entry::Dir { .. }))
}

/// The driver currently bound to the function at `dir`.
pub(crate) fn bound_driver(tree: &Tree, dir: &Path) -> Option<String> {
    tree.link_name(&dir.join("driver"))
}

/// The stored `driver_override`, `None` when it reads `(null)` or is absent.
pub(crate) fn override_of(tree: &Tree, dir: &Path) -> Option<String> {
    let b = tree.read(&dir.join("driver_override")).ok()?;
    let s = String::from_utf8_lossy(strip_newline(&b)).into_owned();
    (s != NULL_OVERRIDE).then_some(s)
}

/// Adds `delta` to the `enable` counter (never below 0).
pub(crate) fn bump_enable(tree: &mut Tree, dir: &Path, delta: i64) {
    let p = dir.join("enable");
    let Some(cur) = tree.text(&p).and_then(|t| t.parse::<i64>().ok()) else {
        return;
    };
    tree.put_file(&p, format!("{}\n", (cur + delta).max(0)).into_bytes());
}

/// The DRM nodes under a device's `drm/` directory.
pub(crate) fn scan_drm(tree: &Tree, dir: &Path) -> Option<NativeDrm> {
    let drm = dir.join("drm");
    let names = tree.list(&drm).ok()?;
    let mut out = NativeDrm::default();
    for n in names {
        if let Some(num) = n.strip_prefix("card").filter(|r| r.parse::<u32>().is_ok()) {
            let prefix = format!("card{num}-");
            let conns = tree
                .list(&drm.join(&n))
                .unwrap_or_default()
                .into_iter()
                .filter_map(|c| c.strip_prefix(&prefix).map(str::to_string))
                .collect();
            out.cards.push(conns);
        } else if n.starts_with("renderD") {
            out.renders += 1;
        }
    }
    (!out.cards.is_empty() || out.renders > 0).then_some(out)
}

fn drm_name_used(tree: &Tree, name: &str) -> bool {
    tree.has(&Path::new("/dev/dri").join(name)) || tree.has(&Path::new("/sys/class/drm").join(name))
}

/// Rule 36: a DRM driver binding creates its nodes under the lowest free minors.
fn create_drm(tree: &mut Tree, dir: &Path, drm: &NativeDrm) {
    let base = dir.join("drm");
    for conns in &drm.cards {
        let Some(n) = (0..64u32).find(|n| !drm_name_used(tree, &format!("card{n}"))) else {
            return;
        };
        let card = format!("card{n}");
        let card_dir = base.join(&card);
        tree.ensure_dir(&card_dir);
        tree.put_link(&Path::new("/sys/class/drm").join(&card), &card_dir);
        tree.put_file(&Path::new("/dev/dri").join(&card), Vec::new());
        for c in conns {
            let cn = format!("{card}-{c}");
            tree.ensure_dir(&card_dir.join(&cn));
            tree.put_link(&Path::new("/sys/class/drm").join(&cn), &card_dir.join(&cn));
        }
    }
    for _ in 0..drm.renders {
        let Some(n) = (128..192u32).find(|n| !drm_name_used(tree, &format!("renderD{n}"))) else {
            return;
        };
        let r = format!("renderD{n}");
        tree.ensure_dir(&base.join(&r));
        tree.put_link(&Path::new("/sys/class/drm").join(&r), &base.join(&r));
        tree.put_file(&Path::new("/dev/dri").join(&r), Vec::new());
    }
}

/// Unbinding a DRM driver removes its cards, connectors and render nodes.
fn remove_drm(tree: &mut Tree, dir: &Path) {
    let base = dir.join("drm");
    let Ok(names) = tree.list(&base) else { return };
    let class = tree.list(Path::new("/sys/class/drm")).unwrap_or_default();
    for n in names {
        tree.remove(&Path::new("/dev/dri").join(&n));
        let prefix = format!("{n}-");
        for c in class.iter().filter(|c| **c == n || c.starts_with(&prefix)) {
            tree.remove(&Path::new("/sys/class/drm").join(c));
        }
    }
    tree.remove(&base);
}

/// Binds the function at `dir` to `driver`: links both ways, `enable` up for a driver that
/// enables the device (every non-VFIO driver), DRM nodes for the native DRM driver,
/// `/dev/vfio/N` for the first VFIO member of the group.
pub(crate) fn bind(st: &mut State, dir: &Path, driver: &str) {
    let addr = addr_of(dir);
    let ddir = driver_dir(driver);
    st.tree.put_link(&dir.join("driver"), &ddir);
    st.tree.put_link(&ddir.join(&addr), dir);
    if !is_vfio_driver(driver) && driver != "pci-stub" {
        bump_enable(&mut st.tree, dir, 1);
    }
    let native = st.kernel.native.get(&addr).cloned().flatten();
    if native.as_deref() == Some(driver) {
        if let Some(drm) = st.kernel.drm.get(&addr).cloned() {
            create_drm(&mut st.tree, dir, &drm);
        }
    }
    if let Some(g) = group_of(&st.tree, dir) {
        sync_vfio_node(&mut st.tree, &mut st.kernel, g);
    }
}

/// Runs `driver`'s probe on the function at `dir` and binds it when the probe succeeds.
/// A VFIO driver's probe fails on a function without an IOMMU group (vfio-pci: `-EINVAL`);
/// as in the kernel's `really_probe`, that failure is logged and otherwise ignored, and the
/// function stays unbound. Returns whether it bound.
fn attach(st: &mut State, dir: &Path, driver: &str) -> bool {
    if is_vfio_driver(driver) && group_of(&st.tree, dir).is_none() {
        st.kernel.dmesg.push(format!(
            "{driver}: probe of {} failed with error -{}",
            addr_of(dir),
            errno::EINVAL
        ));
        return false;
    }
    bind(st, dir, driver);
    true
}

/// Rule 7: unbinding removes both links at once and the driver's enable; a group's last
/// VFIO member takes `/dev/vfio/N` with it (rule 20).
pub(crate) fn unbind(st: &mut State, dir: &Path, addr: &str) {
    let Some(driver) = bound_driver(&st.tree, dir) else {
        return;
    };
    st.tree.remove(&dir.join("driver"));
    st.tree.remove(&driver_dir(&driver).join(addr));
    if !is_vfio_driver(&driver) && driver != "pci-stub" {
        bump_enable(&mut st.tree, dir, -1);
    }
    remove_drm(&mut st.tree, dir);
    if let Some(g) = group_of(&st.tree, dir) {
        sync_vfio_node(&mut st.tree, &mut st.kernel, g);
    }
}

/// True when `driver` would accept the function at `dir`: `driver_override` decides alone
/// when set; otherwise a `new_id` entry, or (except for VFIO drivers and pci-stub, which
/// match only through those two) the driver's id table.
pub(crate) fn matches(st: &State, dir: &Path, driver: &str) -> bool {
    if let Some(o) = override_of(&st.tree, dir) {
        return o == driver;
    }
    let Some(id) = ids(&st.tree, dir) else {
        return false;
    };
    if st
        .kernel
        .dyn_ids
        .get(driver)
        .is_some_and(|s| s.contains(&id))
    {
        return true;
    }
    if is_vfio_driver(driver) || driver == "pci-stub" {
        return false;
    }
    st.kernel
        .id_table
        .get(driver)
        .is_some_and(|s| s.contains(&id))
}

/// True for drivers that leave DMA to their user, so rule 24 does not stop them.
fn manages_dma(driver: &str) -> bool {
    is_vfio_driver(driver) || driver == "pci-stub" || driver == "pcieport"
}

fn parse_addr(st: &State, value: &[u8]) -> Option<(String, PathBuf)> {
    let a = text_value(value);
    let d = device_dir(&st.tree, &a)?;
    Some((addr_of(&d), d))
}

/// Rules 4–6: keep the value up to the first newline (and NUL); empty clears to `(null)`.
/// The binding never changes here.
pub(crate) fn store_override(st: &mut State, dev: &Path, value: &[u8]) -> io::Result<()> {
    let line = value.split(|b| *b == b'\n').next().unwrap_or_default();
    let kept = line.split(|b| *b == 0).next().unwrap_or_default();
    // The kernel refuses overrides of a page or more.
    if value.len() >= 4095 {
        return Err(err(errno::EINVAL));
    }
    let mut stored = if kept.is_empty() {
        NULL_OVERRIDE.as_bytes().to_vec()
    } else {
        kept.to_vec()
    };
    stored.push(b'\n');
    st.tree.put_file(&dev.join("driver_override"), stored);
    Ok(())
}

/// Rule 16: the enable counter.
pub(crate) fn store_enable(st: &mut State, dev: &Path, value: &[u8]) -> io::Result<()> {
    let v = parse_ulong(&text_value(value)).ok_or_else(|| err(errno::EINVAL))?;
    if bound_driver(&st.tree, dev).is_some() {
        return Err(err(errno::EBUSY));
    }
    let cur: i64 = st
        .tree
        .text(&dev.join("enable"))
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    if v != 0 {
        bump_enable(&mut st.tree, dev, 1);
    } else if cur > 0 {
        bump_enable(&mut st.tree, dev, -1);
    } else {
        return Err(err(errno::EIO));
    }
    Ok(())
}

/// `kstrtoul(buf, 0, …)`: decimal, `0x` hex or leading-0 octal.
pub(crate) fn parse_ulong(s: &str) -> Option<u64> {
    if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u64::from_str_radix(h, 16).ok()
    } else if s.len() > 1 && s.starts_with('0') {
        u64::from_str_radix(&s[1..], 8).ok()
    } else {
        s.parse().ok()
    }
}

/// Rule 18: only `1` resets; nothing visible changes.
pub(crate) fn store_reset(st: &mut State, dev: &Path, value: &[u8]) -> io::Result<()> {
    if parse_ulong(&text_value(value)) != Some(1) {
        return Err(err(errno::EINVAL));
    }
    let methods = st.tree.text(&dev.join("reset_method")).unwrap_or_default();
    if methods.is_empty() {
        return Err(err(errno::ENOTTY));
    }
    Ok(())
}

/// Rule 19: space-separated supported names, order kept, duplicates accepted; `\n` disables
/// every method (reads empty), `default` restores the probed list.
pub(crate) fn store_reset_method(st: &mut State, dev: &Path, value: &[u8]) -> io::Result<()> {
    let addr = addr_of(dev);
    let supported = st
        .kernel
        .reset_default
        .get(&addr)
        .cloned()
        .unwrap_or_default();
    let want = String::from_utf8_lossy(strip_newline(value))
        .trim()
        .to_string();
    let prefix = bound_driver(&st.tree, dev).unwrap_or_else(|| "pci".into());
    let p = dev.join("reset_method");
    if want.is_empty() {
        st.kernel.dmesg.push(format!(
            "{prefix} {addr}: All device reset methods disabled by user"
        ));
        st.tree.put_file(&p, Vec::new());
        return Ok(());
    }
    if want == "default" {
        st.tree.put_file(&p, format!("{supported}\n").into_bytes());
        return Ok(());
    }
    let names: Vec<&str> = want.split(' ').filter(|n| !n.is_empty()).collect();
    for n in &names {
        if !RESET_METHODS.contains(n) {
            st.kernel
                .dmesg
                .push(format!("{prefix} {addr}: Invalid reset method '{n}'"));
            return Err(err(errno::EINVAL));
        }
        if !supported.split(' ').any(|s| s == *n) {
            st.kernel
                .dmesg
                .push(format!("{prefix} {addr}: Unsupported reset method '{n}'"));
            return Err(err(errno::EINVAL));
        }
    }
    st.tree
        .put_file(&p, format!("{}\n", names.join(" ")).into_bytes());
    Ok(())
}

/// Probes the unbound function at `dir` (rules 10, 11, 24): the override's driver when set
/// and registered; otherwise the native driver, then any other matching driver.
/// `Ok(false)` when nothing bound.
fn probe(st: &mut State, dir: &Path, from_bind_attr: bool) -> io::Result<bool> {
    let addr = addr_of(dir);
    let candidates: Vec<String> = if let Some(o) = override_of(&st.tree, dir) {
        vec![o]
    } else {
        let mut c = Vec::new();
        if let Some(n) = st.kernel.native.get(&addr).cloned().flatten() {
            c.push(n);
        }
        let ids = ids(&st.tree, dir);
        for (d, set) in st.kernel.id_table.iter().chain(st.kernel.dyn_ids.iter()) {
            if ids.is_some_and(|i| set.contains(&i)) && !c.contains(d) {
                c.push(d.clone());
            }
        }
        c
    };
    for d in candidates {
        if !registered(&st.tree, &d) || !matches(st, dir, &d) {
            continue;
        }
        if !manages_dma(&d) && group_of(&st.tree, dir).is_some_and(|g| group_in_use(st, g)) {
            // Rule 24: the iommu core refuses a DMA-using driver on a claimed group.
            return Err(err(if from_bind_attr {
                errno::EBUSY
            } else {
                errno::EINVAL
            }));
        }
        if attach(st, dir, &d) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Probes a function that just appeared (a new VF), ignoring a refusal as the kernel's
/// automatic probe does.
pub(crate) fn probe_new(st: &mut State, dir: &Path) {
    let _ = probe(st, dir, false);
}

/// `/sys/bus/pci/drivers_probe` (rules 9–11, 24).
pub(crate) fn drivers_probe(st: &mut State, value: &[u8]) -> io::Result<()> {
    let (_, dir) = parse_addr(st, value).ok_or_else(|| err(errno::ENODEV))?;
    if bound_driver(&st.tree, &dir).is_some() {
        return Ok(());
    }
    probe(st, &dir, false).map(|_| ())
}

/// `drivers/X/bind` (rules 12, 13, 24).
pub(crate) fn driver_bind(st: &mut State, driver: &str, value: &[u8]) -> io::Result<()> {
    let (_, dir) = parse_addr(st, value).ok_or_else(|| err(errno::ENODEV))?;
    if !matches(st, &dir, driver) {
        return Err(err(errno::ENODEV));
    }
    if bound_driver(&st.tree, &dir).is_some() {
        return Err(err(errno::EBUSY));
    }
    if !manages_dma(driver) && group_of(&st.tree, &dir).is_some_and(|g| group_in_use(st, g)) {
        return Err(err(errno::EBUSY));
    }
    attach(st, &dir, driver);
    Ok(())
}

/// `drivers/X/unbind` and `ADDR/driver/unbind` (rules 7, 8, 25).
pub(crate) fn driver_unbind(st: &mut State, driver: &str, value: &[u8]) -> io::Result<()> {
    let (addr, dir) = parse_addr(st, value).ok_or_else(|| err(errno::ENODEV))?;
    if bound_driver(&st.tree, &dir).as_deref() != Some(driver) {
        return Err(err(errno::ENODEV));
    }
    if device_fd_open(st, &addr) {
        // Rule 25: the kernel blocks this write until the device fd is closed. The simulator
        // cannot block its only thread: it records the unbind, completes it when the fd
        // closes, and answers ETIMEDOUT now (see `PendingWrite`).
        st.kernel.dmesg.push(format!(
            "{driver} {addr}: No device request channel registered, blocked until released by user"
        ));
        if !st
            .kernel
            .pending
            .contains(&PendingWrite::Unbind(addr.clone()))
        {
            st.kernel.pending.push(PendingWrite::Unbind(addr));
        }
        return Err(err(errno::ETIMEDOUT));
    }
    unbind(st, &dir, &addr);
    Ok(())
}

/// Parses `new_id` / `remove_id` input: at least vendor and device, in hex.
fn parse_id(value: &[u8]) -> Option<(u16, u16)> {
    let t = text_value(value);
    let mut it = t.split_whitespace();
    let v = u32::from_str_radix(it.next()?, 16).ok()?;
    let d = u32::from_str_radix(it.next()?, 16).ok()?;
    for rest in it {
        u64::from_str_radix(rest.trim_start_matches("0x"), 16).ok()?;
    }
    Some((u16::try_from(v).ok()?, u16::try_from(d).ok()?))
}

/// `drivers/X/new_id` (rule 14): binds every unbound function with that id at once.
pub(crate) fn new_id(st: &mut State, driver: &str, value: &[u8]) -> io::Result<()> {
    let id = parse_id(value).ok_or_else(|| err(errno::EINVAL))?;
    let set = st.kernel.dyn_ids.entry(driver.to_string()).or_default();
    if !set.insert(id) {
        return Err(err(errno::EEXIST));
    }
    for (_, dir) in all_devices(&st.tree) {
        if bound_driver(&st.tree, &dir).is_some()
            || ids(&st.tree, &dir) != Some(id)
            || !matches(st, &dir, driver)
        {
            continue;
        }
        if !manages_dma(driver) && group_of(&st.tree, &dir).is_some_and(|g| group_in_use(st, g)) {
            continue;
        }
        attach(st, &dir, driver);
    }
    Ok(())
}

/// `drivers/X/remove_id` (rule 15): bound functions stay bound.
pub(crate) fn remove_id(st: &mut State, driver: &str, value: &[u8]) -> io::Result<()> {
    let id = parse_id(value).ok_or_else(|| err(errno::EINVAL))?;
    let removed = st
        .kernel
        .dyn_ids
        .get_mut(driver)
        .is_some_and(|s| s.remove(&id));
    if removed {
        Ok(())
    } else {
        Err(err(errno::ENODEV))
    }
}

/// Probes every unbound function whose override names `driver` (a driver just registered:
/// rule 35).
pub(crate) fn attach_overrides(st: &mut State, driver: &str) {
    for (_, dir) in all_devices(&st.tree) {
        if bound_driver(&st.tree, &dir).is_none()
            && override_of(&st.tree, &dir).as_deref() == Some(driver)
        {
            // A claimed group refuses only DMA-using drivers; ignore that refusal here as
            // the kernel's driver_attach does.
            let _ = probe(st, &dir, false);
        }
    }
}
