//! The host seam: [`HostOps`] and its two implementations.
//!
//! Nothing outside this module (and the simulator crate) touches `std::fs`, `libc` or `nix`
//! for host access.

mod linux;
mod vfio_linux;
pub mod vfio_probe;

pub use linux::LinuxHost;
pub use vfio_probe::{vfio_smoke, vfio_smoke_with, PathChoice, VfioReport, VfioSmokeError};
pub use vm_device_sim::SimHost;
pub use vm_passthrough::{AdapterInfo, HostError, HostOps, NodeKind, ProcessHolder};

use std::sync::Arc;

/// A shared handle to whichever host the manager runs on.
pub type Host = Arc<dyn HostOps>;

/// The host named by `--host-root` / `VM_HOST_ROOT`, or the real one.
pub fn open(host_root: Option<&std::path::Path>) -> Result<Host, HostError> {
    match host_root {
        Some(dir) => Ok(Arc::new(SimHost::from_fixture(dir)?)),
        None => Ok(Arc::new(LinuxHost::new())),
    }
}
