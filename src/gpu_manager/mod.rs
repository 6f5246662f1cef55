//! `UnifiedGpuManager`: scan once, probe every rung, decide, and initialize a GPU for a VM.
//!
//! The manager sits above the [ladder core](crate::ladder) and the [rungs](crate::rungs);
//! nothing below imports it. The ladder's types are re-exported here because the product
//! guide imports them from this module.

mod backends;
mod error;
mod listing;
mod manager;

pub use crate::ladder::{
    decide, Availability, Candidate, Decision, GpuMode, Preference, Reason, ReasonCode, Target,
};
pub use backends::{MdevBackend, PassthroughBackend};
pub use error::ManagerError;
pub use listing::BackendListing;
pub use manager::UnifiedGpuManager;
