//! Starting a VM with the chosen GPU: plan, prepare, run QEMU, give everything back.
//!
//! - [`plan_launch`] (pure apart from reading the host): from the selected candidate, the
//!   host change it needs (a passthrough prepare or an mdev creation, as a printable plan),
//!   the [`GpuAttachment`], and the QEMU command line ([`argv::qemu_argv`]).
//! - [`qemu::find_qemu`]: `--qemu PATH` or the newest `qemu-system-x86_64` on `PATH`, with
//!   the version the device needs (`required_qemu`).
//! - [`accel::choose_accel`]: KVM when it can run a stock kernel, else TCG with the reason.
//! - [`run`]: applies the change under a journal (so `vm-cli gpu restore` undoes it if this
//!   process is killed), starts the wgpu backend when the rung is wgpu, runs QEMU with the
//!   serial console on the terminal, and takes one release path whatever ends the VM: the
//!   guest powering off, QEMU dying, or a stop request (SIGINT/SIGTERM, see
//!   [`install_stop_signals`]): QEMU stopped, backend stopped, mdev removed, devices back
//!   on their drivers.

pub mod accel;
pub mod argv;
pub mod qemu;
mod qmp;
mod supervise;
pub mod tuning;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde::Serialize;

pub use accel::{choose_accel, Accel, AccelChoice};
pub use argv::{qemu_argv, shell_line, GpuAttachment, VmConfig};
pub use qemu::{find_qemu, QemuBinary, QemuError, QemuVersion};
pub use supervise::{
    install_stop_signals, run, stop_requested, LaunchOutcome, PinnedThread, StopFlag,
};
pub use tuning::{plan_tuning, NumaChoice, PageSize, TuningError, TuningOptions, TuningPlan};

use crate::host::HostOps;
use crate::inventory::HostInventory;
use crate::ladder::{Candidate, Target};
use crate::plan::ExitKind;
use crate::rungs::mdev::{MdevType, Planned, UuidSource};
use crate::rungs::passthrough::PassthroughPlan;

/// The oldest QEMU whose `vhost-user-gpu-pci` starts without KVM (7.2 stops with
/// `vhost initialization failed: requires kvm`).
pub(crate) const VHOST_USER_GPU_TCG_QEMU: QemuVersion = QemuVersion::new(8, 0, 0);
/// The first QEMU with `vhost-user-gpu-pci`.
pub(crate) const VHOST_USER_GPU_QEMU: QemuVersion = QemuVersion::new(4, 1, 0);

/// What the user asked for, beyond the GPU choice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchOptions {
    /// Guest kernel.
    pub kernel: PathBuf,
    /// Initial ramdisk.
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    pub append: Option<String>,
    /// Guest RAM in bytes.
    pub memory_bytes: u64,
    /// vCPUs.
    pub cpus: u32,
    /// `x-vga=on` for a passed-through GPU.
    pub x_vga: bool,
    /// Allow the host's boot display to be passed through.
    pub allow_boot_vga: bool,
    /// Journals and locks (`/run/vm-device`).
    pub state_dir: PathBuf,
    /// This VM's sockets (backend, QMP): created by [`run`], removed afterwards.
    pub run_dir: PathBuf,
    /// The wgpu backend's command, without `--socket PATH` (default: this program's
    /// `gpu serve-wgpu`).
    pub backend_command: Vec<OsString>,
    /// Where a new mdev's UUID comes from (random by default).
    pub mdev_uuid: UuidSource,
    /// Hugepages, NUMA placement and vCPU pinning ([`tuning`]).
    pub tuning: TuningOptions,
}

/// The host change a launch makes before QEMU starts, undone when it ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HostChange {
    /// A GPU's (or VF's) IOMMU group moves to vfio-pci.
    Passthrough {
        /// The prepare plan.
        plan: Box<PassthroughPlan>,
    },
    /// An mdev (or vendor-VFIO vGPU) is created.
    Mdev {
        /// The creation plan (its undo removes the device).
        planned: Box<Planned>,
    },
    /// Nothing on the host changes (wgpu).
    None,
}

impl HostChange {
    /// The plan as text (one line per step, with its undo).
    pub fn text(&self) -> String {
        match self {
            HostChange::Passthrough { plan } => crate::report::passthrough::plan_text(plan),
            HostChange::Mdev { planned } => planned.plan.plan.to_text(),
            HostChange::None => "Plan: nothing to change on the host\n".into(),
        }
    }
}

/// Everything a launch will do, before it does any of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LaunchPlan {
    /// The host change.
    pub change: HostChange,
    /// The VM.
    pub vm: VmConfig,
    /// The accelerator and why.
    pub accel: AccelChoice,
    /// The QEMU that runs it.
    pub qemu: QemuBinary,
    /// Its command line.
    pub argv: Vec<String>,
    /// The wgpu backend's command line, when the rung is wgpu.
    pub backend: Option<Vec<String>>,
    /// NUMA node, pinned cores, hugepages (and their reservation).
    pub tuning: TuningPlan,
}

/// Why a launch could not be planned or run.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The candidate names nothing that can be attached.
    #[error("{0}")]
    NotAttachable(String),
    /// Planning or applying the passthrough prepare failed.
    #[error(transparent)]
    Passthrough(#[from] crate::rungs::passthrough::PassthroughError),
    /// Planning or applying the mdev creation failed.
    #[error(transparent)]
    Mdev(#[from] crate::rungs::mdev::MdevError),
    /// No suitable QEMU.
    #[error(transparent)]
    Qemu(#[from] QemuError),
    /// Hugepages, NUMA placement or pinning refused or failed.
    #[error(transparent)]
    Tuning(#[from] TuningError),
    /// A process or socket step failed.
    #[error("{what}: {detail}")]
    Process {
        /// The step.
        what: String,
        /// What went wrong.
        detail: String,
    },
}

impl LaunchError {
    /// What kind of failure this is: the rung's own kind for a passthrough or mdev error
    /// (so a bad UUID is a usage error here as in `gpu mdev-create`), unavailable for a
    /// candidate with nothing to attach, a failure for QEMU and process steps.
    pub fn exit_kind(&self) -> ExitKind {
        match self {
            LaunchError::NotAttachable(_) => ExitKind::Unavailable,
            LaunchError::Passthrough(e) => e.exit_kind(),
            LaunchError::Mdev(e) => e.exit_kind(),
            LaunchError::Tuning(TuningError::Invalid(_)) => ExitKind::Usage,
            LaunchError::Tuning(TuningError::Refused(_)) => ExitKind::Unavailable,
            LaunchError::Tuning(TuningError::Reservation { undone: true, .. }) => ExitKind::Undone,
            LaunchError::Tuning(TuningError::Reservation { undone: false, .. }) => {
                ExitKind::LeftChanges
            }
            LaunchError::Tuning(TuningError::Host(_)) => ExitKind::Failed,
            LaunchError::Qemu(_) | LaunchError::Process { .. } => ExitKind::Failed,
        }
    }

    /// The exit code of [`LaunchError::exit_kind`].
    pub fn exit_code(&self) -> i32 {
        self.exit_kind().code()
    }
}

/// The QEMU version the attachment needs under `accel`, and for what.
pub(crate) fn required_qemu(gpu: &GpuAttachment, accel: Accel) -> Option<(QemuVersion, String)> {
    match (gpu, accel) {
        (GpuAttachment::VhostUserGpu { .. }, Accel::Tcg) => Some((
            VHOST_USER_GPU_TCG_QEMU,
            "vhost-user-gpu-pci under TCG (no usable KVM)".into(),
        )),
        (GpuAttachment::VhostUserGpu { .. }, Accel::Kvm) => {
            Some((VHOST_USER_GPU_QEMU, "vhost-user-gpu-pci".into()))
        }
        _ => None,
    }
}

/// Whether QEMU's `display=on` can show this mdev under vm-cli's `-display none`: only a
/// *region* display (the kernel's mdpy sample), which QEMU reads itself (a QMP screendump
/// then shows the guest's frame). A *dma-buf* display (mbochs, Intel GVT-g) needs an OpenGL
/// display in QEMU: with `display=on` QEMU 7.2 refuses to start ("vfio-display-dmabuf:
/// opengl not available"), as an mbochs mdev in a real L2 showed (`cargo xtask
/// nested-test`). NVIDIA vGPU and others offer no display.
pub(crate) fn mdev_offers_display(planned: &Planned) -> bool {
    match &planned.choice {
        crate::rungs::mdev::Choice::Mdev {
            parent, mdev_type, ..
        } => region_display(parent, *mdev_type),
        crate::rungs::mdev::Choice::NvidiaVfio { .. } => false,
    }
}

/// The mdev parents whose display is a VFIO display region (no OpenGL needed).
fn region_display(parent: &str, mdev_type: MdevType) -> bool {
    mdev_type != MdevType::IntelGvtg && parent == "mdpy"
}

/// The backend socket inside `run_dir`.
pub(crate) fn backend_socket(run_dir: &Path) -> PathBuf {
    run_dir.join("gpu.sock")
}

/// Plans the launch of `candidate` (selected by the manager) on `host`: reads the host,
/// changes nothing. It scans the host for the plan; a caller that holds the scan its
/// decision was made on passes it to [`plan_launch_in`] instead.
pub fn plan_launch(
    host: &dyn HostOps,
    candidate: &Candidate,
    qemu: QemuBinary,
    accel: AccelChoice,
    opts: &LaunchOptions,
) -> Result<LaunchPlan, LaunchError> {
    plan_launch_in(
        host,
        &HostInventory::scan(host),
        candidate,
        qemu,
        accel,
        opts,
    )
}

/// [`plan_launch`] on `inv`, the scan the candidate was decided on (the manager's
/// [`inventory`](crate::gpu_manager::UnifiedGpuManager::inventory)): the host is not
/// scanned again. A passthrough plan still reads its IOMMU group afresh (the prepare-time
/// re-check), and an mdev creation re-checks its type's room under its lock.
pub fn plan_launch_in(
    host: &dyn HostOps,
    inv: &HostInventory,
    candidate: &Candidate,
    qemu: QemuBinary,
    accel: AccelChoice,
    opts: &LaunchOptions,
) -> Result<LaunchPlan, LaunchError> {
    let (change, gpu) = match &candidate.target {
        Target::Gpu {
            address,
            companions,
        } => {
            let plan = crate::rungs::passthrough::plan_prepare(host, address, opts.allow_boot_vga)?;
            let mut functions = vec![*address];
            functions.extend(companions.iter().copied());
            (
                HostChange::Passthrough {
                    plan: Box::new(plan),
                },
                GpuAttachment::Passthrough {
                    functions,
                    x_vga: opts.x_vga,
                },
            )
        }
        Target::SriovVf { vf, .. } => {
            let plan = crate::rungs::passthrough::plan_prepare(host, vf, opts.allow_boot_vga)?;
            (
                HostChange::Passthrough {
                    plan: Box::new(plan),
                },
                GpuAttachment::VirtualFunction { vf: *vf },
            )
        }
        t @ (Target::MdevType { .. } | Target::NvidiaVgpu { .. }) => {
            let req = crate::rungs::mdev::lifecycle::request_for_target(t, opts.mdev_uuid.clone())
                .ok_or_else(|| {
                    LaunchError::NotAttachable(format!(
                        "{}: no creation request for this target",
                        candidate.describe()
                    ))
                })?;
            let planned = crate::rungs::mdev::plan_create(inv, &req)?;
            let gpu = GpuAttachment::Mediated {
                sysfsdev: planned.sysfs_path.clone(),
                display: mdev_offers_display(&planned),
            };
            (
                HostChange::Mdev {
                    planned: Box::new(planned),
                },
                gpu,
            )
        }
        Target::SriovPf { pf, total_vfs } => {
            return Err(LaunchError::NotAttachable(format!(
                "{pf} has SR-IOV ({total_vfs} virtual functions) but none is enabled; enable some with `vm-cli gpu sriov --gpu-device {pf} --num-vfs N`, then launch again"
            )))
        }
        Target::Adapter { .. } => (
            HostChange::None,
            GpuAttachment::VhostUserGpu {
                socket: backend_socket(&opts.run_dir),
            },
        ),
        Target::Nothing => {
            return Err(LaunchError::NotAttachable(format!(
                "the {} rung has nothing to attach: {}",
                candidate.mode(),
                candidate
                    .reason()
                    .map(|r| r.message.clone())
                    .unwrap_or_default()
            )))
        }
    };
    if let Some((needed, what)) = required_qemu(&gpu, accel.accel) {
        qemu.require(needed, &what)?;
    }
    let backend = match &gpu {
        GpuAttachment::VhostUserGpu { socket } => {
            let mut b: Vec<String> = opts
                .backend_command
                .iter()
                .map(|s| s.to_string_lossy().into_owned())
                .collect();
            b.push("--socket".into());
            b.push(socket.display().to_string());
            Some(b)
        }
        _ => None,
    };
    // Before any host change: a refusal (too few hugepages) leaves the host as it is.
    let tuning = plan_tuning(
        host,
        &candidate.target,
        opts.memory_bytes,
        opts.cpus,
        &opts.tuning,
    )?;
    let vm = VmConfig {
        kernel: opts.kernel.clone(),
        initrd: opts.initrd.clone(),
        append: opts.append.clone(),
        memory_bytes: opts.memory_bytes,
        cpus: opts.cpus,
        accel: accel.accel,
        gpu,
        qmp: Some(opts.run_dir.join("qmp.sock")),
        hugepages: tuning.hugepages.as_ref().map(|h| h.size),
        host_node: tuning.node,
    };
    let argv = qemu_argv(&qemu, &vm);
    Ok(LaunchPlan {
        change,
        vm,
        accel,
        qemu,
        argv,
        backend,
        tuning,
    })
}

impl LaunchPlan {
    /// The plan for people: host change, accelerator, backend and QEMU command line.
    pub fn text(&self) -> String {
        let mut out = self.change.text();
        if !self.tuning.is_empty() {
            out.push_str(&self.tuning.text());
        }
        out.push_str(&format!(
            "Accelerator: {} ({})\n",
            self.accel.accel.as_str(),
            self.accel.why
        ));
        out.push_str(&format!(
            "QEMU: {} (version {})\n",
            self.qemu.path.display(),
            self.qemu.version
        ));
        if let Some(b) = &self.backend {
            out.push_str(&format!("Backend: {}\n", shell_line(b)));
        }
        out.push_str(&format!("Command line:\n{}\n", shell_line(&self.argv)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_region_displays_get_display_on() {
        assert!(region_display("mdpy", MdevType::Other));
        // dma-buf displays need OpenGL, which `-display none` does not give
        assert!(!region_display("mbochs", MdevType::Other));
        assert!(!region_display("0000:00:02.0", MdevType::IntelGvtg));
        assert!(!region_display("mtty", MdevType::Other));
    }
}
