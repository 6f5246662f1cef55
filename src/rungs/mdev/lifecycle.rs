//! Create and remove shared GPU slices: mdevs (write a UUID to `create`, `1` to `remove`)
//! and NVIDIA vendor-VFIO vGPUs (write the type id to a VF's `current_vgpu_type`, `0` to
//! clear it). Planning is pure (inventory in, plan out); [`apply`] runs a plan.

use std::path::{Path, PathBuf};

use vm_device_host::PciAddress;

use super::persist::{config_path, MdevctlConfig, StartMode};
use super::plan::{execute, Action, Check, Expectation, MdevPlan};
use super::types::{choose, Choice, TypeRequest};
use super::{ids, MdevError, Verified};
use crate::host::HostOps;
use crate::inventory::HostInventory;

/// Where the UUID of a new mdev comes from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum UuidSource {
    /// A fresh random UUID (v4).
    #[default]
    Random,
    /// This UUID (`--mdev-uuid`).
    Given(String),
    /// Derived from a VM name and device index (`--vm-name`, `--index`): UUID v5, stable.
    Vm {
        /// VM name.
        name: String,
        /// Device index within the VM.
        index: u32,
    },
}

/// A request to create one shared slice.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CreateRequest {
    /// Type, parent and NUMA preference.
    pub ty: TypeRequest,
    /// UUID source (mdev only; vendor-VFIO vGPUs are named by their VF).
    pub uuid: UuidSource,
    /// Write an mdevctl definition.
    pub persist: Option<Persist>,
}

/// `--persist`: an mdevctl definition under a config root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Persist {
    /// `auto` or `manual`.
    pub start: StartMode,
    /// Root under which `etc/mdevctl.d` lies (`/` on a real host).
    pub config_root: PathBuf,
}

/// A planned change, ready to print or apply.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Planned {
    /// What was chosen.
    pub choice: Choice,
    /// The device it makes or removes: the mdev UUID, or the VF address.
    pub device: String,
    /// Its sysfs directory once it exists.
    pub sysfs_path: PathBuf,
    /// The steps and what they must produce.
    pub plan: MdevPlan,
}

fn create_path(parent: &str, type_id: &str) -> PathBuf {
    PathBuf::from(format!(
        "/sys/class/mdev_bus/{parent}/mdev_supported_types/{type_id}/create"
    ))
}

fn mdev_dir(uuid: &str) -> PathBuf {
    PathBuf::from(format!("/sys/bus/mdev/devices/{uuid}"))
}

fn pci_dir(addr: &PciAddress) -> PathBuf {
    PathBuf::from(format!("/sys/bus/pci/devices/{addr}"))
}

/// Plans the creation of one slice on `inv`.
pub fn plan_create(inv: &HostInventory, req: &CreateRequest) -> Result<Planned, MdevError> {
    // Check the UUID before choosing, so a bad --mdev-uuid is reported as such.
    let uuid = match &req.uuid {
        UuidSource::Random => ids::random(),
        UuidSource::Given(s) => ids::parse(s)?,
        UuidSource::Vm { name, index } => ids::for_vm(name, *index),
    };
    let uuid = ids::sysfs_name(&uuid);
    let choice = choose(inv, &req.ty)?;
    match &choice {
        Choice::Mdev {
            parent, type_id, ..
        } => {
            // Rule 27: a UUID used by any mdev of any parent is refused with EEXIST; say so
            // before touching the host.
            if let Some(d) = inv.mdev_devices.iter().find(|d| d.uuid == uuid) {
                return Err(MdevError::UuidInUse {
                    uuid,
                    existing_type: d.type_id.clone().unwrap_or_else(|| "unknown".into()),
                });
            }
            let mut plan = MdevPlan::new(
                &format!("create mediated device {uuid} ({type_id} on {parent})"),
                &format!("mdev-{parent}"),
            );
            plan.origin(Check::LinkName {
                path: mdev_dir(&uuid),
                name: None,
            });
            plan.push(
                Action::Write {
                    path: create_path(parent, type_id),
                    value: uuid.clone(),
                },
                Some(Action::Write {
                    path: mdev_dir(&uuid).join("remove"),
                    value: "1".into(),
                }),
                &uuid,
                &format!("create a {type_id} mediated device on {parent}"),
            );
            plan.expect(
                Expectation::MdevActive {
                    uuid: uuid.clone(),
                    type_id: type_id.clone(),
                },
                &uuid,
                "the kernel made the device, its type link and its VFIO group",
            );
            if let Some(persist) = &req.persist {
                let file = persist.config_root.join(
                    config_path(parent, &uuid)
                        .strip_prefix("/")
                        .unwrap_or(Path::new("")),
                );
                plan.push(
                    Action::WriteFile {
                        path: file.clone(),
                        contents: MdevctlConfig::new(type_id, persist.start).to_json(),
                    },
                    Some(Action::RemoveFile { path: file }),
                    &uuid,
                    "keep the device across reboots (mdevctl definition)",
                );
            }
            Ok(Planned {
                sysfs_path: mdev_dir(&uuid),
                device: uuid,
                choice,
                plan,
            })
        }
        Choice::NvidiaVfio {
            vf, type_id, stale, ..
        } => {
            if req.persist.is_some() {
                return Err(MdevError::Persist {
                    path: PathBuf::from(super::persist::MDEVCTL_DIR),
                    detail: "NVIDIA vendor-VFIO vGPUs have no mdev bus, so mdevctl cannot keep them: configure them at boot with your distribution's vGPU service instead of --persist".into(),
                });
            }
            let attr = pci_dir(vf).join("nvidia/current_vgpu_type");
            let dev = vf.to_string();
            let mut plan = MdevPlan::new(
                &format!("give VF {vf} vGPU type {type_id}"),
                &format!("vgpu-{vf}"),
            );
            plan.origin(Check::Content {
                path: attr.clone(),
                value: stale.unwrap_or(0).to_string(),
            });
            if let Some(old) = stale {
                plan.push(
                    Action::Write {
                        path: attr.clone(),
                        value: "0".into(),
                    },
                    Some(Action::Write {
                        path: attr.clone(),
                        value: old.to_string(),
                    }),
                    &dev,
                    &format!("clear the stale vGPU type {old} the VF still carries"),
                );
                plan.expect(
                    Expectation::NvidiaType {
                        vf_dir: pci_dir(vf),
                        type_id: 0,
                    },
                    &dev,
                    "the VF is free",
                );
            }
            plan.push(
                Action::Write {
                    path: attr.clone(),
                    value: type_id.to_string(),
                },
                Some(Action::Write {
                    path: attr,
                    value: "0".into(),
                }),
                &dev,
                &format!("give {vf} vGPU type {type_id}"),
            );
            plan.expect(
                Expectation::NvidiaType {
                    vf_dir: pci_dir(vf),
                    type_id: *type_id,
                },
                &dev,
                "the VF carries the type",
            );
            Ok(Planned {
                sysfs_path: pci_dir(vf),
                device: dev,
                choice,
                plan,
            })
        }
    }
}

/// Plans the removal of an mdev (by UUID) or of a VF's vendor-VFIO vGPU (by VF address).
pub fn plan_remove(inv: &HostInventory, device: &str) -> Result<Planned, MdevError> {
    if let Ok(vf) = device.parse::<PciAddress>() {
        let f = inv
            .function(&vf)
            .ok_or_else(|| MdevError::NoSuchDevice(device.to_string()))?;
        let nv = f.nvidia_vgpu.as_ref().ok_or_else(|| MdevError::Sriov {
            pf: device.to_string(),
            detail: "not an NVIDIA vendor-VFIO virtual function (no nvidia/current_vgpu_type)"
                .into(),
        })?;
        let cur = nv.current.ok_or_else(|| {
            MdevError::NoSuchDevice(format!("{device} (its current_vgpu_type is already 0)"))
        })?;
        let attr = pci_dir(&vf).join("nvidia/current_vgpu_type");
        let mut plan = MdevPlan::new(
            &format!("clear vGPU type {cur} from VF {vf}"),
            &format!("vgpu-{vf}"),
        );
        plan.origin(Check::Content {
            path: attr.clone(),
            value: cur.to_string(),
        });
        plan.push(
            Action::Write {
                path: attr.clone(),
                value: "0".into(),
            },
            Some(Action::Write {
                path: attr,
                value: cur.to_string(),
            }),
            device,
            &format!("clear vGPU type {cur} from {vf}"),
        );
        plan.expect(
            Expectation::NvidiaType {
                vf_dir: pci_dir(&vf),
                type_id: 0,
            },
            device,
            "the VF is free",
        );
        return Ok(Planned {
            choice: Choice::NvidiaVfio {
                pf: f.physfn.unwrap_or(vf),
                vf,
                type_id: cur,
                stale: None,
            },
            device: vf.to_string(),
            sysfs_path: pci_dir(&vf),
            plan,
        });
    }
    let uuid = ids::sysfs_name(&ids::parse(device)?);
    let d = inv
        .mdev_devices
        .iter()
        .find(|d| d.uuid == uuid)
        .ok_or_else(|| MdevError::NoSuchDevice(uuid.clone()))?;
    let type_id = d.type_id.clone().ok_or_else(|| MdevError::Verify {
        step: format!("read {}/mdev_type", mdev_dir(&uuid).display()),
        what: "the device has no mdev_type link, so it could not be re-created on undo".into(),
    })?;
    let parent = inv.mdev_parents.iter().find(|p| {
        p.name == d.parent
            || p.sysfs_path
                .file_name()
                .is_some_and(|n| n == d.parent.as_str())
    });
    let mdev_type = super::MdevType::classify(parent.and_then(|p| p.driver.as_deref()), &type_id);
    let parent_name = parent
        .map(|p| p.name.clone())
        .unwrap_or_else(|| d.parent.clone());
    let mut plan = MdevPlan::new(
        &format!("remove mediated device {uuid} ({type_id} on {parent_name})"),
        &format!("mdev-{parent_name}"),
    );
    plan.origin(Check::LinkName {
        path: mdev_dir(&uuid).join("mdev_type"),
        name: Some(type_id.clone()),
    });
    plan.push(
        Action::Write {
            path: mdev_dir(&uuid).join("remove"),
            value: "1".into(),
        },
        Some(Action::Write {
            path: create_path(&parent_name, &type_id),
            value: uuid.clone(),
        }),
        &uuid,
        &format!("remove the {type_id} mediated device from {parent_name}"),
    );
    plan.expect(
        Expectation::MdevGone { uuid: uuid.clone() },
        &uuid,
        "the kernel removed the device, its group and /dev/vfio node",
    );
    Ok(Planned {
        choice: Choice::Mdev {
            parent: parent_name,
            parent_pci: parent.and_then(|p| p.pci_address),
            type_id,
            mdev_type,
        },
        device: uuid.clone(),
        sysfs_path: mdev_dir(&uuid),
        plan,
    })
}

/// Plans `sriov_numvfs` = `count` on `pf` (0 first when changing a non-zero count, as the
/// kernel requires), with checks of the `virtfnN` links and VF groups.
pub fn plan_sriov(inv: &HostInventory, pf: &PciAddress, count: u32) -> Result<MdevPlan, MdevError> {
    let f = inv.function(pf).ok_or_else(|| MdevError::ParentNotFound {
        parent: pf.to_string(),
        known: inv
            .functions
            .iter()
            .filter(|f| f.sriov.is_some())
            .map(|f| f.address.to_string())
            .collect(),
    })?;
    let s = f.sriov.as_ref().ok_or_else(|| MdevError::Sriov {
        pf: pf.to_string(),
        detail: "this function has no SR-IOV capability (no sriov_totalvfs); give the physical function of an SR-IOV GPU".into(),
    })?;
    if count > s.total_vfs {
        return Err(MdevError::Sriov {
            pf: pf.to_string(),
            detail: format!(
                "asked for {count} virtual functions but sriov_totalvfs is {}",
                s.total_vfs
            ),
        });
    }
    let current = s.num_vfs;
    let mut plan = MdevPlan::new(
        &format!("set {pf} to {count} virtual functions"),
        &format!("sriov-{pf}"),
    );
    plan.origin(Check::Content {
        path: pci_dir(pf).join("sriov_numvfs"),
        value: current.to_string(),
    });
    if current == count {
        return Ok(plan);
    }
    if current != 0 {
        // VFs that carry guests' devices must not vanish under them.
        for vf in &s.vfs {
            let busy = inv
                .function(vf)
                .and_then(|v| v.nvidia_vgpu.as_ref())
                .and_then(|n| n.current)
                .map(|t| format!("carries vGPU type {t}"))
                .or_else(|| {
                    let n = vf.to_string();
                    inv.mdev_devices
                        .iter()
                        .any(|d| d.parent == n)
                        .then(|| "parents mediated devices".to_string())
                })
                .or_else(|| {
                    inv.function(vf)
                        .and_then(|v| v.driver.as_deref())
                        .filter(|d| *d == "vfio-pci")
                        .map(|_| "is bound to vfio-pci (a VM may use it)".to_string())
                });
            if let Some(why) = busy {
                return Err(MdevError::Sriov {
                    pf: pf.to_string(),
                    detail: format!(
                        "virtual function {vf} {why}: free it before changing sriov_numvfs"
                    ),
                });
            }
        }
    }
    let dir = pci_dir(pf);
    let attr = dir.join("sriov_numvfs");
    let dev = pf.to_string();
    if current != 0 {
        plan.push(
            Action::Write {
                path: attr.clone(),
                value: "0".into(),
            },
            Some(Action::Write {
                path: attr.clone(),
                value: current.to_string(),
            }),
            &dev,
            &format!("disable the {current} current virtual functions (the kernel refuses N → M without 0 between)"),
        );
        plan.expect(
            Expectation::Vfs {
                pf_dir: dir.clone(),
                count: 0,
            },
            &dev,
            "the old virtual functions are gone",
        );
    }
    if count != 0 {
        plan.push(
            Action::Write {
                path: attr.clone(),
                value: count.to_string(),
            },
            Some(Action::Write {
                path: attr,
                value: "0".into(),
            }),
            &dev,
            &format!("enable {count} virtual functions"),
        );
        plan.expect(
            Expectation::Vfs { pf_dir: dir, count },
            &dev,
            "the kernel made virtfn0.. and their IOMMU groups",
        );
    }
    Ok(plan)
}

/// Where an apply keeps its journal and lock.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApplyOptions {
    /// State directory (`/run/vm-device`, see [`crate::plan::default_state_dir`]); `None`
    /// uses a scratch directory that is removed afterwards (simulations, tests).
    pub state_dir: Option<PathBuf>,
}

/// Applies `planned` on `host`, undoing on failure.
pub fn apply(
    host: &dyn HostOps,
    planned: &Planned,
    opts: &ApplyOptions,
) -> Result<Vec<Verified>, MdevError> {
    execute(host, &planned.plan, opts)
}

/// Scans `host`, plans and applies a creation.
pub fn create(
    host: &dyn HostOps,
    req: &CreateRequest,
    opts: &ApplyOptions,
) -> Result<(Planned, Vec<Verified>), MdevError> {
    let inv = HostInventory::scan(host);
    let planned = plan_create(&inv, req)?;
    let v = apply(host, &planned, opts)?;
    Ok((planned, v))
}

/// Scans `host`, plans and applies a removal.
pub fn remove(
    host: &dyn HostOps,
    device: &str,
    opts: &ApplyOptions,
) -> Result<(Planned, Vec<Verified>), MdevError> {
    let inv = HostInventory::scan(host);
    let planned = plan_remove(&inv, device)?;
    let v = apply(host, &planned, opts)?;
    Ok((planned, v))
}

/// Scans `host`, plans and applies `sriov_numvfs` = `count`.
pub fn set_num_vfs(
    host: &dyn HostOps,
    pf: &PciAddress,
    count: u32,
    opts: &ApplyOptions,
) -> Result<(MdevPlan, Vec<Verified>), MdevError> {
    let inv = HostInventory::scan(host);
    let plan = plan_sriov(&inv, pf, count)?;
    let v = execute(host, &plan, opts)?;
    Ok((plan, v))
}

/// The file an mdevctl definition of `uuid` on `parent` lands in under `config_root`.
pub fn mdevctl_file(config_root: &Path, parent: &str, uuid: &str) -> PathBuf {
    config_root
        .join(super::persist::MDEVCTL_DIR.trim_start_matches('/'))
        .join(parent)
        .join(uuid)
}

/// The creation request that realizes a mediated-rung candidate: an mdev type on its parent,
/// or a vendor-VFIO type on its VF. `None` for targets this module does not create: a VF
/// (bound to vfio-pci by the passthrough machinery) and a PF without VFs ([`plan_sriov`]
/// first).
pub fn request_for_target(
    target: &crate::ladder::Target,
    uuid: UuidSource,
) -> Option<CreateRequest> {
    use crate::ladder::Target;
    let (wanted, parent) = match target {
        Target::MdevType {
            parent, type_id, ..
        } => (type_id.clone(), parent.clone()),
        Target::NvidiaVgpu { vf, type_id, .. } => (format!("nvidia-{type_id}"), vf.to_string()),
        _ => return None,
    };
    Some(CreateRequest {
        ty: TypeRequest {
            wanted,
            parent: Some(parent),
            numa_node: None,
        },
        uuid,
        persist: None,
    })
}
