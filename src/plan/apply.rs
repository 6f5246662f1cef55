//! [`PlanLock`]: the one entry to apply a plan under its lock and journal, used by the
//! passthrough prepare, mdev and SR-IOV changes, and a launch's host change.
//!
//! Take the plan's lock ([`PlanLock::acquire`]), optionally reclaim a journal its dead
//! owner left ([`PlanLock::left_journal`], [`PlanLock::reclaim`]) or re-check what another
//! change may have done while this one waited ([`PlanLock::waited`]), then
//! [`PlanLock::apply`]: the journal is started under the same key in the same state
//! directory, and every step is journaled before it runs. The returned [`Executor`] holds
//! the lock and the journal until the caller undoes, detaches or drops them.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use vm_device_host::HostOps;

use super::{ApplyError, Executor, GroupLock, Journal, LockError, Plan, UndoReport};

/// A plan's lock, held; the way to apply the plan under it.
#[derive(Debug)]
pub struct PlanLock {
    state_dir: PathBuf,
    key: String,
    lock: GroupLock,
    waited: bool,
}

impl PlanLock {
    /// Takes the lock of `key` (`STATE/locks/KEY`), waiting up to `wait` while another
    /// process holds it (`Duration::ZERO`: not at all).
    pub fn acquire(state_dir: &Path, key: &str, wait: Duration) -> Result<Self, LockError> {
        let (lock, waited) = GroupLock::acquire_within(state_dir, key, wait)?;
        Ok(PlanLock {
            state_dir: state_dir.to_path_buf(),
            key: key.to_string(),
            lock,
            waited,
        })
    }

    /// True when another process held the lock first: what was planned before may be
    /// stale, re-check it before [`PlanLock::apply`].
    pub fn waited(&self) -> bool {
        self.waited
    }

    /// The journal of this key left on disk, if any. The lock was free, so its owner is
    /// gone (or it detached on purpose: see [`Journal::detached`]).
    pub fn left_journal(&self) -> io::Result<Option<Journal>> {
        Journal::load_key(&self.state_dir, &self.key)
    }

    /// The file [`PlanLock::left_journal`] reads.
    pub fn journal_path(&self) -> PathBuf {
        Journal::path_for(&self.state_dir, &self.key)
    }

    /// Undoes a journal a dead owner left under this key (check it with
    /// [`Journal::check_replayable`] first), keeping the lock.
    pub fn reclaim(self, host: &dyn HostOps, journal: Journal) -> (Self, UndoReport) {
        let PlanLock {
            state_dir,
            key,
            lock,
            waited,
        } = self;
        let mut exec = Executor::resume(journal, lock);
        let report = exec.undo(host);
        let lock = exec.take_lock().expect("resume keeps the lock");
        (
            PlanLock {
                state_dir,
                key,
                lock,
                waited,
            },
            report,
        )
    }

    /// Starts this key's journal (recording the plan's subject and original conditions)
    /// and applies `plan` step by step; a failed step undoes the completed ones. On
    /// success the executor holds the lock and the journal.
    pub fn apply(self, host: &dyn HostOps, plan: &Plan) -> Result<Executor, Box<ApplyError>> {
        let journal = Journal::new(
            &self.state_dir,
            &self.key,
            &plan.subject,
            host,
            plan.origin.clone(),
        );
        let mut exec = Executor::new(journal, self.lock);
        exec.apply(host, plan)?;
        Ok(exec)
    }
}
