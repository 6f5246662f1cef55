//! Plans for the mediated rung: the exact host changes, each with its inverse, printed before
//! they run and undone in reverse when a later step fails.
//!
//! This is the mediated rung's own small plan/journal, shaped like the passthrough rung's
//! (`Step { action, inverse, device, why }`) so the two can be unified in `src/plan/`.

use std::path::{Path, PathBuf};

use crate::host::HostOps;

use super::{MdevError, Verified};

/// One host change, or a check of the kernel's state after a change.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Action {
    /// Write `value` to a sysfs attribute through `HostOps::write_attr`.
    WriteAttr {
        /// Absolute kernel path.
        path: PathBuf,
        /// Bytes written (text).
        value: String,
    },
    /// Create a host configuration file (an mdevctl definition) under the config root.
    /// Refuses to overwrite an existing file.
    WriteConfig {
        /// Absolute path as on the host (`/etc/mdevctl.d/PARENT/UUID`).
        path: PathBuf,
        /// File contents.
        contents: String,
    },
    /// Remove a host configuration file under the config root.
    RemoveConfig {
        /// Absolute path as on the host.
        path: PathBuf,
    },
    /// Check that the kernel did what the previous step asked; changes nothing.
    Expect(Expectation),
}

/// A state the kernel must be in after a step.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Expectation {
    /// `/sys/bus/mdev/devices/UUID` exists, its `mdev_type` is `type_id` and its IOMMU group
    /// has a `/dev/vfio/N` node.
    MdevActive {
        /// The device.
        uuid: String,
        /// Its type.
        type_id: String,
    },
    /// `/sys/bus/mdev/devices/UUID` is gone.
    MdevGone {
        /// The device.
        uuid: String,
    },
    /// `sriov_numvfs` reads `count` and `virtfn0..count-1` exist, each with an IOMMU group.
    Vfs {
        /// The physical function's sysfs directory.
        pf_dir: PathBuf,
        /// Expected VF count.
        count: u32,
    },
    /// `nvidia/current_vgpu_type` of the VF reads `type_id` (0 = none).
    NvidiaType {
        /// The VF's sysfs directory.
        vf_dir: PathBuf,
        /// Expected type.
        type_id: u32,
    },
}

/// One step: what to do, how to undo it, on which device, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Step {
    /// The change (or check).
    pub action: Action,
    /// What puts the host back; `None` for checks and for steps that need no undo.
    pub inverse: Option<Action>,
    /// The device concerned (UUID, parent, PCI address).
    pub device: String,
    /// Why this step is needed, in one line.
    pub why: String,
}

/// A list of steps.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Plan {
    /// Steps in order.
    pub steps: Vec<Step>,
}

impl Action {
    /// One line for people: `write 1 > /sys/…/remove`.
    pub fn describe(&self) -> String {
        match self {
            Action::WriteAttr { path, value } => {
                format!("write {} > {}", value.trim_end(), path.display())
            }
            Action::WriteConfig { path, .. } => format!("create {}", path.display()),
            Action::RemoveConfig { path } => format!("remove {}", path.display()),
            Action::Expect(e) => format!("verify {}", e.describe()),
        }
    }
}

impl Expectation {
    /// One line for people.
    pub fn describe(&self) -> String {
        match self {
            Expectation::MdevActive { uuid, type_id } => format!(
                "/sys/bus/mdev/devices/{uuid} exists with mdev_type {type_id} and its /dev/vfio group"
            ),
            Expectation::MdevGone { uuid } => format!("/sys/bus/mdev/devices/{uuid} is gone"),
            Expectation::Vfs { pf_dir, count } => format!(
                "{}/sriov_numvfs = {count} with virtfn0..{} and their IOMMU groups",
                pf_dir.display(),
                count.saturating_sub(1)
            ),
            Expectation::NvidiaType { vf_dir, type_id } => format!(
                "{}/nvidia/current_vgpu_type = {type_id}",
                vf_dir.display()
            ),
        }
    }
}

impl Plan {
    /// Appends a step.
    pub fn push(&mut self, action: Action, inverse: Option<Action>, device: &str, why: &str) {
        self.steps.push(Step {
            action,
            inverse,
            device: device.to_string(),
            why: why.to_string(),
        });
    }

    /// The plan as text, one numbered step a line (for `--dry-run`).
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for (i, s) in self.steps.iter().enumerate() {
            out.push_str(&format!("{:>2}. {}\n", i + 1, s.action.describe()));
            out.push_str(&format!("    why: {}\n", s.why));
            if let Some(inv) = &s.inverse {
                out.push_str(&format!("    undo: {}\n", inv.describe()));
            }
        }
        out
    }
}

/// The journal of a plan in progress: one JSON file under the state directory, rewritten
/// atomically (temp file, fsync, rename) before each step, removed when the plan finished
/// or was undone. A leftover journal means a process died mid-plan: [`restore`] undoes it.
#[derive(Debug, Clone)]
pub struct Journal {
    path: PathBuf,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct JournalFile {
    schema: u32,
    owner_pid: u32,
    /// Steps started, in order (the last one may or may not have taken effect).
    started: Vec<Step>,
}

impl Journal {
    /// A journal named `name` (`mdev-UUID`) under `state_dir` (created if needed).
    pub fn new(state_dir: &Path, name: &str) -> Self {
        Journal {
            path: state_dir.join(format!("{name}.json")),
        }
    }

    /// Its file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, detail: impl std::fmt::Display) -> MdevError {
        MdevError::Journal {
            path: self.path.clone(),
            detail: detail.to_string(),
        }
    }

    fn write(&self, started: &[Step]) -> Result<(), MdevError> {
        use std::io::Write;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| self.err(format!("create directory: {e}")))?;
        let doc = JournalFile {
            schema: 1,
            owner_pid: std::process::id(),
            started: started.to_vec(),
        };
        let bytes = serde_json::to_vec_pretty(&doc).map_err(|e| self.err(e))?;
        let tmp = self.path.with_extension("json.tmp");
        let mut f = std::fs::File::create(&tmp).map_err(|e| self.err(format!("create: {e}")))?;
        f.write_all(&bytes)
            .and_then(|_| f.sync_all())
            .map_err(|e| self.err(format!("write: {e}")))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| self.err(format!("rename: {e}")))?;
        if let Ok(d) = std::fs::File::open(dir) {
            // Best effort: the rename is durable once the directory is synced.
            let _ = d.sync_all();
        }
        Ok(())
    }

    fn finish(&self) -> Result<(), MdevError> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.err(format!("remove: {e}"))),
        }
    }
}

/// Undoes the steps a dead process's journal records, in reverse, then removes it. Returns
/// the undo steps that failed (empty: the host is back as before that plan).
pub fn restore(
    host: &dyn HostOps,
    config_root: &Path,
    journal: &Path,
) -> Result<Vec<String>, MdevError> {
    let j = Journal {
        path: journal.to_path_buf(),
    };
    let bytes = std::fs::read(journal).map_err(|e| j.err(format!("read: {e}")))?;
    let doc: JournalFile = serde_json::from_slice(&bytes).map_err(|e| j.err(e))?;
    let exec = Executor::new(host, config_root);
    let left = exec.undo(&doc.started);
    j.finish()?;
    Ok(left)
}

/// Applies plans through `HostOps` (sysfs) and `std::fs` under a config root (mdevctl
/// definitions), journaling before each step and undoing in reverse on failure.
pub struct Executor<'a> {
    host: &'a dyn HostOps,
    config_root: PathBuf,
    journal: Option<Journal>,
}

impl<'a> Executor<'a> {
    /// An executor on `host`; configuration files go under `config_root` (`/` on a real host).
    pub fn new(host: &'a dyn HostOps, config_root: &Path) -> Self {
        Executor {
            host,
            config_root: config_root.to_path_buf(),
            journal: None,
        }
    }

    /// Journal every step to `journal`.
    pub fn with_journal(mut self, journal: Journal) -> Self {
        self.journal = Some(journal);
        self
    }

    /// Where a host configuration path lands under the config root.
    pub fn config_path(&self, path: &Path) -> PathBuf {
        self.config_root
            .join(path.strip_prefix("/").unwrap_or(path))
    }

    /// Runs every step. On a failure, undoes the steps already done in reverse and returns
    /// [`MdevError::StepFailed`] saying what could not be undone.
    pub fn apply(&self, plan: &Plan) -> Result<Vec<Verified>, MdevError> {
        let mut started: Vec<Step> = Vec::new();
        let mut verified = Vec::new();
        for (i, step) in plan.steps.iter().enumerate() {
            started.push(step.clone());
            if let Some(j) = &self.journal {
                if let Err(e) = j.write(&started) {
                    started.pop();
                    let left = self.undo(&started);
                    return Err(MdevError::StepFailed {
                        index: i + 1,
                        what: step.action.describe(),
                        cause: Box::new(e),
                        left,
                    });
                }
            }
            match self.run(&step.action) {
                Ok(v) => verified.extend(v),
                Err(e) => {
                    // A write the kernel refused with an errno, or a failed check, changed
                    // nothing; any other failure (a lost process, an I/O error without
                    // errno) may have taken effect, so its inverse is tried too.
                    if matches!(
                        e,
                        MdevError::Refused { .. }
                            | MdevError::Verify { .. }
                            | MdevError::Persist { .. }
                    ) {
                        started.pop();
                    }
                    let left = self.undo(&started);
                    if left.is_empty() {
                        if let Some(j) = &self.journal {
                            let _ = j.finish();
                        }
                    }
                    return Err(MdevError::StepFailed {
                        index: i + 1,
                        what: step.action.describe(),
                        cause: Box::new(e),
                        left,
                    });
                }
            }
        }
        if let Some(j) = &self.journal {
            j.finish()?;
        }
        Ok(verified)
    }

    /// Applies the inverses of `done` in reverse; returns the ones that failed.
    pub fn undo(&self, done: &[Step]) -> Vec<String> {
        let mut left = Vec::new();
        for step in done.iter().rev() {
            if let Some(inv) = &step.inverse {
                if let Err(e) = self.run(inv) {
                    left.push(format!("{} ({e})", inv.describe()));
                }
            }
        }
        left
    }

    fn run(&self, action: &Action) -> Result<Option<Verified>, MdevError> {
        match action {
            Action::WriteAttr { path, value } => self
                .host
                .write_attr(path, value.as_bytes())
                .map(|_| None)
                .map_err(|e| MdevError::from_write(path, value, e)),
            Action::WriteConfig { path, contents } => {
                self.write_config(path, contents).map(|_| None)
            }
            Action::RemoveConfig { path } => {
                let real = self.config_path(path);
                std::fs::remove_file(&real).map_err(|e| MdevError::Persist {
                    path: real.clone(),
                    detail: format!("remove: {e}"),
                })?;
                // An empty parent directory is mdevctl's "no definitions for this parent".
                if let Some(dir) = real.parent() {
                    let _ = std::fs::remove_dir(dir);
                }
                Ok(None)
            }
            Action::Expect(e) => super::verify::check(self.host, e).map(Some),
        }
    }

    fn write_config(&self, path: &Path, contents: &str) -> Result<(), MdevError> {
        use std::io::Write;
        let real = self.config_path(path);
        let perr = |detail: String| MdevError::Persist {
            path: real.clone(),
            detail,
        };
        if let Some(dir) = real.parent() {
            std::fs::create_dir_all(dir).map_err(|e| perr(format!("create directory: {e}")))?;
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&real)
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    perr("a definition with this UUID exists already: remove it (mdevctl undefine) or use another UUID".into())
                } else {
                    perr(format!("create: {e}"))
                }
            })?;
        f.write_all(contents.as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|e| {
                // Leave nothing half-written: the step must change nothing when it fails.
                let _ = std::fs::remove_file(&real);
                perr(format!("write: {e}"))
            })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use mockall::mock;
    use vm_passthrough::{AdapterInfo, HostError, NodeKind};

    use super::*;

    mock! {
        Host {}
        impl HostOps for Host {
            fn read(&self, path: &Path) -> Result<Vec<u8>, HostError>;
            fn read_link(&self, path: &Path) -> Result<PathBuf, HostError>;
            fn list_dir(&self, path: &Path) -> Result<Vec<String>, HostError>;
            fn kind(&self, path: &Path) -> Option<NodeKind>;
            fn canonicalize(&self, path: &Path) -> Result<PathBuf, HostError>;
            fn write_attr(&self, path: &Path, value: &[u8]) -> Result<(), HostError>;
            fn load_module(&self, name: &str) -> Result<(), HostError>;
            fn probe_adapters(&self) -> Result<Vec<AdapterInfo>, HostError>;
        }
    }

    fn sriov_plan() -> Plan {
        let attr = PathBuf::from("/sys/bus/pci/devices/0000:4b:00.0/sriov_numvfs");
        let mut plan = Plan::default();
        plan.push(
            Action::WriteAttr {
                path: attr.clone(),
                value: "0".into(),
            },
            Some(Action::WriteAttr {
                path: attr.clone(),
                value: "4".into(),
            }),
            "pf",
            "disable",
        );
        plan.push(
            Action::Expect(Expectation::Vfs {
                pf_dir: "/sys/bus/pci/devices/0000:4b:00.0".into(),
                count: 0,
            }),
            None,
            "pf",
            "check",
        );
        plan.push(
            Action::WriteAttr {
                path: attr.clone(),
                value: "2".into(),
            },
            Some(Action::WriteAttr {
                path: attr,
                value: "0".into(),
            }),
            "pf",
            "enable",
        );
        plan
    }

    #[test]
    fn refused_step_is_not_undone_and_earlier_steps_are_undone_in_reverse() {
        let writes = Arc::new(Mutex::new(Vec::<String>::new()));
        let mut host = MockHost::new();
        let w = writes.clone();
        host.expect_write_attr().returning(move |_, v| {
            let v = String::from_utf8_lossy(v).into_owned();
            w.lock().unwrap().push(v.clone());
            if v == "2" {
                Err(HostError::errno("write", "sriov_numvfs", 34))
            } else {
                Ok(())
            }
        });
        host.expect_read().returning(|_| Ok(b"0\n".to_vec()));
        host.expect_kind().returning(|_| None);
        let err = Executor::new(&host, Path::new("/"))
            .apply(&sriov_plan())
            .unwrap_err();
        // "2" was refused (ERANGE): only step 1 is undone, by writing the old count back.
        assert_eq!(*writes.lock().unwrap(), ["0", "2", "4"]);
        assert_eq!(err.errno(), Some(34));
        assert!(err.undone());
        assert!(err.to_string().contains("ERANGE"), "{err}");
    }

    #[test]
    fn failed_check_undoes_the_write_before_it() {
        let writes = Arc::new(Mutex::new(Vec::<String>::new()));
        let mut host = MockHost::new();
        let w = writes.clone();
        host.expect_write_attr().returning(move |_, v| {
            w.lock()
                .unwrap()
                .push(String::from_utf8_lossy(v).into_owned());
            Ok(())
        });
        // The kernel still reports the old VFs after the write of 0.
        host.expect_read().returning(|_| Ok(b"4\n".to_vec()));
        let err = Executor::new(&host, Path::new("/"))
            .apply(&sriov_plan())
            .unwrap_err();
        assert_eq!(*writes.lock().unwrap(), ["0", "4"]);
        assert!(
            matches!(&err, MdevError::StepFailed { index: 2, cause, .. } if matches!(**cause, MdevError::Verify { .. })),
            "{err}"
        );
    }

    #[test]
    fn journal_records_steps_and_is_removed_when_done() {
        let dir = tempfile::tempdir().unwrap();
        let mut host = MockHost::new();
        let j = Journal::new(dir.path(), "t");
        let path = j.path().to_path_buf();
        let seen = Arc::new(Mutex::new(Vec::<usize>::new()));
        let s = seen.clone();
        host.expect_write_attr().returning(move |_, _| {
            // The journal is on disk, naming this step, before the step runs.
            let doc: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            s.lock()
                .unwrap()
                .push(doc["started"].as_array().unwrap().len());
            Ok(())
        });
        host.expect_read().returning(|_| Ok(b"0\n".to_vec()));
        host.expect_kind().returning(|_| None);
        host.expect_read_link()
            .returning(|_| Ok(PathBuf::from("../0000:4b:00.1")));
        let mut plan = sriov_plan();
        plan.steps.truncate(2);
        Executor::new(&host, Path::new("/"))
            .with_journal(j.clone())
            .apply(&plan)
            .unwrap();
        assert_eq!(*seen.lock().unwrap(), [1]);
        assert!(!j.path().exists());
    }
}
