//! The three rungs, highest priority first. Each owns its probe (inventory to
//! [`Candidate`](crate::ladder::Candidate)s), its rules, its plans, its errors and the
//! product guide's type for it; none imports another rung or the manager above.

pub mod mdev;
pub mod passthrough;
pub mod wgpu;
