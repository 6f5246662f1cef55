//! What people and scripts read, pinned per host: `vm-cli gpu list` (text and JSON) and the
//! `--dry-run` plans of every mode. Review changes with `cargo insta review`.

mod common;

use std::path::Path;
use std::process::Command;

fn vm_cli(host: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vm-cli"))
        .arg("--host-root")
        .arg(host)
        .args(args)
        .env_remove("WGPU_BACKEND")
        .output()
        .expect("run vm-cli");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn settings() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_prepend_module_to_snapshot(false);
    s.set_omit_expression(true);
    s
}

#[test]
fn gpu_list_text_and_json_per_host() {
    for host in common::all_hosts() {
        let name = common::host_name(&host);
        let (code, text, _) = vm_cli(&host, &["gpu", "list"]);
        assert!(code == 0 || code == 3, "{name}: exit {code}");
        let (jcode, json, _) = vm_cli(&host, &["gpu", "list", "--json"]);
        assert_eq!(code, jcode, "{name}: text and JSON agree on the exit code");
        let v: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
        assert_eq!(v["schema"], 1);
        settings().bind(|| {
            insta::assert_snapshot!(format!("list-{name}"), format!("exit {code}\n{text}"));
            insta::assert_snapshot!(format!("list-json-{name}"), json);
        });
    }
}

#[test]
fn dry_run_plans_per_host_and_mode() {
    for host in common::all_hosts() {
        let name = common::host_name(&host);
        let mut all = String::new();
        for mode in ["auto", "passthrough", "mdev", "wgpu"] {
            let (code, text, err) = vm_cli(
                &host,
                &["--kernel", "vmlinuz", "--gpu-mode", mode, "--dry-run"],
            );
            let (jcode, json, _) = vm_cli(
                &host,
                &[
                    "--kernel",
                    "vmlinuz",
                    "--gpu-mode",
                    mode,
                    "--dry-run",
                    "--json",
                ],
            );
            assert_eq!(code, jcode, "{name} {mode}");
            let v: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
            assert_eq!(
                code == 0,
                !v["selected"].is_null(),
                "{name} {mode}: exit 0 iff selected"
            );
            assert!(code == 0 || code == 3, "{name} {mode}: exit {code}: {err}");
            if code == 3 {
                assert!(
                    err.contains("no GPU mode available"),
                    "{name} {mode}: {err}"
                );
            }
            all.push_str(&format!(
                "$ --gpu-mode {mode} --dry-run   (exit {code})\n{text}\n"
            ));
        }
        settings().bind(|| insta::assert_snapshot!(format!("plan-{name}"), all));
    }
}
