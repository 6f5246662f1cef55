//! What a real NVIDIA H100 cloud VM and a real 6.1 kernel (QEMU q35 with emulated VT-d)
//! showed (issue 13), each as a test on a copy of the recording: vm-cli never holds a GPU
//! against itself, no BAR is memory, a guest gets guest remedies, a held GPU is skipped by
//! the ladder, a serial port is never a GPU, a missing /dev/kvm is the launcher's TCG
//! warning, and every blocker of a candidate is listed.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use serde_json::Value;
use vm_device::gpu_manager::UnifiedGpuManager;
use vm_device::host::SimHost;
use vm_device_sim::Op;

fn copy_of(tree: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    common::materialize(&common::repo().join("fixtures").join(tree), dir.path());
    dir
}

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// Process `pid` named `comm` holds `node` open.
fn hold(root: &Path, pid: u32, comm: &str, node: &str) {
    write(root, &format!("proc/{pid}/comm"), &format!("{comm}\n"));
    let fd = root.join(format!("proc/{pid}/fd"));
    std::fs::create_dir_all(&fd).unwrap();
    let n = std::fs::read_dir(&fd).unwrap().count();
    std::os::unix::fs::symlink(node, fd.join(format!("{}", n + 3))).unwrap();
}

/// `/proc/self` is process `pid`, with the threads `tids`.
fn be(root: &Path, pid: u32, tids: &[u32]) {
    std::fs::create_dir_all(root.join("proc")).unwrap();
    std::os::unix::fs::symlink(pid.to_string(), root.join("proc/self")).unwrap();
    for t in tids {
        std::fs::create_dir_all(root.join(format!("proc/{pid}/task/{t}"))).unwrap();
    }
}

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

fn json(host: &Path, args: &[&str]) -> (i32, Value) {
    let (code, out, err) = vm_cli(host, args);
    let v = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}{err}"));
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

const H100: &str = "0000:00:06.0";

/// The H100 recording with `/dev/nvidia0` and vm-cli (pid 480, thread 481, and the thread
/// listed on its own as a /proc entry) holding it, as the doctor's own probe left it.
fn h100_holding_itself() -> tempfile::TempDir {
    let t = copy_of("real/h100-cloud-vm-nvidia");
    let root = t.path();
    write(root, "dev/nvidia0", "");
    be(root, 480, &[480, 481]);
    hold(root, 480, "vm-cli", "/dev/nvidia0");
    // A thread that shows up as a /proc entry of its own still belongs to vm-cli.
    hold(root, 482, "vm-cli", "/dev/nvidia0");
    write(
        root,
        "proc/482/status",
        "Name:\tvm-cli\nTgid:\t480\nPid:\t482\n",
    );
    t
}

#[test]
fn doctor_never_counts_its_own_process_or_threads_as_holders() {
    let t = h100_holding_itself();
    let (_, v) = json(t.path(), &["gpu", "doctor", "--json"]);
    let c = check(&v, &format!("gpu.{H100}.holders"));
    assert_eq!(c["status"], "ok", "vm-cli found itself: {c:#}");

    // Another program on the same node is still one.
    hold(t.path(), 900, "nvidia-persistenced", "/dev/nvidia0");
    let (_, v) = json(t.path(), &["gpu", "doctor", "--json"]);
    let c = check(&v, &format!("gpu.{H100}.holders"));
    assert_eq!(c["status"], "fail", "{c:#}");
    let title = c["title"].as_str().unwrap();
    assert!(title.contains("nvidia-persistenced (pid 900)"), "{title}");
    assert!(!title.contains("480") && !title.contains("482"), "{title}");
}

#[test]
fn the_holder_scan_runs_before_any_adapter_probe_or_nvml_query() {
    let t = h100_holding_itself();
    hold(t.path(), 900, "nvidia-persistenced", "/dev/nvidia0");
    let sim = Arc::new(SimHost::from_fixture(t.path()).unwrap());
    let mut m = UnifiedGpuManager::with_host(sim.clone());
    m.scan_backends().unwrap();
    m.backends().unwrap();
    let ops = sim.ops();
    let first = |f: &dyn Fn(&Op) -> bool| ops.iter().position(f);
    let scan = first(&|o| matches!(o, Op::List(p) if p.starts_with("/proc/900/fd")))
        .expect("the holder scan lists /proc/900/fd");
    let probe = first(&|o| *o == Op::ProbeAdapters).expect("backends() probes adapters");
    let nvml = first(&|o| matches!(o, Op::Nvml(_))).expect("NVML is asked for the H100");
    assert!(
        scan < probe && scan < nvml,
        "scan {scan}, probe {probe}, nvml {nvml}"
    );
}

#[test]
fn h100_memory_comes_from_nvml_and_the_bar_is_shown_as_a_bar() {
    let t = copy_of("real/h100-cloud-vm-nvidia");
    let (_, v) = json(t.path(), &["--json", "gpu", "list"]);
    let g = &v["gpus"][0];
    // nvidia-smi on that host: 81,559 MiB.
    assert_eq!(g["vram_bytes"], 81_559u64 << 20, "{g:#}");
    assert_eq!(g["vram_source"], "nvml");
    assert_eq!(g["largest_bar"]["bytes"], 128u64 << 30);
    let (_, text, _) = vm_cli(t.path(), &["gpu", "list"]);
    assert!(text.contains("VRAM 79.6 GiB (NVML)"), "{text}");
    assert!(!text.contains("VRAM 128 GiB"), "{text}");

    // Without NVML (no libnvidia-ml.so.1): no figure at all, never the BAR's.
    std::fs::remove_file(t.path().join(".fixture/nvml.json")).unwrap();
    let (_, v) = json(t.path(), &["--json", "gpu", "list"]);
    let g = &v["gpus"][0];
    assert_eq!(g["vram_bytes"], Value::Null, "{g:#}");
    assert_eq!(g["vram_source"], Value::Null);
    assert!(g["vram_unknown"].as_str().unwrap().contains("NVML"));
    assert_eq!(g["largest_bar"]["bytes"], 128u64 << 30);
}

#[test]
fn no_bar_is_ever_reported_as_memory() {
    // The virtio-gpu's 16 KiB register BAR and the qxl's windows are no VRAM.
    let t = copy_of("real/qemu-q35-viommu");
    let (_, v) = json(t.path(), &["--json", "gpu", "list"]);
    for g in v["gpus"].as_array().unwrap() {
        assert_eq!(g["vram_bytes"], Value::Null, "{g:#}");
    }
    let virtio = v["gpus"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["address"] == "0000:03:00.0")
        .unwrap();
    assert_eq!(virtio["largest_bar"]["bytes"], 16 * 1024);
    // Every host: a figure only with a source that knows it.
    for host in common::all_hosts() {
        let (_, v) = json(&host, &["--json", "gpu", "list"]);
        for g in v["gpus"].as_array().unwrap() {
            if !g["vram_bytes"].is_null() {
                let src = g["vram_source"].as_str().unwrap();
                assert!(["amdgpu_sysfs", "xe_sysfs", "nvml"].contains(&src), "{g:#}");
            }
        }
    }
}

#[test]
fn xe_reports_its_memory_per_tile() {
    let t = copy_of("hosts/intel-flex-sriov-idle");
    let (_, v) = json(t.path(), &["--json", "gpu", "list"]);
    let g = v["gpus"][0].clone();
    let addr = g["address"].as_str().unwrap().to_string();
    // As xe shows it: tileN/physical_vram_size_bytes under the device.
    let dev = std::fs::canonicalize(t.path().join(format!("sys/bus/pci/devices/{addr}"))).unwrap();
    std::fs::create_dir_all(dev.join("tile0")).unwrap();
    std::fs::create_dir_all(dev.join("tile1")).unwrap();
    std::fs::write(dev.join("tile0/physical_vram_size_bytes"), "8589934592\n").unwrap();
    std::fs::write(dev.join("tile1/physical_vram_size_bytes"), "8589934592\n").unwrap();
    let drv = t.path().join("sys/bus/pci/drivers/xe");
    std::fs::create_dir_all(&drv).unwrap();
    let link = dev.join("driver");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink("../../../bus/pci/drivers/xe", &link).unwrap();
    let (_, v) = json(t.path(), &["--json", "gpu", "list"]);
    let g = v["gpus"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["address"] == addr.as_str())
        .unwrap()
        .clone();
    assert_eq!(g["driver"], "xe", "{g:#}");
    assert_eq!(g["vram_bytes"], 16u64 << 30, "{g:#}");
    assert_eq!(g["vram_source"], "xe_sysfs");
}

#[test]
fn a_guest_is_recognised_and_gets_guest_remedies() {
    let t = copy_of("real/h100-cloud-vm-nvidia");
    let (_, v) = json(t.path(), &["--json", "gpu", "list"]);
    assert_eq!(
        v["host"]["virtual_machine"]["guest"], true,
        "{:#}",
        v["host"]
    );
    let (_, text, _) = vm_cli(t.path(), &["gpu", "list"]);
    assert!(
        text.contains("A virtual machine: /proc/cpuinfo flags: hypervisor"),
        "{text}"
    );
    let pt = &v["backends"][0];
    let fix = pt["remedy"].as_str().unwrap();
    assert!(
        fix.contains("virtual IOMMU") && fix.contains("intel-iommu"),
        "{fix}"
    );
    assert!(!fix.contains("firmware") && !fix.contains("GRUB"), "{fix}");
    let (_, d) = json(t.path(), &["gpu", "doctor", "--json"]);
    let fix = check(&d, "iommu.enabled")["remedy"].as_str().unwrap();
    assert!(fix.contains("virtual IOMMU"), "{fix}");
    assert!(!fix.contains("firmware-setup"), "{fix}");
    let kp = check(&d, "iommu.kernel_params");
    assert_ne!(kp["status"], "fail", "{kp:#}");
    assert!(!kp["remedy"].as_str().unwrap().contains("grub"), "{kp:#}");

    // DMI names the hypervisor when it is there.
    write(t.path(), "sys/class/dmi/id/sys_vendor", "QEMU\n");
    let (_, v) = json(t.path(), &["--json", "gpu", "list"]);
    assert_eq!(v["host"]["virtual_machine"]["hypervisor"], "QEMU");

    // Bare metal keeps the firmware and GRUB steps.
    let b = copy_of("hosts/intel-iommu-off");
    let (_, v) = json(b.path(), &["--json", "gpu", "list"]);
    assert_eq!(v["host"]["virtual_machine"]["guest"], false);
    let fix = v["backends"][0]["remedy"].as_str().unwrap();
    assert!(fix.contains("firmware") && fix.contains("GRUB"), "{fix}");
}

/// The device nodes of every passthrough candidate the ladder offers on `root`, held by a
/// program each.
fn hold_every_available_gpu(root: &Path) -> Vec<String> {
    let (_, v) = json(root, &["--json", "gpu", "list"]);
    let mut held = Vec::new();
    for b in v["backends"].as_array().unwrap() {
        if b["mode"] != "passthrough" || b["available"] != true {
            continue;
        }
        let addr = b["device"].as_str().unwrap();
        let g = v["gpus"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["address"] == addr)
            .unwrap();
        let node = g["device_nodes"][0]
            .as_str()
            .unwrap_or_else(|| panic!("{addr} has no device node: {g:#}"));
        write(root, node.trim_start_matches('/'), "");
        hold(root, 200 + held.len() as u32, "sleep", node);
        held.push(addr.to_string());
    }
    held
}

#[test]
fn a_gpu_whose_nodes_are_held_is_skipped_and_auto_falls_back_to_mdev() {
    let t = copy_of("real/qemu-q35-viommu");
    let root = t.path();
    let (_, before) = json(root, &["--kernel", "vmlinuz", "--dry-run", "--json"]);
    assert_eq!(before["selected"]["mode"], "passthrough", "{before:#}");
    let held = hold_every_available_gpu(root);
    assert!(!held.is_empty());

    let (_, v) = json(root, &["--json", "gpu", "list"]);
    for b in v["backends"].as_array().unwrap() {
        if b["mode"] == "passthrough" && held.contains(&b["device"].as_str().unwrap().into()) {
            assert_eq!(b["available"], false, "{b:#}");
            let codes: Vec<&Value> = b["reasons"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| &r["code"])
                .collect();
            assert!(codes.contains(&&Value::from("held_open")), "{b:#}");
        }
    }
    let (code, plan) = json(root, &["--kernel", "vmlinuz", "--dry-run", "--json"]);
    assert_eq!(code, 0, "{plan:#}");
    assert_eq!(plan["selected"]["mode"], "mdev", "{plan:#}");
    let (_, plan) = json(
        root,
        &[
            "--kernel",
            "vmlinuz",
            "--gpu-mode",
            "passthrough",
            "--dry-run",
            "--json",
        ],
    );
    assert_eq!(plan["selected"], Value::Null, "{plan:#}");

    // gpu prepare refuses the same GPU for the same reason: one rule for both.
    let state = tempfile::tempdir().unwrap();
    let (code, _, err) = vm_cli(
        root,
        &[
            "--state-dir",
            state.path().to_str().unwrap(),
            "gpu",
            "prepare",
            &held[0],
        ],
    );
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("host processes use the device"), "{err}");
    let (_, v) = json(root, &["--json", "gpu", "list"]);
    let b = v["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["mode"] == "passthrough" && b["device"] == held[0].as_str())
        .unwrap();
    let msg = b["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["code"] == "held_open")
        .unwrap()["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(err.contains(&msg), "prepare: {err}\nprobe: {msg}");
}

#[test]
fn a_serial_port_mdev_is_never_a_gpu() {
    let t = copy_of("real/qemu-q35-viommu-assigned");
    let root = t.path();
    // mbochs and mdpy exhausted, as in the kernel run.
    for p in ["mbochs/mbochs", "mdpy/mdpy"] {
        let types = root.join(format!("sys/devices/virtual/{p}/mdev_supported_types"));
        for e in std::fs::read_dir(&types).unwrap().flatten() {
            std::fs::write(e.path().join("available_instances"), "0\n").unwrap();
        }
    }
    let (code, plan) = json(
        root,
        &[
            "--kernel",
            "vmlinuz",
            "--gpu-mode",
            "mdev",
            "--dry-run",
            "--json",
        ],
    );
    assert_eq!(code, 3, "{plan:#}");
    assert_eq!(plan["selected"], Value::Null, "{plan:#}");
    let (_, v) = json(root, &["--json", "gpu", "list"]);
    for b in v["backends"].as_array().unwrap() {
        assert_ne!(b["device"], "mtty", "{b:#}");
    }
    let mtty = v["mdev_parents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "mtty")
        .unwrap();
    assert_eq!(mtty["display"], false);
    let (_, plan) = json(
        root,
        &[
            "--kernel",
            "vmlinuz",
            "--gpu-mode",
            "mdev",
            "--mdev-type",
            "mtty-1",
            "--dry-run",
            "--json",
        ],
    );
    assert_eq!(plan["selected"], Value::Null, "{plan:#}");
    assert_eq!(
        plan["rejected"][0]["reason_code"], "not_display",
        "{plan:#}"
    );
    // Still listed where every mdev type is.
    let (_, out, _) = vm_cli(root, &["gpu", "mdev-types"]);
    assert!(out.contains("mtty-1"), "{out}");
}

#[test]
fn a_missing_dev_kvm_is_the_launchers_tcg_warning_not_a_failure() {
    // The QEMU guest has no /dev/kvm; --kernel runs it under TCG.
    let t = copy_of("real/qemu-q35-viommu");
    let (code, d) = json(t.path(), &["gpu", "doctor", "--json"]);
    let c = check(&d, "kvm.device");
    assert_eq!(c["status"], "warn", "{c:#}");
    assert!(c["title"].as_str().unwrap().contains("TCG"), "{c:#}");
    assert_eq!(code, 0, "a rung is ready without KVM: {:#}", d["rungs"]);
    let (_, plan) = json(
        t.path(),
        &[
            "--kernel",
            "vmlinuz",
            "--gpu-mode",
            "mdev",
            "--dry-run",
            "--json",
        ],
    );
    assert_eq!(plan["selected"]["mode"], "mdev");
}

#[test]
fn the_kernel_parameters_follow_the_iommu_present_before_the_cpu() {
    // AMD CPU (TCG's), emulated Intel VT-d (dmar0): intel_iommu it is.
    let t = copy_of("real/qemu-q35-viommu");
    let (_, d) = json(t.path(), &["gpu", "doctor", "--json"]);
    let c = check(&d, "iommu.kernel_params");
    let title = c["title"].as_str().unwrap();
    assert!(title.contains("intel_iommu=on"), "{c:#}");
    assert!(!title.contains("AMD"), "{c:#}");
}

#[test]
fn every_blocker_of_a_candidate_is_listed() {
    let root = common::repo().join("fixtures/hosts/boot-display-shared-group-held");
    let (_, v) = json(&root, &["--json", "gpu", "list"]);
    let b = &v["backends"][0];
    let codes: Vec<&str> = b["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["code"].as_str().unwrap())
        .collect();
    assert_eq!(
        codes,
        ["boot_display", "group_not_viable", "held_open"],
        "{b:#}"
    );
    assert_eq!(b["reason_code"], "boot_display", "the first stays `reason`");
    for r in b["reasons"].as_array().unwrap() {
        assert!(!r["evidence"].as_array().unwrap().is_empty(), "{r:#}");
        assert!(r["remedy"].is_string(), "{r:#}");
    }
    let (_, text, _) = vm_cli(&root, &["gpu", "list"]);
    assert!(
        text.contains("unavailable (3 of 3): host processes use the device"),
        "{text}"
    );
    // --allow-boot-vga lifts one; the other two remain.
    let (_, plan) = json(
        &root,
        &[
            "--kernel",
            "vmlinuz",
            "--gpu-mode",
            "passthrough",
            "--allow-boot-vga",
            "--dry-run",
            "--json",
        ],
    );
    let codes: Vec<&str> = plan["rejected"][0]["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["group_not_viable", "held_open"], "{plan:#}");
}
