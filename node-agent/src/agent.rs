//! The node agent: applies the configuration, serves one device-plugin socket per resource,
//! registers each with kubelet, follows the host and kubelet, and gives everything back on
//! a clean stop.

use std::future::Future;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tonic::transport::{Endpoint, Uri};
use vm_device::host::Host;
use vm_device::inventory::{HostInventory, PciFunction, PciReader};

use crate::config::Config;
use crate::offer::{self, Owned, Snapshot};
use crate::plugin::{DevNodes, ResourcePlugin};
use crate::proto::v1beta1 as api;
use crate::setup::Setup;

/// kubelet's device-plugin API version.
pub const API_VERSION: &str = "v1beta1";

/// Why the agent stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The configuration could not be applied (and what was done was undone).
    #[error("applying the configuration: {0}")]
    Setup(#[from] crate::setup::SetupError),
    /// A plugin socket could not be served.
    #[error("serving {path}: {detail}")]
    Serve {
        /// The socket.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// The DRA driver could not run.
    #[error(transparent)]
    Dra(#[from] crate::dra::plugin::DraError),
    /// A task of the agent failed.
    #[error("{0}")]
    Internal(String),
}

/// Where the DRA driver reads claims and publishes its devices (with `"dra"` in the
/// configuration).
pub struct DraLink {
    /// The node (pool) name.
    pub node: String,
    /// Claims' allocations.
    pub claims: Arc<dyn crate::dra::api::ClaimSource>,
    /// ResourceSlice publication.
    pub publisher: Arc<dyn crate::dra::api::Publisher>,
}

/// What a clean stop gave back.
#[derive(Debug, Default)]
pub struct StopReport {
    /// Host changes that could not be undone (their journals stay for `gpu restore`).
    pub left: Vec<String>,
}

/// The socket file name of `resource` in the plugin directory.
pub fn socket_name(resource: &str) -> String {
    let short = resource.rsplit('/').next().unwrap_or(resource);
    format!("vm-device-{}.sock", offer::name_part(short))
}

/// Identity of kubelet's socket: a socket created anew (kubelet restarted) differs in its
/// inode or, where the filesystem reuses the inode number at once (tmpfs), in its change
/// time.
type SocketId = (u64, u64, i64, i64);

fn socket_identity(path: &Path) -> Option<SocketId> {
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino(), m.ctime(), m.ctime_nsec()))
}

/// Connects a gRPC channel to a unix socket.
pub async fn connect_unix(
    path: &Path,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    let path = path.to_path_buf();
    // The URI is required by the API and ignored by the connector.
    Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
}

async fn register(kubelet: &Path, resource: &str, endpoint: &str) -> Result<(), String> {
    let channel = tokio::time::timeout(Duration::from_secs(5), connect_unix(kubelet))
        .await
        .map_err(|_| format!("connecting to {}: timed out", kubelet.display()))?
        .map_err(|e| format!("connecting to {}: {e}", kubelet.display()))?;
    let mut client = api::registration_client::RegistrationClient::new(channel);
    client
        .register(api::RegisterRequest {
            version: API_VERSION.to_string(),
            endpoint: endpoint.to_string(),
            resource_name: resource.to_string(),
            options: Some(api::DevicePluginOptions {
                pre_start_required: false,
                get_preferred_allocation_available: true,
            }),
        })
        .await
        .map_err(|s| format!("kubelet refused {resource}: {}", s.message()))?;
    Ok(())
}

struct Served {
    path: PathBuf,
    stop: oneshot::Sender<()>,
    retire: watch::Sender<bool>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

async fn serve(
    path: &Path,
    plugin: impl FnOnce(watch::Receiver<bool>) -> ResourcePlugin,
) -> Result<Served, AgentError> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(AgentError::Serve {
                path: path.to_path_buf(),
                detail: format!("cannot remove the old socket: {e}"),
            })
        }
    }
    let listener = UnixListener::bind(path).map_err(|e| AgentError::Serve {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    let (stop, stopped) = oneshot::channel::<()>();
    let (retire, retired) = watch::channel(false);
    let plugin = plugin(retired);
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    let task = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(api::device_plugin_server::DevicePluginServer::new(plugin))
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            }),
    );
    Ok(Served {
        path: path.to_path_buf(),
        stop,
        retire,
        task,
    })
}

async fn stop_all(served: &mut Vec<Served>) {
    for s in served.drain(..) {
        let _ = s.retire.send(true);
        stop_server(s.stop, s.task, &s.path).await;
    }
}

/// Stops a gRPC server on a unix socket and removes the socket. A graceful shutdown waits
/// for open connections; a stream kept open by a kubelet that is gone would hold it
/// forever, so the server is aborted after a grace period.
pub(crate) async fn stop_server(
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
    path: &Path,
) {
    let _ = stop.send(());
    let abort = task.abort_handle();
    if tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .is_err()
    {
        abort.abort();
    }
    let _ = std::fs::remove_file(path);
}

async fn scan_snapshot(host: &Host, owned: &Owned) -> Result<Snapshot, AgentError> {
    let host = host.clone();
    let owned = owned.clone();
    tokio::task::spawn_blocking(move || read_snapshot(host.as_ref(), &owned))
        .await
        .map_err(|e| AgentError::Internal(format!("host scan: {e}")))
}

/// What the agent offers now, read from `host`: the owned PCI functions one by one when
/// that is all it owns, else a scan of the host (see [`offer::pci_only`]). Both give the
/// same answer; the first reads a few files per owned device instead of every function.
pub fn read_snapshot(host: &dyn vm_passthrough::HostOps, owned: &Owned) -> Snapshot {
    read_owned(host, owned)
        .and_then(|functions| offer::snapshot_of_functions(owned, &functions))
        .unwrap_or_else(|| offer::snapshot(owned, &HostInventory::scan(host)))
}

/// The owned PCI functions still on the host, read one by one with the scan's rules (a
/// few reads each instead of a scan of every function of the host, at start and at every
/// poll). `None` when the agent owns mdevs, or a function could not be read: the caller
/// scans the host instead.
fn read_owned(host: &dyn vm_passthrough::HostOps, owned: &Owned) -> Option<Vec<PciFunction>> {
    if !offer::pci_only(owned) {
        return None;
    }
    let mut reader = PciReader::new(host);
    let mut out = Vec::new();
    for kind in owned.resources.values().flatten() {
        if let offer::DeviceKind::Pci { address } = kind {
            // Its group from its own link (one read), not from listing every group.
            let group = vm_device::rungs::passthrough::iommu_group_of(host, address).ok();
            match reader.read(address, group) {
                Ok(f) => out.push(f),
                // Gone from the host, unless only an attribute is missing.
                Err(e) if e.is_not_found() && !host.exists(&function_dir(address)) => {}
                Err(_) => return None,
            }
        }
    }
    Some(out)
}

fn function_dir(address: &vm_passthrough::PciAddress) -> PathBuf {
    PathBuf::from(format!("/sys/bus/pci/devices/{address}"))
}

/// Runs the agent on `host` until `shutdown` completes, then gives everything back.
/// `ready` (when given) receives the resources the agent offers once it serves them.
pub async fn run(
    host: Host,
    cfg: Config,
    state_dir: PathBuf,
    shutdown: impl Future<Output = ()>,
) -> Result<StopReport, AgentError> {
    run_with(host, cfg, state_dir, None, shutdown).await
}

/// [`run`], with the DRA driver beside the device plugin when `dra` is given (and the
/// configuration has `"dra"`). The driver offers nothing the device plugin offers; an error
/// of either stops both.
pub async fn run_with(
    host: Host,
    cfg: Config,
    state_dir: PathBuf,
    dra: Option<DraLink>,
    shutdown: impl Future<Output = ()>,
) -> Result<StopReport, AgentError> {
    let setup_host = host.clone();
    let setup_cfg = cfg.clone();
    let setup_dir = state_dir.clone();
    let mut setup =
        tokio::task::spawn_blocking(move || Setup::apply(setup_host, &setup_cfg, &setup_dir))
            .await
            .map_err(|e| AgentError::Internal(format!("setup: {e}")))??;
    let driver = match (dra, &cfg.dra) {
        (Some(link), Some(dcfg)) => Some(crate::dra::plugin::Driver {
            host: host.clone(),
            cfg: dcfg.clone(),
            node: link.node,
            state_dir: state_dir.clone(),
            allow_boot_vga: cfg.allow_boot_vga,
            poll: Duration::from_millis(cfg.poll_interval_ms),
            exclude: offer::pci_addresses(&setup.owned),
            claims: link.claims,
            publisher: link.publisher,
        }),
        _ => None,
    };
    let result = {
        let (stop_tx, stop_rx) = watch::channel(false);
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let plugin = async {
            let r = serve_until(&host, &cfg, &setup.owned, stopped(stop_rx.clone())).await;
            if r.is_err() {
                stop_tx.send_replace(true);
            }
            r
        };
        let driver = async {
            let Some(d) = driver else { return Ok(()) };
            let r = crate::dra::plugin::run(d, stopped(stop_rx.clone())).await;
            if r.is_err() {
                stop_tx.send_replace(true);
            }
            r.map_err(AgentError::from)
        };
        let both = async { tokio::join!(plugin, driver) };
        tokio::pin!(both);
        tokio::pin!(shutdown);
        let (a, b) = tokio::select! {
            r = &mut both => r,
            () = &mut shutdown => {
                stop_tx.send_replace(true);
                (&mut both).await
            }
        };
        a.and(b)
    };
    let left = tokio::task::spawn_blocking(move || setup.give_back())
        .await
        .map_err(|e| AgentError::Internal(format!("give back: {e}")))?;
    for l in &left {
        eprintln!("vm-device-agent: left on the host: {l}");
    }
    result.map(|()| StopReport { left })
}

async fn serve_until(
    host: &Host,
    cfg: &Config,
    owned: &Owned,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    let first = scan_snapshot(host, owned).await?;
    let (tx, rx) = watch::channel(Arc::new(first));
    let nodes = DevNodes {
        iommufd: host.exists(Path::new("/dev/iommu")),
    };
    let resources: Vec<String> = owned
        .resources
        .iter()
        .filter(|(_, d)| !d.is_empty())
        .map(|(r, _)| r.clone())
        .collect();
    let mut served: Vec<Served> = Vec::new();
    // The kubelet socket we registered with (None: not registered yet).
    let mut registered: Option<SocketId> = None;
    let mut fresh = true;
    let mut tick = tokio::time::interval(Duration::from_millis(cfg.poll_interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    let result = loop {
        tokio::select! {
            () = &mut shutdown => break Ok(()),
            _ = tick.tick() => {}
        }
        // kubelet (re)started: its socket is new, and it dropped every plugin's socket.
        // A restarted kubelet also removes the plugin sockets: one gone means the same.
        let kubelet = socket_identity(&cfg.kubelet_socket);
        let ours_gone = served.iter().any(|s| !s.path.exists());
        if kubelet.is_some() && (kubelet != registered || ours_gone) {
            stop_all(&mut served).await;
            let mut ok = true;
            for r in &resources {
                let path = cfg.plugin_dir.join(socket_name(r));
                let plugin =
                    |retired| ResourcePlugin::new(r.clone(), rx.clone(), nodes.clone(), retired);
                match serve(&path, plugin).await {
                    Ok(s) => served.push(s),
                    Err(e) => {
                        stop_all(&mut served).await;
                        return Err(e);
                    }
                }
                if let Err(e) = register(&cfg.kubelet_socket, r, &socket_name(r)).await {
                    eprintln!("vm-device-agent: registering {r}: {e}; retrying");
                    ok = false;
                }
            }
            if ok {
                registered = kubelet;
                eprintln!(
                    "vm-device-agent: registered {} with kubelet at {}",
                    resources.join(", "),
                    cfg.kubelet_socket.display()
                );
            }
        }
        // The snapshot taken just before the first registration is still fresh.
        if std::mem::take(&mut fresh) {
            continue;
        }
        match scan_snapshot(host, owned).await {
            Ok(now) => {
                tx.send_if_modified(|cur| {
                    if **cur != now {
                        *cur = Arc::new(now);
                        true
                    } else {
                        false
                    }
                });
            }
            Err(e) => break Err(e),
        }
    };
    drop(tx);
    stop_all(&mut served).await;
    result
}
