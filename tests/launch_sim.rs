//! Launches on the simulator with a fake QEMU (a shell script that records its argv and
//! waits): while "QEMU" runs, the GPU is on vfio-pci (or the mdev exists) and a journal names
//! the change for `gpu restore`; after QEMU exits — on its own, with an error, or stopped on
//! request — the host tree is byte-equal to the one before and no journal is left.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vm_device::gpu_manager::{Candidate, GpuMode, Target, UnifiedGpuManager};
use vm_device::gpu_mdev::UuidSource;
use vm_device::host::SimHost;
use vm_device::launch::{self, choose_accel, plan_launch, LaunchOptions, QemuBinary};
use vm_device_host::prelude::*;
use vm_device_sim::Snapshot;

const UUID: &str = "6c0f8d52-7e1a-4b9c-8d3e-2a5f1b7c9e04";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/hosts")
        .join(name)
}

/// A fake QEMU in `dir`: `--version` answers 10.0.2; a run writes its argv (one per line) to
/// `dir/argv`, waits for `dir/go` (or forever with `forever`), and exits with `exit_code`.
fn fake_qemu(dir: &Path, forever: bool, exit_code: i32) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let d = dir.display();
    let wait = if forever {
        "while :; do sleep 0.05; done".to_string()
    } else {
        format!("while [ ! -e {d}/go ]; do sleep 0.02; done")
    };
    let script = format!(
        "#!/bin/sh\ncase \"$1\" in --version) echo 'QEMU emulator version 10.0.2 (fake)'; exit 0;; esac\n\
         printf '%s\\n' \"$@\" > {d}/argv.tmp && mv {d}/argv.tmp {d}/argv\n{wait}\nexit {exit_code}\n"
    );
    let path = dir.join("qemu-system-x86_64");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn candidate(sim: &SimHost, mode: GpuMode, pick: impl Fn(&Target) -> bool) -> Candidate {
    let mut mgr = UnifiedGpuManager::with_host(Arc::new(sim.fork()));
    mgr.scan_backends().unwrap();
    mgr.candidates(mode)
        .unwrap()
        .iter()
        .find(|c| c.is_available() && pick(&c.target))
        .cloned()
        .unwrap_or_else(|| panic!("no available {mode} candidate of that kind"))
}

fn options(dir: &Path) -> LaunchOptions {
    LaunchOptions {
        kernel: "/boot/vmlinuz".into(),
        initrd: None,
        append: None,
        memory_bytes: 1 << 30,
        cpus: 1,
        x_vga: false,
        allow_boot_vga: false,
        state_dir: dir.join("state"),
        run_dir: dir.join("run"),
        backend_command: vec!["/bin/false".into()],
        mdev_uuid: UuidSource::Given(UUID.into()),
        tuning: Default::default(),
    }
}

fn journals(state: &Path) -> usize {
    std::fs::read_dir(state.join("journal"))
        .map(|r| r.count())
        .unwrap_or(0)
}

fn wait_for(path: &Path) {
    let start = Instant::now();
    while !path.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

enum End {
    /// The guest powers off: QEMU exits 0.
    PowerOff,
    /// QEMU dies with an error.
    Crash,
    /// SIGINT/SIGTERM: the stop flag is set while QEMU runs.
    Stop,
}

/// Launches `c` on `sim` with a fake QEMU, checks `during` while it runs, ends it as `end`
/// says, and returns the argv QEMU got and the outcome.
fn launch_and_end(
    sim: &SimHost,
    c: &Candidate,
    end: End,
    during: impl Fn(&SimHost, &Path),
) -> (Vec<String>, launch::LaunchOutcome) {
    let dir = tempfile::tempdir().unwrap();
    let (forever, code) = match end {
        End::PowerOff => (false, 0),
        End::Crash => (false, 1),
        End::Stop => (true, 0),
    };
    let qemu = QemuBinary::probe(&fake_qemu(dir.path(), forever, code)).unwrap();
    let opts = options(dir.path());
    let plan = plan_launch(sim, c, qemu, choose_accel(sim), &opts).unwrap();
    let stop = AtomicBool::new(false);
    let outcome = std::thread::scope(|s| {
        let h = s.spawn(|| launch::run(sim, &plan, &opts, &stop));
        wait_for(&dir.path().join("argv"));
        during(sim, &opts.state_dir);
        match end {
            End::Stop => stop.store(true, Ordering::SeqCst),
            _ => std::fs::write(dir.path().join("go"), b"").unwrap(),
        }
        h.join().unwrap().unwrap()
    });
    let argv = std::fs::read_to_string(dir.path().join("argv"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(journals(&opts.state_dir), 0, "a journal is left");
    assert!(!opts.run_dir.exists(), "the run directory is left");
    (argv, outcome)
}

fn driver(sim: &SimHost, addr: &str) -> Option<String> {
    sim.link_name(Path::new(&format!("/sys/bus/pci/devices/{addr}/driver")))
        .ok()
}

#[test]
fn passthrough_launch_gives_the_gpu_and_its_audio_back_however_qemu_ends() {
    for end in [End::PowerOff, End::Crash, End::Stop] {
        let sim = SimHost::from_fixture(fixture("intel-desktop-gvtg-dgpu")).unwrap();
        let before = sim.snapshot();
        let c = candidate(&sim, GpuMode::Passthrough, |t| {
            matches!(t, Target::Gpu { .. })
        });
        let expect_exit = match end {
            End::PowerOff => Some(0),
            End::Crash => Some(1),
            End::Stop => None,
        };
        let ended_by = match end {
            End::Stop => "stop",
            _ => "guest",
        };
        let (argv, outcome) = launch_and_end(&sim, &c, end, |sim, state| {
            assert_eq!(driver(sim, "0000:01:00.0").as_deref(), Some("vfio-pci"));
            assert_eq!(driver(sim, "0000:01:00.1").as_deref(), Some("vfio-pci"));
            assert_eq!(
                journals(state),
                1,
                "the prepare is journaled for `gpu restore`"
            );
        });
        assert!(argv
            .iter()
            .any(|a| a == "vfio-pci,host=0000:01:00.0,bus=vmgpu-rp0,addr=00.0,multifunction=on"));
        assert!(argv
            .iter()
            .any(|a| a == "vfio-pci,host=0000:01:00.1,bus=vmgpu-rp0,addr=00.1"));
        assert_eq!(outcome.qemu_exit, expect_exit, "{outcome:?}");
        assert_eq!(outcome.ended_by, ended_by);
        assert!(outcome.left.is_empty(), "{:?}", outcome.left);
        assert_eq!(driver(&sim, "0000:01:00.0").as_deref(), Some("nouveau"));
        assert_eq!(
            driver(&sim, "0000:01:00.1").as_deref(),
            Some("snd_hda_intel")
        );
        let d = common::snapshot_diff(&before, &sim.snapshot());
        assert!(d.is_empty(), "host differs after the launch: {d:#?}");
    }
}

#[test]
fn mdev_launch_removes_the_mdev_however_qemu_ends() {
    for end in [End::PowerOff, End::Crash, End::Stop] {
        let sim = SimHost::from_fixture(fixture("intel-desktop-gvtg-dgpu")).unwrap();
        let before = sim.snapshot();
        let c = candidate(&sim, GpuMode::Mdev, |t| {
            matches!(t, Target::MdevType { .. })
        });
        let dev = format!("/sys/bus/mdev/devices/{UUID}");
        let (argv, outcome) = launch_and_end(&sim, &c, end, |sim, state| {
            assert!(
                sim.exists(Path::new(&dev)),
                "the mdev exists while QEMU runs"
            );
            assert_eq!(
                journals(state),
                1,
                "the creation is journaled for `gpu restore`"
            );
        });
        // GVT-g's display is a dma-buf one: `display=on` needs OpenGL, which vm-cli's
        // `-display none` QEMU does not have (it would refuse to start)
        assert!(argv
            .iter()
            .any(|a| a == &format!("vfio-pci,sysfsdev={dev},display=off")));
        assert!(outcome.left.is_empty(), "{:?}", outcome.left);
        assert!(!sim.exists(Path::new(&dev)), "the mdev is removed");
        let d = common::snapshot_diff(&before, &sim.snapshot());
        assert!(d.is_empty(), "host differs after the launch: {d:#?}");
    }
}

#[test]
fn a_qemu_that_cannot_start_still_releases_the_gpu() {
    let sim = SimHost::from_fixture(fixture("intel-desktop-gvtg-dgpu")).unwrap();
    let before = sim.snapshot();
    let c = candidate(&sim, GpuMode::Passthrough, |t| {
        matches!(t, Target::Gpu { .. })
    });
    let dir = tempfile::tempdir().unwrap();
    let mut qemu = QemuBinary::probe(&fake_qemu(dir.path(), false, 0)).unwrap();
    qemu.path = dir.path().join("gone/qemu-system-x86_64");
    let opts = options(dir.path());
    let plan = plan_launch(&sim, &c, qemu, choose_accel(&sim), &opts).unwrap();
    let err = launch::run(&sim, &plan, &opts, &AtomicBool::new(false)).unwrap_err();
    assert!(err.to_string().contains("starting"), "{err}");
    assert_eq!(driver(&sim, "0000:01:00.0").as_deref(), Some("nouveau"));
    assert!(common::snapshot_diff(&before, &sim.snapshot()).is_empty());
    assert_eq!(journals(&opts.state_dir), 0);
}

#[test]
fn a_wgpu_backend_that_dies_before_listening_is_reported_and_nothing_is_left() {
    let sim = SimHost::from_fixture(fixture("no-gpu-server")).unwrap();
    let before = sim.snapshot();
    let c = candidate(&sim, GpuMode::Wgpu, |_| true);
    let dir = tempfile::tempdir().unwrap();
    let qemu = QemuBinary::probe(&fake_qemu(dir.path(), false, 0)).unwrap();
    let opts = options(dir.path());
    let plan = plan_launch(&sim, &c, qemu, choose_accel(&sim), &opts).unwrap();
    let err = launch::run(&sim, &plan, &opts, &AtomicBool::new(false)).unwrap_err();
    assert!(err.to_string().contains("before listening"), "{err}");
    assert!(!dir.path().join("argv").exists(), "QEMU must not start");
    assert_eq!(sim.snapshot(), before);
}

/// What `vm-cli gpu restore` does after `kill -9` of a launching vm-cli, tried while the VM
/// runs: with the launcher alive (its lock held) restore leaves the journal alone; on a copy
/// of the host at that moment, with the journal alone in a state directory nobody locks (as
/// after the launcher died), restore puts the host back as it was before the launch.
fn restore_after_kill(sim: &SimHost, state: &Path, before: &Snapshot) {
    use vm_device::plan::{restore_dead, RestoreOutcome};
    let live = restore_dead(sim, state);
    assert!(
        live.outcomes
            .iter()
            .all(|o| matches!(o, RestoreOutcome::Skipped { .. })),
        "restore must leave a live launcher's journal: {:?}",
        live.outcomes
    );
    assert_eq!(journals(state), 1);
    let dead = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dead.path().join("journal")).unwrap();
    for e in std::fs::read_dir(state.join("journal")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dead.path().join("journal").join(e.file_name())).unwrap();
    }
    let after_kill = sim.fork();
    let r = restore_dead(&after_kill, dead.path());
    assert!(
        matches!(r.outcomes.as_slice(), [RestoreOutcome::Restored { .. }]),
        "{:?}",
        r.outcomes
    );
    assert!(r.complete(), "{:?}", r.outcomes);
    let d = common::snapshot_diff(before, &after_kill.snapshot());
    assert!(d.is_empty(), "host differs after restore: {d:#?}");
    assert_eq!(journals(dead.path()), 0, "restore deletes the journal");
}

#[test]
fn gpu_restore_undoes_a_launch_whose_vm_cli_was_killed() {
    for (mode, fx) in [
        (GpuMode::Passthrough, "intel-desktop-gvtg-dgpu"),
        (GpuMode::Mdev, "intel-desktop-gvtg-dgpu"),
        (GpuMode::Mdev, "bmc-datacenter-nvidia-vgpu"),
    ] {
        let sim = SimHost::from_fixture(fixture(fx)).unwrap();
        let before = sim.snapshot();
        let c = candidate(&sim, mode, |t| {
            matches!(t, Target::Gpu { .. } | Target::MdevType { .. })
        });
        let (_, outcome) = launch_and_end(&sim, &c, End::PowerOff, |sim, state| {
            assert_ne!(sim.snapshot(), before, "{fx}: the launch changed nothing");
            restore_after_kill(sim, state, &before);
        });
        assert!(outcome.left.is_empty(), "{fx}: {:?}", outcome.left);
        assert!(common::snapshot_diff(&before, &sim.snapshot()).is_empty());
    }
}

/// A script at `path` (mode 0755).
fn script(path: &Path, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, body).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.to_path_buf()
}

/// The guest powers off: QEMU closes the backend's socket, the backend exits 0 at once, and
/// QEMU exits 0 a moment later. The backend being reaped first is no failure: the VM was
/// ended by the guest (issue 12: one `cargo xtask e2e` run in three exited 1).
#[test]
fn a_backend_that_ends_cleanly_before_qemu_exits_is_a_guest_power_off() {
    let sim = SimHost::from_fixture(fixture("no-gpu-server")).unwrap();
    let c = candidate(&sim, GpuMode::Wgpu, |_| true);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let qemu = script(
        &dir.path().join("qemu-system-x86_64"),
        &format!(
            "#!/bin/sh\ncase \"$1\" in --version) echo 'QEMU emulator version 10.0.2 (fake)'; exit 0;; esac\n\
             touch {d}/argv\nwhile [ ! -e {d}/go ]; do sleep 0.02; done\nsleep 0.5\nexit 0\n"
        ),
    );
    // The backend: listens (creates the socket path), ends as soon as "QEMU disconnects".
    let backend = script(
        &dir.path().join("backend"),
        &format!(
            "#!/bin/sh\nwhile [ \"$1\" != --socket ]; do shift; done\ntouch \"$2\"\n\
             while [ ! -e {d}/go ]; do sleep 0.02; done\nexit 0\n"
        ),
    );
    let qemu = QemuBinary::probe(&qemu).unwrap();
    let mut opts = options(dir.path());
    opts.backend_command = vec![backend.into_os_string()];
    let plan = plan_launch(&sim, &c, qemu, choose_accel(&sim), &opts).unwrap();
    let stop = AtomicBool::new(false);
    let outcome = std::thread::scope(|s| {
        let h = s.spawn(|| launch::run(&sim, &plan, &opts, &stop));
        wait_for(&dir.path().join("argv"));
        std::fs::write(dir.path().join("go"), b"").unwrap();
        h.join().unwrap().unwrap()
    });
    assert_eq!(outcome.ended_by, "guest", "{outcome:?}");
    assert_eq!(outcome.qemu_exit, Some(0), "{outcome:?}");
    assert!(outcome.clean(), "{outcome:?}");
}

/// A QEMU that dies by SIGABRT is a failure, not a guest power-off.
#[test]
fn a_qemu_killed_by_a_signal_is_a_failure() {
    let sim = SimHost::from_fixture(fixture("intel-desktop-gvtg-dgpu")).unwrap();
    let before = sim.snapshot();
    let c = candidate(&sim, GpuMode::Passthrough, |t| {
        matches!(t, Target::Gpu { .. })
    });
    let dir = tempfile::tempdir().unwrap();
    let qemu = script(
        &dir.path().join("qemu-system-x86_64"),
        "#!/bin/sh\ncase \"$1\" in --version) echo 'QEMU emulator version 10.0.2 (fake)'; exit 0;; esac\n\
         kill -ABRT $$\nsleep 5\n",
    );
    let qemu = QemuBinary::probe(&qemu).unwrap();
    let opts = options(dir.path());
    let plan = plan_launch(&sim, &c, qemu, choose_accel(&sim), &opts).unwrap();
    let outcome = launch::run(&sim, &plan, &opts, &AtomicBool::new(false)).unwrap();
    assert_eq!(outcome.ended_by, "signal", "{outcome:?}");
    assert!(outcome.qemu_status.contains("SIGABRT"), "{outcome:?}");
    assert!(!outcome.clean(), "{outcome:?}");
    assert!(common::snapshot_diff(&before, &sim.snapshot()).is_empty());
}
