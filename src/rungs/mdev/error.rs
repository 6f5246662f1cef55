//! `MdevError`: what went wrong creating or removing a shared GPU slice, and what to do.

use std::path::PathBuf;

use crate::host::HostError;

/// The symbolic name of an errno (`ENOSPC`), or `errno N` for one this table does not know.
pub fn errno_name(errno: i32) -> String {
    let name = match errno {
        1 => "EPERM",
        2 => "ENOENT",
        5 => "EIO",
        11 => "EAGAIN",
        12 => "ENOMEM",
        13 => "EACCES",
        16 => "EBUSY",
        17 => "EEXIST",
        19 => "ENODEV",
        22 => "EINVAL",
        28 => "ENOSPC",
        34 => "ERANGE",
        87 => "EUSERS",
        95 => "EOPNOTSUPP",
        110 => "ETIMEDOUT",
        _ => return format!("errno {errno}"),
    };
    name.to_string()
}

/// What the user can do when the kernel refused a write with `errno` on `path`.
fn refusal_remedy(errno: i32, path: &str) -> String {
    match errno {
        28 | 87 => "the parent has no capacity left for this type: remove an unused mediated device (`vm-cli gpu mdev-remove UUID`) or pick a type with room (`vm-cli gpu mdev-types`)".into(),
        17 => "that UUID is already in use by a mediated device: give another --mdev-uuid, or remove the existing one first".into(),
        22 if path.ends_with("/create") => "the kernel rejected the UUID or the type's settings: a UUID must be 8-4-4-4-12 hex; NVIDIA parents also refuse mixing vGPU types on one GPU".into(),
        22 => "the kernel rejected the value written: check the type id and the device's state".into(),
        16 => "the device is busy: a VM or another process holds it; stop it first".into(),
        2 => "the attribute is gone: the device or its parent disappeared (module unloaded, device removed); rescan with `vm-cli gpu mdev-types`".into(),
        13 | 1 => "run as root (sysfs writes need CAP_SYS_ADMIN)".into(),
        34 => "the number is out of range: see sriov_totalvfs".into(),
        _ => "see the kernel log (`dmesg`) for the driver's message".into(),
    }
}

/// One error enum for the mediated rung. Each variant names the device or path and the
/// remedy.
#[derive(Debug, thiserror::Error)]
pub enum MdevError {
    /// No parent (mdev_bus entry or SR-IOV PF) by that name.
    #[error("no mdev parent `{parent}` on this host; parents here: {}", list_or_none(.known))]
    ParentNotFound {
        /// What the user gave.
        parent: String,
        /// Parents that exist.
        known: Vec<String>,
    },
    /// The vendor module that publishes the GPU's mdev types is not loaded.
    #[error("{device} offers no mdev types because module {module} is not loaded; run `sudo modprobe {module}`")]
    ModuleNotLoaded {
        /// GPU or parent.
        device: String,
        /// Module name as modprobe takes it (`kvmgt`, `nvidia-vgpu-vfio`).
        module: String,
    },
    /// No type by that id or name.
    #[error("no mdev type `{wanted}` on {scope}{}; types here: {}", .did_you_mean.as_ref().map(|d| format!(" (did you mean `{d}`?)")).unwrap_or_default(), list_or_none(.known))]
    TypeNotFound {
        /// What the user gave.
        wanted: String,
        /// `this host` or the parent.
        scope: String,
        /// The closest known type, if any is close.
        did_you_mean: Option<String>,
        /// Every type in scope, as `id (name)`.
        known: Vec<String>,
    },
    /// The type exists but has no instance left anywhere in scope.
    #[error("type {type_id} has no instance left on {}; {hint}", .parents.join(", "))]
    NoInstances {
        /// The type.
        type_id: String,
        /// Parents that offer it.
        parents: Vec<String>,
        /// What to do: types that still have room, or NVIDIA's one-type-per-GPU rule.
        hint: String,
    },
    /// A UUID that is not canonical 8-4-4-4-12 hex.
    #[error("`{0}` is not a UUID (expected 8-4-4-4-12 hex digits, e.g. 5e5e5e5e-0000-4000-8000-000000000001)")]
    BadUuid(String),
    /// The UUID names an mdev that already exists.
    #[error("mediated device {uuid} already exists (type {existing_type}); give another --mdev-uuid or remove it first")]
    UuidInUse {
        /// The UUID.
        uuid: String,
        /// Its current type.
        existing_type: String,
    },
    /// No active mdev by that UUID.
    #[error("no active mediated device {0} (see /sys/bus/mdev/devices)")]
    NoSuchDevice(String),
    /// The kernel refused a write.
    #[error("the kernel refused `{value}` > {}: {} ({source}); {}", .path.display(), errno_name(*.errno), refusal_remedy(*.errno, &.path.to_string_lossy()))]
    Refused {
        /// The attribute.
        path: PathBuf,
        /// What was written.
        value: String,
        /// The errno.
        errno: i32,
        /// The host's error.
        #[source]
        source: HostError,
    },
    /// A host read or write failed without an errno to explain.
    #[error("host access failed: {0}")]
    Host(#[from] HostError),
    /// After a step, the kernel's state is not what the step should have produced.
    #[error("after {step}: {what}")]
    Verify {
        /// The step.
        step: String,
        /// What is missing or wrong.
        what: String,
    },
    /// The persistent definition could not be written or removed.
    #[error("mdevctl definition {}: {detail}", .path.display())]
    Persist {
        /// The file.
        path: PathBuf,
        /// What failed.
        detail: String,
    },
    /// Another process kept changing the same parent (or PF, or VF) longer than this one
    /// waits for it.
    #[error("{target} is busy: pid {holder} has been changing it for more than {waited_s} s (lock {}); wait for it to finish, then retry", .lock.display())]
    Busy {
        /// What is busy (`mdev parent mbochs`).
        target: String,
        /// The PID in the lock file.
        holder: String,
        /// How long this process waited.
        waited_s: u64,
        /// The lock file.
        lock: PathBuf,
    },
    /// The journal under the state directory could not be written or read.
    #[error("journal {}: {detail}", .path.display())]
    Journal {
        /// The journal file.
        path: PathBuf,
        /// What failed.
        detail: String,
    },
    /// SR-IOV request the PF cannot satisfy.
    #[error("{pf}: {detail}")]
    Sriov {
        /// The physical function.
        pf: String,
        /// What is wrong and what to do.
        detail: String,
    },
    /// A step failed; the steps before it were undone (or not, see `left`).
    #[error("step {index} ({what}) failed: {cause}; {}", undo_summary(.left))]
    StepFailed {
        /// 1-based step index.
        index: usize,
        /// The step's description.
        what: String,
        /// Why it failed.
        cause: Box<MdevError>,
        /// Undo steps that failed in turn (empty: the host is as before).
        left: Vec<String>,
    },
}

fn list_or_none(v: &[String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

fn undo_summary(left: &[String]) -> String {
    if left.is_empty() {
        "every earlier step was undone; the host is as before".into()
    } else {
        format!(
            "these undo steps failed and are left for you: {}",
            left.join("; ")
        )
    }
}

impl MdevError {
    /// A write refused by the host, keeping its errno when it has one.
    pub fn from_write(path: &std::path::Path, value: &str, e: HostError) -> Self {
        match e.raw_os_error() {
            Some(errno) => MdevError::Refused {
                path: path.to_path_buf(),
                value: value.trim_end().to_string(),
                errno,
                source: e,
            },
            None => MdevError::Host(e),
        }
    }

    /// The errno of a kernel refusal (directly or as the cause of a failed step).
    pub fn errno(&self) -> Option<i32> {
        match self {
            MdevError::Refused { errno, .. } => Some(*errno),
            MdevError::StepFailed { cause, .. } => cause.errno(),
            MdevError::Host(e) => e.raw_os_error(),
            _ => None,
        }
    }

    /// True when a failed step left changes behind that could not be undone.
    pub fn left_changes(&self) -> bool {
        matches!(self, MdevError::StepFailed { left, .. } if !left.is_empty())
    }

    /// True when the host was changed and then put back (a failed, fully undone plan).
    pub fn undone(&self) -> bool {
        matches!(self, MdevError::StepFailed { left, .. } if left.is_empty())
    }

    /// What kind of failure this is (README, "Exit codes"): a bad UUID is a usage error;
    /// an unknown type or parent, no instance left, a missing vendor module, a UUID in use,
    /// an SR-IOV refusal or a busy parent is unavailable; a failed step is undone or left
    /// changes; anything else is a failure.
    pub fn exit_kind(&self) -> crate::plan::ExitKind {
        use crate::plan::ExitKind;
        match self {
            MdevError::StepFailed { left, .. } => ExitKind::of_undo(left.is_empty()),
            MdevError::ParentNotFound { .. }
            | MdevError::ModuleNotLoaded { .. }
            | MdevError::TypeNotFound { .. }
            | MdevError::NoInstances { .. }
            | MdevError::NoSuchDevice(_)
            | MdevError::UuidInUse { .. }
            | MdevError::Sriov { .. }
            | MdevError::Busy { .. } => ExitKind::Unavailable,
            MdevError::BadUuid(_) => ExitKind::Usage,
            MdevError::Refused { .. }
            | MdevError::Host(_)
            | MdevError::Verify { .. }
            | MdevError::Persist { .. }
            | MdevError::Journal { .. } => ExitKind::Failed,
        }
    }
}
