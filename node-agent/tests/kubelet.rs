//! The agent against a fake kubelet: real gRPC over temporary unix sockets (kubelet's
//! Registration server, a DevicePlugin client), the host simulated from a recorded fixture.

mod common;
use common::host::{drivers, journals};

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tonic::{Request, Response, Status};
use vm_device::gpu_manager::{GpuMode, UnifiedGpuManager};
use vm_device::host::Host;
use vm_device::inventory::HostInventory;
use vm_device::ladder::Target;
use vm_device_agent::agent::{self, connect_unix, socket_name};
use vm_device_agent::config::{Config, MdevSpec, PassthroughSel};
use vm_device_agent::proto::v1beta1 as api;
use vm_device_sim::SimHost;
use vm_passthrough::Sysfs;

const BMC: &str = "bmc-datacenter-nvidia-vgpu";
const WAIT: Duration = Duration::from_secs(30);

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/hosts")
        .join(name)
}

/// kubelet's Registration service: every request goes to the test.
struct FakeKubelet {
    seen: mpsc::UnboundedSender<api::RegisterRequest>,
}

#[tonic::async_trait]
impl api::registration_server::Registration for FakeKubelet {
    async fn register(
        &self,
        req: Request<api::RegisterRequest>,
    ) -> Result<Response<api::Empty>, Status> {
        let _ = self.seen.send(req.into_inner());
        Ok(Response::new(api::Empty {}))
    }
}

struct Kubelet {
    registrations: mpsc::UnboundedReceiver<api::RegisterRequest>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Kubelet {
    fn start(socket: &Path) -> Kubelet {
        let _ = std::fs::remove_file(socket);
        let listener = tokio::net::UnixListener::bind(socket).expect("bind kubelet.sock");
        let (seen, registrations) = mpsc::unbounded_channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(api::registration_server::RegistrationServer::new(
                    FakeKubelet { seen },
                ))
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::UnixListenerStream::new(listener),
                    async {
                        let _ = stopped.await;
                    },
                )
                .await
                .expect("fake kubelet serves");
        });
        Kubelet {
            registrations,
            stop: Some(stop),
            task,
        }
    }

    async fn next_registration(&mut self) -> api::RegisterRequest {
        tokio::time::timeout(WAIT, self.registrations.recv())
            .await
            .expect("a registration within the timeout")
            .expect("kubelet alive")
    }

    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = self.task.await;
    }
}

struct Running {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<agent::StopReport, agent::AgentError>>,
}

impl Running {
    fn start(host: Host, cfg: Config, state: &Path) -> Running {
        let (stop, stopped) = oneshot::channel::<()>();
        let state = state.to_path_buf();
        let task = tokio::spawn(agent::run(host, cfg, state, async {
            let _ = stopped.await;
        }));
        Running {
            stop: Some(stop),
            task,
        }
    }

    async fn stop(mut self) -> agent::StopReport {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("the agent stops")
            .expect("agent task")
            .expect("agent ran")
    }
}

fn config(dir: &Path) -> Config {
    Config {
        plugin_dir: dir.to_path_buf(),
        kubelet_socket: dir.join("kubelet.sock"),
        poll_interval_ms: 50,
        ..Config::default()
    }
}

async fn plugin(
    dir: &Path,
    resource: &str,
) -> api::device_plugin_client::DevicePluginClient<tonic::transport::Channel> {
    let ch = connect_unix(&dir.join(socket_name(resource)))
        .await
        .expect("connect to the plugin socket");
    api::device_plugin_client::DevicePluginClient::new(ch)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_gpus_register_list_allocate_and_go_back() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let sim = Arc::new(SimHost::from_fixture(fixture(BMC)).unwrap());
    let host: Host = sim.clone();
    let before = drivers(sim.as_ref());
    // What `vm-cli gpu list` offers for passthrough on this host.
    let expected: Vec<String> = {
        let mut m =
            UnifiedGpuManager::with_host(Arc::new(SimHost::from_fixture(fixture(BMC)).unwrap()));
        m.scan_backends().unwrap();
        m.candidates(GpuMode::Passthrough)
            .unwrap()
            .iter()
            .filter(|c| c.is_available())
            .filter_map(|c| match &c.target {
                Target::Gpu { address, .. } => Some(address.to_string()),
                _ => None,
            })
            .collect()
    };
    assert_eq!(expected, ["0000:5e:00.0", "0000:86:00.0"]);

    let mut kubelet = Kubelet::start(&dir.path().join("kubelet.sock"));
    let cfg = Config {
        passthrough: PassthroughSel::Available,
        ..config(dir.path())
    };
    let running = Running::start(host, cfg, &state);
    let reg = kubelet.next_registration().await;
    assert_eq!(reg.version, "v1beta1");
    assert_eq!(reg.resource_name, "vm-device.io/10de-1eb8");
    assert_eq!(reg.endpoint, "vm-device-10de-1eb8.sock");
    assert!(reg.options.unwrap().get_preferred_allocation_available);

    // The config's prepare left one journal per group, owned by this (live) process.
    assert_eq!(journals(&state), ["group-12.json", "group-14.json"]);

    let mut client = plugin(dir.path(), &reg.resource_name).await;
    let mut stream = client
        .list_and_watch(api::Empty {})
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    let ids: Vec<&str> = first.devices.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, expected);
    for (d, numa) in first.devices.iter().zip([0, 1]) {
        assert_eq!(d.health, "Healthy");
        assert_eq!(d.topology.as_ref().unwrap().nodes[0].id, numa);
    }

    // Allocate: VFIO nodes and KubeVirt's variable.
    let resp = client
        .allocate(api::AllocateRequest {
            container_requests: vec![api::ContainerAllocateRequest {
                devices_ids: vec!["0000:5e:00.0".into()],
            }],
        })
        .await
        .unwrap()
        .into_inner();
    let c = &resp.container_responses[0];
    assert_eq!(
        c.envs
            .get("PCI_RESOURCE_VM-DEVICE_IO_10DE-1EB8")
            .map(String::as_str),
        Some("0000:5e:00.0")
    );
    let nodes: Vec<&str> = c.devices.iter().map(|d| d.host_path.as_str()).collect();
    assert_eq!(nodes, ["/dev/vfio/vfio", "/dev/vfio/12"]);
    let err = client
        .allocate(api::AllocateRequest {
            container_requests: vec![api::ContainerAllocateRequest {
                devices_ids: vec!["0000:99:00.0".into()],
            }],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");

    // Preferred allocation: one GPU, with must-include on NUMA node 1.
    let pref = client
        .get_preferred_allocation(api::PreferredAllocationRequest {
            container_requests: vec![api::ContainerPreferredAllocationRequest {
                available_device_i_ds: expected.clone(),
                must_include_device_i_ds: vec!["0000:86:00.0".into()],
                allocation_size: 1,
            }],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pref.container_responses[0].device_i_ds, ["0000:86:00.0"]);

    // Someone unbinds a GPU from vfio-pci behind the agent's back: it turns Unhealthy.
    sim.write_attr(
        Path::new("/sys/bus/pci/drivers/vfio-pci/unbind"),
        b"0000:86:00.0",
    )
    .unwrap();
    let update = tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("an update")
        .unwrap()
        .unwrap();
    let health: Vec<(&str, &str)> = update
        .devices
        .iter()
        .map(|d| (d.id.as_str(), d.health.as_str()))
        .collect();
    assert_eq!(
        health,
        [("0000:5e:00.0", "Healthy"), ("0000:86:00.0", "Unhealthy")]
    );

    // A clean stop gives every GPU back and drops the journals and sockets.
    let report = running.stop().await;
    assert!(report.left.is_empty(), "{:?}", report.left);
    let after = drivers(sim.as_ref());
    let changed: Vec<_> = before.iter().zip(&after).filter(|(b, a)| b != a).collect();
    // 0000:86:00.0 was unbound by hand: the agent binds it back to its driver too.
    assert!(changed.is_empty(), "{changed:?}");
    assert!(journals(&state).is_empty(), "{:?}", journals(&state));
    assert!(!dir.path().join(socket_name(&reg.resource_name)).exists());
    kubelet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mdevs_are_created_offered_watched_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let sim = Arc::new(SimHost::from_fixture(fixture(BMC)).unwrap());
    let host: Host = sim.clone();
    let mdevs_before = HostInventory::scan(sim.as_ref()).mdev_devices.len();
    let mut kubelet = Kubelet::start(&dir.path().join("kubelet.sock"));
    let cfg = Config {
        mdev: vec![MdevSpec {
            mdev_type: "nvidia-222".into(),
            count: 2,
            parent: Some("0000:86:00.0".into()),
            numa_node: None,
        }],
        ..config(dir.path())
    };
    let running = Running::start(host, cfg, &state);
    let reg = kubelet.next_registration().await;
    assert_eq!(reg.resource_name, "vm-device.io/nvidia-222");
    let mut client = plugin(dir.path(), &reg.resource_name).await;
    let mut stream = client
        .list_and_watch(api::Empty {})
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.devices.len(), 2);
    let uuids: Vec<String> = first.devices.iter().map(|d| d.id.clone()).collect();
    let inv = HostInventory::scan(sim.as_ref());
    for u in &uuids {
        let m = inv
            .mdev_devices
            .iter()
            .find(|m| &m.uuid == u)
            .expect("created");
        assert_eq!(m.type_id.as_deref(), Some("nvidia-222"));
        assert_eq!(m.parent, "0000:86:00.0");
    }
    // Each creation is journaled under the agent's own key while it runs.
    let mut want: Vec<String> = uuids
        .iter()
        .map(|u| format!("agent-mdev-{u}.json"))
        .collect();
    want.sort();
    assert_eq!(journals(&state), want);
    assert!(first
        .devices
        .iter()
        .all(|d| d.topology.as_ref().unwrap().nodes[0].id == 1));

    let resp = client
        .allocate(api::AllocateRequest {
            container_requests: vec![api::ContainerAllocateRequest {
                devices_ids: uuids.clone(),
            }],
        })
        .await
        .unwrap()
        .into_inner();
    let c = &resp.container_responses[0];
    assert_eq!(
        c.envs.get("MDEV_PCI_RESOURCE_VM-DEVICE_IO_NVIDIA-222"),
        Some(&uuids.join(","))
    );
    assert_eq!(c.devices[0].host_path, "/dev/vfio/vfio");
    assert_eq!(c.devices.len(), 3, "{:?}", c.devices);

    // One mdev removed behind the agent's back disappears from the list.
    sim.write_attr(
        &Path::new("/sys/bus/mdev/devices")
            .join(&uuids[0])
            .join("remove"),
        b"1",
    )
    .unwrap();
    let update = tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("an update")
        .unwrap()
        .unwrap();
    let ids: Vec<&str> = update.devices.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, [uuids[1].as_str()]);

    let report = running.stop().await;
    assert!(report.left.is_empty(), "{:?}", report.left);
    assert_eq!(
        HostInventory::scan(sim.as_ref()).mdev_devices.len(),
        mdevs_before
    );
    assert!(journals(&state).is_empty());
    kubelet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_kubelet_gets_the_registration_again() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let host: Host = Arc::new(SimHost::from_fixture(fixture("amd-vi-workstation")).unwrap());
    let sock = dir.path().join("kubelet.sock");
    let mut kubelet = Kubelet::start(&sock);
    let cfg = Config {
        passthrough: PassthroughSel::Addresses(vec!["0000:0c:00.0".parse().unwrap()]),
        wgpu_shares: 2,
        ..config(dir.path())
    };
    let running = Running::start(host, cfg, &state);
    let mut names = vec![
        kubelet.next_registration().await.resource_name,
        kubelet.next_registration().await.resource_name,
    ];
    names.sort();
    assert_eq!(names, ["vm-device.io/1002-73bf", "vm-device.io/wgpu"]);
    // The old kubelet's ListAndWatch, still open when it restarts.
    let mut old = plugin(dir.path(), "vm-device.io/wgpu").await;
    let mut old_stream = old
        .list_and_watch(api::Empty {})
        .await
        .unwrap()
        .into_inner();
    old_stream.message().await.unwrap().unwrap();
    // kubelet restarts: its socket is recreated, and it wipes the plugin sockets.
    kubelet.stop().await;
    for n in &names {
        let _ = std::fs::remove_file(dir.path().join(socket_name(n)));
    }
    let mut kubelet = Kubelet::start(&sock);
    let mut again = vec![
        kubelet.next_registration().await.resource_name,
        kubelet.next_registration().await.resource_name,
    ];
    again.sort();
    assert_eq!(again, names);
    // The plugin socket is served again.
    let mut client = plugin(dir.path(), "vm-device.io/wgpu").await;
    let mut stream = client
        .list_and_watch(api::Empty {})
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    let ids: Vec<&str> = first.devices.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["wgpu-0", "wgpu-1"]);
    // The old server does not live on for the stale stream: it is ended.
    let ended = tokio::time::timeout(WAIT, old_stream.message())
        .await
        .expect("the stale ListAndWatch stream ends");
    assert!(!matches!(ended, Ok(Some(_))), "{ended:?}");
    running.stop().await;
    kubelet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_the_host_refuses_is_undone_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let sim = Arc::new(SimHost::from_fixture(fixture(BMC)).unwrap());
    let before = drivers(sim.as_ref());
    let host: Host = sim.clone();
    // 86 can be prepared; 04 is the boot display and is refused: 86 must go back.
    let cfg = Config {
        passthrough: PassthroughSel::Addresses(vec![
            "0000:86:00.0".parse().unwrap(),
            "0000:04:00.0".parse().unwrap(),
        ]),
        ..config(dir.path())
    };
    // A configuration wrongly accepted would run forever: time out instead of hanging.
    let err = tokio::time::timeout(
        WAIT,
        agent::run(host, cfg, state.clone(), std::future::pending()),
    )
    .await
    .expect("the agent refuses the configuration instead of running")
    .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("passthrough 0000:04:00.0"), "{msg}");
    assert_eq!(drivers(sim.as_ref()), before);
    assert!(journals(&state).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wgpu_shares_need_an_adapter() {
    // The recorded BMC has no wgpu adapter: offering shares there would hand out nothing.
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let sim = Arc::new(SimHost::from_fixture(fixture(BMC)).unwrap());
    let before = drivers(sim.as_ref());
    let host: Host = sim.clone();
    let cfg = Config {
        passthrough: PassthroughSel::Addresses(vec!["0000:86:00.0".parse().unwrap()]),
        wgpu_shares: 2,
        ..config(dir.path())
    };
    // A configuration wrongly accepted would run forever: time out instead of hanging.
    let err = tokio::time::timeout(
        WAIT,
        agent::run(host, cfg, state.clone(), std::future::pending()),
    )
    .await
    .expect("the agent refuses the configuration instead of running")
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("wgpu_shares 2: the wgpu rung is unavailable"),
        "{err}"
    );
    assert_eq!(drivers(sim.as_ref()), before);
    assert!(journals(&state).is_empty());
}
