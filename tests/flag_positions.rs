//! Every global flag (`--host-root`, `--state-dir`, `--json`, `--dry-run`) before the
//! subcommand, between `gpu` and its command, and after it: a dry run stays a dry run
//! wherever `--dry-run` stands (issue 12: `vm-cli --dry-run gpu prepare ADDR` prepared for
//! real), a command without a dry run refuses it with exit 2, and neither the fixture copy
//! nor the state directory changes. Flags of a VM start given with a subcommand are refused.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tree, path by path: file bytes, link targets, directories.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            let ft = e.file_type().unwrap();
            if ft.is_symlink() {
                out.insert(
                    rel,
                    format!("-> {}", std::fs::read_link(&p).unwrap().display()),
                );
            } else if ft.is_dir() {
                out.insert(rel, "dir".into());
                walk(root, &p, out);
            } else {
                out.insert(rel, format!("{:?}", std::fs::read(&p).unwrap()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Files under `dir` (directories alone are no change).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    snapshot(dir)
        .into_iter()
        .filter(|(_, v)| v != "dir")
        .map(|(k, _)| k)
        .collect()
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// Changes the host without --dry-run; with it, prints the plan (exit 0).
    Change,
    /// Has no dry run: refuses --dry-run with exit 2.
    Refuse,
    /// Changes nothing anyway (exit 0 or 3).
    ReadOnly,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Pos {
    Before,
    Middle,
    After,
}

fn vm_cli(args: &[String]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vm-cli"))
        .args(args)
        .env_remove("VM_HOST_ROOT")
        .env_remove("VM_STATE_DIR")
        .env_remove("VM_CONFIG_ROOT")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn global_flags_work_in_every_position_and_a_dry_run_never_changes_the_host() {
    let cases: Vec<(&str, Vec<&str>, Kind)> = vec![
        (
            "intel-desktop-gvtg-dgpu",
            vec!["gpu", "prepare", "0000:01:00.0"],
            Kind::Change,
        ),
        (
            "intel-desktop-gvtg-dgpu",
            vec!["gpu", "mdev-create", "--mdev-type", "i915-GVTg_V5_4"],
            Kind::Change,
        ),
        (
            "sriov-pf-with-vfs",
            vec![
                "gpu",
                "sriov",
                "--gpu-device",
                "0000:41:00.0",
                "--num-vfs",
                "2",
            ],
            Kind::Change,
        ),
        (
            "bmc-datacenter-nvidia-vgpu",
            vec!["gpu", "mdev-remove", "5b2e8f3a-6c1d-4e7a-9b0f-1d2c3e4f5a01"],
            Kind::Change,
        ),
        (
            "intel-desktop-gvtg-dgpu",
            vec!["gpu", "release", "0000:01:00.0"],
            Kind::Refuse,
        ),
        (
            "intel-desktop-gvtg-dgpu",
            vec!["gpu", "restore"],
            Kind::Refuse,
        ),
        (
            "intel-desktop-gvtg-dgpu",
            vec!["host", "record", "@rec"],
            Kind::Refuse,
        ),
        (
            "intel-desktop-gvtg-dgpu",
            vec!["gpu", "list"],
            Kind::ReadOnly,
        ),
        (
            "intel-desktop-gvtg-dgpu",
            vec!["gpu", "mdev-types"],
            Kind::ReadOnly,
        ),
        (
            "intel-desktop-gvtg-dgpu",
            vec!["gpu", "mdev-list"],
            Kind::ReadOnly,
        ),
        (
            "intel-desktop-gvtg-dgpu",
            vec!["gpu", "doctor"],
            Kind::ReadOnly,
        ),
    ];
    let flags = ["--host-root", "--state-dir", "--json", "--dry-run"];
    // Each flag alone in each position (the others after the subcommand), then all of them
    // together in each position, with and without --json.
    let mut patterns: Vec<(Vec<Pos>, bool)> = Vec::new();
    for moved in 0..flags.len() {
        for pos in [Pos::Before, Pos::Middle, Pos::After] {
            let mut p = vec![Pos::After; flags.len()];
            p[moved] = pos;
            patterns.push((p, true));
        }
    }
    for pos in [Pos::Before, Pos::Middle, Pos::After] {
        patterns.push((vec![pos; flags.len()], false));
    }
    let mut failures = Vec::new();
    for (fixture, sub, kind) in &cases {
        let tmp = tempfile::tempdir().unwrap();
        let host = tmp.path().join("host");
        common::materialize(&common::repo().join("fixtures/hosts").join(fixture), &host);
        let state = tmp.path().join("state");
        let rec = tmp.path().join("rec");
        let before = snapshot(&host);
        for (positions, with_json) in &patterns {
            let mut pre = Vec::new();
            let mut mid = Vec::new();
            let mut post = Vec::new();
            for (flag, pos) in flags.iter().zip(positions) {
                let mut words = vec![flag.to_string()];
                match *flag {
                    "--host-root" => words.push(host.display().to_string()),
                    "--state-dir" => words.push(state.display().to_string()),
                    "--json" if !with_json => continue,
                    _ => {}
                }
                match pos {
                    Pos::Before => pre.extend(words),
                    Pos::Middle => mid.extend(words),
                    Pos::After => post.extend(words),
                }
            }
            let mut args = pre;
            args.push(sub[0].to_string());
            args.extend(mid);
            args.extend(sub[1..].iter().map(|s| match *s {
                "@rec" => rec.display().to_string(),
                s => s.to_string(),
            }));
            args.extend(post);
            let (code, out, err) = vm_cli(&args);
            let shown = format!("vm-cli {}", args.join(" "));
            let code_ok = match kind {
                Kind::Change => code == 0,
                Kind::Refuse => code == 2,
                Kind::ReadOnly => code == 0 || code == 3,
            };
            if !code_ok {
                failures.push(format!("{shown}: exit {code}: {err}"));
            }
            if *kind == Kind::Change && *with_json {
                let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
                if v["dry_run"] != true {
                    failures.push(format!("{shown}: not a dry run: {out}"));
                }
            }
            if *kind == Kind::Refuse && !err.contains("no dry run") {
                failures.push(format!("{shown}: refusal does not say why: {err}"));
            }
            let written = files_under(&state);
            if !written.is_empty() {
                failures.push(format!(
                    "{shown}: wrote {written:?} into the state directory"
                ));
                let _ = std::fs::remove_dir_all(&state);
            }
            if rec.exists() {
                failures.push(format!("{shown}: recorded the host"));
                let _ = std::fs::remove_dir_all(&rec);
            }
        }
        assert_eq!(
            snapshot(&host),
            before,
            "{fixture}: the fixture copy changed"
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Flags of a VM start before a subcommand did nothing (`--allow-boot-vga gpu prepare`,
/// `--kernel K gpu list`): refused with exit 2, naming the flag.
#[test]
fn launch_flags_with_a_subcommand_are_refused() {
    let host = common::repo()
        .join("fixtures/hosts/single-gpu-boot-display")
        .display()
        .to_string();
    let state = tempfile::tempdir().unwrap();
    let st = state.path().display().to_string();
    for (flag, sub) in [
        (
            vec!["--allow-boot-vga"],
            vec!["gpu", "prepare", "0000:01:00.0"],
        ),
        (vec!["--kernel", "/boot/vmlinuz"], vec!["gpu", "list"]),
        (vec!["--gpu-mode", "wgpu"], vec!["gpu", "doctor"]),
        (vec!["--mdev-type", "x"], vec!["gpu", "mdev-types"]),
    ] {
        let mut args: Vec<String> = ["--host-root", &host, "--state-dir", &st]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(flag.iter().map(|s| s.to_string()));
        args.extend(sub.iter().map(|s| s.to_string()));
        let (code, _, err) = vm_cli(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(flag[0]), "{args:?}: {err}");
        assert!(files_under(state.path()).is_empty(), "{args:?}");
    }
}

/// `--mdev-type` with `--gpu-mode passthrough`, `--x-vga` with `--gpu-mode wgpu`: refused.
#[test]
fn flags_of_another_mode_are_refused() {
    let host = common::repo()
        .join("fixtures/hosts/intel-desktop-gvtg-dgpu")
        .display()
        .to_string();
    for extra in [
        ["--gpu-mode", "passthrough", "--mdev-type", "i915-GVTg_V5_4"],
        ["--gpu-mode", "wgpu", "--x-vga", "--dry-run"],
    ] {
        let mut args: Vec<String> = ["--host-root", host.as_str(), "--kernel", "k", "--dry-run"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(
            extra
                .iter()
                .filter(|s| **s != "--dry-run")
                .map(|s| s.to_string()),
        );
        let (code, _, err) = vm_cli(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains("applies to --gpu-mode"), "{args:?}: {err}");
    }
}
