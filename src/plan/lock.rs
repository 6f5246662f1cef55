//! One lock per IOMMU group (`STATE/locks/group-N`), an exclusive `flock(2)` held for the
//! whole prepare → release lifetime, so two processes never change the same group at once.
//! The kernel drops the lock when its holder dies, which is what makes a stale journal
//! reclaimable.

use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use super::state::{StateDir, StateError};

/// Taking a lock failed.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process (or another handle of this one) holds it.
    #[error("{} is locked by pid {holder} (another vm-cli or VM holds this IOMMU group)", path.display())]
    Busy {
        /// The lock file.
        path: PathBuf,
        /// The PID written in the lock file by its holder (`?` when unreadable).
        holder: String,
    },
    /// The lock file could not be created or locked.
    #[error("lock {}: {source}; check that the state directory is writable (--state-dir)", path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The state directory is not trusted (or not a directory).
    #[error("{0}")]
    State(#[from] StateError),
}

/// A held group lock; dropping it unlocks.
#[derive(Debug)]
pub struct GroupLock {
    path: PathBuf,
    _file: Flock<File>,
}

fn holder_of(file: &mut File) -> String {
    let mut text = String::new();
    let _ = file.rewind();
    let _ = file.take(64).read_to_string(&mut text);
    Some(text.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "?".into())
}

impl GroupLock {
    /// `STATE/locks/KEY`.
    pub fn path_for(state_dir: &Path, key: &str) -> PathBuf {
        state_dir.join("locks").join(key)
    }

    /// Takes the lock without waiting, and writes this process's PID in it. The state
    /// directory is checked and the lock file opened without following links (0600).
    pub fn try_acquire(state_dir: &Path, key: &str) -> Result<Self, LockError> {
        let path = Self::path_for(state_dir, key);
        let io_err = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        let dir = StateDir::open(state_dir, true)?.expect("created");
        let file = dir.lock_file(key, true).map_err(io_err)?.expect("created");
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(mut locked) => {
                // The PID is for people reading `locks/`; the flock is the truth.
                let _ = locked.set_len(0);
                let _ = locked.rewind();
                let _ = locked.write_all(format!("{}\n", std::process::id()).as_bytes());
                Ok(GroupLock {
                    path,
                    _file: locked,
                })
            }
            Err((mut file, Errno::EWOULDBLOCK)) => Err(LockError::Busy {
                holder: holder_of(&mut file),
                path,
            }),
            Err((_, e)) => Err(io_err(io::Error::from(e))),
        }
    }

    /// Takes the lock, waiting up to `wait` while another process holds it (for short
    /// changes such as an mdev creation, which serialize on their parent's lock). The flag
    /// is true when it had to wait (another change went first: what was planned before may
    /// be stale).
    pub(crate) fn acquire_within(
        state_dir: &Path,
        key: &str,
        wait: Duration,
    ) -> Result<(Self, bool), LockError> {
        let deadline = Instant::now() + wait;
        let mut waited = false;
        loop {
            match Self::try_acquire(state_dir, key) {
                Err(LockError::Busy { .. }) if Instant::now() < deadline => {
                    waited = true;
                    std::thread::sleep(Duration::from_millis(25));
                }
                other => return other.map(|l| (l, waited)),
            }
        }
    }

    /// True when someone holds the lock of `key` now (probing takes and drops it; a lock
    /// file that does not exist is not created).
    pub(crate) fn is_held(state_dir: &Path, key: &str) -> bool {
        let Ok(Some(dir)) = StateDir::open(state_dir, false) else {
            return false;
        };
        let Ok(Some(file)) = dir.lock_file(key, false) else {
            return false;
        };
        matches!(
            Flock::lock(file, FlockArg::LockExclusiveNonblock),
            Err((_, Errno::EWOULDBLOCK))
        )
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_acquire_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = GroupLock::try_acquire(dir.path(), "group-7").unwrap();
        match GroupLock::try_acquire(dir.path(), "group-7") {
            Err(LockError::Busy { holder, .. }) => {
                assert_eq!(holder, std::process::id().to_string())
            }
            other => panic!("expected Busy, got {other:?}"),
        }
        assert!(GroupLock::is_held(dir.path(), "group-7"));
        let other_group = GroupLock::try_acquire(dir.path(), "group-8");
        assert!(other_group.is_ok(), "locks are per group");
        drop(first);
        assert!(!GroupLock::is_held(dir.path(), "group-7"));
        assert!(GroupLock::try_acquire(dir.path(), "group-7").is_ok());
    }
}
