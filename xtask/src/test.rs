//! `cargo xtask test`: the project's whole test suite, as CI runs it.
//!
//! 1. `cargo test --workspace`: unit, integration, property, snapshot and differential tests
//!    (the simulator, the manager, the CLI, wgpu on a real adapter).
//! 2. `cargo xtask sim`: the manager on every fixture and shared recording.
//! 3. `cargo xtask kernel-test`: the same binary against a real Linux kernel with an IOMMU,
//!    in QEMU, and `cargo xtask e2e`: a guest booted by `vm-cli --gpu-mode wgpu` draws on
//!    our vhost-user-gpu backend, checked pixel for pixel (both skipped with `--no-kernel`).

use std::process::Command;

/// `cargo xtask test [--no-kernel]`.
pub fn test_cmd(args: &[String]) -> Result<(), String> {
    let mut kernel = true;
    for a in args {
        match a.as_str() {
            "--no-kernel" => kernel = false,
            other => {
                return Err(format!(
                    "unknown option {other:?}; usage: test [--no-kernel]"
                ))
            }
        }
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    println!("== cargo test --workspace");
    let st = Command::new(&cargo)
        .args(["test", "--workspace"])
        .current_dir(crate::sim::repo_root())
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !st.success() {
        return Err("cargo test failed".into());
    }
    println!("== cargo xtask sim");
    crate::sim::sim_cmd(&[])?;
    if kernel {
        println!("== cargo xtask kernel-test");
        crate::kernel_test::run(&[])?;
        println!("== cargo xtask e2e");
        crate::kernel_test::e2e::run(&[])?;
    }
    Ok(())
}
