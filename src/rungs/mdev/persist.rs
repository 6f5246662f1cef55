//! Persistent definitions in mdevctl's format, so `mdevctl list --defined` and mdevctl's
//! udev autostart see the devices vm-device created with `--persist`.
//!
//! One JSON file per device at `/etc/mdevctl.d/PARENT/UUID`, keys in mdevctl's order
//! (`mdev_type`, `start`, `attrs`), pretty-printed with two-space indentation and no trailing
//! newline, as mdevctl itself writes them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::host::Sysfs;
use crate::inventory::{HostInventory, ScanWarning};

/// Where mdevctl keeps definitions, relative to the config root.
pub const MDEVCTL_DIR: &str = "/etc/mdevctl.d";

/// `start` of a definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartMode {
    /// Started by mdevctl when the parent appears (boot).
    Auto,
    /// Started only on request.
    Manual,
}

/// One mdevctl definition.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MdevctlConfig {
    /// Type id.
    pub mdev_type: String,
    /// `auto` or `manual`.
    pub start: StartMode,
    /// Attributes written after creation, in order; each a single-key object.
    #[serde(default)]
    pub attrs: Vec<BTreeMap<String, String>>,
}

impl MdevctlConfig {
    /// A definition without attributes.
    pub fn new(mdev_type: &str, start: StartMode) -> Self {
        MdevctlConfig {
            mdev_type: mdev_type.to_string(),
            start,
            attrs: Vec::new(),
        }
    }

    /// The file's bytes.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| {
            // Only strings and lists: serialization cannot fail; keep the reason visible.
            format!("{{\"error\": \"{e}\"}}")
        })
    }
}

/// `/etc/mdevctl.d/PARENT/UUID`.
pub fn config_path(parent: &str, uuid: &str) -> PathBuf {
    PathBuf::from(MDEVCTL_DIR).join(parent).join(uuid)
}

impl StartMode {
    /// `auto` or `manual`, as mdevctl writes it.
    pub fn name(self) -> &'static str {
        match self {
            StartMode::Auto => "auto",
            StartMode::Manual => "manual",
        }
    }
}

/// One mediated device: active (under `/sys/bus/mdev/devices`), defined in mdevctl's config,
/// or both.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeviceRow {
    /// UUID.
    pub uuid: String,
    /// Parent name (`0000:00:02.0`, `mbochs`).
    pub parent: String,
    /// Type id: the active device's, else the definition's.
    pub type_id: Option<String>,
    /// IOMMU group of the active device.
    pub iommu_group: Option<u32>,
    /// Whether it exists now.
    pub active: bool,
    /// `start` of its mdevctl definition; `None`: not defined.
    pub start: Option<StartMode>,
}

/// Definitions under `/etc/mdevctl.d/PARENT/UUID`, read through `host` (its files only:
/// any [`Sysfs`], `&dyn HostOps` included): (parent, uuid,
/// definition). mdevctl's own `scripts.d` (callouts, notifiers) is no parent and is
/// skipped. A missing directory is no definition; an entry whose name is not a UUID or
/// whose contents are not a definition is skipped with a warning naming the file.
pub fn read_definitions<H: Sysfs + ?Sized>(
    host: &H,
    warnings: &mut Vec<ScanWarning>,
) -> Vec<(String, String, MdevctlConfig)> {
    let mut out = Vec::new();
    let root = Path::new(MDEVCTL_DIR);
    let Ok(mut parents) = host.list_dir(root) else {
        return out;
    };
    parents.sort();
    // mdevctl's own callout and notifier scripts live beside the parents.
    for parent in parents.into_iter().filter(|p| p != "scripts.d") {
        let dir = root.join(&parent);
        let Ok(mut names) = host.list_dir(&dir) else {
            continue;
        };
        names.sort();
        for uuid in names {
            let path = dir.join(&uuid);
            let parsed = uuid::Uuid::parse_str(&uuid)
                .map_err(|_| "the file name is not a UUID".to_string())
                .and_then(|_| host.read(&path).map_err(|e| e.to_string()))
                .and_then(|b| {
                    serde_json::from_slice::<MdevctlConfig>(&b)
                        .map_err(|e| format!("not an mdevctl definition: {e}"))
                });
            match parsed {
                Ok(c) => out.push((parent.clone(), uuid, c)),
                Err(message) => warnings.push(ScanWarning { path, message }),
            }
        }
    }
    out
}

/// Active devices of `inv` and `definitions`, one row per UUID (active and defined merge),
/// sorted by parent then UUID.
pub fn device_rows(
    inv: &HostInventory,
    definitions: &[(String, String, MdevctlConfig)],
) -> Vec<DeviceRow> {
    let mut rows: Vec<DeviceRow> = inv
        .mdev_devices
        .iter()
        .map(|d| DeviceRow {
            uuid: d.uuid.clone(),
            parent: d.parent.clone(),
            type_id: d.type_id.clone(),
            iommu_group: d.iommu_group,
            active: true,
            start: None,
        })
        .collect();
    for (parent, uuid, c) in definitions {
        match rows
            .iter_mut()
            .find(|r| r.uuid.eq_ignore_ascii_case(uuid) && &r.parent == parent)
        {
            Some(r) => r.start = Some(c.start),
            None => rows.push(DeviceRow {
                uuid: uuid.clone(),
                parent: parent.clone(),
                type_id: Some(c.mdev_type.clone()),
                iommu_group: None,
                active: false,
                start: Some(c.start),
            }),
        }
    }
    rows.sort_by(|a, b| (&a.parent, &a.uuid).cmp(&(&b.parent, &b.uuid)));
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_mdevctls_layout_byte_for_byte() {
        let c = MdevctlConfig::new("i915-GVTg_V5_4", StartMode::Manual);
        assert_eq!(
            c.to_json(),
            "{\n  \"mdev_type\": \"i915-GVTg_V5_4\",\n  \"start\": \"manual\",\n  \"attrs\": []\n}"
        );
        let back: MdevctlConfig = serde_json::from_str(&c.to_json()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn reads_mdevctls_definition_without_attrs() {
        // mdevctl 1.x omits an empty `attrs`.
        let c: MdevctlConfig =
            serde_json::from_str("{\n  \"mdev_type\": \"nvidia-228\",\n  \"start\": \"auto\"\n}")
                .unwrap();
        assert_eq!(c, MdevctlConfig::new("nvidia-228", StartMode::Auto));
    }

    #[test]
    fn path_is_parent_then_uuid() {
        assert_eq!(
            config_path("0000:00:02.0", "5e5e5e5e-0000-4000-8000-000000000001"),
            PathBuf::from("/etc/mdevctl.d/0000:00:02.0/5e5e5e5e-0000-4000-8000-000000000001")
        );
    }
}
