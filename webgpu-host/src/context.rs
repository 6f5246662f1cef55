//! One guest context: its object table, error scopes, budget, and the request loop.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use webgpu_wire::{
    decode_request, encode_reply, ErrorKind, GpuError, Id, Reply, HEADER_LEN, MAX_MESSAGE,
};

/// What one context may hold at once. Exceeding a limit is a WebGPU out-of-memory error for
/// that context only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Live objects (devices, buffers, modules, layouts, pipelines, command buffers...).
    pub max_objects: usize,
    /// Bytes of buffers and textures alive at once.
    pub max_bytes: u64,
    /// Submissions not yet completed on the GPU, per device.
    pub max_in_flight: u64,
    /// Error scopes pushed and not popped, per device.
    pub max_error_scopes: usize,
    /// Uncaptured errors kept for the guest between two replies; later ones are counted and
    /// summarised.
    pub max_uncaptured: usize,
}

impl Default for Budget {
    /// 4096 objects, 1 GiB, 64 submissions in flight, 256 scopes, 64 uncaptured errors.
    fn default() -> Self {
        Budget {
            max_objects: 4096,
            max_bytes: 1 << 30,
            max_in_flight: 64,
            max_error_scopes: 256,
            max_uncaptured: 64,
        }
    }
}

/// A device of the context and its bookkeeping.
#[derive(Debug)]
pub(crate) struct DeviceState {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub scopes: Vec<(ErrorKind, Option<GpuError>)>,
    pub submitted: u64,
    pub completed: Arc<AtomicU64>,
}

/// A buffer and its mapping as the executor knows it.
#[derive(Debug)]
pub(crate) struct BufferState {
    pub buffer: wgpu::Buffer,
    pub size: u64,
    /// Range mapped and whether for writing (set at creation or by a successful map).
    pub mapped: Option<(u64, u64, bool)>,
}

/// Everything a guest id can name.
#[derive(Debug)]
pub(crate) enum Object {
    Device(Box<DeviceState>),
    /// A device's queue (the entry's `device` names it).
    Queue(()),
    Buffer(BufferState),
    ShaderModule(wgpu::ShaderModule),
    BindGroupLayout(wgpu::BindGroupLayout),
    BindGroup(wgpu::BindGroup),
    PipelineLayout(wgpu::PipelineLayout),
    ComputePipeline(wgpu::ComputePipeline),
    CommandBuffer(wgpu::CommandBuffer),
    Texture(wgpu::Texture),
    TextureView(wgpu::TextureView),
    Sampler(wgpu::Sampler),
    RenderPipeline(wgpu::RenderPipeline),
}

impl Object {
    pub fn kind(&self) -> &'static str {
        match self {
            Object::Device(_) => "device",
            Object::Queue(()) => "queue",
            Object::Buffer(_) => "buffer",
            Object::ShaderModule(_) => "shader module",
            Object::BindGroupLayout(_) => "bind group layout",
            Object::BindGroup(_) => "bind group",
            Object::PipelineLayout(_) => "pipeline layout",
            Object::ComputePipeline(_) => "compute pipeline",
            Object::CommandBuffer(_) => "command buffer",
            Object::Texture(_) => "texture",
            Object::TextureView(_) => "texture view",
            Object::Sampler(_) => "sampler",
            Object::RenderPipeline(_) => "render pipeline",
        }
    }
}

/// An entry of the object table.
#[derive(Debug)]
pub(crate) struct Entry {
    /// The device the object belongs to (a device names itself).
    pub device: Id,
    /// Bytes charged to the budget.
    pub bytes: u64,
    pub obj: Object,
}

/// One guest context. Feed it requests with [`Context::handle`].
#[derive(Debug)]
pub struct Context {
    pub(crate) adapter: wgpu::Adapter,
    pub(crate) budget: Budget,
    pub(crate) objects: HashMap<Id, Entry>,
    pub(crate) bytes: u64,
    /// Errors wgpu reported through the devices' uncaptured-error handlers while the current
    /// command ran: (device, error).
    pub(crate) sink: Arc<Mutex<Vec<(Id, GpuError)>>>,
    uncaptured: Vec<(Id, GpuError)>,
    uncaptured_dropped: u64,
    /// Set when the host dropped the context: why. Every later request is answered
    /// [`Reply::Lost`].
    lost: Option<String>,
}

/// A failure of one command, as the guest will see it.
pub(crate) type CmdResult = Result<Reply, GpuError>;

pub(crate) fn validation(message: impl Into<String>) -> GpuError {
    GpuError {
        kind: ErrorKind::Validation,
        message: message.into(),
    }
}

pub(crate) fn oom(message: impl Into<String>) -> GpuError {
    GpuError {
        kind: ErrorKind::OutOfMemory,
        message: message.into(),
    }
}

/// Converts an error wgpu reported on the host into the wire's form.
pub(crate) fn from_wgpu(e: &wgpu::Error) -> GpuError {
    match e {
        wgpu::Error::OutOfMemory { source } => oom(source.to_string()),
        wgpu::Error::Validation { description, .. } => validation(description.clone()),
        wgpu::Error::Internal { description, .. } => GpuError {
            kind: ErrorKind::Internal,
            message: description.clone(),
        },
    }
}

impl Context {
    pub(crate) fn new(adapter: wgpu::Adapter, budget: Budget) -> Self {
        Context {
            adapter,
            budget,
            objects: HashMap::new(),
            bytes: 0,
            sink: Arc::new(Mutex::new(Vec::new())),
            uncaptured: Vec::new(),
            uncaptured_dropped: 0,
            lost: None,
        }
    }

    /// Drops every object of this context (its devices, and everything on them): the guest's
    /// devices are lost. Every later request is answered [`Reply::Lost`] with `reason`, which
    /// the guest library turns into its devices' lost callbacks.
    pub fn close(&mut self, reason: &str) {
        self.objects.clear();
        self.bytes = 0;
        self.uncaptured.clear();
        self.lost = Some(reason.to_owned());
    }

    /// Whether [`Context::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.lost.is_some()
    }

    /// Bytes of buffers and textures this context holds now.
    pub fn bytes_in_use(&self) -> u64 {
        self.bytes
    }

    /// Objects this context holds now.
    pub fn object_count(&self) -> usize {
        self.objects.len()
    }

    /// The context's budget.
    pub fn budget(&self) -> Budget {
        self.budget
    }

    /// Runs one framed request and returns the framed reply. Never panics: a request that
    /// cannot be decoded is refused as a whole; a command that fails becomes a WebGPU error.
    pub fn handle(&mut self, request: &[u8]) -> Vec<u8> {
        if let Some(why) = &self.lost {
            return encode_reply(&Reply::Lost(why.clone()), &[]);
        }
        if request.len() > HEADER_LEN + MAX_MESSAGE {
            return self.reply(Reply::Refused(format!(
                "request of {} bytes is over the protocol's limit of {MAX_MESSAGE}",
                request.len()
            )));
        }
        let commands = match decode_request(request) {
            Ok(c) => c,
            Err(e) => return self.reply(Reply::Refused(format!("malformed request: {e}"))),
        };
        let mut reply = Reply::Ok;
        for cmd in commands {
            reply = self.execute(cmd);
        }
        self.reply(reply)
    }

    fn reply(&mut self, reply: Reply) -> Vec<u8> {
        let mut unc = std::mem::take(&mut self.uncaptured);
        if self.uncaptured_dropped > 0 {
            unc.push((
                0,
                validation(format!(
                    "{} more uncaptured errors were dropped (the context keeps {})",
                    self.uncaptured_dropped, self.budget.max_uncaptured
                )),
            ));
            self.uncaptured_dropped = 0;
        }
        encode_reply(&reply, &unc)
    }

    fn execute(&mut self, cmd: webgpu_wire::Command) -> Reply {
        let wants_reply = cmd.wants_reply();
        let scope_device = self.device_of(&cmd);
        let outcome = catch_unwind(AssertUnwindSafe(|| self.run(cmd)));
        let (reply, err) = match outcome {
            Ok(Ok(r)) => (r, None),
            Ok(Err(e)) => (
                if wants_reply {
                    Reply::Failed(e.message.clone())
                } else {
                    Reply::Ok
                },
                Some(e),
            ),
            Err(panic) => {
                let what = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("a panic");
                let e = GpuError {
                    kind: ErrorKind::Internal,
                    message: format!("the host's wgpu failed on this command: {what}"),
                };
                (Reply::Failed(e.message.clone()), Some(e))
            }
        };
        // wgpu's own errors of this command arrived synchronously through the handlers.
        let reported: Vec<(Id, GpuError)> = match self.sink.lock() {
            Ok(mut s) => std::mem::take(&mut *s),
            Err(p) => std::mem::take(&mut *p.into_inner()),
        };
        for (dev, e) in reported {
            self.route(dev, e);
        }
        if let Some(e) = err {
            self.route(scope_device.unwrap_or(0), e);
        }
        reply
    }

    /// Gives an error to the innermost matching error scope of `device`, or to the
    /// uncaptured list.
    pub(crate) fn route(&mut self, device: Id, e: GpuError) {
        if let Some(Entry {
            obj: Object::Device(d),
            ..
        }) = self.objects.get_mut(&device)
        {
            if let Some(scope) = d.scopes.iter_mut().rev().find(|(f, _)| *f == e.kind) {
                if scope.1.is_none() {
                    scope.1 = Some(e);
                }
                return;
            }
        }
        if self.uncaptured.len() < self.budget.max_uncaptured {
            self.uncaptured.push((device, e));
        } else {
            self.uncaptured_dropped += 1;
        }
    }

    /// The device whose error scopes receive a command's errors.
    fn device_of(&self, cmd: &webgpu_wire::Command) -> Option<Id> {
        use webgpu_wire::Command as C;
        let owner = |id: &Id| self.objects.get(id).map(|e| e.device);
        match cmd {
            C::RequestAdapter => None,
            C::RequestDevice { device, .. } => Some(*device),
            C::DestroyDevice { device }
            | C::PushErrorScope { device, .. }
            | C::PopErrorScope { device }
            | C::Poll { device, .. }
            | C::CreateBuffer { device, .. }
            | C::CreateShaderModule { device, .. }
            | C::CreateBindGroupLayout { device, .. }
            | C::CreateBindGroup { device, .. }
            | C::CreatePipelineLayout { device, .. }
            | C::CreateComputePipeline { device, .. }
            | C::FinishEncoder { device, .. } => Some(*device),
            C::DestroyBuffer { buffer }
            | C::MapBuffer { buffer, .. }
            | C::UnmapBuffer { buffer, .. } => owner(buffer),
            C::WriteBuffer { queue, .. } | C::Submit { queue, .. } => owner(queue),
            C::GetCompilationInfo { module } => owner(module),
            C::GetBindGroupLayout { pipeline, .. } => owner(pipeline),
            C::Release { id } => owner(id),
            C::CreateTexture { device, .. }
            | C::CreateSampler { device, .. }
            | C::CreateRenderPipeline { device, .. } => Some(*device),
            C::DestroyTexture { texture } | C::CreateTextureView { texture, .. } => owner(texture),
            C::WriteTexture { queue, .. } => owner(queue),
        }
    }
}
