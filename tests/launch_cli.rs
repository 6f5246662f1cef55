//! `vm-cli --kernel K` without `--dry-run`: `--print-cmdline` (text and JSON), QEMU
//! discovery errors, and a whole launch against a recorded host with a fake QEMU.

use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/hosts")
        .join(name)
        .display()
        .to_string()
}

/// A fake QEMU reporting `version`; a run records its argv in `dir/argv` and exits 0.
fn fake_qemu(dir: &Path, version: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let d = dir.display();
    let path = dir.join("qemu-system-x86_64");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\ncase \"$1\" in --version) echo 'QEMU emulator version {version}'; exit 0;; esac\n\
             printf '%s\\n' \"$@\" > {d}/argv\nexit 0\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.display().to_string()
}

fn run(args: &[&str], runtime: &Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vm-cli"))
        .args(args)
        .env("XDG_RUNTIME_DIR", runtime)
        .env_remove("VM_HOST_ROOT")
        .env_remove("VM_STATE_DIR")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn print_cmdline_shows_plan_and_command_line_and_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let q = fake_qemu(dir.path(), "10.0.2");
    let host = fixture("intel-desktop-gvtg-dgpu");
    let (c, out, err) = run(
        &[
            "--host-root",
            &host,
            "--kernel",
            "/boot/vmlinuz",
            "--gpu-mode",
            "passthrough",
            "--qemu",
            &q,
            "--memory",
            "1G",
            "--cpus",
            "3",
            "--print-cmdline",
        ],
        dir.path(),
    );
    assert_eq!(c, 0, "{err}");
    assert!(out.contains("Plan: prepare 0000:01:00.0"), "{out}");
    assert!(out.contains("-m 1024M -smp 3"), "{out}");
    assert!(
        out.contains("vfio-pci,host=0000:01:00.1,bus=vmgpu-rp0,addr=00.1"),
        "{out}"
    );
    assert!(!dir.path().join("argv").exists(), "QEMU ran");
    assert!(
        !dir.path().join("vm-device").exists(),
        "a run directory was made"
    );

    let (c, out, err) = run(
        &[
            "--host-root",
            &host,
            "--json",
            "--kernel",
            "/boot/vmlinuz",
            "--gpu-mode",
            "wgpu",
            "--qemu",
            &q,
            "--print-cmdline",
        ],
        dir.path(),
    );
    assert_eq!(c, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["selected"]["mode"], "wgpu");
    assert_eq!(v["launch"]["vm"]["gpu"]["kind"], "vhost_user_gpu");
    let argv: Vec<String> = serde_json::from_value(v["launch"]["argv"].clone()).unwrap();
    assert!(argv.contains(&"vhost-user-gpu-pci,chardev=gpu0".to_string()));
    assert!(argv.contains(&"q35,memory-backend=mem".to_string()));
    let backend: Vec<String> = serde_json::from_value(v["launch"]["backend"].clone()).unwrap();
    assert_eq!(&backend[1..3], ["gpu", "serve-wgpu"]);
}

#[test]
fn a_missing_or_old_qemu_is_named_with_what_is_needed() {
    let dir = tempfile::tempdir().unwrap();
    let host = fixture("no-gpu-server");
    let gone = dir.path().join("nope").display().to_string();
    let (c, _, err) = run(
        &[
            "--host-root",
            &host,
            "--kernel",
            "/k",
            "--qemu",
            &gone,
            "--print-cmdline",
        ],
        dir.path(),
    );
    assert_eq!(c, 1, "{err}");
    assert!(err.contains("no qemu-system-x86_64 found at"), "{err}");

    // A fixture whose /dev/kvm is PVM: TCG, where vhost-user-gpu needs QEMU 8.
    let pvm = tempfile::tempdir().unwrap();
    copy_tree(Path::new(&host), pvm.path());
    std::fs::create_dir_all(pvm.path().join("sys/module/kvm_pvm")).unwrap();
    let old = fake_qemu(dir.path(), "7.2.22");
    let (c, _, err) = run(
        &[
            "--host-root",
            &pvm.path().display().to_string(),
            "--kernel",
            "/k",
            "--gpu-mode",
            "wgpu",
            "--qemu",
            &old,
            "--print-cmdline",
        ],
        dir.path(),
    );
    assert_eq!(c, 1, "{err}");
    assert!(
        err.contains("is QEMU 7.2.22, but vhost-user-gpu-pci under TCG"),
        "{err}"
    );
    assert!(err.contains("needs QEMU 8.0.0 or newer"), "{err}");
}

fn copy_tree(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let t = to.join(e.file_name());
        let ft = e.file_type().unwrap();
        if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(e.path()).unwrap(), &t).unwrap();
        } else if ft.is_dir() {
            std::fs::create_dir_all(&t).unwrap();
            copy_tree(&e.path(), &t);
        } else {
            std::fs::copy(e.path(), &t).unwrap();
        }
    }
}

#[test]
fn a_whole_launch_on_a_recorded_host_runs_qemu_and_gives_everything_back() {
    let dir = tempfile::tempdir().unwrap();
    let q = fake_qemu(dir.path(), "10.0.2");
    let host = fixture("intel-desktop-gvtg-dgpu");
    // vm-cli checks the kernel before any host change: a real (if fake) file.
    let kernel = dir.path().join("vmlinuz");
    std::fs::write(&kernel, b"kernel").unwrap();
    let (c, _, err) = run(
        &[
            "--host-root",
            &host,
            "--kernel",
            &kernel.display().to_string(),
            "--append",
            "console=ttyS0",
            "--gpu-mode",
            "mdev",
            "--qemu",
            &q,
        ],
        dir.path(),
    );
    assert_eq!(c, 0, "{err}");
    assert!(err.contains("everything given back"), "{err}");
    let argv = std::fs::read_to_string(dir.path().join("argv")).unwrap();
    assert!(
        argv.contains("vfio-pci,sysfsdev=/sys/bus/mdev/devices/"),
        "{argv}"
    );
    assert!(argv.contains("console=ttyS0"), "{argv}");
}

#[test]
fn sigterm_stops_the_vm_and_gives_everything_back() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let q = dir.path().join("qemu-system-x86_64");
    std::fs::write(
        &q,
        format!(
            "#!/bin/sh\ncase \"$1\" in --version) echo 'QEMU emulator version 10.0.2'; exit 0;; esac\n\
             printf '%s\\n' \"$@\" > {d}/argv\nwhile :; do sleep 0.05; done\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&q, std::fs::Permissions::from_mode(0o755)).unwrap();
    let kernel = dir.path().join("vmlinuz");
    std::fs::write(&kernel, b"kernel").unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_vm-cli"))
        .args([
            "--host-root",
            &fixture("intel-desktop-gvtg-dgpu"),
            "--kernel",
        ])
        .arg(&kernel)
        .args(["--gpu-mode", "passthrough", "--qemu"])
        .arg(&q)
        .env("XDG_RUNTIME_DIR", dir.path())
        .env_remove("VM_HOST_ROOT")
        .env_remove("VM_STATE_DIR")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while !dir.path().join("argv").exists() {
        assert!(start.elapsed().as_secs() < 20, "QEMU never started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("ended by stop"), "{err}");
    assert!(err.contains("everything given back"), "{err}");
    assert!(
        !dir.path()
            .join("vm-device")
            .join(format!("vm-{pid}"))
            .exists(),
        "the VM's run directory is left"
    );
}
