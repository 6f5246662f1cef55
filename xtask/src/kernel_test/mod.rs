//! `cargo xtask kernel-test`: boot Debian's real kernel in QEMU (q35, emulated Intel IOMMU,
//! the lab's display devices, the kernel's sample mdev parents) with an initramfs holding
//! the project's `vm-cli` and the examples of [`GUEST_EXAMPLES`] (`vfio_smoke`), run the
//! scenario scripts of [`scenarios::SCENARIOS`] inside, and report one line per scenario
//! plus `N passed, M failed`.
//!
//! Scenarios that change the host record the tree at their checkpoints (`snap NAME`); their
//! host checks ([`differential`]) replay the same operations on the simulator from the first
//! tree and fail on any difference in drivers, overrides, mdevs, pools, groups, `/dev/vfio`
//! or VFIO reports: a simulator bug. The crash scenario slows `vm-cli gpu prepare` down with
//! `VM_DEVICE_STEP_DELAY_MS` (see `vm_device::plan::step_delay`) to kill it between steps.
//!
//! The recipe is `docs/tools/qemu-kernel-lab.sh`; measurements in
//! `docs/qemu-kernel-lab.md`. Everything downloaded or built is cached under
//! `target/kernel-lab/<kernel-version>/`; serial logs go to `target/kernel-lab/logs/`.

pub mod bench_display;
mod differential;
pub mod e2e;
mod initramfs;
mod lab;
pub mod nested;
mod qemu;
mod scenarios;
mod serial;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use scenarios::{Scenario, SCENARIOS};

/// Where `--update-fixtures` puts the tree the `record` scenario recorded.
const FIXTURE_NAME: &str = "qemu-q35-viommu-lab";

/// QEMU accelerator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Emulation: works everywhere (the default; nested-PVM `/dev/kvm` cannot boot a stock kernel).
    Tcg,
    /// Hardware virtualization, on hosts with real VMX/SVM.
    Kvm,
}

impl Accel {
    fn name(self) -> &'static str {
        match self {
            Accel::Tcg => "tcg",
            Accel::Kvm => "kvm",
        }
    }
}

/// Command-line options.
#[derive(Debug, Clone)]
pub struct Opts {
    accel: Accel,
    keep: bool,
    scenarios: Vec<String>,
    update_fixtures: bool,
    timeout: Duration,
    no_install: bool,
    verbose: bool,
}

const USAGE: &str = "\
usage: cargo xtask kernel-test [--accel tcg|kvm] [--scenario NAME]... [--update-fixtures]
                               [--keep] [--timeout SECS] [--no-install] [--verbose] [--list]
  --accel          QEMU accelerator (default tcg; kvm needs real VMX/SVM)
  --scenario NAME  run only these scenarios (repeatable; default all)
  --update-fixtures  store the tree of the `record` scenario as fixtures/hosts/qemu-q35-viommu-lab
  --keep           keep the initramfs, its staging tree and the artifacts under target/kernel-lab/run
  --timeout SECS   give up on the guest after SECS (default 300)
  --no-install     never run apt-get (fail with the list of missing packages instead)
  --verbose        echo every scenario output line, not only verdicts
  --list           print the scenarios and exit";

fn parse_args(args: &[String]) -> Result<Option<Opts>, String> {
    let mut o = Opts {
        accel: Accel::Tcg,
        keep: false,
        scenarios: Vec::new(),
        update_fixtures: false,
        timeout: Duration::from_secs(300),
        no_install: false,
        verbose: false,
    };
    let mut it = args.iter().cloned();
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (a.clone(), None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{name} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--accel" => {
                o.accel = match value("--accel")?.as_str() {
                    "tcg" => Accel::Tcg,
                    "kvm" => Accel::Kvm,
                    other => return Err(format!("--accel {other}: expected tcg or kvm")),
                }
            }
            "--scenario" => {
                let n = value("--scenario")?;
                if scenarios::find(&n).is_none() {
                    let names: Vec<_> = SCENARIOS.iter().map(|s| s.name).collect();
                    return Err(format!("no scenario {n:?}; known: {}", names.join(", ")));
                }
                o.scenarios.push(n);
            }
            "--timeout" => {
                let v = value("--timeout")?;
                let secs: u64 = v
                    .parse()
                    .map_err(|_| format!("--timeout {v}: expected whole seconds"))?;
                o.timeout = Duration::from_secs(secs);
            }
            "--keep" => o.keep = true,
            "--update-fixtures" => o.update_fixtures = true,
            "--no-install" => o.no_install = true,
            "--verbose" | "-v" => o.verbose = true,
            "--list" => {
                for s in SCENARIOS {
                    println!("{:<18} {}", s.name, s.about);
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
    if o.update_fixtures && !o.scenarios.is_empty() && !o.scenarios.iter().any(|s| s == "record") {
        return Err("--update-fixtures needs the record scenario: add --scenario record".into());
    }
    Ok(Some(o))
}

static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// Prints a progress line with the seconds since the start.
fn stamp(msg: &str) {
    let t = START.get_or_init(Instant::now).elapsed().as_secs_f64();
    eprintln!("[kernel-test {t:6.1}s] {msg}");
}

/// Runs a command; its stdout on success, an error with its stderr otherwise.
fn run_cmd(cmd: &mut Command, what: &str) -> Result<String, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("{what}: cannot run {:?}: {e}", cmd.get_program()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(15).collect();
        Err(format!(
            "{what} failed ({}): {}",
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ))
    }
}

fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().unwrap_or(here).to_path_buf()
}

fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| if p.is_absolute() { p } else { root.join(p) })
        .unwrap_or_else(|| root.join("target"))
}

/// Examples the scenarios run beside vm-cli (`examples/NAME.rs`), copied into the guest's
/// `/bin` like vm-cli.
pub const GUEST_EXAMPLES: &[&str] = &["vfio_smoke"];

/// Builds `vm-cli` and [`GUEST_EXAMPLES`] (debug, the test build); their paths, vm-cli first.
fn build_vm_cli(root: &Path) -> Result<Vec<PathBuf>, String> {
    // The same build `cargo test --workspace` makes (it builds vm-cli and the examples with
    // the test run's feature set), so after the tests this is a no-op, not a second build of
    // wgpu with other features.
    let args = crate::sim::TEST_BUILD.to_vec();
    stamp(&format!("cargo {}", args.join(" ")));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(&args)
        .current_dir(root)
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!("cargo {} failed ({status})", args.join(" ")));
    }
    let debug = target_dir(root).join("debug");
    let mut bins = vec![debug.join("vm-cli")];
    bins.extend(
        GUEST_EXAMPLES
            .iter()
            .map(|e| debug.join("examples").join(e)),
    );
    match bins.iter().find(|b| !b.is_file()) {
        Some(missing) => Err(format!(
            "cargo build succeeded but {} is missing",
            missing.display()
        )),
        None => Ok(bins),
    }
}

/// The verdict of one scenario after the host looked at it.
struct Outcome {
    name: String,
    passed: bool,
    seconds: Option<f64>,
    detail: String,
}

fn judge(
    s: &Scenario,
    guest: &serial::GuestLog,
    art_root: Option<&Path>,
    why_missing: &str,
) -> Outcome {
    let log = guest.scenarios.get(s.name);
    let seconds = log.and_then(|l| l.seconds);
    let fail = |detail: String| Outcome {
        name: s.name.to_string(),
        passed: false,
        seconds,
        detail,
    };
    let Some(log) = log else {
        return fail(format!("never started: {why_missing}"));
    };
    let Some((passed, detail)) = &log.verdict else {
        return fail(format!("no KTEST line: {why_missing}"));
    };
    if !passed {
        return fail(detail.clone());
    }
    let missing: Vec<&str> = s
        .expect
        .iter()
        .copied()
        .filter(|e| !log.output.iter().any(|l| l.contains(e)))
        .collect();
    if !missing.is_empty() {
        return fail(format!(
            "guest said PASS but expected output is missing: {}",
            missing.join(" | ")
        ));
    }
    let mut detail = detail.clone();
    if let Some(check) = s.host_check {
        let art = art_root.map(|r| r.join(s.name));
        match art {
            None => return fail("guest said PASS but its artifacts did not arrive".into()),
            Some(dir) => match check(&log.output, &dir) {
                Ok(d) => detail = format!("{detail}; host: {d}"),
                Err(e) => return fail(format!("host check: {e}")),
            },
        }
    }
    Outcome {
        name: s.name.to_string(),
        passed: true,
        seconds,
        detail,
    }
}

fn utc_stamp() -> String {
    Command::new("date")
        .args(["-u", "+%Y%m%d-%H%M%S"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("{}", std::process::id()))
}

/// Entry point: `cargo xtask kernel-test ARGS`.
pub fn run(args: &[String]) -> Result<(), String> {
    START.get_or_init(Instant::now);
    let Some(opts) = parse_args(args)? else {
        return Ok(());
    };
    let root = workspace_root();
    let lab_root = target_dir(&root).join("kernel-lab");
    let selected: Vec<&Scenario> = if opts.scenarios.is_empty() {
        SCENARIOS.iter().collect()
    } else {
        SCENARIOS
            .iter()
            .filter(|s| opts.scenarios.iter().any(|n| n == s.name))
            .collect()
    };

    let t = Instant::now();
    let kernel = lab::prepare(&lab_root, &opts)?;
    let t_kernel = t.elapsed().as_secs_f64();
    stamp(&format!("kernel cache {}", kernel.dir.display()));
    let t = Instant::now();
    let bins = build_vm_cli(&root)?;
    let t_cli = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let work = lab_root.join("run");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| format!("mkdir {}: {e}", work.display()))?;
    let initrd = work.join("initramfs.cpio");
    initramfs::build(&kernel, &bins, &selected, &work.join("root"), &initrd)?;
    let t_initrd = t.elapsed().as_secs_f64();

    let logs = lab_root.join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| format!("mkdir {}: {e}", logs.display()))?;
    let st = utc_stamp();
    let log = logs.join(format!("{st}-serial.log"));
    let ttys1 = work.join("ttyS1.b64");
    let args = qemu::qemu_args(opts.accel, &kernel.vmlinux, &initrd, &ttys1);
    stamp(&format!(
        "qemu-system-x86_64 -accel {} (linux {} {}), {} scenario(s), timeout {}s, log {}",
        opts.accel.name(),
        kernel.kver,
        kernel.pkg_version,
        selected.len(),
        opts.timeout.as_secs(),
        log.display()
    ));
    let boot = qemu::boot(&args, &log, opts.timeout, opts.verbose)?;
    let _ = std::fs::copy(&log, logs.join("latest-serial.log"));

    let art_dir = work.join("artifacts");
    let artifacts = match qemu::unpack_artifacts(&ttys1, &art_dir) {
        Ok(d) => Some(d),
        Err(e) => {
            stamp(&format!("artifacts: {e}"));
            None
        }
    };
    let why_missing = if boot.timed_out {
        format!("the guest timed out ({})", boot.exit)
    } else if !boot.guest.ended {
        format!(
            "the guest stopped before KTEST-END (qemu: {}; see {})",
            boot.exit,
            log.display()
        )
    } else {
        "the guest did not run it".to_string()
    };
    for n in &boot.guest.setup_notes {
        stamp(&format!("guest setup: {n}"));
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

    // fixtures
    if opts.update_fixtures {
        let rec = outcomes.iter().find(|o| o.name == "record");
        match (rec, &artifacts) {
            (Some(o), Some(a)) if o.passed => {
                let dest = root.join("fixtures/hosts").join(FIXTURE_NAME);
                let _ = std::fs::remove_dir_all(&dest);
                if let Some(p) = dest.parent() {
                    std::fs::create_dir_all(p)
                        .map_err(|e| format!("mkdir {}: {e}", p.display()))?;
                }
                run_cmd(
                    Command::new("cp")
                        .arg("-a")
                        .arg(a.join("record/tree"))
                        .arg(&dest),
                    "copy the recorded tree",
                )?;
                // say where the tree came from, in the README's one paragraph
                let readme = dest.join(".fixture/README");
                let text = std::fs::read_to_string(&readme)
                    .map_err(|e| format!("read {}: {e}", readme.display()))?;
                let text = format!(
                    "{} Recorded with `cargo xtask kernel-test --update-fixtures` inside the lab guest: QEMU q35 with an emulated Intel IOMMU (intel-iommu,intremap=on; cmdline intel_iommu=on iommu=pt) under {}, Debian's linux-image-{} ({}), bochs-display, VGA, virtio-gpu-pci and qxl each on a root port, two bochs-display behind one pcie-pci-bridge, vfio/vfio-pci/mdev and the kernel's sample mdev parents mbochs, mdpy, mtty loaded, nothing bound to vfio-pci and no mdev created.\n",
                    text.trim_end(),
                    opts.accel.name(),
                    kernel.kver,
                    kernel.pkg_version
                );
                std::fs::write(&readme, text)
                    .map_err(|e| format!("write {}: {e}", readme.display()))?;
                stamp(&format!("fixture written: {}", dest.display()));
            }
            _ => stamp("--update-fixtures: the record scenario did not pass; fixtures left alone"),
        }
    }

    let guest_secs = match (boot.guest.init_uptime, boot.guest.end_uptime) {
        (Some(a), Some(b)) => format!("{:.1}s", b - a),
        _ => "?".into(),
    };
    stamp(&format!(
        "timings: kernel cache {t_kernel:.1}s, vm-cli build {t_cli:.1}s, initramfs {t_initrd:.1}s, qemu {:.1}s (start -> /init {}, guest /init -> end {guest_secs}; exit: {})",
        boot.wall,
        boot.to_init.map(|t| format!("{t:.1}s")).unwrap_or_else(|| "never".into()),
        boot.exit
    ));
    if opts.keep {
        stamp(&format!(
            "kept {} (initramfs.cpio, root/, artifacts/, ttyS1.b64)",
            work.display()
        ));
    } else {
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
    let passed = outcomes.iter().filter(|o| o.passed).count();
    let failed = outcomes.len() - passed;
    println!("{passed} passed, {failed} failed");
    if failed == 0 {
        Ok(())
    } else {
        Err(format!(
            "kernel-test: {failed} failed; serial log {}",
            log.display()
        ))
    }
}
