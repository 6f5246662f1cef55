//! The DRA driver against a fake kubelet: real gRPC over temporary unix sockets (kubelet's
//! plugin-registration client calling `GetInfo`, a `DRAPlugin` client calling
//! `NodePrepareResources` / `NodeUnprepareResources`), the host simulated from a recorded
//! fixture, claims and ResourceSlices in memory (the API server side is tested against a
//! mock API server in kube_api.rs). CDI files are checked against the CDI project's schema.

mod common;
use common::host::{drivers, journals};

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{oneshot, Notify};
use vm_device::host::Host;
use vm_device_agent::agent::{self, connect_unix, DraLink};
use vm_device_agent::config::{Config, DraConfig, PassthroughSel};
use vm_device_agent::dra::api::{Allocated, BoxFuture, ClaimRef, ClaimSource, Publisher};
use vm_device_agent::dra::checkpoint;
use vm_device_agent::dra::devices::{DraDevice, DraKind};
use vm_device_agent::dra::plugin::{dra_socket, node_devices, registration_socket};
use vm_device_agent::dra::{cdi, DRIVER_NAME};
use vm_device_agent::proto::dra_v1 as dra;
use vm_device_agent::proto::pluginregistration as reg;
use vm_device_sim::SimHost;
use vm_passthrough::{HostOps, Sysfs};

const BMC: &str = "bmc-datacenter-nvidia-vgpu";
const NODE: &str = "node-a";
const WAIT: Duration = Duration::from_secs(30);

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/hosts")
        .join(name)
}

/// Claims' allocations as the scheduler would write them.
#[derive(Default)]
struct Claims(Mutex<BTreeMap<String, Vec<Allocated>>>);

impl Claims {
    fn allocate(&self, uid: &str, devices: &[&str]) {
        self.0.lock().unwrap().insert(
            uid.to_string(),
            devices
                .iter()
                .map(|d| Allocated {
                    request: "gpu".into(),
                    pool: NODE.into(),
                    device: d.to_string(),
                })
                .collect(),
        );
    }
}

impl ClaimSource for Claims {
    fn allocated<'a>(
        &'a self,
        claim: &'a ClaimRef,
    ) -> BoxFuture<'a, Result<Vec<Allocated>, String>> {
        let r = self
            .0
            .lock()
            .unwrap()
            .get(&claim.uid)
            .cloned()
            .ok_or_else(|| format!("claim {} is not allocated", claim.uid));
        Box::pin(async move { r })
    }
}

/// Every publication, newest last.
#[derive(Default)]
struct Slices {
    published: Mutex<Vec<Vec<DraDevice>>>,
    rung: Notify,
}

impl Publisher for Slices {
    fn publish<'a>(&'a self, devices: &'a [DraDevice]) -> BoxFuture<'a, Result<(), String>> {
        self.published.lock().unwrap().push(devices.to_vec());
        self.rung.notify_waiters();
        Box::pin(async { Ok(()) })
    }
}

impl Slices {
    fn last(&self) -> Option<Vec<String>> {
        self.published
            .lock()
            .unwrap()
            .last()
            .map(|d| d.iter().map(|d| d.name.clone()).collect())
    }

    /// Waits until the last publication satisfies `f`.
    async fn wait_for(&self, f: impl Fn(&[String]) -> bool) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let notified = self.rung.notified();
            if let Some(last) = self.last() {
                if f(&last) {
                    return last;
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("no publication as wanted; last: {:?}", self.last());
            }
        }
    }
}

struct Running {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<agent::StopReport, agent::AgentError>>,
}

impl Running {
    fn start(
        host: Host,
        cfg: Config,
        state: &Path,
        claims: Arc<Claims>,
        slices: Arc<Slices>,
    ) -> Running {
        let (stop, stopped) = oneshot::channel::<()>();
        let link = DraLink {
            node: NODE.into(),
            claims,
            publisher: slices,
        };
        let task = tokio::spawn(agent::run_with(
            host,
            cfg,
            state.to_path_buf(),
            Some(link),
            async {
                let _ = stopped.await;
            },
        ));
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
        plugin_dir: dir.join("device-plugins"),
        kubelet_socket: dir.join("device-plugins/kubelet.sock"),
        poll_interval_ms: 50,
        dra: Some(DraConfig {
            registry_dir: dir.join("plugins_registry"),
            plugin_dir: dir.join("plugins/gpu.vm-device.io"),
            cdi_dir: dir.join("cdi"),
            wgpu_shares: 0,
        }),
        ..Config::default()
    }
}

/// kubelet's side: the plugin watcher's GetInfo on the registration socket, then a client of
/// the endpoint it names.
async fn kubelet(
    cfg: &Config,
) -> dra::dra_plugin_client::DraPluginClient<tonic::transport::Channel> {
    let dcfg = cfg.dra.as_ref().unwrap();
    let sock = registration_socket(dcfg);
    let deadline = std::time::Instant::now() + WAIT;
    while !sock.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "no registration socket"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut r = reg::registration_client::RegistrationClient::new(
        connect_unix(&sock).await.expect("connect registration"),
    );
    let info = r.get_info(reg::InfoRequest {}).await.unwrap().into_inner();
    assert_eq!(info.r#type, "DRAPlugin");
    assert_eq!(info.name, DRIVER_NAME);
    assert_eq!(info.supported_versions, ["v1.DRAPlugin"]);
    assert_eq!(Path::new(&info.endpoint), dra_socket(dcfg));
    r.notify_registration_status(reg::RegistrationStatus {
        plugin_registered: true,
        error: String::new(),
    })
    .await
    .unwrap();
    dra::dra_plugin_client::DraPluginClient::new(
        connect_unix(Path::new(&info.endpoint))
            .await
            .expect("connect DRA"),
    )
}

fn claim(uid: &str) -> dra::Claim {
    dra::Claim {
        namespace: "vms".into(),
        uid: uid.into(),
        name: format!("claim-{uid}"),
    }
}

async fn prepare(
    c: &mut dra::dra_plugin_client::DraPluginClient<tonic::transport::Channel>,
    uid: &str,
) -> dra::NodePrepareResourceResponse {
    let mut r = c
        .node_prepare_resources(dra::NodePrepareResourcesRequest {
            claims: vec![claim(uid)],
        })
        .await
        .unwrap()
        .into_inner();
    r.claims.remove(uid).expect("an answer for the claim")
}

async fn unprepare(
    c: &mut dra::dra_plugin_client::DraPluginClient<tonic::transport::Channel>,
    uid: &str,
) -> String {
    let mut r = c
        .node_unprepare_resources(dra::NodeUnprepareResourcesRequest {
            claims: vec![claim(uid)],
        })
        .await
        .unwrap()
        .into_inner();
    r.claims.remove(uid).expect("an answer for the claim").error
}

fn mdevs(host: &dyn HostOps) -> Vec<String> {
    host.list_dir(Path::new("/sys/bus/mdev/devices"))
        .unwrap_or_default()
}

/// The CDI project's schema (schemas/cdi), with its defs.json handed to the validator.
fn cdi_validator() -> jsonschema::Validator {
    struct Defs(serde_json::Value);
    impl jsonschema::Retrieve for Defs {
        fn retrieve(
            &self,
            uri: &jsonschema::Uri<String>,
        ) -> Result<serde_json::Value, Box<dyn std::error::Error + Send + Sync>> {
            if uri.as_str().ends_with("/defs.json") {
                Ok(self.0.clone())
            } else {
                Err(format!("the CDI schema refers to {uri}, which is not vendored").into())
            }
        }
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/cdi");
    let read = |f: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(dir.join(f)).unwrap()).unwrap()
    };
    jsonschema::options()
        .with_base_uri("file:///cdi/schema.json")
        .with_retriever(Defs(read("defs.json")))
        .build(&read("schema.json"))
        .expect("the CDI schema compiles")
}

/// A CDI spec file: valid by the schema, the kind ours, every device name legal (the spec's
/// rule the schema leaves out).
fn check_cdi(path: &Path) -> serde_json::Value {
    let spec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let v = cdi_validator();
    let errors: Vec<String> = v.iter_errors(&spec).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{}: {errors:?}", path.display());
    assert_eq!(spec["kind"], cdi::KIND);
    for d in spec["devices"].as_array().unwrap() {
        let name = d["name"].as_str().unwrap();
        assert!(
            name.chars().next().unwrap().is_ascii_alphanumeric()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.:-".contains(c)),
            "{name}"
        );
    }
    spec
}

#[test]
fn the_cdi_schema_refuses_a_broken_spec() {
    // The validator is not vacuous: a spec without `kind`, a device without containerEdits,
    // a device node without its path are refused.
    let v = cdi_validator();
    let good = cdi::spec(
        "u1",
        &[(
            "gpu-0000-86-00-0".into(),
            cdi::Edits {
                device_nodes: vec!["/dev/vfio/vfio".into()],
                env: vec!["A=b".into()],
            },
        )],
    );
    assert!(v.is_valid(&good), "{good}");
    let mut no_kind = good.clone();
    no_kind.as_object_mut().unwrap().remove("kind");
    assert!(!v.is_valid(&no_kind));
    let mut no_edits = good.clone();
    no_edits["devices"][0]
        .as_object_mut()
        .unwrap()
        .remove("containerEdits");
    assert!(!v.is_valid(&no_edits));
    let mut no_path = good;
    no_path["devices"][0]["containerEdits"]["deviceNodes"][0]
        .as_object_mut()
        .unwrap()
        .remove("path");
    assert!(!v.is_valid(&no_path), "{no_path}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelet_prepares_and_unprepares_a_gpu_and_an_mdev() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let sim = Arc::new(SimHost::from_fixture(fixture(BMC)).unwrap());
    let host: Host = sim.clone();
    let before_drivers = drivers(sim.as_ref());
    let before_mdevs = mdevs(sim.as_ref());
    // What the node offers, computed apart from the agent.
    let expected: Vec<String> = node_devices(sim.as_ref(), 0, false, &[], &BTreeSet::new())
        .iter()
        .map(|d| d.name.clone())
        .collect();
    assert!(
        expected.contains(&"gpu-0000-86-00-0".to_string()),
        "{expected:?}"
    );
    let mdev_dev = expected
        .iter()
        .find(|n| n.starts_with("mdev-"))
        .cloned()
        .expect("an mdev slot on this host");

    let claims = Arc::new(Claims::default());
    let slices = Arc::new(Slices::default());
    let cfg = config(dir.path());
    let running = Running::start(host, cfg.clone(), &state, claims.clone(), slices.clone());
    let mut c = kubelet(&cfg).await;
    assert_eq!(slices.wait_for(|_| true).await, expected);

    // A GPU: its group on vfio-pci, a detached journal, a CDI spec naming its VFIO nodes.
    claims.allocate("uid-gpu", &["gpu-0000-86-00-0"]);
    let r = prepare(&mut c, "uid-gpu").await;
    assert_eq!(r.error, "");
    assert_eq!(r.devices.len(), 1);
    assert_eq!(r.devices[0].device_name, "gpu-0000-86-00-0");
    assert_eq!(r.devices[0].pool_name, NODE);
    assert_eq!(r.devices[0].request_names, ["gpu"]);
    assert_eq!(
        r.devices[0].cdi_device_ids,
        ["vm-device.io/gpu=uid-gpu-gpu-0000-86-00-0"]
    );
    let now = drivers(sim.as_ref());
    let gpu = now.iter().find(|(a, _)| a == "0000:86:00.0").unwrap();
    assert_eq!(gpu.1.as_deref(), Some("vfio-pci"));
    let group = sim
        .read_link(Path::new("/sys/bus/pci/devices/0000:86:00.0/iommu_group"))
        .unwrap();
    let group = group.file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(journals(&state), [format!("group-{group}.json")]);
    let spec = check_cdi(&cdi::spec_path(
        &cfg.dra.as_ref().unwrap().cdi_dir,
        "uid-gpu",
    ));
    let nodes: Vec<&str> = spec["devices"][0]["containerEdits"]["deviceNodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        nodes[..2],
        ["/dev/vfio/vfio", &format!("/dev/vfio/{group}")]
    );
    let env = spec["devices"][0]["containerEdits"]["env"][0]
        .as_str()
        .unwrap();
    assert!(
        env.starts_with("VM_DEVICE_GPU_0000_86_00_0=0000:86:00.0"),
        "{env}"
    );

    // kubelet repeats itself: the same answer, nothing more done.
    let ops = sim.ops().len();
    assert_eq!(prepare(&mut c, "uid-gpu").await, r);
    assert!(
        sim.ops()[ops..]
            .iter()
            .all(|o| !matches!(o, vm_device_sim::Op::Write(..))),
        "a repeated prepare wrote to the host"
    );

    // The same device for another claim is refused, and changes nothing.
    claims.allocate("uid-other", &["gpu-0000-86-00-0"]);
    let e = prepare(&mut c, "uid-other").await;
    assert!(
        e.error.contains("prepared for claim vms/claim-uid-gpu"),
        "{}",
        e.error
    );
    assert!(e.devices.is_empty());
    // A device the node does not offer: the scheduler must allocate again.
    claims.allocate("uid-ghost", &["gpu-0000-99-00-0"]);
    let e = prepare(&mut c, "uid-ghost").await;
    assert!(e.error.contains("not one this node offers"), "{}", e.error);
    // Not allocated at all.
    let e = prepare(&mut c, "uid-nothing").await;
    assert!(e.error.contains("not allocated"), "{}", e.error);

    // An mdev slot: an mdev created, its group's node in the spec.
    claims.allocate("uid-mdev", &[&mdev_dev]);
    let r = prepare(&mut c, "uid-mdev").await;
    assert_eq!(r.error, "");
    let created: Vec<String> = mdevs(sim.as_ref())
        .into_iter()
        .filter(|m| !before_mdevs.contains(m))
        .collect();
    assert_eq!(created.len(), 1, "{created:?}");
    let spec = check_cdi(&cdi::spec_path(
        &cfg.dra.as_ref().unwrap().cdi_dir,
        "uid-mdev",
    ));
    let uuid = created[0].clone();
    let env = spec["devices"][0]["containerEdits"]["env"][0]
        .as_str()
        .unwrap();
    assert!(env.ends_with(&format!("={uuid}")), "{env}");
    let cp = checkpoint::Checkpoint::load(&state).unwrap();
    assert_eq!(cp.claims.len(), 2);
    assert_eq!(
        cp.claims["uid-mdev"].devices[0].mdev_uuid.as_deref(),
        Some(uuid.as_str())
    );
    // Held devices stay published under their names.
    slices
        .wait_for(|l| l.contains(&mdev_dev) && l.contains(&"gpu-0000-86-00-0".to_string()))
        .await;

    // Unprepare both: the host as it was, no journal, no CDI file, an empty checkpoint.
    assert_eq!(unprepare(&mut c, "uid-gpu").await, "");
    assert_eq!(unprepare(&mut c, "uid-mdev").await, "");
    assert_eq!(unprepare(&mut c, "uid-never-prepared").await, "");
    assert_eq!(drivers(sim.as_ref()), before_drivers);
    assert_eq!(mdevs(sim.as_ref()), before_mdevs);
    assert!(journals(&state).is_empty(), "{:?}", journals(&state));
    let cdi_dir = &cfg.dra.as_ref().unwrap().cdi_dir;
    assert!(!cdi::spec_path(cdi_dir, "uid-gpu").exists());
    assert!(!cdi::spec_path(cdi_dir, "uid-mdev").exists());
    assert!(checkpoint::Checkpoint::load(&state)
        .unwrap()
        .claims
        .is_empty());
    assert_eq!(slices.wait_for(|l| l == expected).await, expected);

    let report = running.stop().await;
    assert!(report.left.is_empty(), "{:?}", report.left);
    assert!(!registration_socket(cfg.dra.as_ref().unwrap()).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_claim_outlives_the_agent_and_restore_and_the_next_agent_gives_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let sim = Arc::new(SimHost::from_fixture(fixture(BMC)).unwrap());
    let before = drivers(sim.as_ref());
    let claims = Arc::new(Claims::default());
    let slices = Arc::new(Slices::default());
    let cfg = config(dir.path());

    let running = Running::start(
        sim.clone(),
        cfg.clone(),
        &state,
        claims.clone(),
        slices.clone(),
    );
    let mut c = kubelet(&cfg).await;
    claims.allocate("uid-1", &["gpu-0000-5e-00-0"]);
    assert_eq!(prepare(&mut c, "uid-1").await.error, "");
    drop(c);
    let report = running.stop().await;
    assert!(report.left.is_empty());
    let prepared = drivers(sim.as_ref());
    assert_ne!(
        prepared, before,
        "the VM keeps its GPU while the agent restarts"
    );

    // `vm-cli gpu restore` leaves a prepared claim alone: its journal is detached.
    let r = vm_device::plan::restore_dead(sim.as_ref(), &state);
    assert!(r.complete(), "{r:?}");
    assert_eq!(drivers(sim.as_ref()), prepared);

    // The next agent still publishes it, answers a repeated prepare from the checkpoint and
    // gives it back at unprepare.
    let slices = Arc::new(Slices::default());
    let running = Running::start(
        sim.clone(),
        cfg.clone(),
        &state,
        claims.clone(),
        slices.clone(),
    );
    let mut c = kubelet(&cfg).await;
    slices
        .wait_for(|l| l.contains(&"gpu-0000-5e-00-0".to_string()))
        .await;
    let again = prepare(&mut c, "uid-1").await;
    assert_eq!(again.error, "");
    assert_eq!(again.devices[0].device_name, "gpu-0000-5e-00-0");
    assert_eq!(unprepare(&mut c, "uid-1").await, "");
    assert_eq!(drivers(sim.as_ref()), before);
    assert!(journals(&state).is_empty());
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_checkpoint_stops_the_agent_and_changes_nothing() {
    for (what, plant) in [
        ("garbage", 0),
        ("symlink", 1),
        ("fifo", 2),
        ("bad journal key", 3),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let cp = checkpoint::path(&state);
        std::fs::create_dir_all(cp.parent().unwrap()).unwrap();
        match plant {
            0 => std::fs::write(&cp, b"{\"version\":1,\"claims\":").unwrap(),
            1 => std::os::unix::fs::symlink("/etc/passwd", &cp).unwrap(),
            2 => nix::unistd::mkfifo(&cp, nix::sys::stat::Mode::S_IRWXU).unwrap(),
            _ => std::fs::write(
                &cp,
                serde_json::json!({"version": 1, "claims": {"u": {"namespace": "n", "name": "c",
                    "devices": [{"request": "r", "pool": "p",
                        "device": {"name": "wgpu-0", "kind": {"kind": "wgpu", "share": 0},
                                   "attributes": {}, "capacity": {}},
                        "journals": ["../../etc/x"], "mdev_uuid": null,
                        "device_nodes": [], "env": [], "cdi_id": "x"}]}}})
                .to_string(),
            )
            .unwrap(),
        }
        let sim = Arc::new(SimHost::from_fixture(fixture(BMC)).unwrap());
        let before = sim.snapshot();
        let cfg = Config {
            passthrough: PassthroughSel::Addresses(vec!["0000:86:00.0".parse().unwrap()]),
            ..config(dir.path())
        };
        let link = DraLink {
            node: NODE.into(),
            claims: Arc::new(Claims::default()),
            publisher: Arc::new(Slices::default()),
        };
        let r = tokio::time::timeout(
            WAIT,
            agent::run_with(
                sim.clone(),
                cfg,
                state.clone(),
                Some(link),
                std::future::pending(),
            ),
        )
        .await
        .unwrap_or_else(|_| panic!("{what}: the agent hung"));
        let e = r.err().unwrap_or_else(|| panic!("{what}: the agent ran"));
        assert!(e.to_string().contains("checkpoint.json"), "{what}: {e}");
        // The device plugin's prepare was given back too.
        assert_eq!(sim.snapshot(), before, "{what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_are_served_again_and_the_device_plugin_gpus_are_not_offered_twice() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let sim = Arc::new(SimHost::from_fixture(fixture(BMC)).unwrap());
    let cfg = Config {
        passthrough: PassthroughSel::Addresses(vec!["0000:86:00.0".parse().unwrap()]),
        ..config(dir.path())
    };
    let slices = Arc::new(Slices::default());
    let running = Running::start(
        sim.clone(),
        cfg.clone(),
        &state,
        Arc::new(Claims::default()),
        slices.clone(),
    );
    let _ = kubelet(&cfg).await;
    let offered = slices.wait_for(|_| true).await;
    assert!(
        !offered.contains(&"gpu-0000-86-00-0".to_string()),
        "{offered:?}"
    );
    assert!(
        offered.contains(&"gpu-0000-5e-00-0".to_string()),
        "{offered:?}"
    );
    // kubelet's plugin watcher lost the socket (its directory was cleaned): served again.
    let sock = registration_socket(cfg.dra.as_ref().unwrap());
    std::fs::remove_file(&sock).unwrap();
    let _ = kubelet(&cfg).await;
    let _ = running.stop().await;
}

#[test]
fn dra_device_kinds_round_trip_through_the_checkpoint() {
    let d = DraDevice {
        name: "mdev-x-0".into(),
        kind: DraKind::Mdev {
            parent: "0000:00:02.0".into(),
            type_id: "i915-GVTg_V5_4".into(),
            slot: 0,
        },
        attributes: BTreeMap::new(),
        capacity: BTreeMap::new(),
    };
    let text = serde_json::to_string(&d).unwrap();
    assert_eq!(serde_json::from_str::<DraDevice>(&text).unwrap(), d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wgpu_shares_are_offered_with_one_adapter_probe_for_all_polls() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let sim = Arc::new(SimHost::from_fixture(fixture("no-gpu-server")).unwrap());
    let mut cfg = config(dir.path());
    cfg.dra.as_mut().unwrap().wgpu_shares = 2;
    let slices = Arc::new(Slices::default());
    let running = Running::start(
        sim.clone(),
        cfg.clone(),
        &state,
        Arc::new(Claims::default()),
        slices.clone(),
    );
    let offered = slices
        .wait_for(|l| l.iter().any(|n| n.starts_with("wgpu-")))
        .await;
    assert!(offered.contains(&"wgpu-1".to_string()), "{offered:?}");
    // Several polls (50 ms apart) later, the adapters were still probed once.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let probes = sim
        .ops()
        .iter()
        .filter(|o| matches!(o, vm_device_sim::Op::ProbeAdapters))
        .count();
    assert_eq!(probes, 1, "a wgpu adapter probe per poll");
    let _ = running.stop().await;
}
