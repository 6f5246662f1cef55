//! What a rung can offer: candidates, each available or not, with the reason as data.

use serde::Serialize;
use vm_device_host::{AdapterInfo, PciAddress};

use super::GpuMode;

/// Why a candidate cannot be used, as a stable code for scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonCode {
    /// The kernel runs without an IOMMU.
    IommuDisabled,
    /// The IOMMU is on but the device has no group.
    NoIommuGroup,
    /// The group has members in use by host drivers.
    GroupNotViable,
    /// The firmware's boot display: the host would lose its console.
    BootDisplay,
    /// The GPU parents active mediated devices.
    ActiveMdevs,
    /// The GPU has SR-IOV virtual functions enabled.
    VfsEnabled,
    /// No display-class PCI function on this host.
    NoGpu,
    /// `--gpu-device` names no GPU (or no parent) of this host.
    DeviceNotFound,
    /// No mdev parent, SR-IOV GPU or vendor vGPU on this host.
    NoMdevParent,
    /// The vendor module for mediated devices is not loaded.
    ModuleNotLoaded,
    /// The type has no instance left.
    NoInstances,
    /// `--mdev-type` matches no type.
    TypeNotFound,
    /// The mdev type is not a display device (a serial port, a network function).
    NotDisplay,
    /// A virtual function is bound to a host driver or already configured.
    VfInUse,
    /// SR-IOV capable, but no virtual function is enabled.
    NoVfsEnabled,
    /// wgpu found no adapter.
    NoAdapter,
    /// Asking wgpu for adapters failed.
    AdapterProbeFailed,
    /// No wgpu adapter runs on the GPU named by `--gpu-device`.
    AdapterNotOnDevice,
    /// An attribute needed for the decision could not be read.
    UnreadableState,
    /// Host processes hold the device open (`/dev/dri/cardN`, `/dev/nvidiaN`).
    HeldOpen,
    /// Another process holds the device's IOMMU group.
    GroupBusy,
}

/// Why a candidate is unavailable: what, the files that said so, and what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reason {
    /// Stable code.
    pub code: ReasonCode,
    /// One sentence for people.
    pub message: String,
    /// Files or commands that show it (`/sys/bus/pci/devices/…/boot_vga = 1`).
    pub evidence: Vec<String>,
    /// A command or setting that fixes it, when there is one.
    pub remedy: Option<String>,
}

impl Reason {
    /// A reason without evidence or remedy.
    pub fn new(code: ReasonCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            evidence: Vec::new(),
            remedy: None,
        }
    }

    /// Adds a piece of evidence.
    pub fn evidence(mut self, e: impl Into<String>) -> Self {
        self.evidence.push(e.into());
        self
    }

    /// Sets the remedy.
    pub fn remedy(mut self, r: impl Into<String>) -> Self {
        self.remedy = Some(r.into());
        self
    }
}

/// Available, or not with every reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Availability {
    /// Can be used.
    Available,
    /// Cannot be used: every blocker, the first (the one to fix first) at index 0. Never
    /// empty (the constructors of [`Candidate`] keep it so).
    Unavailable(Vec<Reason>),
}

/// What a candidate would give the VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Target {
    /// The rung has nothing to offer on this host (see the reason).
    Nothing,
    /// A whole GPU with its companion functions.
    Gpu {
        /// The display function.
        address: PciAddress,
        /// Companions that move with it.
        companions: Vec<PciAddress>,
    },
    /// An mdev type of a parent.
    MdevType {
        /// Parent name (`0000:00:02.0`, `mbochs`).
        parent: String,
        /// Type id.
        type_id: String,
        /// Type `name`, when the driver gives one.
        type_name: Option<String>,
        /// Instances left.
        available_instances: u32,
    },
    /// An SR-IOV virtual function of a GPU.
    SriovVf {
        /// The physical function.
        pf: PciAddress,
        /// The virtual function.
        vf: PciAddress,
    },
    /// A PF whose virtual functions can be enabled (`sriov_numvfs`).
    SriovPf {
        /// The physical function.
        pf: PciAddress,
        /// `sriov_totalvfs`.
        total_vfs: u32,
    },
    /// An NVIDIA vendor-VFIO vGPU type on a VF.
    NvidiaVgpu {
        /// The virtual function.
        vf: PciAddress,
        /// Numeric type id for `current_vgpu_type`.
        type_id: u32,
        /// Type name.
        type_name: String,
    },
    /// A wgpu adapter.
    Adapter {
        /// What wgpu reported.
        info: AdapterInfo,
    },
}

/// One thing a rung could use, and whether it can.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The rung.
    pub mode: GpuMode,
    /// What it would use.
    pub target: Target,
    /// Whether it can.
    pub status: Availability,
}

impl Candidate {
    /// An available candidate.
    pub fn available(mode: GpuMode, target: Target) -> Self {
        Self {
            mode,
            target,
            status: Availability::Available,
        }
    }

    /// An unavailable candidate.
    pub fn unavailable(mode: GpuMode, target: Target, reason: Reason) -> Self {
        Self {
            mode,
            target,
            status: Availability::Unavailable(vec![reason]),
        }
    }

    /// A candidate with every blocker in `reasons`, first one first; available when
    /// `reasons` is empty.
    pub fn with_reasons(mode: GpuMode, target: Target, reasons: Vec<Reason>) -> Self {
        Self {
            mode,
            target,
            status: if reasons.is_empty() {
                Availability::Available
            } else {
                Availability::Unavailable(reasons)
            },
        }
    }

    /// The rung as a whole has nothing, for `reason`.
    pub fn nothing(mode: GpuMode, reason: Reason) -> Self {
        Self::unavailable(mode, Target::Nothing, reason)
    }

    /// The mode of this backend.
    pub fn mode(&self) -> GpuMode {
        self.mode
    }

    /// True when it can be used.
    pub fn is_available(&self) -> bool {
        self.status == Availability::Available
    }

    /// The first reason it cannot be used (the one to fix first).
    pub fn reason(&self) -> Option<&Reason> {
        self.reasons().first()
    }

    /// Every reason it cannot be used; empty when available.
    pub fn reasons(&self) -> &[Reason] {
        match &self.status {
            Availability::Available => &[],
            Availability::Unavailable(r) => r,
        }
    }

    /// The device as users name it: a PCI address, an mdev parent, or an adapter name.
    pub fn device(&self) -> Option<String> {
        match &self.target {
            Target::Nothing => None,
            Target::Gpu { address, .. } => Some(address.to_string()),
            Target::MdevType { parent, .. } => Some(parent.clone()),
            Target::SriovVf { vf, .. } => Some(vf.to_string()),
            Target::SriovPf { pf, .. } => Some(pf.to_string()),
            Target::NvidiaVgpu { vf, .. } => Some(vf.to_string()),
            Target::Adapter { info } => Some(info.name.clone()),
        }
    }

    /// The mdev (or vGPU) type, for the mediated rung.
    pub fn mdev_type(&self) -> Option<String> {
        match &self.target {
            Target::MdevType { type_id, .. } => Some(type_id.clone()),
            Target::NvidiaVgpu { type_id, .. } => Some(format!("nvidia-{type_id}")),
            _ => None,
        }
    }

    /// One line for people: what it is, without the availability.
    pub fn describe(&self) -> String {
        match &self.target {
            Target::Nothing => "-".into(),
            Target::Gpu {
                address,
                companions,
            } => {
                if companions.is_empty() {
                    format!("GPU {address}")
                } else {
                    let c: Vec<String> = companions.iter().map(|c| c.to_string()).collect();
                    format!("GPU {address} with {}", c.join(", "))
                }
            }
            Target::MdevType {
                parent,
                type_id,
                type_name,
                available_instances,
            } => {
                let name = type_name
                    .as_deref()
                    .filter(|n| *n != type_id)
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default();
                if *available_instances == 0 {
                    format!("{type_id}{name} on {parent}, none left")
                } else {
                    format!("{type_id}{name} on {parent}, {available_instances} left")
                }
            }
            Target::SriovVf { pf, vf } => format!("virtual function {vf} of {pf}"),
            Target::SriovPf { pf, total_vfs } => {
                format!("{pf}: enable up to {total_vfs} virtual functions")
            }
            Target::NvidiaVgpu {
                vf,
                type_id,
                type_name,
            } => format!("vGPU {type_name} (type {type_id}) on {vf}"),
            Target::Adapter { info } => {
                format!("{} ({}, {})", info.name, info.backend, info.device_type)
            }
        }
    }
}
