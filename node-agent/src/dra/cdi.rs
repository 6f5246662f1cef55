//! CDI spec files (Container Device Interface, `cdiVersion` 0.6.0) for prepared claims: one
//! file per claim in the CDI directory (`/var/run/cdi`), one CDI device per prepared DRA
//! device, naming the device nodes the VM's container needs (`/dev/vfio/vfio`, the group's
//! `/dev/vfio/N`, `/dev/iommu` where the kernel has iommufd) and, in the environment, what the
//! device is (PCI addresses, mdev UUID, wgpu share). kubelet passes the CDI ids to the
//! container runtime, which applies the edits.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// The CDI kind of every device this driver writes (`vendor/class`).
pub const KIND: &str = "vm-device.io/gpu";
/// The CDI specification version written (device nodes with `path`, annotations).
pub const CDI_VERSION: &str = "0.6.0";

/// What one prepared device gives the container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Edits {
    /// Device nodes (host path = container path).
    pub device_nodes: Vec<String>,
    /// `NAME=value` environment entries.
    pub env: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Spec<'a> {
    cdi_version: &'a str,
    kind: &'a str,
    devices: Vec<SpecDevice>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SpecDevice {
    name: String,
    container_edits: ContainerEdits,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ContainerEdits {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    env: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    device_nodes: Vec<DeviceNode>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DeviceNode {
    path: String,
    permissions: &'static str,
}

/// The CDI device name of `device` prepared for claim `claim_uid` (unique per claim, so two
/// claims never share a name; CDI names allow letters, digits, `_`, `.`, `:` and `-`).
pub fn device_name(claim_uid: &str, device: &str) -> String {
    format!("{claim_uid}-{device}")
}

/// The fully qualified CDI id kubelet hands to the runtime.
pub fn device_id(claim_uid: &str, device: &str) -> String {
    format!("{KIND}={}", device_name(claim_uid, device))
}

/// The spec file of claim `claim_uid` in `cdi_dir`.
pub fn spec_path(cdi_dir: &Path, claim_uid: &str) -> PathBuf {
    cdi_dir.join(format!("vm-device.io-gpu_{claim_uid}.json"))
}

/// The spec (JSON) for claim `claim_uid`'s devices, each `(DRA device name, edits)`.
pub fn spec(claim_uid: &str, devices: &[(String, Edits)]) -> serde_json::Value {
    let spec = Spec {
        cdi_version: CDI_VERSION,
        kind: KIND,
        devices: devices
            .iter()
            .map(|(name, e)| SpecDevice {
                name: device_name(claim_uid, name),
                container_edits: ContainerEdits {
                    env: e.env.clone(),
                    device_nodes: e
                        .device_nodes
                        .iter()
                        .map(|p| DeviceNode {
                            path: p.clone(),
                            permissions: "rw",
                        })
                        .collect(),
                },
            })
            .collect(),
    };
    serde_json::to_value(spec).unwrap_or_default()
}

/// Writes claim `claim_uid`'s spec into `cdi_dir` (created if missing) atomically: a
/// runtime reading the directory sees the old file or the whole new one, never a part.
pub fn write(
    cdi_dir: &Path,
    claim_uid: &str,
    devices: &[(String, Edits)],
) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(cdi_dir)?;
    let path = spec_path(cdi_dir, claim_uid);
    let tmp = cdi_dir.join(format!(".vm-device.io-gpu_{claim_uid}.json.tmp"));
    let text = serde_json::to_vec_pretty(&spec(claim_uid, devices))
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&tmp)?;
        f.write_all(&text)?;
        f.write_all(b"\n")?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// Removes claim `claim_uid`'s spec; a missing file is not an error.
pub fn remove(cdi_dir: &Path, claim_uid: &str) -> std::io::Result<()> {
    match std::fs::remove_file(spec_path(cdi_dir, claim_uid)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// An environment variable name for a DRA device name: `VM_DEVICE_` and the name in upper
/// case with `-` as `_` (device names are DNS labels, so the result is a valid name).
pub fn env_name(device: &str) -> String {
    format!(
        "VM_DEVICE_{}",
        device.to_ascii_uppercase().replace('-', "_")
    )
}
