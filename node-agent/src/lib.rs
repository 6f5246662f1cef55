//! vm-device as the GPU node agent of a Kubernetes/KubeVirt cluster: a kubelet device
//! plugin (deviceplugin/v1beta1) offering whole GPUs, mediated devices and shares of the
//! software rung, with every host change made through vm-device's journaled plans.
#![deny(missing_docs)]

pub mod agent;
pub mod config;
pub mod dra;
pub mod export;
pub mod offer;
pub mod plugin;
pub mod setup;

/// Code generated from the vendored kubelet protos (proto/NOTICE).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto {
    /// kubelet's device-plugin API (`k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1`).
    pub mod v1beta1 {
        tonic::include_proto!("v1beta1");
    }
}
