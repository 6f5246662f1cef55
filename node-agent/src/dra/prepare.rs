//! Preparing one DRA device for a claim, and giving it back, through vm-device's journaled
//! plans. A prepared device's journals are *detached*: the devices stay as prepared when the
//! agent exits or restarts (a VM uses them), `vm-cli gpu restore` leaves them alone, and
//! unprepare (this agent's, or a later one's from the checkpoint) undoes them by key. A
//! prepare interrupted before it detached is an ordinary attached journal of a dead
//! process: `vm-cli gpu restore` undoes it.

use std::path::{Path, PathBuf};

use vm_device::inventory::HostInventory;
use vm_device::plan::{PlanLock, ReplayScope};
use vm_device::rungs::mdev::{lifecycle, Choice, TypeRequest};
use vm_device::rungs::passthrough::{self, PrepareOptions};
use vm_passthrough::{HostOps, PciAddress};

use super::cdi::{self, Edits};
use super::devices::{DraDevice, DraKind};
use crate::setup::{apply_journaled, undo_left, LOCK_WAIT};

/// What preparing one device did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Done {
    /// Journal keys of the changes, oldest first.
    pub journals: Vec<String>,
    /// The mdev created, if any.
    pub mdev_uuid: Option<String>,
    /// What the container gets.
    pub edits: Edits,
}

/// Where and how devices are prepared.
#[derive(Debug, Clone)]
pub struct Preparer {
    /// Journals and locks.
    pub state_dir: PathBuf,
    /// The boot display may be passed through.
    pub allow_boot_vga: bool,
}

impl Preparer {
    /// Prepares `dev` on `host`: binds a GPU's group or a VF to vfio-pci, creates an mdev,
    /// sets a vendor-VFIO vGPU type and binds its VF; nothing for a wgpu share. A failure
    /// undoes this device's own changes before it returns.
    pub fn prepare(&self, host: &dyn HostOps, dev: &DraDevice) -> Result<Done, String> {
        let mut done = Done::default();
        let result = self.prepare_into(host, dev, &mut done);
        match result {
            Ok(()) => Ok(done),
            Err(why) => {
                let left = self.unprepare(host, &done.journals);
                if left.is_empty() {
                    Err(why)
                } else {
                    Err(format!("{why}; undoing it left: {}", left.join("; ")))
                }
            }
        }
    }

    fn prepare_into(
        &self,
        host: &dyn HostOps,
        dev: &DraDevice,
        done: &mut Done,
    ) -> Result<(), String> {
        let env = cdi::env_name(&dev.name);
        match &dev.kind {
            DraKind::Gpu { address, .. } | DraKind::Vf { vf: address, .. } => {
                let (group, functions) = self.bind(host, address, done)?;
                done.edits = vfio_edits(host, group);
                done.edits.env.push(format!("{env}={}", join(&functions)));
            }
            DraKind::Mdev {
                parent, type_id, ..
            } => {
                let planned = plan_create(host, type_id.clone(), parent.clone())?;
                let uuid = planned.device.clone();
                let key = format!("dra-mdev-{uuid}");
                let mut exec = apply_journaled(host, &planned.plan, &key, &self.state_dir)?;
                done.journals.push(key);
                exec.detach()
                    .map_err(|e| format!("detaching journal of mdev {uuid}: {e}"))?;
                drop(exec);
                done.mdev_uuid = Some(uuid.clone());
                let group = mdev_group(host, &uuid)?;
                done.edits = vfio_edits(host, group);
                done.edits.env.push(format!("{env}={uuid}"));
            }
            DraKind::NvidiaVgpu { vf, type_id } => {
                let planned = plan_create(host, format!("nvidia-{type_id}"), vf.to_string())?;
                if !matches!(planned.choice, Choice::NvidiaVfio { .. }) {
                    return Err(format!(
                        "vGPU type {type_id} on {vf} was planned as an mdev, not a vendor-VFIO type"
                    ));
                }
                let key = format!("dra-vgpu-{vf}");
                let mut exec = apply_journaled(host, &planned.plan, &key, &self.state_dir)?;
                done.journals.push(key);
                exec.detach()
                    .map_err(|e| format!("detaching journal of vGPU {vf}: {e}"))?;
                drop(exec);
                let (group, functions) = self.bind(host, vf, done)?;
                done.edits = vfio_edits(host, group);
                done.edits.env.push(format!("{env}={}", join(&functions)));
            }
            DraKind::Wgpu { share } => {
                done.edits.env.push(format!("{env}={share}"));
            }
        }
        Ok(())
    }

    /// Moves `addr`'s IOMMU group to vfio-pci (journaled, then detached); returns the group
    /// and the functions a VM gets.
    fn bind(
        &self,
        host: &dyn HostOps,
        addr: &PciAddress,
        done: &mut Done,
    ) -> Result<(u32, Vec<PciAddress>), String> {
        let opts = PrepareOptions {
            allow_boot_vga: self.allow_boot_vga,
            state_dir: self.state_dir.clone(),
        };
        let p = passthrough::prepare(host, addr, &opts).map_err(|e| e.to_string())?;
        let group = p.plan().group;
        let functions: Vec<PciAddress> = std::iter::once(*addr)
            .chain(
                p.plan()
                    .moved
                    .iter()
                    .map(|m| m.address)
                    .filter(|a| a != addr),
            )
            .collect();
        done.journals.push(passthrough::group_key(group));
        p.detach().map_err(|e| e.to_string())?;
        Ok((group, functions))
    }

    /// Undoes the journals `keys` (newest first). A journal already gone counts as undone.
    /// Returns what could not be given back (those journals stay, for a later unprepare or
    /// `vm-cli gpu release`).
    pub fn unprepare(&self, host: &dyn HostOps, keys: &[String]) -> Vec<String> {
        let mut left = Vec::new();
        for key in keys.iter().rev() {
            if let Err(why) = release_key(host, &self.state_dir, key) {
                left.push(format!("{key}: {why}"));
            }
        }
        left
    }
}

/// Gives back the (detached) journal of `key`.
fn release_key(host: &dyn HostOps, state_dir: &Path, key: &str) -> Result<(), String> {
    let lock = PlanLock::acquire(state_dir, key, LOCK_WAIT).map_err(|e| e.to_string())?;
    let journal = match lock.left_journal() {
        Ok(Some(j)) => j,
        Ok(None) => return Ok(()),
        Err(e) => return Err(format!("{}: {e}", lock.journal_path().display())),
    };
    journal.check_replayable(host, &ReplayScope::default())?;
    let path = lock.journal_path();
    let (_lock, report) = lock.reclaim(host, journal);
    let left = undo_left(&report, &path);
    if left.is_empty() {
        Ok(())
    } else {
        Err(left.join("; "))
    }
}

fn plan_create(
    host: &dyn HostOps,
    wanted: String,
    parent: String,
) -> Result<lifecycle::Planned, String> {
    let inv = HostInventory::scan(host);
    let req = lifecycle::CreateRequest {
        ty: TypeRequest {
            wanted,
            parent: Some(parent),
            numa_node: None,
        },
        uuid: lifecycle::UuidSource::Random,
        persist: None,
    };
    lifecycle::plan_create(&inv, &req).map_err(|e| e.to_string())
}

/// The IOMMU group of mdev `uuid` (its `iommu_group` link).
fn mdev_group(host: &dyn HostOps, uuid: &str) -> Result<u32, String> {
    let link = PathBuf::from(format!("/sys/bus/mdev/devices/{uuid}/iommu_group"));
    host.read_link(&link)
        .ok()
        .and_then(|t| t.file_name()?.to_str()?.parse().ok())
        .ok_or_else(|| {
            format!(
                "mdev {uuid} was created but {} names no IOMMU group (is vfio_mdev loaded?)",
                link.display()
            )
        })
}

/// The device nodes of VFIO group `group`: the container, the group, and `/dev/iommu` when
/// the kernel has iommufd.
fn vfio_edits(host: &dyn HostOps, group: u32) -> Edits {
    let mut nodes = vec!["/dev/vfio/vfio".to_string(), format!("/dev/vfio/{group}")];
    if host.exists(Path::new("/dev/iommu")) {
        nodes.push("/dev/iommu".to_string());
    }
    Edits {
        device_nodes: nodes,
        env: Vec::new(),
    }
}

fn join(a: &[PciAddress]) -> String {
    a.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}
