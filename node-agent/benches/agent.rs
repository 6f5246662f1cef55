//! The agent's speed on the generated 1,024-function / 16-GPU host (simulated): time from
//! `agent::run` to kubelet's first ListAndWatch answer (config applied, socket served,
//! registered), and Allocate latency over gRPC. Prints medians and their ratio to the
//! goals (100 ms, 10 ms); asserts nothing (the machine may be loaded).
//!
//! The agent's journals are written durably (temp file, fsync, rename, fsync of the
//! directory) before each step. Deployed, they live in `/run/vm-device`, a tmpfs, where an
//! fsync costs nothing; on a disk each costs the disk's flush latency. The bench measures
//! both: the state directory on tmpfs (`/dev/shm`, as on a node) and on the disk under
//! `TMPDIR` (a node whose `--state-dir` is on disk).
//!
//! Each simulated host learns what a kernel knows from boot (`SimHost::learn_kernel`)
//! before the clock starts; that learning is printed apart, not counted.
//!
//! `cargo xtask bench` runs it with `VM_BENCH_HOST` set to its generated host; alone:
//! `cargo xtask gen-bench-host target/bench-host-1024 && VM_BENCH_HOST=target/bench-host-1024
//! cargo bench -p vm-device-agent --bench agent`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tonic::{Request, Response, Status};
use vm_device::host::Host;
use vm_device_agent::agent::{self, connect_unix, socket_name};
use vm_device_agent::config::{Config, PassthroughSel};
use vm_device_agent::proto::v1beta1 as api;
use vm_device_sim::SimHost;

struct Kubelet(mpsc::UnboundedSender<String>);

#[tonic::async_trait]
impl api::registration_server::Registration for Kubelet {
    async fn register(
        &self,
        req: Request<api::RegisterRequest>,
    ) -> Result<Response<api::Empty>, Status> {
        let _ = self.0.send(req.into_inner().resource_name);
        Ok(Response::new(api::Empty {}))
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// Where a run keeps its journals and locks.
#[derive(Clone, Copy)]
enum StateOn {
    /// `/dev/shm`: a tmpfs, as `/run/vm-device` is on a node.
    Tmpfs,
    /// A directory under `TMPDIR` (a disk here).
    Disk,
}

fn state_tempdir(on: StateOn) -> Result<tempfile::TempDir, String> {
    match on {
        StateOn::Tmpfs => tempfile::tempdir_in("/dev/shm")
            .map_err(|e| format!("a state directory on tmpfs (/dev/shm): {e}")),
        StateOn::Disk => {
            tempfile::tempdir().map_err(|e| format!("a state directory under TMPDIR: {e}"))
        }
    }
}

/// One cold scan (a fresh simulated host, nothing cached): of the GPUs, what the agent's
/// start does once to pick them (`full`: of every function, what it did before).
fn cold_scan(root: &std::path::Path, full: bool) -> Result<Duration, String> {
    use vm_device::inventory::HostInventory;
    let sim = SimHost::from_fixture(root).map_err(|e| e.to_string())?;
    sim.set_logging(false);
    let t = Instant::now();
    let inv = if full {
        HostInventory::scan(&sim)
    } else {
        HostInventory::scan_gpus(&sim)
    };
    let d = t.elapsed();
    std::hint::black_box(inv);
    Ok(d)
}

/// The simulator learning what a kernel knows from boot (native drivers, id tables, reset
/// methods, DRM nodes of every function): done before each measured start, as a real host
/// has it before the agent runs; printed, not counted.
fn learn(root: &std::path::Path) -> Result<Duration, String> {
    let sim = SimHost::from_fixture(root).map_err(|e| e.to_string())?;
    sim.set_logging(false);
    let t = Instant::now();
    sim.learn_kernel();
    Ok(t.elapsed())
}

/// Applying the bench's configuration alone (16 journaled prepares), then giving it back.
fn setup_only(root: &std::path::Path, on: StateOn) -> Result<Duration, String> {
    let dir = state_tempdir(on)?;
    let sim = SimHost::from_fixture(root).map_err(|e| e.to_string())?;
    sim.set_logging(false);
    // What the kernel knows from boot, learnt before the clock starts (see `learn`).
    sim.learn_kernel();
    let cfg = Config {
        passthrough: PassthroughSel::Available,
        ..Config::default()
    };
    let t = Instant::now();
    let mut s =
        vm_device_agent::setup::Setup::apply(Arc::new(sim), &cfg, &dir.path().join("state"))
            .map_err(|e| e.to_string())?;
    let d = t.elapsed();
    s.give_back();
    Ok(d)
}

async fn one_run(
    root: &std::path::Path,
    allocs: usize,
    on: StateOn,
) -> Result<(Duration, Vec<Duration>, usize), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let state = state_tempdir(on)?;
    let sim = SimHost::from_fixture(root).map_err(|e| e.to_string())?;
    sim.set_logging(false);
    // What the kernel knows from boot, learnt before the clock starts (see `learn`).
    sim.learn_kernel();
    let host: Host = Arc::new(sim);
    let listener = tokio::net::UnixListener::bind(dir.path().join("kubelet.sock"))
        .map_err(|e| e.to_string())?;
    let (tx, mut regs) = mpsc::unbounded_channel();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(api::registration_server::RegistrationServer::new(Kubelet(
                tx,
            )))
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener)),
    );
    let cfg = Config {
        passthrough: PassthroughSel::Available,
        plugin_dir: dir.path().to_path_buf(),
        kubelet_socket: dir.path().join("kubelet.sock"),
        poll_interval_ms: 1000,
        ..Config::default()
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let t0 = Instant::now();
    let running = tokio::spawn(agent::run(host, cfg, state.path().join("state"), async {
        let _ = stopped.await;
    }));
    let resource = tokio::time::timeout(Duration::from_secs(120), regs.recv())
        .await
        .map_err(|_| "no registration within 120 s".to_string())?
        .ok_or("kubelet gone")?;
    let ch = connect_unix(&dir.path().join(socket_name(&resource)))
        .await
        .map_err(|e| e.to_string())?;
    let mut client = api::device_plugin_client::DevicePluginClient::new(ch);
    let mut stream = client
        .list_and_watch(api::Empty {})
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    let first = stream
        .message()
        .await
        .map_err(|e| e.to_string())?
        .ok_or("empty stream")?;
    let start = t0.elapsed();
    let id = first.devices.first().ok_or("no device offered")?.id.clone();
    let mut lat = Vec::with_capacity(allocs);
    for _ in 0..allocs {
        let t = Instant::now();
        client
            .allocate(api::AllocateRequest {
                container_requests: vec![api::ContainerAllocateRequest {
                    devices_ids: vec![id.clone()],
                }],
            })
            .await
            .map_err(|e| e.to_string())?;
        lat.push(t.elapsed());
    }
    let _ = stop.send(());
    drop(stream);
    running
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    server.abort();
    Ok((start, lat, first.devices.len()))
}

fn main() {
    let root = std::env::var_os("VM_BENCH_HOST")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench-host-1024")
        });
    if !root.join("sys").is_dir() {
        eprintln!(
            "agent bench: no generated host at {} (cargo xtask gen-bench-host {}; cargo xtask bench does it)",
            root.display(),
            root.display()
        );
        std::process::exit(2);
    }
    let runs = 7;
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let fail = |e: String| -> ! {
        eprintln!("agent bench: {e}");
        std::process::exit(1);
    };
    // The pieces first, each on a fresh host (the agent runs leak theirs by design).
    let setup_of = |on: StateOn| match (0..3)
        .map(|_| setup_only(&root, on))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(v) => median(v),
        Err(e) => fail(e),
    };
    let setup = setup_of(StateOn::Tmpfs);
    let setup_disk = setup_of(StateOn::Disk);
    let scan_of = |full: bool| match (0..3)
        .map(|_| cold_scan(&root, full))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(v) => median(v),
        Err(e) => fail(e),
    };
    let learnt = match (0..3).map(|_| learn(&root)).collect::<Result<Vec<_>, _>>() {
        Ok(v) => median(v),
        Err(e) => fail(e),
    };
    let scan = scan_of(false);
    let scan_full = scan_of(true);
    let mut devices = 0;
    // Median start and the Allocate latencies, state on tmpfs then on disk.
    let mut measure = |on: StateOn, allocs: usize| {
        let mut starts = Vec::new();
        let mut lats = Vec::new();
        for i in 0..=runs {
            match rt.block_on(one_run(&root, allocs, on)) {
                Ok((s, l, n)) => {
                    // The first run warms the page cache.
                    if i > 0 {
                        starts.push(s);
                        lats.extend(l);
                    }
                    devices = n;
                }
                Err(e) => fail(e),
            }
        }
        (median(starts), lats)
    };
    let (start, lats) = measure(StateOn::Tmpfs, 200);
    // One Allocate per start on disk: Allocate does not touch the state directory.
    let (start_disk, _) = measure(StateOn::Disk, 1);
    let alloc = median(lats);
    println!(
        "node agent on {} ({devices} GPUs offered for passthrough); median of {runs} starts, {} Allocates",
        root.display(),
        runs * 200
    );
    println!(
        "  agent start -> first ListAndWatch response   {:>10}  {:.2}x goal (100 ms)  [state on tmpfs, as /run/vm-device]",
        ms(start),
        start.as_secs_f64() / 0.100
    );
    println!(
        "    of which applying the config ({devices} journaled prepares) {:>10}",
        ms(setup)
    );
    println!(
        "      of which one cold scan of the GPUs         {:>10}  (of every function: {})",
        ms(scan),
        ms(scan_full)
    );
    println!(
        "  the same, state on disk (TMPDIR)             {:>10}  {:.2}x goal (100 ms)",
        ms(start_disk),
        start_disk.as_secs_f64() / 0.100
    );
    println!(
        "    of which applying the config               {:>10}  (journal fsyncs: the disk's flush latency)",
        ms(setup_disk)
    );
    println!(
        "  not counted: the simulator learning what the kernel knows from boot {:>10}",
        ms(learnt)
    );
    println!(
        "  Allocate (gRPC round trip)                   {:>10}  {:.3}x goal (10 ms)",
        ms(alloc),
        alloc.as_secs_f64() / 0.010
    );
}
