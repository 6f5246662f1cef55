//! [`Publisher`] and [`ClaimSource`] on a real API server, through the `kube` client and
//! `k8s-openapi`'s typed `resource.k8s.io/v1` objects.
//!
//! Publishing lists this driver's ResourceSlices of this node (field selectors
//! `spec.driver` and `spec.nodeName`, which the API server indexes for ResourceSlices) and
//! creates, replaces or deletes slices until exactly [`slices::slices`]'s exist; a change
//! bumps the pool's generation in every slice, and an unchanged node writes nothing. The
//! slices are owned by the Node object, so the garbage collector removes them with the node.
//! A write that loses a race (409) re-reads and tries again, a bounded number of times.
//!
//! Reading a claim GETs the ResourceClaim, checks its UID against the one kubelet names and
//! returns this driver's devices in this node's pool from `status.allocation`.

use std::path::Path;

use ::kube::api::{Api, DeleteParams, ListParams, PostParams, Preconditions};
use ::kube::config::{KubeConfigOptions, Kubeconfig};
use ::kube::{Client, Config};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::resource::v1::{ResourceClaim, ResourceSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use tokio::sync::Mutex;

use super::api::{Allocated, BoxFuture, ClaimRef, ClaimSource, Publisher};
use super::devices::DraDevice;
use super::slices::{self, is_dns_label, is_dns_subdomain, same_content, Skipped, SliceError};
use super::DRIVER_NAME;

/// How many times a publication re-reads the slices after losing a race with another writer.
const ATTEMPTS: usize = 3;

/// What went wrong talking to the API server, or what a claim says that the driver cannot
/// serve.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// No node name given and `NODE_NAME` unset.
    #[error("no node name: set NODE_NAME (the DaemonSet sets it from spec.nodeName through the downward API)")]
    NoNodeName,
    /// The client could not be configured.
    #[error("Kubernetes client configuration: {0}")]
    Config(String),
    /// The slices cannot be built.
    #[error(transparent)]
    Slices(#[from] SliceError),
    /// A request failed.
    #[error("{what}: {detail}")]
    Api {
        /// The request.
        what: String,
        /// The API server's status, or the transport's error.
        detail: String,
    },
    /// Another writer kept changing the slices.
    #[error("the ResourceSlices of node {node} kept changing while being published ({ATTEMPTS} attempts lost a race with another writer); the next publication tries again")]
    Conflicts {
        /// The node.
        node: String,
    },
    /// The claim reference is not a namespace and a name the API accepts.
    #[error("claim {0}: the namespace must be a DNS label and the name a DNS subdomain")]
    BadClaimRef(String),
    /// The claim does not exist.
    #[error("ResourceClaim {0} not found: it was deleted, or kubelet names a claim this API server does not have")]
    ClaimNotFound(String),
    /// The claim was deleted and created again under the same name.
    #[error("ResourceClaim {claim} has UID {found}, but kubelet asked for UID {wanted}: the claim was deleted and created again; the pod using the old one must go")]
    UidMismatch {
        /// `namespace/name`.
        claim: String,
        /// The UID kubelet named.
        wanted: String,
        /// The UID the API server has.
        found: String,
    },
    /// The claim has no allocation yet.
    #[error("ResourceClaim {0} is not allocated (no status.allocation): the scheduler has not placed it yet")]
    NotAllocated(String),
    /// The claim's allocation has nothing of this driver on this node.
    #[error("ResourceClaim {claim} has no device of driver {DRIVER_NAME} in pool {pool} (this node); it was allocated {allocated}")]
    NotHere {
        /// `namespace/name`.
        claim: String,
        /// This node's pool.
        pool: String,
        /// What it was allocated (`driver/pool/device`, or `nothing`).
        allocated: String,
    },
}

fn api_error(what: impl Into<String>, e: ::kube::Error) -> KubeError {
    let detail = match &e {
        ::kube::Error::Api(s) => format!("{} {}: {}", s.code, s.reason, s.message),
        other => other.to_string(),
    };
    KubeError::Api {
        what: what.into(),
        detail,
    }
}

fn is_race(e: &::kube::Error) -> bool {
    matches!(e, ::kube::Error::Api(s) if s.is_conflict() || s.is_already_exists())
}

/// What one publication did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishReport {
    /// The pool's generation now.
    pub generation: i64,
    /// Slices created.
    pub created: Vec<String>,
    /// Slices replaced.
    pub updated: Vec<String>,
    /// Slices deleted.
    pub deleted: Vec<String>,
    /// Devices left out (see [`slices::slices`]).
    pub skipped: Vec<Skipped>,
}

impl PublishReport {
    /// Whether the publication wrote nothing.
    pub fn unchanged(&self) -> bool {
        self.created.is_empty() && self.updated.is_empty() && self.deleted.is_empty()
    }
}

/// The DRA driver's view of the API server for one node.
pub struct KubeDra {
    client: Client,
    node: String,
    /// The Node's owner reference, read once.
    owner: Mutex<Option<OwnerReference>>,
    /// One publication at a time: two interleaved would bump the generation past each other.
    publishing: Mutex<()>,
}

impl KubeDra {
    /// The driver for `node` (the Node object's name, which is also the pool's) through
    /// `client`.
    pub fn new(client: Client, node: impl Into<String>) -> Result<Self, KubeError> {
        let node = node.into();
        if !is_dns_subdomain(&node) {
            return Err(SliceError::BadNodeName(node).into());
        }
        Ok(KubeDra {
            client,
            node,
            owner: Mutex::new(None),
            publishing: Mutex::new(()),
        })
    }

    /// Connects with `kubeconfig` if given, else as `kubectl` and in-cluster pods do
    /// (`KUBECONFIG`, `~/.kube/config`, then the service account's token and CA); `node`
    /// if given, else the `NODE_NAME` environment variable.
    pub async fn connect(
        kubeconfig: Option<&Path>,
        node: Option<String>,
    ) -> Result<Self, KubeError> {
        let node = match node {
            Some(n) => n,
            None => std::env::var("NODE_NAME")
                .ok()
                .filter(|n| !n.is_empty())
                .ok_or(KubeError::NoNodeName)?,
        };
        let config = match kubeconfig {
            Some(path) => {
                let kc = Kubeconfig::read_from(path)
                    .map_err(|e| KubeError::Config(format!("{}: {e}", path.display())))?;
                Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                    .await
                    .map_err(|e| KubeError::Config(format!("{}: {e}", path.display())))?
            }
            None => Config::infer()
                .await
                .map_err(|e| KubeError::Config(e.to_string()))?,
        };
        let client = Client::try_from(config).map_err(|e| KubeError::Config(e.to_string()))?;
        Self::new(client, node)
    }

    /// The node (and pool) name.
    pub fn node(&self) -> &str {
        &self.node
    }

    async fn owner(&self) -> Result<OwnerReference, KubeError> {
        let mut cached = self.owner.lock().await;
        if let Some(o) = cached.as_ref() {
            return Ok(o.clone());
        }
        let nodes: Api<Node> = Api::all(self.client.clone());
        let what = || {
            format!(
                "reading Node {} (the owner of its ResourceSlices)",
                self.node
            )
        };
        let node = nodes
            .get(&self.node)
            .await
            .map_err(|e| api_error(what(), e))?;
        let uid = node.metadata.uid.ok_or_else(|| KubeError::Api {
            what: what(),
            detail: "the Node has no metadata.uid".into(),
        })?;
        let owner = OwnerReference {
            api_version: "v1".into(),
            kind: "Node".into(),
            name: self.node.clone(),
            uid,
            controller: Some(true),
            block_owner_deletion: None,
        };
        *cached = Some(owner.clone());
        Ok(owner)
    }

    /// This driver's slices of this node, as the API server has them.
    async fn existing(&self, api: &Api<ResourceSlice>) -> Result<Vec<ResourceSlice>, KubeError> {
        let lp = ListParams::default().fields(&format!(
            "spec.driver={DRIVER_NAME},spec.nodeName={}",
            self.node
        ));
        let list = api.list(&lp).await.map_err(|e| {
            api_error(
                format!("listing the ResourceSlices of node {}", self.node),
                e,
            )
        })?;
        // The selectors already say so; checked again so a server that ignored them cannot
        // make us delete another driver's or node's slices.
        Ok(list
            .items
            .into_iter()
            .filter(|s| {
                s.spec.driver == DRIVER_NAME && s.spec.node_name.as_deref() == Some(&self.node)
            })
            .collect())
    }

    /// Makes this driver's ResourceSlices of this node publish exactly `devices`.
    pub async fn publish_slices(&self, devices: &[DraDevice]) -> Result<PublishReport, KubeError> {
        let _one = self.publishing.lock().await;
        // Refuse bad input before any request.
        slices::slices(&self.node, 0, devices)?;
        let owner = self.owner().await?;
        let api: Api<ResourceSlice> = Api::all(self.client.clone());
        for _ in 0..ATTEMPTS {
            let existing = self.existing(&api).await?;
            match self.reconcile(&api, &owner, existing, devices).await {
                Ok(report) => return Ok(report),
                Err(RaceOr::Race) => continue,
                Err(RaceOr::Error(e)) => return Err(e),
            }
        }
        Err(KubeError::Conflicts {
            node: self.node.clone(),
        })
    }

    async fn reconcile(
        &self,
        api: &Api<ResourceSlice>,
        owner: &OwnerReference,
        existing: Vec<ResourceSlice>,
        devices: &[DraDevice],
    ) -> Result<PublishReport, RaceOr> {
        let current = existing.iter().map(|s| s.spec.pool.generation).max();
        let owned = |s: &ResourceSlice| {
            s.metadata
                .owner_references
                .as_ref()
                .is_some_and(|o| o.iter().any(|o| o.uid == owner.uid))
        };
        // Unchanged: the same slices, all at the current generation, owned by the Node.
        if let Some(generation) = current {
            let same = slices::slices(&self.node, generation, devices)?;
            let mut by_name: Vec<&ResourceSlice> = existing.iter().collect();
            by_name.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
            let mut wanted: Vec<&ResourceSlice> = same.slices.iter().collect();
            wanted.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
            if by_name.len() == wanted.len()
                && by_name.iter().zip(&wanted).all(|(e, w)| {
                    e.metadata.name == w.metadata.name && same_content(e, w) && owned(e)
                })
            {
                return Ok(PublishReport {
                    generation,
                    skipped: same.skipped,
                    ..PublishReport::default()
                });
            }
        }
        let generation = current.map_or(1, |g| g.saturating_add(1));
        let pool = slices::slices(&self.node, generation, devices)?;
        let mut report = PublishReport {
            generation,
            skipped: pool.skipped,
            ..PublishReport::default()
        };
        let wanted: Vec<String> = pool
            .slices
            .iter()
            .filter_map(|s| s.metadata.name.clone())
            .collect();
        let pp = PostParams::default();
        for mut slice in pool.slices {
            slice.metadata.owner_references = Some(vec![owner.clone()]);
            let name = slice.metadata.name.clone().unwrap_or_default();
            let old = existing
                .iter()
                .find(|e| e.metadata.name.as_deref() == Some(&name));
            // driver, nodeName and pool.name are immutable: a slice that differs there is
            // replaced by deleting it first.
            let mutable = old.filter(|o| {
                o.spec.driver == slice.spec.driver
                    && o.spec.node_name == slice.spec.node_name
                    && o.spec.pool.name == slice.spec.pool.name
            });
            match (old, mutable) {
                (Some(o), Some(_)) => {
                    slice.metadata.resource_version = o.metadata.resource_version.clone();
                    api.replace(&name, &pp, &slice)
                        .await
                        .map_err(|e| race_or(format!("replacing ResourceSlice {name}"), e))?;
                    report.updated.push(name);
                }
                (Some(o), None) => {
                    self.delete(api, o).await?;
                    report.deleted.push(name.clone());
                    api.create(&pp, &slice)
                        .await
                        .map_err(|e| race_or(format!("creating ResourceSlice {name}"), e))?;
                    report.created.push(name);
                }
                (None, _) => {
                    api.create(&pp, &slice)
                        .await
                        .map_err(|e| race_or(format!("creating ResourceSlice {name}"), e))?;
                    report.created.push(name);
                }
            }
        }
        for old in &existing {
            let name = old.metadata.name.clone().unwrap_or_default();
            if !wanted.contains(&name) {
                self.delete(api, old).await?;
                report.deleted.push(name);
            }
        }
        Ok(report)
    }

    async fn delete(&self, api: &Api<ResourceSlice>, old: &ResourceSlice) -> Result<(), RaceOr> {
        let name = old.metadata.name.clone().unwrap_or_default();
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: old.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&name, &dp).await {
            Ok(_) => Ok(()),
            // Gone already: what we wanted.
            Err(::kube::Error::Api(s)) if s.is_not_found() => Ok(()),
            Err(e) => Err(race_or(format!("deleting ResourceSlice {name}"), e)),
        }
    }

    /// This driver's devices in this node's pool allocated to `claim`.
    pub async fn claim_devices(&self, claim: &ClaimRef) -> Result<Vec<Allocated>, KubeError> {
        let id = format!("{}/{}", claim.namespace, claim.name);
        if !is_dns_label(&claim.namespace) || !is_dns_subdomain(&claim.name) {
            return Err(KubeError::BadClaimRef(id));
        }
        let api: Api<ResourceClaim> = Api::namespaced(self.client.clone(), &claim.namespace);
        let found = api
            .get_opt(&claim.name)
            .await
            .map_err(|e| api_error(format!("reading ResourceClaim {id}"), e))?
            .ok_or_else(|| KubeError::ClaimNotFound(id.clone()))?;
        let uid = found.metadata.uid.clone().unwrap_or_default();
        if uid != claim.uid {
            return Err(KubeError::UidMismatch {
                claim: id,
                wanted: claim.uid.clone(),
                found: uid,
            });
        }
        let results = found
            .status
            .and_then(|s| s.allocation)
            .ok_or_else(|| KubeError::NotAllocated(id.clone()))?
            .devices
            .and_then(|d| d.results)
            .unwrap_or_default();
        let ours: Vec<Allocated> = results
            .iter()
            .filter(|r| r.driver == DRIVER_NAME && r.pool == self.node)
            .map(|r| Allocated {
                request: r.request.clone(),
                pool: r.pool.clone(),
                device: r.device.clone(),
            })
            .collect();
        if ours.is_empty() {
            let allocated = results
                .iter()
                .map(|r| format!("{}/{}/{}", r.driver, r.pool, r.device))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(KubeError::NotHere {
                claim: id,
                pool: self.node.clone(),
                allocated: if allocated.is_empty() {
                    "nothing".into()
                } else {
                    allocated
                },
            });
        }
        Ok(ours)
    }
}

/// A write that lost a race (409: re-read and try again), or a real error.
enum RaceOr {
    Race,
    Error(KubeError),
}

impl From<SliceError> for RaceOr {
    fn from(e: SliceError) -> Self {
        RaceOr::Error(e.into())
    }
}

fn race_or(what: String, e: ::kube::Error) -> RaceOr {
    if is_race(&e) {
        RaceOr::Race
    } else {
        RaceOr::Error(api_error(what, e))
    }
}

impl Publisher for KubeDra {
    fn publish<'a>(&'a self, devices: &'a [DraDevice]) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let report = self
                .publish_slices(devices)
                .await
                .map_err(|e| e.to_string())?;
            for s in &report.skipped {
                eprintln!(
                    "vm-device-agent: DRA device {} not published: {}",
                    s.device, s.reason
                );
            }
            Ok(())
        })
    }
}

impl ClaimSource for KubeDra {
    fn allocated<'a>(
        &'a self,
        claim: &'a ClaimRef,
    ) -> BoxFuture<'a, Result<Vec<Allocated>, String>> {
        Box::pin(async move { self.claim_devices(claim).await.map_err(|e| e.to_string()) })
    }
}
