//! `cargo xtask nested-test`: the hardware rungs reach a running guest. Debian's kernel boots
//! as **L1** under QEMU/TCG with `-cpu max` (TCG emulates AMD SVM with nested paging, so
//! `kvm_amd` loads and `/dev/kvm` appears), q35 with an emulated Intel IOMMU, a
//! `bochs-display` on its own root port (the passthrough target) and the kernel's mdev
//! samples. Inside L1 only the project's `vm-cli` does host work: it lists and diagnoses
//! the host, then starts **L2** (the same kernel, a busybox initramfs) under real KVM with
//! the bochs-display passed through, with an mdpy mdev (`display=on`) and with an mbochs
//! mdev; L2 paints a known pattern into its framebuffer, and every pixel is checked:
//! L0's QMP `screendump` of the bochs-display, a `screendump` of the mdpy display through
//! the QMP socket vm-cli opened, the mbochs framebuffer read from its BAR (`pmemsave`).
//! vm-cli is also killed with -9 while L2 runs, and `vm-cli gpu restore` must give
//! everything back. The trees vm-cli records at each step are replayed on the simulator
//! ([`differential`]), which must agree on every host change.
//!
//! The L2 QEMU is the host's own (Debian's `qemu-system-x86`), staged with its libraries and
//! firmware as an extracted package tree under `target/nested-lab/share/` and shared
//! read-only into L1 over virtio-9p; the artifacts come back over a second, writable 9p
//! share. The kernel and the mdev samples come from kernel-test's cache
//! (`target/kernel-lab/`). The recipe and its measurements: `docs/nested-lab.md`.
//!
//! The wgpu rung is not run inside L1 (L1 has no Vulkan); `cargo xtask e2e` covers it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::differential;
use super::e2e::{build_initramfs, qmp, read_ppm};
use super::initramfs::{parse_ldd, Extras, INIT_MODULES};
use super::scenarios::Scenario;
use super::{
    build_vm_cli, judge, lab, qemu, run_cmd, stamp, target_dir, utc_stamp, workspace_root, Accel,
    Opts, Outcome,
};

const USAGE: &str = "\
usage: cargo xtask nested-test [--scenario NAME]... [--timeout SECS] [--keep] [--no-install]
                               [--verbose] [--list]
  --scenario NAME  run only these scenarios (repeatable; default all)
  --timeout SECS   give up on L1 after SECS (default 720)
  --keep           keep target/nested-lab/run (initramfs, shares, artifacts)
  --no-install     never run apt-get (fail with the list of missing packages instead)
  --verbose        echo every scenario output line, not only verdicts
  --list           print the scenarios and exit";

/// L1's bochs-display, as L1 numbers it (root port `rp1`, bus 1).
const TARGET: &str = "0000:01:00.0";
/// A frame of pattern seed N starts N * SEED_KIB KiB into `stream.bin` (= `SEED_KIB` in
/// `guest/nested/l2-init.sh`).
const SEED_KIB: usize = 64;
/// `stream.bin`'s size: frames up to 4 MiB (1280x800 at 32 bpp) for seeds 0..=4.
const STREAM_KIB: usize = 4096 + 4 * SEED_KIB;
/// Modules L2 loads: bochs-drm for the passed-through bochs-display and mbochs, mdpy-fb.
const L2_MODULES: &[&str] = &["bochs", "mdpy-fb"];
/// The mdev types the scenarios launch.
const MDPY_TYPE: &str = "mdpy-xga";
const MBOCHS_TYPE: &str = "mbochs-small";

/// The scenarios, in run order.
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "nested-inventory",
        about: "vm-cli gpu list / gpu doctor in L1: bochs-display a passthrough candidate, mdev types, kvm.device ok, KVM_CREATE_VM ok",
        script: include_str!("guest/nested/scenarios/nested-inventory.sh"),
        expect: &[
            "ok kvm_amd loaded: /dev/kvm is there",
            "ok gpu list: 0000:01:00.0 is an available passthrough candidate",
            "ok gpu doctor: kvm.device ok",
            "ok the launch picks KVM after a real KVM_CREATE_VM",
        ],
        host_check: None,
    },
    Scenario {
        name: "nested-passthrough",
        about: "vm-cli --gpu-mode passthrough: L2 under KVM paints the bochs-display; L0's screendump matches; given back",
        script: include_str!("guest/nested/scenarios/nested-passthrough.sh"),
        expect: &[
            "ok vm-cli started L2 under KVM",
            "ok L2 sees 0000:01:00.0 as 1234:1111",
            "ok L2's bochs-drm bound it and L2 painted",
            "ok 0000:01:00.0 driver_override restored",
            "snapshot 2-after",
        ],
        host_check: Some(check_passthrough),
    },
    Scenario {
        name: "nested-mdpy",
        about: "vm-cli --gpu-mode mdev --mdev-type mdpy-xga: display=on, screendump through vm-cli's QMP socket; mdev removed",
        script: include_str!("guest/nested/scenarios/nested-mdpy.sh"),
        expect: &[
            "ok the mdev went to L2 with display=on",
            "ok L2's mdpy-fb painted",
            "ok the QMP screendump was written",
            "ok mdpy-xga available_instances back to",
            "snapshot 2-after",
        ],
        host_check: Some(check_mdpy),
    },
    Scenario {
        name: "nested-mbochs",
        about: "vm-cli --gpu-mode mdev --mdev-type mbochs-small: L2's bochs-drm paints it; the BAR holds the pattern; mdev removed",
        script: include_str!("guest/nested/scenarios/nested-mbochs.sh"),
        expect: &[
            "ok L2's bochs-drm painted it",
            "ok the BAR was saved",
            "ok mbochs-small available_instances back to",
            "snapshot 2-after",
        ],
        host_check: Some(check_mbochs),
    },
    Scenario {
        name: "nested-numa",
        about: "L1 with two NUMA nodes: vm-cli --hugepages 2M --reserve-hugepages --numa auto passes through the display on node 1; pages and vCPUs there; nr_hugepages back",
        script: include_str!("guest/nested/scenarios/nested-numa.sh"),
        expect: &[
            "ok 0000:81:00.0 is on node 1",
            "ok the plan binds memory to node 1",
            "ok HugePages in use on node 1 grew by the guest's 128 pages",
            "ok every vCPU thread may run only on node 1's CPUs",
            "ok L2's QEMU had vCPU threads",
            "ok QEMU's other threads are off node 1's CPUs",
            "ok nr_hugepages on node 1 is back to",
        ],
        host_check: None,
    },
    Scenario {
        name: "nested-kill",
        about: "kill -9 of vm-cli while L2 runs (passthrough, then mdev): no QEMU left; gpu restore gives everything back",
        script: include_str!("guest/nested/scenarios/nested-kill.sh"),
        expect: &[
            "L2 runs: kill -9 vm-cli",
            "ok no QEMU left",
            "ok vm-cli gpu restore exits 0",
            "ok 0000:01:00.0 is back on bochs-drm",
            "ok the mdev is gone",
            "snapshot 2-restored",
        ],
        host_check: Some(check_kill),
    },
];

/// Pixel `i` of the pattern stream, as XRGB8888 memory bytes (B, G, R, X): a hash of the
/// index, so a frame shifted, cut or strided wrongly differs almost everywhere.
pub fn pattern_pixel(i: usize) -> [u8; 4] {
    let h = (i as u32).wrapping_mul(0x9e37_79b1) ^ ((i as u32) >> 9);
    [h as u8, (h >> 8) as u8, (h >> 16) as u8, 0]
}

/// `stream.bin`: [`STREAM_KIB`] KiB of [`pattern_pixel`]s.
fn stream() -> Vec<u8> {
    (0..STREAM_KIB * 256).flat_map(pattern_pixel).collect()
}

/// The XRGB8888 pixel at (x, y) of a `w`-wide frame of `seed`.
fn frame_pixel(seed: usize, w: usize, x: usize, y: usize) -> [u8; 4] {
    pattern_pixel(seed * SEED_KIB * 256 + y * w + x)
}

/// A QMP/PPM screendump against the frame of `seed`: every pixel must match.
pub fn check_shot(path: &Path, seed: usize) -> Result<String, String> {
    let (w, h, px) = read_ppm(path)?;
    let (w, h) = (w as usize, h as usize);
    let mut bad = 0usize;
    let mut first = None;
    for y in 0..h {
        for x in 0..w {
            let o = (y * w + x) * 3;
            let p = frame_pixel(seed, w, x, y);
            let want = [p[2], p[1], p[0]];
            let got = [px[o], px[o + 1], px[o + 2]];
            if got != want {
                bad += 1;
                first.get_or_insert((x, y, got, want));
            }
        }
    }
    match first {
        None => Ok(format!(
            "{} ({w}x{h}) matches pattern {seed} in all {} pixels",
            name_of(path),
            w * h
        )),
        Some((x, y, got, want)) => Err(format!(
            "{} ({w}x{h}): {bad} of {} pixels differ from pattern {seed}; first at ({x},{y}): {got:02x?}, expected {want:02x?}",
            path.display(),
            w * h
        )),
    }
}

/// Raw XRGB8888 framebuffer bytes (`pmemsave` of a BAR) against the frame of `seed`.
pub fn check_raw(path: &Path, seed: usize, w: usize, h: usize) -> Result<String, String> {
    let data = std::fs::read(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    if data.len() != w * h * 4 {
        return Err(format!(
            "{}: {} bytes for a {w}x{h} frame at 32 bpp",
            path.display(),
            data.len()
        ));
    }
    let bad: Vec<usize> = (0..w * h)
        .filter(|&i| data[i * 4..i * 4 + 4] != frame_pixel(seed, w, i % w, i / w))
        .collect();
    match bad.first() {
        None => Ok(format!(
            "{} ({w}x{h}) matches pattern {seed} in all {} pixels",
            name_of(path),
            w * h
        )),
        Some(&i) => Err(format!(
            "{}: {} of {} pixels differ from pattern {seed}; first at ({},{}): {:02x?}, expected {:02x?}",
            path.display(),
            bad.len(),
            w * h,
            i % w,
            i / w,
            &data[i * 4..i * 4 + 4],
            frame_pixel(seed, w, i % w, i / w)
        )),
    }
}

fn name_of(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `L2 PAINTED fb0 WxH …` from a scenario's output: (w, h).
fn painted_size(lines: &[String]) -> Result<(usize, usize), String> {
    let l = lines
        .iter()
        .find_map(|l| l.trim_start().strip_prefix("L2 PAINTED fb0 "))
        .ok_or("L2 never said it painted (no `L2 PAINTED` line)")?;
    let wh = l.split_whitespace().next().unwrap_or("");
    let (w, h) = wh
        .split_once('x')
        .and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)))
        .ok_or_else(|| format!("cannot read the mode from `L2 PAINTED fb0 {l}`"))?;
    Ok((w, h))
}

fn check_passthrough(_lines: &[String], art: &Path) -> Result<String, String> {
    let shot = check_shot(&art.join("l0-bd1.ppm"), 1).map_err(|e| format!("L0 screendump: {e}"))?;
    let diff = differential::check_nested_passthrough(art, TARGET)?;
    Ok(format!("L0 screendump {shot}; {diff}"))
}

fn check_mdpy(_lines: &[String], art: &Path) -> Result<String, String> {
    let shot = check_shot(&art.join("mdpy.ppm"), 2).map_err(|e| format!("mdpy screendump: {e}"))?;
    let diff = differential::check_nested_mdev(art, MDPY_TYPE)?;
    Ok(format!("screendump {shot}; {diff}"))
}

fn check_mbochs(lines: &[String], art: &Path) -> Result<String, String> {
    let (w, h) = painted_size(lines)?;
    let bar = check_raw(&art.join("mbochs-bar0.bin"), 3, w, h)
        .map_err(|e| format!("mbochs BAR0: {e}"))?;
    let diff = differential::check_nested_mdev(art, MBOCHS_TYPE)?;
    Ok(format!("BAR0 {bar}; {diff}"))
}

fn check_kill(lines: &[String], art: &Path) -> Result<String, String> {
    let outlived = lines
        .iter()
        .filter(|l| l.contains("outlived vm-cli"))
        .count();
    let diff = differential::check_nested_kill(art, TARGET, MDPY_TYPE)?;
    Ok(format!(
        "{}; {diff}",
        if outlived > 0 {
            format!("QEMU outlived vm-cli in {outlived} of 2 kills (stopped by the test)")
        } else {
            "QEMU went with vm-cli both times".to_string()
        }
    ))
}

fn parse_args(args: &[String]) -> Result<Option<(Opts, Vec<String>)>, String> {
    let mut o = Opts {
        accel: Accel::Tcg,
        keep: false,
        scenarios: Vec::new(),
        update_fixtures: false,
        // Six scenarios on a two-CPU TCG L1 (nested-numa's two nodes): 7 to 10 minutes on
        // a loaded two-core machine.
        timeout: Duration::from_secs(720),
        no_install: false,
        verbose: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--scenario" => {
                let n = it.next().ok_or("--scenario needs a name")?;
                if !SCENARIOS.iter().any(|s| s.name == n) {
                    let names: Vec<_> = SCENARIOS.iter().map(|s| s.name).collect();
                    return Err(format!("no scenario {n:?}; known: {}", names.join(", ")));
                }
                o.scenarios.push(n.clone());
            }
            "--timeout" => {
                let v = it.next().ok_or("--timeout needs seconds")?;
                o.timeout = Duration::from_secs(
                    v.parse()
                        .map_err(|_| format!("--timeout {v}: expected whole seconds"))?,
                );
            }
            "--keep" => o.keep = true,
            "--no-install" => o.no_install = true,
            "--verbose" | "-v" => o.verbose = true,
            "--list" => {
                for s in SCENARIOS {
                    println!("{:<20} {}", s.name, s.about);
                }
                return Ok(None);
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    let names = o.scenarios.clone();
    Ok(Some((o, names)))
}

fn copy_file(from: &Path, to: &Path) -> Result<(), String> {
    if let Some(p) = to.parent() {
        std::fs::create_dir_all(p).map_err(|e| format!("mkdir {}: {e}", p.display()))?;
    }
    std::fs::copy(from, to)
        .map(|_| ())
        .map_err(|e| format!("copy {} -> {}: {e}", from.display(), to.display()))
}

/// The static helper both guests run (`guest/nested/helper.c`), built once per source text.
fn helper(cache: &Path) -> Result<PathBuf, String> {
    let src = include_str!("guest/nested/helper.c");
    let c = cache.join("nested-helper.c");
    let bin = cache.join("nested-helper");
    if bin.is_file() && std::fs::read_to_string(&c).ok().as_deref() == Some(src) {
        return Ok(bin);
    }
    std::fs::create_dir_all(cache).map_err(|e| format!("mkdir {}: {e}", cache.display()))?;
    std::fs::write(&c, src).map_err(|e| format!("write {}: {e}", c.display()))?;
    run_cmd(
        Command::new("gcc")
            .args(["-O2", "-static", "-Wall", "-o"])
            .arg(&bin)
            .arg(&c),
        "gcc -static nested-helper.c (needs gcc and libc6-dev)",
    )?;
    Ok(bin)
}

/// The read-only share L1 mounts at `/opt/l2`: the host's QEMU as an extracted package tree
/// (binary, the libraries `ldd` names, the firmware of `/usr/share/qemu` dereferenced), the
/// L2 kernel (the compressed image: L2 runs under KVM, unpacking it costs nothing there, and
/// 9p under TCG is slow per byte) and the L2 initramfs.
fn stage_share(kernel: &lab::Kernel, share: &Path, helper: &Path) -> Result<String, String> {
    let _ = std::fs::remove_dir_all(share);
    let qemu = run_cmd(
        Command::new("sh").args(["-c", "command -v qemu-system-x86_64"]),
        "find qemu-system-x86_64 (install qemu-system-x86)",
    )?;
    let qemu = std::fs::canonicalize(qemu.trim())
        .map_err(|e| format!("qemu-system-x86_64 on PATH: {e}"))?;
    let version = run_cmd(Command::new(&qemu).arg("--version"), "qemu --version")?
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    copy_file(&qemu, &share.join("usr/bin/qemu-system-x86_64"))?;
    let ldd = run_cmd(Command::new("ldd").arg(&qemu), "ldd qemu-system-x86_64")?;
    for lib in parse_ldd(&ldd) {
        copy_file(&lib, &share.join(lib.strip_prefix("/").unwrap_or(&lib)))?;
    }
    // Debian's QEMU looks in /usr/share/qemu and /usr/share/seabios (its firmware path);
    // in L1 both land in the tree's usr/share/qemu, which vm-cli passes with -L
    for fw in ["/usr/share/qemu", "/usr/share/seabios"] {
        for e in std::fs::read_dir(fw)
            .map_err(|e| format!("list {fw}: {e} (install qemu-system-x86)"))?
            .flatten()
        {
            // symlinks are followed; directories (keymaps) are not needed
            if e.path().is_file() {
                copy_file(&e.path(), &share.join("usr/share/qemu").join(e.file_name()))?;
            }
        }
    }
    let vmlinuz = kernel
        .dir
        .join("kimg/boot")
        .join(format!("vmlinuz-{}", kernel.kver));
    copy_file(&vmlinuz, &share.join("vmlinuz"))?;
    let helper_bytes =
        std::fs::read(helper).map_err(|e| format!("read {}: {e}", helper.display()))?;
    build_initramfs(
        kernel,
        &share.with_file_name("l2-root"),
        &share.join("l2-initrd.cpio"),
        include_str!("guest/nested/l2-init.sh"),
        &[
            ("stream.bin", &stream(), 0o644),
            ("bin/nested-helper", &helper_bytes, 0o755),
        ],
        L2_MODULES,
    )?;
    Ok(version)
}

/// L0's command line for L1 (`docs/nested-lab.md`).
fn l1_args(kernel: &Path, initrd: &Path, share: &Path, out: &Path, qmp_sock: &Path) -> Vec<String> {
    let mut a: Vec<String> = [
        "-machine",
        "q35,kernel-irqchip=split",
        "-accel",
        "tcg",
        "-cpu",
        "max",
        "-m",
        "2048",
        // Two NUMA nodes (issue 17's scenario nested-numa), one CPU and 1 GiB each.
        "-smp",
        "2",
        "-object",
        "memory-backend-ram,id=m0,size=1024M",
        "-object",
        "memory-backend-ram,id=m1,size=1024M",
        "-numa",
        "node,nodeid=0,cpus=0,memdev=m0",
        "-numa",
        "node,nodeid=1,cpus=1,memdev=m1",
        "-nographic",
        "-no-reboot",
        "-vga",
        "none",
        "-net",
        "none",
        "-device",
        "intel-iommu,intremap=on",
        "-device",
        "pcie-root-port,id=rp1,bus=pcie.0,chassis=1,slot=1,addr=0x2",
        "-device",
        "bochs-display,bus=rp1,id=bd1",
        // A second display on node 1: a pxb-pcie root bus (bus 0x80) with numa_node=1, its
        // root port, the display at 0000:81:00.0.
        "-device",
        "pxb-pcie,id=pxb1,bus_nr=128,numa_node=1,bus=pcie.0,addr=0x3",
        "-device",
        "pcie-root-port,id=rp2,bus=pxb1,chassis=2,slot=2",
        "-device",
        "bochs-display,bus=rp2,id=bd2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for (id, path, ro) in [("l2", share, true), ("out", out, false)] {
        a.push("-fsdev".into());
        a.push(format!(
            "local,id={id},path={},security_model=none{}",
            path.display(),
            if ro { ",readonly=on" } else { "" }
        ));
        a.push("-device".into());
        // On the main bus: QEMU would put a device without a bus on the last one created,
        // the pxb-pcie, which takes only bridges.
        a.push(format!(
            "virtio-9p-pci,fsdev={id},mount_tag={id},bus=pcie.0"
        ));
    }
    a.push("-qmp".into());
    a.push(format!("unix:{},server=on,wait=off", qmp_sock.display()));
    a.push("-kernel".into());
    a.push(kernel.display().to_string());
    a.push("-initrd".into());
    a.push(initrd.display().to_string());
    a.push("-append".into());
    a.push("console=ttyS0 quiet intel_iommu=on iommu=pt panic=-1".into());
    a.push("-serial".into());
    a.push("mon:stdio".into());
    a
}

/// `KTEST-OUT SCENARIO NESTED-SHOT NAME`: the guest asks the host for a screendump of L1's
/// bochs-display now.
fn shot_request(line: &str) -> Option<(String, String)> {
    let at = line.find("KTEST-OUT ")?;
    let mut w = line[at + "KTEST-OUT ".len()..].split_whitespace();
    let scenario = w.next()?;
    (w.next()? == "NESTED-SHOT").then_some(())?;
    Some((scenario.to_string(), w.next()?.to_string()))
}

/// Entry point: `cargo xtask nested-test ARGS`.
pub fn run(args: &[String]) -> Result<(), String> {
    let t_start = Instant::now();
    let Some((opts, names)) = parse_args(args)? else {
        return Ok(());
    };
    let root = workspace_root();
    let target = target_dir(&root);
    let lab_root = target.join("nested-lab");
    let selected: Vec<&Scenario> = SCENARIOS
        .iter()
        .filter(|s| names.is_empty() || names.iter().any(|n| n == s.name))
        .collect();

    let kernel = lab::prepare(&target.join("kernel-lab"), &opts)?;
    let bins = build_vm_cli(&root)?;
    let t_prep = Instant::now();
    let work = lab_root.join("run");
    let _ = std::fs::remove_dir_all(&work);
    let out = work.join("out");
    let shots = work.join("shots");
    for d in [&out, &shots] {
        std::fs::create_dir_all(d).map_err(|e| format!("mkdir {}: {e}", d.display()))?;
    }
    let helper = helper(&lab_root)?;
    let share = work.join("share");
    let qemu_version = stage_share(&kernel, &share, &helper)?;
    stamp(&format!("L2 QEMU staged from the host: {qemu_version}"));
    let initrd = work.join("l1-initramfs.cpio");
    let helper_bytes =
        std::fs::read(&helper).map_err(|e| format!("read {}: {e}", helper.display()))?;
    let extras = Extras {
        pack: lab::MODULES
            .iter()
            .chain(lab::NESTED_MODULES)
            .copied()
            .collect(),
        load: INIT_MODULES.to_vec(),
        files: vec![
            (
                "ktest/setup.sh".into(),
                include_bytes!("guest/nested/setup.sh").to_vec(),
                0o644,
            ),
            (
                "ktest/ship.sh".into(),
                include_bytes!("guest/nested/ship.sh").to_vec(),
                0o644,
            ),
            (
                "ktest/nested.sh".into(),
                include_bytes!("guest/nested/nested.sh").to_vec(),
                0o644,
            ),
            ("bin/nested-helper".into(), helper_bytes, 0o755),
        ],
    };
    super::initramfs::build_with(
        &kernel,
        &bins,
        &selected,
        &work.join("l1-root"),
        &initrd,
        &extras,
    )?;
    let t_prep = t_prep.elapsed().as_secs_f64();

    let logs = lab_root.join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| format!("mkdir {}: {e}", logs.display()))?;
    let log = logs.join(format!("{}-serial.log", utc_stamp()));
    let sock_dir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
    let l0_qmp = sock_dir.path().join("l0-qmp.sock");
    let args = l1_args(&kernel.vmlinux, &initrd, &share, &out, &l0_qmp);
    stamp(&format!(
        "L1: qemu-system-x86_64 -accel tcg -cpu max (linux {} {}), {} scenario(s), timeout {}s, log {}",
        kernel.kver,
        kernel.pkg_version,
        selected.len(),
        opts.timeout.as_secs(),
        log.display()
    ));
    let mut shot_results: Vec<(String, String, Result<(), String>)> = Vec::new();
    let mut on_line = |t: f64, line: &str| {
        if let Some((scenario, name)) = shot_request(line) {
            let file = shots.join(format!("{scenario}-{name}.ppm"));
            let cmd = serde_json::json!({"execute": "screendump",
                "arguments": {"filename": file.display().to_string(), "device": "bd1"}});
            let r = qmp(&l0_qmp, &cmd).map(|_| ());
            eprintln!(
                "  {t:7.2}s L0 screendump of bd1 for {scenario}: {}",
                match &r {
                    Ok(()) => file.display().to_string(),
                    Err(e) => e.clone(),
                }
            );
            shot_results.push((scenario, name, r));
        }
    };
    let boot = qemu::boot_with(&args, &log, opts.timeout, opts.verbose, &mut on_line)?;
    let _ = std::fs::copy(&log, logs.join("latest-serial.log"));

    // the artifacts: one tar on the output share, the L0 screendumps beside each scenario's
    let art_dir = work.join("artifacts");
    let tar = out.join("artifacts.tar");
    let artifacts = if tar.is_file() {
        std::fs::create_dir_all(&art_dir)
            .map_err(|e| format!("mkdir {}: {e}", art_dir.display()))?;
        run_cmd(
            Command::new("tar")
                .arg("-xf")
                .arg(&tar)
                .arg("-C")
                .arg(&art_dir),
            "unpack the artifacts",
        )?;
        for (scenario, name, r) in &shot_results {
            let dest = art_dir.join(scenario).join(format!("{name}.ppm"));
            match r {
                Ok(()) => copy_file(&shots.join(format!("{scenario}-{name}.ppm")), &dest)?,
                Err(e) => stamp(&format!("{scenario}: L0 screendump failed: {e}")),
            }
        }
        Some(art_dir.clone())
    } else {
        stamp(&format!(
            "no {}: the guest sent no artifacts",
            tar.display()
        ));
        None
    };
    let why_missing = if boot.timed_out {
        format!("L1 timed out ({})", boot.exit)
    } else if !boot.guest.ended {
        format!(
            "L1 stopped before KTEST-END (qemu: {}; see {})",
            boot.exit,
            log.display()
        )
    } else {
        "L1 did not run it".to_string()
    };
    for n in &boot.guest.setup_notes {
        stamp(&format!("L1 setup: {n}"));
    }
    let mut outcomes: Vec<Outcome> = selected
        .iter()
        .map(|s| judge(s, &boot.guest, artifacts.as_deref(), &why_missing))
        .collect();
    if !boot.guest.ended || boot.timed_out {
        outcomes.push(Outcome {
            name: "(boot)".into(),
            passed: false,
            seconds: None,
            detail: why_missing.clone(),
        });
    }

    // screenshots and logs stay under target/nested-lab/ for people to look at
    let keep_dir = lab_root.join("last");
    let _ = std::fs::remove_dir_all(&keep_dir);
    if let Some(a) = &artifacts {
        let _ = run_cmd(
            Command::new("cp").arg("-a").arg(a).arg(&keep_dir),
            "keep the artifacts",
        );
    }
    let guest_secs = match (boot.guest.init_uptime, boot.guest.end_uptime) {
        (Some(a), Some(b)) => format!("{:.1}s", b - a),
        _ => "?".into(),
    };
    stamp(&format!(
        "timings: staging {t_prep:.1}s, L1 {:.1}s (start -> /init {}, /init -> end {guest_secs}; exit: {}), total {:.1}s; artifacts and screenshots in {}",
        boot.wall,
        boot.to_init
            .map(|t| format!("{t:.1}s"))
            .unwrap_or_else(|| "never".into()),
        boot.exit,
        t_start.elapsed().as_secs_f64(),
        keep_dir.display()
    ));
    if !opts.keep {
        let _ = std::fs::remove_dir_all(&work);
    }

    let name_w = outcomes.iter().map(|o| o.name.len()).max().unwrap_or(8);
    for o in &outcomes {
        println!(
            "{} {:<name_w$} {:>7} {}",
            if o.passed { "PASS" } else { "FAIL" },
            o.name,
            o.seconds
                .map(|s| format!("{s:.2}s"))
                .unwrap_or_else(|| "-".into()),
            o.detail
        );
    }
    println!(
        "SKIP {:<name_w$} {:>7} the wgpu rung is not run inside L1: L1 has no Vulkan driver (cargo xtask e2e runs it on the host)",
        "nested-wgpu", "-"
    );
    let passed = outcomes.iter().filter(|o| o.passed).count();
    let failed = outcomes.len() - passed;
    println!("{passed} passed, {failed} failed");
    if failed == 0 {
        Ok(())
    } else {
        Err(format!(
            "nested-test: {failed} failed; serial log {}",
            log.display()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guest_script_and_the_host_agree_on_the_seed_stride() {
        let script = include_str!("guest/nested/l2-init.sh");
        assert!(
            script.contains(&format!("SEED_KIB={SEED_KIB} ")),
            "l2-init.sh must say SEED_KIB={SEED_KIB}"
        );
        // seed N's frame starts N * SEED_KIB KiB into the stream
        let s = stream();
        assert_eq!(s.len(), STREAM_KIB * 1024);
        let off = 2 * SEED_KIB * 1024 + (3 * 640 + 5) * 4;
        assert_eq!(&s[off..off + 4], &frame_pixel(2, 640, 5, 3));
    }

    #[test]
    fn a_shifted_frame_fails_the_shot_check() {
        let dir = tempfile::tempdir().unwrap();
        let (w, h) = (64usize, 16usize);
        let ppm = |shift: usize| {
            let mut v = format!("P6\n{w} {h}\n255\n").into_bytes();
            for i in 0..w * h {
                let p = frame_pixel(1, w, (i + shift) % w, (i + shift) / w);
                v.extend_from_slice(&[p[2], p[1], p[0]]);
            }
            v
        };
        let good = dir.path().join("good.ppm");
        std::fs::write(&good, ppm(0)).unwrap();
        assert!(check_shot(&good, 1).unwrap().contains("all 1024 pixels"));
        assert!(check_shot(&good, 2).is_err(), "another seed must not match");
        let bad = dir.path().join("bad.ppm");
        std::fs::write(&bad, ppm(1)).unwrap();
        let e = check_shot(&bad, 1).unwrap_err();
        assert!(e.contains("first at (0,0)"), "{e}");
    }

    #[test]
    fn raw_framebuffers_are_checked_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let (w, h) = (32usize, 8usize);
        let mut raw: Vec<u8> = (0..w * h)
            .flat_map(|i| frame_pixel(3, w, i % w, i / w))
            .collect();
        let p = dir.path().join("bar.bin");
        std::fs::write(&p, &raw).unwrap();
        assert!(check_raw(&p, 3, w, h).is_ok());
        assert!(check_raw(&p, 3, w, h + 1).unwrap_err().contains("bytes"));
        raw[4 * 40 + 1] ^= 1;
        std::fs::write(&p, &raw).unwrap();
        assert!(check_raw(&p, 3, w, h).unwrap_err().contains("(8,1)"));
    }

    #[test]
    fn shot_requests_and_painted_lines_are_read() {
        assert_eq!(
            shot_request("KTEST-OUT nested-passthrough NESTED-SHOT l0-bd1"),
            Some(("nested-passthrough".into(), "l0-bd1".into()))
        );
        assert_eq!(shot_request("KTEST-OUT x   L2 PAINTED"), None);
        let lines = vec![
            "  L2 pci 0000:00:01.0 id=0x1234:0x1111".to_string(),
            "  L2 PAINTED fb0 1024x768 seed=3 pci=0000:01:00.0".to_string(),
        ];
        assert_eq!(painted_size(&lines).unwrap(), (1024, 768));
        assert!(painted_size(&lines[..1]).is_err());
    }

    #[test]
    fn l1_gets_the_bochs_display_on_its_own_root_port_and_both_shares() {
        let a = l1_args(
            Path::new("/k"),
            Path::new("/i"),
            Path::new("/s"),
            Path::new("/o"),
            Path::new("/q.sock"),
        )
        .join(" ");
        assert!(a.contains("-cpu max"), "{a}");
        assert!(a.contains("bochs-display,bus=rp1,id=bd1"), "{a}");
        assert!(a.contains("-numa node,nodeid=1,cpus=1,memdev=m1"), "{a}");
        assert!(a.contains("pxb-pcie,id=pxb1,bus_nr=128,numa_node=1"), "{a}");
        assert!(a.contains("bochs-display,bus=rp2,id=bd2"), "{a}");
        assert!(a.contains("path=/s,security_model=none,readonly=on"), "{a}");
        assert!(
            a.contains("local,id=out,path=/o,security_model=none -device"),
            "{a}"
        );
    }
}
