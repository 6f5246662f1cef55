//! Runs one passthrough scenario of `vm_device::gpu_passthrough::scenario` on this machine
//! (or on a fixture with `--host-root`) and prints the outcome as JSON: what the QEMU
//! real-kernel harness runs in its guest, so the same checks pass on SimHost and on Linux.
//!
//! ```text
//! passthrough_scenarios round-trip 0000:01:00.0 [--state-dir DIR] [--host-root DIR]
//! passthrough_scenarios boot-vga 0000:02:00.0
//! passthrough_scenarios already-vfio 0000:01:00.0
//! passthrough_scenarios companion 0000:01:00.0 0000:01:00.1
//! passthrough_scenarios concurrent 0000:06:01.0 0000:06:02.0
//! passthrough_scenarios refused GroupNotViable 0000:04:00.0
//! passthrough_scenarios hold 0000:01:00.0      # prepare, print "prepared", wait to be killed
//! ```
//! After `hold` is killed with SIGKILL, `vm-cli gpu restore --state-dir DIR` must leave the
//! host as it was. Exit status: 0 passed, 1 the scenario failed, 2 usage.

use std::path::PathBuf;
use std::process::ExitCode;

use vm_device::gpu_manager::ReasonCode;
use vm_device::gpu_passthrough::{prepare, scenario, PrepareOptions};
use vm_device::host;
use vm_device_host::PciAddress;

const USAGE: &str = "usage: passthrough_scenarios round-trip|boot-vga|already-vfio|hold ADDR | companion|concurrent ADDR ADDR2 | refused CODE ADDR  [--state-dir DIR] [--host-root DIR]";

fn usage() -> ExitCode {
    eprintln!("{USAGE}");
    ExitCode::from(2)
}

fn take_opt(args: &mut Vec<String>, name: &str) -> Result<Option<PathBuf>, ()> {
    match args.iter().position(|a| a == name) {
        None => Ok(None),
        Some(i) if i + 1 < args.len() => {
            let v = PathBuf::from(args.remove(i + 1));
            args.remove(i);
            Ok(Some(v))
        }
        Some(_) => Err(()),
    }
}

fn code(name: &str) -> Option<ReasonCode> {
    Some(match name {
        "BootDisplay" => ReasonCode::BootDisplay,
        "GroupNotViable" => ReasonCode::GroupNotViable,
        "HeldOpen" => ReasonCode::HeldOpen,
        "ActiveMdevs" => ReasonCode::ActiveMdevs,
        "VfsEnabled" => ReasonCode::VfsEnabled,
        "IommuDisabled" => ReasonCode::IommuDisabled,
        "NoIommuGroup" => ReasonCode::NoIommuGroup,
        "DeviceNotFound" => ReasonCode::DeviceNotFound,
        _ => return None,
    })
}

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let (Ok(root), Ok(state)) = (
        take_opt(&mut args, "--host-root"),
        take_opt(&mut args, "--state-dir"),
    ) else {
        return usage();
    };
    let state = state.unwrap_or_else(vm_device::plan::default_state_dir);
    let host = match host::open(root.as_deref(), None) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("passthrough_scenarios: {e}");
            return ExitCode::from(1);
        }
    };
    let h = host.as_ref();
    let addr = |i: usize| args.get(i).and_then(|a| a.parse::<PciAddress>().ok());
    let name = args.first().cloned().unwrap_or_default();
    let result = match (name.as_str(), addr(1), addr(2)) {
        ("round-trip", Some(a), _) => scenario::round_trip(h, &state, &a),
        ("boot-vga", Some(a), _) => scenario::boot_vga_override(h, &state, &a),
        ("already-vfio", Some(a), _) => scenario::already_on_vfio(h, &state, &a),
        ("companion", Some(a), Some(b)) => scenario::companion_moves_too(h, &state, &a, &b),
        ("concurrent", Some(a), Some(b)) => scenario::concurrent_prepare(h, &state, &a, &b),
        ("refused", _, Some(a)) => match args.get(1).and_then(|c| code(c)) {
            Some(c) => scenario::refused_with(h, &state, &a, c),
            None => return usage(),
        },
        ("hold", Some(a), _) => {
            let opts = PrepareOptions {
                allow_boot_vga: false,
                state_dir: state.clone(),
            };
            match prepare(h, &a, &opts) {
                Ok(p) => {
                    println!("prepared {} (journal {})", a, p.journal_path().display());
                    // Wait to be killed; the journal and the dead PID are what restore needs.
                    loop {
                        std::thread::sleep(std::time::Duration::from_secs(3600));
                    }
                }
                Err(e) => Err(e.to_string()),
            }
        }
        _ => return usage(),
    };
    let (ok, detail) = match &result {
        Ok(notes) => (true, serde_json::json!(notes)),
        Err(e) => (false, serde_json::json!(e)),
    };
    println!(
        "{}",
        serde_json::json!({"schema": 1, "scenario": name, "ok": ok, "detail": detail})
    );
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
