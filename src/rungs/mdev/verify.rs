//! Checks that the kernel did what a step asked (rules 30–32 of kernel-sysfs-semantics.md),
//! and what it produced.

use std::path::{Path, PathBuf};

use vm_device_host::PciAddress;

use super::plan::Expectation;
use super::MdevError;
use crate::host::HostOps;

/// What a check found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Verified {
    /// An active mdev.
    Mdev {
        /// UUID.
        uuid: String,
        /// Type id.
        type_id: String,
        /// Its IOMMU group.
        iommu_group: u32,
        /// `/dev/vfio/N`.
        vfio_group: PathBuf,
    },
    /// An mdev that is gone.
    MdevGone {
        /// UUID.
        uuid: String,
    },
    /// The VFs of a PF.
    Vfs {
        /// `(VF, IOMMU group)` in `virtfnN` order.
        vfs: Vec<(PciAddress, u32)>,
    },
    /// The vGPU type of an NVIDIA VF.
    NvidiaType {
        /// VF directory.
        vf_dir: PathBuf,
        /// Type id (0 = none).
        type_id: u32,
    },
}

fn fail(e: &Expectation, what: impl Into<String>) -> MdevError {
    MdevError::Verify {
        step: e.describe(),
        what: what.into(),
    }
}

fn group_of(host: &dyn HostOps, dir: &Path) -> Option<u32> {
    host.link_name(&dir.join("iommu_group"))
        .ok()
        .and_then(|g| g.parse().ok())
}

/// Checks `e` on `host`.
pub fn check(host: &dyn HostOps, e: &Expectation) -> Result<Verified, MdevError> {
    match e {
        Expectation::MdevActive { uuid, type_id } => {
            let dir = PathBuf::from(format!("/sys/bus/mdev/devices/{uuid}"));
            if !host.is_dir(&dir) {
                return Err(fail(e, format!("{} does not exist", dir.display())));
            }
            let t = host
                .link_name(&dir.join("mdev_type"))
                .map_err(|err| fail(e, format!("mdev_type link unreadable: {err}")))?;
            if t != *type_id {
                return Err(fail(e, format!("mdev_type is {t}, not {type_id}")));
            }
            let g = group_of(host, &dir)
                .ok_or_else(|| fail(e, format!("{}/iommu_group is missing", dir.display())))?;
            let node = PathBuf::from(format!("/dev/vfio/{g}"));
            if !host.exists(&node) {
                return Err(fail(e, format!("{} is missing", node.display())));
            }
            Ok(Verified::Mdev {
                uuid: uuid.clone(),
                type_id: t,
                iommu_group: g,
                vfio_group: node,
            })
        }
        Expectation::MdevGone { uuid } => {
            let dir = PathBuf::from(format!("/sys/bus/mdev/devices/{uuid}"));
            if host.exists(&dir) {
                return Err(fail(e, format!("{} still exists", dir.display())));
            }
            Ok(Verified::MdevGone { uuid: uuid.clone() })
        }
        Expectation::Vfs { pf_dir, count } => {
            let n: u32 = host
                .read_attr(&pf_dir.join("sriov_numvfs"))
                .map_err(|err| fail(e, format!("sriov_numvfs unreadable: {err}")))?
                .trim()
                .parse()
                .map_err(|_| fail(e, "sriov_numvfs is not a number"))?;
            if n != *count {
                return Err(fail(e, format!("sriov_numvfs reads {n}")));
            }
            let mut vfs = Vec::new();
            for i in 0..*count {
                let link = pf_dir.join(format!("virtfn{i}"));
                let addr: PciAddress = host
                    .link_name(&link)
                    .ok()
                    .and_then(|a| a.parse().ok())
                    .ok_or_else(|| fail(e, format!("{} is missing", link.display())))?;
                let vf_dir = PathBuf::from(format!("/sys/bus/pci/devices/{addr}"));
                let g = group_of(host, &vf_dir)
                    .ok_or_else(|| fail(e, format!("{addr} has no IOMMU group")))?;
                vfs.push((addr, g));
            }
            // No VF beyond the count may be left over.
            let extra = pf_dir.join(format!("virtfn{count}"));
            if host.kind(&extra).is_some() {
                return Err(fail(e, format!("{} still exists", extra.display())));
            }
            Ok(Verified::Vfs { vfs })
        }
        Expectation::NvidiaType { vf_dir, type_id } => {
            let p = vf_dir.join("nvidia/current_vgpu_type");
            let cur: u32 = host
                .read_attr(&p)
                .map_err(|err| fail(e, format!("{} unreadable: {err}", p.display())))?
                .trim()
                .parse()
                .map_err(|_| fail(e, format!("{} is not a number", p.display())))?;
            if cur != *type_id {
                return Err(fail(e, format!("current_vgpu_type reads {cur}")));
            }
            Ok(Verified::NvidiaType {
                vf_dir: vf_dir.clone(),
                type_id: cur,
            })
        }
    }
}
