//! The DRA driver in the `vm-device-agent` binary, as a separate process on a simulated host
//! whose changes persist (`--sim-state`): claims and slices through local files (no API
//! server here), kubelet faked over the real sockets, the agent killed with SIGKILL.

mod common;
use common::host::drivers;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::resource::v1::ResourceSlice;
use vm_device::plan::ReplayScope;
use vm_device_agent::agent::connect_unix;
use vm_device_agent::proto::dra_v1 as dra;
use vm_device_agent::proto::pluginregistration as reg;
use vm_device_sim::SimHost;

const WAIT: Duration = Duration::from_secs(60);
const GPU: &str = "gpu-0000-86-00-0";

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/hosts/bmc-datacenter-nvidia-vgpu")
        .canonicalize()
        .unwrap()
}

struct Node {
    dir: tempfile::TempDir,
}

impl Node {
    fn new() -> Node {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sim")).unwrap();
        let d = dir.path();
        std::fs::write(
            d.join("agent.json"),
            serde_json::json!({
                "plugin_dir": d.join("device-plugins"),
                "poll_interval_ms": 50,
                "dra": {
                    "registry_dir": d.join("plugins_registry"),
                    "plugin_dir": d.join("plugins/gpu.vm-device.io"),
                    "cdi_dir": d.join("cdi"),
                },
            })
            .to_string(),
        )
        .unwrap();
        std::fs::write(
            d.join("claims.json"),
            serde_json::json!({"uid-1": {"namespace": "vms", "name": "vm-gpu",
                "devices": [{"request": "gpu", "pool": "node-a", "device": GPU}]}})
            .to_string(),
        )
        .unwrap();
        Node { dir }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn agent(&self, files: bool) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_vm-device-agent"));
        c.arg("--host-root")
            .arg(fixture())
            .arg("--sim-state")
            .arg(self.path("sim"))
            .arg("run")
            .arg("--config")
            .arg(self.path("agent.json"))
            .arg("--node-name")
            .arg("node-a");
        if files {
            c.arg("--dra-claims-file")
                .arg(self.path("claims.json"))
                .arg("--dra-slices-file")
                .arg(self.path("slices.json"));
        }
        c
    }

    fn start(&self) -> Child {
        let _ = std::fs::remove_file(self.path("slices.json"));
        self.agent(true).spawn().unwrap()
    }

    fn host(&self) -> Arc<SimHost> {
        Arc::new(SimHost::from_fixture_with_state(fixture(), self.path("sim")).unwrap())
    }

    /// The slices the agent published (waiting for the first publication).
    async fn slices(&self) -> Vec<ResourceSlice> {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            if let Ok(text) = std::fs::read_to_string(self.path("slices.json")) {
                return serde_json::from_str(&text).expect("slices.json holds ResourceSlices");
            }
            assert!(std::time::Instant::now() < deadline, "no slices published");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn kubelet(&self) -> dra::dra_plugin_client::DraPluginClient<tonic::transport::Channel> {
        let sock = self.path("plugins_registry/gpu.vm-device.io-reg.sock");
        let mut r = reg::registration_client::RegistrationClient::new(
            connect_unix(&sock).await.expect("connect registration"),
        );
        let info = r.get_info(reg::InfoRequest {}).await.unwrap().into_inner();
        dra::dra_plugin_client::DraPluginClient::new(
            connect_unix(Path::new(&info.endpoint)).await.unwrap(),
        )
    }
}

fn claim() -> dra::Claim {
    dra::Claim {
        namespace: "vms".into(),
        uid: "uid-1".into(),
        name: "vm-gpu".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_survives_kill_9_and_restore_and_the_next_agent_gives_it_back() {
    let node = Node::new();
    let before = drivers(node.host().as_ref());
    let mut child = node.start();
    let slices = node.slices().await;
    let names: Vec<String> = slices
        .iter()
        .flat_map(|s| s.spec.devices.clone().unwrap_or_default())
        .map(|d| d.name)
        .collect();
    assert!(names.contains(&GPU.to_string()), "{names:?}");
    assert!(slices
        .iter()
        .all(|s| s.spec.node_name.as_deref() == Some("node-a")));

    let mut c = node.kubelet().await;
    let r = c
        .node_prepare_resources(dra::NodePrepareResourcesRequest {
            claims: vec![claim()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.claims["uid-1"].error, "");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    // The VM keeps its GPU: `vm-cli gpu restore` (the same library call) leaves the
    // prepared claim's detached journal alone.
    let host = node.host();
    let prepared = drivers(host.as_ref());
    assert!(prepared.contains(&("0000:86:00.0".into(), Some("vfio-pci".into()))));
    let report = vm_device::rungs::passthrough::restore_in(
        host.as_ref(),
        &node.path("sim/state"),
        &ReplayScope::default(),
    );
    assert!(report.complete(), "{report:?}");
    drop(host);
    assert_eq!(drivers(node.host().as_ref()), prepared);

    // The next agent unprepares it from the checkpoint.
    let mut child = node.start();
    let _ = node.slices().await;
    let mut c = node.kubelet().await;
    let r = c
        .node_unprepare_resources(dra::NodeUnprepareResourcesRequest {
            claims: vec![claim()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.claims["uid-1"].error, "");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(drivers(node.host().as_ref()), before);
    assert!(!node.path("cdi/vm-device.io-gpu_uid-1.json").exists());
}

#[test]
fn dra_without_an_api_server_or_files_says_what_to_do() {
    let node = Node::new();
    let out = node
        .agent(false)
        .env("KUBECONFIG", node.path("no-such-kubeconfig"))
        .env("HOME", node.path("home"))
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("DRA driver settings:"), "{err}");
    assert!(err.contains("--dra-claims-file"), "{err}");
    // Nothing was changed or served.
    assert!(!node.path("plugins_registry").exists());
}
