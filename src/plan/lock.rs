//! One lock per IOMMU group (`STATE/locks/group-N`), an exclusive `flock(2)` held for the
//! whole prepare → release lifetime, so two processes never change the same group at once.
//! The kernel drops the lock when its holder dies, which is what makes a stale journal
//! reclaimable.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

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
}

/// A held group lock; dropping it unlocks.
#[derive(Debug)]
pub struct GroupLock {
    path: PathBuf,
    _file: Flock<File>,
}

impl GroupLock {
    /// `STATE/locks/KEY`.
    pub fn path_for(state_dir: &Path, key: &str) -> PathBuf {
        state_dir.join("locks").join(key)
    }

    /// Takes the lock without waiting, and writes this process's PID in it.
    pub fn try_acquire(state_dir: &Path, key: &str) -> Result<Self, LockError> {
        let path = Self::path_for(state_dir, key);
        let io_err = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(io_err)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err)?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(mut locked) => {
                // The PID is for people reading `locks/`; the flock is the truth.
                let _ = locked.set_len(0);
                let _ = locked.write_all(format!("{}\n", std::process::id()).as_bytes());
                Ok(GroupLock {
                    path,
                    _file: locked,
                })
            }
            Err((_, Errno::EWOULDBLOCK)) => Err(LockError::Busy {
                holder: fs::read_to_string(&path)
                    .ok()
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| "?".into()),
                path,
            }),
            Err((_, e)) => Err(io_err(io::Error::from(e))),
        }
    }

    /// True when someone holds the lock of `key` now (probing takes and drops it).
    pub fn is_held(state_dir: &Path, key: &str) -> bool {
        matches!(
            Self::try_acquire(state_dir, key),
            Err(LockError::Busy { .. })
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
