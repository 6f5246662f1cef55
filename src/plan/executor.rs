//! Applies a plan step by step with a journal, and undoes it.

use std::io;

use vm_device_host::{HostError, HostOps};

use super::{Action, GroupLock, Journal, JournalState, JournalStep, Plan, Step, StepStatus};

/// `ETIMEDOUT`: a write that did not come back in time may still take effect.
const ETIMEDOUT: i32 = 110;
/// `EINTR`: an interrupted write may or may not have taken effect.
const EINTR: i32 = 4;

/// Why one step failed.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// The host refused the write or module load; the kernel's errno is inside.
    #[error("{0}")]
    Host(#[source] HostError),
    /// The change returned success but the host does not show it.
    #[error("expected {expected}, but it {found}")]
    Verify {
        /// What should hold.
        expected: String,
        /// What was found.
        found: String,
    },
    /// The journal could not be written, so the step was not run.
    #[error("journal {path}: {source}; the step was not run", path = .path.display())]
    Journal {
        /// The journal file.
        path: std::path::PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}

impl StepError {
    /// The errno, when the host gave one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            StepError::Host(h) => h.raw_os_error(),
            _ => None,
        }
    }

    /// True when the step may have taken effect although it reported failure: a timeout or
    /// an interruption, or a failure the kernel gave no errno for (the process being killed
    /// mid-call, a modprobe that died). A store method's errno means nothing changed.
    fn uncertain(&self) -> bool {
        match self {
            StepError::Host(_) => matches!(self.errno(), None | Some(ETIMEDOUT) | Some(EINTR)),
            StepError::Verify { .. } | StepError::Journal { .. } => false,
        }
    }
}

/// An inverse that could not be applied.
#[derive(Debug)]
pub struct UndoFailure {
    /// The step whose inverse failed.
    pub step: Step,
    /// The inverse's error.
    pub error: StepError,
}

/// The result of an undo.
#[derive(Debug, Default)]
pub struct UndoReport {
    /// Steps undone, in the order their inverses ran.
    pub undone: Vec<Step>,
    /// Steps whose undo already held (someone restored them by hand): not run again.
    pub skipped: Vec<Step>,
    /// Inverses that failed (their steps stay in the journal).
    pub failures: Vec<UndoFailure>,
    /// Original conditions that do not hold after the undo (`… driver -> bochs-drm: it is absent`).
    pub left: Vec<String>,
    /// The journal still on disk, when something is left to restore.
    pub journal_kept: Option<std::path::PathBuf>,
    /// A journal write or delete that failed.
    pub journal_error: Option<String>,
}

impl UndoReport {
    /// True when the host is back as it was.
    pub fn complete(&self) -> bool {
        self.failures.is_empty() && self.left.is_empty() && self.journal_error.is_none()
    }

    /// What is left, one line each, for error messages.
    pub(crate) fn leftovers(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .failures
            .iter()
            .map(|f| {
                format!(
                    "[{}] {} failed: {}",
                    f.step.device,
                    f.step
                        .inverse
                        .as_ref()
                        .map(|a| a.describe())
                        .unwrap_or_default(),
                    f.error
                )
            })
            .collect();
        out.extend(self.left.iter().cloned());
        if let Some(e) = &self.journal_error {
            out.push(e.clone());
        }
        out
    }
}

/// A step failed; the completed ones were undone as `undo` says.
#[derive(Debug)]
pub struct ApplyError {
    /// Index of the failed step (0-based).
    pub index: usize,
    /// The failed step.
    pub step: Step,
    /// Why it failed.
    pub error: StepError,
    /// The rollback.
    pub undo: UndoReport,
}

impl std::fmt::Display for ApplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "step {} on {} ({}: {}) failed: {}",
            self.index + 1,
            self.step.device,
            self.step.why,
            self.step.action.describe(),
            self.error
        )
    }
}

impl std::error::Error for ApplyError {}

/// Environment variable: milliseconds to pause after each host change of a plan (after its
/// journal entry is marked done), so a test can kill the process between two steps; unset,
/// empty, `0` or not a number means no pause. See [`step_delay`].
pub const STEP_DELAY_ENV: &str = "VM_DEVICE_STEP_DELAY_MS";

/// The pause [`STEP_DELAY_ENV`] asks for after each host change, if any (at most one minute).
/// For crash tests on a real kernel (`cargo xtask kernel-test`, scenario `crash-restore`):
/// the kill lands while the journal says exactly which steps took effect.
pub fn step_delay() -> Option<std::time::Duration> {
    let ms: u64 = std::env::var(STEP_DELAY_ENV).ok()?.trim().parse().ok()?;
    (ms > 0).then(|| std::time::Duration::from_millis(ms.min(60_000)))
}

/// Applies a plan with a journal, holding the plan's lock. The host is passed to each call,
/// so a handle that owns its host (`GpuPassthrough`) can keep an executor.
#[derive(Debug)]
pub struct Executor {
    journal: Journal,
    lock: Option<GroupLock>,
}

impl Executor {
    /// Starts a journal for `journal.key` (the caller holds `lock`).
    pub fn new(journal: Journal, lock: GroupLock) -> Self {
        Executor {
            journal,
            lock: Some(lock),
        }
    }

    /// Picks up a journal left on disk (restore, release by another process).
    pub(crate) fn resume(journal: Journal, lock: GroupLock) -> Self {
        Self::new(journal, lock)
    }

    /// The journal as it stands.
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// Marks the journal detached (the devices stay prepared after this process exits).
    pub fn detach(&mut self) -> io::Result<()> {
        self.journal.detached = true;
        self.journal.save()
    }

    /// Takes the lock back out (after an undo, to go on holding the group).
    pub(crate) fn take_lock(&mut self) -> Option<GroupLock> {
        self.lock.take()
    }

    /// Gives up the lock without undoing anything (the journal stays for `restore`).
    pub(crate) fn into_journal(mut self) -> Journal {
        self.lock.take();
        self.journal.clone()
    }

    fn save(&self) -> Result<(), StepError> {
        self.journal.save().map_err(|source| StepError::Journal {
            path: self.journal.path.clone(),
            source,
        })
    }

    /// Applies every step of `plan`. Each step is journaled (`started`) before it runs and
    /// marked `done` after; when one fails, the completed steps are undone in reverse order.
    pub fn apply(&mut self, host: &dyn HostOps, plan: &Plan) -> Result<(), Box<ApplyError>> {
        self.journal.state = JournalState::Applying;
        for (index, step) in plan.steps.iter().enumerate() {
            let recorded = step.action.changes_host();
            if recorded {
                self.journal.steps.push(JournalStep {
                    index,
                    step: step.clone(),
                    status: StepStatus::Started,
                });
                if let Err(error) = self.save() {
                    self.journal.steps.pop();
                    let undo = self.undo(host);
                    return Err(Box::new(ApplyError {
                        index,
                        step: step.clone(),
                        error,
                        undo,
                    }));
                }
            }
            let result = step.action.run(host);
            match result {
                Ok(()) => {
                    if recorded {
                        if let Some(last) = self.journal.steps.last_mut() {
                            last.status = StepStatus::Done;
                        }
                        // A lost "done" mark only makes restore treat the step as uncertain.
                        let _ = self.save();
                        if let Some(pause) = step_delay() {
                            std::thread::sleep(pause);
                        }
                    }
                }
                Err(error) => {
                    if recorded && !error.uncertain() {
                        if let Some(last) = self.journal.steps.last_mut() {
                            last.status = StepStatus::Failed;
                        }
                    }
                    let undo = self.undo(host);
                    return Err(Box::new(ApplyError {
                        index,
                        step: step.clone(),
                        error,
                        undo,
                    }));
                }
            }
        }
        self.journal.state = JournalState::Prepared;
        // The devices are prepared even if this mark is lost: restore would undo them.
        let _ = self.save();
        Ok(())
    }

    /// Undoes every recorded step in reverse order, then checks the original conditions.
    /// Uncertain steps (`started`, or failed with `ETIMEDOUT`) are undone too, ignoring
    /// errors, since they may not have happened. The journal is deleted when nothing is
    /// left to undo, and kept (with what is left) otherwise.
    pub fn undo(&mut self, host: &dyn HostOps) -> UndoReport {
        let mut report = UndoReport::default();
        self.journal.state = JournalState::Undoing;
        // Saves along the way keep the journal close to the host for a process killed
        // mid-undo; one that fails is not an error by itself (a later replay skips what
        // already holds). What counts is the final delete, or the final save of what is left.
        let _ = self.save();
        // Undo is a stack: an inverse that fails stops it, since the ones below may depend
        // on it (a native driver cannot bind while vfio-pci still holds the device); what
        // is left stays in the journal, in order, for `restore` to resume.
        while let Some(js) = self.journal.steps.pop() {
            let Some(inverse) = js.step.inverse.clone() else {
                continue;
            };
            // The kernel refused the step itself: nothing to undo.
            if js.status == StepStatus::Failed {
                continue;
            }
            // Done by hand already (the device is back on its driver): running it again
            // would fail (ENODEV) and keep the journal forever.
            if inverse.holds(host) {
                report.skipped.push(js.step.clone());
                let _ = self.save();
                continue;
            }
            let failed = match (js.status, inverse.run(host)) {
                (_, Ok(())) => {
                    report.undone.push(js.step.clone());
                    None
                }
                // The step had been recorded but not confirmed, and the kernel refused its
                // inverse: it had not taken effect.
                (StepStatus::Started, Err(e)) if !e.uncertain() => None,
                (_, Err(error)) => Some(error),
            };
            if let Some(error) = failed {
                report.failures.push(UndoFailure {
                    step: js.step.clone(),
                    error,
                });
                self.journal.steps.push(js);
                break;
            }
            let _ = self.save();
        }
        for check in &self.journal.origin {
            if let Err(found) = check.evaluate(host) {
                report
                    .left
                    .push(format!("expected {}, but it {found}", check.expectation()));
            }
        }
        if self.journal.steps.is_empty() {
            if let Err(e) = self.journal.remove() {
                report.journal_error = Some(format!(
                    "cannot delete journal {}: {e}",
                    self.journal.path.display()
                ));
            }
        } else {
            if let Err(e) = self.save() {
                report.journal_error = Some(e.to_string());
            }
            report.journal_kept = Some(self.journal.path.clone());
        }
        report
    }
}

/// Runs `action` directly, for callers outside a plan (tests, the benchmark).
pub fn run_action(host: &dyn HostOps, action: &Action) -> Result<(), StepError> {
    action.run(host)
}
