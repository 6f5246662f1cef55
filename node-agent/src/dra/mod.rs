//! Dynamic Resource Allocation (`resource.k8s.io/v1`): the agent as a DRA driver.
//!
//! - [`devices`]: what the node offers as DRA devices, with the attributes a scheduler
//!   selects on, computed from one host inventory (pure).
//! - [`api`]: what the driver needs from the API server (claims' allocations, publishing
//!   ResourceSlices), as traits.
//! - [`slices`]: the devices as `resource.k8s.io/v1` ResourceSlices within the API's limits
//!   (pure).
//! - [`kube`]: the traits on a real API server (`kube` client, in-cluster or kubeconfig).
//! - [`local`]: the traits on files, for a node without an API server and for tests.
//! - [`plugin`]: the kubelet plugin (registration, `NodePrepareResources` /
//!   `NodeUnprepareResources`) and the publication loop.
//! - [`prepare`]: one device prepared and given back through the journaled plans.
//! - [`checkpoint`]: the prepared claims, kept across agent restarts.
//! - [`cdi`]: the CDI spec files naming the device nodes of prepared claims.
//!
//! The DRA driver offers what the ladder finds available (whole GPUs, SR-IOV VFs, mdev
//! types with free instances, NVIDIA vendor-VFIO vGPU types, wgpu shares) and changes the
//! host only when kubelet prepares a claim: the journaled prepare binds a GPU's group to
//! vfio-pci or creates the mdev, and the unprepare gives it back.

pub mod api;
pub mod cdi;
pub mod checkpoint;
pub mod devices;
pub mod kube;
pub mod local;
pub mod plugin;
pub mod prepare;
pub mod slices;

/// The DRA driver name (`spec.driver` of the ResourceSlices, `driverName` of claims).
pub const DRIVER_NAME: &str = "gpu.vm-device.io";
