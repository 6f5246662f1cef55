//! The DRA driver's checkpoint (`STATE/dra/checkpoint.json`): the claims it prepared, what
//! each device became on the host (journal keys, mdev UUID, VFIO group) and the CDI ids it
//! answered. A claim stays prepared while the agent restarts (its VM keeps running), so the
//! checkpoint is what lets a new agent answer a repeated prepare with the same devices,
//! unprepare a claim an earlier agent prepared, and go on publishing the held devices.
//!
//! It is written atomically (temporary file, `fsync`, rename) after every change. A file
//! that is not a regular file, is larger than [`MAX_BYTES`] or does not parse is refused with
//! its path: the agent does not start the DRA driver on a checkpoint it cannot trust, and
//! changes nothing.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::devices::DraDevice;

/// The largest checkpoint read (thousands of claims fit in far less).
pub const MAX_BYTES: u64 = 16 << 20;
/// The format version written.
pub const VERSION: u32 = 1;

/// One prepared device of a claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreparedDevice {
    /// The claim's request it serves.
    pub request: String,
    /// The pool (node).
    pub pool: String,
    /// The device as it was published when prepared (so it stays published while held).
    pub device: DraDevice,
    /// Journal keys of the host changes, in the order they were made (undone in reverse).
    pub journals: Vec<String>,
    /// The mdev created for it, if any.
    pub mdev_uuid: Option<String>,
    /// What the container gets (device nodes, environment).
    pub device_nodes: Vec<String>,
    /// Environment entries (`NAME=value`).
    pub env: Vec<String>,
    /// The CDI id answered to kubelet.
    pub cdi_id: String,
}

/// The journal keys of `devices`, in the order they were made.
pub fn journal_keys(devices: &[PreparedDevice]) -> Vec<String> {
    devices.iter().flat_map(|d| d.journals.clone()).collect()
}

/// One prepared claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreparedClaim {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Its devices.
    pub devices: Vec<PreparedDevice>,
}

/// The checkpoint: prepared claims by UID.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Format version ([`VERSION`]).
    pub version: u32,
    /// Claims by UID.
    pub claims: BTreeMap<String, PreparedClaim>,
}

/// A checkpoint that cannot be read or written.
#[derive(Debug, thiserror::Error)]
#[error("DRA checkpoint {}: {detail}", path.display())]
pub struct CheckpointError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong, and what to do.
    pub detail: String,
}

/// The checkpoint file under `state_dir`.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("dra").join("checkpoint.json")
}

impl Checkpoint {
    /// Every device held by a prepared claim.
    pub fn held(&self) -> Vec<DraDevice> {
        self.claims
            .values()
            .flat_map(|c| c.devices.iter().map(|d| d.device.clone()))
            .collect()
    }

    /// Reads the checkpoint of `state_dir`; none yet is an empty one.
    pub fn load(state_dir: &Path) -> Result<Checkpoint, CheckpointError> {
        let path = path(state_dir);
        let err = |detail: String| CheckpointError {
            path: path.clone(),
            detail,
        };
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Checkpoint::default()),
            Err(e) => {
                return Err(err(format!(
                    "cannot open it: {e} (a symbolic link is refused)"
                )))
            }
        };
        let meta = f.metadata().map_err(|e| err(e.to_string()))?;
        if !meta.is_file() {
            return Err(err(
                "not a regular file; move it away (claims it recorded must then be released with `vm-cli gpu restore`/`release`)".into(),
            ));
        }
        if meta.len() > MAX_BYTES {
            return Err(err(format!(
                "{} bytes, more than the {MAX_BYTES} a checkpoint may have; move it away",
                meta.len()
            )));
        }
        let mut text = String::new();
        std::io::Read::by_ref(&mut f)
            .take(MAX_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(|e| err(format!("cannot read it: {e}")))?;
        let cp: Checkpoint = serde_json::from_str(&text).map_err(|e| {
            err(format!(
                "not a checkpoint this agent wrote ({e}); move it away and release what it recorded with `vm-cli gpu restore`"
            ))
        })?;
        if cp.version != VERSION {
            return Err(err(format!(
                "format version {} (this agent reads {VERSION})",
                cp.version
            )));
        }
        for (uid, claim) in &cp.claims {
            for d in &claim.devices {
                if let Some(bad) = d.journals.iter().find(|k| !vm_device::plan::valid_key(k)) {
                    return Err(err(format!(
                        "claim {uid}: `{}` is not a journal key",
                        bad.escape_debug()
                    )));
                }
            }
        }
        Ok(cp)
    }

    /// Writes the checkpoint into `state_dir` (its `dra/` created 0700 if missing).
    pub fn save(&self, state_dir: &Path) -> Result<(), CheckpointError> {
        let path = path(state_dir);
        let err = |detail: String| CheckpointError {
            path: path.clone(),
            detail,
        };
        let dir = path.parent().unwrap_or(state_dir);
        {
            use std::os::unix::fs::DirBuilderExt;
            match std::fs::DirBuilder::new().mode(0o700).create(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(err(format!("cannot create {}: {e}", dir.display()))),
            }
        }
        let tmp = dir.join(".checkpoint.json.tmp");
        let mut cp = self.clone();
        cp.version = VERSION;
        let text = serde_json::to_vec_pretty(&cp).map_err(|e| err(e.to_string()))?;
        let write = || -> std::io::Result<()> {
            use std::os::unix::fs::OpenOptionsExt;
            let _ = std::fs::remove_file(&tmp);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(nix::libc::O_NOFOLLOW)
                .open(&tmp)?;
            f.write_all(&text)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|e| err(format!("cannot write it: {e}")))
    }
}
