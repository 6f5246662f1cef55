//! The journal: one JSON file per prepared group (`STATE/journal/group-N.json`), rewritten
//! atomically (temp file, fsync, rename, fsync of the directory) before and after each step,
//! so a process killed at any point leaves a file that says exactly what to undo.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use vm_device_host::{HostOps, Sysfs};

use super::state::{valid_key, StateDir, StateError};
use super::{Check, Executor, GroupLock, LockError, ReplayScope, Step, UndoReport};

/// Journal format version.
pub(crate) const JOURNAL_SCHEMA: u32 = 1;

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

/// The processes that own journals and locks are vm-device's own, on this machine: their
/// liveness is read from this machine's `/proc` (through the real host), even when the
/// host changes are simulated (`--host-root`), whose tree's `/proc` says nothing of them.
fn this_machine() -> crate::host::LinuxHost {
    crate::host::LinuxHost::new()
}

impl Owner {
    /// This process, with its start time read from this machine's `/proc/self/stat`.
    pub fn current() -> Self {
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
            start_time: start_time(&this_machine(), pid),
            program,
        }
    }

    /// Alive or dead, from this machine's `/proc/PID/stat`.
    pub fn status(&self) -> OwnerStatus {
        let stat = PathBuf::from(format!("/proc/{}/stat", self.pid));
        match this_machine().read(&stat) {
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
    /// `JOURNAL_SCHEMA`.
    pub schema: u32,
    /// Journal and lock key (`group-7`); always the file's name without `.json`.
    pub key: String,
    /// The host the plan changed ([`System::identity`](crate::host::System::identity): `machine-id … boot …` for this
    /// machine, `host tree /path` for a simulation). Only that host replays it; `None` (a
    /// journal of an older vm-device) is replayed nowhere.
    #[serde(default)]
    pub host: Option<String>,
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

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl Journal {
    /// `STATE/journal/KEY.json`.
    pub fn path_for(state_dir: &Path, key: &str) -> PathBuf {
        state_dir.join("journal").join(format!("{key}.json"))
    }

    /// A new, empty journal (not yet written) of a plan this process applies on `host`.
    pub fn new(
        state_dir: &Path,
        key: &str,
        subject: &str,
        host: &dyn HostOps,
        origin: Vec<Check>,
    ) -> Self {
        Journal {
            schema: JOURNAL_SCHEMA,
            key: key.to_string(),
            host: Some(host.identity()),
            subject: subject.to_string(),
            owner: Owner::current(),
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

    /// The state directory of this journal (`STATE` of `STATE/journal/KEY.json`).
    fn state_dir(&self) -> &Path {
        self.path
            .parent()
            .and_then(Path::parent)
            .unwrap_or(Path::new("."))
    }

    /// Parses a journal read from `path` and checks that its key is its file name.
    fn parse(path: &Path, bytes: &[u8]) -> io::Result<Self> {
        let mut j: Journal = serde_json::from_slice(bytes)
            .map_err(|e| invalid(format!("{}: not a vm-device journal: {e}", path.display())))?;
        if j.schema != JOURNAL_SCHEMA {
            return Err(invalid(format!(
                "{}: journal schema {} (this vm-device reads {JOURNAL_SCHEMA})",
                path.display(),
                j.schema
            )));
        }
        let stem = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".json"))
            .unwrap_or_default();
        if j.key != stem || !valid_key(&j.key) {
            return Err(invalid(format!(
                "{}: its key `{}` is not its file name: refused (a journal names only its own lock and file)",
                path.display(),
                j.key.escape_debug()
            )));
        }
        j.path = path.to_path_buf();
        Ok(j)
    }

    /// Reads a journal file (never through a link; a regular file of at most 1 MiB).
    pub fn load(path: &Path) -> io::Result<Self> {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| invalid(format!("{}: no file name", path.display())))?;
        let state_dir = path
            .parent()
            .and_then(Path::parent)
            .ok_or_else(|| invalid(format!("{}: not under STATE/journal", path.display())))?;
        let not_found = || io::Error::new(io::ErrorKind::NotFound, path.display().to_string());
        let dir = StateDir::open(state_dir, false)?.ok_or_else(not_found)?;
        let fd = dir.subdir("journal", false)?.ok_or_else(not_found)?;
        let bytes = dir.read_file(&fd, "journal", name)?.ok_or_else(not_found)?;
        Self::parse(path, &bytes)
    }

    /// Reads the journal of `key`, if there is one.
    pub(crate) fn load_key(state_dir: &Path, key: &str) -> io::Result<Option<Self>> {
        if !valid_key(key) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("`{}` is not a journal key", key.escape_debug()),
            ));
        }
        match Self::load(&Self::path_for(state_dir, key)) {
            Ok(j) => Ok(Some(j)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes the journal atomically: a temp file in the same directory (`O_EXCL`,
    /// `O_NOFOLLOW`, 0600), fsync, rename over the old one, fsync of the directory (so the
    /// rename itself survives a power cut). The state directory is checked first, and a
    /// failed write leaves no temp file.
    pub fn save(&self) -> io::Result<()> {
        if !valid_key(&self.key) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("`{}` is not a journal key", self.key.escape_debug()),
            ));
        }
        let mut text = serde_json::to_vec_pretty(self).map_err(io::Error::other)?;
        text.push(b'\n');
        let dir = StateDir::open(self.state_dir(), true)?.expect("created");
        dir.write_journal(&format!("{}.json", self.key), &text)
    }

    /// Deletes the journal file (and syncs the directory).
    pub fn remove(&self) -> io::Result<()> {
        match StateDir::open(self.state_dir(), false)? {
            Some(dir) => dir.remove_journal(&format!("{}.json", self.key)),
            None => Ok(()),
        }
    }

    /// Why this journal, read from disk, must not be replayed on `host`: it belongs to
    /// another host, or an action or check names a path the plan layer never produces
    /// (see [`ReplayScope`]). `Ok` when it may be replayed.
    pub fn check_replayable(&self, host: &dyn HostOps, scope: &ReplayScope) -> Result<(), String> {
        let here = host.identity();
        match &self.host {
            Some(h) if *h == here => {}
            Some(h) => {
                return Err(format!(
                    "refused: it belongs to another host ({h}); this is {here}. A journal of a simulated host tree is restored with `--host-root` of that tree; one of an earlier boot of this machine was undone by the reboot: delete {}",
                    self.path.display()
                ))
            }
            None => {
                return Err(format!(
                    "refused: it does not say which host it belongs to (written by an older vm-device); check by hand what it lists, then delete {}",
                    self.path.display()
                ))
            }
        }
        let mut bad = Vec::new();
        for s in &self.steps {
            if let Some(inv) = &s.step.inverse {
                if let Err(why) = scope.allows_action(inv) {
                    bad.push(format!(
                        "step {} undo `{}`: {why}",
                        s.index + 1,
                        inv.describe()
                    ));
                }
            }
        }
        for c in &self.origin {
            if let Err(why) = scope.allows_check(c) {
                bad.push(format!("check `{}`: {why}", c.expectation()));
            }
        }
        if bad.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "refused: it asks for what vm-device never journals, so it was not written by vm-device: {}; nothing was replayed",
                bad.join("; ")
            ))
        }
    }
}

/// One journal file as [`list_journals`] found it: parsed, or its path and why not.
pub type JournalEntry = Result<Journal, (PathBuf, io::Error)>;

/// Every journal under `state_dir`, sorted by key; unreadable files are returned as errors
/// naming the file. A missing state or journal directory means no journals; one that is
/// not a directory, cannot be read, or could be written by others is an error.
pub fn list_journals(state_dir: &Path) -> Result<Vec<JournalEntry>, StateError> {
    let Some(dir) = StateDir::open(state_dir, false)? else {
        return Ok(Vec::new());
    };
    let Some(fd) = dir.subdir("journal", false)? else {
        return Ok(Vec::new());
    };
    let jdir = state_dir.join("journal");
    let entries = std::fs::read_dir(&jdir).map_err(|source| StateError::Io {
        dir: state_dir.to_path_buf(),
        op: "list",
        path: jdir.clone(),
        source,
    })?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.ends_with(".json") && !n.starts_with('.'))
        .collect();
    names.sort();
    Ok(names
        .into_iter()
        .map(|n| {
            let p = jdir.join(&n);
            match dir.read_file(&fd, "journal", &n) {
                Ok(Some(bytes)) => Journal::parse(&p, &bytes).map_err(|e| (p, e)),
                Ok(None) => Err((p, io::Error::from(io::ErrorKind::NotFound))),
                Err(e) => Err((p, e)),
            }
        })
        .collect())
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
    /// Not replayed because it is not this host's, or asks for what vm-device never does.
    Refused {
        /// The journal.
        journal: Journal,
        /// Why, with what to do.
        why: String,
    },
    /// The file (or the state directory) could not be read or locked.
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
    /// True when every restored journal left the host as it was and nothing failed or was
    /// refused.
    pub fn complete(&self) -> bool {
        self.outcomes.iter().all(|o| match o {
            RestoreOutcome::Restored { report, .. } => report.complete(),
            RestoreOutcome::Skipped { .. } => true,
            RestoreOutcome::Refused { .. } | RestoreOutcome::Error { .. } => false,
        })
    }

    /// True when an undo was tried and left something changed on the host.
    pub fn left_changes(&self) -> bool {
        self.outcomes.iter().any(|o| match o {
            RestoreOutcome::Restored { report, .. } => !report.complete(),
            _ => false,
        })
    }
}

/// Replays the journals of owners that died: for each journal whose lock is free and whose
/// owner is gone (or whose plan never finished), undoes the recorded steps in reverse order
/// and deletes the journal once the host is back as it was. Journals of live owners, and
/// detached prepared ones (`vm-cli gpu prepare`), are left alone; journals of another host,
/// or asking for actions outside `scope`, are refused. A state directory that cannot be
/// read or is not trusted gives one [`RestoreOutcome::Error`].
pub fn restore_dead_in(host: &dyn HostOps, state_dir: &Path, scope: &ReplayScope) -> RestoreReport {
    let mut report = RestoreReport::default();
    let entries = match list_journals(state_dir) {
        Ok(e) => e,
        Err(e) => {
            report.outcomes.push(RestoreOutcome::Error {
                path: e.path().to_path_buf(),
                message: e.to_string(),
            });
            return report;
        }
    };
    for entry in entries {
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
        if let Err(why) = journal.check_replayable(host, scope) {
            report
                .outcomes
                .push(RestoreOutcome::Refused { journal, why });
            continue;
        }
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
        if journal.owner.status() == OwnerStatus::Alive && journal.owner.pid != std::process::id() {
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

/// [`restore_dead_in`] with the default scope: sysfs actions only, no mdevctl definitions
/// (no config root).
pub fn restore_dead(host: &dyn HostOps, state_dir: &Path) -> RestoreReport {
    restore_dead_in(host, state_dir, &ReplayScope::default())
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
        let mut j = Journal {
            schema: JOURNAL_SCHEMA,
            key: "group-7".into(),
            host: Some("machine-id a boot b".into()),
            subject: "prepare".into(),
            owner: Owner {
                pid: 1,
                start_time: Some(5),
                program: "t".into(),
            },
            detached: false,
            state: JournalState::Applying,
            origin: Vec::new(),
            steps: Vec::new(),
            path: Journal::path_for(dir.path(), "group-7"),
        };
        j.save().unwrap();
        j.state = JournalState::Prepared;
        j.save().unwrap();
        let back = Journal::load(&Journal::path_for(dir.path(), "group-7")).unwrap();
        assert_eq!(back, j);
        let names: Vec<String> = std::fs::read_dir(dir.path().join("journal"))
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
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, br#"{"schema": 9}"#).unwrap();
        let e = Journal::load(&p).unwrap_err();
        assert!(e.to_string().contains("group-1.json"), "{e}");
    }
}
