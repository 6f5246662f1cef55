//! Scenarios the real-kernel harness runs (on mbochs, mdpy and mtty in a QEMU guest) and the
//! simulator tests run on fixtures, so both are held to the same end states.

use std::collections::BTreeMap;

use uuid::Uuid;

use super::lifecycle::{self, ApplyOptions, CreateRequest, UuidSource};
use super::types::TypeRequest;
use super::{ids, MdevError, Verified};
use crate::host::HostOps;
use crate::inventory::HostInventory;

/// `available_instances` of every type of one parent.
pub type Counts = BTreeMap<String, u32>;

/// The counts of `parent`'s types now.
pub fn counts(host: &dyn HostOps, parent: &str) -> Counts {
    HostInventory::scan(host)
        .mdev_parents
        .iter()
        .filter(|p| p.name == parent)
        .flat_map(|p| p.types.iter())
        .map(|t| (t.id.clone(), t.available_instances.unwrap_or(0)))
        .collect()
}

/// What a create/remove round trip saw.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RoundTrip {
    /// Parent.
    pub parent: String,
    /// Type.
    pub type_id: String,
    /// The device's UUID.
    pub uuid: String,
    /// Its IOMMU group while it existed.
    pub iommu_group: u32,
    /// Counts before, with the device, and after removal.
    pub before: Counts,
    /// Counts while the device existed.
    pub during: Counts,
    /// Counts after removal.
    pub after: Counts,
}

impl RoundTrip {
    /// The invariants every kernel honours: the type lost at least one instance while the
    /// device existed, and every count is back afterwards.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        let b = self.before.get(&self.type_id).copied().unwrap_or(0);
        let d = self.during.get(&self.type_id).copied().unwrap_or(0);
        if d >= b {
            p.push(format!(
                "{}: available_instances {b} did not drop on create (reads {d})",
                self.type_id
            ));
        }
        if self.after != self.before {
            p.push(format!(
                "counts after removal {:?} differ from before {:?}",
                self.after, self.before
            ));
        }
        p
    }
}

/// Creates one `type_id` device on `parent` with `uuid`, checks it, removes it, checks it
/// is gone; returns what it saw. The device is removed even when a check fails.
pub fn round_trip(
    host: &dyn HostOps,
    parent: &str,
    type_id: &str,
    uuid: Uuid,
) -> Result<RoundTrip, MdevError> {
    let opts = ApplyOptions::default();
    let before = counts(host, parent);
    let req = CreateRequest {
        ty: TypeRequest {
            wanted: type_id.to_string(),
            parent: Some(parent.to_string()),
            numa_node: None,
        },
        uuid: UuidSource::Given(ids::sysfs_name(&uuid)),
        persist: None,
    };
    let (planned, verified) = lifecycle::create(host, &req, &opts)?;
    let during = counts(host, parent);
    let group = verified.iter().find_map(|v| match v {
        Verified::Mdev { iommu_group, .. } => Some(*iommu_group),
        _ => None,
    });
    lifecycle::remove(host, &planned.device, &opts)?;
    let after = counts(host, parent);
    Ok(RoundTrip {
        parent: parent.to_string(),
        type_id: type_id.to_string(),
        uuid: planned.device,
        iommu_group: group.ok_or_else(|| MdevError::Verify {
            step: "create".into(),
            what: "no IOMMU group was verified".into(),
        })?,
        before,
        during,
        after,
    })
}

/// What filling a type to capacity saw.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Exhaustion {
    /// Devices created before the refusal.
    pub created: u32,
    /// `available_instances` of the type before the first create.
    pub advertised: u32,
    /// The errno of the refusal when the kernel itself refused (`ENOSPC`, `EUSERS`); `None`
    /// when vm-device refused first because the type read 0.
    pub kernel_errno: Option<i32>,
    /// The refusal as vm-device reported it.
    pub refusal: String,
    /// Counts after every device was removed again (equal to the start on a sound kernel).
    pub after: Counts,
    /// Counts at the start.
    pub before: Counts,
}

/// Creates `type_id` devices on `parent` (UUIDs derived from `vm_name`) until refused, at
/// most `limit` + 1 tries, then removes them all.
pub fn exhaust(
    host: &dyn HostOps,
    parent: &str,
    type_id: &str,
    vm_name: &str,
    limit: u32,
) -> Result<Exhaustion, MdevError> {
    let opts = ApplyOptions::default();
    let before = counts(host, parent);
    let advertised = before.get(type_id).copied().unwrap_or(0);
    let mut made = Vec::new();
    let mut refusal = None;
    for i in 0..=limit {
        let req = CreateRequest {
            ty: TypeRequest {
                wanted: type_id.to_string(),
                parent: Some(parent.to_string()),
                numa_node: None,
            },
            uuid: UuidSource::Vm {
                name: vm_name.to_string(),
                index: i,
            },
            persist: None,
        };
        match lifecycle::create(host, &req, &opts) {
            Ok((p, _)) => made.push(p.device),
            Err(e) => {
                refusal = Some(e);
                break;
            }
        }
    }
    let mut cleanup_error = None;
    for uuid in made.iter().rev() {
        if let Err(e) = lifecycle::remove(host, uuid, &opts) {
            cleanup_error.get_or_insert(e);
        }
    }
    if let Some(e) = cleanup_error {
        return Err(e);
    }
    let refusal = refusal.ok_or_else(|| MdevError::Verify {
        step: format!("create {} × {type_id} on {parent}", limit + 1),
        what: "the parent never refused: its capacity is larger than the limit".into(),
    })?;
    Ok(Exhaustion {
        created: made.len() as u32,
        advertised,
        kernel_errno: refusal.errno(),
        refusal: refusal.to_string(),
        after: counts(host, parent),
        before,
    })
}

/// Round trip on the first type with room of every mdev parent, with UUIDs derived from
/// `vm_name`: what the harness runs on a kernel with mbochs, mdpy and mtty loaded.
pub fn round_trip_every_parent(
    host: &dyn HostOps,
    vm_name: &str,
) -> Vec<(String, Result<RoundTrip, MdevError>)> {
    let inv = HostInventory::scan(host);
    let mut out = Vec::new();
    for (i, p) in inv.mdev_parents.iter().enumerate() {
        let Some(t) = p
            .types
            .iter()
            .find(|t| t.available_instances.unwrap_or(0) > 0)
        else {
            continue;
        };
        let uuid = ids::for_vm(vm_name, i as u32);
        out.push((p.name.clone(), round_trip(host, &p.name, &t.id, uuid)));
    }
    out
}

/// Writes a fresh UUID straight to `parent`'s `type_id/create`, bypassing vm-device's own
/// checks, and returns the kernel's errno (`None`: it accepted, and the device was removed
/// again). The harness compares these answers (ENOSPC for mbochs and mtty, EUSERS for mdpy,
/// EEXIST for a used UUID) between the kernel and the simulator.
pub fn kernel_answer_to_create(
    host: &dyn HostOps,
    parent: &str,
    type_id: &str,
    uuid: Uuid,
) -> Result<Option<i32>, MdevError> {
    let path = std::path::PathBuf::from(format!(
        "/sys/class/mdev_bus/{parent}/mdev_supported_types/{type_id}/create"
    ));
    let name = ids::sysfs_name(&uuid);
    match host.write_attr(&path, name.as_bytes()) {
        Ok(()) => {
            let remove = std::path::PathBuf::from(format!("/sys/bus/mdev/devices/{name}/remove"));
            host.write_attr(&remove, b"1")
                .map_err(|e| MdevError::from_write(&remove, "1", e))?;
            Ok(None)
        }
        Err(e) => match e.raw_os_error() {
            Some(errno) => Ok(Some(errno)),
            None => Err(MdevError::Host(e)),
        },
    }
}
