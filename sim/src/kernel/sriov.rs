//! SR-IOV: `sriov_numvfs` and `sriov_drivers_autoprobe` on a physical function.
//!
//! Not measured on the lab kernel (its devices have no SR-IOV); the behaviour follows the
//! 6.1 source of `drivers/pci/iov.c` (`sriov_numvfs_store`): `> sriov_totalvfs` → `ERANGE`;
//! the same count again → success, nothing changes; a new non-zero count while VFs are
//! enabled → `EBUSY` (disable first); a PF without a driver → `ENOENT` ("Driver does not
//! support SRIOV configuration via sysfs"). VF addresses come from the PF's routing id plus
//! `sriov_offset` + i × `sriov_stride` (1 and 1 when the fixture lacks them); each VF gets
//! the PF's ids (device id from `sriov_vf_device` when present), `physfn`, its own IOMMU
//! group (lowest free number, the PF group's `type`; none when the PF has no group), `reset_method` `flr` (every VF must
//! support FLR), and is probed at once when `sriov_drivers_autoprobe` is 1.

use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use vm_device_host::PciAddress;

use super::{
    device_fd_open, err, errno, group_of, lowest_free_group, nvidia, pci, sync_vfio_node,
    text_value,
};
use crate::State;

fn num(st: &State, p: &Path) -> Option<u64> {
    st.tree.text(p).and_then(|t| pci::parse_ulong(&t))
}

/// The VFs of the PF at `pf`: `(index, address, canonical dir)` in index order.
pub(crate) fn vfs(st: &State, pf: &Path) -> Vec<(u32, String, PathBuf)> {
    let mut out: Vec<(u32, String, PathBuf)> = st
        .tree
        .list(pf)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|n| {
            let i: u32 = n.strip_prefix("virtfn")?.parse().ok()?;
            let d = st.tree.resolve(&pf.join(&n), true).ok()?;
            let a = d.file_name()?.to_string_lossy().into_owned();
            Some((i, a, d))
        })
        .collect();
    out.sort();
    out
}

/// `sriov_drivers_autoprobe`: `0` or `1`.
pub(crate) fn store_autoprobe(st: &mut State, dev: &Path, value: &[u8]) -> io::Result<()> {
    let v = match text_value(value).as_str() {
        "0" | "n" | "N" | "off" => 0,
        "1" | "y" | "Y" | "on" => 1,
        _ => return Err(err(errno::EINVAL)),
    };
    st.tree.put_file(
        &dev.join("sriov_drivers_autoprobe"),
        format!("{v}\n").into_bytes(),
    );
    Ok(())
}

/// `sriov_numvfs`.
pub(crate) fn store_numvfs(st: &mut State, pf: &Path, value: &[u8]) -> io::Result<()> {
    let n = text_value(value)
        .parse::<u16>()
        .map_err(|_| err(errno::EINVAL))? as u64;
    let total = num(st, &pf.join("sriov_totalvfs")).unwrap_or(0);
    if n > total {
        return Err(err(errno::ERANGE));
    }
    let cur = num(st, &pf.join("sriov_numvfs")).unwrap_or(0);
    if n == cur {
        return Ok(());
    }
    let addr = pf
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    if pci::bound_driver(&st.tree, pf).is_none() {
        st.kernel.dmesg.push(format!(
            "pci {addr}: Driver does not support SRIOV configuration via sysfs"
        ));
        return Err(err(errno::ENOENT));
    }
    if n == 0 {
        nvidia::learn_pf(st, pf);
        let vfs = vfs(st, pf);
        if vfs.iter().any(|(_, a, _)| device_fd_open(st, a)) {
            return Err(err(errno::EBUSY));
        }
        for (i, a, d) in vfs {
            remove_vf(st, pf, i, &a, &d);
        }
    } else {
        if cur != 0 {
            st.kernel.dmesg.push(format!(
                "pci {addr}: {cur} VFs already enabled. Disable before enabling {n} VFs"
            ));
            return Err(err(errno::EBUSY));
        }
        let base = PciAddress::from_str(&addr).map_err(|_| err(errno::EINVAL))?;
        let offset = num(st, &pf.join("sriov_offset")).unwrap_or(1);
        let stride = num(st, &pf.join("sriov_stride")).unwrap_or(1);
        let rid =
            (u64::from(base.bus) << 8) | (u64::from(base.device) << 3) | u64::from(base.function);
        for i in 0..n {
            let r = rid + offset + i * stride;
            if r > 0xffff {
                return Err(err(errno::ERANGE));
            }
            let vf = PciAddress::new(
                base.domain,
                (r >> 8) as u8,
                ((r >> 3) & 0x1f) as u8,
                (r & 7) as u8,
            )
            .ok_or_else(|| err(errno::EINVAL))?;
            add_vf(st, pf, i as u32, &vf.to_string());
        }
        nvidia::on_vfs_changed(st, pf);
    }
    st.tree
        .put_file(&pf.join("sriov_numvfs"), format!("{n}\n").into_bytes());
    Ok(())
}

fn add_vf(st: &mut State, pf: &Path, i: u32, addr: &str) {
    let dir = pf.parent().unwrap_or(Path::new("/sys/devices")).join(addr);
    let t = &mut st.tree;
    t.ensure_dir(&dir);
    for f in [
        "vendor",
        "subsystem_vendor",
        "subsystem_device",
        "class",
        "revision",
        "numa_node",
    ] {
        if let Ok(b) = t.read(&pf.join(f)) {
            t.put_file(&dir.join(f), b);
        }
    }
    let dev_id = t
        .read(&pf.join("sriov_vf_device"))
        .ok()
        .map(|b| {
            let s = String::from_utf8_lossy(&b).trim().to_string();
            format!("0x{}\n", s.trim_start_matches("0x"))
        })
        .map(String::into_bytes)
        .or_else(|| t.read(&pf.join("device")).ok())
        .unwrap_or_default();
    t.put_file(&dir.join("device"), dev_id);
    t.put_file(&dir.join("driver_override"), b"(null)\n".to_vec());
    t.put_file(&dir.join("enable"), b"0\n".to_vec());
    t.put_file(&dir.join("reset_method"), b"flr\n".to_vec());
    t.put_link(&dir.join("physfn"), pf);
    t.put_link(&dir.join("subsystem"), Path::new("/sys/bus/pci"));
    t.put_link(&pf.join(format!("virtfn{i}")), &dir);
    t.put_link(&Path::new("/sys/bus/pci/devices").join(addr), &dir);
    // With the IOMMU off the PF has no group, and neither do its VFs.
    if let Some(pf_group) = group_of(t, pf) {
        let gtype = t
            .read(&PathBuf::from(format!(
                "/sys/kernel/iommu_groups/{pf_group}/type"
            )))
            .unwrap_or_else(|_| b"DMA\n".to_vec());
        let g = lowest_free_group(t);
        let gdir = PathBuf::from(format!("/sys/kernel/iommu_groups/{g}"));
        t.put_link(&gdir.join("devices").join(addr), &dir);
        t.put_file(&gdir.join("type"), gtype);
        t.put_link(&dir.join("iommu_group"), &gdir);
    }
    st.kernel.native.insert(addr.to_string(), None);
    st.kernel
        .reset_default
        .insert(addr.to_string(), "flr".to_string());
    let autoprobe = num(st, &pf.join("sriov_drivers_autoprobe")).unwrap_or(1) != 0;
    if autoprobe {
        pci::probe_new(st, &dir);
    }
}

fn remove_vf(st: &mut State, pf: &Path, i: u32, addr: &str, dir: &Path) {
    pci::unbind(st, dir, addr);
    let g = group_of(&st.tree, dir);
    st.tree.remove(dir);
    st.tree.remove(&pf.join(format!("virtfn{i}")));
    st.tree
        .remove(&Path::new("/sys/bus/pci/devices").join(addr));
    if let Some(g) = g {
        let gdir = PathBuf::from(format!("/sys/kernel/iommu_groups/{g}"));
        st.tree.remove(&gdir.join("devices").join(addr));
        let empty = st
            .tree
            .list(&gdir.join("devices"))
            .map(|l| l.is_empty())
            .unwrap_or(true);
        if empty {
            st.tree.remove_pruned(&gdir);
        }
        sync_vfio_node(&mut st.tree, &mut st.kernel, g);
    }
    st.kernel.native.remove(addr);
    st.kernel.reset_default.remove(addr);
}
