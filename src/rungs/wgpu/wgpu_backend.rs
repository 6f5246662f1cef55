//! `WgpuBackend`: one wgpu adapter and device shared by many virtio-gpu devices.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use super::host_import::HostImport;
use super::virtio_gpu::gpu_gather::GatherPipelines;
use super::virtio_gpu::scanout::Compositor;
use super::virtio_gpu::stats::{DeviceCounters, DeviceStats};
use super::virtio_gpu::{VirtioGpuConfig, VirtioGpuDevice};
use crate::host::adapters::instance_descriptor;
use crate::ladder::GpuMode;
use crate::ladder::{BackendError, BackendStats, GpuBackend};

/// Errors of the wgpu rung.
#[derive(Debug, thiserror::Error)]
pub enum WgpuError {
    /// No adapter on the backends tried.
    #[error(
        "no wgpu adapter found (backends tried: {tried}): {reason}. Check the drivers with \
         `vulkaninfo --summary`; install a Vulkan driver: `apt install libvulkan1 \
         mesa-vulkan-drivers` (lavapipe, runs on the CPU) or the NVIDIA Vulkan driver \
         (the driver's libnvidia-gl / nvidia-vulkan-icd package); for the GL backend \
         `apt install libegl1 libegl-mesa0 libgl1-mesa-dri`. WGPU_BACKEND=vulkan|gl picks the \
         backends tried"
    )]
    NoAdapter {
        /// The backends asked for, e.g. `VULKAN | GL`.
        tried: String,
        /// wgpu's own explanation (which drivers could not be loaded).
        reason: String,
    },
    /// The adapter refused to open a device.
    #[error("wgpu adapter {adapter} could not open a device: {source}")]
    RequestDevice {
        /// Adapter name and backend.
        adapter: String,
        /// wgpu's error.
        source: wgpu::RequestDeviceError,
    },
    /// An operation needs `init()` first.
    #[error("the wgpu backend is not initialized: call WgpuBackend::init() first")]
    NotInitialized,
    /// A device configuration the backend cannot serve.
    #[error("invalid virtio-gpu configuration: {0}")]
    InvalidConfig(String),
}

/// The wgpu objects shared by every device of a backend.
#[derive(Debug)]
pub struct GpuContext {
    /// The device.
    pub device: wgpu::Device,
    /// Its queue.
    pub queue: wgpu::Queue,
    /// The adapter it runs on.
    pub info: wgpu::AdapterInfo,
    /// The adapter itself (guest WebGPU contexts open their own devices on it).
    pub adapter: wgpu::Adapter,
    /// Largest texture side.
    pub max_texture_dim: u32,
    /// Pipelines for scanout composition.
    pub compositor: Compositor,
    /// Errors wgpu reported asynchronously (validation, out of memory); logged, never fatal.
    pub uncaptured_errors: Arc<AtomicU64>,
    /// Guest memory imports, where the device was opened with `VK_EXT_external_memory_host`.
    pub host_import: Option<HostImport>,
    /// The GPU gather's pipelines, built at first use.
    pub gather_pipelines: OnceLock<GatherPipelines>,
}

impl GpuContext {
    /// The GPU gather's pipelines (built on the first call).
    pub fn gather_pipelines(&self) -> &GatherPipelines {
        self.gather_pipelines
            .get_or_init(|| GatherPipelines::new(&self.device))
    }
}

/// The wgpu rung's backend: one adapter and wgpu device, shared by the virtio-gpu devices
/// of many VMs.
///
/// ```no_run
/// use vm_device::gpu_virt::virtio_gpu::VirtioGpuConfig;
/// use vm_device::gpu_virt::{GpuBackend, WgpuBackend};
///
/// let mut wgpu = WgpuBackend::new(); // WGPU_BACKEND=vulkan|gl narrows the backends tried
/// wgpu.init().expect("Failed to initialize WGPU");
/// if let Some(info) = wgpu.adapter_info() {
///     println!("WGPU Adapter: {} ({:?})", info.name, info.backend);
/// }
/// let vm0 = wgpu.create_device(VirtioGpuConfig::default()).unwrap();
/// println!("{}", wgpu.description());
/// println!("GPU Stats: {:?}", wgpu.get_stats());
/// wgpu.reset_stats();
/// # drop(vm0);
/// ```
#[derive(Debug)]
pub struct WgpuBackend {
    backends: Option<wgpu::Backends>,
    ctx: Option<Arc<GpuContext>>,
    devices: Mutex<Vec<Weak<DeviceCounters>>>,
    devices_created: AtomicU64,
}

impl Default for WgpuBackend {
    fn default() -> Self {
        Self::new()
    }
}

/// Ranks adapters: discrete, integrated, virtual, other, then CPU (high-performance power
/// preference, hardware before software); Vulkan/Metal/DX12 before GL on ties.
fn adapter_rank(i: &wgpu::AdapterInfo) -> (u8, u8) {
    let t = match i.device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    };
    let b = match i.backend {
        wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 0,
        wgpu::Backend::Gl => 1,
        _ => 2,
    };
    (t, b)
}

impl WgpuBackend {
    /// A backend that will try the backends `WGPU_BACKEND` names (all if unset).
    pub fn new() -> Self {
        WgpuBackend {
            backends: None,
            ctx: None,
            devices: Mutex::new(Vec::new()),
            devices_created: AtomicU64::new(0),
        }
    }

    /// A backend restricted to `backends` regardless of the environment (tests use this to
    /// run Vulkan and GL in one process).
    pub fn with_backends(backends: wgpu::Backends) -> Self {
        WgpuBackend {
            backends: Some(backends),
            ..Self::new()
        }
    }

    /// Opens the best adapter and a device on it. Idempotent.
    pub fn init(&mut self) -> Result<(), WgpuError> {
        if self.ctx.is_some() {
            return Ok(());
        }
        let mut desc = instance_descriptor();
        if let Some(b) = self.backends {
            desc.backends = b;
        }
        let tried = desc.backends;
        let instance = wgpu::Instance::new(desc);
        let mut adapters = pollster::block_on(instance.enumerate_adapters(tried));
        adapters.sort_by_key(|a| adapter_rank(&a.get_info()));
        let Some(adapter) = adapters.into_iter().next() else {
            // Ask wgpu why: its error names the backends whose drivers failed to load.
            let reason =
                match pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
                    power_preference: wgpu::PowerPreference::HighPerformance,
                    force_fallback_adapter: false,
                    compatible_surface: None,
                    ..Default::default()
                })) {
                    Err(e) => e.to_string(),
                    Ok(a) => format!(
                        "enumeration listed nothing but request_adapter found {}",
                        a.get_info().name
                    ),
                };
            return Err(WgpuError::NoAdapter {
                tried: format!("{tried:?}"),
                reason,
            });
        };
        let info = adapter.get_info();
        let desc = wgpu::DeviceDescriptor {
            label: Some("vm-device virtio-gpu"),
            required_features: wgpu::Features::empty(),
            required_limits: adapter.limits(),
            ..Default::default()
        };
        // Vulkan with VK_EXT_external_memory_host: the GPU can read guest RAM in place.
        let opened = match crate::rungs::wgpu::host_import::open_device(&adapter, &desc) {
            Some(Ok(pair)) => Some(pair),
            Some(Err(e)) => {
                eprintln!("vm-device: {e}; opening {} without it", info.name);
                None
            }
            None => None,
        };
        let (device, queue) = match opened {
            Some(pair) => pair,
            None => pollster::block_on(adapter.request_device(&desc)).map_err(|source| {
                WgpuError::RequestDevice {
                    adapter: format!("{} ({:?})", info.name, info.backend),
                    source,
                }
            })?,
        };
        let host_import = HostImport::probe(&device);
        let uncaptured_errors = Arc::new(AtomicU64::new(0));
        let errs = uncaptured_errors.clone();
        let name = info.name.clone();
        device.on_uncaptured_error(Arc::new(move |e| {
            errs.fetch_add(1, Relaxed);
            eprintln!("vm-device: wgpu error on {name}: {e}");
        }));
        let compositor = Compositor::new(&device);
        let max_texture_dim = device.limits().max_texture_dimension_2d;
        self.ctx = Some(Arc::new(GpuContext {
            device,
            queue,
            info,
            adapter,
            max_texture_dim,
            compositor,
            uncaptured_errors,
            host_import,
            gather_pipelines: OnceLock::new(),
        }));
        Ok(())
    }

    /// The adapter in use, once initialized.
    pub fn adapter_info(&self) -> Option<wgpu::AdapterInfo> {
        self.ctx.as_ref().map(|c| c.info.clone())
    }

    /// The shared wgpu context, once initialized.
    pub fn context(&self) -> Option<Arc<GpuContext>> {
        self.ctx.clone()
    }

    /// Creates a virtio-gpu device for one VM on the shared wgpu device; it has its own
    /// resources, memory budget and stats.
    pub fn create_device(&self, config: VirtioGpuConfig) -> Result<VirtioGpuDevice, WgpuError> {
        let ctx = self.ctx.clone().ok_or(WgpuError::NotInitialized)?;
        let dev = VirtioGpuDevice::new(ctx, config)?;
        let mut list = self.devices.lock().unwrap_or_else(|p| p.into_inner());
        list.retain(|w| w.strong_count() > 0);
        list.push(Arc::downgrade(dev.counters()));
        self.devices_created.fetch_add(1, Relaxed);
        Ok(dev)
    }

    fn live(&self) -> Vec<Arc<DeviceCounters>> {
        let list = self.devices.lock().unwrap_or_else(|p| p.into_inner());
        list.iter().filter_map(Weak::upgrade).collect()
    }

    /// Totals over the devices alive now.
    pub fn get_stats(&self) -> GpuStats {
        let live = self.live();
        let mut totals = DeviceStats::default();
        for c in &live {
            totals.accumulate(&c.snapshot());
        }
        GpuStats {
            adapter: self.ctx.as_ref().map(|c| c.info.name.clone()),
            backend: self.ctx.as_ref().map(|c| format!("{:?}", c.info.backend)),
            devices_created: self.devices_created.load(Relaxed),
            devices_alive: live.len() as u64,
            wgpu_errors: self
                .ctx
                .as_ref()
                .map_or(0, |c| c.uncaptured_errors.load(Relaxed)),
            totals,
        }
    }

    /// Zeroes every live device's counters (not their resources or scanouts).
    pub fn reset_stats(&self) {
        for c in self.live() {
            c.reset();
        }
        self.devices_created.store(0, Relaxed);
        if let Some(c) = &self.ctx {
            c.uncaptured_errors.store(0, Relaxed);
        }
    }
}

/// Backend-wide statistics.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GpuStats {
    /// Adapter name, once initialized.
    pub adapter: Option<String>,
    /// wgpu backend (`Vulkan`, `Gl`, ...), once initialized.
    pub backend: Option<String>,
    /// Devices created since the last reset.
    pub devices_created: u64,
    /// Devices alive now.
    pub devices_alive: u64,
    /// Asynchronous wgpu errors (should stay 0).
    pub wgpu_errors: u64,
    /// Sum of the live devices' stats.
    pub totals: DeviceStats,
}

impl fmt::Display for GpuStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "wgpu on {} ({}): {} devices alive ({} created), {} wgpu errors; {}",
            self.adapter.as_deref().unwrap_or("no adapter"),
            self.backend.as_deref().unwrap_or("-"),
            self.devices_alive,
            self.devices_created,
            self.wgpu_errors,
            self.totals
        )
    }
}

impl GpuBackend for WgpuBackend {
    fn mode(&self) -> GpuMode {
        GpuMode::Wgpu
    }

    fn description(&self) -> String {
        match &self.ctx {
            Some(c) => format!(
                "virtio-gpu rendered with wgpu on {} ({:?}, {:?})",
                c.info.name, c.info.backend, c.info.device_type
            ),
            None => format!(
                "virtio-gpu rendered with wgpu (not initialized; backends {:?})",
                self.backends.unwrap_or(instance_descriptor().backends)
            ),
        }
    }

    fn init(&mut self) -> Result<(), BackendError> {
        WgpuBackend::init(self).map_err(|e| BackendError::new(GpuMode::Wgpu, e))
    }

    fn get_stats(&self) -> BackendStats {
        let s = WgpuBackend::get_stats(self);
        let mut b = BackendStats::new(GpuMode::Wgpu);
        b.push("devices_alive", s.devices_alive);
        b.push("devices_created", s.devices_created);
        b.push("wgpu_errors", s.wgpu_errors);
        b.push("bytes_to_host", s.totals.bytes_to_host);
        b.push("frames_presented", s.totals.frames_presented);
        b.push("fences", s.totals.fences);
        b.push("resources_alive", s.totals.resources_alive);
        b.push("resource_bytes", s.totals.resource_bytes);
        for c in &s.totals.commands {
            b.push(format!("commands.{}", c.name), c.count);
        }
        for c in &s.totals.errors {
            b.push(format!("errors.{}", c.name), c.count);
        }
        b
    }
}
