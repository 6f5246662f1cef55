//! Dynamic Resource Allocation (`resource.k8s.io/v1`): the agent as a DRA driver.
//!
//! - [`devices`]: what the node offers as DRA devices, with the attributes a scheduler
//!   selects on, computed from one host inventory (pure).
//! - [`api`]: what the driver needs from the API server (claims' allocations, publishing
//!   ResourceSlices), as traits.
//!
//! The DRA driver offers what the ladder finds available (whole GPUs, SR-IOV VFs, mdev
//! types with free instances, NVIDIA vendor-VFIO vGPU types, wgpu shares) and changes the
//! host only when kubelet prepares a claim: the journaled prepare binds a GPU's group to
//! vfio-pci or creates the mdev, and the unprepare gives it back.

pub mod api;
pub mod devices;

/// The DRA driver name (`spec.driver` of the ResourceSlices, `driverName` of claims).
pub const DRIVER_NAME: &str = "gpu.vm-device.io";
