//! `cargo xtask test`: the project's whole test suite, as CI runs it.
//!
//! 0. The repository stands alone and is tidy: no file outside `docs/` refers to the
//!    project's `shared` folder beside the checkout, `cargo fmt --check`, and
//!    `cargo clippy --workspace --all-targets -- -D warnings`, clippy of vm-device
//!    without its default features (a vm-cli without the simulator), and `cargo xtask
//!    layers` (no module of `src/` imports a higher layer), and `cargo doc` of the library
//!    with warnings denied.
//! 1. `cargo test --workspace`: unit, integration, property, snapshot and differential tests
//!    (the simulator, the manager, the CLI, wgpu on a real adapter).
//! 2. `cargo xtask sim`: the manager on every fixture and shared recording.
//! 3. `cargo xtask kernel-test`: the same binary against a real Linux kernel with an IOMMU,
//!    in QEMU, `cargo xtask nested-test`: vm-cli inside a TCG guest starts a KVM guest with
//!    a passed-through GPU and with mdevs, and `cargo xtask e2e --repeat 10`: a guest booted
//!    by `vm-cli --gpu-mode wgpu` draws on our vhost-user-gpu backend, checked pixel for
//!    pixel, ten times over (all three skipped with `--no-kernel`).

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
    for (name, run) in [
        (
            "stands alone",
            stands_alone as fn(&str) -> Result<(), String>,
        ),
        ("cargo fmt --check", fmt_check),
        ("cargo clippy", clippy),
        ("cargo xtask layers", layers),
        ("cargo doc", doc),
    ] {
        println!("== {name}");
        if let Err(e) = run(&cargo) {
            println!("stages: {passed} passed, 1 failed");
            return Err(format!("{name}: {e}"));
        }
        passed += 1;
    }
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
        stages.push(("cargo xtask nested-test", crate::kernel_test::nested::run));
        stages.push(("cargo xtask e2e --repeat 10", e2e_repeated));
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

/// Runs of the e2e scenario in CI: a race that lost one run in three (issue 12) must not
/// pass by luck. Setup (kernel, QEMU, initramfs) happens once; each run is one boot of
/// a few seconds under TCG (measured: one run 4.6 s, ten runs 35.7 s, all passing).
const E2E_RUNS: &str = "10";

fn e2e_repeated(_: &[String]) -> Result<(), String> {
    crate::kernel_test::e2e::run(&["--repeat".to_string(), E2E_RUNS.to_string()])
}

/// The folder beside the checkout that must never be read: built from two parts so that
/// this file does not name it itself.
fn outside_folder() -> String {
    format!("{}/{}", "..", "shared")
}

/// No tracked file outside `docs/` refers to the folder beside the checkout: a clone
/// must build, test and benchmark on its own.
fn stands_alone(_cargo: &str) -> Result<(), String> {
    let root = crate::sim::repo_root();
    let out = Command::new("git")
        .args(["ls-files", "-z"])
        .current_dir(&root)
        .output()
        .map_err(|e| format!("cannot run git ls-files: {e}"))?;
    if !out.status.success() {
        return Err("git ls-files failed (not a git checkout?)".into());
    }
    let needle = outside_folder();
    let mut offenders = Vec::new();
    for name in out.stdout.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name = String::from_utf8_lossy(name).into_owned();
        if name.starts_with("docs/") {
            continue;
        }
        let path = root.join(&name);
        // Symlinks in fixture trees point inside the tree; only regular files are read.
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        if contains(&bytes, needle.as_bytes()) {
            offenders.push(name);
        }
    }
    if offenders.is_empty() {
        println!("no file outside docs/ refers to {needle}");
        Ok(())
    } else {
        Err(format!(
            "these files refer to {needle}, which a clone does not have; copy what they \
             need into the repository: {}",
            offenders.join(", ")
        ))
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn cargo_stage(cargo: &str, args: &[&str], what: &str) -> Result<(), String> {
    let st = Command::new(cargo)
        .args(args)
        .current_dir(crate::sim::repo_root())
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if st.success() {
        Ok(())
    } else {
        Err(format!("{what} failed"))
    }
}

fn fmt_check(cargo: &str) -> Result<(), String> {
    cargo_stage(
        cargo,
        &["fmt", "--all", "--check"],
        "cargo fmt --check (run cargo fmt --all)",
    )
}

fn clippy(cargo: &str) -> Result<(), String> {
    cargo_stage(
        cargo,
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--quiet",
            "--",
            "-D",
            "warnings",
        ],
        "cargo clippy --workspace --all-targets -- -D warnings",
    )?;
    // vm-cli without the simulator (no `sim` feature) must build and stay clean too.
    cargo_stage(
        cargo,
        &[
            "clippy",
            "-p",
            "vm-device",
            "--no-default-features",
            "--quiet",
            "--",
            "-D",
            "warnings",
        ],
        "cargo clippy -p vm-device --no-default-features -- -D warnings",
    )
}

/// The library's public API documents without a broken or private link (`cargo doc`).
fn doc(cargo: &str) -> Result<(), String> {
    let st = Command::new(cargo)
        .args(["doc", "-p", "vm-device", "--no-deps", "--quiet"])
        .env("RUSTDOCFLAGS", "-D warnings")
        .current_dir(crate::sim::repo_root())
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if st.success() {
        Ok(())
    } else {
        Err("RUSTDOCFLAGS=\"-D warnings\" cargo doc -p vm-device --no-deps failed".into())
    }
}

/// The import graph keeps its layering (`cargo xtask layers`).
fn layers(_cargo: &str) -> Result<(), String> {
    crate::layers::layers_cmd(&[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_outside_folder_in_bytes() {
        let needle = outside_folder();
        assert!(contains(
            format!("x {needle}/hosts").as_bytes(),
            needle.as_bytes()
        ));
        assert!(!contains(b"fixtures/real/qemu", needle.as_bytes()));
    }
}
