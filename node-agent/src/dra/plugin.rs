//! The DRA kubelet plugin: kubelet's plugin registration (`pluginregistration/v1`, a socket
//! in kubelet's plugin registry) and the `DRAPlugin` service (`dra/v1`, `NodePrepareResources`
//! / `NodeUnprepareResources`) on the driver's own socket, plus the loop that keeps the
//! node's ResourceSlices equal to what the host offers.
//!
//! A claim is prepared once: a repeated `NodePrepareResources` (kubelet retries, or restarted)
//! answers from the checkpoint; `NodeUnprepareResources` of a claim the checkpoint does not
//! hold succeeds (it was never prepared here, or is already given back). A device prepared
//! for one claim is refused to another. Prepared claims outlive the agent (their VMs keep
//! running): a stop leaves them, and the next agent unprepares them from the checkpoint.

use std::collections::BTreeSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{oneshot, Mutex, Notify};
use tokio::task::JoinHandle;
use tonic::{Request, Response, Status};
use vm_device::host::Host;
use vm_device::inventory::HostInventory;
use vm_device::ladder::Filter;
use vm_passthrough::PciAddress;

use super::api::{Allocated, ClaimRef, ClaimSource, Publisher};
use super::cdi;
use super::checkpoint::{journal_keys, Checkpoint, CheckpointError, PreparedClaim, PreparedDevice};
use super::devices::{self, DraDevice};
use super::prepare::Preparer;
use super::DRIVER_NAME;
use crate::config::DraConfig;
use crate::proto::dra_v1 as dra;
use crate::proto::pluginregistration as reg;

/// The service a DRA plugin lists at registration for `dra/v1`.
pub const DRA_SERVICE_V1: &str = "v1.DRAPlugin";
/// The plugin type of DRA drivers in kubelet's plugin registry.
pub const PLUGIN_TYPE: &str = "DRAPlugin";

/// The registration socket of the driver in kubelet's plugin registry.
pub fn registration_socket(cfg: &DraConfig) -> PathBuf {
    cfg.registry_dir.join(format!("{DRIVER_NAME}-reg.sock"))
}

/// The driver's DRA service socket.
pub fn dra_socket(cfg: &DraConfig) -> PathBuf {
    cfg.plugin_dir.join("dra.sock")
}

/// Why the DRA driver could not run.
#[derive(Debug, thiserror::Error)]
pub enum DraError {
    /// The checkpoint cannot be trusted.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// A socket could not be served.
    #[error("DRA driver: serving {}: {detail}", path.display())]
    Serve {
        /// The socket.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// A task failed.
    #[error("DRA driver: {0}")]
    Internal(String),
}

/// Everything the driver needs.
pub struct Driver {
    /// The host.
    pub host: Host,
    /// Sockets, CDI directory, wgpu shares.
    pub cfg: DraConfig,
    /// The node (pool) name.
    pub node: String,
    /// Journals, locks, checkpoint.
    pub state_dir: PathBuf,
    /// The boot display may be passed through.
    pub allow_boot_vga: bool,
    /// Interval between two looks at the host and the sockets.
    pub poll: Duration,
    /// PCI functions the device plugin side of the agent offers: never DRA devices too.
    pub exclude: BTreeSet<PciAddress>,
    /// Claims' allocations.
    pub claims: Arc<dyn ClaimSource>,
    /// ResourceSlice publication.
    pub publisher: Arc<dyn Publisher>,
}

struct State {
    checkpoint: Checkpoint,
    /// The devices last computed (available and held).
    offered: Vec<DraDevice>,
}

struct Shared {
    host: Host,
    cfg: DraConfig,
    node: String,
    state_dir: PathBuf,
    preparer: Preparer,
    exclude: BTreeSet<PciAddress>,
    claims: Arc<dyn ClaimSource>,
    state: Mutex<State>,
    /// Rings when a prepare or unprepare changed what is held.
    changed: Notify,
    /// The adapter probe's answer, made once (with wgpu shares only).
    adapters: Arc<std::sync::OnceLock<Adapters>>,
}

/// What the adapter probe answered.
pub type Adapters = Result<Vec<vm_passthrough::AdapterInfo>, String>;

/// The node's DRA devices now: the rungs' available candidates on a fresh scan, the
/// `held` ones, wgpu shares; none that the device plugin offers (`exclude`).
pub fn node_devices(
    host: &dyn vm_passthrough::HostOps,
    wgpu_shares: u32,
    allow_boot_vga: bool,
    held: &[DraDevice],
    exclude: &BTreeSet<PciAddress>,
) -> Vec<DraDevice> {
    let adapters = (wgpu_shares > 0).then(|| host.probe_adapters().map_err(|e| e.to_string()));
    node_devices_with(
        host,
        wgpu_shares,
        adapters.as_ref(),
        allow_boot_vga,
        held,
        exclude,
    )
}

/// [`node_devices`] with the adapters probed already (`None`: no wgpu shares).
fn node_devices_with(
    host: &dyn vm_passthrough::HostOps,
    wgpu_shares: u32,
    adapters: Option<&Adapters>,
    allow_boot_vga: bool,
    held: &[DraDevice],
    exclude: &BTreeSet<PciAddress>,
) -> Vec<DraDevice> {
    use vm_device::rungs::{mdev, passthrough, wgpu};
    let inv = HostInventory::scan(host);
    let filter = Filter {
        allow_boot_vga,
        ..Filter::default()
    };
    let mut candidates = passthrough::probe(&inv, &filter);
    candidates.extend(mdev::probe(&inv, &filter));
    if let Some(adapters) = adapters {
        candidates.extend(wgpu::probe(&inv, adapters, &filter));
    }
    devices::devices(&inv, &candidates, wgpu_shares, held)
        .into_iter()
        .filter(|d| d.pci_functions().iter().all(|a| !exclude.contains(a)))
        .collect()
}

impl Shared {
    async fn compute(&self, held: Vec<DraDevice>) -> Result<Vec<DraDevice>, DraError> {
        let host = self.host.clone();
        let shares = self.cfg.wgpu_shares;
        let boot = self.preparer.allow_boot_vga;
        let exclude = self.exclude.clone();
        let adapters = self.adapters.clone();
        tokio::task::spawn_blocking(move || {
            // One wgpu instance per agent, at the first look: not one per poll.
            let adapters = (shares > 0)
                .then(|| adapters.get_or_init(|| host.probe_adapters().map_err(|e| e.to_string())));
            node_devices_with(host.as_ref(), shares, adapters, boot, &held, &exclude)
        })
        .await
        .map_err(|e| DraError::Internal(format!("host scan: {e}")))
    }

    /// Prepares one claim, or answers what an earlier prepare did.
    async fn prepare_claim(&self, claim: &ClaimRef) -> Result<Vec<dra::Device>, String> {
        if claim.uid.is_empty() || claim.name.is_empty() {
            return Err("kubelet named a claim without a UID or a name".into());
        }
        // One prepare or unprepare at a time: each reads and writes the checkpoint.
        let mut state = self.state.lock().await;
        if let Some(done) = state.checkpoint.claims.get(&claim.uid) {
            return Ok(answer(done));
        }
        let allocated = self.claims.allocated(claim).await?;
        let mut wanted: Vec<(Allocated, DraDevice)> = Vec::new();
        for a in allocated {
            if a.pool != self.node {
                return Err(format!(
                    "device {} is in pool {}, not this node's ({})",
                    a.device, a.pool, self.node
                ));
            }
            if let Some((uid, c)) = state
                .checkpoint
                .claims
                .iter()
                .find(|(_, c)| c.devices.iter().any(|d| d.device.name == a.device))
            {
                return Err(format!(
                    "device {} is prepared for claim {}/{} (UID {uid}) already",
                    a.device, c.namespace, c.name
                ));
            }
            let Some(dev) = state.offered.iter().find(|d| d.name == a.device).cloned() else {
                return Err(format!(
                    "device {} is not one this node offers now (it left the host, or another user took it); the scheduler must allocate again",
                    a.device
                ));
            };
            wanted.push((a, dev));
        }
        let host = self.host.clone();
        let preparer = self.preparer.clone();
        let uid = claim.uid.clone();
        let cdi_dir = self.cfg.cdi_dir.clone();
        let prepared = tokio::task::spawn_blocking(move || {
            prepare_all(host.as_ref(), &preparer, &cdi_dir, &uid, wanted)
        })
        .await
        .map_err(|e| format!("prepare task: {e}"))??;
        let claim_entry = PreparedClaim {
            namespace: claim.namespace.clone(),
            name: claim.name.clone(),
            devices: prepared,
        };
        let mut next = state.checkpoint.clone();
        next.claims.insert(claim.uid.clone(), claim_entry.clone());
        if let Err(e) = next.save(&self.state_dir) {
            // Not recorded: give it back rather than hold what no checkpoint knows.
            let left = self
                .give_back(&claim_entry.devices)
                .await
                .unwrap_or_else(|e| vec![e]);
            let _ = cdi::remove(&self.cfg.cdi_dir, &claim.uid);
            return Err(format!(
                "{e}; the claim's devices were given back{}",
                if left.is_empty() {
                    String::new()
                } else {
                    format!(" except: {}", left.join("; "))
                }
            ));
        }
        state.checkpoint = next;
        drop(state);
        self.changed.notify_one();
        Ok(answer(&claim_entry))
    }

    /// Undoes the journals of `devices` (off the runtime's threads); what was left.
    async fn give_back(&self, devices: &[PreparedDevice]) -> Result<Vec<String>, String> {
        let keys = journal_keys(devices);
        let host = self.host.clone();
        let preparer = self.preparer.clone();
        tokio::task::spawn_blocking(move || preparer.unprepare(host.as_ref(), &keys))
            .await
            .map_err(|e| format!("unprepare task: {e}"))
    }

    /// Gives a claim's devices back; a claim not prepared here is not an error.
    async fn unprepare_claim(&self, uid: &str) -> Result<(), String> {
        let mut state = self.state.lock().await;
        let Some(claim) = state.checkpoint.claims.get(uid).cloned() else {
            return Ok(());
        };
        let left = self.give_back(&claim.devices).await?;
        if !left.is_empty() {
            return Err(format!(
                "claim {}/{}: giving its devices back left: {}",
                claim.namespace,
                claim.name,
                left.join("; ")
            ));
        }
        cdi::remove(&self.cfg.cdi_dir, uid).map_err(|e| {
            format!(
                "removing {}: {e}",
                cdi::spec_path(&self.cfg.cdi_dir, uid).display()
            )
        })?;
        let mut next = state.checkpoint.clone();
        next.claims.remove(uid);
        next.save(&self.state_dir).map_err(|e| e.to_string())?;
        state.checkpoint = next;
        drop(state);
        self.changed.notify_one();
        Ok(())
    }
}

/// Prepares every device of one claim and writes its CDI spec; a failure gives back the
/// devices prepared before it.
fn prepare_all(
    host: &dyn vm_passthrough::HostOps,
    preparer: &Preparer,
    cdi_dir: &Path,
    uid: &str,
    wanted: Vec<(Allocated, DraDevice)>,
) -> Result<Vec<PreparedDevice>, String> {
    let mut out: Vec<PreparedDevice> = Vec::new();
    let give_back = |out: &[PreparedDevice]| preparer.unprepare(host, &journal_keys(out));
    for (a, dev) in wanted {
        match preparer.prepare(host, &dev) {
            Ok(done) => out.push(PreparedDevice {
                request: a.request,
                pool: a.pool,
                cdi_id: cdi::device_id(uid, &dev.name),
                device: dev,
                journals: done.journals,
                mdev_uuid: done.mdev_uuid,
                device_nodes: done.edits.device_nodes,
                env: done.edits.env,
            }),
            Err(why) => {
                let left = give_back(&out);
                return Err(with_left(format!("device {}: {why}", dev.name), &left));
            }
        }
    }
    let specs: Vec<(String, cdi::Edits)> = out
        .iter()
        .map(|d| {
            (
                d.device.name.clone(),
                cdi::Edits {
                    device_nodes: d.device_nodes.clone(),
                    env: d.env.clone(),
                },
            )
        })
        .collect();
    if let Err(e) = cdi::write(cdi_dir, uid, &specs) {
        let left = give_back(&out);
        return Err(with_left(
            format!(
                "writing CDI spec {}: {e}",
                cdi::spec_path(cdi_dir, uid).display()
            ),
            &left,
        ));
    }
    Ok(out)
}

fn with_left(why: String, left: &[String]) -> String {
    if left.is_empty() {
        why
    } else {
        format!(
            "{why}; giving back the claim's other devices left: {}",
            left.join("; ")
        )
    }
}

fn answer(claim: &PreparedClaim) -> Vec<dra::Device> {
    claim
        .devices
        .iter()
        .map(|d| dra::Device {
            request_names: vec![d.request.clone()],
            pool_name: d.pool.clone(),
            device_name: d.device.name.clone(),
            cdi_device_ids: vec![d.cdi_id.clone()],
        })
        .collect()
}

#[derive(Clone)]
struct DraService(Arc<Shared>);

#[tonic::async_trait]
impl dra::dra_plugin_server::DraPlugin for DraService {
    async fn node_prepare_resources(
        &self,
        req: Request<dra::NodePrepareResourcesRequest>,
    ) -> Result<Response<dra::NodePrepareResourcesResponse>, Status> {
        let mut out = std::collections::HashMap::new();
        for c in req.into_inner().claims {
            let claim = ClaimRef {
                namespace: c.namespace,
                name: c.name,
                uid: c.uid,
            };
            let r = match self.0.prepare_claim(&claim).await {
                Ok(devices) => dra::NodePrepareResourceResponse {
                    devices,
                    error: String::new(),
                },
                Err(error) => {
                    eprintln!(
                        "vm-device-agent: DRA prepare of claim {}/{} ({}) failed: {error}",
                        claim.namespace, claim.name, claim.uid
                    );
                    dra::NodePrepareResourceResponse {
                        devices: Vec::new(),
                        error,
                    }
                }
            };
            out.insert(claim.uid, r);
        }
        Ok(Response::new(dra::NodePrepareResourcesResponse {
            claims: out,
        }))
    }

    async fn node_unprepare_resources(
        &self,
        req: Request<dra::NodeUnprepareResourcesRequest>,
    ) -> Result<Response<dra::NodeUnprepareResourcesResponse>, Status> {
        let mut out = std::collections::HashMap::new();
        for c in req.into_inner().claims {
            let error = match self.0.unprepare_claim(&c.uid).await {
                Ok(()) => String::new(),
                Err(e) => {
                    eprintln!(
                        "vm-device-agent: DRA unprepare of claim {}/{} ({}) failed: {e}",
                        c.namespace, c.name, c.uid
                    );
                    e
                }
            };
            out.insert(c.uid, dra::NodeUnprepareResourceResponse { error });
        }
        Ok(Response::new(dra::NodeUnprepareResourcesResponse {
            claims: out,
        }))
    }
}

#[derive(Clone)]
struct RegistrationService {
    endpoint: String,
}

#[tonic::async_trait]
impl reg::registration_server::Registration for RegistrationService {
    async fn get_info(
        &self,
        _: Request<reg::InfoRequest>,
    ) -> Result<Response<reg::PluginInfo>, Status> {
        Ok(Response::new(reg::PluginInfo {
            r#type: PLUGIN_TYPE.to_string(),
            name: DRIVER_NAME.to_string(),
            endpoint: self.endpoint.clone(),
            supported_versions: vec![DRA_SERVICE_V1.to_string()],
        }))
    }

    async fn notify_registration_status(
        &self,
        req: Request<reg::RegistrationStatus>,
    ) -> Result<Response<reg::RegistrationStatusResponse>, Status> {
        let s = req.into_inner();
        if s.plugin_registered {
            eprintln!("vm-device-agent: DRA driver {DRIVER_NAME} registered with kubelet");
        } else {
            eprintln!(
                "vm-device-agent: kubelet refused DRA driver {DRIVER_NAME}: {}",
                s.error
            );
        }
        Ok(Response::new(reg::RegistrationStatusResponse {}))
    }
}

struct Served {
    path: PathBuf,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

fn bind(path: &Path) -> Result<tokio::net::UnixListener, DraError> {
    let fail = |detail: String| DraError::Serve {
        path: path.to_path_buf(),
        detail,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| fail(format!("cannot create {}: {e}", dir.display())))?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(fail(format!("cannot remove the old socket: {e}")))
        }
        _ => {}
    }
    tokio::net::UnixListener::bind(path).map_err(|e| fail(e.to_string()))
}

fn serve_both(shared: &Arc<Shared>) -> Result<Vec<Served>, DraError> {
    let dra_path = dra_socket(&shared.cfg);
    let reg_path = registration_socket(&shared.cfg);
    let dra_listener = bind(&dra_path)?;
    let reg_listener = bind(&reg_path)?;
    let mut out = Vec::new();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(dra::dra_plugin_server::DraPluginServer::new(DraService(
                shared.clone(),
            )))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::UnixListenerStream::new(dra_listener),
                async {
                    let _ = stopped.await;
                },
            ),
    );
    out.push(Served {
        path: dra_path.clone(),
        stop,
        task,
    });
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(reg::registration_server::RegistrationServer::new(
                RegistrationService {
                    endpoint: dra_path.to_string_lossy().into_owned(),
                },
            ))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::UnixListenerStream::new(reg_listener),
                async {
                    let _ = stopped.await;
                },
            ),
    );
    out.push(Served {
        path: reg_path,
        stop,
        task,
    });
    Ok(out)
}

async fn stop_all(served: &mut Vec<Served>) {
    for s in served.drain(..) {
        crate::agent::stop_server(s.stop, s.task, &s.path).await;
    }
}

/// Runs the DRA driver until `shutdown` completes: reads the checkpoint, serves the two
/// sockets (again whenever one is removed), and publishes the node's devices at start, after
/// every prepare and unprepare and whenever the host changes. Prepared claims stay prepared
/// when it stops.
pub async fn run(driver: Driver, shutdown: impl Future<Output = ()>) -> Result<(), DraError> {
    let checkpoint = Checkpoint::load(&driver.state_dir)?;
    let shared = Arc::new(Shared {
        host: driver.host,
        cfg: driver.cfg,
        node: driver.node,
        state_dir: driver.state_dir.clone(),
        preparer: Preparer {
            state_dir: driver.state_dir,
            allow_boot_vga: driver.allow_boot_vga,
        },
        exclude: driver.exclude,
        claims: driver.claims,
        state: Mutex::new(State {
            checkpoint,
            offered: Vec::new(),
        }),
        changed: Notify::new(),
        adapters: Arc::default(),
    });
    let publisher = driver.publisher;
    let mut served: Vec<Served> = Vec::new();
    let mut published: Option<Vec<DraDevice>> = None;
    let mut tick = tokio::time::interval(driver.poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first completes at once: the loop's first pass is the start
    tokio::pin!(shutdown);
    let result = loop {
        // What the node offers, first of all (a prepare checks against it).
        let held = shared.state.lock().await.checkpoint.held();
        let now = match shared.compute(held).await {
            Ok(d) => d,
            Err(e) => break Err(e),
        };
        shared.state.lock().await.offered = now.clone();
        if served.is_empty() || served.iter().any(|s| !s.path.exists()) {
            stop_all(&mut served).await;
            match serve_both(&shared) {
                Ok(s) => served = s,
                Err(e) => break Err(e),
            }
        }
        if published.as_ref() != Some(&now) {
            match publisher.publish(&now).await {
                Ok(()) => published = Some(now),
                Err(e) => eprintln!(
                    "vm-device-agent: publishing the DRA devices of node {}: {e}; retrying",
                    shared.node
                ),
            }
        }
        tokio::select! {
            () = &mut shutdown => break Ok(()),
            _ = tick.tick() => {}
            () = shared.changed.notified() => {}
        }
    };
    stop_all(&mut served).await;
    result
}
