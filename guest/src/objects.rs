//! The `wgpu::custom` interface implementations.

use std::future::ready;
use std::ops::Range;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use webgpu_wire::{
    BindGroupEntry, BindGroupLayoutEntry, BindingResource, BindingType, BufferBindingKind, Command,
    EncoderCommand, ErrorKind, GpuError, Id, MapMode, Reply,
};
use wgpu::custom::*;

use crate::conn::{to_wgpu, Conn};

mod render;
use render::{RemotePass, CHUNK};

type Callback = Box<dyn FnOnce() + Send>;
type Callbacks = Mutex<Vec<Callback>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The instance: the connection, or none when wgpu built it itself (`InstanceInterface::new`).
#[derive(Debug)]
pub(crate) struct RemoteInstance {
    pub(crate) conn: Option<Arc<Conn>>,
}

#[derive(Debug)]
struct RemoteAdapter {
    conn: Arc<Conn>,
    desc: webgpu_wire::AdapterDesc,
}

/// State a device shares with its queue and buffers.
#[derive(Default)]
struct DevShared {
    /// Callbacks to run at the next poll (map callbacks).
    ready: Callbacks,
    /// `on_submitted_work_done` callbacks and the submission count they wait for.
    done: Mutex<Vec<(u64, Callback)>>,
    submitted: AtomicU64,
    /// The program's device-lost callback.
    lost: Mutex<Option<BoxDeviceLostCallback>>,
}

impl DevShared {
    /// The device is lost: its lost callback runs, and so does every callback still waiting
    /// (their work will never complete), so nothing waits forever.
    fn lose(&self, reason: wgpu::DeviceLostReason, why: &str) {
        if let Some(cb) = lock(&self.lost).take() {
            cb(reason, why.to_owned());
        }
        let ready: Vec<_> = std::mem::take(&mut *lock(&self.ready));
        for cb in ready {
            cb();
        }
        let done: Vec<_> = std::mem::take(&mut *lock(&self.done));
        for (_, cb) in done {
            cb();
        }
    }
}

impl std::fmt::Debug for DevShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevShared")
            .field("submitted", &self.submitted)
            .finish()
    }
}

#[derive(Debug)]
struct RemoteDevice {
    conn: Arc<Conn>,
    id: Id,
    limits: wgpu::Limits,
    info: wgpu::AdapterInfo,
    scopes: AtomicU32,
    shared: Arc<DevShared>,
}

#[derive(Debug)]
struct RemoteQueue {
    conn: Arc<Conn>,
    id: Id,
    device: Id,
    shared: Arc<DevShared>,
}

/// Any object that is only an id on the host (modules, layouts, groups, pipelines, command
/// buffers, and the invalid stand-ins for unsupported kinds).
#[derive(Debug)]
struct Obj {
    conn: Arc<Conn>,
    id: Id,
    device: Id,
    /// Consumed on the host (a submitted command buffer): nothing to release.
    consumed: AtomicBool,
}

impl Obj {
    fn new(conn: &Arc<Conn>, id: Id, device: Id) -> Self {
        Obj {
            conn: Arc::clone(conn),
            id,
            device,
            consumed: AtomicBool::new(false),
        }
    }
}

impl Drop for Obj {
    fn drop(&mut self) {
        if self.id != 0 && !self.consumed.load(Ordering::Relaxed) {
            self.conn.release(self.id);
        }
    }
}

#[derive(Debug, Default)]
struct MapState {
    /// Mapped range and whether writable.
    range: Option<(u64, u64, bool)>,
    /// Contents of the mapped range.
    data: Vec<u8>,
    /// Ranges handed out for writing: (offset, bytes), filled when the view is dropped.
    writes: Vec<(u64, Vec<u8>)>,
}

#[derive(Debug)]
struct RemoteBuffer {
    obj: Obj,
    shared: Arc<DevShared>,
    map: Arc<Mutex<MapState>>,
}

#[derive(Debug)]
struct MappedRange {
    offset: u64,
    data: Vec<u8>,
    write: bool,
    map: Arc<Mutex<MapState>>,
}

impl Drop for MappedRange {
    fn drop(&mut self) {
        if self.write {
            lock(&self.map)
                .writes
                .push((self.offset, std::mem::take(&mut self.data)));
        }
    }
}

#[derive(Debug)]
struct Staging(Vec<u8>);

#[derive(Debug)]
struct Encoder {
    conn: Arc<Conn>,
    device: Id,
    label: Option<String>,
    cmds: Arc<Mutex<Vec<EncoderCommand>>>,
    /// Still recording (not finished): counted in the connection's open encoders.
    recording: bool,
}

impl Drop for Encoder {
    fn drop(&mut self) {
        if self.recording {
            self.conn.encoder_closed();
        }
    }
}

#[derive(Debug)]
struct ComputePass {
    cmds: Arc<Mutex<Vec<EncoderCommand>>>,
}

impl Drop for ComputePass {
    fn drop(&mut self) {
        lock(&self.cmds).push(EncoderCommand::EndComputePass);
    }
}

/// A surface or render bundle encoder: not in this protocol version; records nothing.
#[derive(Debug)]
struct Unsupported;

impl Drop for Unsupported {
    fn drop(&mut self) {}
}

fn obj_id(o: Option<&Obj>) -> Id {
    o.map(|o| o.id).unwrap_or(0)
}

fn buf_id(b: &DispatchBuffer) -> Id {
    b.as_custom::<RemoteBuffer>().map(|b| b.obj.id).unwrap_or(0)
}

impl InstanceInterface for RemoteInstance {
    fn new(_desc: wgpu::InstanceDescriptor) -> Self {
        RemoteInstance { conn: None }
    }

    unsafe fn create_surface(
        &self,
        _target: wgpu::SurfaceTargetUnsafe,
    ) -> Result<DispatchSurface, wgpu::CreateSurfaceError> {
        // There is no public constructor for the error: a surface is refused by panicking in
        // wgpu's own code paths, which this library must not do, so it answers with a
        // surface whose methods report the lack of support.
        Ok(DispatchSurface::custom(Unsupported))
    }

    fn request_adapter(
        &self,
        _options: &wgpu::RequestAdapterOptions<'_, '_>,
    ) -> Pin<Box<dyn RequestAdapterFuture>> {
        let r = match &self.conn {
            None => Err(wgpu::RequestAdapterError::EnvNotSet),
            Some(conn) => match conn.call(Command::RequestAdapter) {
                Reply::Adapter(desc) => Ok(DispatchAdapter::custom(RemoteAdapter {
                    conn: Arc::clone(conn),
                    desc: *desc,
                })),
                _ => Err(wgpu::RequestAdapterError::EnvNotSet),
            },
        };
        Box::pin(ready(r))
    }

    fn poll_all_devices(&self, _force_wait: bool) -> bool {
        true
    }

    fn wgsl_language_features(&self) -> wgpu::WgslLanguageFeatures {
        wgpu::WgslLanguageFeatures::empty()
    }

    fn enumerate_adapters(
        &self,
        _backends: wgpu::Backends,
    ) -> Pin<Box<dyn EnumerateAdapterFuture>> {
        let f = self.request_adapter(&Default::default());
        Box::pin(async move { f.await.into_iter().collect() })
    }
}

fn adapter_info(d: &webgpu_wire::AdapterDesc) -> wgpu::AdapterInfo {
    wgpu::AdapterInfo {
        name: d.name.clone(),
        vendor: d.vendor,
        device: d.device,
        device_type: match d.device_type {
            1 => wgpu::DeviceType::IntegratedGpu,
            2 => wgpu::DeviceType::DiscreteGpu,
            3 => wgpu::DeviceType::VirtualGpu,
            4 => wgpu::DeviceType::Cpu,
            _ => wgpu::DeviceType::Other,
        },
        device_pci_bus_id: String::new(),
        driver: d.driver.clone(),
        driver_info: d.driver_info.clone(),
        backend: wgpu::Backend::Noop,
        subgroup_min_size: 0,
        subgroup_max_size: 0,
        transient_saves_memory: None,
        limit_bucket: None,
    }
}

impl AdapterInterface for RemoteAdapter {
    fn request_device(
        &self,
        desc: &wgpu::DeviceDescriptor<'_>,
    ) -> Pin<Box<dyn RequestDeviceFuture>> {
        let device = self.conn.id();
        let queue = self.conn.id();
        let features = if desc.required_features.is_empty() {
            [0, 0]
        } else {
            [u64::MAX, u64::MAX]
        };
        let r = match self.conn.call(Command::RequestDevice {
            device,
            queue,
            label: desc.label.map(str::to_owned),
            limits: desc.required_limits.clone(),
            features,
        }) {
            Reply::Device(limits) => {
                let shared = Arc::new(DevShared::default());
                let weak = Arc::downgrade(&shared);
                lock(&self.conn.lost_hooks).insert(
                    device,
                    Box::new(move |why: &str| {
                        if let Some(s) = weak.upgrade() {
                            s.lose(wgpu::DeviceLostReason::Unknown, why);
                        }
                    }),
                );
                Ok((
                    DispatchDevice::custom(RemoteDevice {
                        conn: Arc::clone(&self.conn),
                        id: device,
                        limits: *limits,
                        info: adapter_info(&self.desc),
                        scopes: AtomicU32::new(0),
                        shared: Arc::clone(&shared),
                    }),
                    DispatchQueue::custom(RemoteQueue {
                        conn: Arc::clone(&self.conn),
                        id: queue,
                        device,
                        shared,
                    }),
                ))
            }
            Reply::Failed(m) | Reply::Refused(m) | Reply::Lost(m) => {
                Err(wgpu::RequestDeviceError::from_message(m))
            }
            other => Err(wgpu::RequestDeviceError::from_message(format!(
                "unexpected reply {other:?}"
            ))),
        };
        Box::pin(ready(r))
    }

    fn is_surface_supported(&self, _surface: &DispatchSurface) -> bool {
        false
    }
    fn features(&self) -> wgpu::Features {
        wgpu::Features::empty()
    }
    fn limits(&self) -> wgpu::Limits {
        self.desc.limits.clone()
    }
    fn downlevel_capabilities(&self) -> wgpu::DownlevelCapabilities {
        wgpu::DownlevelCapabilities::default()
    }
    fn get_info(&self) -> wgpu::AdapterInfo {
        adapter_info(&self.desc)
    }
    fn get_texture_format_features(
        &self,
        format: wgpu::TextureFormat,
    ) -> wgpu::TextureFormatFeatures {
        // What WebGPU guarantees without optional features (the protocol offers none).
        if webgpu_wire::gfx::format_supported(format) {
            format.guaranteed_format_features(wgpu::Features::empty())
        } else {
            wgpu::TextureFormatFeatures {
                allowed_usages: wgpu::TextureUsages::empty(),
                flags: wgpu::TextureFormatFeatureFlags::empty(),
            }
        }
    }
    fn get_presentation_timestamp(&self) -> wgpu::PresentationTimestamp {
        wgpu::PresentationTimestamp::INVALID_TIMESTAMP
    }
    fn cooperative_matrix_properties(&self) -> Vec<wgpu::wgt::CooperativeMatrixProperties> {
        Vec::new()
    }
}

impl RemoteDevice {
    fn obj(&self, id: Id) -> Obj {
        Obj::new(&self.conn, id, self.id)
    }
    fn unsupported(&self, what: &str) -> Obj {
        self.conn.unsupported(self.id, what);
        self.obj(0)
    }
    /// Runs the callbacks whose conditions hold after a poll that saw `completed`.
    fn run_callbacks(&self, completed: u64) {
        let ready: Vec<_> = std::mem::take(&mut *lock(&self.shared.ready));
        for cb in ready {
            cb();
        }
        let done: Vec<_> = {
            let mut d = lock(&self.shared.done);
            let (now, later): (Vec<_>, Vec<_>) = std::mem::take(&mut *d)
                .into_iter()
                .partition(|(n, _)| *n <= completed);
            *d = later;
            now
        };
        for (_, cb) in done {
            cb();
        }
    }
}

fn label(l: Option<&str>) -> Option<String> {
    l.map(str::to_owned)
}

impl DeviceInterface for RemoteDevice {
    fn features(&self) -> wgpu::Features {
        wgpu::Features::empty()
    }
    fn limits(&self) -> wgpu::Limits {
        self.limits.clone()
    }
    fn adapter_info(&self) -> wgpu::AdapterInfo {
        self.info.clone()
    }

    fn create_shader_module(
        &self,
        desc: wgpu::ShaderModuleDescriptor<'_>,
        _checks: wgpu::ShaderRuntimeChecks,
    ) -> DispatchShaderModule {
        #[allow(unreachable_patterns)]
        let wgsl = match desc.source {
            wgpu::ShaderSource::Wgsl(s) => s.into_owned(),
            _ => {
                return DispatchShaderModule::custom(
                    self.unsupported("a shader source other than WGSL"),
                )
            }
        };
        let id = self.conn.id();
        self.conn.push(Command::CreateShaderModule {
            device: self.id,
            id,
            label: label(desc.label),
            wgsl,
        });
        DispatchShaderModule::custom(self.obj(id))
    }

    unsafe fn create_shader_module_passthrough(
        &self,
        _desc: &wgpu::ShaderModuleDescriptorPassthrough<'_>,
    ) -> DispatchShaderModule {
        DispatchShaderModule::custom(self.unsupported("passthrough shader modules"))
    }

    fn create_bind_group_layout(
        &self,
        desc: &wgpu::BindGroupLayoutDescriptor<'_>,
    ) -> DispatchBindGroupLayout {
        let mut entries = Vec::with_capacity(desc.entries.len());
        for e in desc.entries {
            let ty = match e.ty {
                wgpu::BindingType::Buffer {
                    ty,
                    has_dynamic_offset,
                    min_binding_size,
                } => BindingType::Buffer {
                    kind: match ty {
                        wgpu::BufferBindingType::Uniform => BufferBindingKind::Uniform,
                        wgpu::BufferBindingType::Storage { read_only } => {
                            BufferBindingKind::Storage { read_only }
                        }
                    },
                    has_dynamic_offset,
                    min_binding_size: min_binding_size.map(|v| v.get()),
                },
                wgpu::BindingType::Sampler(t) => BindingType::Sampler(t),
                wgpu::BindingType::Texture {
                    sample_type,
                    view_dimension,
                    multisampled,
                } => BindingType::Texture {
                    sample_type,
                    view_dimension,
                    multisampled,
                },
                wgpu::BindingType::StorageTexture {
                    access,
                    format,
                    view_dimension,
                } if webgpu_wire::gfx::format_supported(format)
                    && webgpu_wire::gfx::storage_access_supported(access) =>
                {
                    BindingType::StorageTexture {
                        access,
                        format,
                        view_dimension,
                    }
                }
                other => {
                    return DispatchBindGroupLayout::custom(
                        self.unsupported(&format!("binding type {other:?}")),
                    )
                }
            };
            entries.push(BindGroupLayoutEntry {
                binding: e.binding,
                visibility: e.visibility.bits(),
                ty,
                count: e.count.map(|c| c.get()),
            });
        }
        let id = self.conn.id();
        self.conn.push(Command::CreateBindGroupLayout {
            device: self.id,
            id,
            label: label(desc.label),
            entries,
        });
        DispatchBindGroupLayout::custom(self.obj(id))
    }

    fn create_bind_group(&self, desc: &wgpu::BindGroupDescriptor<'_>) -> DispatchBindGroup {
        let mut entries = Vec::with_capacity(desc.entries.len());
        for e in desc.entries {
            let resource = match &e.resource {
                wgpu::BindingResource::Buffer(b) => BindingResource::Buffer {
                    buffer: b.buffer.as_custom::<RemoteBuffer>().map_or(0, |b| b.obj.id),
                    offset: b.offset,
                    size: b.size.map(|s| s.get()),
                },
                wgpu::BindingResource::Sampler(x) => BindingResource::Sampler(render::id_of(*x)),
                wgpu::BindingResource::TextureView(v) => {
                    BindingResource::TextureView(render::id_of(*v))
                }
                _ => {
                    return DispatchBindGroup::custom(
                        self.unsupported("binding arrays and acceleration structures"),
                    )
                }
            };
            entries.push(BindGroupEntry {
                binding: e.binding,
                resource,
            });
        }
        let id = self.conn.id();
        self.conn.push(Command::CreateBindGroup {
            device: self.id,
            id,
            label: label(desc.label),
            layout: obj_id(desc.layout.as_custom::<Obj>()),
            entries,
        });
        DispatchBindGroup::custom(self.obj(id))
    }

    fn create_pipeline_layout(
        &self,
        desc: &wgpu::PipelineLayoutDescriptor<'_>,
    ) -> DispatchPipelineLayout {
        let id = self.conn.id();
        self.conn.push(Command::CreatePipelineLayout {
            device: self.id,
            id,
            label: label(desc.label),
            bind_group_layouts: desc
                .bind_group_layouts
                .iter()
                .map(|b| b.map(|b| obj_id(b.as_custom::<Obj>())))
                .collect(),
            immediate_size: desc.immediate_size,
        });
        DispatchPipelineLayout::custom(self.obj(id))
    }

    fn create_render_pipeline(
        &self,
        desc: &wgpu::RenderPipelineDescriptor<'_>,
    ) -> DispatchRenderPipeline {
        if desc.multiview_mask.is_some() {
            return DispatchRenderPipeline::custom(self.unsupported("multiview"));
        }
        let wire = match render::pipeline_desc(desc) {
            Ok(d) => d,
            Err(what) => return DispatchRenderPipeline::custom(self.unsupported(&what)),
        };
        let id = self.conn.id();
        self.conn.push(Command::CreateRenderPipeline {
            device: self.id,
            id,
            label: label(desc.label),
            desc: Box::new(wire),
        });
        DispatchRenderPipeline::custom(self.obj(id))
    }

    fn create_mesh_pipeline(
        &self,
        _desc: &wgpu::MeshPipelineDescriptor<'_>,
    ) -> DispatchRenderPipeline {
        DispatchRenderPipeline::custom(self.unsupported("mesh pipelines"))
    }

    fn create_compute_pipeline(
        &self,
        desc: &wgpu::ComputePipelineDescriptor<'_>,
    ) -> DispatchComputePipeline {
        let id = self.conn.id();
        self.conn.push(Command::CreateComputePipeline {
            device: self.id,
            id,
            label: label(desc.label),
            layout: desc.layout.map(|l| obj_id(l.as_custom::<Obj>())),
            module: obj_id(desc.module.as_custom::<Obj>()),
            entry_point: desc.entry_point.map(str::to_owned),
            constants: desc
                .compilation_options
                .constants
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
            zero_initialize_workgroup_memory: desc
                .compilation_options
                .zero_initialize_workgroup_memory,
        });
        DispatchComputePipeline::custom(self.obj(id))
    }

    unsafe fn create_pipeline_cache(
        &self,
        _desc: &wgpu::PipelineCacheDescriptor<'_>,
    ) -> DispatchPipelineCache {
        DispatchPipelineCache::custom(self.unsupported("pipeline caches"))
    }

    fn create_buffer(&self, desc: &wgpu::BufferDescriptor<'_>) -> DispatchBuffer {
        let id = self.conn.id();
        self.conn.push(Command::CreateBuffer {
            device: self.id,
            id,
            label: label(desc.label),
            size: desc.size,
            usage: desc.usage.bits(),
            mapped_at_creation: desc.mapped_at_creation,
        });
        let mut map = MapState::default();
        if desc.mapped_at_creation {
            map.range = Some((0, desc.size, true));
        }
        DispatchBuffer::custom(RemoteBuffer {
            obj: self.obj(id),
            shared: Arc::clone(&self.shared),
            map: Arc::new(Mutex::new(map)),
        })
    }

    fn create_texture(&self, desc: &wgpu::TextureDescriptor<'_>) -> DispatchTexture {
        if let Some(f) = std::iter::once(&desc.format)
            .chain(desc.view_formats)
            .find(|f| !webgpu_wire::gfx::format_supported(**f))
        {
            return DispatchTexture::custom(self.unsupported(&format!("texture format {f:?}")));
        }
        let id = self.conn.id();
        self.conn.push(Command::CreateTexture {
            device: self.id,
            id,
            label: label(desc.label),
            desc: webgpu_wire::gfx::TextureDesc {
                size: desc.size,
                mip_level_count: desc.mip_level_count,
                sample_count: desc.sample_count,
                dimension: desc.dimension,
                format: desc.format,
                usage: desc.usage.bits(),
                view_formats: desc.view_formats.to_vec(),
            },
        });
        DispatchTexture::custom(self.obj(id))
    }

    fn create_external_texture(
        &self,
        _desc: &wgpu::ExternalTextureDescriptor<'_>,
        _planes: &[&wgpu::TextureView],
    ) -> DispatchExternalTexture {
        DispatchExternalTexture::custom(self.unsupported("external textures"))
    }

    fn create_blas(
        &self,
        _desc: &wgpu::CreateBlasDescriptor<'_>,
        _sizes: wgpu::BlasGeometrySizeDescriptors,
    ) -> (Option<u64>, DispatchBlas) {
        (
            None,
            DispatchBlas::custom(self.unsupported("acceleration structures")),
        )
    }

    fn create_tlas(&self, _desc: &wgpu::CreateTlasDescriptor<'_>) -> DispatchTlas {
        DispatchTlas::custom(self.unsupported("acceleration structures"))
    }

    fn create_sampler(&self, desc: &wgpu::SamplerDescriptor<'_>) -> DispatchSampler {
        let id = self.conn.id();
        self.conn.push(Command::CreateSampler {
            device: self.id,
            id,
            label: label(desc.label),
            desc: desc.clone().map_label(|_| ()),
        });
        DispatchSampler::custom(self.obj(id))
    }

    fn create_query_set(&self, _desc: &wgpu::QuerySetDescriptor<'_>) -> DispatchQuerySet {
        DispatchQuerySet::custom(self.unsupported("query sets"))
    }

    fn create_command_encoder(
        &self,
        desc: &wgpu::CommandEncoderDescriptor<'_>,
    ) -> DispatchCommandEncoder {
        self.conn.encoder_opened();
        DispatchCommandEncoder::custom(Encoder {
            conn: Arc::clone(&self.conn),
            device: self.id,
            label: label(desc.label),
            cmds: Arc::default(),
            recording: true,
        })
    }

    fn create_render_bundle_encoder(
        &self,
        _desc: &wgpu::RenderBundleEncoderDescriptor<'_>,
    ) -> DispatchRenderBundleEncoder {
        self.conn.unsupported(self.id, "render bundles");
        DispatchRenderBundleEncoder::custom(Unsupported)
    }

    fn set_device_lost_callback(&self, callback: BoxDeviceLostCallback) {
        match self.conn.lost() {
            // Lost already: like wgpu-core, the callback runs at once.
            Some(why) => callback(wgpu::DeviceLostReason::Unknown, why),
            None => *lock(&self.shared.lost) = Some(callback),
        }
    }

    fn on_uncaptured_error(&self, handler: Arc<dyn wgpu::UncapturedErrorHandler>) {
        lock(&self.conn.handlers).insert(self.id, handler);
    }

    fn push_error_scope(&self, filter: wgpu::ErrorFilter) -> u32 {
        self.conn.push(Command::PushErrorScope {
            device: self.id,
            filter: match filter {
                wgpu::ErrorFilter::Validation => ErrorKind::Validation,
                wgpu::ErrorFilter::OutOfMemory => ErrorKind::OutOfMemory,
                wgpu::ErrorFilter::Internal => ErrorKind::Internal,
            },
        });
        self.scopes.fetch_add(1, Ordering::Relaxed)
    }

    fn pop_error_scope(&self, _index: u32) -> Pin<Box<dyn PopErrorScopeFuture>> {
        self.scopes.fetch_sub(1, Ordering::Relaxed);
        let e = match self.conn.call(Command::PopErrorScope { device: self.id }) {
            Reply::Scope(e) => e.map(to_wgpu),
            Reply::Failed(m) | Reply::Refused(m) | Reply::Lost(m) => Some(to_wgpu(GpuError {
                kind: ErrorKind::Internal,
                message: m,
            })),
            _ => None,
        };
        Box::pin(ready(e))
    }

    unsafe fn start_graphics_debugger_capture(&self) {}
    unsafe fn stop_graphics_debugger_capture(&self) {}

    fn poll(
        &self,
        poll_type: wgpu::wgt::PollType<u64>,
    ) -> Result<wgpu::PollStatus, wgpu::PollError> {
        let wait = matches!(poll_type, wgpu::wgt::PollType::Wait { .. });
        match self.conn.call(Command::Poll {
            device: self.id,
            wait,
        }) {
            Reply::Polled {
                completed,
                queue_empty,
            } => {
                self.run_callbacks(completed);
                Ok(if queue_empty {
                    wgpu::PollStatus::QueueEmpty
                } else if wait {
                    wgpu::PollStatus::WaitSucceeded
                } else {
                    wgpu::PollStatus::Poll
                })
            }
            // A lost device has nothing left to wait for: every callback runs (a map asked
            // for after the loss fails here).
            Reply::Lost(_) => {
                self.run_callbacks(u64::MAX);
                Ok(wgpu::PollStatus::QueueEmpty)
            }
            _ => {
                self.run_callbacks(0);
                Err(wgpu::PollError::Timeout)
            }
        }
    }

    fn get_internal_counters(&self) -> wgpu::InternalCounters {
        wgpu::InternalCounters::default()
    }

    fn generate_allocator_report(&self) -> Option<wgpu::AllocatorReport> {
        None
    }

    fn destroy(&self) {
        self.conn.push(Command::DestroyDevice { device: self.id });
        self.conn.flush();
        self.shared
            .lose(wgpu::DeviceLostReason::Destroyed, "Device destroyed");
    }
}

impl Drop for RemoteDevice {
    fn drop(&mut self) {
        lock(&self.conn.handlers).remove(&self.id);
        lock(&self.conn.lost_hooks).remove(&self.id);
        self.conn.push(Command::Release { id: self.id });
    }
}

impl Drop for RemoteQueue {
    fn drop(&mut self) {
        self.conn.push(Command::Release { id: self.id });
    }
}

impl QueueInterface for RemoteQueue {
    fn write_buffer(&self, buffer: &DispatchBuffer, offset: wgpu::BufferAddress, data: &[u8]) {
        // A message carries at most 64 MiB: larger writes travel in parts, in order.
        let buffer = buf_id(buffer);
        let mut at = 0;
        loop {
            let part = &data[at..data.len().min(at + CHUNK)];
            self.conn.push(Command::WriteBuffer {
                queue: self.id,
                buffer,
                offset: offset.saturating_add(at as u64),
                data: part.to_vec(),
            });
            at += part.len();
            if at >= data.len() {
                break;
            }
        }
    }

    fn create_staging_buffer(&self, size: wgpu::BufferSize) -> Option<DispatchQueueWriteBuffer> {
        let size = usize::try_from(size.get()).ok()?;
        Some(DispatchQueueWriteBuffer::custom(Staging(vec![0; size])))
    }

    fn validate_write_buffer(
        &self,
        _buffer: &DispatchBuffer,
        _offset: wgpu::BufferAddress,
        _size: wgpu::BufferSize,
    ) -> Option<()> {
        // The host validates the write itself.
        Some(())
    }

    fn write_staging_buffer(
        &self,
        buffer: &DispatchBuffer,
        offset: wgpu::BufferAddress,
        staging_buffer: &DispatchQueueWriteBuffer,
    ) {
        if let Some(s) = staging_buffer.as_custom::<Staging>() {
            self.write_buffer(buffer, offset, &s.0);
        }
    }

    fn write_texture(
        &self,
        texture: wgpu::TexelCopyTextureInfo<'_>,
        data: &[u8],
        data_layout: wgpu::TexelCopyBufferLayout,
        size: wgpu::Extent3d,
    ) {
        let dst = match render::texture_copy(&texture) {
            Ok(d) => d,
            Err(what) => return self.conn.unsupported(self.device, &what),
        };
        for (dst, data, layout, size) in render::split_write(dst, data, data_layout, size) {
            self.conn.push(Command::WriteTexture {
                queue: self.id,
                dst,
                data: data.to_vec(),
                layout,
                size,
            });
        }
    }

    fn submit(&self, command_buffers: &mut dyn Iterator<Item = DispatchCommandBuffer>) -> u64 {
        let mut ids = Vec::new();
        for cb in command_buffers {
            if let Some(o) = cb.as_custom::<Obj>() {
                o.consumed.store(true, Ordering::Relaxed);
                ids.push(o.id);
            }
        }
        self.conn.push(Command::Submit {
            queue: self.id,
            command_buffers: ids,
        });
        self.conn.flush();
        self.shared.submitted.fetch_add(1, Ordering::AcqRel) + 1
    }

    fn get_timestamp_period(&self) -> f32 {
        1.0
    }

    fn on_submitted_work_done(&self, callback: BoxSubmittedWorkDoneCallback) {
        let n = self.shared.submitted.load(Ordering::Acquire);
        lock(&self.shared.done).push((n, callback));
    }

    fn compact_blas(&self, _blas: &DispatchBlas) -> (Option<u64>, DispatchBlas) {
        self.conn
            .unsupported(self.device, "acceleration structure compaction");
        (None, DispatchBlas::custom(Obj::new(&self.conn, 0, 0)))
    }

    fn present(&self, _detail: &DispatchSurfaceOutputDetail) {
        self.conn.unsupported(self.device, "presenting surfaces");
    }
}

impl ShaderModuleInterface for Obj {
    fn get_compilation_info(&self) -> Pin<Box<dyn ShaderCompilationInfoFuture>> {
        let messages = match self
            .conn
            .call(Command::GetCompilationInfo { module: self.id })
        {
            Reply::CompilationInfo(m) => m
                .into_iter()
                .map(|m| wgpu::CompilationMessage {
                    message: m.message,
                    message_type: match m.kind {
                        0 => wgpu::CompilationMessageType::Error,
                        1 => wgpu::CompilationMessageType::Warning,
                        _ => wgpu::CompilationMessageType::Info,
                    },
                    location: m.location.map(|(l, c, o, n)| wgpu::SourceLocation {
                        line_number: l,
                        line_position: c,
                        offset: o,
                        length: n,
                    }),
                })
                .collect(),
            _ => Vec::new(),
        };
        Box::pin(ready(wgpu::CompilationInfo { messages }))
    }
}

impl BindGroupLayoutInterface for Obj {}
impl BindGroupInterface for Obj {}
impl TextureViewInterface for Obj {}
impl SamplerInterface for Obj {}
impl PipelineLayoutInterface for Obj {}
impl CommandBufferInterface for Obj {}
impl RenderBundleInterface for Obj {}
impl TlasInterface for Obj {}
impl TextureInterface for Obj {
    fn create_view(&self, desc: &wgpu::TextureViewDescriptor<'_>) -> DispatchTextureView {
        let unsupported = |what: String| {
            self.conn.unsupported(self.device, &what);
            DispatchTextureView::custom(Obj::new(&self.conn, 0, self.device))
        };
        if let Some(f) = desc
            .format
            .filter(|f| !webgpu_wire::gfx::format_supported(*f))
        {
            return unsupported(format!("texture format {f:?}"));
        }
        if !render::aspect_supported(desc.aspect) {
            return unsupported(format!("texture aspect {:?}", desc.aspect));
        }
        let id = self.conn.id();
        self.conn.push(Command::CreateTextureView {
            texture: self.id,
            id,
            label: label(desc.label),
            desc: webgpu_wire::gfx::TextureViewDesc {
                format: desc.format,
                dimension: desc.dimension,
                usage: desc.usage.map(|u| u.bits()),
                aspect: desc.aspect,
                base_mip_level: desc.base_mip_level,
                mip_level_count: desc.mip_level_count,
                base_array_layer: desc.base_array_layer,
                array_layer_count: desc.array_layer_count,
            },
        });
        DispatchTextureView::custom(Obj::new(&self.conn, id, self.device))
    }
    fn destroy(&self) {
        self.conn.push(Command::DestroyTexture { texture: self.id });
    }
}
impl ExternalTextureInterface for Obj {
    fn destroy(&self) {}
}
impl BlasInterface for Obj {
    fn prepare_compact_async(&self, callback: BlasCompactCallback) {
        callback(Err(wgpu::BlasAsyncError));
    }
    fn ready_for_compaction(&self) -> bool {
        false
    }
}
impl QuerySetInterface for Obj {
    fn destroy(&self) {}
}
impl PipelineCacheInterface for Obj {
    fn get_data(&self) -> Option<Vec<u8>> {
        None
    }
}
impl RenderPipelineInterface for Obj {
    fn get_bind_group_layout(&self, index: u32) -> DispatchBindGroupLayout {
        let id = self.conn.id();
        self.conn.push(Command::GetBindGroupLayout {
            pipeline: self.id,
            index,
            id,
        });
        DispatchBindGroupLayout::custom(Obj::new(&self.conn, id, self.device))
    }
}
impl ComputePipelineInterface for Obj {
    fn get_bind_group_layout(&self, index: u32) -> DispatchBindGroupLayout {
        let id = self.conn.id();
        self.conn.push(Command::GetBindGroupLayout {
            pipeline: self.id,
            index,
            id,
        });
        DispatchBindGroupLayout::custom(Obj::new(&self.conn, id, self.device))
    }
}

impl BufferInterface for RemoteBuffer {
    fn map_async(
        &self,
        mode: wgpu::MapMode,
        range: Range<wgpu::BufferAddress>,
        callback: BufferMapCallback,
    ) {
        let write = mode == wgpu::MapMode::Write;
        let reply = self.obj.conn.call(Command::MapBuffer {
            buffer: self.obj.id,
            mode: if write { MapMode::Write } else { MapMode::Read },
            offset: range.start,
            size: range.end.saturating_sub(range.start),
        });
        let result = match reply {
            Reply::Mapped(data) => {
                let mut m = lock(&self.map);
                m.range = Some((range.start, range.end, write));
                m.data = data;
                m.writes.clear();
                Ok(())
            }
            _ => Err(wgpu::BufferAsyncError),
        };
        // Like wgpu-core, the callback runs at the next poll.
        lock(&self.shared.ready).push(Box::new(move || callback(result)));
    }

    fn get_mapped_range(
        &self,
        sub_range: Range<wgpu::BufferAddress>,
    ) -> Result<DispatchBufferMappedRange, wgpu::MapRangeError> {
        let m = lock(&self.map);
        let len = sub_range.end.saturating_sub(sub_range.start) as usize;
        let (data, write) = match m.range {
            Some((s, e, w)) if sub_range.start >= s && sub_range.end <= e => {
                let at = (sub_range.start - s) as usize;
                let data = if m.data.is_empty() {
                    vec![0; len]
                } else {
                    m.data[at..at + len].to_vec()
                };
                (data, w)
            }
            _ => {
                self.obj.conn.uncaptured(
                    self.obj.device,
                    GpuError {
                        kind: ErrorKind::Validation,
                        message: format!(
                            "get_mapped_range({sub_range:?}) on a buffer not mapped there"
                        ),
                    },
                );
                (vec![0; len], false)
            }
        };
        Ok(DispatchBufferMappedRange::custom(MappedRange {
            offset: sub_range.start,
            data,
            write,
            map: Arc::clone(&self.map),
        }))
    }

    fn unmap(&self) {
        let writes = {
            let mut m = lock(&self.map);
            m.range = None;
            m.data = Vec::new();
            std::mem::take(&mut m.writes)
        };
        self.obj.conn.push(Command::UnmapBuffer {
            buffer: self.obj.id,
            writes,
        });
    }

    fn destroy(&self) {
        self.obj.conn.push(Command::DestroyBuffer {
            buffer: self.obj.id,
        });
    }
}

impl BufferMappedRangeInterface for MappedRange {
    fn len(&self) -> usize {
        self.data.len()
    }
    unsafe fn read_slice(&self) -> &[u8] {
        &self.data
    }
    unsafe fn write_slice(&mut self) -> wgpu::WriteOnly<'_, [u8]> {
        wgpu::WriteOnly::from(&mut self.data[..])
    }
}

impl QueueWriteBufferInterface for Staging {
    fn len(&self) -> usize {
        self.0.len()
    }
    unsafe fn write_slice(&mut self) -> wgpu::WriteOnly<'_, [u8]> {
        wgpu::WriteOnly::from(&mut self.0[..])
    }
}

impl Encoder {
    fn push(&self, c: EncoderCommand) {
        lock(&self.cmds).push(c);
    }
}

impl CommandEncoderInterface for Encoder {
    fn copy_buffer_to_buffer(
        &self,
        source: &DispatchBuffer,
        source_offset: wgpu::BufferAddress,
        destination: &DispatchBuffer,
        destination_offset: wgpu::BufferAddress,
        copy_size: Option<wgpu::BufferAddress>,
    ) {
        self.push(EncoderCommand::CopyBufferToBuffer {
            src: buf_id(source),
            src_offset: source_offset,
            dst: buf_id(destination),
            dst_offset: destination_offset,
            size: copy_size,
        });
    }
    fn copy_buffer_to_texture(
        &self,
        s: wgpu::TexelCopyBufferInfo<'_>,
        d: wgpu::TexelCopyTextureInfo<'_>,
        size: wgpu::Extent3d,
    ) {
        match render::texture_copy(&d) {
            Ok(dst) => self.push(EncoderCommand::CopyBufferToTexture {
                src: render::id_of(s.buffer),
                layout: s.layout.into(),
                dst,
                size,
            }),
            Err(what) => self.conn.unsupported(self.device, &what),
        }
    }
    fn copy_texture_to_buffer(
        &self,
        s: wgpu::TexelCopyTextureInfo<'_>,
        d: wgpu::TexelCopyBufferInfo<'_>,
        size: wgpu::Extent3d,
    ) {
        match render::texture_copy(&s) {
            Ok(src) => self.push(EncoderCommand::CopyTextureToBuffer {
                src,
                dst: render::id_of(d.buffer),
                layout: d.layout.into(),
                size,
            }),
            Err(what) => self.conn.unsupported(self.device, &what),
        }
    }
    fn copy_texture_to_texture(
        &self,
        s: wgpu::TexelCopyTextureInfo<'_>,
        d: wgpu::TexelCopyTextureInfo<'_>,
        size: wgpu::Extent3d,
    ) {
        match (render::texture_copy(&s), render::texture_copy(&d)) {
            (Ok(src), Ok(dst)) => {
                self.push(EncoderCommand::CopyTextureToTexture { src, dst, size })
            }
            (Err(what), _) | (_, Err(what)) => self.conn.unsupported(self.device, &what),
        }
    }

    fn begin_compute_pass(&self, desc: &wgpu::ComputePassDescriptor<'_>) -> DispatchComputePass {
        if desc.timestamp_writes.is_some() {
            self.conn.unsupported(self.device, "pass timestamp writes");
        }
        self.push(EncoderCommand::BeginComputePass {
            label: label(desc.label),
        });
        DispatchComputePass::custom(ComputePass {
            cmds: Arc::clone(&self.cmds),
        })
    }
    fn begin_render_pass(&self, desc: &wgpu::RenderPassDescriptor<'_>) -> DispatchRenderPass {
        DispatchRenderPass::custom(RemotePass::begin(
            Arc::clone(&self.conn),
            self.device,
            Arc::clone(&self.cmds),
            desc,
        ))
    }
    fn finish(&mut self) -> DispatchCommandBuffer {
        let id = self.conn.id();
        let commands = std::mem::take(&mut *lock(&self.cmds));
        self.conn.push(Command::FinishEncoder {
            device: self.device,
            id,
            label: self.label.clone(),
            commands,
        });
        if std::mem::replace(&mut self.recording, false) {
            self.conn.encoder_closed();
        }
        DispatchCommandBuffer::custom(Obj::new(&self.conn, id, self.device))
    }
    fn clear_texture(&self, _texture: &DispatchTexture, _range: &wgpu::ImageSubresourceRange) {
        self.conn.unsupported(self.device, "clear_texture");
    }
    fn clear_buffer(
        &self,
        buffer: &DispatchBuffer,
        offset: wgpu::BufferAddress,
        size: Option<wgpu::BufferAddress>,
    ) {
        self.push(EncoderCommand::ClearBuffer {
            buffer: buf_id(buffer),
            offset,
            size,
        });
    }
    fn insert_debug_marker(&self, label: &str) {
        self.push(EncoderCommand::InsertDebugMarker(label.to_owned()));
    }
    fn push_debug_group(&self, label: &str) {
        self.push(EncoderCommand::PushDebugGroup(label.to_owned()));
    }
    fn pop_debug_group(&self) {
        self.push(EncoderCommand::PopDebugGroup);
    }
    fn write_timestamp(&self, _q: &DispatchQuerySet, _i: u32) {
        self.conn.unsupported(self.device, "timestamp queries");
    }
    fn resolve_query_set(
        &self,
        _q: &DispatchQuerySet,
        _first: u32,
        _count: u32,
        _dst: &DispatchBuffer,
        _off: wgpu::BufferAddress,
    ) {
        self.conn.unsupported(self.device, "query sets");
    }
    fn mark_acceleration_structures_built<'a>(
        &self,
        _blas: &mut dyn Iterator<Item = &'a wgpu::Blas>,
        _tlas: &mut dyn Iterator<Item = &'a wgpu::Tlas>,
    ) {
        self.conn
            .unsupported(self.device, "acceleration structures");
    }
    fn build_acceleration_structures<'a>(
        &self,
        _blas: &mut dyn Iterator<Item = &'a wgpu::BlasBuildEntry<'a>>,
        _tlas: &mut dyn Iterator<Item = &'a wgpu::Tlas>,
    ) {
        self.conn
            .unsupported(self.device, "acceleration structures");
    }
    fn transition_resources<'a>(
        &mut self,
        _b: &mut dyn Iterator<Item = wgpu::wgt::BufferTransition<&'a DispatchBuffer>>,
        _t: &mut dyn Iterator<Item = wgpu::wgt::TextureTransition<&'a DispatchTexture>>,
    ) {
        // A hint only; WebGPU tracks resource states itself.
    }
}

impl ComputePassInterface for ComputePass {
    fn set_pipeline(&mut self, pipeline: &DispatchComputePipeline) {
        lock(&self.cmds).push(EncoderCommand::SetComputePipeline {
            pipeline: obj_id(pipeline.as_custom::<Obj>()),
        });
    }
    fn set_bind_group(
        &mut self,
        index: u32,
        bind_group: Option<&DispatchBindGroup>,
        offsets: &[wgpu::DynamicOffset],
    ) {
        lock(&self.cmds).push(EncoderCommand::SetBindGroup {
            index,
            group: bind_group.map(|g| obj_id(g.as_custom::<Obj>())),
            offsets: offsets.to_vec(),
        });
    }
    fn set_immediates(&mut self, _offset: u32, _data: &[u8]) {
        lock(&self.cmds).push(EncoderCommand::InsertDebugMarker(
            "set_immediates is not supported by the WebGPU guest protocol".into(),
        ));
    }
    fn insert_debug_marker(&mut self, label: &str) {
        lock(&self.cmds).push(EncoderCommand::InsertDebugMarker(label.to_owned()));
    }
    fn push_debug_group(&mut self, group_label: &str) {
        lock(&self.cmds).push(EncoderCommand::PushDebugGroup(group_label.to_owned()));
    }
    fn pop_debug_group(&mut self) {
        lock(&self.cmds).push(EncoderCommand::PopDebugGroup);
    }
    fn write_timestamp(&mut self, _q: &DispatchQuerySet, _i: u32) {}
    fn begin_pipeline_statistics_query(&mut self, _q: &DispatchQuerySet, _i: u32) {}
    fn end_pipeline_statistics_query(&mut self) {}
    fn dispatch_workgroups(&mut self, x: u32, y: u32, z: u32) {
        lock(&self.cmds).push(EncoderCommand::Dispatch { x, y, z });
    }
    fn dispatch_workgroups_indirect(
        &mut self,
        indirect_buffer: &DispatchBuffer,
        indirect_offset: wgpu::BufferAddress,
    ) {
        lock(&self.cmds).push(EncoderCommand::DispatchIndirect {
            buffer: buf_id(indirect_buffer),
            offset: indirect_offset,
        });
    }
    fn transition_resources<'a>(
        &mut self,
        _b: &mut dyn Iterator<Item = wgpu::wgt::BufferTransition<&'a DispatchBuffer>>,
        _t: &mut dyn Iterator<Item = wgpu::wgt::TextureTransition<&'a DispatchTextureView>>,
    ) {
    }
}

impl SurfaceInterface for Unsupported {
    fn get_capabilities(&self, _adapter: &DispatchAdapter) -> wgpu::SurfaceCapabilities {
        wgpu::SurfaceCapabilities::default()
    }
    fn configure(&self, _device: &DispatchDevice, _config: &wgpu::SurfaceConfiguration) {}
    fn get_current_texture(
        &self,
    ) -> (
        Option<DispatchTexture>,
        wgpu::SurfaceStatus,
        DispatchSurfaceOutputDetail,
    ) {
        (
            None,
            wgpu::SurfaceStatus::Lost,
            DispatchSurfaceOutputDetail::custom(Unsupported),
        )
    }
}

impl SurfaceOutputDetailInterface for Unsupported {
    fn texture_discard(&self) {}
    fn texture_release(&self) {}
}

/// Render bundle encoders: every call is dropped (creating one already reported the error).
impl RenderBundleEncoderInterface for Unsupported {
    fn set_pipeline(&mut self, _p: &DispatchRenderPipeline) {}
    fn set_bind_group(&mut self, _i: u32, _g: Option<&DispatchBindGroup>, _o: &[u32]) {}
    fn set_index_buffer(
        &mut self,
        _b: &DispatchBuffer,
        _f: wgpu::IndexFormat,
        _o: wgpu::BufferAddress,
        _s: Option<wgpu::BufferSize>,
    ) {
    }
    fn set_vertex_buffer(
        &mut self,
        _slot: u32,
        _b: Option<&DispatchBuffer>,
        _o: wgpu::BufferAddress,
        _s: Option<wgpu::BufferSize>,
    ) {
    }
    fn set_immediates(&mut self, _o: u32, _d: &[u8]) {}
    fn draw(&mut self, _v: Range<u32>, _i: Range<u32>) {}
    fn draw_indexed(&mut self, _i: Range<u32>, _b: i32, _n: Range<u32>) {}
    fn draw_indirect(&mut self, _b: &DispatchBuffer, _o: wgpu::BufferAddress) {}
    fn draw_indexed_indirect(&mut self, _b: &DispatchBuffer, _o: wgpu::BufferAddress) {}
    fn finish(self, _desc: &wgpu::RenderBundleDescriptor<'_>) -> DispatchRenderBundle
    where
        Self: Sized,
    {
        DispatchRenderBundle::custom(Unsupported)
    }
    fn finish_boxed(
        self: Box<Self>,
        desc: &wgpu::RenderBundleDescriptor<'_>,
    ) -> DispatchRenderBundle {
        (*self).finish(desc)
    }
}

impl RenderBundleInterface for Unsupported {}
