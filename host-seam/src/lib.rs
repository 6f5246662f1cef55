//! PCI addresses and the one seam through which vm-device reaches the host.
//!
//! A GPU manager reads sysfs, `/proc` and `/dev/vfio`, writes a handful of sysfs attributes,
//! loads modules and issues VFIO ioctls. Every one of those goes through [`HostOps`] (the four
//! small traits [`Sysfs`], [`Vfio`], [`Adapters`] and [`System`] under one name), so the
//! same code runs against the real kernel (`LinuxHost` in `vm-device`) and against a recorded
//! fixture tree (`SimHost` in `vm-device-sim`).
#![deny(missing_docs)]

pub mod address;
pub mod host;
#[cfg(feature = "mock")]
pub mod mock;
pub mod vfio;

pub use address::{AddressParseError, PciAddress};
pub use host::{
    cap_for, config_path, vfio_device_sysfs_dir, AdapterInfo, Adapters, HostError, HostOps,
    NodeKind, ProcessHolder, Sysfs, System, Vfio, MAX_ATTR_BYTES, MAX_PROC_BYTES,
};
pub use vfio::{
    DeviceInfo, DmaMapping, GroupStatus, IommuInfo, IommuType, IommufdAvailability, IrqInfo,
    RegionInfo, VfioContainer, VfioDevice, VfioGroup, VfioHandle, VfioPath,
};

/// The seam's traits, for code that calls host operations on a concrete host
/// (`SimHost`, `LinuxHost`) rather than through `&dyn HostOps`:
/// `use vm_device_host::prelude::*;`.
pub mod prelude {
    pub use crate::{Adapters, HostOps, Sysfs, System, Vfio};
}
