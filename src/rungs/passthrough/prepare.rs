//! Preparing a GPU for passthrough: plan, apply with a journal, release, restore.
//!
//! Per device to move (the GPU, its companions, group peers; see [`super::group`]):
//! 1. `drivers/D/unbind` ← ADDR (undo: `drivers/D/bind` ← ADDR);
//! 2. `driver_override` ← `vfio-pci` (undo: the original override, or `\n` to clear);
//! 3. `drivers_probe` ← ADDR (undo: `drivers/vfio-pci/unbind` ← ADDR);
//! 4. check that `driver` now points to `vfio-pci`;
//!
//! then a check that `/dev/vfio/GROUP` exists. The unbind comes before the override (the
//! other common order) because undo runs the inverses in reverse: the override must be
//! cleared before the original driver can bind again (an override restricts matching to the
//! named driver, kernel notes rule 12), and in this order it is.

use std::path::{Path, PathBuf};

use serde::Serialize;
use vm_device_host::{HostError, HostOps, PciAddress};

use super::device::PciDeviceInfo;
use super::error::PassthroughError;
use super::rules::{self, PassthroughFacts, Role};
use crate::ladder::{Reason, ReasonCode};
use crate::plan::{
    list_journals, restore_dead_in, Action, Check, Executor, GroupLock, Journal, JournalState,
    LockError, Owner, OwnerStatus, Plan, ReplayScope, RestoreReport, Step, UndoReport,
};

pub use super::rules::VFIO_PCI;

/// Options of a prepare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrepareOptions {
    /// Allow the boot display (`boot_vga` = 1) to be passed through.
    pub allow_boot_vga: bool,
    /// Journals and locks (default `/run/vm-device`, or `VM_STATE_DIR`).
    pub state_dir: PathBuf,
}

impl Default for PrepareOptions {
    fn default() -> Self {
        Self {
            allow_boot_vga: false,
            state_dir: crate::plan::default_state_dir(),
        }
    }
}

/// A device the plan moves to `vfio-pci`, with what it had before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MovedDevice {
    /// Address.
    pub address: PciAddress,
    /// Why it moves.
    pub role: Role,
    /// Its driver before.
    pub driver: Option<String>,
    /// Its `driver_override` before.
    pub driver_override: Option<String>,
}

/// What preparing one GPU will do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PassthroughPlan {
    /// The GPU asked for.
    pub target: PciAddress,
    /// Its IOMMU group.
    pub group: u32,
    /// Devices that move to `vfio-pci`.
    pub moved: Vec<MovedDevice>,
    /// Group members left as they are, and why.
    pub left: Vec<(PciAddress, Role)>,
    /// The steps.
    pub plan: Plan,
}

/// The journal and lock key of an IOMMU group.
pub fn group_key(group: u32) -> String {
    format!("group-{group}")
}

fn host_err(op: &'static str, device: PciAddress) -> impl Fn(HostError) -> PassthroughError {
    move |source| PassthroughError::Host { op, device, source }
}

fn refused(device: PciAddress, reason: Reason) -> PassthroughError {
    PassthroughError::Refused {
        device,
        reasons: vec![reason],
    }
}

/// The IOMMU group of `addr` (one link read); refusals say why there is none.
pub fn iommu_group_of(host: &dyn HostOps, addr: &PciAddress) -> Result<u32, PassthroughError> {
    let dir = PciDeviceInfo::sysfs_dir(addr);
    let link = dir.join("iommu_group");
    match host.read_link(&link) {
        Ok(t) if !host.is_dir(&link) => {
            // A link to a group the kernel does not have: no group, as the inventory reads it.
            let kind = crate::inventory::HostFacts::scan(host).iommu.kind;
            let mut r = rules::no_iommu_group(addr, kind);
            r.evidence = vec![format!("{} -> {} (absent)", link.display(), t.display())];
            Err(refused(*addr, r))
        }
        Ok(t) => t
            .file_name()
            .and_then(|n| n.to_string_lossy().parse().ok())
            .ok_or_else(|| {
                refused(
                    *addr,
                    Reason::new(
                        ReasonCode::UnreadableState,
                        format!("{addr}: iommu_group points to {}", t.display()),
                    ),
                )
            }),
        Err(e) if e.is_not_found() => Err(no_group(host, addr)),
        Err(e) => Err(host_err("read", *addr)(e)),
    }
}

fn no_group(host: &dyn HostOps, addr: &PciAddress) -> PassthroughError {
    if !host.exists(&PciDeviceInfo::sysfs_dir(addr)) {
        return refused(
            *addr,
            Reason::new(
                ReasonCode::DeviceNotFound,
                format!("{addr} is not a PCI function of this host"),
            )
            .evidence(format!("/sys/bus/pci/devices/{addr} does not exist"))
            .remedy("pick a GPU from `vm-cli gpu list`"),
        );
    }
    let facts = crate::inventory::HostFacts::scan(host);
    if !facts.iommu.enabled {
        return refused(*addr, crate::ladder::reasons::iommu_off(&facts));
    }
    refused(*addr, rules::no_iommu_group(addr, facts.iommu.kind))
}

/// Builds the plan to prepare `addr` for passthrough: reads the host, changes nothing.
pub fn plan_prepare(
    host: &dyn HostOps,
    addr: &PciAddress,
    allow_boot_vga: bool,
) -> Result<PassthroughPlan, PassthroughError> {
    let group = iommu_group_of(host, addr)?;
    plan_in_group(host, addr, group, allow_boot_vga)
}

/// The passthrough rules' facts about `addr`, read from the live host (what `gpu prepare`
/// judges just before changing it): its group's members and the host processes holding
/// their device nodes. The inventory-time probe feeds the same rules from a scan
/// ([`super::probe::facts`]).
pub fn read_facts(
    host: &dyn HostOps,
    addr: &PciAddress,
) -> Result<PassthroughFacts, PassthroughError> {
    let group = iommu_group_of(host, addr)?;
    Ok(read_facts_in_group(host, addr, group)?.0)
}

/// [`read_facts`] in a known group, with the devices read. A function that is no display
/// function gets only its own facts: the rules refuse it whatever its group holds.
fn read_facts_in_group(
    host: &dyn HostOps,
    addr: &PciAddress,
    group: u32,
) -> Result<(PassthroughFacts, Vec<PciDeviceInfo>), PassthroughError> {
    let mut reader = crate::inventory::PciReader::new(host);
    let target = PciDeviceInfo::read_with(&mut reader, host, addr, Some(group))
        .map_err(host_err("read", *addr))?;
    let mut infos = vec![target.clone()];
    if target.is_display() {
        let group_dir = PathBuf::from(format!("/sys/kernel/iommu_groups/{group}/devices"));
        let names = host
            .list_dir(&group_dir)
            .map_err(host_err("list group of", *addr))?;
        for n in names {
            let Ok(a) = n.parse::<PciAddress>() else {
                continue;
            };
            if a != *addr {
                infos.push(
                    PciDeviceInfo::read_with(&mut reader, host, &a, Some(group))
                        .map_err(host_err("read", a))?,
                );
            }
        }
    }
    let mut facts = PassthroughFacts {
        gpu: *addr,
        group,
        members: infos.iter().map(PciDeviceInfo::facts).collect(),
        holders: Vec::new(),
    };
    // One /proc scan for the nodes of the group's members (none: no scan).
    let nodes: Vec<PathBuf> = infos
        .iter()
        .flat_map(|i| i.device_nodes.iter().cloned())
        .collect();
    if !nodes.is_empty() {
        facts.holders = host
            .processes_holding(&nodes)
            .map_err(host_err("scan /proc for holders of", *addr))?;
    }
    Ok((facts, infos))
}

fn plan_in_group(
    host: &dyn HostOps,
    addr: &PciAddress,
    group: u32,
    allow_boot_vga: bool,
) -> Result<PassthroughPlan, PassthroughError> {
    let (facts, infos) = read_facts_in_group(host, addr, group)?;
    let judgement = rules::judge(&facts, allow_boot_vga);
    if !judgement.reasons.is_empty() {
        return Err(PassthroughError::Refused {
            device: *addr,
            reasons: judgement.reasons,
        });
    }
    let info_of = |a: &PciAddress| infos.iter().find(|i| i.address == *a);
    // A rebound DRM driver takes the lowest free card minor (kernel notes, rule 36). Undo
    // runs in reverse, so moving the highest minor first rebinds the lowest first and every
    // card gets its number back.
    let mut class = judgement.classification;
    class
        .moved
        .sort_by_key(|(a, _)| std::cmp::Reverse(info_of(a).and_then(PciDeviceInfo::card_minor)));

    let mut steps = Vec::new();
    let mut origin = Vec::new();
    let mut moved = Vec::new();
    if !class.moved.is_empty() {
        let modules = host.loaded_modules().unwrap_or_default();
        let loaded = |m: &str| modules.iter().any(|x| x.replace('-', "_") == m);
        for (m, why) in [
            ("vfio_pci", "vfio-pci drives the devices handed to VMs"),
            (
                "vfio_iommu_type1",
                "VFIO containers need the type1 IOMMU backend",
            ),
        ] {
            if !loaded(m) {
                steps.push(Step::new(
                    Action::LoadModule {
                        name: m.to_string(),
                    },
                    None,
                    m,
                    why,
                ));
            }
        }
    }
    for (a, role) in &class.moved {
        let Some(info) = info_of(a) else { continue };
        let dir = PciDeviceInfo::sysfs_dir(a);
        let dev = a.to_string();
        let why_dev = match role {
            Role::Target => "the GPU".to_string(),
            Role::Companion => format!("a function on the slot of {addr}"),
            Role::GroupPeer => format!("a GPU sharing IOMMU group {group}"),
            Role::PeerCompanion => format!("a companion of a GPU in IOMMU group {group}"),
            _ => "in the group".to_string(),
        };
        if let Some(d) = &info.driver {
            steps.push(Step::new(
                Action::Write {
                    path: PathBuf::from(format!("/sys/bus/pci/drivers/{d}/unbind")),
                    value: dev.clone(),
                },
                Some(Action::Write {
                    path: PathBuf::from(format!("/sys/bus/pci/drivers/{d}/bind")),
                    value: dev.clone(),
                }),
                &dev,
                format!("unbind {why_dev} from {d}"),
            ));
        }
        if info.driver_override.as_deref() != Some(VFIO_PCI) {
            steps.push(Step::new(
                Action::Write {
                    path: dir.join("driver_override"),
                    value: VFIO_PCI.to_string(),
                },
                Some(Action::Write {
                    path: dir.join("driver_override"),
                    value: info
                        .driver_override
                        .clone()
                        .unwrap_or_else(|| "\n".to_string()),
                }),
                &dev,
                "only vfio-pci may claim it at the next probe",
            ));
        }
        steps.push(Step::new(
            Action::Write {
                path: PathBuf::from("/sys/bus/pci/drivers_probe"),
                value: dev.clone(),
            },
            Some(Action::Write {
                path: PathBuf::from(format!("/sys/bus/pci/drivers/{VFIO_PCI}/unbind")),
                value: dev.clone(),
            }),
            &dev,
            "probe: vfio-pci binds it",
        ));
        steps.push(Step::new(
            Action::Verify(Check::LinkName {
                path: dir.join("driver"),
                name: Some(VFIO_PCI.to_string()),
            }),
            None,
            &dev,
            "vfio-pci bound it",
        ));
        origin.push(Check::LinkName {
            path: dir.join("driver"),
            name: info.driver.clone(),
        });
        origin.push(Check::Content {
            path: dir.join("driver_override"),
            value: info
                .driver_override
                .clone()
                .unwrap_or_else(|| "(null)".to_string()),
        });
        moved.push(MovedDevice {
            address: *a,
            role: *role,
            driver: info.driver.clone(),
            driver_override: info.driver_override.clone(),
        });
    }
    steps.push(Step::new(
        Action::Verify(Check::Exists {
            path: PathBuf::from(format!("/dev/vfio/{group}")),
        }),
        None,
        format!("group {group}"),
        "the VFIO group device exists",
    ));
    Ok(PassthroughPlan {
        target: *addr,
        group,
        moved,
        left: class.left,
        plan: Plan {
            subject: format!("prepare {addr} (IOMMU group {group}) for passthrough"),
            key: group_key(group),
            steps,
            origin,
        },
    })
}

/// A prepared group: its journal and lock, and the plan that was applied.
#[derive(Debug)]
pub(crate) struct Held {
    pub(crate) exec: Executor,
    pub(crate) plan: PassthroughPlan,
}

impl Held {
    pub(crate) fn release(mut self, host: &dyn HostOps) -> Result<UndoReport, PassthroughError> {
        let report = self.exec.undo(host);
        if report.complete() {
            Ok(report)
        } else {
            Err(PassthroughError::ReleaseIncomplete {
                group: self.plan.group,
                report: Box::new(report),
            })
        }
    }
}

/// The devices of a prepared group that VFIO opens: every moved device and every member
/// that was already on vfio-pci (GPU functions first).
pub(crate) fn vfio_devices(plan: &PassthroughPlan) -> Vec<PciAddress> {
    let mut out: Vec<PciAddress> = plan.moved.iter().map(|m| m.address).collect();
    out.extend(
        plan.left
            .iter()
            .filter(|(_, r)| *r == Role::AlreadyVfio)
            .map(|(a, _)| *a),
    );
    out.sort();
    out
}

/// Locks the group of `addr`, reclaims a journal left by a dead owner, plans and applies.
pub(crate) fn prepare_held(
    host: &dyn HostOps,
    addr: &PciAddress,
    opts: &PrepareOptions,
) -> Result<Held, PassthroughError> {
    let group = iommu_group_of(host, addr)?;
    prepare_held_in(host, addr, group, opts)
}

/// [`prepare_held`] in the group just read for `addr`.
fn prepare_held_in(
    host: &dyn HostOps,
    addr: &PciAddress,
    group: u32,
    opts: &PrepareOptions,
) -> Result<Held, PassthroughError> {
    let key = group_key(group);
    let mut lock =
        match crate::plan::PlanLock::acquire(&opts.state_dir, &key, std::time::Duration::ZERO) {
            Ok(l) => l,
            Err(LockError::Busy { holder, .. }) => {
                let who = match Journal::load_key(&opts.state_dir, &key) {
                    Ok(Some(j)) => format!("pid {} ({})", j.owner.pid, j.owner.program),
                    _ => format!("pid {holder}"),
                };
                return Err(PassthroughError::Busy {
                    device: *addr,
                    group,
                    holder: who,
                });
            }
            Err(e) => return Err(lock_failed(&opts.state_dir, &key, e)),
        };
    match lock.left_journal() {
        Ok(None) => {}
        Ok(Some(j)) if j.detached && j.state == JournalState::Prepared => {
            return Err(PassthroughError::Busy {
                device: *addr,
                group,
                holder: format!(
                    "`{}` (pid {}, prepared on purpose)",
                    j.owner.program, j.owner.pid
                ),
            });
        }
        Ok(Some(j)) => {
            // The lock was free, so its owner is gone: reclaim the group first — if the
            // journal is this host's and asks only for what vm-device does.
            if let Err(why) = j.check_replayable(host, &ReplayScope::default()) {
                return Err(PassthroughError::State {
                    path: j.path().to_path_buf(),
                    message: format!("the journal of IOMMU group {group} is in the way: {why}"),
                });
            }
            let (kept, report) = lock.reclaim(host, j);
            if !report.complete() {
                return Err(PassthroughError::ReleaseIncomplete {
                    group,
                    report: Box::new(report),
                });
            }
            lock = kept;
        }
        Err(e) => {
            return Err(PassthroughError::State {
                path: lock.journal_path(),
                message: e.to_string(),
            })
        }
    }
    let plan = plan_in_group(host, addr, group, opts.allow_boot_vga)?;
    match lock.apply(host, &plan.plan) {
        Ok(exec) => Ok(Held { exec, plan }),
        Err(failure) => Err(PassthroughError::StepFailed {
            device: *addr,
            failure,
        }),
    }
}

/// A GPU prepared for passthrough, borrowed host. Dropping it gives the devices back
/// ([`Prepared::release`] does the same and reports); [`Prepared::detach`] leaves them
/// prepared for a later `vm-cli gpu release`.
pub struct Prepared<'h> {
    host: &'h dyn HostOps,
    held: Option<Held>,
}

impl std::fmt::Debug for Prepared<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("held", &self.held)
            .finish()
    }
}

impl<'h> Prepared<'h> {
    /// The plan that was applied.
    pub fn plan(&self) -> &PassthroughPlan {
        &self.held.as_ref().expect("held until release").plan
    }

    /// The journal file.
    pub fn journal_path(&self) -> PathBuf {
        self.held
            .as_ref()
            .expect("held until release")
            .exec
            .journal()
            .path()
            .to_path_buf()
    }

    /// True when `addr` is one of the devices this group's VFIO users get: moved to
    /// vfio-pci by the plan, or already there.
    pub fn covers(&self, addr: &PciAddress) -> bool {
        vfio_devices(self.plan()).contains(addr)
    }

    /// Opens the group through VFIO (container, group, type1 IOMMU) and every device on
    /// vfio-pci in it (the moved ones, or those already there), with their regions. The
    /// session borrows this handle: it must be closed (dropped) before the release.
    pub fn open_vfio(&self) -> Result<super::VfioSession<'_>, PassthroughError> {
        let plan = self.plan();
        let devices = vfio_devices(plan);
        let handles = super::VfioHandles::open(self.host, plan.group, &devices)?;
        Ok(super::VfioSession {
            host: self.host,
            handles,
        })
    }

    /// Gives every moved device back to its original driver and override.
    pub fn release(mut self) -> Result<UndoReport, PassthroughError> {
        let held = self.held.take().expect("held until release");
        held.release(self.host)
    }

    /// Keeps the devices on vfio-pci after this process exits: the journal is marked
    /// detached and the lock dropped; `vm-cli gpu release ADDR` gives them back.
    pub fn detach(mut self) -> Result<PathBuf, PassthroughError> {
        let held = self.held.take().expect("held until release");
        let mut exec = held.exec;
        exec.detach().map_err(|e| PassthroughError::State {
            path: exec.journal().path().to_path_buf(),
            message: e.to_string(),
        })?;
        Ok(exec.into_journal().path().to_path_buf())
    }
}

impl Drop for Prepared<'_> {
    fn drop(&mut self) {
        // While panicking the process may be in any state: leave the journal to `restore`.
        if std::thread::panicking() {
            return;
        }
        if let Some(held) = self.held.take() {
            // A failed release keeps its journal; `vm-cli gpu restore` finishes it.
            let _ = held.release(self.host);
        }
    }
}

/// Prepares `addr` for passthrough on `host`: refusals first, then the plan applied with
/// a journal under `opts.state_dir` and the group lock held until the handle is released.
pub fn prepare<'h>(
    host: &'h dyn HostOps,
    addr: &PciAddress,
    opts: &PrepareOptions,
) -> Result<Prepared<'h>, PassthroughError> {
    let held = prepare_held(host, addr, opts)?;
    Ok(Prepared {
        host,
        held: Some(held),
    })
}

/// A batch prepare stopped at one GPU; the groups it had prepared before were given back
/// (newest first).
#[derive(Debug, thiserror::Error)]
#[error("{source}{}", if undo_left.is_empty() { String::new() } else { format!("; giving back the groups prepared before it left:\n  {}", undo_left.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  ")) })]
pub struct BatchError {
    /// The GPU whose prepare failed.
    pub device: PciAddress,
    /// Why (its own changes were undone as this says).
    pub source: Box<PassthroughError>,
    /// Releases of earlier groups that left something (their journals stay for
    /// `vm-cli gpu restore`); empty when the host is as it was.
    pub undo_left: Vec<PassthroughError>,
}

/// Prepares every GPU of `gpus` for passthrough, in order: one journaled plan per IOMMU
/// group, each under its own lock, exactly as [`prepare`] does it. A GPU whose group an
/// earlier GPU of the list already moved (a group peer) is not prepared again: the handle of
/// that group covers it. When one fails, the groups prepared before it are released, newest
/// first, before the error returns. The handles come back in the order their groups were
/// prepared; [`Prepared::covers`] says which GPUs each holds.
pub fn prepare_batch<'h>(
    host: &'h dyn HostOps,
    gpus: &[PciAddress],
    opts: &PrepareOptions,
) -> Result<Vec<Prepared<'h>>, BatchError> {
    let mut done: Vec<Prepared<'h>> = Vec::new();
    for addr in gpus {
        let held = iommu_group_of(host, addr).and_then(|group| {
            match done.iter().find(|p| p.plan().group == group) {
                Some(p) if p.covers(addr) => Ok(None),
                Some(p) => Err(PassthroughError::State {
                    path: p.journal_path(),
                    message: format!(
                        "{addr} is in IOMMU group {group}, which was prepared for {} without moving {addr} to vfio-pci",
                        p.plan().target
                    ),
                }),
                None => prepare_held_in(host, addr, group, opts).map(Some),
            }
        });
        match held {
            Ok(Some(held)) => done.push(Prepared {
                host,
                held: Some(held),
            }),
            Ok(None) => {}
            Err(source) => {
                let undo_left = done
                    .into_iter()
                    .rev()
                    .filter_map(|p| p.release().err())
                    .collect();
                return Err(BatchError {
                    device: *addr,
                    source: Box::new(source),
                    undo_left,
                });
            }
        }
    }
    Ok(done)
}

/// A lock that could not be taken for a reason other than another holder.
fn lock_failed(state_dir: &Path, key: &str, e: LockError) -> PassthroughError {
    match e {
        LockError::State(e) => PassthroughError::State {
            path: e.path().to_path_buf(),
            message: e.to_string(),
        },
        other => PassthroughError::State {
            path: GroupLock::path_for(state_dir, key),
            message: format!(
                "{other}; pass a writable --state-dir (default /run/vm-device needs root)"
            ),
        },
    }
}

/// Gives back the group of `addr` prepared by another (exited) process, from its journal.
/// Refused when the journal is another host's, asks for what vm-device never does, or does
/// not list `addr` (group numbers are reused after hot-plug or reboot).
pub fn release(
    host: &dyn HostOps,
    addr: &PciAddress,
    state_dir: &Path,
) -> Result<UndoReport, PassthroughError> {
    let group = iommu_group_of(host, addr)?;
    let key = group_key(group);
    let journal = match Journal::load_key(state_dir, &key) {
        Ok(Some(j)) => j,
        Ok(None) => {
            return Err(PassthroughError::NotPrepared {
                device: *addr,
                group,
                state_dir: state_dir.to_path_buf(),
            })
        }
        Err(e) => {
            return Err(PassthroughError::State {
                path: Journal::path_for(state_dir, &key),
                message: e.to_string(),
            })
        }
    };
    if let Err(why) = journal.check_replayable(host, &ReplayScope::default()) {
        return Err(PassthroughError::State {
            path: journal.path().to_path_buf(),
            message: why,
        });
    }
    let listed = journal_devices(&journal);
    if !listed.contains(&addr.to_string()) {
        return Err(PassthroughError::NotInJournal {
            device: *addr,
            group,
            journal: journal.path().to_path_buf(),
            listed,
        });
    }
    let lock = match GroupLock::try_acquire(state_dir, &key) {
        Ok(l) => l,
        Err(LockError::Busy { .. }) => {
            return Err(PassthroughError::Busy {
                device: *addr,
                group,
                holder: format!(
                    "pid {} ({}), which is still running",
                    journal.owner.pid, journal.owner.program
                ),
            })
        }
        Err(e) => return Err(lock_failed(state_dir, &key, e)),
    };
    let mut exec = Executor::resume(journal, lock);
    let report = exec.undo(host);
    if report.complete() {
        Ok(report)
    } else {
        Err(PassthroughError::ReleaseIncomplete {
            group,
            report: Box::new(report),
        })
    }
}

/// The PCI devices a passthrough journal moved (its steps' devices that are addresses).
fn journal_devices(j: &Journal) -> Vec<String> {
    let mut out: Vec<String> = j
        .steps
        .iter()
        .map(|s| s.step.device.clone())
        .filter(|d| d.parse::<PciAddress>().is_ok())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Replays the journals of processes that died mid-plan or while holding a group (sysfs
/// actions only; see [`restore_in`]).
pub fn restore(host: &dyn HostOps, state_dir: &Path) -> RestoreReport {
    restore_in(host, state_dir, &ReplayScope::default())
}

/// [`restore`], deleting mdevctl definitions under `scope.config_root` too.
pub fn restore_in(host: &dyn HostOps, state_dir: &Path, scope: &ReplayScope) -> RestoreReport {
    restore_dead_in(host, state_dir, scope)
}

/// Who holds a prepared group, for `gpu list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupHolder {
    /// Journal key (`group-7`).
    pub key: String,
    /// What was prepared.
    pub subject: String,
    /// The owner.
    pub owner: Owner,
    /// `alive` or `dead`.
    pub owner_status: OwnerStatus,
    /// True while the owner holds the group lock.
    pub locked: bool,
    /// Prepared on purpose by `vm-cli gpu prepare`.
    pub detached: bool,
    /// Where the plan stands.
    pub state: JournalState,
    /// The journal file.
    pub journal: PathBuf,
}

impl GroupHolder {
    /// True when `vm-cli gpu restore` (or the next prepare) would reclaim it.
    pub fn stale(&self) -> bool {
        let kept_on_purpose = self.detached && self.state == JournalState::Prepared;
        !self.locked && !kept_on_purpose
    }
}

/// Every journal under `state_dir`, with its owner's status.
/// Owners' liveness is this machine's, whatever `host` is (see [`Owner::status`]).
pub fn holders(host: &dyn HostOps, state_dir: &Path) -> Vec<GroupHolder> {
    let _ = host;
    list_journals(state_dir)
        .unwrap_or_default()
        .into_iter()
        .filter_map(Result::ok)
        .map(|j| GroupHolder {
            locked: GroupLock::is_held(state_dir, &j.key),
            owner_status: j.owner.status(),
            key: j.key.clone(),
            subject: j.subject.clone(),
            owner: j.owner.clone(),
            detached: j.detached,
            state: j.state,
            journal: j.path().to_path_buf(),
        })
        .collect()
}
