//! Errors of the manager.

use super::{Candidate, GpuMode};

/// What went wrong while scanning, selecting or initializing.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    /// No rung the user allowed has an available candidate.
    #[error("{}", no_backend_message(.requested, .rejected))]
    NoBackend {
        /// The rungs that were tried.
        requested: Vec<GpuMode>,
        /// Every candidate passed over, with its reason.
        rejected: Vec<Candidate>,
    },
    /// `select_*` or `initialize_selected` before `scan_backends`.
    #[error("no scan yet: call scan_backends() first")]
    NotScanned,
    /// `initialize_selected` before a selection.
    #[error(
        "no backend selected: call auto_select(), select_by_mode() or select_by_index() first"
    )]
    NothingSelected,
    /// `select_by_index` past the end of the listing.
    #[error(
        "no backend at index {index}: the listing has {len} entries (see print_available_backends)"
    )]
    BadIndex {
        /// Requested index.
        index: usize,
        /// Listing length.
        len: usize,
    },
    /// The backend chosen by index is unavailable.
    #[error("backend {index} ({mode} {device}) is unavailable: {reason}")]
    Unavailable {
        /// Index in the listing.
        index: usize,
        /// Its mode.
        mode: GpuMode,
        /// Its device.
        device: String,
        /// Why.
        reason: String,
    },
    /// The host could not be read.
    #[error(transparent)]
    Host(#[from] vm_device_host::HostError),
    /// Initializing the chosen backend failed.
    #[error("initializing {mode} failed: {message}")]
    Init {
        /// The rung.
        mode: GpuMode,
        /// What failed.
        message: String,
    },
}

impl ManagerError {
    /// What kind of failure this is (README, "Exit codes"): no available mode or an
    /// unavailable choice is unavailable; anything else is a failure.
    pub fn exit_kind(&self) -> crate::plan::ExitKind {
        use crate::plan::ExitKind;
        match self {
            ManagerError::NoBackend { .. } | ManagerError::Unavailable { .. } => {
                ExitKind::Unavailable
            }
            ManagerError::NotScanned
            | ManagerError::NothingSelected
            | ManagerError::BadIndex { .. }
            | ManagerError::Host(_)
            | ManagerError::Init { .. } => ExitKind::Failed,
        }
    }
}

fn no_backend_message(requested: &[GpuMode], rejected: &[Candidate]) -> String {
    let modes: Vec<&str> = requested.iter().map(|m| m.as_str()).collect();
    let mut s = format!("no GPU mode available (tried {})", modes.join(", "));
    for c in rejected {
        if let Some(r) = c.reason() {
            s.push_str(&format!(
                "\n  {} {}: {}",
                c.mode,
                c.device().unwrap_or_else(|| "-".into()),
                r.message
            ));
            if let Some(fix) = &r.remedy {
                s.push_str(&format!("\n    fix: {fix}"));
            }
        }
    }
    s
}
