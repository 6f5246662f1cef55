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
    /// `Journal::check_replayable` first), keeping the lock.
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use vm_device_host::mock::MockHost;
    use vm_device_host::HostError;

    use super::*;
    use crate::plan::{Action, Step};

    fn host() -> (MockHost, Arc<Mutex<Vec<String>>>) {
        let writes = Arc::new(Mutex::new(Vec::new()));
        let w = writes.clone();
        let mut host = MockHost::new();
        host.expect_write_attr().returning(move |_, v| {
            w.lock()
                .unwrap()
                .push(String::from_utf8_lossy(v).into_owned());
            Ok(())
        });
        host.expect_read()
            .returning(|p| Err(HostError::errno("read", p, 2)));
        host.expect_read_link()
            .returning(|p| Err(HostError::errno("readlink", p, 2)));
        host.expect_canonicalize()
            .returning(|p| Err(HostError::errno("realpath", p, 2)));
        host.expect_kind().returning(|_| None);
        (host, writes)
    }

    fn plan() -> Plan {
        let attr = PathBuf::from("/sys/bus/pci/devices/0000:4b:00.0/sriov_numvfs");
        Plan {
            subject: "test".into(),
            key: "sriov-test".into(),
            steps: vec![Step::new(
                Action::Write {
                    path: attr.clone(),
                    value: "2".into(),
                },
                Some(Action::Write {
                    path: attr,
                    value: "0".into(),
                }),
                "pf",
                "enable",
            )],
            origin: Vec::new(),
        }
    }

    #[test]
    fn a_dead_owners_journal_is_reclaimed_under_the_same_lock() {
        let dir = tempfile::tempdir().unwrap();
        let (host, writes) = host();
        let lock = PlanLock::acquire(dir.path(), "sriov-test", Duration::ZERO).unwrap();
        assert!(!lock.waited());
        assert!(lock.left_journal().unwrap().is_none());
        // The owner gives up its lock without undoing: as if it had been killed.
        let journal = lock.apply(&host, &plan()).unwrap().into_journal();
        assert!(journal.path().exists());
        assert_eq!(journal.path(), Journal::path_for(dir.path(), "sriov-test"));

        let lock = PlanLock::acquire(dir.path(), "sriov-test", Duration::ZERO).unwrap();
        let left = lock.left_journal().unwrap().expect("the journal is left");
        let (lock, report) = lock.reclaim(&host, left);
        assert!(report.complete(), "{:?}", report.leftovers());
        assert_eq!(report.undone.len(), 1);
        assert!(!lock.journal_path().exists());
        assert_eq!(*writes.lock().unwrap(), ["2", "0"]);
        // Still held after the reclaim: nobody else gets in between.
        assert!(matches!(
            GroupLock::try_acquire(dir.path(), "sriov-test"),
            Err(LockError::Busy { .. })
        ));
        drop(lock);
        assert!(GroupLock::try_acquire(dir.path(), "sriov-test").is_ok());
    }
}
