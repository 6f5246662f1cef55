//! `cargo xtask …`: developer commands of the vm-device workspace.
//!
//! Subcommands (the first argument picks one; each module parses its own arguments):
//! - `gen-fixtures [--out DIR]`: (re)writes every fixture host under `fixtures/hosts/`.
//! - `gen-bench-host DIR [--functions 1024] [--gpus 16] [--mdev-types 32]`: writes a big
//!   synthetic host for benchmarks.
//! - `bench [--runs N] [--debug] [--display-secs N]`: vm-cli against lspci on a generated
//!   1,024-function host, then `bench-display`.
//! - `test [--no-kernel]`: the whole suite as CI runs it.
//! - `layers`: the import graph of `src/` keeps its layering (no arrow up, no cycle).
//! - `sim`: the manager on every fixture and shared recording, checked against the snapshots.
//! - `check-fixtures [--dir DIR]`: runs `lspci` on every generated fixture (but `malformed`) and
//!   compares ids, class, driver and IOMMU group with what the generator meant to write.
//! - `kernel-test [--accel tcg|kvm] [--scenario NAME]... [--update-fixtures] [--keep]`: boots
//!   Debian's kernel in QEMU with `vm-cli` in the initramfs and runs the real-kernel scenarios.
//! - `e2e [--qemu PATH] [--timeout SECS] [--repeat N]`: `vm-cli --kernel … --gpu-mode wgpu` boots Debian's
//!   kernel with the project's vhost-user-gpu backend; a QMP screendump of the guest's
//!   framebuffer pattern must match pixel for pixel.
//! - `nested-test [--scenario NAME]... [--keep]`: Debian's kernel as L1 under TCG with KVM
//!   inside; `vm-cli` in L1 starts L2 under KVM with a passed-through bochs-display and
//!   with mdevs, each checked pixel for pixel, then killed and restored.
//! - `bench-display [--secs N]`: full-frame and device-path updates per second of the same
//!   guest against QEMU's built-in virtio-gpu-pci, QEMU's C vhost-user-gpu and ours.

mod bench;
mod check;
mod fixtures;
mod hostgen;
mod kernel_test;
mod layers;
mod sim;
mod test;

use std::process::ExitCode;

const USAGE: &str = "usage: cargo xtask <command> [args]
commands:
  gen-fixtures [--out DIR]       rewrite every fixture host (default DIR: fixtures/hosts)
  gen-bench-host DIR [--functions 1024] [--gpus 16] [--mdev-types 32]
                                 write a big synthetic host for benchmarks
  check-fixtures [--dir DIR]     compare lspci's view of each fixture with the generator's model
  bench [--runs N] [--debug] [--display-secs N]
                                 time vm-cli against lspci on a 1,024-function host, then
                                 run bench-display (N s per phase, default 5; 0 skips it)
  test [--no-kernel]             the whole suite: cargo test --workspace, sim, kernel-test,
                                 e2e, nested-test
  layers [--src DIR]             check that no module of src/ imports a higher layer
  sim                            run vm-cli gpu list on every fixture and shared recording,
                                 one line per host; fail when a snapshot differs
  kernel-test [--help]           boot Debian's kernel in QEMU and run the real-kernel scenarios
  e2e [--help]                   boot a guest through vm-cli --gpu-mode wgpu and compare a
                                 screendump of its framebuffer with the pattern it drew
  nested-test [--help]           vm-cli inside a TCG guest starts a KVM guest with a passed-
                                 through GPU and with mdevs; screendumps checked per pixel
  bench-display [--secs N]       frame rates of our vhost-user-gpu backend, QEMU's C backend
                                 and QEMU's built-in virtio-gpu-pci with the same guest";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest = args.get(1..).unwrap_or(&[]);
    let result = match args.first().map(String::as_str) {
        Some("gen-fixtures") => fixtures::write_all_cmd(rest),
        Some("gen-bench-host") => fixtures::bench_host_cmd(rest),
        Some("check-fixtures") => check::check_cmd(rest),
        Some("sim") => sim::sim_cmd(rest),
        Some("test") => test::test_cmd(rest),
        Some("layers") => layers::layers_cmd(rest),
        Some("bench") => bench::bench_cmd(rest),
        Some("kernel-test") => kernel_test::run(rest),
        Some("e2e") => kernel_test::e2e::run(rest),
        Some("nested-test") => kernel_test::nested::run(rest),
        Some("bench-display") => kernel_test::bench_display::run(rest),
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
