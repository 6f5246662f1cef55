//! Garbage in sysfs never panics: random attribute files of every fixture are corrupted, and
//! `vm-cli gpu list` still answers (exit 0 or 3) with a warning naming what it could not read.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// Attribute files the scan parses on every function (ids, class) or on every GPU and mdev
/// type that has them, so corrupting them must produce a warning.
const PARSED: [&str; 6] = [
    "vendor",
    "device",
    "class",
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

/// Runs vm-cli with `args`; fails the test if it has not ended within `limit`.
fn vm_cli_within(limit: std::time::Duration, args: &[&std::ffi::OsStr]) -> (i32, String, String) {
    use std::io::Read;
    let mut child = Command::new(env!("CARGO_BIN_EXE_vm-cli"))
        .args(args)
        .env_remove("VM_HOST_ROOT")
        .env_remove("VM_STATE_DIR")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    // Drain the pipes on threads so a big output cannot stall the child.
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = so.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = se.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("vm-cli {args:?} still running after {limit:?} (blocked?)");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    (
        status.code().unwrap_or(-1),
        t_out.join().unwrap(),
        t_err.join().unwrap(),
    )
}

/// What is planted where a file belongs.
#[derive(Clone, Copy, Debug)]
enum Plant {
    /// A FIFO: a read would block forever.
    Fifo,
    /// A 1 GiB (sparse) file: read whole, it cost 11.7 s and 3 GB in `gpu list`.
    Huge,
}

fn plant(path: &Path, what: Plant) {
    let _ = std::fs::remove_file(path);
    match what {
        Plant::Fifo => {
            nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap()
        }
        Plant::Huge => std::fs::File::create(path)
            .unwrap()
            .set_len(1 << 30)
            .unwrap(),
    }
}

/// A FIFO or a huge file where the scan expects an attribute (a GPU's `class`), a fixture
/// list (`.fixture/empty-dirs`, `.fixture/wgpu-adapters.json`) or an mdevctl definition:
/// vm-cli never blocks, never reads it whole, and warns about the attribute by name.
#[test]
fn fifos_and_huge_files_are_refused_with_a_warning_not_read() {
    let limit = std::time::Duration::from_secs(20);
    let fixture = common::repo().join("fixtures/hosts/intel-desktop-gvtg-dgpu");
    let uuid = "5e5e5e5e-0000-4000-8000-000000000001";
    for what in [Plant::Fifo, Plant::Huge] {
        for victim in [
            "sys/bus/pci/devices/0000:01:00.0/class",
            ".fixture/empty-dirs",
            ".fixture/wgpu-adapters.json",
            "etc/mdevctl.d/0000:00:02.0/UUID",
        ] {
            let tmp = tempfile::tempdir().unwrap();
            let root = tmp.path().join("host");
            common::materialize(&fixture, &root);
            let rel = victim.replace("UUID", uuid);
            let mut path = root.join(&rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            if let Ok(real) = path.parent().unwrap().canonicalize() {
                path = real.join(path.file_name().unwrap());
            }
            plant(&path, what);
            let state = tmp.path().join("state");
            let r = root.as_os_str();
            let s = state.as_os_str();
            let started = std::time::Instant::now();
            let commands: [&[&str]; 3] = [
                &["gpu", "list", "--json"],
                &["gpu", "mdev-list", "--json"],
                &["gpu", "prepare", "0000:01:00.0", "--dry-run"],
            ];
            for cmd in commands {
                let mut args: Vec<&std::ffi::OsStr> =
                    vec!["--host-root".as_ref(), r, "--state-dir".as_ref(), s];
                args.extend(cmd.iter().map(std::ffi::OsStr::new));
                let (code, out, err) = vm_cli_within(limit, &args);
                let shown = format!("{what:?} at {rel}: vm-cli {}", cmd.join(" "));
                assert!(!err.contains("panicked"), "{shown}: {err}");
                assert!((0..=5).contains(&code), "{shown}: exit {code}: {err}");
                if victim.ends_with("/class") && cmd[1] == "list" {
                    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
                    let warned = v["warnings"].as_array().unwrap().iter().any(|w| {
                        w["path"].as_str().unwrap_or("").ends_with("/class")
                            && w["message"].as_str().unwrap_or("").contains("not read")
                    });
                    assert!(warned, "{shown}: no warning: {}", v["warnings"]);
                }
                if victim.starts_with("etc/") && cmd[1] == "mdev-list" {
                    assert!(
                        err.contains(uuid) && err.contains("not read"),
                        "{shown}: {err}"
                    );
                }
            }
            assert!(
                started.elapsed() < limit,
                "{what:?} at {rel}: took {:?}",
                started.elapsed()
            );
        }
    }
}
