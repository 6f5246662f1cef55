//! vm-device: the GPU manager of a Rust virtual-machine monitor.
//!
//! It scans the host once into a [`inventory::HostInventory`], decides which of three rungs
//! can give a VM a GPU — whole-device passthrough through VFIO, a mediated or shared slice of
//! a GPU, or a virtio-gpu rendered with wgpu — and explains every decision. All host access
//! goes through [`host::HostOps`], so the same code runs on a real Linux host
//! ([`host::LinuxHost`]) and on a recorded fixture ([`host::SimHost`]).
#![deny(missing_docs)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod cli;
pub mod doctor;
pub mod gpu_manager;
pub mod host;
pub mod inventory;
pub mod ladder;
pub mod launch;
pub mod plan;
pub mod recorder;
pub mod report;
pub mod rungs;

/// The mediated rung under the product guide's path.
pub use rungs::mdev as gpu_mdev;
/// The passthrough rung under the product guide's path.
pub use rungs::passthrough as gpu_passthrough;
/// The wgpu rung under the product guide's path.
pub use rungs::wgpu as gpu_virt;
