//! Garbage in sysfs never panics: random attribute files of every fixture are corrupted, and
//! `vm-cli gpu list` still answers (exit 0 or 3) with a warning naming what it could not read.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// Attribute files the scan parses, so corrupting them must produce a warning.
const PARSED: [&str; 8] = [
    "vendor",
    "device",
    "class",
    "numa_node",
    "sriov_totalvfs",
    "available_instances",
    "boot_vga",
    "mem_info_vram_total",
];

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        let ft = std::fs::symlink_metadata(&p).unwrap().file_type();
        if ft.is_dir() {
            files(&p, out);
        } else if ft.is_file() && p.starts_with(dir) {
            out.push(p);
        }
    }
}

fn garbage() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        Just(b"0xZZZZ\n".to_vec()),
        Just(b"-1\n".to_vec()),
        Just(b"99999999999999999999999\n".to_vec()),
        Just(vec![0xff, 0xfe, 0x00, 0x0a]),
        Just(Vec::new()),
    ]
}

#[test]
fn corrupted_attributes_give_warnings_not_panics() {
    let hosts = common::project_fixtures();
    assert!(!hosts.is_empty());
    let mut runner = TestRunner::new(Config {
        cases: 24,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (
        0..hosts.len(),
        any::<prop::sample::Index>(),
        prop::collection::vec(garbage(), 1..4),
    );
    runner
        .run(&strategy, |(h, pick, junk)| {
            let tmp = tempfile::tempdir().unwrap();
            common::materialize(&hosts[h], tmp.path());
            let mut all = Vec::new();
            files(&tmp.path().join("sys"), &mut all);
            let parsed: Vec<&PathBuf> = all
                .iter()
                .filter(|p| PARSED.iter().any(|n| p.file_name().unwrap() == *n))
                .collect();
            prop_assume!(!parsed.is_empty());
            let target = parsed[pick.index(parsed.len())];
            for (i, j) in junk.iter().enumerate() {
                // The first corruption goes to a parsed attribute; the others anywhere.
                let victim = if i == 0 {
                    target
                } else {
                    &all[(pick.index(all.len()) + i * 7919) % all.len()]
                };
                std::fs::write(victim, j).unwrap();
            }
            let out = Command::new(env!("CARGO_BIN_EXE_vm-cli"))
                .arg("--host-root")
                .arg(tmp.path())
                .args(["gpu", "list", "--json"])
                .output()
                .unwrap();
            let code = out.status.code().unwrap_or(-1);
            let stderr = String::from_utf8_lossy(&out.stderr);
            prop_assert!(code == 0 || code == 3, "exit {code}: {stderr}");
            prop_assert!(!stderr.contains("panicked"), "{stderr}");
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let rel = target.strip_prefix(tmp.path()).unwrap();
            let content = &junk[0];
            let still_valid = std::str::from_utf8(content)
                .ok()
                .map(|t| t.trim())
                .is_some_and(|t| {
                    !t.is_empty()
                        && (t.parse::<i64>().is_ok()
                            || (t.starts_with("0x") && u64::from_str_radix(&t[2..], 16).is_ok()))
                });
            if !still_valid {
                let warned = v["warnings"].as_array().unwrap().iter().any(|w| {
                    let p = w["path"].as_str().unwrap_or("");
                    p.ends_with(&format!("/{}", rel.file_name().unwrap().to_string_lossy()))
                });
                prop_assert!(warned, "no warning for {}: {:?}", rel.display(), content);
            }
            Ok(())
        })
        .unwrap();
}
