//! The mediated rung's plans on top of [`crate::plan`]: the same `Step { action, inverse,
//! device, why }`, executor, journal and locks as passthrough, so `restore` undoes a killed
//! `mdev-create` like a killed passthrough prepare.
//!
//! What this module adds: [`Expectation`]s (what the kernel must show after a step; each
//! becomes `Verify` steps and, once applied, a [`Verified`] report) and [`execute`], which
//! runs a plan under a lock and journal and turns failures into [`MdevError`]s.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

pub use crate::plan::{Action, Check, Plan, Step};
use crate::plan::{ApplyError, GroupLock, LockError, PlanLock, StepError};

use super::lifecycle::ApplyOptions;
use super::{verify, MdevError, Verified};
use crate::host::HostOps;

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

fn mdev_dir(uuid: &str) -> PathBuf {
    PathBuf::from(format!("/sys/bus/mdev/devices/{uuid}"))
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

    /// The plan checks that prove it.
    pub fn checks(&self) -> Vec<Check> {
        match self {
            Expectation::MdevActive { uuid, type_id } => vec![
                Check::Exists {
                    path: mdev_dir(uuid),
                },
                Check::LinkName {
                    path: mdev_dir(uuid).join("mdev_type"),
                    name: Some(type_id.clone()),
                },
                Check::VfioGroupOf {
                    device: mdev_dir(uuid),
                },
            ],
            Expectation::MdevGone { uuid } => vec![Check::LinkName {
                path: mdev_dir(uuid),
                name: None,
            }],
            Expectation::Vfs { pf_dir, count } => {
                let mut v = vec![Check::Content {
                    path: pf_dir.join("sriov_numvfs"),
                    value: count.to_string(),
                }];
                for i in 0..*count {
                    v.push(Check::Exists {
                        path: pf_dir.join(format!("virtfn{i}/iommu_group")),
                    });
                }
                v.push(Check::LinkName {
                    path: pf_dir.join(format!("virtfn{count}")),
                    name: None,
                });
                v
            }
            Expectation::NvidiaType { vf_dir, type_id } => vec![Check::Content {
                path: vf_dir.join("nvidia/current_vgpu_type"),
                value: type_id.to_string(),
            }],
        }
    }
}

/// A plan with the expectations its `Verify` steps came from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MdevPlan {
    /// The steps (shared format with passthrough).
    pub plan: Plan,
    /// What the kernel must show once it ran.
    pub expect: Vec<Expectation>,
}

impl MdevPlan {
    /// An empty plan; `key` names its journal and lock (`mdev-mbochs`, `sriov-0000:4b:00.0`).
    pub fn new(subject: &str, key: &str) -> Self {
        MdevPlan {
            plan: Plan {
                subject: subject.to_string(),
                key: key.replace(['/', ' '], "_"),
                steps: Vec::new(),
                origin: Vec::new(),
            },
            expect: Vec::new(),
        }
    }

    /// Appends a change.
    pub fn push(&mut self, action: Action, inverse: Option<Action>, device: &str, why: &str) {
        self.plan
            .steps
            .push(Step::new(action, inverse, device, why));
    }

    /// Appends the checks of `e`.
    pub fn expect(&mut self, e: Expectation, device: &str, why: &str) {
        for c in e.checks() {
            self.push(Action::Verify(c), None, device, why);
        }
        self.expect.push(e);
    }

    /// A condition that holds now and must hold again after a full undo.
    pub fn origin(&mut self, c: Check) {
        self.plan.origin.push(c);
    }

    /// What the plan's lock protects, in words (`mdev parent mbochs`, `SR-IOV PF …`).
    pub fn target(&self) -> String {
        let key = &self.plan.key;
        for (prefix, what) in [
            ("mdev-", "mdev parent"),
            ("sriov-", "SR-IOV physical function"),
            ("vgpu-", "virtual function"),
        ] {
            if let Some(rest) = key.strip_prefix(prefix) {
                return format!("{what} {rest}");
            }
        }
        key.clone()
    }

    /// Numbered steps for `--dry-run`.
    pub fn to_text(&self) -> String {
        self.plan.to_text()
    }
}

static SCRATCH: AtomicUsize = AtomicUsize::new(0);

/// Runs `p` on `host` under its lock and journal (in `opts.state_dir`, or a scratch
/// directory removed afterwards), undoing on failure. On success the journal is removed: a
/// mediated device is a host object that outlives this process until `mdev-remove`.
pub fn execute(
    host: &dyn HostOps,
    p: &MdevPlan,
    opts: &ApplyOptions,
) -> Result<Vec<Verified>, MdevError> {
    let (state_dir, scratch) = match &opts.state_dir {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!(
                "vm-device-{}-{}",
                std::process::id(),
                SCRATCH.fetch_add(1, Ordering::Relaxed)
            )),
            true,
        ),
    };
    let result = run_locked(host, p, &state_dir);
    if scratch && !matches!(&result, Err(e) if e.left_changes()) {
        let _ = std::fs::remove_dir_all(&state_dir);
    }
    result
}

/// How long a change waits for another one on the same parent (or PF, or VF) to finish:
/// changes of one parent serialize on its lock, and each takes well under a second.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// After waiting for the lock, the parent may have lost the room the plan (made before the
/// wait, by `plan_create`'s own check) counted on: another creation took it. Say so, naming
/// the parent, before touching the host.
fn check_room(host: &dyn HostOps, p: &MdevPlan) -> Result<(), MdevError> {
    for s in &p.plan.steps {
        let Action::Write { path, .. } = &s.action else {
            continue;
        };
        let Some(type_dir) = path.parent().filter(|_| path.ends_with("create")) else {
            continue;
        };
        let Some(types) = type_dir
            .parent()
            .filter(|t| t.ends_with("mdev_supported_types"))
        else {
            continue;
        };
        let parent = types
            .parent()
            .and_then(Path::file_name)
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let type_id = type_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let left = host.read_attr(&type_dir.join("available_instances"));
        if left.is_ok_and(|l| l.trim() == "0") {
            return Err(MdevError::NoInstances {
                type_id,
                parents: vec![parent],
                hint: "another creation on this parent took the last instance; remove an unused mediated device (`vm-cli gpu mdev-remove UUID`) or pick a type with room (`vm-cli gpu mdev-types`)".into(),
            });
        }
    }
    Ok(())
}

fn run_locked(
    host: &dyn HostOps,
    p: &MdevPlan,
    state_dir: &Path,
) -> Result<Vec<Verified>, MdevError> {
    let lock = PlanLock::acquire(state_dir, &p.plan.key, LOCK_WAIT).map_err(|e| match e {
        LockError::Busy { holder, path } => MdevError::Busy {
            target: p.target(),
            holder,
            waited_s: LOCK_WAIT.as_secs(),
            lock: path,
        },
        other => MdevError::Journal {
            path: GroupLock::path_for(state_dir, &p.plan.key),
            detail: other.to_string(),
        },
    })?;
    if lock.waited() {
        check_room(host, p)?;
    }
    let exec = lock.apply(host, &p.plan).map_err(|e| from_apply(*e))?;
    let journal = exec.into_journal();
    journal.remove().map_err(|e| MdevError::Journal {
        path: journal.path().to_path_buf(),
        detail: format!("cannot delete after success: {e}"),
    })?;
    // The plan's checks passed; this only reports the final state (group number, VFs), so a
    // read failing now does not turn a finished change into an error.
    Ok(p.expect
        .last()
        .and_then(|e| verify::check(host, e).ok())
        .into_iter()
        .collect())
}

/// An executor failure as an [`MdevError`] that names the errno and what is left.
pub fn from_apply(e: ApplyError) -> MdevError {
    let cause = match e.error {
        StepError::Host(h) => match &e.step.action {
            Action::Write { path, value } => MdevError::from_write(path, value, h),
            Action::WriteFile { path, .. } => MdevError::Persist {
                path: path.clone(),
                detail: if h.raw_os_error() == Some(17) {
                    "a definition with this UUID exists already: remove it (`mdevctl undefine`) or use another UUID".into()
                } else {
                    h.to_string()
                },
            },
            _ => MdevError::Host(h),
        },
        StepError::Verify { expected, found } => MdevError::Verify {
            step: expected,
            what: format!("it {found}"),
        },
        StepError::Journal { path, source } => MdevError::Journal {
            path,
            detail: source.to_string(),
        },
    };
    let mut left = e.undo.leftovers();
    if let Some(j) = &e.undo.journal_kept {
        left.push(format!(
            "the journal {} records what is left; undo it with vm-device's restore once the cause is fixed",
            j.display()
        ));
    }
    MdevError::StepFailed {
        index: e.index + 1,
        what: e.step.action.describe(),
        cause: Box::new(cause),
        left,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use vm_device_host::mock::MockHost;
    use vm_device_host::HostError;

    use super::*;
    use crate::plan::Journal;

    fn sriov_plan() -> MdevPlan {
        let dir = PathBuf::from("/sys/bus/pci/devices/0000:4b:00.0");
        let attr = dir.join("sriov_numvfs");
        let mut p = MdevPlan::new("sriov", "sriov-test");
        p.push(
            Action::Write {
                path: attr.clone(),
                value: "0".into(),
            },
            Some(Action::Write {
                path: attr.clone(),
                value: "4".into(),
            }),
            "pf",
            "disable",
        );
        p.expect(
            Expectation::Vfs {
                pf_dir: dir,
                count: 0,
            },
            "pf",
            "check",
        );
        p.push(
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
        );
        p
    }

    fn recording_host(
        refuse: &'static str,
        numvfs: &'static [u8],
    ) -> (MockHost, Arc<Mutex<Vec<String>>>) {
        let writes = Arc::new(Mutex::new(Vec::<String>::new()));
        let mut host = MockHost::new();
        let w = writes.clone();
        host.expect_write_attr().returning(move |_, v| {
            let v = String::from_utf8_lossy(v).into_owned();
            w.lock().unwrap().push(v.clone());
            if v == refuse {
                Err(HostError::errno("write", "sriov_numvfs", 34))
            } else {
                Ok(())
            }
        });
        host.expect_read().returning(move |p| {
            if p.ends_with("sriov_numvfs") {
                Ok(numvfs.to_vec())
            } else {
                Err(HostError::errno("read", p, 2))
            }
        });
        host.expect_read_link()
            .returning(|p| Err(HostError::errno("readlink", p, 2)));
        host.expect_canonicalize()
            .returning(|p| Err(HostError::errno("realpath", p, 2)));
        host.expect_kind().returning(|_| None);
        (host, writes)
    }

    fn opts(dir: &tempfile::TempDir) -> ApplyOptions {
        ApplyOptions {
            state_dir: Some(dir.path().to_path_buf()),
        }
    }

    #[test]
    fn sriov_expectation_checks_count_groups_and_no_extra_vf() {
        let checks = Expectation::Vfs {
            pf_dir: "/p".into(),
            count: 2,
        }
        .checks();
        let text: Vec<String> = checks.iter().map(|c| c.expectation()).collect();
        assert_eq!(
            text,
            [
                "/p/sriov_numvfs = 2",
                "/p/virtfn0/iommu_group exists",
                "/p/virtfn1/iommu_group exists",
                "/p/virtfn2 absent"
            ]
        );
    }

    #[test]
    fn refused_step_is_not_undone_and_earlier_steps_are_undone_in_reverse() {
        let (host, writes) = recording_host("2", b"0\n");
        let dir = tempfile::tempdir().unwrap();
        let err = execute(&host, &sriov_plan(), &opts(&dir)).unwrap_err();
        // "2" was refused (ERANGE): only step 1 is undone, by writing the old count back.
        assert_eq!(*writes.lock().unwrap(), ["0", "2", "4"]);
        assert_eq!(err.errno(), Some(34));
        assert!(err.undone(), "{err}");
        assert!(err.to_string().contains("ERANGE"), "{err}");
        assert!(!Journal::path_for(dir.path(), "sriov-test").exists());
    }

    #[test]
    fn failed_check_undoes_the_write_before_it() {
        // The kernel still reports the old VFs after the write of 0.
        let (host, writes) = recording_host("", b"4\n");
        let dir = tempfile::tempdir().unwrap();
        let err = execute(&host, &sriov_plan(), &opts(&dir)).unwrap_err();
        // The undo of the write (back to 4) already holds, since the count still reads 4:
        // it is skipped rather than written again.
        assert_eq!(*writes.lock().unwrap(), ["0"]);
        assert!(err.undone(), "{err}");
        assert!(
            matches!(&err, MdevError::StepFailed { index: 2, cause, .. } if matches!(**cause, MdevError::Verify { .. })),
            "{err}"
        );
    }

    #[test]
    fn success_leaves_no_journal_and_reports_what_it_verified() {
        let (host, writes) = recording_host("", b"0\n");
        let dir = tempfile::tempdir().unwrap();
        let mut p = sriov_plan();
        p.plan.steps.truncate(2);
        let v = execute(&host, &p, &opts(&dir)).unwrap();
        assert_eq!(*writes.lock().unwrap(), ["0"]);
        assert_eq!(v, vec![Verified::Vfs { vfs: Vec::new() }]);
        assert!(!Journal::path_for(dir.path(), "sriov-test").exists());
    }
}
