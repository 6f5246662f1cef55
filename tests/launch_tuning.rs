//! Issue 17's tuning on the simulator (`fixtures/hosts/numa-2node-gpus`: a GPU on each of two
//! NUMA nodes, 2 MiB pages free on node 0 only, node 1's pools limited by fragmentation):
//! the node, cores and hugepages a plan picks, the QEMU memory backend, refusals before any
//! host change, the reservation's journaled undo at every fault point and after `kill -9`,
//! vCPU pinning from a QMP `query-cpus-fast`, and the simulator's `nr_hugepages` reaction.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vm_device::gpu_manager::{Candidate, GpuMode, Target, UnifiedGpuManager};
use vm_device::gpu_mdev::UuidSource;
use vm_device::host::SimHost;
use vm_device::launch::{
    self, choose_accel, plan_launch, LaunchError, LaunchOptions, NumaChoice, PageSize, QemuBinary,
    TuningError, TuningOptions,
};
use vm_device_host::prelude::*;
use vm_device_sim::faults::{Fault, FaultPlan};

const NUMA: &str = "numa-2node-gpus";
const NODE1_2M: &str = "/sys/devices/system/node/node1/hugepages/hugepages-2048kB";
const NODE0_2M: &str = "/sys/devices/system/node/node0/hugepages/hugepages-2048kB";
const T4: &str = "0000:af:00.0";
const W6800: &str = "0000:3b:00.0";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/hosts")
        .join(name)
}

fn read(sim: &SimHost, p: &str) -> String {
    sim.read_attr(Path::new(p)).unwrap().trim().to_string()
}

/// A fake QEMU: `--version` answers 10.0.2; a run writes its argv to `dir/argv` and waits
/// for `dir/go`, then exits 0.
fn fake_qemu(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let d = dir.display();
    let script = format!(
        "#!/bin/sh\ncase \"$1\" in --version) echo 'QEMU emulator version 10.0.2 (fake)'; exit 0;; esac\n\
         printf '%s\\n' \"$@\" > {d}/argv.tmp && mv {d}/argv.tmp {d}/argv\n\
         while [ ! -e {d}/go ]; do sleep 0.02; done\nexit 0\n"
    );
    let path = dir.join("qemu-system-x86_64");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Whether a candidate uses `device`: the GPU, the mdev parent, or (wgpu) the adapter of
/// that GPU's vendor.
fn on_device(t: &Target, device: &str) -> bool {
    match t {
        Target::Gpu { address, .. } => address.to_string() == device,
        Target::MdevType { parent, .. } => parent == device,
        Target::Adapter { info } => device == W6800 && info.vendor == 0x1002,
        _ => false,
    }
}

fn candidate(sim: &SimHost, mode: GpuMode, device: &str) -> Candidate {
    let mut mgr = UnifiedGpuManager::with_host(Arc::new(sim.fork()));
    mgr.scan_backends().unwrap();
    mgr.candidates(mode)
        .unwrap()
        .iter()
        .find(|c| c.is_available() && on_device(&c.target, device))
        .cloned()
        .unwrap_or_else(|| panic!("no available {mode} candidate on {device}"))
}

fn options(dir: &Path, memory: u64, tuning: TuningOptions) -> LaunchOptions {
    LaunchOptions {
        kernel: "/boot/vmlinuz".into(),
        initrd: None,
        append: None,
        memory_bytes: memory,
        cpus: 2,
        x_vga: false,
        allow_boot_vga: false,
        state_dir: dir.join("state"),
        run_dir: dir.join("run"),
        backend_command: vec!["/bin/false".into()],
        mdev_uuid: UuidSource::Given("6c0f8d52-7e1a-4b9c-8d3e-2a5f1b7c9e04".into()),
        tuning,
    }
}

fn hugepages(size: PageSize, reserve: bool) -> TuningOptions {
    TuningOptions {
        hugepages: Some(size),
        reserve_hugepages: reserve,
        ..Default::default()
    }
}

fn qemu(dir: &Path) -> QemuBinary {
    let path = fake_qemu(dir);
    // Another test thread may fork while the script is still open for writing here, and
    // its child holds the fd until it execs: running the script then fails with ETXTBSY.
    let mut tries = 0;
    loop {
        match QemuBinary::probe(&path) {
            Ok(q) => return q,
            Err(e) if tries < 100 => {
                tries += 1;
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("{e}"),
        }
    }
}

fn backend_arg(argv: &[String]) -> Option<&String> {
    argv.iter().find(|a| a.starts_with("memory-backend-memfd"))
}

#[test]
fn auto_numa_follows_the_gpu_the_mdev_parent_and_the_adapter() {
    let sim = SimHost::from_fixture(fixture(NUMA)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let gib2 = 2 << 30;
    for (mode, dev, node, cores, others) in [
        (GpuMode::Passthrough, T4, 1, "8-15", "0-7"),
        (GpuMode::Passthrough, W6800, 0, "0-7", "8-15"),
        (GpuMode::Mdev, T4, 1, "8-15", "0-7"),
        (GpuMode::Wgpu, W6800, 0, "0-7", "8-15"),
    ] {
        let c = candidate(&sim, mode, dev);
        let opts = options(dir.path(), gib2, TuningOptions::default());
        let plan = plan_launch(&sim, &c, qemu(dir.path()), choose_accel(&sim), &opts).unwrap();
        let t = &plan.tuning;
        assert_eq!(t.node, Some(node), "{mode} {dev}: {t:?}");
        let list = |v: &[u32]| launch::tuning::cpu_list_text(v);
        assert_eq!(list(&t.vcpu_cores), cores, "{mode} {dev}");
        assert_eq!(list(&t.other_cores), others, "{mode} {dev}");
        let be = backend_arg(&plan.argv).expect("a memory backend");
        assert!(
            be.ends_with(&format!(",host-nodes={node},policy=bind")),
            "{be}"
        );
        // The wgpu rung's backend maps guest RAM: it stays shared.
        assert_eq!(be.contains("share=on"), mode == GpuMode::Wgpu, "{be}");
        assert!(plan
            .argv
            .windows(2)
            .any(|w| w[0] == "-machine" && w[1] == "q35,memory-backend=mem"));
        assert!(plan.text().contains(&format!("bound to node {node}")));
    }
}

#[test]
fn numa_off_or_one_node_changes_nothing_in_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    // One node (no node directory in the fixture): today's command line.
    let sim = SimHost::from_fixture(fixture("intel-desktop-gvtg-dgpu")).unwrap();
    let c = candidate(&sim, GpuMode::Passthrough, "0000:01:00.0");
    let opts = options(dir.path(), 2 << 30, TuningOptions::default());
    let plan = plan_launch(&sim, &c, qemu(dir.path()), choose_accel(&sim), &opts).unwrap();
    assert!(plan.tuning.is_empty(), "{:?}", plan.tuning);
    assert!(backend_arg(&plan.argv).is_none(), "{:?}", plan.argv);
    assert!(!plan.text().contains("Tuning:"));
    // Two nodes, --numa off.
    let sim = SimHost::from_fixture(fixture(NUMA)).unwrap();
    let c = candidate(&sim, GpuMode::Passthrough, T4);
    let opts = options(
        dir.path(),
        2 << 30,
        TuningOptions {
            numa: NumaChoice::Off,
            ..Default::default()
        },
    );
    let plan = plan_launch(&sim, &c, qemu(dir.path()), choose_accel(&sim), &opts).unwrap();
    assert!(plan.tuning.is_empty(), "{:?}", plan.tuning);
    assert!(backend_arg(&plan.argv).is_none());
}

#[test]
fn hugepages_from_the_nodes_pool_or_a_refusal_naming_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimHost::from_fixture(fixture(NUMA)).unwrap();
    let before = sim.snapshot();
    // Node 0 has 1024 free 2 MiB pages: 2 GiB fits, nothing to reserve.
    let c0 = candidate(&sim, GpuMode::Passthrough, W6800);
    let opts = options(dir.path(), 2 << 30, hugepages(PageSize::M2, false));
    let plan = plan_launch(&sim, &c0, qemu(dir.path()), choose_accel(&sim), &opts).unwrap();
    let h = plan.tuning.hugepages.as_ref().unwrap();
    assert_eq!((h.pages, h.free, h.node), (1024, 1024, Some(0)));
    assert!(h.reserve.is_none());
    assert_eq!(
        backend_arg(&plan.argv).unwrap(),
        "memory-backend-memfd,id=mem,size=2048M,hugetlb=on,hugetlbsize=2M,prealloc=on,host-nodes=0,policy=bind"
    );
    // Node 1 has none: refused, with the exact command, before any host change.
    let c1 = candidate(&sim, GpuMode::Passthrough, T4);
    let err = plan_launch(&sim, &c1, qemu(dir.path()), choose_accel(&sim), &opts).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("`echo 1024 | sudo tee {NODE1_2M}/nr_hugepages`")),
        "{msg}"
    );
    assert!(msg.contains("--reserve-hugepages"), "{msg}");
    assert_eq!(err.exit_code(), 3);
    // 1 GiB pages: 4 free on node 0, so 8 GiB is refused too.
    let opts8 = options(dir.path(), 8 << 30, hugepages(PageSize::G1, false));
    let err = plan_launch(&sim, &c0, qemu(dir.path()), choose_accel(&sim), &opts8).unwrap_err();
    assert!(err.to_string().contains("has 4 free 1G hugepages"), "{err}");
    assert_eq!(sim.snapshot(), before, "planning changed the host");
}

#[test]
fn bad_tuning_input_is_a_clear_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimHost::from_fixture(fixture(NUMA)).unwrap();
    let c = candidate(&sim, GpuMode::Passthrough, T4);
    for (memory, tuning, want) in [
        (
            3 << 20,
            hugepages(PageSize::M2, false),
            "not a whole number of 2M hugepages",
        ),
        (
            2 << 30,
            TuningOptions {
                numa: NumaChoice::Node(5),
                ..Default::default()
            },
            "there is no node 5",
        ),
        (
            2 << 30,
            TuningOptions {
                cpu_pin: Some(vec![3, 99]),
                ..Default::default()
            },
            "CPU(s) 99 are not online",
        ),
        (
            2 << 30,
            TuningOptions {
                reserve_hugepages: true,
                ..Default::default()
            },
            "needs --hugepages",
        ),
    ] {
        let opts = options(dir.path(), memory, tuning);
        let err = plan_launch(&sim, &c, qemu(dir.path()), choose_accel(&sim), &opts).unwrap_err();
        assert!(
            matches!(err, LaunchError::Tuning(TuningError::Invalid(_))),
            "{err:?}"
        );
        assert!(err.to_string().contains(want), "{err}");
        assert_eq!(err.exit_code(), 2);
    }
    // A host without a 1G pool says so.
    let sim = SimHost::from_fixture(fixture("intel-desktop-gvtg-dgpu")).unwrap();
    let c = candidate(&sim, GpuMode::Passthrough, "0000:01:00.0");
    let opts = options(dir.path(), 2 << 30, hugepages(PageSize::G1, true));
    let err = plan_launch(&sim, &c, qemu(dir.path()), choose_accel(&sim), &opts).unwrap_err();
    assert!(err.to_string().contains("no 1G hugepage pool"), "{err}");
}

#[test]
fn cpu_pin_by_hand_gives_one_cpu_per_vcpu() {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimHost::from_fixture(fixture(NUMA)).unwrap();
    let c = candidate(&sim, GpuMode::Passthrough, T4);
    let opts = options(
        dir.path(),
        2 << 30,
        TuningOptions {
            cpu_pin: Some(vec![9, 12]),
            ..Default::default()
        },
    );
    let plan = plan_launch(&sim, &c, qemu(dir.path()), choose_accel(&sim), &opts).unwrap();
    assert!(plan.tuning.one_to_one);
    assert_eq!(plan.tuning.cores_for_vcpu(0), vec![9]);
    assert_eq!(plan.tuning.cores_for_vcpu(1), vec![12]);
    assert_eq!(
        plan.tuning.node,
        Some(1),
        "--cpu-pin keeps the memory binding"
    );
}

#[test]
fn the_simulator_grows_a_pool_only_as_far_as_fragmentation_allows() {
    let sim = SimHost::from_fixture(fixture(NUMA)).unwrap();
    let nr = format!("{NODE1_2M}/nr_hugepages");
    sim.write_attr(Path::new(&nr), b"1000").unwrap();
    assert_eq!(read(&sim, &nr), "1000");
    assert_eq!(read(&sim, &format!("{NODE1_2M}/free_hugepages")), "1000");
    assert_eq!(
        read(
            &sim,
            "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"
        ),
        "2024",
        "the host-wide count is the nodes' sum"
    );
    let meminfo = read(&sim, "/sys/devices/system/node/node1/meminfo");
    assert!(
        meminfo
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["Node", "1", "HugePages_Free:", "1000"]),
        "{meminfo}"
    );
    // Past the fixture's limit (1536) the kernel gets fewer; the write still succeeds.
    sim.write_attr(Path::new(&nr), b"4000").unwrap();
    assert_eq!(read(&sim, &nr), "1536");
    assert!(sim
        .dmesg()
        .iter()
        .any(|l| l.contains("Only allocated 1536")));
    sim.write_attr(Path::new(&nr), b"0").unwrap();
    assert_eq!(read(&sim, &nr), "0");
    let e = sim.write_attr(Path::new(&nr), b"many").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(22));
    // A host-wide write spreads over the nodes round-robin, node 1 stopping at its limit:
    // 3976 more pages, 1536 on each node, then the other 904 on node 0.
    sim.write_attr(
        Path::new("/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"),
        b"5000",
    )
    .unwrap();
    assert_eq!(read(&sim, &nr), "1536");
    assert_eq!(read(&sim, &format!("{NODE0_2M}/nr_hugepages")), "3464");
    assert_eq!(
        read(
            &sim,
            "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"
        ),
        "5000"
    );
}

fn journals(state: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(state.join("journal"))
        .map(|r| {
            r.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Serves QMP on `socket` as QEMU would: greeting, `qmp_capabilities`, then
/// `query-cpus-fast` with vCPU threads 7001, 7002.
fn fake_qmp(socket: &Path) -> std::thread::JoinHandle<()> {
    std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
    let l = UnixListener::bind(socket).unwrap();
    std::thread::spawn(move || {
        let Ok((mut s, _)) = l.accept() else { return };
        let _ = s.write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\n");
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut line = String::new();
        while r.read_line(&mut line).unwrap_or(0) > 0 {
            let reply = if line.contains("query-cpus-fast") {
                "{\"return\": [{\"cpu-index\": 0, \"thread-id\": 7001}, {\"cpu-index\": 1, \"thread-id\": 7002}]}"
            } else {
                "{\"return\": {}}"
            };
            let _ = s.write_all(format!("{reply}\n").as_bytes());
            line.clear();
        }
    })
}

/// Runs a launch of `c` with `opts` on `sim`; `during` sees the host while "QEMU" runs.
fn run_launch(
    sim: &SimHost,
    c: &Candidate,
    dir: &Path,
    opts: &LaunchOptions,
    during: impl Fn(&SimHost),
) -> Result<launch::LaunchOutcome, LaunchError> {
    let plan = plan_launch(sim, c, qemu(dir), choose_accel(sim), opts)?;
    let qmp = fake_qmp(&opts.run_dir.join("qmp.sock"));
    let stop = AtomicBool::new(false);
    let r = std::thread::scope(|s| {
        let h = s.spawn(|| launch::run(sim, &plan, opts, &stop));
        let start = Instant::now();
        while !dir.join("argv").exists() && !h.is_finished() {
            assert!(start.elapsed() < Duration::from_secs(20));
            std::thread::sleep(Duration::from_millis(10));
        }
        if dir.join("argv").exists() {
            during(sim);
            std::fs::write(dir.join("go"), b"").unwrap();
        }
        h.join().unwrap()
    });
    // Unblock the QMP server if nobody connected.
    let _ = std::os::unix::net::UnixStream::connect(opts.run_dir.join("qmp.sock"));
    drop(qmp);
    r
}

#[test]
fn a_launch_reserves_pins_and_gives_everything_back() {
    let sim = SimHost::from_fixture(fixture(NUMA)).unwrap();
    let before = sim.snapshot();
    let c = candidate(&sim, GpuMode::Passthrough, T4);
    let dir = tempfile::tempdir().unwrap();
    let opts = options(dir.path(), 2 << 30, hugepages(PageSize::M2, true));
    let outcome = run_launch(&sim, &c, dir.path(), &opts, |sim| {
        assert_eq!(read(sim, &format!("{NODE1_2M}/nr_hugepages")), "1024");
        assert_eq!(
            journals(&opts.state_dir),
            vec![
                "group-16.json".to_string(),
                "hugepages-node1-hugepages-2048kB.json".to_string()
            ]
        );
    })
    .unwrap();
    assert!(outcome.left.is_empty(), "{:?}", outcome.left);
    let aff = sim.affinities();
    let node1: Vec<u32> = (8..16).collect();
    assert_eq!(aff.get(&7001), Some(&node1));
    assert_eq!(aff.get(&7002), Some(&node1));
    let vcpus: Vec<_> = outcome.pinned.iter().filter(|p| p.vcpu.is_some()).collect();
    assert_eq!(vcpus.len(), 2, "{:?}", outcome.pinned);
    // QEMU's main thread (the process itself) is off the vCPUs' cores.
    assert!(outcome
        .pinned
        .iter()
        .any(|p| p.vcpu.is_none() && p.cpus == (0..8).collect::<Vec<u32>>()));
    let argv = std::fs::read_to_string(dir.path().join("argv")).unwrap();
    assert!(argv.contains("hugetlb=on,hugetlbsize=2M,prealloc=on,host-nodes=1,policy=bind"));
    assert_eq!(read(&sim, &format!("{NODE1_2M}/nr_hugepages")), "0");
    assert!(journals(&opts.state_dir).is_empty());
    let d = common::snapshot_diff(&before, &sim.snapshot());
    assert!(d.is_empty(), "host differs after the launch: {d:#?}");
}

#[test]
fn fewer_pages_than_asked_is_said_and_undone() {
    let sim = SimHost::from_fixture(fixture(NUMA)).unwrap();
    let before = sim.snapshot();
    let c = candidate(&sim, GpuMode::Passthrough, T4);
    let dir = tempfile::tempdir().unwrap();
    // 4 GiB = 2048 pages; node 1 can reach 1536.
    let opts = options(dir.path(), 4 << 30, hugepages(PageSize::M2, true));
    let err = run_launch(&sim, &c, dir.path(), &opts, |_| {
        panic!("QEMU must not start")
    })
    .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("fewer hugepages than asked"), "{msg}");
    assert!(msg.contains("1536"), "{msg}");
    assert!(msg.contains("back as it was"), "{msg}");
    assert_eq!(err.exit_code(), 4);
    assert!(journals(&opts.state_dir).is_empty());
    assert!(common::snapshot_diff(&before, &sim.snapshot()).is_empty());
}

/// Every write of a reserving passthrough launch (the reservation, the prepare, and their
/// undos) fails once in turn: the launch either fails with everything undone, or leaves a
/// journal that `gpu restore` finishes; either way the host ends as it was.
#[test]
fn the_reservation_is_undone_at_every_fault_point() {
    let probe = SimHost::from_fixture(fixture(NUMA)).unwrap();
    let c = candidate(&probe, GpuMode::Passthrough, T4);
    let dir = tempfile::tempdir().unwrap();
    let opts = options(dir.path(), 2 << 30, hugepages(PageSize::M2, true));
    run_launch(&probe, &c, dir.path(), &opts, |_| {}).unwrap();
    let writes = probe
        .ops()
        .iter()
        .filter(|o| matches!(o, vm_device_sim::Op::Write(..)))
        .count();
    assert!(writes >= 4, "{writes}");
    for n in 1..=writes as u32 {
        for fault in [
            Fault::write("").nth(n).errno(5),
            Fault::write("").nth(n).hang(),
        ] {
            let sim = SimHost::from_fixture(fixture(NUMA)).unwrap();
            let before = sim.snapshot();
            sim.set_faults(FaultPlan::new().rule(fault.clone()));
            let dir = tempfile::tempdir().unwrap();
            let opts = options(dir.path(), 2 << 30, hugepages(PageSize::M2, true));
            let r = run_launch(&sim, &c, dir.path(), &opts, |_| {});
            let left = match &r {
                Ok(o) => !o.left.is_empty(),
                Err(e) => e.exit_code() == 5,
            };
            if left {
                assert!(
                    !journals(&opts.state_dir).is_empty(),
                    "write {n} {fault:?}: changes left and no journal for restore"
                );
                let healed = sim.fork();
                let rep = vm_device::plan::restore_dead(&healed, &opts.state_dir);
                assert!(rep.complete(), "write {n} {fault:?}: {:?}", rep.outcomes);
                let d = common::snapshot_diff(&before, &healed.snapshot());
                assert!(d.is_empty(), "write {n} {fault:?}: after restore {d:#?}");
            } else {
                assert!(
                    journals(&opts.state_dir).is_empty(),
                    "write {n} {fault:?}: {r:?}"
                );
                let d = common::snapshot_diff(&before, &sim.snapshot());
                assert!(d.is_empty(), "write {n} {fault:?}: {r:?}: {d:#?}");
            }
        }
    }
}

/// `kill -9` of vm-cli while the VM runs: restore (on the journals, nobody holding their
/// locks) gives the pages and the GPU back.
#[test]
fn restore_after_kill_gives_the_pages_back() {
    use vm_device::plan::{restore_dead, RestoreOutcome};
    let sim = SimHost::from_fixture(fixture(NUMA)).unwrap();
    let before = sim.snapshot();
    let c = candidate(&sim, GpuMode::Passthrough, T4);
    let dir = tempfile::tempdir().unwrap();
    let opts = options(dir.path(), 2 << 30, hugepages(PageSize::M2, true));
    run_launch(&sim, &c, dir.path(), &opts, |sim| {
        // The launcher is alive: restore leaves its journals alone.
        let live = restore_dead(sim, &opts.state_dir);
        assert!(live
            .outcomes
            .iter()
            .all(|o| matches!(o, RestoreOutcome::Skipped { .. })));
        let dead = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dead.path().join("journal")).unwrap();
        for e in std::fs::read_dir(opts.state_dir.join("journal")).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), dead.path().join("journal").join(e.file_name())).unwrap();
        }
        let after_kill = sim.fork();
        let r = restore_dead(&after_kill, dead.path());
        assert!(r.complete(), "{:?}", r.outcomes);
        assert_eq!(r.outcomes.len(), 2, "{:?}", r.outcomes);
        assert_eq!(read(&after_kill, &format!("{NODE1_2M}/nr_hugepages")), "0");
        let d = common::snapshot_diff(&before, &after_kill.snapshot());
        assert!(d.is_empty(), "host differs after restore: {d:#?}");
    })
    .unwrap();
}

/// A reservation journal left by a killed vm-cli is never overwritten: the next launch that
/// would reserve on that pool is refused until `gpu restore` ran.
#[test]
fn a_left_reservation_journal_blocks_a_new_reservation_until_restore() {
    let sim = SimHost::from_fixture(fixture(NUMA)).unwrap();
    let c = candidate(&sim, GpuMode::Passthrough, T4);
    let dir = tempfile::tempdir().unwrap();
    let opts = options(dir.path(), 2 << 30, hugepages(PageSize::M2, true));
    let left = tempfile::tempdir().unwrap();
    let key = "hugepages-node1-hugepages-2048kB.json";
    run_launch(&sim, &c, dir.path(), &opts, |_| {
        std::fs::create_dir_all(left.path().join("journal")).unwrap();
        std::fs::copy(
            opts.state_dir.join("journal").join(key),
            left.path().join("journal").join(key),
        )
        .unwrap();
    })
    .unwrap();
    // The host as the killed launcher left it: its pages still reserved.
    sim.write_attr(Path::new(&format!("{NODE1_2M}/nr_hugepages")), b"1024")
        .unwrap();
    let dir2 = tempfile::tempdir().unwrap();
    let opts2 = LaunchOptions {
        state_dir: left.path().to_path_buf(),
        ..options(dir2.path(), 4 << 30, hugepages(PageSize::M2, true))
    };
    let err = run_launch(&sim, &c, dir2.path(), &opts2, |_| {
        panic!("QEMU must not start")
    })
    .unwrap_err();
    assert!(err.to_string().contains("vm-cli gpu restore"), "{err}");
    assert_eq!(err.exit_code(), 3);
    let r = vm_device::plan::restore_dead(&sim, left.path());
    assert!(r.complete(), "{:?}", r.outcomes);
    assert_eq!(read(&sim, &format!("{NODE1_2M}/nr_hugepages")), "0");
}

#[test]
fn a_failed_pin_stops_the_vm_and_gives_everything_back() {
    let sim = SimHost::from_fixture(fixture(NUMA)).unwrap();
    let before = sim.snapshot();
    sim.set_faults(FaultPlan::new().rule(Fault::op("sched_setaffinity", "/proc/7002").errno(3)));
    let c = candidate(&sim, GpuMode::Passthrough, T4);
    let dir = tempfile::tempdir().unwrap();
    let opts = options(dir.path(), 2 << 30, hugepages(PageSize::M2, true));
    let plan = plan_launch(&sim, &c, qemu(dir.path()), choose_accel(&sim), &opts).unwrap();
    let _qmp = fake_qmp(&opts.run_dir.join("qmp.sock"));
    let err = launch::run(&sim, &plan, &opts, &AtomicBool::new(false)).unwrap_err();
    assert!(err.to_string().contains("pinning thread 7002"), "{err}");
    assert!(journals(&opts.state_dir).is_empty());
    assert!(common::snapshot_diff(&before, &sim.snapshot()).is_empty());
}

fn vm_cli(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vm-cli"))
        .arg("--host-root")
        .arg(fixture(NUMA))
        .args(args)
        .env_remove("WGPU_BACKEND")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_cli_shows_node_cores_and_hugepages_and_refuses_before_changing_anything() {
    let base = [
        "--kernel",
        "vmlinuz",
        "--gpu-mode",
        "passthrough",
        "--gpu-device",
        T4,
        "--hugepages",
        "2M",
        "--dry-run",
    ];
    let (code, _, err) = vm_cli(&base);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains(&format!("echo 1024 | sudo tee {NODE1_2M}/nr_hugepages")),
        "{err}"
    );
    let mut args = base.to_vec();
    args.push("--reserve-hugepages");
    let (code, out, err) = vm_cli(&args);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("NUMA: guest memory bound to node 1"), "{out}");
    assert!(out.contains("vCPUs: pinned to CPUs 8-15"), "{out}");
    assert!(
        out.contains(&format!("undo: echo 0 > {NODE1_2M}/nr_hugepages")),
        "{out}"
    );
    args.push("--json");
    let (code, out, _) = vm_cli(&args);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["tuning"]["node"], 1);
    assert_eq!(v["tuning"]["vcpu_cores"][0], 8);
    assert_eq!(v["tuning"]["hugepages"]["size"], "2M");
    assert_eq!(v["tuning"]["hugepages"]["pages"], 1024);
    assert_eq!(
        v["tuning"]["hugepages"]["reserve"]["key"],
        "hugepages-node1-hugepages-2048kB"
    );
    for (bad, want) in [
        (vec!["--numa", "7"], "there is no node 7"),
        (vec!["--numa", "x"], "not a NUMA node"),
        (vec!["--cpu-pin", "3-1"], "runs backwards"),
        (vec!["--hugepages", "4K"], "2M and 1G"),
        (vec!["--reserve-hugepages"], "--hugepages"),
    ] {
        let mut a = vec!["--kernel", "vmlinuz", "--gpu-device", T4, "--dry-run"];
        a.extend(bad.iter().copied());
        let (code, _, err) = vm_cli(&a);
        assert_eq!(code, 2, "{bad:?}: {err}");
        assert!(err.contains(want), "{bad:?}: {err}");
    }
}

#[test]
fn doctor_reports_hugepages_numa_isolation_and_translated_iommu() {
    let doc = |mem: &str| {
        let (code, out, err) = vm_cli(&["gpu", "doctor", "--json", "--memory", mem]);
        assert!(code == 0 || code == 3, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["checks"].as_array().unwrap().clone()
    };
    let find = |checks: &[serde_json::Value], id: &str| {
        checks
            .iter()
            .find(|c| c["id"] == id)
            .unwrap_or_else(|| panic!("no check {id}"))
            .clone()
    };
    let c = doc("2G");
    let h = find(&c, "hugepages.free");
    assert_eq!(h["status"], "ok", "{h}");
    assert!(h["title"].as_str().unwrap().contains("2M on node 0"), "{h}");
    let n = find(&c, &format!("gpu.{T4}.numa"));
    assert_eq!(n["status"], "ok", "{n}");
    assert!(
        n["title"]
            .as_str()
            .unwrap()
            .contains("on node 1 (CPUs 8-15)"),
        "{n}"
    );
    let i = find(&c, "cpu.isolation");
    assert!(
        i["title"].as_str().unwrap().contains("--cpu-pin 14-15"),
        "{i}"
    );
    let k = find(&c, "iommu.kernel_params");
    assert_eq!(k["status"], "warn");
    assert!(
        k["evidence"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e.as_str().unwrap().contains("/type = DMA-FQ (translated")),
        "{k}"
    );
    // 64 GiB: no pool has that many free pages, and no node that much free memory.
    let c = doc("64G");
    let h = find(&c, "hugepages.free");
    assert_eq!(h["status"], "warn", "{h}");
    assert!(
        h["remedy"]
            .as_str()
            .unwrap()
            .contains("--reserve-hugepages"),
        "{h}"
    );
    let n = find(&c, &format!("gpu.{T4}.numa"));
    assert_eq!(n["status"], "warn", "{n}");
}
