//! Applying the configuration to the host at start, and giving everything back at a clean
//! stop. Every change goes through vm-device's journaled plans, and the agent keeps each
//! journal (owned by its process, not detached) for as long as it runs: a crash or
//! `kill -9` leaves them to `vm-cli gpu restore`, which undoes them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use vm_device::gpu_manager::GpuMode;
use vm_device::host::Host;
use vm_device::inventory::HostInventory;
use vm_device::ladder::Target;
use vm_device::plan::{Executor, GroupLock, Journal, LockError, UndoReport};
use vm_device::rungs::mdev::{self, lifecycle, Choice, MdevPlan, TypeRequest};
use vm_device::rungs::passthrough::{self, PrepareOptions, Prepared};
use vm_passthrough::{HostOps, PciAddress};

use crate::config::{Config, PassthroughSel};
use crate::offer::{self, DeviceKind, Owned};

/// A change the agent made, newest last; given back newest first.
enum Change {
    /// A GPU's IOMMU group on vfio-pci, with its lock held.
    Prepared(Box<Prepared<'static>>),
    /// An mdev creation or an `sriov_numvfs` write, journaled under the agent's own key.
    Journaled(Box<Executor>),
}

/// What the agent changed on the host, and what it offers because of it.
pub struct Setup {
    host: &'static dyn HostOps,
    changes: Vec<Change>,
    /// The resources and their devices.
    pub owned: Owned,
}

/// A configuration the host could not be given; every change made before it was undone.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {detail}{}", if undo_left.is_empty() { String::new() } else { format!("; undoing what was done left: {} (run `vm-cli gpu restore`)", undo_left.join("; ")) })]
pub struct SetupError {
    /// The step of the configuration that failed.
    pub what: String,
    /// Why.
    pub detail: String,
    /// What the undo could not give back.
    pub undo_left: Vec<String>,
}

/// How long a change waits for the parent lock another vm-cli holds.
pub(crate) const LOCK_WAIT: Duration = Duration::from_secs(20);

impl Setup {
    /// Applies `cfg` on `host`: SR-IOV counts, then mdevs, then passthrough GPUs; a failure
    /// undoes everything done before it. `state_dir` holds the journals and locks.
    pub fn apply(host: Host, cfg: &Config, state_dir: &Path) -> Result<Setup, SetupError> {
        // Prepared handles borrow the host for as long as the agent runs: one leaked
        // reference per agent, freed by the process's exit.
        let host: &'static dyn HostOps = &**Box::leak(Box::new(host));
        let mut setup = Setup {
            host,
            changes: Vec::new(),
            owned: Owned::default(),
        };
        match setup.apply_all(cfg, state_dir) {
            Ok(()) => Ok(setup),
            Err((what, detail)) => {
                let left = setup.give_back();
                Err(SetupError {
                    what,
                    detail,
                    undo_left: left,
                })
            }
        }
    }

    fn apply_all(&mut self, cfg: &Config, state_dir: &Path) -> Result<(), (String, String)> {
        for s in &cfg.sriov {
            let what = format!("sriov {} num_vfs {}", s.pf, s.num_vfs);
            let inv = HostInventory::scan(self.host);
            let plan = lifecycle::plan_sriov(&inv, &s.pf, s.num_vfs)
                .map_err(|e| (what.clone(), e.to_string()))?;
            let key = format!("agent-sriov-{}", s.pf);
            self.run_journaled(&plan, &key, state_dir)
                .map_err(|e| (what.clone(), e))?;
        }
        for m in &cfg.mdev {
            for i in 0..m.count {
                let what = format!("mdev {} ({} of {})", m.mdev_type, i + 1, m.count);
                let inv = HostInventory::scan(self.host);
                let req = lifecycle::CreateRequest {
                    ty: TypeRequest {
                        wanted: m.mdev_type.clone(),
                        parent: m.parent.clone(),
                        numa_node: m.numa_node,
                    },
                    uuid: lifecycle::UuidSource::Random,
                    persist: None,
                };
                let planned = lifecycle::plan_create(&inv, &req)
                    .map_err(|e| (what.clone(), e.to_string()))?;
                let key = format!("agent-mdev-{}", planned.device);
                self.run_journaled(&planned.plan, &key, state_dir)
                    .map_err(|e| (what.clone(), e))?;
                let (resource, kind) = match &planned.choice {
                    Choice::Mdev {
                        parent, type_id, ..
                    } => (
                        offer::mdev_resource(type_id),
                        DeviceKind::Mdev {
                            uuid: planned.device.clone(),
                            parent: parent.clone(),
                        },
                    ),
                    // A vendor-VFIO vGPU lives on a VF, which the VM gets as a PCI device.
                    Choice::NvidiaVfio { vf, type_id, .. } => (
                        offer::mdev_resource(&format!("nvidia-{type_id}")),
                        DeviceKind::Pci { address: *vf },
                    ),
                };
                if let DeviceKind::Pci { address } = &kind {
                    self.prepare(address, cfg.allow_boot_vga, state_dir)
                        .map_err(|e| (what.clone(), e))?;
                }
                self.owned.resources.entry(resource).or_default().push(kind);
            }
        }
        // One scan of the GPUs (not of every function of the host) picks them and names
        // their resources (vendor and device ids do not change with the driver); each
        // prepare re-reads its own group just before it changes it.
        let inv = HostInventory::scan_gpus(self.host);
        let mut gpus: Vec<PciAddress> = match &cfg.passthrough {
            PassthroughSel::Addresses(a) => a.clone(),
            PassthroughSel::Available => available_in(&inv),
        };
        // An address listed twice is one device, offered once.
        let mut seen = std::collections::BTreeSet::new();
        gpus.retain(|a| seen.insert(*a));
        let opts = PrepareOptions {
            allow_boot_vga: cfg.allow_boot_vga,
            state_dir: state_dir.to_path_buf(),
        };
        // A failure gives back the groups the batch prepared; `apply` the rest.
        let prepared = passthrough::prepare_batch(self.host, &gpus, &opts)
            .map_err(|e| (format!("passthrough {}", e.device), e.to_string()))?;
        self.changes
            .extend(prepared.into_iter().map(|p| Change::Prepared(Box::new(p))));
        for addr in gpus {
            let f = inv.functions.iter().find(|f| f.address == addr);
            let resource = match f.and_then(|f| f.vendor_id.zip(f.device_id)) {
                Some((v, d)) => offer::pci_resource(v, d),
                None => {
                    return Err((
                        format!("passthrough {addr}"),
                        "its vendor and device ids cannot be read".into(),
                    ))
                }
            };
            self.owned
                .resources
                .entry(resource)
                .or_default()
                .push(DeviceKind::Pci { address: addr });
        }
        if cfg.wgpu_shares > 0 {
            wgpu_available(self.host)
                .map_err(|why| (format!("wgpu_shares {}", cfg.wgpu_shares), why))?;
            self.owned.resources.insert(
                offer::wgpu_resource(),
                (0..cfg.wgpu_shares)
                    .map(|index| DeviceKind::WgpuShare { index })
                    .collect(),
            );
        }
        Ok(())
    }

    fn prepare(
        &mut self,
        addr: &PciAddress,
        allow_boot_vga: bool,
        state_dir: &Path,
    ) -> Result<(), String> {
        let opts = PrepareOptions {
            allow_boot_vga,
            state_dir: state_dir.to_path_buf(),
        };
        let p = passthrough::prepare(self.host, addr, &opts).map_err(|e| e.to_string())?;
        self.changes.push(Change::Prepared(Box::new(p)));
        Ok(())
    }

    /// Applies an mdev or SR-IOV plan under the parent's lock (as `vm-cli gpu mdev-create`
    /// does), journaled under `key`, and keeps the journal and its lock until the agent
    /// gives the change back.
    fn run_journaled(&mut self, p: &MdevPlan, key: &str, state_dir: &Path) -> Result<(), String> {
        let exec = apply_journaled(self.host, p, key, state_dir)?;
        self.changes.push(Change::Journaled(Box::new(exec)));
        Ok(())
    }

    /// Gives every change back, newest first. Returns what could not be undone (its
    /// journal stays for `vm-cli gpu restore`).
    pub fn give_back(&mut self) -> Vec<String> {
        let mut left = Vec::new();
        while let Some(c) = self.changes.pop() {
            match c {
                Change::Prepared(p) => {
                    let journal = p.journal_path();
                    match p.release() {
                        Ok(r) => left.extend(undo_left(&r, &journal)),
                        Err(e) => left.push(e.to_string()),
                    }
                }
                Change::Journaled(mut exec) => {
                    let journal = exec.journal().path().to_path_buf();
                    let r = exec.undo(self.host);
                    left.extend(undo_left(&r, &journal));
                }
            }
        }
        self.owned = Owned::default();
        left
    }

    /// The host the changes were made on.
    pub fn host(&self) -> &'static dyn HostOps {
        self.host
    }
}

/// Applies an mdev or SR-IOV plan under the parent's lock (as `vm-cli gpu mdev-create`
/// does), journaled under `key`, and checks the kernel shows what the plan promised. The
/// executor holds the journal and `key`'s lock; a failed check undoes the plan.
pub(crate) fn apply_journaled(
    host: &dyn HostOps,
    p: &MdevPlan,
    key: &str,
    state_dir: &Path,
) -> Result<Executor, String> {
    let _parent = lock_within(state_dir, &p.plan.key)?;
    let own = GroupLock::try_acquire(state_dir, key).map_err(|e| e.to_string())?;
    let journal = Journal::new(state_dir, key, &p.plan.subject, host, p.plan.origin.clone());
    let mut exec = Executor::new(journal, own);
    exec.apply(host, &p.plan).map_err(|e| e.to_string())?;
    for e in &p.expect {
        if let Err(why) = mdev::verify::check(host, e) {
            let _ = exec.undo(host);
            return Err(why.to_string());
        }
    }
    Ok(exec)
}

/// The lock of `key`, waiting up to [`LOCK_WAIT`] for another vm-cli to let go (changes
/// of one mdev parent or PF serialize on it, as `vm-cli gpu mdev-create`'s do).
pub(crate) fn lock_within(state_dir: &Path, key: &str) -> Result<GroupLock, String> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match GroupLock::try_acquire(state_dir, key) {
            Ok(l) => return Ok(l),
            Err(LockError::Busy { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

pub(crate) fn undo_left(r: &UndoReport, journal: &Path) -> Vec<String> {
    if r.complete() {
        return Vec::new();
    }
    let mut v: Vec<String> = r
        .failures
        .iter()
        .map(|f| format!("{} ({}): {}", f.step.why, f.step.device, f.error))
        .chain(r.left.iter().cloned())
        .chain(r.journal_error.iter().cloned())
        .collect();
    v.push(format!("journal kept: {}", journal.display()));
    v
}

/// The GPUs the passthrough rung finds available (`vm-cli gpu list`'s available
/// passthrough candidates).
pub fn available_gpus(host: &dyn HostOps) -> Vec<PciAddress> {
    available_in(&HostInventory::scan_gpus(host))
}

/// [`available_gpus`] in a scan already made.
pub fn available_in(inv: &HostInventory) -> Vec<PciAddress> {
    let filter = vm_device::ladder::Filter::default();
    passthrough::probe(inv, &filter)
        .into_iter()
        .filter(|c| c.is_available() && c.mode() == GpuMode::Passthrough)
        .filter_map(|c| match c.target {
            Target::Gpu { address, .. } => Some(address),
            _ => None,
        })
        .collect()
}

/// Whether the software rung can serve on this host (a wgpu adapter is available, as
/// `vm-cli gpu list` shows it); the first reason when not.
pub fn wgpu_available(host: &'static dyn HostOps) -> Result<(), String> {
    let inv = HostInventory::scan(host);
    let adapters = host.probe_adapters().map_err(|e| e.to_string());
    let filter = vm_device::ladder::Filter::default();
    let candidates = vm_device::rungs::wgpu::probe(&inv, &adapters, &filter);
    if candidates.iter().any(|c| c.is_available()) {
        return Ok(());
    }
    Err(candidates
        .first()
        .and_then(|c| c.reason())
        .map(|r| format!("the wgpu rung is unavailable: {}", r.message))
        .unwrap_or_else(|| "the wgpu rung is unavailable".into()))
}

/// The state directory of a run: `--state-dir`, else the simulation's (`SIM/state`) or
/// the default (`VM_STATE_DIR`, `/run/vm-device`), as vm-cli chooses it.
pub fn state_dir(explicit: Option<PathBuf>, sim_state: Option<&Path>) -> PathBuf {
    match (explicit, sim_state) {
        (Some(d), _) => d,
        (None, Some(s)) => s.join("state"),
        (None, None) => vm_device::plan::default_state_dir(),
    }
}
