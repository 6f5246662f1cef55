//! One resource's `DevicePlugin` gRPC service (kubelet deviceplugin/v1beta1).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::watch;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::offer::{self, DeviceKind, Offered, Snapshot};
use crate::proto::v1beta1 as api;
use crate::proto::v1beta1::device_plugin_server::DevicePlugin;

/// Device nodes an Allocate may name that exist on this host (`/dev/iommu` only on
/// kernels with iommufd).
#[derive(Debug, Clone, Default)]
pub struct DevNodes {
    /// `/dev/iommu` exists.
    pub iommufd: bool,
}

/// The service of one resource, answering from the agent's current snapshot.
#[derive(Clone)]
pub struct ResourcePlugin {
    resource: String,
    snapshot: watch::Receiver<Arc<Snapshot>>,
    nodes: DevNodes,
    /// Turns true when this socket's server stops: its ListAndWatch streams end (the
    /// server's connections would otherwise outlive it for as long as a client holds
    /// them).
    retired: watch::Receiver<bool>,
}

impl ResourcePlugin {
    /// The service of `resource`, following `snapshot`, until `retired` turns true.
    pub fn new(
        resource: String,
        snapshot: watch::Receiver<Arc<Snapshot>>,
        nodes: DevNodes,
        retired: watch::Receiver<bool>,
    ) -> Self {
        ResourcePlugin {
            resource,
            snapshot,
            nodes,
            retired,
        }
    }

    fn devices(&self) -> Vec<Offered> {
        self.snapshot
            .borrow()
            .get(&self.resource)
            .cloned()
            .unwrap_or_default()
    }
}

/// The kubelet message for `devices`.
pub fn list_response(devices: &[Offered]) -> api::ListAndWatchResponse {
    api::ListAndWatchResponse {
        devices: devices
            .iter()
            .map(|d| api::Device {
                id: d.id.clone(),
                health: if d.healthy {
                    offer::HEALTHY
                } else {
                    offer::UNHEALTHY
                }
                .to_string(),
                topology: d.numa_node.map(|n| api::TopologyInfo {
                    nodes: vec![api::NumaNode { id: i64::from(n) }],
                }),
            })
            .collect(),
    }
}

/// The answer to one container's Allocate: device nodes and KubeVirt's environment.
pub fn allocate_one(
    resource: &str,
    devices: &[Offered],
    ids: &[String],
    nodes: &DevNodes,
) -> Result<api::ContainerAllocateResponse, Status> {
    if ids.is_empty() {
        return Err(Status::invalid_argument(format!(
            "{resource}: an allocation of no devices"
        )));
    }
    let mut pci = Vec::new();
    let mut mdevs = Vec::new();
    let mut wgpu = Vec::new();
    let mut groups = Vec::new();
    for id in ids {
        let Some(d) = devices.iter().find(|d| &d.id == id) else {
            return Err(Status::not_found(format!(
                "{resource}: no device {id:?} (this node offers {})",
                devices
                    .iter()
                    .map(|d| d.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        if !d.healthy {
            return Err(Status::failed_precondition(format!(
                "{resource}: device {id} is unhealthy (gone from vfio-pci, or its mdev lost its group)"
            )));
        }
        match &d.kind {
            DeviceKind::Pci { address } => pci.push(address.to_string()),
            DeviceKind::Mdev { uuid, .. } => mdevs.push(uuid.clone()),
            DeviceKind::WgpuShare { index } => wgpu.push(index.to_string()),
        }
        if let Some(g) = d.iommu_group {
            if !groups.contains(&g) {
                groups.push(g);
            }
        }
    }
    let mut envs = HashMap::new();
    if !pci.is_empty() {
        envs.insert(
            offer::kubevirt_env(offer::PCI_PREFIX, resource),
            pci.join(","),
        );
    }
    if !mdevs.is_empty() {
        envs.insert(
            offer::kubevirt_env(offer::MDEV_PREFIX, resource),
            mdevs.join(","),
        );
    }
    if !wgpu.is_empty() {
        envs.insert("VM_DEVICE_WGPU_SHARES".to_string(), wgpu.join(","));
    }
    let mut specs = Vec::new();
    let mut node = |path: String| {
        specs.push(api::DeviceSpec {
            container_path: path.clone(),
            host_path: path,
            permissions: "rw".to_string(),
        })
    };
    if !groups.is_empty() {
        node("/dev/vfio/vfio".to_string());
        if nodes.iommufd {
            node("/dev/iommu".to_string());
        }
        for g in groups {
            node(format!("/dev/vfio/{g}"));
        }
    }
    Ok(api::ContainerAllocateResponse {
        envs,
        devices: specs,
        ..Default::default()
    })
}

type ListStream = Pin<Box<dyn Stream<Item = Result<api::ListAndWatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl DevicePlugin for ResourcePlugin {
    async fn get_device_plugin_options(
        &self,
        _: Request<api::Empty>,
    ) -> Result<Response<api::DevicePluginOptions>, Status> {
        Ok(Response::new(api::DevicePluginOptions {
            pre_start_required: false,
            get_preferred_allocation_available: true,
        }))
    }

    type ListAndWatchStream = ListStream;

    async fn list_and_watch(
        &self,
        _: Request<api::Empty>,
    ) -> Result<Response<Self::ListAndWatchStream>, Status> {
        let mut rx = self.snapshot.clone();
        let mut retired = self.retired.clone();
        let resource = self.resource.clone();
        let stream = async_stream(move |tx| async move {
            let mut last: Option<Vec<Offered>> = None;
            loop {
                let now = rx
                    .borrow_and_update()
                    .get(&resource)
                    .cloned()
                    .unwrap_or_default();
                if last.as_ref() != Some(&now) {
                    if tx.send(Ok(list_response(&now))).await.is_err() {
                        return; // kubelet hung up
                    }
                    last = Some(now);
                }
                tokio::select! {
                    changed = rx.changed() => {
                        if changed.is_err() {
                            return; // the agent stops
                        }
                    }
                    _ = retired.wait_for(|r| *r) => return, // this socket's server stopped
                }
            }
        });
        Ok(Response::new(stream))
    }

    async fn get_preferred_allocation(
        &self,
        req: Request<api::PreferredAllocationRequest>,
    ) -> Result<Response<api::PreferredAllocationResponse>, Status> {
        let devices = self.devices();
        let mut out = Vec::new();
        for c in req.into_inner().container_requests {
            let size = usize::try_from(c.allocation_size).map_err(|_| {
                Status::invalid_argument(format!(
                    "allocation_size {} is negative",
                    c.allocation_size
                ))
            })?;
            out.push(api::ContainerPreferredAllocationResponse {
                device_i_ds: offer::preferred(
                    &devices,
                    &c.available_device_i_ds,
                    &c.must_include_device_i_ds,
                    size,
                ),
            });
        }
        Ok(Response::new(api::PreferredAllocationResponse {
            container_responses: out,
        }))
    }

    async fn allocate(
        &self,
        req: Request<api::AllocateRequest>,
    ) -> Result<Response<api::AllocateResponse>, Status> {
        let devices = self.devices();
        let mut out = Vec::new();
        for c in req.into_inner().container_requests {
            out.push(allocate_one(
                &self.resource,
                &devices,
                &c.devices_ids,
                &self.nodes,
            )?);
        }
        Ok(Response::new(api::AllocateResponse {
            container_responses: out,
        }))
    }

    async fn pre_start_container(
        &self,
        _: Request<api::PreStartContainerRequest>,
    ) -> Result<Response<api::PreStartContainerResponse>, Status> {
        Ok(Response::new(api::PreStartContainerResponse {}))
    }
}

/// A stream fed by a task through a small channel.
fn async_stream<F, Fut>(f: F) -> ListStream
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<api::ListAndWatchResponse, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(f(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}
