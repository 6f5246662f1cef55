//! Checks that the kernel did what a step asked (rules 30–32 of kernel-sysfs-semantics.md),
//! and what it produced.

use std::path::{Path, PathBuf};

use vm_device_host::PciAddress;

use super::MdevError;
use crate::host::HostOps;
use crate::plan::Check;

/// A state the kernel must be in after a step.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Expectation {
    /// `/sys/bus/mdev/devices/UUID` exists, its `mdev_type` is `type_id` and its IOMMU group
    /// has a `/dev/vfio/N` node.
    MdevActive {
        /// The device.
        uuid: String,
        /// Its type.
        type_id: String,
    },
    /// `/sys/bus/mdev/devices/UUID` is gone.
    MdevGone {
        /// The device.
        uuid: String,
    },
    /// `sriov_numvfs` reads `count` and `virtfn0..count-1` exist, each with an IOMMU group.
    Vfs {
        /// The physical function's sysfs directory.
        pf_dir: PathBuf,
        /// Expected VF count.
        count: u32,
    },
    /// `nvidia/current_vgpu_type` of the VF reads `type_id` (0 = none).
    NvidiaType {
        /// The VF's sysfs directory.
        vf_dir: PathBuf,
        /// Expected type.
        type_id: u32,
    },
}

fn mdev_dir(uuid: &str) -> PathBuf {
    PathBuf::from(format!("/sys/bus/mdev/devices/{uuid}"))
}

impl Expectation {
    /// One line for people.
    pub fn describe(&self) -> String {
        match self {
            Expectation::MdevActive { uuid, type_id } => format!(
                "/sys/bus/mdev/devices/{uuid} exists with mdev_type {type_id} and its /dev/vfio group"
            ),
            Expectation::MdevGone { uuid } => format!("/sys/bus/mdev/devices/{uuid} is gone"),
            Expectation::Vfs { pf_dir, count } => format!(
                "{}/sriov_numvfs = {count} with virtfn0..{} and their IOMMU groups",
                pf_dir.display(),
                count.saturating_sub(1)
            ),
            Expectation::NvidiaType { vf_dir, type_id } => format!(
                "{}/nvidia/current_vgpu_type = {type_id}",
                vf_dir.display()
            ),
        }
    }

    /// The plan checks that prove it.
    pub fn checks(&self) -> Vec<Check> {
        match self {
            Expectation::MdevActive { uuid, type_id } => vec![
                Check::Exists {
                    path: mdev_dir(uuid),
                },
                Check::LinkName {
                    path: mdev_dir(uuid).join("mdev_type"),
                    name: Some(type_id.clone()),
                },
                Check::VfioGroupOf {
                    device: mdev_dir(uuid),
                },
            ],
            Expectation::MdevGone { uuid } => vec![Check::LinkName {
                path: mdev_dir(uuid),
                name: None,
            }],
            Expectation::Vfs { pf_dir, count } => {
                let mut v = vec![Check::Content {
                    path: pf_dir.join("sriov_numvfs"),
                    value: count.to_string(),
                }];
                for i in 0..*count {
                    v.push(Check::Exists {
                        path: pf_dir.join(format!("virtfn{i}/iommu_group")),
                    });
                }
                v.push(Check::LinkName {
                    path: pf_dir.join(format!("virtfn{count}")),
                    name: None,
                });
                v
            }
            Expectation::NvidiaType { vf_dir, type_id } => vec![Check::Content {
                path: vf_dir.join("nvidia/current_vgpu_type"),
                value: type_id.to_string(),
            }],
        }
    }
}

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
