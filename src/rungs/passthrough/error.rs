//! [`PassthroughError`]: what went wrong, on which device, and what to do.

use std::path::PathBuf;

use vm_device_host::{HostError, PciAddress};

use crate::ladder::Reason;
use crate::plan::{ApplyError, UndoReport};

/// A passthrough operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PassthroughError {
    /// Passthrough of this device is refused (not a GPU, boot display, shared group, …).
    #[error("{}", refusal_text(.device, .reasons))]
    Refused {
        /// The device asked for.
        device: PciAddress,
        /// Every reason, each with evidence and remedy.
        reasons: Vec<Reason>,
    },
    /// Another live process holds the device's IOMMU group.
    #[error("IOMMU group {group} of {device} is held by {holder}; wait for it to finish, or `vm-cli gpu release {device}` when it was prepared with `vm-cli gpu prepare`")]
    Busy {
        /// The device asked for.
        device: PciAddress,
        /// Its group.
        group: u32,
        /// Who holds it (`pid 4242 (vm-cli)`).
        holder: String,
    },
    /// Reading the host failed.
    #[error("{op} {device}: {source}")]
    Host {
        /// What was being done (`read`).
        op: &'static str,
        /// The device.
        device: PciAddress,
        /// The host's error (path and errno inside).
        #[source]
        source: HostError,
    },
    /// vm-device's own state (journal, lock) could not be used: not writable, not trusted,
    /// or a journal that is refused (another host's, or not vm-device's).
    #[error("state {}: {message}", path.display())]
    State {
        /// The file or directory.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// A step of the plan failed; the completed steps were undone (fully or not: see
    /// [`PassthroughError::undone_fully`]).
    #[error("prepare {device}: {}{}{}", .failure, remedy_text(.failure), undo_text(&.failure.undo))]
    StepFailed {
        /// The device asked for.
        device: PciAddress,
        /// The failed step, the kernel's error and the rollback.
        failure: Box<ApplyError>,
    },
    /// Giving devices back left something behind.
    #[error("release of IOMMU group {group}: could not restore everything:\n  {}\nfix the cause and run `vm-cli gpu restore`", report.leftovers().join("\n  "))]
    ReleaseIncomplete {
        /// The group.
        group: u32,
        /// What was and was not undone.
        report: Box<UndoReport>,
    },
    /// The journal of the device's IOMMU group does not list the device: the group number
    /// was reused (hot-plug, reboot) and the journal is about other devices.
    #[error("{device} is not in the journal of IOMMU group {group} ({}), which lists {}: refused (group numbers are reused after hot-plug or reboot); release one of those devices, or `vm-cli gpu restore`", journal.display(), if listed.is_empty() { "no device".to_string() } else { listed.join(", ") })]
    NotInJournal {
        /// The device asked for.
        device: PciAddress,
        /// Its group now.
        group: u32,
        /// The journal.
        journal: PathBuf,
        /// The devices the journal lists.
        listed: Vec<String>,
    },
    /// Nothing is prepared for this device.
    #[error("{device} is not prepared for passthrough (no journal for IOMMU group {group} under {})", state_dir.display())]
    NotPrepared {
        /// The device.
        device: PciAddress,
        /// Its group.
        group: u32,
        /// Where journals were looked for.
        state_dir: PathBuf,
    },
    /// A VFIO call failed after the device was prepared.
    #[error("VFIO {op}: {source}; {remedy}")]
    Vfio {
        /// The call and its object (`open /dev/vfio/7`, `VFIO_GROUP_GET_DEVICE_FD 0000:01:00.0`).
        op: String,
        /// The host's error.
        #[source]
        source: HostError,
        /// What to do.
        remedy: String,
    },
}

fn refusal_text(device: &PciAddress, reasons: &[Reason]) -> String {
    let mut s = format!("passthrough of {device} refused:");
    for r in reasons {
        s.push_str(&format!("\n  - {}", r.message));
        for e in &r.evidence {
            s.push_str(&format!("\n      evidence: {e}"));
        }
        if let Some(rem) = &r.remedy {
            s.push_str(&format!("\n      remedy: {rem}"));
        }
    }
    s
}

/// What to do about a failed step, from what it was and how it failed.
pub fn step_remedy(failure: &ApplyError) -> Option<String> {
    use crate::plan::{Action, Check, StepError};
    let errno = failure.error.errno();
    Some(match (&failure.step.action, &failure.error) {
        (Action::LoadModule { name }, _) => format!(
            "{name} is missing or would not load: check `modinfo {name}` and `dmesg`; install the kernel's module package (Debian/Ubuntu: linux-modules-extra-$(uname -r)) or a kernel built with CONFIG_VFIO_PCI and CONFIG_VFIO_IOMMU_TYPE1"
        ),
        (Action::Write { .. }, _) if matches!(errno, Some(1) | Some(13)) => {
            "writing sysfs needs root: run vm-cli with sudo".to_string()
        }
        (Action::Write { path, .. }, _) if errno == Some(110) => format!(
            "{} did not return: a process may hold the device's VFIO fd (`fuser /dev/vfio/*`) or the driver is stuck (`dmesg`)",
            path.display()
        ),
        (Action::Write { path, .. }, _)
            if errno == Some(16) && path.ends_with("unbind") =>
        {
            "the driver would not let go of the device: stop the programs using it and retry".to_string()
        }
        (Action::Verify(Check::LinkName { .. }), StepError::Verify { .. }) => {
            "vfio-pci did not claim the device: check that vfio-pci is loaded (`lsmod | grep vfio_pci`) and `dmesg`".to_string()
        }
        (Action::Verify(Check::Exists { path }), StepError::Verify { .. }) => format!(
            "{} did not appear: the IOMMU may be off or VFIO incomplete (`dmesg | grep -iE 'vfio|DMAR|AMD-Vi'`)",
            path.display()
        ),
        _ => return None,
    })
}

fn remedy_text(failure: &ApplyError) -> String {
    step_remedy(failure)
        .map(|r| format!(" — {r}"))
        .unwrap_or_default()
}

fn undo_text(u: &UndoReport) -> String {
    if u.complete() {
        format!(
            "; undone ({} step(s) reverted), the host is as it was",
            u.undone.len()
        )
    } else {
        format!(
            "; the undo left:\n  {}\nrun `vm-cli gpu restore` once the cause is fixed{}",
            u.leftovers().join("\n  "),
            u.journal_kept
                .as_ref()
                .map(|p| format!(" (journal {})", p.display()))
                .unwrap_or_default()
        )
    }
}

impl PassthroughError {
    /// True for refusals and a busy group: nothing was changed.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            PassthroughError::Refused { .. } | PassthroughError::Busy { .. }
        )
    }

    /// For a failed host change: `Some(true)` when it was undone fully, `Some(false)` when
    /// something is left; `None` for errors that changed nothing.
    pub fn undone_fully(&self) -> Option<bool> {
        match self {
            PassthroughError::StepFailed { failure, .. } => Some(failure.undo.complete()),
            PassthroughError::ReleaseIncomplete { .. } => Some(false),
            _ => None,
        }
    }

    /// What kind of failure this is (README, "Exit codes"): a refusal or a busy group is
    /// unavailable; a failed change is undone or left changes; anything else is a failure.
    pub fn exit_kind(&self) -> crate::plan::ExitKind {
        use crate::plan::ExitKind;
        if self.is_refusal() {
            return ExitKind::Unavailable;
        }
        self.undone_fully()
            .map_or(ExitKind::Failed, ExitKind::of_undo)
    }
}
