//! The host executor of the WebGPU wire protocol (`webgpu-wire`).
//!
//! A guest context (one VM, or one connection) is a [`Context`]: its own object table keyed
//! by the guest's ids, its own wgpu devices on the host's adapter, its own error scopes and
//! its own [`Budget`]. The executor decodes each request without trusting it, runs each
//! command through the ordinary `wgpu` API (so wgpu-core and naga validate everything before
//! a driver sees it), and turns every failure (wgpu's validation errors, unknown ids, a
//! budget exceeded, even a panic inside wgpu) into a WebGPU error for the guest. Nothing a
//! guest sends can make the host panic or allocate without bound.
//!
//! Two contexts never share objects: ids are looked up only in the caller's table.
#![deny(missing_docs)]

/// Looks an id up in this context's table as one kind of object; anything else is a WebGPU
/// validation error naming the id.
macro_rules! get {
    ($self:ident, $id:expr, $variant:ident) => {
        match $self.objects.get(&$id) {
            Some(Entry {
                obj: Object::$variant(x),
                ..
            }) => Ok(x),
            Some(e) => Err(validation(format!(
                "id {} is a {}, not a {}",
                $id,
                e.obj.kind(),
                stringify!($variant)
            ))),
            None => Err(validation(format!(
                "id {} names no live object of this context",
                $id
            ))),
        }
    };
}

mod context;
mod exec;
mod present;
mod render;

pub use context::{Budget, Context};
pub use present::{PresentError, ScanoutFormat};

use webgpu_wire::{Transport, TransportError};

/// The executor could not start.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// wgpu found no adapter.
    #[error(
        "no wgpu adapter for the WebGPU executor ({0}); install a Vulkan driver (Mesa's lavapipe \
         works everywhere) or set WGPU_BACKEND"
    )]
    NoAdapter(String),
}

/// The host side: the adapter every context's devices are created on.
#[derive(Debug, Clone)]
pub struct Host {
    adapter: wgpu::Adapter,
}

impl Host {
    /// Serves guests on `adapter`.
    pub fn new(adapter: wgpu::Adapter) -> Self {
        Host { adapter }
    }

    /// Opens the adapter wgpu prefers under the `WGPU_*` environment (`WGPU_BACKEND`,
    /// `WGPU_ADAPTER_NAME`).
    pub fn from_env() -> Result<Self, HostError> {
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle().with_env());
        let adapter = pollster::block_on(wgpu::util::initialize_adapter_from_env_or_default(
            &instance, None,
        ))
        .map_err(|e| HostError::NoAdapter(e.to_string()))?;
        Ok(Host { adapter })
    }

    /// The adapter.
    pub fn adapter(&self) -> &wgpu::Adapter {
        &self.adapter
    }

    /// A fresh guest context with its own objects and `budget`.
    pub fn context(&self, budget: Budget) -> Context {
        Context::new(self.adapter.clone(), budget)
    }
}

/// A transport that hands requests straight to a [`Context`] in this process (tests, and a
/// host-side program using the guest library).
#[derive(Debug)]
pub struct InProcess {
    ctx: std::sync::Arc<std::sync::Mutex<Context>>,
}

impl InProcess {
    /// Serves `ctx`.
    pub fn new(ctx: Context) -> Self {
        InProcess {
            ctx: std::sync::Arc::new(std::sync::Mutex::new(ctx)),
        }
    }

    /// The context served, for the host's own calls on it ([`Context::close`],
    /// [`Context::present`]) while the guest holds the transport.
    pub fn context(&self) -> std::sync::Arc<std::sync::Mutex<Context>> {
        std::sync::Arc::clone(&self.ctx)
    }
}

impl Transport for InProcess {
    fn call(&self, request: Vec<u8>) -> Result<Vec<u8>, TransportError> {
        let mut ctx = self
            .ctx
            .lock()
            .map_err(|_| TransportError::Disconnected("the executor panicked".into()))?;
        Ok(ctx.handle(&request))
    }
}

/// Serves one guest over a byte stream (the host end of a socketpair) until it closes.
pub fn serve_stream(
    mut stream: impl std::io::Read + std::io::Write,
    mut ctx: Context,
) -> Result<(), TransportError> {
    while let Some(msg) = webgpu_wire::read_frame(&mut stream)? {
        let reply = ctx.handle(&msg);
        webgpu_wire::write_frame(&mut stream, &reply)?;
    }
    Ok(())
}
