//! `vm-cli --kernel K …` without `--dry-run`: plan the launch, print it (`--print-cmdline`)
//! or run the VM and give everything back when it ends.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::{write_text, RunArgs, EXIT_FAILURE, EXIT_LEFT_CHANGES, EXIT_OK};
use crate::host::Host;
use crate::inventory::HostInventory;
use crate::ladder::Candidate;
use crate::launch::{self as l, LaunchOptions};

/// This VM's directory for sockets: `$XDG_RUNTIME_DIR/vm-device/vm-PID`, or under the
/// temporary directory.
fn run_dir() -> PathBuf {
    let base = match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => std::env::temp_dir(),
    };
    base.join("vm-device")
        .join(format!("vm-{}", std::process::id()))
}

fn backend_command() -> Vec<OsString> {
    let exe = std::env::current_exe()
        .map(PathBuf::into_os_string)
        .unwrap_or_else(|_| "vm-cli".into());
    vec![exe, "gpu".into(), "serve-wgpu".into()]
}

/// `Ok` when `path` is a regular file this process can open for reading.
fn readable_file(flag: &str, path: &Path) -> Result<(), String> {
    let md = std::fs::metadata(path).map_err(|e| format!("{flag} {}: {e}", path.display()))?;
    if !md.is_file() {
        return Err(format!("{flag} {}: not a regular file", path.display()));
    }
    std::fs::File::open(path)
        .map(drop)
        .map_err(|e| format!("{flag} {}: cannot be read: {e}", path.display()))
}

/// `--dry-run`: the tuning of the selected candidate (node, cores, hugepages), added to the
/// text and to the JSON document (`tuning`); a refusal (too few hugepages) is the exit code,
/// as the launch would give it.
pub(super) fn dry_run_tuning(
    mgr: &crate::gpu_manager::UnifiedGpuManager,
    run: &RunArgs,
    json: bool,
    doc: &mut Option<Value>,
) -> i32 {
    let Some(candidate) = mgr.get_selected_backend() else {
        return EXIT_OK;
    };
    let opts = run.tuning();
    match l::plan_tuning(
        mgr.host().as_ref(),
        &candidate.target,
        run.memory,
        run.cpus,
        &opts,
    ) {
        Ok(t) => {
            if let Some(v) = doc.as_mut().filter(|_| json) {
                v["tuning"] = serde_json::to_value(&t).unwrap_or(Value::Null);
            } else if !json && !t.is_empty() {
                write_text(&t.text());
            }
            EXIT_OK
        }
        Err(e) => {
            if let Some(v) = doc.as_mut().filter(|_| json) {
                v["tuning_error"] = json!(e.to_string());
            }
            eprintln!("vm-cli: {e}");
            l::LaunchError::Tuning(e).exit_code()
        }
    }
}

/// Plans (on `inv`, the scan the candidate was chosen on) and prints (`--print-cmdline`)
/// or runs the VM; adds `launch` (and `outcome`) to the JSON document.
pub(super) fn launch(
    host: &Host,
    inv: &HostInventory,
    candidate: &Candidate,
    run: &RunArgs,
    (state_dir, simulated): (&Path, bool),
    json: bool,
    doc: &mut Option<Value>,
) -> i32 {
    let Some(kernel) = run.kernel.clone() else {
        eprintln!("vm-cli: --kernel is required to start a VM");
        return super::EXIT_USAGE;
    };
    let run_dir = run_dir();
    // Chosen by `cli::run` (`StateDirChoice`): a simulated host's journals stay with the
    // simulation, never in the real state directory unless --state-dir says so.
    let state_dir = state_dir.to_path_buf();
    let opts = LaunchOptions {
        kernel,
        initrd: run.initrd.clone(),
        append: run.append.clone(),
        memory_bytes: run.memory,
        cpus: run.cpus,
        x_vga: run.x_vga,
        allow_boot_vga: run.allow_boot_vga,
        state_dir,
        run_dir,
        backend_command: backend_command(),
        mdev_uuid: crate::rungs::mdev::UuidSource::Random,
        tuning: run.tuning(),
    };
    let qemu = match l::find_qemu(run.qemu.as_deref(), std::env::var_os("PATH")) {
        Ok(q) => q,
        Err(e) => {
            eprintln!("vm-cli: {e}");
            return EXIT_FAILURE;
        }
    };
    let accel = l::choose_accel(host.as_ref());
    let plan = match l::plan_launch_in(host.as_ref(), inv, candidate, qemu, accel, &opts) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("vm-cli: {e}");
            return e.exit_code();
        }
    };
    if let Some(v) = doc.as_mut().filter(|_| json) {
        v["launch"] = serde_json::to_value(&plan).unwrap_or(Value::Null);
    }
    if run.print_cmdline {
        if !json {
            write_text(&plan.text());
        }
        return EXIT_OK;
    }
    // Before any host change: a missing or unreadable kernel would only fail in QEMU, after
    // the GPU was taken from the host.
    for (flag, file) in [
        ("--kernel", Some(&opts.kernel)),
        ("--initrd", opts.initrd.as_ref()),
    ] {
        if let Some(Err(msg)) = file.map(|f| readable_file(flag, f)) {
            eprintln!("vm-cli: {msg}; nothing was changed");
            return super::EXIT_USAGE;
        }
    }
    if plan.accel.accel == l::Accel::Tcg {
        eprintln!(
            "vm-cli: warning: running without KVM, under TCG (slow): {}",
            plan.accel.why
        );
    }
    if simulated {
        eprintln!("vm-cli: warning: --host-root: the host changes are simulated; QEMU runs on this machine");
    }
    let stop = match l::install_stop_signals() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("vm-cli: {e}");
            return EXIT_FAILURE;
        }
    };
    if !json {
        eprintln!(
            "vm-cli: {}",
            plan.change.text().trim_end().replace('\n', "\nvm-cli: ")
        );
        if !plan.tuning.is_empty() {
            eprintln!(
                "vm-cli: {}",
                plan.tuning.text().trim_end().replace('\n', "\nvm-cli: ")
            );
        }
        eprintln!("vm-cli: starting {}", l::shell_line(&plan.argv));
    }
    let outcome = match l::run(host.as_ref(), &plan, &opts, stop) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("vm-cli: {e}");
            return e.exit_code();
        }
    };
    if let Some(v) = doc.as_mut().filter(|_| json) {
        v["outcome"] = json!(outcome);
    }
    eprintln!(
        "vm-cli: QEMU {} (ended by {}); {}",
        outcome.qemu_status,
        outcome.ended_by,
        if outcome.left.is_empty() {
            "everything given back".to_string()
        } else {
            format!(
                "NOT given back: {}; run `vm-cli gpu restore` once the cause is fixed",
                outcome.left.join("; ")
            )
        }
    );
    if !outcome.left.is_empty() {
        EXIT_LEFT_CHANGES
    } else if outcome.clean() {
        EXIT_OK
    } else {
        EXIT_FAILURE
    }
}
