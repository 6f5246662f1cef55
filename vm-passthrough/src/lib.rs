//! The product guide's name for the host seam: `vm_passthrough::PciAddress` and the rest of
//! [`vm_device_host`], re-exported unchanged. New code uses `vm_device_host` directly.
#![deny(missing_docs)]

pub use vm_device_host::*;
