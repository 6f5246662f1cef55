//! Persistent definitions in mdevctl's format, so `mdevctl list --defined` and mdevctl's
//! udev autostart see the devices vm-device created with `--persist`.
//!
//! One JSON file per device at `/etc/mdevctl.d/PARENT/UUID`, keys in mdevctl's order
//! (`mdev_type`, `start`, `attrs`), pretty-printed with two-space indentation and no trailing
//! newline, as mdevctl itself writes them.

use std::collections::BTreeMap;
use std::path::PathBuf;

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
