//! The backend behind each kind of candidate: what `initialize_selected` builds.

use vm_device_host::PciAddress;

use super::{Candidate, GpuMode, ManagerError, Target};
use crate::host::Host;
use crate::ladder::{BackendError, BackendStats, GpuBackend};
use crate::rungs::mdev::{GpuMdev, MdevType};
use crate::rungs::passthrough::{GpuPassthrough, PciDeviceInfo};
use crate::rungs::wgpu::WgpuBackend;

/// A whole GPU (or an SR-IOV virtual function) on vfio-pci, opened through VFIO.
pub struct PassthroughBackend {
    mode: GpuMode,
    gpu: GpuPassthrough,
}

impl GpuBackend for PassthroughBackend {
    fn mode(&self) -> GpuMode {
        self.mode
    }

    fn description(&self) -> String {
        let state = if self.gpu.is_prepared() {
            let devs: Vec<String> = self
                .gpu
                .devices()
                .iter()
                .map(|d| d.address.to_string())
                .collect();
            format!("on vfio-pci, open through VFIO: {}", devs.join(", "))
        } else {
            "not prepared".to_string()
        };
        format!("{} {}", self.gpu.address(), state)
    }

    fn init(&mut self) -> Result<(), BackendError> {
        self.gpu
            .prepare()
            .map_err(|e| BackendError::new(self.mode, e))
    }

    fn get_stats(&self) -> BackendStats {
        let mut s = BackendStats::new(self.mode);
        s.push("prepared", u64::from(self.gpu.is_prepared()));
        s.push("vfio_devices", self.gpu.devices().len() as u64);
        s.push(
            "vfio_regions",
            self.gpu
                .devices()
                .iter()
                .map(|d| d.regions.len() as u64)
                .sum(),
        );
        s
    }
}

/// A mediated device (mdev type or NVIDIA vendor-VFIO vGPU), created on initialize.
pub struct MdevBackend {
    mdev: GpuMdev,
    label: String,
}

impl GpuBackend for MdevBackend {
    fn mode(&self) -> GpuMode {
        GpuMode::Mdev
    }

    fn description(&self) -> String {
        match self.mdev.device() {
            Some(d) => format!("{} as {d}", self.label),
            None => format!("{} (not created)", self.label),
        }
    }

    fn init(&mut self) -> Result<(), BackendError> {
        if self.mdev.device().is_some() {
            return Ok(());
        }
        self.mdev
            .create()
            .map_err(|e| BackendError::new(GpuMode::Mdev, e))
    }

    fn get_stats(&self) -> BackendStats {
        let mut s = BackendStats::new(GpuMode::Mdev);
        s.push("created", u64::from(self.mdev.device().is_some()));
        s
    }
}

fn wgpu_backends(name: &str) -> wgpu::Backends {
    match name {
        "Vulkan" => wgpu::Backends::VULKAN,
        "Gl" => wgpu::Backends::GL,
        "Metal" => wgpu::Backends::METAL,
        "Dx12" => wgpu::Backends::DX12,
        _ => wgpu::Backends::all(),
    }
}

fn passthrough(
    host: &Host,
    mode: GpuMode,
    addr: PciAddress,
    allow_boot_vga: bool,
) -> Result<Box<dyn GpuBackend>, ManagerError> {
    let info = PciDeviceInfo::read(host.as_ref(), &addr)?;
    let mut gpu =
        GpuPassthrough::with_host(host.clone(), addr, info).map_err(|e| ManagerError::Init {
            mode,
            message: e.to_string(),
        })?;
    gpu.set_allow_boot_vga(allow_boot_vga);
    Ok(Box::new(PassthroughBackend { mode, gpu }))
}

/// Builds (without initializing) the backend for a selected candidate.
pub(crate) fn build(
    host: &Host,
    c: &Candidate,
    allow_boot_vga: bool,
) -> Result<Box<dyn GpuBackend>, ManagerError> {
    let label = c.describe();
    match &c.target {
        Target::Gpu { address, .. } => passthrough(host, GpuMode::Passthrough, *address, allow_boot_vga),
        // A VF is handed over whole, through the same vfio-pci machinery, as a mediated slice.
        Target::SriovVf { vf, .. } => passthrough(host, GpuMode::Mdev, *vf, false),
        Target::MdevType {
            parent, type_id, ..
        } => {
            let kind = MdevType::classify(None, type_id);
            let mdev = GpuMdev::for_parent(parent, kind, type_id.clone()).with_host(host.clone());
            Ok(Box::new(MdevBackend { mdev, label }))
        }
        Target::NvidiaVgpu { vf, type_id, .. } => {
            let mdev = GpuMdev::new(*vf, MdevType::NvidiaVgpu, format!("nvidia-{type_id}")).with_host(host.clone());
            Ok(Box::new(MdevBackend { mdev, label }))
        }
        Target::Adapter { info } => Ok(Box::new(WgpuBackend::with_backends(wgpu_backends(&info.backend)))),
        Target::SriovPf { pf, total_vfs } => Err(ManagerError::Init {
            mode: GpuMode::Mdev,
            message: format!(
                "{pf} has no virtual function enabled: run `vm-cli gpu sriov --gpu-device {pf} --num-vfs {}` first",
                (*total_vfs).min(4)
            ),
        }),
        Target::Nothing => Err(ManagerError::NothingSelected),
    }
}
