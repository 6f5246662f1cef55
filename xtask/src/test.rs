//! `cargo xtask test`: the project's whole test suite, as CI runs it.
//!
//! 1. `cargo test --workspace`: unit, integration, property, snapshot and differential tests
//!    (the simulator, the manager, the CLI, wgpu on a real adapter).
//! 2. `cargo xtask sim`: the manager on every fixture and shared recording.
//! 3. `cargo xtask kernel-test`: the same binary against a real Linux kernel with an IOMMU,
//!    in QEMU, and `cargo xtask e2e`: a guest booted by `vm-cli --gpu-mode wgpu` draws on
//!    our vhost-user-gpu backend, checked pixel for pixel (both skipped with `--no-kernel`).

use std::process::Command;

/// One xtask command run as a stage of the suite.
type Stage = fn(&[String]) -> Result<(), String>;

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
    let mut passed = 0;
    println!("== cargo test --workspace");
    let st = Command::new(&cargo)
        .args(["test", "--workspace"])
        .current_dir(crate::sim::repo_root())
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !st.success() {
        println!("stages: {passed} passed, 1 failed");
        return Err("cargo test failed".into());
    }
    passed += 1;
    let mut stages: Vec<(&str, Stage)> = vec![("cargo xtask sim", crate::sim::sim_cmd)];
    if kernel {
        stages.push(("cargo xtask kernel-test", crate::kernel_test::run));
        stages.push(("cargo xtask e2e", crate::kernel_test::e2e::run));
    }
    for (name, run) in stages {
        println!("== {name}");
        if let Err(e) = run(&[]) {
            println!("stages: {passed} passed, 1 failed");
            return Err(format!("{name}: {e}"));
        }
        passed += 1;
    }
    // The closing line CI reads: every stage above, each a test run of its own.
    println!("stages: {passed} passed, 0 failed");
    Ok(())
}
