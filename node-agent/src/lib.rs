//! vm-device as the GPU node agent of a Kubernetes/KubeVirt cluster: a kubelet device
//! plugin (deviceplugin/v1beta1) offering whole GPUs, mediated devices and shares of the
//! software rung, and a DRA driver (kubelet plugin and ResourceSlices), with every host
//! change made through vm-device's journaled plans.
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
    /// kubelet's DRA kubelet-plugin API (`k8s.io/kubelet/pkg/apis/dra/v1`).
    pub mod dra_v1 {
        tonic::include_proto!("k8s.io.kubelet.pkg.apis.dra.v1");
    }
    /// kubelet's plugin registration API (`k8s.io/kubelet/pkg/apis/pluginregistration/v1`).
    pub mod pluginregistration {
        tonic::include_proto!("pluginregistration");
    }
}
