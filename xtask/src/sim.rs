//! `cargo xtask sim`: the manager against every recorded host.
//!
//! Runs `vm-cli gpu list` on every fixture (`fixtures/hosts/*`) and every shared recording
//! (`fixtures/{real,public}/*`), prints one line per host (GPUs, available rungs, the
//! auto choice), and fails when the text differs from the reviewed snapshot
//! (`tests/snapshots/list-NAME.snap`, the same files the `cli_snapshots` test pins).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Repository root (xtask's parent).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn dirs_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Every host with its snapshot name (`fixture-X`, `real-X`, `public-X`).
pub fn hosts() -> Vec<(String, PathBuf)> {
    let root = repo_root();
    let mut v: Vec<(String, PathBuf)> = dirs_in(&root.join("fixtures/hosts"))
        .into_iter()
        .map(|p| {
            (
                format!("fixture-{}", p.file_name().unwrap().to_string_lossy()),
                p,
            )
        })
        .collect();
    for kind in ["real", "public"] {
        for p in dirs_in(&root.join("fixtures").join(kind)) {
            v.push((
                format!("{kind}-{}", p.file_name().unwrap().to_string_lossy()),
                p,
            ));
        }
    }
    v
}

/// The cargo arguments of the debug build every xtask command uses: what `cargo test
/// --workspace` builds (vm-cli and the examples included), so the features, and so the
/// artifacts, are the test run's and nothing is built twice.
pub const TEST_BUILD: &[&str] = &["test", "--workspace", "--no-run", "--quiet"];

/// Builds vm-cli (debug, as the tests build it, or release with `--release`) and returns its
/// path.
pub fn build_vm_cli(release: bool) -> Result<PathBuf, String> {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    if release {
        cmd.args([
            "build",
            "-q",
            "-p",
            "vm-device",
            "--bin",
            "vm-cli",
            "--release",
        ]);
    } else {
        cmd.args(TEST_BUILD);
    }
    let st = cmd
        .current_dir(repo_root())
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !st.success() {
        return Err("building vm-cli failed".into());
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    Ok(target
        .join(if release { "release" } else { "debug" })
        .join("vm-cli"))
}

/// The body of an insta snapshot file (after its `---` header).
fn snapshot_body(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut parts = text.splitn(3, "---\n");
    parts.next()?;
    parts.next()?;
    Some(parts.next()?.to_string())
}

fn run(cli: &Path, host: &Path, json: bool) -> Result<(i32, String), String> {
    let mut cmd = Command::new(cli);
    cmd.arg("--host-root").arg(host).args(["gpu", "list"]);
    if json {
        cmd.arg("--json");
    }
    let out = cmd
        .env_remove("WGPU_BACKEND")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", cli.display()))?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ))
}

fn summary(json: &str) -> String {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(json) else {
        return "invalid JSON".into();
    };
    let gpus = v["gpus"].as_array().map(|a| a.len()).unwrap_or(0);
    let mut rungs: Vec<String> = Vec::new();
    for b in v["backends"].as_array().into_iter().flatten() {
        if b["available"] == true {
            let m = b["mode"].as_str().unwrap_or("?").to_string();
            if !rungs.contains(&m) {
                rungs.push(m);
            }
        }
    }
    let auto = match &v["auto"] {
        serde_json::Value::Null => "none".to_string(),
        a => format!(
            "{} {}",
            a["mode"].as_str().unwrap_or("?"),
            a["device"].as_str().unwrap_or("-")
        ),
    };
    let rungs = if rungs.is_empty() {
        "-".to_string()
    } else {
        rungs.join(",")
    };
    format!("gpus={gpus:<2} available={rungs:<22} auto={auto}")
}

/// `cargo xtask sim`.
pub fn sim_cmd(_args: &[String]) -> Result<(), String> {
    let cli = build_vm_cli(false)?;
    let snaps = repo_root().join("tests/snapshots");
    let mut differ = Vec::new();
    let hosts = hosts();
    for (name, dir) in &hosts {
        let (code, text) = run(&cli, dir, false)?;
        let (_, json) = run(&cli, dir, true)?;
        let got = format!("exit {code}\n{text}");
        let verdict = match snapshot_body(&snaps.join(format!("list-{name}.snap"))) {
            Some(want) if want.trim_end() == got.trim_end() => "ok",
            Some(_) => {
                differ.push(name.clone());
                "DIFFERS"
            }
            None => {
                differ.push(name.clone());
                "NO SNAPSHOT"
            }
        };
        println!("{name:<48} {}  [{verdict}]", summary(&json));
    }
    println!(
        "{} hosts, {} differ from their snapshot",
        hosts.len(),
        differ.len()
    );
    if differ.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "snapshots differ for {}: run `cargo test --test cli_snapshots` and `cargo insta review`",
            differ.join(", ")
        ))
    }
}
