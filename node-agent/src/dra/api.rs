//! The two things the DRA driver needs from the Kubernetes API server, as traits: the
//! kubelet plugin reads a claim's allocation, and the publisher keeps the node's
//! ResourceSlices equal to its devices. `kube` implements them for a real cluster; tests
//! implement them in memory or against a mock API server.

use std::future::Future;
use std::pin::Pin;

use super::devices::DraDevice;

/// A boxed future, as the traits return (they are used as `dyn` objects).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A ResourceClaim as kubelet names it in `NodePrepareResources`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClaimRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID (a claim deleted and created anew under the same name has another).
    pub uid: String,
}

/// One device the scheduler allocated to a claim from this driver on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocated {
    /// The claim's request the device serves.
    pub request: String,
    /// The pool (the node's name).
    pub pool: String,
    /// The device name (a [`DraDevice::name`]).
    pub device: String,
}

/// Reads claims' allocations.
pub trait ClaimSource: Send + Sync {
    /// The devices of this driver allocated to `claim` (its `status.allocation`), or why
    /// they cannot be known (claim gone, UID differs, not allocated).
    fn allocated<'a>(
        &'a self,
        claim: &'a ClaimRef,
    ) -> BoxFuture<'a, Result<Vec<Allocated>, String>>;
}

/// Publishes the node's devices.
pub trait Publisher: Send + Sync {
    /// Makes the driver's ResourceSlices of this node say exactly `devices` (creating,
    /// updating or deleting slices as needed).
    fn publish<'a>(&'a self, devices: &'a [DraDevice]) -> BoxFuture<'a, Result<(), String>>;
}
