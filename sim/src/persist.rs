//! An opt-in persistent overlay: the changes made to a simulated host, kept in a directory so
//! that the next process opening the same fixture with the same directory sees them
//! (`vm-cli --host-root FIXTURE --sim-state DIR`): prepare, `kill -9`, restore and list can
//! run as separate processes, as on a real host.
//!
//! The directory holds `fixture` (the canonical path of the tree it belongs to) and
//! `changes.jsonl`, one line per host change (attribute write, module load or configuration
//! file) in the order
//! the processes made them. The simulated kernel is deterministic, so replaying the lines on
//! the pristine fixture rebuilds the tree and the kernel's memory; VFIO file descriptors are
//! not recorded (they die with their process, as on Linux). A change is appended under an
//! exclusive `flock` of the log, after catching up with what other processes appended, so
//! concurrent processes see one order of changes. Each line is written before the change is
//! made (a write-ahead log): a process killed in between leaves a change that replays as the
//! kernel would have made it.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use vm_device_host::HostError;

use crate::State;

/// The log of changes.
const LOG: &str = "changes.jsonl";
/// The file naming the tree the directory belongs to.
const FIXTURE: &str = "fixture";

/// One recorded change.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum Change {
    /// An attribute write (whatever its outcome: replaying gives the same outcome).
    Write {
        /// The path written.
        path: PathBuf,
        /// The bytes.
        value: Vec<u8>,
    },
    /// A module load.
    LoadModule {
        /// The module.
        name: String,
    },
    /// A configuration-file change (an mdevctl definition written or removed).
    File {
        /// The configuration root.
        root: PathBuf,
        /// The path below it.
        rel: PathBuf,
        /// What was done.
        change: crate::files::FileOp,
    },
}

/// The open log of a persistent simulated host.
pub(crate) struct Persisted {
    file: File,
    /// Bytes of the log already applied to this process's state.
    applied: u64,
}

impl std::fmt::Debug for Persisted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Persisted")
            .field("applied", &self.applied)
            .finish()
    }
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl Fn(io::Error) -> HostError + 'a {
    move |e| HostError::io(op, path, e)
}

impl Persisted {
    /// Opens (creating) the state directory `dir` of the tree `root`.
    pub(crate) fn open(dir: &Path, root: &Path) -> Result<Self, HostError> {
        let canonical = std::fs::canonicalize(root).map_err(io_err("realpath", root))?;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err("mkdir", dir))?;
        let tag = dir.join(FIXTURE);
        let want = format!("{}\n", canonical.display());
        match std::fs::read_to_string(&tag) {
            Ok(found) if found == want => {}
            Ok(found) => {
                return Err(HostError::Fixture(format!(
                    "--sim-state {}: it holds the simulated changes of {}, not of {}; use another directory for this tree",
                    dir.display(),
                    found.trim_end(),
                    canonical.display()
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(nix::libc::O_NOFOLLOW)
                    .open(&tag)
                    .map_err(io_err("create", &tag))?;
                f.write_all(want.as_bytes())
                    .map_err(io_err("write", &tag))?;
            }
            Err(e) => return Err(HostError::io("read", &tag, e)),
        }
        let log = dir.join(LOG);
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&log)
            .map_err(io_err("open", &log))?;
        Ok(Persisted { file, applied: 0 })
    }

    /// Changes other processes appended since the last call (complete lines only).
    fn unread(&mut self) -> Vec<Change> {
        let len = self.file.metadata().map(|m| m.len()).unwrap_or(0);
        if len <= self.applied {
            return Vec::new();
        }
        let mut buf = vec![0u8; (len - self.applied) as usize];
        let n = self.file.read_at(&mut buf, self.applied).unwrap_or(0);
        buf.truncate(n);
        let Some(end) = buf.iter().rposition(|b| *b == b'\n') else {
            return Vec::new();
        };
        self.applied += end as u64 + 1;
        buf[..end]
            .split(|b| *b == b'\n')
            .filter_map(|line| serde_json::from_slice(line).ok())
            .collect()
    }
}

/// Applies what other processes changed since this one last looked.
pub(crate) fn catch_up(st: &mut State, root: &Path) {
    let Some(p) = st.persist.as_mut() else {
        return;
    };
    let changes = p.unread();
    if changes.is_empty() {
        return;
    }
    if !st.kernel_scanned {
        st.kernel = crate::kernel::KernelState::scan(&st.tree, root);
        st.kernel_scanned = true;
    }
    for c in changes {
        // The outcome was the original process's; replaying reproduces it.
        let _ = match c {
            Change::Write { path, value } => crate::kernel::write(st, &path, &value).map(|_| ()),
            Change::LoadModule { name } => {
                crate::kernel::load_module(st, &name).map_err(|_| io::Error::other("load"))
            }
            Change::File { root, rel, change } => {
                crate::files::apply(&mut st.tree, &root, &rel, &change)
            }
        };
    }
}

/// Holds the log locked while one change is recorded and made.
pub(crate) struct Recording {
    _lock: Option<Flock<File>>,
}

/// Locks the log, catches up with other processes and appends `change`; the caller makes the
/// change while the returned guard lives. `Ok(None)` guard when the host is not persistent.
pub(crate) fn record(st: &mut State, root: &Path, change: Change) -> Result<Recording, HostError> {
    let Some(p) = st.persist.as_mut() else {
        return Ok(Recording { _lock: None });
    };
    let log = Path::new(LOG);
    let clone = p.file.try_clone().map_err(io_err("dup", log))?;
    let lock = Flock::lock(clone, FlockArg::LockExclusive)
        .map_err(|(_, e)| HostError::io("flock", log, io::Error::from(e)))?;
    catch_up(st, root);
    let p = st.persist.as_mut().expect("checked above");
    let mut line = serde_json::to_vec(&change)
        .map_err(|e| HostError::io("encode", log, io::Error::other(e)))?;
    line.push(b'\n');
    p.file.write_all(&line).map_err(io_err("append", log))?;
    // What this process applied is everything up to its own line, which it makes next.
    p.applied = p.file.metadata().map_err(io_err("stat", log))?.len();
    Ok(Recording { _lock: Some(lock) })
}
