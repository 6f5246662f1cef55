//! Booting the lab guest and reading its console until `KTEST-END`, a timeout or QEMU's exit.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::serial::GuestLog;
use super::Accel;

/// How the QEMU run ended.
#[derive(Debug)]
pub struct Boot {
    /// The parsed protocol.
    pub guest: GuestLog,
    /// QEMU's exit status text, or why it was killed.
    pub exit: String,
    /// True when the harness gave up waiting.
    pub timed_out: bool,
    /// Host seconds from QEMU start to `KTEST-INIT`.
    pub to_init: Option<f64>,
    /// Host seconds QEMU ran.
    pub wall: f64,
}

/// The lab topology (`docs/qemu-kernel-lab.md`): one display device per root port,
/// two bochs-display behind one pcie-pci-bridge (a shared IOMMU group).
pub fn qemu_args(accel: Accel, kernel: &Path, initrd: &Path, ttys1: &Path) -> Vec<String> {
    let mut a: Vec<String> = [
        "-machine",
        "q35,kernel-irqchip=split",
        "-accel",
        accel.name(),
        "-m",
        "1024",
        "-smp",
        "1",
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
        "bochs-display,bus=rp1",
        "-device",
        "pcie-root-port,id=rp2,bus=pcie.0,chassis=2,slot=2,addr=0x3",
        "-device",
        "VGA,bus=rp2",
        "-device",
        "pcie-root-port,id=rp3,bus=pcie.0,chassis=3,slot=3,addr=0x4",
        "-device",
        "virtio-gpu-pci,bus=rp3",
        "-device",
        "pcie-root-port,id=rp4,bus=pcie.0,chassis=4,slot=4,addr=0x5",
        "-device",
        "qxl,bus=rp4",
        "-device",
        "pcie-root-port,id=rp5,bus=pcie.0,chassis=5,slot=5,addr=0x6",
        "-device",
        "pcie-pci-bridge,id=br1,bus=rp5",
        "-device",
        "bochs-display,bus=br1,addr=0x1",
        "-device",
        "bochs-display,bus=br1,addr=0x2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.push("-kernel".into());
    a.push(kernel.display().to_string());
    a.push("-initrd".into());
    a.push(initrd.display().to_string());
    a.push("-append".into());
    a.push("console=ttyS0 quiet intel_iommu=on iommu=pt panic=-1".into());
    a.push("-serial".into());
    a.push("mon:stdio".into());
    a.push("-serial".into());
    a.push(format!("file:{}", ttys1.display()));
    if accel == Accel::Kvm {
        a.push("-cpu".into());
        a.push("host,-arch-capabilities".into());
    }
    a
}

/// Runs QEMU, tees its console (with host timestamps) to `log`, and echoes protocol lines.
pub fn boot(args: &[String], log: &Path, timeout: Duration, verbose: bool) -> Result<Boot, String> {
    boot_with(args, log, timeout, verbose, &mut |_, _| {})
}

/// [`boot`], handing every console line (with its host seconds) to `on_line` as it comes,
/// so a harness can act while the guest runs (nested-test's screendumps).
pub fn boot_with(
    args: &[String],
    log: &Path,
    timeout: Duration,
    verbose: bool,
    on_line: &mut dyn FnMut(f64, &str),
) -> Result<Boot, String> {
    let start = Instant::now();
    let mut child = Command::new("qemu-system-x86_64")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start qemu-system-x86_64: {e} (install qemu-system-x86)"))?;
    let (tx, rx) = mpsc::channel::<(f64, String)>();
    for stream in [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stream);
            let mut buf = Vec::new();
            while r
                .read_until(b'\n', &mut buf)
                .map(|n| n > 0)
                .unwrap_or(false)
            {
                let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                if tx.send((start.elapsed().as_secs_f64(), line)).is_err() {
                    break;
                }
                buf.clear();
            }
        });
    }
    drop(tx);
    let mut logf =
        std::fs::File::create(log).map_err(|e| format!("create {}: {e}", log.display()))?;
    let mut guest = GuestLog::default();
    let mut to_init = None;
    let mut timed_out = false;
    let deadline = start + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            timed_out = true;
            break;
        }
        match rx.recv_timeout(left.min(Duration::from_millis(500))) {
            Ok((t, line)) => {
                let _ = writeln!(logf, "{t:8.2} {line}");
                guest.feed(&line);
                on_line(t, &line);
                if to_init.is_none() && guest.init_uptime.is_some() {
                    to_init = Some(t);
                }
                if let Some(at) = line.find("KTEST") {
                    let l = &line[at..];
                    if verbose || !l.starts_with("KTEST-OUT") {
                        eprintln!("  {t:7.2}s {l}");
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break, // QEMU closed its output
        }
        if let Ok(Some(_)) = child.try_wait() {
            // drain what is left
            while let Ok((t, line)) = rx.recv_timeout(Duration::from_millis(200)) {
                let _ = writeln!(logf, "{t:8.2} {line}");
                guest.feed(&line);
            }
            break;
        }
    }
    let exit = if timed_out {
        let _ = child.kill();
        let _ = child.wait();
        format!("killed after {}s without KTEST-END", timeout.as_secs())
    } else {
        // after KTEST-END the guest powers off; give QEMU a moment to exit
        let grace = Instant::now() + Duration::from_secs(10);
        loop {
            match child.try_wait() {
                Ok(Some(st)) => break format!("{st}"),
                Ok(None) if Instant::now() < grace => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break "killed: still running 10 s after its output ended".to_string();
                }
            }
        }
    };
    Ok(Boot {
        guest,
        exit,
        timed_out,
        to_init,
        wall: start.elapsed().as_secs_f64(),
    })
}

/// Decodes the base64(tar.gz) the guest wrote to ttyS1 into `dest`.
pub fn unpack_artifacts(ttys1: &Path, dest: &Path) -> Result<PathBuf, String> {
    let text =
        std::fs::read_to_string(ttys1).map_err(|e| format!("read {}: {e}", ttys1.display()))?;
    let clean: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    if clean.is_empty() {
        return Err(format!(
            "{} is empty: the guest sent no artifacts",
            ttys1.display()
        ));
    }
    let _ = std::fs::remove_dir_all(dest);
    std::fs::create_dir_all(dest).map_err(|e| format!("mkdir {}: {e}", dest.display()))?;
    let mut child = Command::new("bash")
        .args([
            "-o",
            "pipefail",
            "-c",
            "base64 -d | tar -xzf - -C \"$0\"",
            &dest.display().to_string(),
        ])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run base64/tar: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(clean.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("base64/tar: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "decoding the artifacts of {} failed: {}",
            ttys1.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(dest.to_path_buf())
}
