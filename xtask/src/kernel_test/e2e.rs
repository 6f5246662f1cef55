//! `cargo xtask e2e`: the wgpu rung end to end. `vm-cli --kernel … --gpu-mode wgpu` boots
//! Debian's kernel under QEMU (TCG where KVM cannot run it) with the project's own
//! vhost-user-gpu backend (`vm-cli gpu serve-wgpu`, started by vm-cli); the guest's
//! `virtio_gpu` brings up `/dev/fb0`, writes a red|blue pattern, and the host takes a QMP
//! `screendump` of QEMU's display and compares every pixel with the pattern. vm-cli must
//! then exit 0 with everything given back.
//!
//! The recipe and its traps are `docs/virtio-gpu-e2e.md`: QEMU 7.2 refuses
//! vhost-user-gpu without KVM, so a QEMU ≥ 8 is used: the newest on PATH if it is one, else
//! QEMU 10 from `bookworm-backports`, downloaded with a private apt state and extracted under
//! `target/e2e/qemu-bpo/` (the installed QEMU stays as it is). The kernel comes from the
//! kernel-test cache (`target/kernel-lab/`).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::initramfs::{module_closure, write_cpio};
use super::{build_vm_cli, lab, run_cmd, stamp, target_dir, workspace_root, Accel, Opts};

const USAGE: &str = "\
usage: cargo xtask e2e [--qemu PATH] [--timeout SECS] [--repeat N] [--no-install] [--verbose] [--keep]
  --qemu PATH     the QEMU to use (default: the newest qemu-system-x86_64 on PATH when it is
                  8.0 or newer, else QEMU 10 from bookworm-backports extracted under target/e2e)
  --timeout SECS  give up on the guest after SECS (default 180)
  --repeat N      run the scenario N times (setup once); every run must pass (default 1)
  --no-install    never run apt-get (fail with the list of missing packages instead)
  --verbose       echo the guest console and vm-cli's messages
  --keep          keep target/e2e/run (initramfs, screendump, logs)";

/// The workspace example the guest runs for WebGPU (`guest/examples/vm_compute.rs`).
const WEBGPU_EXAMPLE: &str = "vm_compute";

/// The shared libraries `bin` loads (`ldd`), the dynamic loader included.
fn shared_libraries(bin: &Path) -> Result<Vec<PathBuf>, String> {
    let out = run_cmd(
        Command::new("ldd").arg(bin),
        &format!("ldd {}", bin.display()),
    )?;
    Ok(parse_ldd(&out))
}

/// `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)` and `/lib64/ld-linux-x86-64.so.2
/// (0x…)` → the absolute paths.
fn parse_ldd(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = l.split("=>").nth(1).unwrap_or(l).trim();
            let path = path.split(" (").next()?.trim();
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// Display size the backend offers (`gpu serve-wgpu` default) and the pattern's size.
const WIDTH: u32 = 1280;
const HEIGHT: u32 = 800;
/// Modules the guest needs, with their dependencies.
pub(super) const GUEST_MODULES: &[&str] = &["virtio_pci", "virtio-gpu"];
/// Host packages: a Vulkan driver for wgpu (lavapipe on a host without a GPU).
pub(super) const HOST_PACKAGES: &[&str] = &["mesa-vulkan-drivers", "libvulkan1"];
/// The QEMU the recipe was measured with.
const BPO_QEMU: &[&str] = &[
    "qemu-system-x86",
    "qemu-system-common",
    "qemu-system-data",
    "qemu-system-gui",
];

struct Args {
    qemu: Option<PathBuf>,
    opts: Opts,
    /// Runs of the scenario (`--repeat`).
    repeat: u32,
}

fn parse_args(args: &[String]) -> Result<Option<Args>, String> {
    let mut qemu = None;
    let mut repeat = 1;
    let mut timeout = Duration::from_secs(180);
    let (mut no_install, mut verbose, mut keep) = (false, false, false);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--qemu" => qemu = Some(PathBuf::from(it.next().ok_or("--qemu needs a path")?)),
            "--timeout" => {
                let v = it.next().ok_or("--timeout needs seconds")?;
                timeout = Duration::from_secs(
                    v.parse()
                        .map_err(|_| format!("--timeout {v}: not a number of seconds"))?,
                );
            }
            "--repeat" => {
                let v = it.next().ok_or("--repeat needs a number of runs")?;
                repeat = v
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("--repeat {v}: not a number of runs above 0"))?;
            }
            "--no-install" => no_install = true,
            "--verbose" => verbose = true,
            "--keep" => keep = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            other => return Err(format!("unknown option {other:?}\n{USAGE}")),
        }
    }
    Ok(Some(Args {
        qemu,
        repeat,
        opts: Opts {
            accel: Accel::Tcg,
            keep,
            scenarios: Vec::new(),
            update_fixtures: false,
            timeout,
            no_install,
            verbose,
        },
    }))
}

/// `QEMU emulator version 10.0.2 (…)` → (10, 0).
pub(super) fn qemu_version(qemu: &Path) -> Option<(u32, u32)> {
    let out = Command::new(qemu).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v = text.split("version ").nth(1)?.split_whitespace().next()?;
    let mut parts = v.split('.').map(|p| p.parse::<u32>().ok());
    Some((parts.next()??, parts.next().flatten().unwrap_or(0)))
}

/// QEMU ≥ 8: `--qemu`, the one on PATH, or bookworm-backports' extracted under `dir`.
pub(super) fn find_qemu(
    explicit: Option<PathBuf>,
    dir: &Path,
    opts: &Opts,
) -> Result<PathBuf, String> {
    if let Some(q) = explicit {
        return match qemu_version(&q) {
            Some(v) if v.0 >= 8 => Ok(q),
            Some(v) => Err(format!(
                "{} is QEMU {}.{}: vhost-user-gpu under TCG needs QEMU 8 or newer",
                q.display(),
                v.0,
                v.1
            )),
            None => Err(format!("{}: cannot tell its version", q.display())),
        };
    }
    if let Some(v) = qemu_version(Path::new("qemu-system-x86_64")).filter(|v| v.0 >= 8) {
        stamp(&format!("QEMU {}.{} on PATH", v.0, v.1));
        return Ok(PathBuf::from("qemu-system-x86_64"));
    }
    let root = dir.join("root");
    let bin = root.join("usr/bin/qemu-system-x86_64");
    if bin.is_file() {
        return Ok(bin);
    }
    if opts.no_install {
        return Err(
            "no QEMU 8 or newer on PATH, and --no-install forbids fetching bookworm-backports' (pass --qemu PATH)".into(),
        );
    }
    stamp("QEMU from bookworm-backports (private apt state, extracted, not installed)");
    let apt_opts = bpo_apt(dir)?;
    let version = bpo_version(&apt_opts, "qemu-system-x86")?;
    let specs: Vec<String> = BPO_QEMU.iter().map(|p| format!("{p}={version}")).collect();
    let _ = std::fs::remove_dir_all(&root);
    bpo_extract(dir, &apt_opts, &specs)?;
    if bin.is_file() {
        stamp(&format!(
            "QEMU {version} extracted under {}",
            root.display()
        ));
        Ok(bin)
    } else {
        Err(format!("extracting QEMU left no {}", bin.display()))
    }
}

/// The private apt state under `dir` (bookworm + bookworm-backports, the system's mirror),
/// updated; returns the `-o …` options that select it.
fn bpo_apt(dir: &Path) -> Result<Vec<String>, String> {
    for d in [
        "lists/partial",
        "cache/archives/partial",
        "etc/sources.list.d",
        "etc/preferences.d",
        "debs",
    ] {
        std::fs::create_dir_all(dir.join(d)).map_err(|e| format!("mkdir {d}: {e}"))?;
    }
    std::fs::write(dir.join("etc/sources.list"), "").map_err(|e| e.to_string())?;
    let mirror = std::fs::read_to_string("/etc/apt/sources.list.d/debian.sources")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("URIs:").map(|u| u.trim().to_string()))
        })
        .unwrap_or_else(|| "http://deb.debian.org/debian".into());
    std::fs::write(
        dir.join("etc/sources.list.d/bpo.sources"),
        format!("Types: deb\nURIs: {mirror}\nSuites: bookworm bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"),
    )
    .map_err(|e| e.to_string())?;
    let d = dir.display();
    let apt_opts: Vec<String> = [
        format!("Dir::Etc::SourceList={d}/etc/sources.list"),
        format!("Dir::Etc::SourceParts={d}/etc/sources.list.d"),
        format!("Dir::State::Lists={d}/lists"),
        format!("Dir::Cache={d}/cache"),
        format!("Dir::Etc::Preferences={d}/etc/preferences"),
        format!("Dir::Etc::PreferencesParts={d}/etc/preferences.d"),
    ]
    .into_iter()
    .flat_map(|o| ["-o".to_string(), o])
    .collect();
    run_cmd(
        Command::new("apt-get")
            .args(&apt_opts)
            .args(["update", "-qq"]),
        "apt-get update (bookworm-backports, private state)",
    )?;
    Ok(apt_opts)
}

/// Downloads `specs` (`pkg` or `pkg=version`) with the private apt state into `dir/debs` and
/// extracts each downloaded .deb under `dir/root` (nothing is installed).
/// The version of `package` bookworm-backports offers (`apt-cache madison` with the private
/// apt state of [`bpo_apt`]).
fn bpo_version(apt_opts: &[String], package: &str) -> Result<String, String> {
    let madison = run_cmd(
        Command::new("apt-cache")
            .args(apt_opts)
            .args(["madison", package]),
        &format!("apt-cache madison {package}"),
    )?;
    madison
        .lines()
        .find(|l| l.contains("backports"))
        .and_then(|l| l.split('|').nth(1))
        .map(|v| v.trim().to_string())
        .ok_or_else(|| format!("bookworm-backports has no {package}"))
}

fn bpo_extract(dir: &Path, apt_opts: &[String], specs: &[String]) -> Result<(), String> {
    let debs = dir.join("debs");
    run_cmd(
        Command::new("apt-get")
            .args(apt_opts)
            .args(["download", "-qq"])
            .args(specs)
            .current_dir(&debs),
        &format!("apt-get download {}", specs.join(" ")),
    )?;
    let root = dir.join("root");
    for p in deb_files(&debs)? {
        let wanted = specs.iter().any(|s| {
            let name = s.split('=').next().unwrap_or(s);
            p.file_name()
                .and_then(|f| f.to_str())
                .is_some_and(|f| f.starts_with(&format!("{name}_")))
        });
        if wanted {
            run_cmd(
                Command::new("dpkg-deb").arg("-x").arg(&p).arg(&root),
                "dpkg-deb -x",
            )?;
        }
    }
    Ok(())
}

fn deb_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| format!("list {}: {e}", dir.display()))? {
        let p = e.map_err(|e| e.to_string())?.path();
        if p.extension().is_some_and(|x| x == "deb") {
            v.push(p);
        }
    }
    Ok(v)
}

/// QEMU's own C vhost-user-gpu from the extracted `qemu-system-gui` under `dir/root`, with
/// bookworm's `libvirglrenderer1` (which it links but does not use in 2D) extracted next to
/// it when the system lacks it. Returns (backend, the `LD_LIBRARY_PATH` it needs).
pub(super) fn c_backend(dir: &Path, opts: &Opts) -> Result<(PathBuf, PathBuf), String> {
    let root = dir.join("root");
    let libdir = root.join("usr/lib/x86_64-linux-gnu");
    let find = || {
        ["usr/libexec/vhost-user-gpu", "usr/lib/qemu/vhost-user-gpu"]
            .iter()
            .map(|p| root.join(p))
            .find(|p| p.is_file())
    };
    let bin = match find() {
        Some(b) => b,
        // A QEMU ≥ 8 on PATH was used, so nothing was extracted yet: only the backend's
        // package is needed.
        None if !opts.no_install => {
            stamp("QEMU's C vhost-user-gpu: qemu-system-gui from bookworm-backports (extracted)");
            let apt_opts = bpo_apt(dir)?;
            let version = bpo_version(&apt_opts, "qemu-system-gui")?;
            bpo_extract(dir, &apt_opts, &[format!("qemu-system-gui={version}")])?;
            find().ok_or_else(|| {
                format!(
                    "qemu-system-gui extracted under {} has no vhost-user-gpu",
                    root.display()
                )
            })?
        }
        None => {
            return Err(format!(
                "no vhost-user-gpu under {} and --no-install forbids fetching qemu-system-gui from bookworm-backports",
                root.display()
            ))
        }
    };
    let missing = || -> Result<Vec<String>, String> {
        let out = Command::new("ldd")
            .arg(&bin)
            .env("LD_LIBRARY_PATH", &libdir)
            .output()
            .map_err(|e| format!("ldd {}: {e}", bin.display()))?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("not found"))
            .map(|l| l.trim().to_string())
            .collect())
    };
    let gone = missing()?;
    if gone.is_empty() {
        return Ok((bin, libdir));
    }
    if opts.no_install {
        return Err(format!(
            "{} lacks {}; --no-install forbids fetching libvirglrenderer1",
            bin.display(),
            gone.join(", ")
        ));
    }
    stamp("libvirglrenderer1 from bookworm (private apt state, extracted, not installed)");
    let apt_opts = bpo_apt(dir)?;
    let specs: Vec<String> = ["libvirglrenderer1", "libva2", "libva-drm2"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    bpo_extract(dir, &apt_opts, &specs)?;
    let gone = missing()?;
    if gone.is_empty() {
        Ok((bin, libdir))
    } else {
        Err(format!(
            "{} still lacks {} with LD_LIBRARY_PATH={}",
            bin.display(),
            gone.join(", "),
            libdir.display()
        ))
    }
}

/// The guest's pattern: left half red, right half blue, as XRGB8888 memory bytes.
fn pattern() -> Vec<u8> {
    let mut row = Vec::with_capacity(WIDTH as usize * 4);
    for x in 0..WIDTH {
        row.extend_from_slice(if x < WIDTH / 2 {
            &[0x00, 0x00, 0xff, 0x00]
        } else {
            &[0xff, 0x00, 0x00, 0x00]
        });
    }
    row.repeat(HEIGHT as usize)
}

/// The colour the screendump must show at column `x` (RGB).
fn expected(x: u32) -> [u8; 3] {
    if x < WIDTH / 2 {
        [255, 0, 0]
    } else {
        [0, 0, 255]
    }
}

/// The guest of `e2e` and `bench-display` (`modules`: [`GUEST_MODULES`]) and of
/// nested-test's L2: busybox, `modules` with their dependencies, `init` as `/init` and each
/// of `files` (path in the guest, bytes, mode), packed into `out`.
pub(super) fn build_initramfs(
    kernel: &lab::Kernel,
    root: &Path,
    out: &Path,
    init: &str,
    files: &[(&str, &[u8], u32)],
    modules: &[&str],
) -> Result<(), String> {
    let _ = std::fs::remove_dir_all(root);
    for d in ["bin", "proc", "sys", "dev", "tmp"] {
        std::fs::create_dir_all(root.join(d)).map_err(|e| format!("mkdir {d}: {e}"))?;
    }
    let busybox = run_cmd(Command::new("which").arg("busybox"), "which busybox")?;
    std::fs::copy(busybox.trim(), root.join("bin/busybox"))
        .map_err(|e| format!("copy busybox: {e}"))?;
    let write = |rel: &str, data: &[u8], mode: u32| -> Result<(), String> {
        use std::os::unix::fs::PermissionsExt;
        let p = root.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("mkdir {}: {e}", parent.display()))?;
        }
        std::fs::write(&p, data).map_err(|e| format!("write {}: {e}", p.display()))?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
            .map_err(|e| format!("chmod {}: {e}", p.display()))
    };
    write("init", init.as_bytes(), 0o755)?;
    for (rel, data, mode) in files {
        write(rel, data, *mode)?;
    }
    let dep_path = kernel.modroot.join("modules.dep");
    let dep = std::fs::read_to_string(&dep_path)
        .map_err(|e| format!("read {}: {e}", dep_path.display()))?;
    let mroot = root.join("lib/modules").join(&kernel.kver);
    for f in module_closure(&dep, modules)? {
        let to = mroot.join(&f);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("mkdir: {e}"))?;
        }
        std::fs::copy(kernel.modroot.join(&f), &to).map_err(|e| format!("copy {f}: {e}"))?;
    }
    for f in [
        "modules.builtin",
        "modules.builtin.modinfo",
        "modules.order",
    ] {
        let p = kernel.modroot.join(f);
        if p.is_file() {
            std::fs::copy(&p, mroot.join(f)).map_err(|e| format!("copy {f}: {e}"))?;
        }
    }
    run_cmd(
        Command::new("busybox")
            .arg("depmod")
            .arg("-b")
            .arg(root)
            .arg(&kernel.kver),
        "busybox depmod (e2e initramfs)",
    )?;
    let bytes = write_cpio(root, out)?;
    stamp(&format!(
        "initramfs {} ({:.1} MiB)",
        out.display(),
        bytes as f64 / 1048576.0
    ));
    Ok(())
}

/// One QMP command on a fresh connection; returns the `return` value or the error.
pub(super) fn qmp(socket: &Path, command: &serde_json::Value) -> Result<serde_json::Value, String> {
    let s = UnixStream::connect(socket).map_err(|e| format!("QMP {}: {e}", socket.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let mut w = s.try_clone().map_err(|e| e.to_string())?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line)
        .map_err(|e| format!("QMP greeting: {e}"))?;
    let mut result = serde_json::Value::Null;
    for c in [
        serde_json::json!({"execute": "qmp_capabilities"}),
        command.clone(),
    ] {
        writeln!(w, "{c}").map_err(|e| format!("QMP write: {e}"))?;
        loop {
            line.clear();
            if r.read_line(&mut line)
                .map_err(|e| format!("QMP read: {e}"))?
                == 0
            {
                return Err("QMP closed the connection".into());
            }
            let v: serde_json::Value =
                serde_json::from_str(&line).map_err(|e| format!("QMP said {line:?}: {e}"))?;
            if let Some(e) = v.get("error") {
                return Err(format!("QMP {c}: {e}"));
            }
            if let Some(ret) = v.get("return") {
                result = ret.clone();
                break;
            }
        }
    }
    Ok(result)
}

/// Reads a binary PPM (`P6 W H 255`) into (w, h, RGB bytes).
pub(super) fn read_ppm(path: &Path) -> Result<(u32, u32, Vec<u8>), String> {
    let data = std::fs::read(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    let mut fields = Vec::new();
    let mut i = 0;
    while fields.len() < 4 && i < data.len() {
        while i < data.len() && data[i].is_ascii_whitespace() {
            i += 1;
        }
        let start = i;
        while i < data.len() && !data[i].is_ascii_whitespace() {
            i += 1;
        }
        fields.push(String::from_utf8_lossy(&data[start..i]).into_owned());
    }
    i += 1; // the single whitespace after maxval
    let num = |k: usize| -> Result<u32, String> {
        fields
            .get(k)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| format!("{}: not a P6 PPM header: {fields:?}", path.display()))
    };
    if fields.first().map(String::as_str) != Some("P6") || num(3)? != 255 {
        return Err(format!(
            "{}: not an 8-bit P6 PPM: {fields:?}",
            path.display()
        ));
    }
    let (w, h) = (num(1)?, num(2)?);
    let px = data.get(i..).unwrap_or_default().to_vec();
    if px.len() != (w * h * 3) as usize {
        return Err(format!(
            "{}: {} pixel bytes for {w}x{h}",
            path.display(),
            px.len()
        ));
    }
    Ok((w, h, px))
}

/// The guest's WebGPU frame (`guest/examples/vm_compute.rs`, `frame_pixel`): what the
/// screendump must show at (x, y) of a w×h frame (RGB).
fn frame_pixel(x: u32, y: u32, w: u32, h: u32) -> [u8; 3] {
    [
        (x * 255 / (w - 1).max(1)) as u8,
        (y * 255 / (h - 1).max(1)) as u8,
        ((x ^ y) & 0xff) as u8,
    ]
}

/// The screendumps the guest asks for, each with the image it must show.
const SHOTS: [&str; 2] = ["fb0-pattern", "webgpu-frame"];

/// What shot `name` must show at (x, y).
fn want(name: &str, x: u32, y: u32) -> [u8; 3] {
    if name == "webgpu-frame" {
        frame_pixel(x, y, WIDTH, HEIGHT)
    } else {
        expected(x)
    }
}

/// Every pixel against `want`: (mismatches, first mismatch).
fn compare(
    w: u32,
    h: u32,
    px: &[u8],
    want: impl Fn(u32, u32) -> [u8; 3],
) -> (usize, Option<(u32, u32, [u8; 3])>) {
    let mut bad = 0;
    let mut first = None;
    for y in 0..h {
        for x in 0..w {
            let o = ((y * w + x) * 3) as usize;
            let got = [px[o], px[o + 1], px[o + 2]];
            if got != want(x, y) {
                bad += 1;
                first.get_or_insert((x, y, got));
            }
        }
    }
    (bad, first)
}

/// One line from a child: its stdout (the guest console) or its stderr.
pub(super) enum Line {
    /// stdout.
    Out(String),
    /// stderr.
    Err(String),
}

pub(super) fn pump(r: impl Read + Send + 'static, tx: mpsc::Sender<Line>, err: bool) {
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(l) = line else { break };
            let msg = if err { Line::Err(l) } else { Line::Out(l) };
            if tx.send(msg).is_err() {
                break;
            }
        }
    });
}

pub(super) fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Runs the whole check.
pub fn run(args: &[String]) -> Result<(), String> {
    let Some(Args { qemu, opts, repeat }) = parse_args(args)? else {
        return Ok(());
    };
    let root = workspace_root();
    let target = target_dir(&root);
    let e2e = target.join("e2e");
    let run_dir = e2e.join("run");
    let _ = std::fs::remove_dir_all(&run_dir);
    std::fs::create_dir_all(run_dir.join("xdg"))
        .map_err(|e| format!("mkdir {}: {e}", run_dir.display()))?;
    let host_pkgs: Vec<String> = HOST_PACKAGES.iter().map(|s| s.to_string()).collect();
    lab::ensure_packages(&host_pkgs, &opts)?;
    let kernel = lab::prepare_plain(&target.join("kernel-lab"), &opts, GUEST_MODULES)?;
    let qemu = find_qemu(qemu, &e2e.join("qemu-bpo"), &opts)?;
    // vm-cli is the first of the binaries the harness builds.
    let vm_cli = build_vm_cli(&root)?.swap_remove(0);
    // The WebGPU guest program (built by the same test build) and the libraries it links.
    let compute = target.join("debug/examples").join(WEBGPU_EXAMPLE);
    let mut files: Vec<(String, Vec<u8>, u32)> = vec![("pattern.bin".into(), pattern(), 0o644)];
    files.push((
        WEBGPU_EXAMPLE.into(),
        std::fs::read(&compute).map_err(|e| format!("read {}: {e}", compute.display()))?,
        0o755,
    ));
    for lib in shared_libraries(&compute)? {
        let data = std::fs::read(&lib).map_err(|e| format!("read {}: {e}", lib.display()))?;
        let rel = lib.to_string_lossy().trim_start_matches('/').to_string();
        files.push((rel, data, 0o755));
    }
    let file_refs: Vec<(&str, &[u8], u32)> = files
        .iter()
        .map(|(p, d, m)| (p.as_str(), d.as_slice(), *m))
        .collect();
    let initrd = run_dir.join("initramfs.cpio");
    build_initramfs(
        &kernel,
        &run_dir.join("initramfs-root"),
        &initrd,
        include_str!("e2e-init.sh"),
        &file_refs,
        GUEST_MODULES,
    )?;
    let mut failed = Vec::new();
    let t_all = Instant::now();
    for i in 1..=repeat {
        if repeat > 1 {
            stamp(&format!("run {i} of {repeat}"));
        }
        let t = Instant::now();
        if let Err(e) = run_once(&vm_cli, &kernel.vmlinux, &initrd, &qemu, &run_dir, &opts) {
            stamp(&format!(
                "run {i} of {repeat} FAILED after {:.1} s",
                t.elapsed().as_secs_f64()
            ));
            failed.push(format!("run {i}: {e}"));
        }
    }
    if repeat > 1 {
        stamp(&format!(
            "{} of {repeat} runs passed in {:.1} s",
            repeat as usize - failed.len(),
            t_all.elapsed().as_secs_f64()
        ));
    }
    if failed.is_empty() {
        if !opts.keep {
            let _ = std::fs::remove_dir_all(&run_dir);
        }
        Ok(())
    } else {
        Err(failed.join("\n"))
    }
}

/// One boot of the scenario: vm-cli starts the guest, the screendump must match, and vm-cli
/// must exit 0 with everything given back.
fn run_once(
    vm_cli: &Path,
    vmlinux: &Path,
    initrd: &Path,
    qemu: &Path,
    run_dir: &Path,
    opts: &Opts,
) -> Result<(), String> {
    stamp("vm-cli --kernel … --gpu-mode wgpu");
    let t0 = Instant::now();
    let mut child = Command::new(vm_cli)
        .arg("--kernel")
        .arg(vmlinux)
        .arg("--initrd")
        .arg(initrd)
        .args(["--append", "console=ttyS0 quiet panic=-1"])
        .args(["--gpu-mode", "wgpu", "--memory", "512M", "--cpus", "1"])
        .arg("--qemu")
        .arg(qemu)
        .env("XDG_RUNTIME_DIR", run_dir.join("xdg"))
        .env_remove("VM_HOST_ROOT")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", vm_cli.display()))?;
    let qmp_socket = run_dir
        .join("xdg/vm-device")
        .join(format!("vm-{}", child.id()))
        .join("qmp.sock");
    let (tx, rx) = mpsc::channel();
    pump(child.stdout.take().ok_or("no stdout")?, tx.clone(), false);
    pump(child.stderr.take().ok_or("no stderr")?, tx, true);
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    let mut log = String::new();
    let mut shots: Vec<(String, Result<String, String>)> = Vec::new();
    let mut fb0 = None;
    let mut webgpu: Option<String> = None;
    let deadline = t0 + opts.timeout;
    let result: Result<(), String> = loop {
        let now = Instant::now();
        if now >= deadline {
            break Err(format!("timed out after {:?}", opts.timeout));
        }
        let line = match rx.recv_timeout(deadline - now) {
            Ok(l) => l,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => break Ok(()),
        };
        let (text, console) = match line {
            Line::Out(t) => (t, true),
            Line::Err(t) => (t, false),
        };
        if opts.verbose {
            eprintln!("{} {text}", if console { "guest |" } else { "vm-cli|" });
        }
        log.push_str(&text);
        log.push('\n');
        if !console {
            continue;
        }
        if let Some(rest) = text.strip_prefix("E2E uptime ") {
            stamp(&format!(
                "guest: /dev/fb0 {:.1} s after vm-cli started ({rest})",
                t0.elapsed().as_secs_f64()
            ));
            let want = format!("fb0 {WIDTH},{HEIGHT} stride {}", WIDTH * 4);
            if !rest.contains(&want) {
                kill(&mut child);
                break Err(format!("the guest's framebuffer is not {want}: {rest}"));
            }
            fb0 = Some(t0.elapsed());
        } else if let Some(facts) = text.strip_prefix("E2E facts ") {
            stamp(&format!("guest: {facts}"));
        } else if let Some(done) = text.strip_prefix("E2E webgpu-frame ") {
            stamp(&format!("guest: WebGPU {done}"));
        } else if let Some(done) = text.strip_prefix("E2E webgpu ") {
            stamp(&format!("guest: WebGPU {done}"));
            webgpu = Some(done.to_string());
        } else if let Some(why) = text.strip_prefix("E2E fail ") {
            kill(&mut child);
            break Err(format!("guest: {why}"));
        } else if let Some(name) = text.strip_prefix("E2E shot ") {
            let ppm = run_dir.join(format!("{name}.ppm"));
            let taken = qmp(
                &qmp_socket,
                &serde_json::json!({"execute": "screendump", "arguments": {"filename": ppm}}),
            )
            .and_then(|_| read_ppm(&ppm))
            .and_then(|(w, h, px)| {
                if (w, h) != (WIDTH, HEIGHT) {
                    return Err(format!("screendump is {w}x{h}, not {WIDTH}x{HEIGHT}"));
                }
                match compare(w, h, &px, |x, y| want(name, x, y)) {
                    (0, _) => Ok(format!("{name}: all {} pixels match", w * h)),
                    (bad, Some((x, y, got))) => Err(format!(
                        "{name}: {bad} of {} pixels differ from the expected image; first at ({x},{y}): {got:?}, want {:?} ({})",
                        w * h,
                        want(name, x, y),
                        ppm.display()
                    )),
                    (bad, None) => Err(format!("{name}: {bad} pixels differ")),
                }
            });
            stamp(&match &taken {
                Ok(m) => m.clone(),
                Err(e) => e.clone(),
            });
            shots.push((name.to_string(), taken));
            let _ = writeln!(stdin, "go");
        }
    };
    let status = if result.is_ok() {
        let left = deadline.saturating_duration_since(Instant::now());
        let start = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) if start.elapsed() < left => std::thread::sleep(Duration::from_millis(50)),
                _ => {
                    kill(&mut child);
                    break None;
                }
            }
        }
    } else {
        kill(&mut child);
        None
    };
    let _ = std::fs::write(run_dir.join("log.txt"), &log);
    let verdict = (|| {
        result?;
        let mut passed = Vec::new();
        for want in SHOTS {
            match shots.iter().find(|(n, _)| n == want) {
                Some((_, Ok(m))) => passed.push(m.clone()),
                Some((_, Err(e))) => return Err(e.clone()),
                None => return Err(format!("the guest never asked for the {want} screendump")),
            }
        }
        let shot = passed.join("; ");
        let webgpu = webgpu.ok_or("the guest's WebGPU program reported no result")?;
        // The backend's statistics at exit: the 3D commands reached it.
        for c in [
            "CTX_CREATE=",
            "RESOURCE_CREATE_3D=",
            "SUBMIT_3D=",
            "TRANSFER_FROM_HOST_3D=",
        ] {
            if !log.contains(c) {
                return Err(format!("the backend's statistics count no {c}"));
            }
        }
        let status = status.ok_or("vm-cli did not exit after the guest powered off")?;
        if !status.success() {
            return Err(format!("vm-cli exited with {status}"));
        }
        if !log.contains("everything given back") {
            return Err("vm-cli did not report that everything was given back".into());
        }
        Ok(format!("{shot}; WebGPU {webgpu}"))
    })();
    match verdict {
        Ok(shot) => {
            stamp(&format!(
                "PASS: {shot}; fb0 after {:.1} s; whole run {:.1} s; vm-cli exited 0",
                fb0.map(|d| d.as_secs_f64()).unwrap_or(0.0),
                t0.elapsed().as_secs_f64()
            ));
            Ok(())
        }
        Err(e) => {
            let tail: Vec<&str> = log.lines().rev().take(25).collect();
            Err(format!(
                "e2e failed: {e}\nlast lines (guest console and vm-cli; all in {}):\n{}",
                run_dir.join("log.txt").display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeat_takes_a_count_above_zero() {
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let a = parse_args(&args(&["--repeat", "10"])).unwrap().unwrap();
        assert_eq!(a.repeat, 10);
        assert_eq!(parse_args(&[]).unwrap().unwrap().repeat, 1);
        assert!(parse_args(&args(&["--repeat", "0"])).is_err());
        assert!(parse_args(&args(&["--repeat"])).is_err());
    }

    #[test]
    fn the_pattern_is_red_then_blue_in_xrgb_memory_order() {
        let p = pattern();
        assert_eq!(p.len(), (WIDTH * HEIGHT * 4) as usize);
        assert_eq!(&p[..4], &[0, 0, 0xff, 0]);
        let right = ((WIDTH - 1) * 4) as usize;
        assert_eq!(&p[right..right + 4], &[0xff, 0, 0, 0]);
    }

    #[test]
    fn ldd_output_gives_the_library_paths() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            parse_ldd(text),
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2")
            ]
        );
    }

    #[test]
    fn ppm_reading_and_comparison() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.ppm");
        let (w, h) = (WIDTH, 2);
        let mut data = format!("P6\n{w} {h}\n255\n").into_bytes();
        for _ in 0..h {
            for x in 0..w {
                data.extend_from_slice(&expected(x));
            }
        }
        std::fs::write(&path, &data).unwrap();
        let (rw, rh, px) = read_ppm(&path).unwrap();
        assert_eq!((rw, rh), (w, h));
        let pattern = |x: u32, _y: u32| expected(x);
        assert_eq!(compare(w, h, &px, pattern), (0, None));
        let mut bad = px.clone();
        bad[3] = 7;
        assert_eq!(compare(w, h, &bad, pattern), (1, Some((1, 0, [7, 0, 0]))));
        assert_eq!(
            frame_pixel(WIDTH - 1, HEIGHT - 1, WIDTH, HEIGHT)[..2],
            [255, 255]
        );
        assert_eq!(want("webgpu-frame", 3, 5), [0, 1, 6]);
        std::fs::write(&path, b"P5\n1 1\n255\n\0").unwrap();
        assert!(read_ppm(&path).is_err());
    }
}
