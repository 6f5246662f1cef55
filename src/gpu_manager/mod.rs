//! `UnifiedGpuManager`: scan, rank, select and initialize a GPU for a VM.
//!
//! Decisions are data: each rung's probe turns the inventory into [`Candidate`]s, available
//! or not with a [`Reason`], and [`decide`] walks the ladder (passthrough, mdev, wgpu) from
//! the preferred rung down. Both are pure, so property tests drive them without a host.

mod backends;
mod candidate;
mod error;
mod manager;
mod mode;
mod ranking;
pub mod rungs;

pub use backends::{MdevBackend, PassthroughBackend};
pub use candidate::{Availability, Candidate, Reason, ReasonCode, Target};
pub use error::ManagerError;
pub use manager::UnifiedGpuManager;
pub use mode::GpuMode;
pub use ranking::{decide, Decision, Preference};
