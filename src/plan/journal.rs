//! The journal: one JSON file per prepared group (`STATE/journal/group-N.json`), rewritten
//! atomically (temp file, fsync, rename, fsync of the directory) before and after each step,
//! so a process killed at any point leaves a file that says exactly what to undo.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use vm_passthrough::HostOps;

use super::{Check, Executor, GroupLock, LockError, Step, UndoReport};

/// Journal format version.
pub const JOURNAL_SCHEMA: u32 = 1;

/// The process that owns a journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// Process id.
    pub pid: u32,
    /// Start time of the process in clock ticks since boot (`/proc/PID/stat` field 22), to
    /// tell a reused PID from the owner; `None` when `/proc` did not say.
    pub start_time: Option<u64>,
    /// Program name.
    pub program: String,
}

/// Whether an owner still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OwnerStatus {
    /// `/proc/PID` exists with the recorded start time.
    Alive,
    /// No such process, or the PID now belongs to another process.
    Dead,
}

impl Owner {
    /// This process, with its start time read from `/proc/self/stat` through `host`.
    pub fn current(host: &dyn HostOps) -> Self {
        let pid = std::process::id();
        let program = std::env::args()
            .next()
            .and_then(|a| {
                Path::new(&a)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
            })
            .unwrap_or_else(|| "vm-device".to_string());
        Owner {
            pid,
            start_time: start_time(host, pid),
            program,
        }
    }

    /// Alive or dead, through `host` (`/proc/PID/stat`).
    pub fn status(&self, host: &dyn HostOps) -> OwnerStatus {
        let stat = PathBuf::from(format!("/proc/{}/stat", self.pid));
        match host.read(&stat) {
            Err(_) => OwnerStatus::Dead,
            Ok(bytes) => match (self.start_time, parse_start_time(&bytes)) {
                (Some(want), Some(got)) if want != got => OwnerStatus::Dead,
                _ => OwnerStatus::Alive,
            },
        }
    }
}

fn start_time(host: &dyn HostOps, pid: u32) -> Option<u64> {
    let bytes = host
        .read(&PathBuf::from(format!("/proc/{pid}/stat")))
        .ok()?;
    parse_start_time(&bytes)
}

/// Field 22 of `/proc/PID/stat`; the command name (field 2) may hold spaces and parentheses,
/// so fields are counted after its last `)`.
fn parse_start_time(stat: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(stat).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Where a journal's plan stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JournalState {
    /// Steps are being applied.
    Applying,
    /// Every step applied: the devices are held by the owner.
    Prepared,
    /// Steps are being undone (release, rollback or restore).
    Undoing,
}

/// Where one step stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Recorded before running: it may or may not have taken effect.
    Started,
    /// It took effect.
    Done,
    /// The kernel refused it: nothing changed.
    Failed,
}

/// One step as the journal records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalStep {
    /// Position in the plan (0-based).
    pub index: usize,
    /// The step with its inverse.
    pub step: Step,
    /// Where it stands.
    pub status: StepStatus,
}

/// The on-disk record of a plan being applied or held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    /// [`JOURNAL_SCHEMA`].
    pub schema: u32,
    /// Journal and lock key (`group-7`).
    pub key: String,
    /// What the plan does.
    pub subject: String,
    /// Who applied it.
    pub owner: Owner,
    /// True when the owner handed the devices over on purpose and exited (`vm-cli gpu
    /// prepare`): `restore` leaves a prepared, detached journal to `vm-cli gpu release`.
    pub detached: bool,
    /// Where the plan stands.
    pub state: JournalState,
    /// Conditions that held before the plan (original drivers and overrides).
    pub origin: Vec<Check>,
    /// Steps recorded so far, in plan order.
    pub steps: Vec<JournalStep>,
    #[serde(skip)]
    pub(crate) path: PathBuf,
}

impl Journal {
    /// `STATE/journal/KEY.json`.
    pub fn path_for(state_dir: &Path, key: &str) -> PathBuf {
        state_dir.join("journal").join(format!("{key}.json"))
    }

    /// A new, empty journal (not yet written).
    pub fn new(
        state_dir: &Path,
        key: &str,
        subject: &str,
        owner: Owner,
        origin: Vec<Check>,
    ) -> Self {
        Journal {
            schema: JOURNAL_SCHEMA,
            key: key.to_string(),
            subject: subject.to_string(),
            owner,
            detached: false,
            state: JournalState::Applying,
            origin,
            steps: Vec::new(),
            path: Self::path_for(state_dir, key),
        }
    }

    /// The file this journal lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads a journal file.
    pub fn load(path: &Path) -> io::Result<Self> {
        let bytes = fs::read(path)?;
        let mut j: Journal = serde_json::from_slice(&bytes).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: not a vm-device journal: {e}", path.display()),
            )
        })?;
        if j.schema != JOURNAL_SCHEMA {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: journal schema {} (this vm-device reads {JOURNAL_SCHEMA})",
                    path.display(),
                    j.schema
                ),
            ));
        }
        j.path = path.to_path_buf();
        Ok(j)
    }

    /// Reads the journal of `key`, if there is one.
    pub fn load_key(state_dir: &Path, key: &str) -> io::Result<Option<Self>> {
        match Self::load(&Self::path_for(state_dir, key)) {
            Ok(j) => Ok(Some(j)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes the journal atomically: a temp file in the same directory, fsync, rename over
    /// the old one, fsync of the directory (so the rename itself survives a power cut).
    pub fn save(&self) -> io::Result<()> {
        let dir = self
            .path
            .parent()
            .ok_or_else(|| io::Error::other("journal path has no directory"))?;
        fs::create_dir_all(dir)?;
        let tmp = dir.join(format!(
            ".{}.tmp",
            self.path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        ));
        let text = serde_json::to_vec_pretty(self).map_err(io::Error::other)?;
        {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&text)?;
            f.write_all(b"\n")?;
            f.sync_all()?;
        }
        fs::rename(&tmp, &self.path)?;
        fs::File::open(dir)?.sync_all()
    }

    /// Deletes the journal file (and syncs the directory).
    pub fn remove(&self) -> io::Result<()> {
        match fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        if let Some(dir) = self.path.parent() {
            fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    /// Steps that still have something to undo (done or uncertain, with an inverse).
    pub fn undoable(&self) -> usize {
        self.steps
            .iter()
            .filter(|s| s.status != StepStatus::Failed && s.step.inverse.is_some())
            .count()
    }
}

/// Every journal under `state_dir`, sorted by key; unreadable files are returned as errors
/// naming the file.
pub fn list_journals(state_dir: &Path) -> Vec<Result<Journal, (PathBuf, io::Error)>> {
    let dir = state_dir.join("journal");
    let Ok(entries) = fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| x == "json")
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| Journal::load(&p).map_err(|e| (p, e)))
        .collect()
}

/// What `restore` did with one journal.
#[derive(Debug)]
pub enum RestoreOutcome {
    /// Its steps were undone; `report` says whether the host is back as it was.
    Restored {
        /// The journal as found.
        journal: Journal,
        /// The undo.
        report: UndoReport,
    },
    /// Left alone, and why.
    Skipped {
        /// The journal.
        journal: Journal,
        /// Why (`pid 4242 (vm-cli) is alive and holds the lock`).
        why: String,
    },
    /// The file could not be read or locked.
    Error {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// Everything `restore` did.
#[derive(Debug, Default)]
pub struct RestoreReport {
    /// One outcome per journal found.
    pub outcomes: Vec<RestoreOutcome>,
}

impl RestoreReport {
    /// True when every restored journal left the host as it was and nothing failed.
    pub fn complete(&self) -> bool {
        self.outcomes.iter().all(|o| match o {
            RestoreOutcome::Restored { report, .. } => report.complete(),
            RestoreOutcome::Skipped { .. } => true,
            RestoreOutcome::Error { .. } => false,
        })
    }
}

/// Replays the journals of owners that died: for each journal whose lock is free and whose
/// owner is gone (or whose plan never finished), undoes the recorded steps in reverse order
/// and deletes the journal once the host is back as it was. Journals of live owners, and
/// detached prepared ones (`vm-cli gpu prepare`), are left alone.
pub fn restore_dead(host: &dyn HostOps, state_dir: &Path) -> RestoreReport {
    let mut report = RestoreReport::default();
    for entry in list_journals(state_dir) {
        let journal = match entry {
            Ok(j) => j,
            Err((path, e)) => {
                report.outcomes.push(RestoreOutcome::Error {
                    path,
                    message: e.to_string(),
                });
                continue;
            }
        };
        let lock = match GroupLock::try_acquire(state_dir, &journal.key) {
            Ok(l) => l,
            Err(LockError::Busy { .. }) => {
                let why = format!(
                    "pid {} ({}) holds the lock: it is alive",
                    journal.owner.pid, journal.owner.program
                );
                report
                    .outcomes
                    .push(RestoreOutcome::Skipped { journal, why });
                continue;
            }
            Err(e) => {
                report.outcomes.push(RestoreOutcome::Error {
                    path: journal.path.clone(),
                    message: e.to_string(),
                });
                continue;
            }
        };
        if journal.detached && journal.state == JournalState::Prepared {
            let why = format!(
                "prepared on purpose by `{}` (pid {}); give it back with `vm-cli gpu release`",
                journal.owner.program, journal.owner.pid
            );
            report
                .outcomes
                .push(RestoreOutcome::Skipped { journal, why });
            continue;
        }
        if journal.owner.status(host) == OwnerStatus::Alive
            && journal.owner.pid != std::process::id()
        {
            let why = format!(
                "pid {} ({}) is alive; stop it first",
                journal.owner.pid, journal.owner.program
            );
            report
                .outcomes
                .push(RestoreOutcome::Skipped { journal, why });
            continue;
        }
        let found = journal.clone();
        let mut exec = Executor::resume(journal, lock);
        let undo = exec.undo(host);
        report.outcomes.push(RestoreOutcome::Restored {
            journal: found,
            report: undo,
        });
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_is_field_22_even_with_parentheses_in_comm() {
        let stat =
            b"4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 123 456";
        assert_eq!(parse_start_time(stat), Some(987654));
        assert_eq!(parse_start_time(b"garbage"), None);
    }

    #[test]
    fn save_is_atomic_and_load_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let owner = Owner {
            pid: 1,
            start_time: Some(5),
            program: "t".into(),
        };
        let mut j = Journal::new(dir.path(), "group-7", "prepare", owner, Vec::new());
        j.save().unwrap();
        j.state = JournalState::Prepared;
        j.save().unwrap();
        let back = Journal::load(&Journal::path_for(dir.path(), "group-7")).unwrap();
        assert_eq!(back, j);
        let names: Vec<String> = fs::read_dir(dir.path().join("journal"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["group-7.json".to_string()], "no temp file left");
        j.remove().unwrap();
        assert!(Journal::load_key(dir.path(), "group-7").unwrap().is_none());
    }

    #[test]
    fn a_journal_of_another_schema_is_refused_with_the_file_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = Journal::path_for(dir.path(), "group-1");
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, br#"{"schema": 9}"#).unwrap();
        let e = Journal::load(&p).unwrap_err();
        assert!(e.to_string().contains("group-1.json"), "{e}");
    }
}
