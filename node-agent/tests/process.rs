//! The `vm-device-agent` binary as kubelet's host runs it: a separate process on a simulated
//! host whose changes persist (`--sim-state`), stopped by SIGTERM or killed with SIGKILL.

mod common;
use common::host::journals;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tonic::{Request, Response, Status};
use vm_device::inventory::HostInventory;
use vm_device::plan::ReplayScope;
use vm_device_agent::proto::v1beta1 as api;
use vm_device_sim::SimHost;
use vm_passthrough::HostOps;

const WAIT: Duration = Duration::from_secs(60);

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/hosts/bmc-datacenter-nvidia-vgpu")
        .canonicalize()
        .unwrap()
}

struct FakeKubelet(mpsc::UnboundedSender<String>);

#[tonic::async_trait]
impl api::registration_server::Registration for FakeKubelet {
    async fn register(
        &self,
        req: Request<api::RegisterRequest>,
    ) -> Result<Response<api::Empty>, Status> {
        let _ = self.0.send(req.into_inner().resource_name);
        Ok(Response::new(api::Empty {}))
    }
}

fn kubelet(socket: &Path) -> mpsc::UnboundedReceiver<String> {
    let listener = tokio::net::UnixListener::bind(socket).unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(api::registration_server::RegistrationServer::new(
                FakeKubelet(tx),
            ))
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener)),
    );
    rx
}

/// What restore must bring back: every function's driver and the active mdevs.
fn host_state(host: &dyn HostOps) -> (Vec<(String, Option<String>)>, Vec<String>) {
    let inv = HostInventory::scan(host);
    let drivers = inv
        .functions
        .iter()
        .map(|f| (f.address.to_string(), f.driver.clone()))
        .collect();
    let mut mdevs: Vec<String> = inv.mdev_devices.iter().map(|m| m.uuid.clone()).collect();
    mdevs.sort();
    (drivers, mdevs)
}

struct Setup {
    dir: tempfile::TempDir,
    sim: PathBuf,
    registrations: mpsc::UnboundedReceiver<String>,
    child: Child,
}

async fn start_agent() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let sim = dir.path().join("sim");
    std::fs::create_dir(&sim).unwrap();
    let registrations = kubelet(&dir.path().join("kubelet.sock"));
    let cfg = dir.path().join("agent.json");
    std::fs::write(
        &cfg,
        serde_json::json!({
            "passthrough": ["0000:86:00.0"],
            "mdev": [{"type": "nvidia-222", "count": 1, "parent": "0000:5e:00.0"}],
            "plugin_dir": dir.path(),
            "poll_interval_ms": 50,
        })
        .to_string(),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_vm-device-agent"))
        .arg("--host-root")
        .arg(fixture())
        .arg("--sim-state")
        .arg(&sim)
        .arg("run")
        .arg("--config")
        .arg(&cfg)
        .spawn()
        .unwrap();
    Setup {
        dir,
        sim,
        registrations,
        child,
    }
}

async fn registered(s: &mut Setup) -> Vec<String> {
    let mut names = Vec::new();
    for _ in 0..2 {
        let n = tokio::time::timeout(WAIT, s.registrations.recv())
            .await
            .expect("the agent registers")
            .unwrap();
        names.push(n);
    }
    names.sort();
    names
}

fn sim_host(sim: &Path) -> Arc<SimHost> {
    Arc::new(SimHost::from_fixture_with_state(fixture(), sim).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_then_gpu_restore_leaves_the_host_as_before() {
    let before = host_state(SimHost::from_fixture(fixture()).unwrap().as_ops());
    let mut s = start_agent().await;
    assert_eq!(
        registered(&mut s).await,
        ["vm-device.io/10de-1eb8", "vm-device.io/nvidia-222"]
    );
    s.child.kill().unwrap(); // SIGKILL: no clean stop
    s.child.wait().unwrap();

    // What the agent did is still on the (persisted) simulated host, with its journals.
    let state = s.sim.join("state");
    let host = sim_host(&s.sim);
    let (drivers, mdevs) = host_state(host.as_ref());
    assert!(drivers.contains(&("0000:86:00.0".into(), Some("vfio-pci".into()))));
    assert_eq!(mdevs.len(), before.1.len() + 1);
    let j = journals(&state);
    assert_eq!(j.len(), 2, "{j:?}");
    assert!(j.contains(&"group-14.json".to_string()), "{j:?}");
    assert!(j.iter().any(|n| n.starts_with("agent-mdev-")), "{j:?}");

    // `vm-cli gpu restore` (the same library call) undoes both.
    let report =
        vm_device::rungs::passthrough::restore_in(host.as_ref(), &state, &ReplayScope::default());
    assert!(report.complete() && !report.left_changes(), "{report:?}");
    drop(host);
    let host = sim_host(&s.sim);
    assert_eq!(host_state(host.as_ref()), before);
    assert!(journals(&state).is_empty(), "{:?}", journals(&state));
    drop(s.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_gives_everything_back() {
    let before = host_state(SimHost::from_fixture(fixture()).unwrap().as_ops());
    let mut s = start_agent().await;
    registered(&mut s).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(s.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = s.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let host = sim_host(&s.sim);
    assert_eq!(host_state(host.as_ref()), before);
    assert!(journals(&s.sim.join("state")).is_empty());
    assert!(!s.dir.path().join("vm-device-10de-1eb8.sock").exists());
}

trait AsOps {
    fn as_ops(&self) -> &dyn HostOps;
}

impl AsOps for SimHost {
    fn as_ops(&self) -> &dyn HostOps {
        self
    }
}
