//! The wgpu rung: a virtio-gpu device whose scanouts the host renders with wgpu.

pub mod host_import;
pub mod probe;
pub mod vhost_user;
pub mod virtio_gpu;
pub mod wgpu_backend;

pub use crate::host::adapters::{instance_descriptor, probe_adapters};
/// The rung trait, here too because the product guide imports it from this rung.
pub use crate::ladder::{BackendError, BackendStats, Counter, GpuBackend};
pub use probe::probe;
pub use wgpu_backend::{GpuContext, GpuStats, WgpuBackend, WgpuError};
