//! The wgpu rung: a virtio-gpu device whose scanouts the host renders with wgpu.

mod adapters;

pub use adapters::{instance_descriptor, probe_adapters};
