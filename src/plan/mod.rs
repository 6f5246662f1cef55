//! Plans of host changes, their crash-safe application, journals and locks.
//!
//! A [`Plan`] is the exact list of host changes a command will make — sysfs writes and module
//! loads — each [`Step`] with the [`Action`] that undoes it, plus checks that the kernel did
//! what was asked. Building a plan reads the host and changes nothing, so it can be printed
//! (`--dry-run`, `--json`). The [`Executor`] applies it step by step, recording each step and
//! its inverse in a [`Journal`] on disk *before* the step runs, and undoes the completed steps
//! in reverse order when one fails. A process that dies mid-plan (or holds a prepared device
//! when it is killed) leaves its journal behind; [`restore_dead`] replays those.
//!
//! The journal and lock files are vm-device's own state, not host access: they live under a
//! state directory (`/run/vm-device` by default) and are written with `std::fs`; every change
//! to the host, mdevctl definitions included, goes through [`HostOps`].

mod apply;
mod executor;
mod journal;
mod lock;
mod outcome;
mod replay;
mod state;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use vm_device_host::{HostError, HostOps};

pub use apply::PlanLock;
pub use executor::{
    run_action, step_delay, ApplyError, Executor, StepError, UndoFailure, UndoReport,
    STEP_DELAY_ENV,
};
pub use journal::{
    list_journals, restore_dead, restore_dead_in, Journal, JournalState, JournalStep, Owner,
    OwnerStatus, RestoreOutcome, RestoreReport, StepStatus,
};
pub use lock::{GroupLock, LockError};
pub use outcome::ExitKind;
pub use replay::ReplayScope;
pub use state::{valid_key, StateDir, StateError};

/// The default state directory (journals and locks).
pub(crate) const DEFAULT_STATE_DIR: &str = "/run/vm-device";

/// The state directory: `VM_STATE_DIR` when set, else `DEFAULT_STATE_DIR`.
pub fn default_state_dir() -> PathBuf {
    match std::env::var_os("VM_STATE_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(DEFAULT_STATE_DIR),
    }
}

/// A condition on the host, read back after a change (or after an undo).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "check", rename_all = "snake_case")]
pub enum Check {
    /// The link at `path` exists and its target's last component is `name`; with `name`
    /// `None`, the link is absent (a `driver` link of an unbound device).
    LinkName {
        /// The link (`/sys/bus/pci/devices/ADDR/driver`).
        path: PathBuf,
        /// Expected last component (`vfio-pci`), or `None` for "no link".
        name: Option<String>,
    },
    /// `path` exists (`/dev/vfio/7`).
    Exists {
        /// The path.
        path: PathBuf,
    },
    /// The attribute at `path` reads `value` (trailing newline ignored).
    Content {
        /// The attribute.
        path: PathBuf,
        /// Expected text.
        value: String,
    },
    /// The device at `device` has an `iommu_group` link and the group's `/dev/vfio/N` node
    /// exists (an mdev's group number is chosen by the kernel at creation).
    VfioGroupOf {
        /// The device's sysfs directory (`/sys/bus/mdev/devices/UUID`).
        device: PathBuf,
    },
}

impl Check {
    /// Reads the host and returns what was found when the condition does not hold.
    pub(crate) fn evaluate(&self, host: &dyn HostOps) -> Result<(), String> {
        match self {
            Check::LinkName { path, name } => {
                let found = match host.read_link(path) {
                    Ok(t) if host.exists(path) => {
                        t.file_name().map(|n| n.to_string_lossy().into_owned())
                    }
                    Ok(_) => None,
                    Err(e) if e.is_not_found() => None,
                    Err(e) => return Err(format!("cannot read: {e}")),
                };
                if found == *name {
                    Ok(())
                } else {
                    Err(match found {
                        Some(f) => format!("points to `{f}`"),
                        None => "is absent".to_string(),
                    })
                }
            }
            Check::Exists { path } => {
                if host.exists(path) {
                    Ok(())
                } else {
                    Err("does not exist".to_string())
                }
            }
            Check::Content { path, value } => match host.read_attr(path) {
                Ok(v) if v == *value => Ok(()),
                Ok(v) => Err(format!("reads `{v}`")),
                Err(e) => Err(format!("cannot read: {e}")),
            },
            Check::VfioGroupOf { device } => {
                let group = host
                    .link_name(&device.join("iommu_group"))
                    .map_err(|e| format!("has no IOMMU group ({e})"))?;
                let node = PathBuf::from(format!("/dev/vfio/{group}"));
                if host.exists(&node) {
                    Ok(())
                } else {
                    Err(format!(
                        "is in group {group} but {} is missing",
                        node.display()
                    ))
                }
            }
        }
    }

    /// The path the check reads.
    pub fn path(&self) -> &Path {
        match self {
            Check::LinkName { path, .. } | Check::Exists { path } | Check::Content { path, .. } => {
                path
            }
            Check::VfioGroupOf { device } => device,
        }
    }

    /// What must hold, in words.
    pub(crate) fn expectation(&self) -> String {
        match self {
            Check::LinkName {
                path,
                name: Some(n),
            } => format!("{} -> {n}", path.display()),
            Check::LinkName { path, name: None } => format!("{} absent", path.display()),
            Check::Exists { path } => format!("{} exists", path.display()),
            Check::Content { path, value } => format!("{} = {value}", path.display()),
            Check::VfioGroupOf { device } => {
                format!("{}/iommu_group with its /dev/vfio node", device.display())
            }
        }
    }
}

/// One host change, or a check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Action {
    /// One `write(2)` of `value` to a sysfs attribute (mdev `create`/`remove` are writes too).
    Write {
        /// Absolute kernel path.
        path: PathBuf,
        /// The bytes, as text (`vfio-pci`, `0000:01:00.0`, `\n` to clear an override).
        value: String,
    },
    /// `modprobe NAME` (never undone: unloading could pull devices from other users).
    LoadModule {
        /// Module name.
        name: String,
    },
    /// Read back a condition; fails the step when it does not hold.
    Verify(Check),
    /// Create a host configuration file that must not exist yet (an mdevctl definition,
    /// `ROOT/etc/mdevctl.d/PARENT/UUID`), through the host's file operations: `path` is the
    /// config root joined with the definition's place, and nothing below the root is followed
    /// as a link.
    WriteFile {
        /// The file.
        path: PathBuf,
        /// Its contents.
        contents: String,
    },
    /// Remove a host configuration file (`ROOT/etc/mdevctl.d/PARENT/UUID`), and its
    /// directory when that is left empty.
    RemoveFile {
        /// The file.
        path: PathBuf,
    },
}

impl Action {
    /// Runs the action on `host`.
    pub fn run(&self, host: &dyn HostOps) -> Result<(), StepError> {
        match self {
            Action::Write { path, value } => host
                .write_attr(path, value.as_bytes())
                .map_err(StepError::Host),
            Action::LoadModule { name } => host.load_module(name).map_err(StepError::Host),
            Action::Verify(check) => check.evaluate(host).map_err(|found| StepError::Verify {
                expected: check.expectation(),
                found,
            }),
            Action::WriteFile { path, contents } => {
                let (root, rel) = config_file(path).map_err(StepError::Host)?;
                let dir = rel.parent().unwrap_or(Path::new(""));
                // A directory this step makes is this step's to take back when it fails (a
                // failed step has no undo of its own).
                let made_dir = host.kind(&root.join(dir)).is_none();
                host.create_dir(&root, dir).map_err(StepError::Host)?;
                let written = host.write_file(&root, &rel, contents.as_bytes());
                if written.is_err() && made_dir {
                    let _ = host.remove_dir(&root, dir);
                }
                written.map_err(StepError::Host)
            }
            Action::RemoveFile { path } => {
                let (root, rel) = config_file(path).map_err(StepError::Host)?;
                host.remove_file(&root, &rel).map_err(StepError::Host)?;
                // An empty parent directory means "no definitions for this parent" to mdevctl.
                if let Some(dir) = rel.parent() {
                    let _ = host.remove_dir(&root, dir);
                }
                Ok(())
            }
        }
    }

    /// True when what this action would do already holds on `host` (an undo step someone
    /// did by hand): see the `replay` module for the kinds it knows; `false` for others.
    pub fn holds(&self, host: &dyn HostOps) -> bool {
        replay::already_holds(self, host)
    }

    /// True for actions that change the host.
    pub fn changes_host(&self) -> bool {
        !matches!(self, Action::Verify(_))
    }

    /// One line for people (`echo vfio-pci > …/driver_override`).
    pub fn describe(&self) -> String {
        match self {
            Action::Write { path, value } => {
                let shown = match value.as_str() {
                    "\n" => "''".to_string(),
                    v => v.escape_debug().to_string(),
                };
                format!("echo {shown} > {}", path.display())
            }
            Action::LoadModule { name } => format!("modprobe {name}"),
            Action::Verify(c) => format!("check {}", c.expectation()),
            Action::WriteFile { path, .. } => format!("create {}", path.display()),
            Action::RemoveFile { path } => format!("rm {}", path.display()),
        }
    }
}

/// The config root and the place below it of an mdevctl definition's path
/// (`ROOT/etc/mdevctl.d/PARENT/UUID`: the only configuration files plans write). Any other
/// path is refused (`EINVAL`) before the host is touched.
pub fn config_file(path: &Path) -> Result<(PathBuf, PathBuf), HostError> {
    let names: Vec<_> = path.iter().collect();
    let n = names.len();
    let plain = |s: &std::ffi::OsStr| s != "." && s != ".." && s != "/" && !s.is_empty();
    if n >= 5
        && names[n - 4] == "etc"
        && names[n - 3] == "mdevctl.d"
        && plain(names[n - 2])
        && plain(names[n - 1])
    {
        let root: PathBuf = names[..n - 4].iter().collect();
        let rel: PathBuf = names[n - 4..].iter().collect();
        return Ok((root, rel));
    }
    Err(HostError::io(
        "check",
        path,
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not an mdevctl definition (ROOT/etc/mdevctl.d/PARENT/UUID)",
        ),
    ))
}

/// One planned change with its inverse and the reason for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// What to do.
    pub action: Action,
    /// What undoes it (`None`: nothing to undo — a check, or a module load).
    pub inverse: Option<Action>,
    /// The device it concerns (a PCI address, an mdev UUID, a module name).
    pub device: String,
    /// Why, in one phrase.
    pub why: String,
}

impl Step {
    /// A step with an inverse.
    pub fn new(
        action: Action,
        inverse: Option<Action>,
        device: impl Into<String>,
        why: impl Into<String>,
    ) -> Self {
        Self {
            action,
            inverse,
            device: device.into(),
            why: why.into(),
        }
    }
}

/// A list of steps and the checks that prove an undo left the host as it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// What the plan does (`prepare 0000:01:00.0 for passthrough`).
    pub subject: String,
    /// The journal and lock key (`group-7`).
    pub key: String,
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// Conditions that hold before the plan and must hold again after a full undo
    /// (original drivers and overrides).
    pub origin: Vec<Check>,
}

impl Plan {
    /// The steps that change the host.
    pub fn changes(&self) -> usize {
        self.steps
            .iter()
            .filter(|s| s.action.changes_host())
            .count()
    }

    /// The plan as text: one numbered line per step, with its inverse.
    pub fn to_text(&self) -> String {
        let mut out = format!("Plan: {}\n", self.subject);
        if self.changes() == 0 {
            out.push_str("  nothing to change on the host\n");
        }
        for (i, s) in self.steps.iter().enumerate() {
            out.push_str(&format!(
                "  {:>2}. [{}] {}  ({})\n",
                i + 1,
                s.device,
                s.action.describe(),
                s.why
            ));
            if let Some(inv) = &s.inverse {
                out.push_str(&format!("      undo: {}\n", inv.describe()));
            }
        }
        out
    }
}
