//! Runs the VFIO smoke sequence on this machine (or on a fixture) and prints the report as
//! JSON: the step the QEMU real-kernel harness runs inside its guest.
//!
//! ```text
//! vfio_smoke GROUP NAME [auto|legacy|iommufd] [--host-root DIR]
//! vfio_smoke 7 0000:01:00.0
//! vfio_smoke 12 4b9a3c1e-7d2f-4a6b-9e8d-0a0000000001 legacy
//! ```
//! Exit status: 0 the sequence passed, 1 a step failed (the error names it), 2 usage.

use std::path::PathBuf;
use std::process::ExitCode;

use vm_device::host;
use vm_device::rungs::passthrough::{vfio_smoke_with, PathChoice};

fn usage() -> ExitCode {
    eprintln!("usage: vfio_smoke GROUP NAME [auto|legacy|iommufd] [--host-root DIR]");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut root = None;
    if let Some(i) = args.iter().position(|a| a == "--host-root") {
        if i + 1 >= args.len() {
            return usage();
        }
        root = Some(PathBuf::from(args.remove(i + 1)));
        args.remove(i);
    }
    let (Some(group), Some(name)) = (args.first(), args.get(1)) else {
        return usage();
    };
    let Ok(group) = group.parse::<u32>() else {
        eprintln!("vfio_smoke: GROUP must be an IOMMU group number, not {group:?}");
        return usage();
    };
    let choice = match args.get(2).map(String::as_str) {
        None | Some("auto") => PathChoice::Auto,
        Some("legacy") => PathChoice::Legacy,
        Some("iommufd") => PathChoice::Iommufd,
        Some(other) => {
            eprintln!("vfio_smoke: unknown path {other:?}");
            return usage();
        }
    };
    let host = match host::open(root.as_deref(), None) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("vfio_smoke: {e}");
            return ExitCode::from(1);
        }
    };
    match vfio_smoke_with(host.as_ref(), group, name, choice) {
        Ok(report) => match serde_json::to_string_pretty(&report) {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("vfio_smoke: cannot print the report: {e}");
                ExitCode::from(1)
            }
        },
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
    }
}
