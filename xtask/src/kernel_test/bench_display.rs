//! `cargo xtask bench-display [--secs N]`: frame rates of the wgpu rung's vhost-user-gpu
//! backend against its two peers, measured in the same run with the same guest.
//!
//! The guest (`guest/displaybench.c`, built here with `gcc -static`, booted with the `e2e`
//! kernel and initramfs helpers) takes the CRTC with a 1280×800 KMS dumb buffer and counts,
//! for N seconds each, full-frame updates (fill every pixel + `DRM_IOCTL_MODE_DIRTYFB`) and
//! device-path updates (DIRTYFB of an unchanged frame = TRANSFER_TO_HOST_2D +
//! RESOURCE_FLUSH), each phase closed by a fenced host sync. The same initramfs boots three
//! times under QEMU ≥ 8 with TCG and 1 vCPU:
//! 1. QEMU's built-in `-device virtio-gpu-pci`;
//! 2. QEMU's C backend `vhost-user-gpu` (from `qemu-system-gui`, extracted with the QEMU of
//!    `e2e`, plus bookworm's `libvirglrenderer1`) behind `-device vhost-user-gpu-pci`;
//! 3. ours: `vm-cli --kernel … --gpu-mode wgpu` (which starts `vm-cli gpu serve-wgpu`).
//!
//! Prints a table and the ratios against the goal (ours ≥ the C backend, within 2× of the
//! built-in device). Nothing asserts on time: the machine may be loaded.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::e2e::{
    build_initramfs, c_backend, find_qemu, kill, pump, Line, GUEST_MODULES, HOST_PACKAGES,
};
use super::{build_vm_cli, lab, run_cmd, stamp, target_dir, workspace_root, Accel, Opts};

const USAGE: &str = "\
usage: cargo xtask bench-display [--secs N] [--qemu PATH] [--vm-cli PATH] [--no-install] [--verbose]
  --secs N        seconds per phase (full frames, then device path) in each guest (default 5)
  --qemu PATH     the QEMU (8.0 or newer) for all three peers (default as cargo xtask e2e)
  --no-install    never run apt-get (fail with what is missing instead)
  --verbose       echo the guest consoles";

/// Updates per second the guest counted.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Rates {
    /// Fill of the whole frame + DIRTYFB.
    full: f64,
    /// DIRTYFB of an unchanged frame.
    dirty: f64,
}

/// `BENCH full=123.4 dirty=567.8 …` → the rates.
fn parse_bench(line: &str) -> Option<Rates> {
    let mut full = None;
    let mut dirty = None;
    for word in line.strip_prefix("BENCH ")?.split_whitespace() {
        if let Some(v) = word.strip_prefix("full=") {
            full = v.parse().ok();
        } else if let Some(v) = word.strip_prefix("dirty=") {
            dirty = v.parse().ok();
        }
    }
    Some(Rates {
        full: full?,
        dirty: dirty?,
    })
}

struct Args {
    secs: u32,
    qemu: Option<PathBuf>,
    /// A vm-cli to run instead of the test build (`cargo xtask bench` passes its release one).
    vm_cli: Option<PathBuf>,
    opts: Opts,
}

fn parse_args(args: &[String]) -> Result<Option<Args>, String> {
    let mut secs = 5;
    let mut qemu = None;
    let mut vm_cli = None;
    let (mut no_install, mut verbose) = (false, false);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--secs" => {
                let v = it.next().ok_or("--secs needs a number")?;
                secs = v
                    .parse()
                    .ok()
                    .filter(|s| (1..=120).contains(s))
                    .ok_or_else(|| format!("--secs {v}: expected 1 to 120 seconds"))?;
            }
            "--qemu" => qemu = Some(PathBuf::from(it.next().ok_or("--qemu needs a path")?)),
            "--vm-cli" => vm_cli = Some(PathBuf::from(it.next().ok_or("--vm-cli needs a path")?)),
            "--no-install" => no_install = true,
            "--verbose" => verbose = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            other => return Err(format!("unknown option {other:?}\n{USAGE}")),
        }
    }
    Ok(Some(Args {
        secs,
        qemu,
        vm_cli,
        opts: Opts {
            accel: Accel::Tcg,
            keep: false,
            scenarios: Vec::new(),
            update_fixtures: false,
            // Boot (≈ 5 s under TCG) + two phases + slack for a loaded machine.
            timeout: Duration::from_secs(90 + 2 * u64::from(secs)),
            no_install,
            verbose,
        },
    }))
}

/// Runs one peer's guest until it prints its `BENCH` line and powers off.
fn measure(name: &str, mut cmd: Command, opts: &Opts, log_path: &Path) -> Result<Rates, String> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{name}: cannot run {cmd:?}: {e}"))?;
    let (tx, rx) = mpsc::channel();
    pump(child.stdout.take().ok_or("no stdout")?, tx.clone(), false);
    pump(child.stderr.take().ok_or("no stderr")?, tx, true);
    let deadline = Instant::now() + opts.timeout;
    let mut log = String::new();
    let result = loop {
        let now = Instant::now();
        if now >= deadline {
            break Err(format!("timed out after {:?}", opts.timeout));
        }
        let text = match rx.recv_timeout(deadline - now) {
            Ok(Line::Out(t)) => t,
            Ok(Line::Err(t)) => {
                log.push_str(&t);
                log.push('\n');
                continue;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                break Err("exited before the guest printed its BENCH line".into())
            }
        };
        if opts.verbose {
            eprintln!("{name} | {text}");
        }
        log.push_str(&text);
        log.push('\n');
        if let Some(why) = text.strip_prefix("BENCH fail ") {
            break Err(format!("guest: {why}"));
        }
        if let Some(r) = parse_bench(&text) {
            break Ok(r);
        }
    };
    // The guest powers off after its line; give it a moment, then stop it.
    let stop = Instant::now() + Duration::from_secs(20);
    while Instant::now() < stop && matches!(child.try_wait(), Ok(None)) {
        std::thread::sleep(Duration::from_millis(50));
    }
    kill(&mut child);
    while let Ok(l) = rx.try_recv() {
        let (Line::Out(t) | Line::Err(t)) = l;
        log.push_str(&t);
        log.push('\n');
    }
    let _ = std::fs::write(log_path, &log);
    result.map_err(|e| {
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        format!(
            "{name}: {e}\nlast lines (all in {}):\n{}",
            log_path.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    })
}

/// QEMU with the recipe's machine (TCG, 1 vCPU, 512 MiB shared memfd RAM) and `device`.
fn qemu_cmd(qemu: &Path, kernel: &Path, initrd: &Path, append: &str, device: &[&str]) -> Command {
    let mut c = Command::new(qemu);
    // QEMU extracted from backports: its own firmware directory and modules first.
    if let Some(usr) = qemu.parent().and_then(Path::parent) {
        let share = usr.join("share/qemu");
        if share.is_dir() {
            c.arg("-L").arg(share).args(["-L", "/usr/share/qemu"]);
        }
        let modules = usr.join("lib/x86_64-linux-gnu/qemu");
        if modules.is_dir() {
            c.env("QEMU_MODULE_DIR", modules);
        }
    }
    c.args(["-accel", "tcg", "-m", "512M", "-smp", "1"])
        .args([
            "-object",
            "memory-backend-memfd,id=mem,size=512M,share=on",
            "-machine",
            "q35,memory-backend=mem",
        ])
        .args(["-nodefaults", "-no-reboot", "-vga", "none", "-net", "none"])
        .args(device)
        .args(["-display", "none", "-serial", "stdio"])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", append]);
    c
}

/// Peer 2: QEMU's C backend listening on a socket, QEMU as its front-end.
fn measure_c_backend(
    backend: &Path,
    libdir: &Path,
    qemu: Command,
    sock: &Path,
    opts: &Opts,
    log: &Path,
) -> Result<Rates, String> {
    let _ = std::fs::remove_file(sock);
    let blog = log.with_extension("backend.txt");
    let err = std::fs::File::create(&blog).map_err(|e| format!("{}: {e}", blog.display()))?;
    let mut server: Child = Command::new(backend)
        .arg(format!("--socket-path={}", sock.display()))
        .env("LD_LIBRARY_PATH", libdir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", backend.display()))?;
    let ready = Instant::now() + Duration::from_secs(15);
    while !sock.exists() {
        if Instant::now() > ready || !matches!(server.try_wait(), Ok(None)) {
            kill(&mut server);
            let why = std::fs::read_to_string(&blog).unwrap_or_default();
            return Err(format!(
                "{} made no socket {} within 15 s: {}",
                backend.display(),
                sock.display(),
                why.trim()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = measure("C vhost-user-gpu", qemu, opts, log);
    // It exits by itself when QEMU goes; make sure.
    let stop = Instant::now() + Duration::from_secs(5);
    while Instant::now() < stop && matches!(server.try_wait(), Ok(None)) {
        std::thread::sleep(Duration::from_millis(50));
    }
    kill(&mut server);
    r
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| {
            let v: Vec<&str> = l.split_whitespace().take(3).collect();
            (v.len() == 3).then(|| v.join(" "))
        })
        .unwrap_or_else(|| "unknown".into())
}

fn cell(r: &Result<Rates, String>, f: impl Fn(&Rates) -> f64) -> String {
    match r {
        Ok(r) => format!("{:.1}", f(r)),
        Err(_) => "failed".into(),
    }
}

fn ratio(
    a: &Result<Rates, String>,
    b: &Result<Rates, String>,
    f: impl Fn(&Rates) -> f64,
) -> String {
    match (a, b) {
        (Ok(a), Ok(b)) if f(b) > 0.0 => format!("{:.2}x", f(a) / f(b)),
        _ => "n/a".into(),
    }
}

/// Runs the three peers and prints the table.
pub fn run(args: &[String]) -> Result<(), String> {
    let Some(Args {
        secs,
        qemu,
        vm_cli,
        opts,
    }) = parse_args(args)?
    else {
        return Ok(());
    };
    let root = workspace_root();
    let target = target_dir(&root);
    let e2e = target.join("e2e");
    let run_dir = e2e.join("bench");
    let _ = std::fs::remove_dir_all(&run_dir);
    std::fs::create_dir_all(run_dir.join("xdg"))
        .map_err(|e| format!("mkdir {}: {e}", run_dir.display()))?;
    let mut pkgs: Vec<String> = HOST_PACKAGES.iter().map(|s| s.to_string()).collect();
    pkgs.push("gcc".into());
    pkgs.push("libc6-dev".into());
    lab::ensure_packages(&pkgs, &opts)?;
    let kernel = lab::prepare_plain(&target.join("kernel-lab"), &opts, GUEST_MODULES)?;
    let bpo = e2e.join("qemu-bpo");
    let qemu = find_qemu(qemu, &bpo, &opts)?;
    let vm_cli = match vm_cli {
        Some(p) => p,
        None => build_vm_cli(&root)?.swap_remove(0),
    };

    let tool = run_dir.join("displaybench");
    let src = root.join("xtask/src/kernel_test/guest/displaybench.c");
    run_cmd(
        Command::new("gcc")
            .args(["-static", "-O2", "-Wall", "-o"])
            .arg(&tool)
            .arg(&src),
        "gcc -static displaybench.c",
    )?;
    let tool_bytes = std::fs::read(&tool).map_err(|e| format!("{}: {e}", tool.display()))?;
    let initrd = run_dir.join("initramfs.cpio");
    build_initramfs(
        &kernel,
        &run_dir.join("initramfs-root"),
        &initrd,
        include_str!("bench-display-init.sh"),
        &[("bin/displaybench", &tool_bytes, 0o755)],
        GUEST_MODULES,
    )?;
    let append = format!("console=ttyS0 quiet panic=-1 bench_secs={secs}");
    let load_before = loadavg();

    stamp("peer 1: QEMU -device virtio-gpu-pci (built-in)");
    let builtin = measure(
        "built-in virtio-gpu-pci",
        qemu_cmd(
            &qemu,
            &kernel.vmlinux,
            &initrd,
            &append,
            &["-device", "virtio-gpu-pci"],
        ),
        &opts,
        &run_dir.join("builtin.txt"),
    );

    stamp("peer 2: QEMU -device vhost-user-gpu-pci + QEMU's C vhost-user-gpu");
    let sock = run_dir.join("c-gpu.sock");
    let chardev = format!("socket,id=vgpu,path={}", sock.display());
    let c = c_backend(&bpo, &opts).and_then(|(backend, libdir)| {
        measure_c_backend(
            &backend,
            &libdir,
            qemu_cmd(
                &qemu,
                &kernel.vmlinux,
                &initrd,
                &append,
                &[
                    "-chardev",
                    &chardev,
                    "-device",
                    "vhost-user-gpu-pci,chardev=vgpu",
                ],
            ),
            &sock,
            &opts,
            &run_dir.join("c-backend.txt"),
        )
    });

    stamp("peer 3: vm-cli --kernel … --gpu-mode wgpu (ours: vm-cli gpu serve-wgpu)");
    let mut ours_cmd = Command::new(&vm_cli);
    ours_cmd
        .arg("--kernel")
        .arg(&kernel.vmlinux)
        .arg("--initrd")
        .arg(&initrd)
        .args(["--append", &append])
        .args(["--gpu-mode", "wgpu", "--memory", "512M", "--cpus", "1"])
        .arg("--qemu")
        .arg(&qemu)
        .env("XDG_RUNTIME_DIR", run_dir.join("xdg"))
        .env_remove("VM_HOST_ROOT");
    let ours = measure("ours (vm-cli)", ours_cmd, &opts, &run_dir.join("ours.txt"));
    let load_after = loadavg();

    let rows = [
        ("QEMU virtio-gpu-pci (built-in)", &builtin),
        ("QEMU vhost-user-gpu (C backend)", &c),
        ("vm-cli gpu serve-wgpu (ours)", &ours),
    ];
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "display bench: guest 1280x800 XRGB8888 KMS dumb buffer, QEMU TCG 1 vCPU, {secs} s per phase; load average {load_before} before, {load_after} after"
    );
    let _ = writeln!(
        out,
        "  {:<34} {:>14} {:>15}",
        "peer", "full-frame/s", "device-path/s"
    );
    for (name, r) in rows {
        let _ = writeln!(
            out,
            "  {name:<34} {:>14} {:>15}",
            cell(r, |r| r.full),
            cell(r, |r| r.dirty)
        );
    }
    let _ = writeln!(
        out,
        "  ours / C backend: full {}, device path {}   (goal >= 1.00x)",
        ratio(&ours, &c, |r| r.full),
        ratio(&ours, &c, |r| r.dirty)
    );
    let _ = writeln!(
        out,
        "  built-in / ours:  full {}, device path {}   (goal <= 2.00x)",
        ratio(&builtin, &ours, |r| r.full),
        ratio(&builtin, &ours, |r| r.dirty)
    );
    let failed: Vec<String> = rows
        .iter()
        .filter_map(|(name, r)| r.as_ref().err().map(|e| format!("{name}: {e}")))
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "bench-display: {} of 3 peers failed (logs in {}):\n{}",
            failed.len(),
            run_dir.display(),
            failed.join("\n")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guest_line_gives_both_rates() {
        assert_eq!(
            parse_bench("BENCH full=118.5 dirty=830.0 mode=1280x800 full_n=593 dirty_n=4150"),
            Some(Rates {
                full: 118.5,
                dirty: 830.0
            })
        );
        assert_eq!(parse_bench("BENCH full=1.0"), None);
        assert_eq!(parse_bench("BENCH fail GETCRTC: No such file"), None);
        assert_eq!(parse_bench("BENCH start uptime 4.8"), None);
        assert_eq!(parse_bench("full=1 dirty=2"), None);
    }

    #[test]
    fn arguments() {
        let a = parse_args(&["--secs".into(), "2".into()]).unwrap().unwrap();
        assert_eq!(a.secs, 2);
        assert!(parse_args(&["--secs".into(), "0".into()]).is_err());
        assert!(parse_args(&["--secs".into(), "x".into()]).is_err());
        assert!(parse_args(&["--bogus".into()]).is_err());
    }

    #[test]
    fn ratios_say_na_when_a_peer_failed() {
        let a = Ok(Rates {
            full: 200.0,
            dirty: 800.0,
        });
        let b = Ok(Rates {
            full: 100.0,
            dirty: 400.0,
        });
        assert_eq!(ratio(&a, &b, |r| r.full), "2.00x");
        assert_eq!(ratio(&a, &Err("x".into()), |r| r.dirty), "n/a");
        assert_eq!(cell(&Err("x".into()), |r| r.full), "failed");
    }
}
