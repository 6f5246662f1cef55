//! The wgpu rung: a virtio-gpu device whose scanouts the host renders with wgpu.

mod adapters;
pub mod backend;
pub mod host_import;
pub mod vhost_user;
pub mod virtio_gpu;
pub mod wgpu_backend;

pub use adapters::{instance_descriptor, probe_adapters};
pub use backend::{BackendError, BackendStats, Counter, GpuBackend};
pub use wgpu_backend::{GpuContext, GpuStats, WgpuBackend, WgpuError};
