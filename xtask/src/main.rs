//! `cargo xtask …`: developer commands of the vm-device workspace.
//!
//! Subcommands (the first argument picks one; each module parses its own arguments):
//! - `gen-fixtures [--out DIR]`: (re)writes every fixture host under `fixtures/hosts/`.
//! - `gen-bench-host DIR [--functions 1024] [--gpus 16] [--mdev-types 32]`: writes a big
//!   synthetic host for benchmarks.
//! - `check-fixtures [--dir DIR]`: runs `lspci` on every generated fixture (but `malformed`) and
//!   compares ids, class, driver and IOMMU group with what the generator meant to write.

mod check;
mod fixtures;
mod hostgen;

use std::process::ExitCode;

const USAGE: &str = "usage: cargo xtask <command> [args]
commands:
  gen-fixtures [--out DIR]       rewrite every fixture host (default DIR: fixtures/hosts)
  gen-bench-host DIR [--functions 1024] [--gpus 16] [--mdev-types 32]
                                 write a big synthetic host for benchmarks
  check-fixtures [--dir DIR]     compare lspci's view of each fixture with the generator's model";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest = args.get(1..).unwrap_or(&[]);
    let result = match args.first().map(String::as_str) {
        Some("gen-fixtures") => fixtures::write_all_cmd(rest),
        Some("gen-bench-host") => fixtures::bench_host_cmd(rest),
        Some("check-fixtures") => check::check_cmd(rest),
        Some("help" | "-h" | "--help") => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(format!("unknown command {other:?}\n{USAGE}")),
        None => Err(USAGE.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::from(2)
        }
    }
}
