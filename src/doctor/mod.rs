//! `vm-cli gpu doctor`: the product guide's troubleshooting, run as checks.
//!
//! Each [`Check`] looks at one thing (a sysfs attribute, a `/proc` file, a device node, the
//! rung candidates the manager computed) and says `ok`, `warn` or `fail`, what it looked at,
//! and, when not ok, a remedy a user can paste into a shell: command lines, with `# ` comment
//! lines where only a person can act (firmware setup, moving a card).
//!
//! The checks are pure over the [`HostInventory`] and the rung [`Candidate`]s where they can
//! be; the few extra files (`/proc/cpuinfo` flags, `/proc/self/limits`, VT-d `ecap`, boot
//! loader configuration, device-node access, processes holding nodes) are read through
//! [`HostOps`], one small read each. Rung reasons already computed by the probes are reused,
//! not recomputed.

mod gpu;
mod host;
mod remedy;
mod rungs;
mod tuning;

use serde::Serialize;
use vm_device_host::PciAddress;

use crate::host::HostOps;
use crate::inventory::HostInventory;
use crate::ladder::{Candidate, GpuMode, Target};

pub use remedy::{FIX_VFIO_PERMISSIONS, REMEDY_COMMANDS};

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Nothing to do.
    Ok,
    /// Works, but something may bite (no FLR, a module that will have to be loaded, an
    /// unknown value).
    Warn,
    /// Blocks the rung (or, with `rung: None`, every rung) for the device it names.
    Fail,
}

impl Status {
    /// `ok`, `warn`, `fail`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

/// One check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Stable id (`iommu.enabled`, `gpu.0000:01:00.0.group`).
    pub id: String,
    /// The rung it is about; `None` for what every rung needs (KVM).
    pub rung: Option<GpuMode>,
    /// The device it is about (a PCI address or mdev parent name); `None` for host-wide.
    pub device: Option<String>,
    /// One line: what was found.
    pub title: String,
    /// The outcome.
    pub status: Status,
    /// What it looked at: files with their values, or commands.
    pub evidence: Vec<String>,
    /// When not ok: lines to paste into a shell (`# ` lines explain).
    pub remedy: Option<String>,
}

impl Check {
    pub(crate) fn new(
        id: impl Into<String>,
        rung: Option<GpuMode>,
        status: Status,
        title: impl Into<String>,
    ) -> Self {
        Self {
            id: id.into(),
            rung,
            device: None,
            title: title.into(),
            status,
            evidence: Vec::new(),
            remedy: None,
        }
    }

    pub(crate) fn device(mut self, d: impl Into<String>) -> Self {
        self.device = Some(d.into());
        self
    }

    pub(crate) fn evidence(mut self, e: impl Into<String>) -> Self {
        self.evidence.push(e.into());
        self
    }

    pub(crate) fn remedy(mut self, r: impl Into<String>) -> Self {
        self.remedy = Some(r.into());
        self
    }

    pub(crate) fn remedy_opt(mut self, r: Option<String>) -> Self {
        self.remedy = r;
        self
    }
}

/// What the user asked the doctor about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// `--gpu-mode`: the rung that must be ready; `None` (auto) means any rung.
    pub mode: Option<GpuMode>,
    /// `--gpu-device`: only this GPU's checks (the candidates are filtered the same way).
    pub device: Option<PciAddress>,
    /// `--memory`: guest RAM in bytes, which VFIO pins and RLIMIT_MEMLOCK must cover.
    pub memory_bytes: u64,
    /// The value of `WGPU_BACKEND` in vm-cli's environment.
    pub wgpu_backend: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            mode: None,
            device: None,
            memory_bytes: DEFAULT_MEMORY,
            wgpu_backend: None,
        }
    }
}

/// `--memory` default: 2 GiB.
pub(crate) const DEFAULT_MEMORY: u64 = 2 << 30;

/// Whether one rung is ready, and with what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RungVerdict {
    /// The rung.
    pub rung: GpuMode,
    /// True when an available candidate has no failing check.
    pub ready: bool,
    /// The first such candidate, described.
    pub with: Option<String>,
}

/// The doctor's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Every check, grouped: host-wide first, then passthrough, mdev, wgpu.
    pub checks: Vec<Check>,
    /// Per rung, highest priority first.
    pub rungs: Vec<RungVerdict>,
    /// The rung asked for (`None`: any).
    pub wanted: Option<GpuMode>,
    /// True when the rung asked for (or any rung) is ready: exit 0.
    pub ready: bool,
}

impl Report {
    /// Number of checks with `status`.
    pub fn count(&self, status: Status) -> usize {
        self.checks.iter().filter(|c| c.status == status).count()
    }
}

/// Runs every check. `candidates` are the manager's candidates of all three rungs, computed
/// with the same `--gpu-device` filter as `opts.device`.
pub fn run(
    host: &dyn HostOps,
    inv: &HostInventory,
    candidates: &[Candidate],
    opts: &Options,
) -> Report {
    let mut checks = Vec::new();
    host::host_checks(host, inv, &mut checks);
    host::passthrough_checks(host, inv, opts, &mut checks);
    tuning::tuning_checks(host, inv, opts, &mut checks);
    gpu::gpu_checks(host, inv, candidates, opts, &mut checks);
    rungs::mdev_checks(host, inv, candidates, opts, &mut checks);
    rungs::wgpu_checks(inv, candidates, opts, &mut checks);
    // Grouped by rung for reading, keeping each group's order.
    checks.sort_by_key(|c| c.rung.map_or(0, |r| r.rank() + 1));
    let rungs: Vec<RungVerdict> = GpuMode::LADDER
        .iter()
        .map(|&r| verdict(inv, candidates, &checks, r))
        .collect();
    let ready = match opts.mode {
        Some(m) => rungs.iter().any(|v| v.rung == m && v.ready),
        None => rungs.iter().any(|v| v.ready),
    };
    Report {
        checks,
        rungs,
        wanted: opts.mode,
        ready,
    }
}

/// The device checks of a candidate are filed under: the GPU, the mdev parent, or the PF.
pub(crate) fn candidate_key(inv: &HostInventory, c: &Candidate) -> Option<String> {
    match &c.target {
        Target::Gpu { address, .. } => Some(address.to_string()),
        Target::MdevType { parent, .. } => Some(parent.clone()),
        Target::SriovVf { pf, .. } | Target::SriovPf { pf, .. } => Some(pf.to_string()),
        Target::NvidiaVgpu { vf, .. } => Some(
            inv.function(vf)
                .and_then(|f| f.physfn)
                .unwrap_or(*vf)
                .to_string(),
        ),
        Target::Adapter { .. } | Target::Nothing => None,
    }
}

fn verdict(
    inv: &HostInventory,
    candidates: &[Candidate],
    checks: &[Check],
    rung: GpuMode,
) -> RungVerdict {
    let blocked_by = |key: &Option<String>| {
        checks.iter().any(|ch| {
            ch.status == Status::Fail
                && match ch.rung {
                    None => true,
                    Some(r) => r == rung && (ch.device.is_none() || ch.device == *key),
                }
        })
    };
    let ready = candidates
        .iter()
        .filter(|c| c.mode == rung && c.is_available())
        .find(|c| !blocked_by(&candidate_key(inv, c)));
    RungVerdict {
        rung,
        ready: ready.is_some(),
        with: ready.map(|c| c.describe()),
    }
}
