//! `vm-cli gpu doctor` on every host: the report (text and JSON) pinned per host, remedies a
//! user can paste, exit codes that follow the verdict, and the checks that read extra host
//! files (memlock, boot loader, WGPU_BACKEND) driven by modified copies of a fixture.
//! Review snapshot changes with `cargo insta review`.

mod common;

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn vm_cli_env(host: &Path, args: &[&str], backend: Option<&str>) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vm-cli"));
    cmd.arg("--host-root").arg(host).args(args);
    match backend {
        Some(b) => cmd.env("WGPU_BACKEND", b),
        None => cmd.env_remove("WGPU_BACKEND"),
    };
    let out = cmd.output().expect("run vm-cli");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn vm_cli(host: &Path, args: &[&str]) -> (i32, String, String) {
    vm_cli_env(host, args, None)
}

fn doctor_json(host: &Path, extra: &[&str]) -> (i32, Value) {
    let mut args = vec!["gpu", "doctor", "--json"];
    args.extend_from_slice(extra);
    let (code, out, err) = vm_cli(host, &args);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}{err}"));
    (code, v)
}

fn check<'a>(v: &'a Value, id: &str) -> &'a Value {
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check {id} in {v:#}"))
}

fn rung_ready(v: &Value, rung: &str) -> bool {
    v["rungs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rung"] == rung)
        .unwrap()["ready"]
        .as_bool()
        .unwrap()
}

fn settings() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_prepend_module_to_snapshot(false);
    s.set_omit_expression(true);
    s
}

#[test]
fn doctor_text_and_json_per_host() {
    for host in common::all_hosts() {
        let name = common::host_name(&host);
        let (code, text, _) = vm_cli(&host, &["gpu", "doctor"]);
        assert!(code == 0 || code == 3, "{name}: exit {code}");
        let (jcode, json, _) = vm_cli(&host, &["gpu", "doctor", "--json"]);
        assert_eq!(code, jcode, "{name}: text and JSON agree on the exit code");
        let v: Value = serde_json::from_str(&json).expect("valid JSON");
        assert_eq!(v["schema"], 1);
        assert_eq!(v["ready"], code == 0, "{name}: exit 0 iff ready");
        settings().bind(|| {
            insta::assert_snapshot!(format!("doctor-{name}"), format!("exit {code}\n{text}"));
            insta::assert_snapshot!(format!("doctor-json-{name}"), json);
        });
    }
}

/// Commands a remedy line may start with; every other line must be a `# ` comment.
const COMMANDS: [&str; 12] = [
    "sudo",
    "echo",
    "ulimit",
    "dmesg",
    "grep",
    "ls",
    "lsmod",
    "vulkaninfo",
    "export",
    "unset",
    "vm-cli",
    "cat",
];

#[test]
fn every_remedy_on_every_host_is_pasteable_shell() {
    let mut seen = 0;
    for host in common::all_hosts() {
        let name = common::host_name(&host);
        let (_, v) = doctor_json(&host, &[]);
        let mut ids = std::collections::BTreeSet::new();
        for c in v["checks"].as_array().unwrap() {
            let id = c["id"].as_str().unwrap();
            assert!(
                ids.insert(id.to_string()),
                "{name}: duplicate check id {id}"
            );
            assert!(
                ["ok", "warn", "fail"].contains(&c["status"].as_str().unwrap()),
                "{name} {id}"
            );
            assert!(
                !c["evidence"].as_array().unwrap().is_empty(),
                "{name} {id}: every check says what it looked at"
            );
            let remedy = &c["remedy"];
            if c["status"] == "ok" {
                continue;
            }
            let r = remedy
                .as_str()
                .unwrap_or_else(|| panic!("{name} {id}: not ok but no remedy"));
            assert!(!r.trim().is_empty(), "{name} {id}: empty remedy");
            assert!(!r.contains("TODO"), "{name} {id}: {r}");
            for line in r.lines() {
                let t = line.trim();
                assert!(!t.is_empty(), "{name} {id}: blank line in {r:?}");
                if t.starts_with("# ") {
                    continue;
                }
                let first = t.split_whitespace().next().unwrap();
                assert!(
                    COMMANDS.contains(&first),
                    "{name} {id}: `{line}` does not start with a command name"
                );
                // `<...>` placeholders; shell redirections (`< file`, `<<<`) are not used.
                if let Some(i) = t.find('<') {
                    assert!(
                        !t[i..].contains('>'),
                        "{name} {id}: placeholder in `{line}`"
                    );
                }
                seen += 1;
            }
        }
    }
    assert!(
        seen > 50,
        "only {seen} command lines: the hosts must exercise remedies"
    );
}

#[test]
fn exit_code_follows_the_rung_asked_for() {
    for host in common::all_hosts() {
        let name = common::host_name(&host);
        let (auto, v) = doctor_json(&host, &[]);
        let any = ["passthrough", "mdev", "wgpu"]
            .iter()
            .any(|r| rung_ready(&v, r));
        assert_eq!(auto == 0, any, "{name}: auto is ready iff some rung is");
        for mode in ["passthrough", "mdev", "wgpu"] {
            let (code, mv) = doctor_json(&host, &["--gpu-mode", mode]);
            assert_eq!(
                code == 0,
                rung_ready(&v, mode),
                "{name} {mode}: exit {code}"
            );
            assert_eq!(mv["request"]["gpu_mode"], mode);
            if code == 0 {
                // The doctor is at least as strict as the plan: ready means the plan has a pick.
                let (plan, _, err) = vm_cli(
                    &host,
                    &["--kernel", "vmlinuz", "--gpu-mode", mode, "--dry-run"],
                );
                assert_eq!(plan, 0, "{name} {mode}: doctor ready but plan fails: {err}");
            }
        }
    }
}

fn copy_of(fixture: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    common::materialize(
        &common::repo().join("fixtures/hosts").join(fixture),
        dir.path(),
    );
    dir
}

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

const LIMITS_HEAD: &str =
    "Limit                     Soft Limit           Hard Limit           Units\n";

#[test]
fn low_memlock_fails_passthrough_and_unlimited_passes() {
    let t = copy_of("amd-vi-workstation");
    let root = t.path();
    write(
        root,
        "proc/self/limits",
        &format!("{LIMITS_HEAD}Max locked memory         8388608              8388608              bytes\n"),
    );
    write(
        root,
        "proc/self/status",
        "Name:\tvm-cli\nCapEff:\t0000000000000000\n",
    );
    let (code, v) = doctor_json(root, &["--gpu-mode", "passthrough"]);
    let c = check(&v, "memlock.limit");
    assert_eq!(c["status"], "fail", "{c:#}");
    assert!(
        c["remedy"].as_str().unwrap().contains("memlock 3145728"),
        "{c:#}"
    );
    assert_eq!(code, 3, "8 MiB cannot pin 2 GiB: passthrough not ready");
    // wgpu does not pin guest memory: still ready.
    let (wcode, _) = doctor_json(root, &["--gpu-mode", "wgpu"]);
    assert_eq!(wcode, 0);

    // 4 GiB covers --memory 2G (+1 GiB) but not --memory 8G.
    write(
        root,
        "proc/self/limits",
        &format!("{LIMITS_HEAD}Max locked memory         4294967296           4294967296           bytes\n"),
    );
    let (code, v) = doctor_json(root, &["--gpu-mode", "passthrough"]);
    assert_eq!(check(&v, "memlock.limit")["status"], "ok");
    assert_eq!(code, 0);
    let (code, v) = doctor_json(root, &["--gpu-mode", "passthrough", "--memory", "8G"]);
    assert_eq!(check(&v, "memlock.limit")["status"], "fail");
    assert_eq!(v["request"]["memory_bytes"], 8u64 << 30);
    assert_eq!(code, 3);

    // CAP_IPC_LOCK (bit 14) lifts the limit.
    write(
        root,
        "proc/self/status",
        "Name:\tvm-cli\nCapEff:\t0000000000004000\n",
    );
    let (code, v) = doctor_json(root, &["--gpu-mode", "passthrough", "--memory", "8G"]);
    assert_eq!(check(&v, "memlock.limit")["status"], "ok");
    assert_eq!(code, 0);
}

#[test]
fn bad_memory_sizes_are_usage_errors() {
    let host = common::repo().join("fixtures/hosts/amd-vi-workstation");
    for bad in ["0", "2Q", "lots", "99999999999T"] {
        let (code, _, err) = vm_cli(&host, &["gpu", "doctor", "--memory", bad]);
        assert_eq!(code, 2, "--memory {bad}: {err}");
    }
}

#[test]
fn kernel_parameter_fix_follows_the_boot_loader() {
    let t = copy_of("intel-iommu-off");
    let root = t.path();
    let fix = |root: &Path| {
        let (_, v) = doctor_json(root, &[]);
        let c = check(&v, "iommu.kernel_params");
        assert_eq!(c["status"], "fail");
        c["remedy"].as_str().unwrap().to_string()
    };
    let both = fix(root);
    assert!(
        both.contains("update-grub") && both.contains("kernel-install"),
        "{both}"
    );
    assert!(both.contains("intel_iommu=on iommu=pt"), "{both}");

    write(
        root,
        "etc/default/grub",
        "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\n",
    );
    let grub = fix(root);
    assert!(
        grub.contains("update-grub") && !grub.contains("kernel-install"),
        "{grub}"
    );

    std::fs::remove_file(root.join("etc/default/grub")).unwrap();
    write(root, "etc/kernel/cmdline", "root=/dev/sda1 ro quiet\n");
    let sdboot = fix(root);
    assert!(
        sdboot.contains("kernel-install") && !sdboot.contains("update-grub"),
        "{sdboot}"
    );

    std::fs::remove_file(root.join("etc/kernel/cmdline")).unwrap();
    std::fs::create_dir_all(root.join("boot/loader/entries")).unwrap();
    let entries = fix(root);
    assert!(entries.contains("/boot/loader/entries/*.conf"), "{entries}");
    assert!(!entries.contains("update-grub"), "{entries}");
}

#[test]
fn amd_host_gets_amd_parameters() {
    let (_, v) = doctor_json(&common::repo().join("fixtures/hosts/amd-iommu-off"), &[]);
    let c = check(&v, "iommu.kernel_params");
    assert_eq!(c["status"], "fail");
    let r = c["remedy"].as_str().unwrap();
    assert!(
        r.contains("amd_iommu=on iommu=pt") && !r.contains("intel_iommu"),
        "{r}"
    );
}

#[test]
fn gpu_device_limits_the_gpu_checks_to_that_gpu() {
    let host = common::repo().join("fixtures/hosts/amd-vi-workstation");
    let (code, v) = doctor_json(&host, &["--gpu-device", "0000:0d:00.0"]);
    let gpu_ids: Vec<&str> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["id"].as_str())
        .filter(|id| id.starts_with("gpu."))
        .collect();
    assert!(!gpu_ids.is_empty());
    assert!(
        gpu_ids.iter().all(|id| id.starts_with("gpu.0000:0d:00.0.")),
        "{gpu_ids:?}"
    );
    // The boot display with the Polaris reset bug: passthrough not ready for it.
    assert_eq!(check(&v, "gpu.0000:0d:00.0.boot_display")["status"], "fail");
    let reset = check(&v, "gpu.0000:0d:00.0.reset");
    assert_eq!(reset["status"], "warn");
    assert!(reset["remedy"].as_str().unwrap().contains("vendor-reset"));
    assert!(!rung_ready(&v, "passthrough"));
    assert_eq!(code, 0, "wgpu on that GPU is ready");
    let (pcode, _) = doctor_json(
        &host,
        &["--gpu-device", "0000:0d:00.0", "--gpu-mode", "passthrough"],
    );
    assert_eq!(pcode, 3);
}

#[test]
fn wgpu_backend_value_is_shown_and_checked() {
    let host = common::repo().join("fixtures/hosts/amd-vi-workstation");
    let run = |b: Option<&str>| {
        let (_, out, _) = vm_cli_env(&host, &["gpu", "doctor", "--json"], b);
        let v: Value = serde_json::from_str(&out).unwrap();
        check(&v, "wgpu.backend").clone()
    };
    let c = run(Some("vulkan"));
    assert_eq!(c["status"], "ok");
    assert!(c["evidence"][0]
        .as_str()
        .unwrap()
        .contains("WGPU_BACKEND=vulkan"));
    let c = run(Some("vulkn"));
    assert_eq!(c["status"], "warn");
    assert!(c["title"].as_str().unwrap().contains("vulkn"));
    assert_eq!(run(None)["status"], "ok");
}

#[test]
fn nvidia_one_type_rule_and_shared_group_are_explained() {
    let (_, v) = doctor_json(
        &common::repo().join("fixtures/hosts/bmc-datacenter-nvidia-vgpu"),
        &[],
    );
    let c = check(&v, "gpu.0000:af:00.0.mdev");
    assert_eq!(c["status"], "fail");
    assert!(
        c["remedy"].as_str().unwrap().contains("one vGPU type"),
        "{c:#}"
    );

    let (_, v) = doctor_json(
        &common::repo().join("fixtures/hosts/shared-group-host-devices"),
        &[],
    );
    let c = check(&v, "gpu.0000:04:00.0.group");
    assert_eq!(c["status"], "fail");
    let r = c["remedy"].as_str().unwrap();
    assert!(
        r.contains("0000:02:00.0") && r.contains("0000:03:00.0"),
        "{r}"
    );
}

#[test]
fn the_doctor_only_reads_the_host() {
    use vm_device::doctor::{self, Options};
    use vm_device::gpu_manager::UnifiedGpuManager;
    use vm_device::host::SimHost;
    use vm_device_sim::Op;
    for host in common::all_hosts() {
        let name = common::host_name(&host);
        let sim = std::sync::Arc::new(SimHost::from_fixture(&host).unwrap());
        let mut m = UnifiedGpuManager::with_host(sim.clone());
        m.scan_backends().unwrap();
        let candidates = m.backends().unwrap();
        sim.clear_ops();
        let r = doctor::run(
            sim.as_ref(),
            m.inventory().unwrap(),
            &candidates,
            &Options::default(),
        );
        assert!(!r.checks.is_empty());
        let ops = sim.ops();
        assert!(!ops.is_empty(), "{name}: the doctor reads through HostOps");
        assert!(
            ops.iter()
                .all(|op| matches!(op, Op::Read(_) | Op::List(_) | Op::ReadLink(_))),
            "{name}: the doctor wrote, loaded or probed: {ops:?}"
        );
    }
}

#[test]
fn access_is_existence_on_a_fixture_and_access2_on_linux() {
    use std::path::Path;
    use vm_device::host::{LinuxHost, SimHost};
    use vm_device_host::prelude::*;
    let sim = SimHost::from_fixture(common::repo().join("fixtures/hosts/gpu-on-vfio-pci")).unwrap();
    assert!(sim.access(Path::new("/dev/vfio/vfio"), true));
    assert!(sim.access(Path::new("/dev/vfio/1"), true));
    assert!(!sim.access(Path::new("/dev/vfio/99"), false));

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("node");
    std::fs::write(&file, b"").unwrap();
    let linux = LinuxHost::new();
    assert!(linux.access(&file, true), "we created it: read-write");
    assert!(!linux.access(&dir.path().join("absent"), false));
}

fn hold(root: &Path, pid: u32, comm: &str, node: &str) {
    write(root, &format!("proc/{pid}/comm"), &format!("{comm}\n"));
    let fd = root.join(format!("proc/{pid}/fd"));
    std::fs::create_dir_all(&fd).unwrap();
    std::os::unix::fs::symlink(node, fd.join("7")).unwrap();
}

#[test]
fn processes_holding_a_gpu_block_its_passthrough_with_the_right_fix() {
    // Xorg on the RX 6800's card, a shell on the other GPU's render node.
    let t = copy_of("amd-vi-workstation");
    let root = t.path();
    hold(root, 4242, "Xorg", "/dev/dri/card1");
    let (code, v) = doctor_json(root, &["--gpu-mode", "passthrough"]);
    let c = check(&v, "gpu.0000:0c:00.0.holders");
    assert_eq!(c["status"], "fail", "{c:#}");
    assert!(c["title"].as_str().unwrap().contains("Xorg (pid 4242)"));
    assert!(c["remedy"]
        .as_str()
        .unwrap()
        .contains("systemctl stop display-manager"));
    assert_eq!(check(&v, "gpu.0000:0d:00.0.holders")["status"], "ok");
    assert_eq!(code, 3, "the only passthrough-able GPU is held");

    // nvidia-persistenced on /dev/nvidia0, which the driver says is 0000:01:00.0.
    let t = copy_of("single-gpu-boot-display");
    let root = t.path();
    write(root, "dev/nvidia0", "");
    write(
        root,
        "proc/driver/nvidia/gpus/0000:01:00.0/information",
        "Model: \t\t NVIDIA GeForce RTX 3070\nDevice Minor: \t 0\n",
    );
    hold(root, 900, "nvidia-persistenced", "/dev/nvidia0");
    let (_, v) = doctor_json(root, &[]);
    let c = check(&v, "gpu.0000:01:00.0.holders");
    assert_eq!(c["status"], "fail", "{c:#}");
    assert!(c["evidence"][0].as_str().unwrap().contains("/dev/nvidia0"));
    assert_eq!(
        c["remedy"].as_str().unwrap(),
        "sudo systemctl stop nvidia-persistenced"
    );
}
