//! The ladder core: what a rung offers and how one is chosen, as pure data and functions.
//!
//! Each rung's probe (in [`crate::rungs`]) turns the inventory into [`Candidate`]s, available
//! or not with a [`Reason`]; [`decide`] walks the ladder (passthrough, mdev, wgpu) from the
//! preferred rung down. Nothing here reads the host or knows a rung's internals, so property
//! tests drive it without a host; the manager above puts the pieces together.

mod candidate;
mod decide;
mod filter;
mod mode;
pub mod reasons;
mod rung;

pub use candidate::{Availability, Candidate, Reason, ReasonCode, Target};
pub use decide::{decide, Decision, Preference};
pub use filter::{attr_evidence, Filter};
pub use mode::GpuMode;
pub use rung::{BackendError, BackendStats, Counter, GpuBackend};
