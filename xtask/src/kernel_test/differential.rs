//! Differential checks: the simulator against the real kernel, scenario by scenario.
//!
//! The guest records the host tree (`vm-cli host record`) before a scenario and at each of
//! its checkpoints (`snap NAME` in `guest/lib.sh`; the trees come back as the artifacts
//! `trees/NAME`). On the host, a [`SimHost`] opened on the first tree replays the scenario's
//! operations in process, through the same library calls vm-cli makes, and its state at each
//! checkpoint must equal the kernel's: driver links, `driver_override`, mediated devices,
//! `available_instances`, IOMMU groups and `/dev/vfio` ([`host_state`]). The VFIO reports
//! of `vfio_smoke` are compared field by field as well. A disagreement is a simulator bug.
//!
//! Both sides are read through [`HostOps`] on a [`SimHost`] (the kernel's recording opened
//! read-only), so how the recorder lays out a tree cannot make a difference of its own.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;
use vm_device::gpu_mdev::UuidSource;
use vm_device::gpu_mdev::{lifecycle, ApplyOptions, CreateRequest, MdevError, TypeRequest};
use vm_device::gpu_passthrough::{plan_prepare, prepare, release, restore, PrepareOptions};
use vm_device::host::{vfio_smoke_with, PathChoice};
use vm_device_host::prelude::*;
use vm_device_host::PciAddress;
use vm_device_sim::faults::{Fault, FaultPlan};
use vm_device_sim::SimHost;

/// The state a scenario may change, as `key → value` (keys such as
/// `pci 0000:01:00.0 driver`, `mdev_bus mdpy/mdpy-xga available_instances`, `/dev/vfio`).
pub fn host_state(h: &dyn HostOps) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    let list = |p: &str| -> Vec<String> {
        let mut v = h.list_dir(Path::new(p)).unwrap_or_default();
        v.sort();
        v
    };
    let link = |p: PathBuf| h.link_name(&p).unwrap_or_else(|_| "-".into());
    for a in list("/sys/bus/pci/devices") {
        let d = PathBuf::from("/sys/bus/pci/devices").join(&a);
        m.insert(format!("pci {a} driver"), link(d.join("driver")));
        let ovr = h
            .read_attr(&d.join("driver_override"))
            .map(|s| s.trim_end().to_string())
            .unwrap_or_else(|_| "-".into());
        m.insert(format!("pci {a} driver_override"), ovr);
    }
    for u in list("/sys/bus/mdev/devices") {
        let d = PathBuf::from("/sys/bus/mdev/devices").join(&u);
        for l in ["mdev_type", "iommu_group", "driver"] {
            m.insert(format!("mdev {u} {l}"), link(d.join(l)));
        }
    }
    for p in list("/sys/class/mdev_bus") {
        let types = format!("/sys/class/mdev_bus/{p}/mdev_supported_types");
        for t in list(&types) {
            let td = PathBuf::from(&types).join(&t);
            let avail = h
                .read_attr(&td.join("available_instances"))
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|e| format!("<{e}>"));
            m.insert(format!("mdev_bus {p}/{t} available_instances"), avail);
            let devs = list(&td.join("devices").to_string_lossy());
            m.insert(format!("mdev_bus {p}/{t} devices"), devs.join(" "));
        }
    }
    for g in list("/sys/kernel/iommu_groups") {
        let devs = list(&format!("/sys/kernel/iommu_groups/{g}/devices"));
        m.insert(format!("group {g} devices"), devs.join(" "));
    }
    m.insert("/dev/vfio".into(), list("/dev/vfio").join(" "));
    m
}

/// `kernel` against `sim`: one line per key whose values differ or that one side lacks.
pub fn diff_states(
    kernel: &BTreeMap<String, String>,
    sim: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in kernel {
        match sim.get(k) {
            Some(s) if s == v => {}
            Some(s) => out.push(format!("{k}: kernel {v:?}, simulator {s:?}")),
            None => out.push(format!("{k}: kernel {v:?}, simulator has no such entry")),
        }
    }
    for (k, s) in sim {
        if !kernel.contains_key(k) {
            out.push(format!(
                "{k}: simulator {s:?}, the kernel has no such entry"
            ));
        }
    }
    out
}

/// The state of the tree the guest recorded at checkpoint `name`.
fn kernel_state(art: &Path, name: &str) -> Result<BTreeMap<String, String>, String> {
    let dir = art.join("trees").join(name);
    let h = SimHost::from_fixture(&dir)
        .map_err(|e| format!("snapshot {name} ({}): {e}", dir.display()))?;
    Ok(host_state(&h))
}

/// Replays a scenario and collects the checkpoints that disagree.
struct Replay<'a> {
    art: &'a Path,
    compared: usize,
    entries: usize,
    problems: Vec<String>,
}

impl<'a> Replay<'a> {
    fn new(art: &'a Path) -> Self {
        Replay {
            art,
            compared: 0,
            entries: 0,
            problems: Vec::new(),
        }
    }

    /// The simulator opened on the checkpoint `name`.
    fn open(&self, name: &str) -> Result<SimHost, String> {
        let dir = self.art.join("trees").join(name);
        SimHost::from_fixture(&dir).map_err(|e| format!("snapshot {name}: {e}"))
    }

    /// The simulator's state against the kernel's at checkpoint `name`.
    fn compare(&mut self, sim: &dyn HostOps, name: &str) -> Result<(), String> {
        let kernel = kernel_state(self.art, name)?;
        let d = diff_states(&kernel, &host_state(sim));
        self.compared += 1;
        self.entries = self.entries.max(kernel.len());
        if !d.is_empty() {
            let n = d.len();
            let mut d: Vec<String> = d.into_iter().take(12).collect();
            if n > 12 {
                d.push(format!("… {} more", n - 12));
            }
            self.problems.push(format!("at {name}: {}", d.join("; ")));
        }
        Ok(())
    }

    /// The kernel's `vfio_smoke` report (artifact `file`) against the simulator's.
    fn compare_vfio(&mut self, sim: &dyn HostOps, file: &str) -> Result<(), String> {
        let path = self.art.join(file);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let kernel: Value = serde_json::from_str(&text)
            .map_err(|e| format!("{} is not JSON: {e}", path.display()))?;
        let group = kernel
            .get("group")
            .and_then(Value::as_u64)
            .ok_or_else(|| format!("{}: no numeric `group`", path.display()))?;
        let device = kernel
            .get("device")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{}: no string `device`", path.display()))?;
        let report = match vfio_smoke_with(sim, group as u32, device, PathChoice::Legacy) {
            Ok(r) => r,
            Err(e) => {
                self.problems.push(format!(
                    "{file}: the kernel passed, the simulator failed: {e}"
                ));
                return Ok(());
            }
        };
        let sim_json = serde_json::to_value(&report).map_err(|e| e.to_string())?;
        let d = diff_json("", &kernel, &sim_json);
        self.compared += 1;
        if !d.is_empty() {
            self.problems.push(format!("{file}: {}", d.join("; ")));
        }
        Ok(())
    }

    fn problem(&mut self, p: String) {
        self.problems.push(p);
    }

    fn verdict(self, what: &str) -> Result<String, String> {
        if self.problems.is_empty() {
            Ok(format!(
                "simulator agrees with the kernel at {} checkpoints ({} state entries each){what}",
                self.compared, self.entries
            ))
        } else {
            Err(format!(
                "simulator differs from the kernel (a simulator bug): {}",
                self.problems.join(" | ")
            ))
        }
    }
}

/// Leaf-by-leaf differences of two JSON values, with their paths.
pub fn diff_json(at: &str, kernel: &Value, sim: &Value) -> Vec<String> {
    match (kernel, sim) {
        (Value::Object(a), Value::Object(b)) => {
            let mut out = Vec::new();
            for (k, v) in a {
                let p = format!("{at}.{k}");
                match b.get(k) {
                    Some(w) => out.extend(diff_json(&p, v, w)),
                    None => out.push(format!("{p}: kernel {v}, simulator absent")),
                }
            }
            for (k, w) in b {
                if !a.contains_key(k) {
                    out.push(format!("{at}.{k}: simulator {w}, kernel absent"));
                }
            }
            out
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => a
            .iter()
            .zip(b)
            .enumerate()
            .flat_map(|(i, (v, w))| diff_json(&format!("{at}[{i}]"), v, w))
            .collect(),
        _ if kernel == sim => Vec::new(),
        _ => vec![format!("{at}: kernel {kernel}, simulator {sim}")],
    }
}

fn addr(s: &str) -> PciAddress {
    s.parse().expect("the scenario's addresses are valid")
}

fn state_dir() -> Result<tempfile::TempDir, String> {
    tempfile::tempdir().map_err(|e| format!("cannot make a temporary state directory: {e}"))
}

/// passthrough: prepare/release of 01:00.0 and of the shared group through 06:01.0, the boot
/// VGA refused, on the simulator from `trees/0-before`.
pub fn check_passthrough(_lines: &[String], art: &Path) -> Result<String, String> {
    let mut r = Replay::new(art);
    let sim = r.open("0-before")?;
    let state = state_dir()?;
    let opts = PrepareOptions {
        allow_boot_vga: false,
        state_dir: state.path().to_path_buf(),
    };
    for (target, prepared, vfio, released) in [
        (
            "0000:01:00.0",
            "1-prepared",
            "vfio-a.json",
            Some("2-released"),
        ),
        (
            "0000:06:01.0",
            "3-shared-prepared",
            "vfio-shared.json",
            None,
        ),
    ] {
        let a = addr(target);
        match prepare(&sim, &a, &opts).and_then(|p| p.detach()) {
            Ok(_) => r.compare(&sim, prepared)?,
            Err(e) => r.problem(format!(
                "gpu prepare {target}: the kernel prepared it, the simulator failed: {e}"
            )),
        }
        r.compare_vfio(&sim, vfio)?;
        if let Err(e) = release(&sim, &a, state.path()) {
            r.problem(format!(
                "gpu release {target}: the kernel released it, the simulator failed: {e}"
            ));
        }
        if let Some(name) = released {
            r.compare(&sim, name)?;
        }
    }
    match prepare(&sim, &addr("0000:02:00.0"), &opts) {
        Err(e) if e.is_refusal() => {}
        Err(e) => r.problem(format!(
            "gpu prepare 0000:02:00.0: the kernel run refused it (exit 3), the simulator failed otherwise: {e}"
        )),
        Ok(p) => {
            let _ = p.release();
            r.problem("gpu prepare 0000:02:00.0 (boot VGA): the simulator prepared it".into());
        }
    }
    if let Err(e) = plan_prepare(&sim, &addr("0000:02:00.0"), true) {
        r.problem(format!(
            "gpu prepare 0000:02:00.0 --allow-boot-vga --dry-run: the simulator refused it: {e}"
        ));
    }
    r.compare(&sim, "4-end")?;
    r.verdict("; VFIO reports of 01:00.0 and 06:01.0 equal")
}

/// crash-restore: the simulator dies before the write after the ones the kernel's journal
/// marks done, must then look like `trees/1-killed`, and `restore` must end like
/// `trees/2-restored`.
pub fn check_crash_restore(_lines: &[String], art: &Path) -> Result<String, String> {
    let jpath = art.join("journal.json");
    let text = std::fs::read_to_string(&jpath).map_err(|e| {
        format!(
            "cannot read the killed prepare's journal {}: {e}",
            jpath.display()
        )
    })?;
    let journal: Value =
        serde_json::from_str(&text).map_err(|e| format!("{} is not JSON: {e}", jpath.display()))?;
    let steps = journal
        .get("steps")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("{}: no `steps` array", jpath.display()))?;
    let mut done = Vec::new();
    for s in steps {
        let status = s.get("status").and_then(Value::as_str).unwrap_or("?");
        if status != "done" {
            return Err(format!(
                "journal step {} is {status:?}: the kill did not land between two steps, so the simulator cannot be stopped at the same point",
                s.get("index").unwrap_or(&Value::Null)
            ));
        }
        let action = s.pointer("/step/action").cloned().unwrap_or(Value::Null);
        if action.get("op").and_then(Value::as_str) != Some("write") {
            return Err(format!(
                "journal step {} is not a sysfs write ({action}): only writes can be replayed to the kill point",
                s.get("index").unwrap_or(&Value::Null)
            ));
        }
        done.push(action);
    }
    let mut r = Replay::new(art);
    let target = addr("0000:06:01.0");
    let sim = r.open("0-before")?;
    // the simulator must plan the same writes, in the same order
    let plan = plan_prepare(&sim, &target, false)
        .map_err(|e| format!("the simulator refuses to plan gpu prepare 0000:06:01.0: {e}"))?;
    let planned: Vec<Value> = plan
        .plan
        .steps
        .iter()
        .filter(|s| s.action.changes_host())
        .map(|s| serde_json::to_value(&s.action).unwrap_or(Value::Null))
        .collect();
    if planned.get(..done.len()) != Some(&done[..]) {
        r.problem(format!(
            "the simulator's plan starts {planned:?}, the kernel run journaled {done:?}"
        ));
    }
    let sim =
        sim.with_faults(FaultPlan::new().rule(Fault::write("").nth(done.len() as u32 + 1).die()));
    let state = state_dir()?;
    let opts = PrepareOptions {
        allow_boot_vga: false,
        state_dir: state.path().to_path_buf(),
    };
    match prepare(&sim, &target, &opts) {
        Ok(p) => {
            std::mem::forget(p);
            r.problem(format!(
                "the simulator's prepare survived a kill at write {}",
                done.len() + 1
            ));
        }
        Err(_) if sim.is_dead() => {}
        Err(e) => r.problem(format!(
            "the simulator's prepare failed before the kill: {e}"
        )),
    }
    let reborn = sim.fork();
    r.compare(&reborn, "1-killed")?;
    let report = restore(&reborn, state.path());
    if !report.complete() {
        r.problem(format!("the simulator's restore is incomplete: {report:?}"));
    }
    r.compare(&reborn, "2-restored")?;
    r.verdict(&format!("; killed after {} writes in both", done.len()))
}

const MDEV_TRIO: [(&str, &str, &str); 3] = [
    (
        "mbochs",
        "mbochs-small",
        "6b2e6c0e-1d2a-4c3b-8e4f-00000000c001",
    ),
    ("mdpy", "mdpy-vga", "6b2e6c0e-1d2a-4c3b-8e4f-00000000c002"),
    ("mtty", "mtty-2", "6b2e6c0e-1d2a-4c3b-8e4f-00000000c003"),
];

fn fill_uuid(i: u32) -> String {
    format!("6b2e6c0e-1d2a-4c3b-8e4f-00000000d00{i}")
}

fn create_req(type_id: &str, uuid: &str) -> CreateRequest {
    CreateRequest {
        ty: TypeRequest {
            wanted: type_id.to_string(),
            parent: None,
            numa_node: None,
        },
        uuid: UuidSource::Given(uuid.to_string()),
        persist: None,
    }
}

/// mdev: the three creations, the VFIO reports, the removals, mdpy filled and the refusals
/// (vm-device's and the kernel's own errno), on the simulator from `trees/0-before`.
pub fn check_mdev(_lines: &[String], art: &Path) -> Result<String, String> {
    const EUSERS: i32 = 87;
    let mut r = Replay::new(art);
    let sim = r.open("0-before")?;
    let opts = ApplyOptions { state_dir: None };
    for (p, t, u) in MDEV_TRIO {
        if let Err(e) = lifecycle::create(&sim, &create_req(t, u), &opts) {
            r.problem(format!(
                "mdev-create {t} ({p}): the kernel created it, the simulator failed: {e}"
            ));
        }
    }
    r.compare(&sim, "1-created")?;
    for (p, _, u) in MDEV_TRIO {
        r.compare_vfio(&sim, &format!("vfio-{p}.json"))?;
        if let Err(e) = lifecycle::remove(&sim, u, &opts) {
            r.problem(format!(
                "mdev-remove {u} ({p}): the kernel removed it, the simulator failed: {e}"
            ));
        }
    }
    r.compare(&sim, "2-removed")?;
    let mut made = 0;
    for i in 1..=4 {
        match lifecycle::create(&sim, &create_req("mdpy-xga", &fill_uuid(i)), &opts) {
            Ok(_) => made += 1,
            Err(e) => r.problem(format!(
                "mdpy-xga #{i}: the kernel created it, the simulator refused: {e}"
            )),
        }
    }
    let over = "6b2e6c0e-1d2a-4c3b-8e4f-00000000d009";
    match lifecycle::create(&sim, &create_req("mdpy-xga", over), &opts) {
        Err(MdevError::NoInstances { .. }) => {}
        Err(e) => r.problem(format!(
            "mdpy-xga #{}: vm-cli on the kernel said \"no instance left\" (exit 3), on the simulator: {e}",
            made + 1
        )),
        Ok(_) => r.problem(format!("mdpy-xga #{}: the simulator created it", made + 1)),
    }
    let create = Path::new("/sys/class/mdev_bus/mdpy/mdev_supported_types/mdpy-xga/create");
    match sim.write_attr(create, over.as_bytes()) {
        Err(e) if e.raw_os_error() == Some(EUSERS) => {}
        Err(e) => r.problem(format!(
            "a raw create beyond capacity: the kernel said EUSERS, the simulator {e}"
        )),
        Ok(()) => r.problem(
            "a raw create beyond capacity: the kernel said EUSERS, the simulator created it".into(),
        ),
    }
    r.compare(&sim, "3-full")?;
    for i in 1..=4 {
        if let Err(e) = lifecycle::remove(&sim, &fill_uuid(i), &opts) {
            r.problem(format!(
                "mdev-remove {}: the simulator failed: {e}",
                fill_uuid(i)
            ));
        }
    }
    r.compare(&sim, "4-end")?;
    r.verdict(
        "; VFIO reports of the mbochs, mdpy and mtty devices equal; EUSERS beyond capacity in both",
    )
}

/// gpu-list: `vm-cli --host-root trees/tree gpu list --json` (the simulator on the tree the
/// guest recorded right after its own `gpu list --json`) prints the same document as vm-cli
/// did on the kernel (`gpus.json`). `vm_cli` is the binary built for the guest.
pub fn gpu_list_on_sim(art: &Path, vm_cli: &Path) -> Result<String, String> {
    let tree = art.join("trees/tree");
    let state = state_dir()?;
    let out = std::process::Command::new(vm_cli)
        .arg("--host-root")
        .arg(&tree)
        .args(["gpu", "list", "--json"])
        .env("VM_STATE_DIR", state.path())
        .env_remove("WGPU_BACKEND")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", vm_cli.display()))?;
    let sim: Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "vm-cli --host-root {} gpu list --json printed no JSON ({e}; exit {}): {}",
            tree.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    let file = art.join("gpus.json");
    let kernel: Value = std::fs::read_to_string(&file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))
        .and_then(|t| serde_json::from_str(&t).map_err(|e| format!("{}: {e}", file.display())))?;
    let d = diff_json("", &kernel, &sim);
    if d.is_empty() {
        Ok("the simulator on the recorded tree prints the same gpu list --json".into())
    } else {
        let n = d.len();
        Err(format!(
            "gpu list --json differs between the kernel and the simulator on its recording ({n} leaves): {}",
            d.into_iter().take(12).collect::<Vec<_>>().join("; ")
        ))
    }
}

/// One sysfs write of a shell scenario: (path, bytes as `echo` writes them).
type Write = (String, String);

/// `bind_vfio ADDR` of `guest/lib.sh`: override, unbind, probe.
fn bind_vfio(a: &str) -> Vec<Write> {
    let dev = format!("/sys/bus/pci/devices/{a}");
    vec![
        (format!("{dev}/driver_override"), "vfio-pci\n".into()),
        (format!("{dev}/driver/unbind"), format!("{a}\n")),
        ("/sys/bus/pci/drivers_probe".into(), format!("{a}\n")),
    ]
}

/// `unbind_vfio ADDR` of `guest/lib.sh`: clear the override, unbind, probe.
fn unbind_vfio(a: &str) -> Vec<Write> {
    let dev = format!("/sys/bus/pci/devices/{a}");
    vec![
        (format!("{dev}/driver_override"), "\n".into()),
        (format!("{dev}/driver/unbind"), format!("{a}\n")),
        ("/sys/bus/pci/drivers_probe".into(), format!("{a}\n")),
    ]
}

/// Replays the raw sysfs writes of a shell scenario on the simulator from `0-before`,
/// comparing at each named checkpoint. Every write must succeed (the guest checked that it
/// did on the kernel).
fn replay_writes(art: &Path, batches: Vec<(Vec<Write>, &str)>) -> Result<String, String> {
    let mut r = Replay::new(art);
    let sim = r.open("0-before")?;
    let mut writes = 0;
    for (batch, checkpoint) in batches {
        for (path, value) in batch {
            writes += 1;
            if let Err(e) = sim.write_attr(Path::new(&path), value.as_bytes()) {
                r.problem(format!(
                    "echo {:?} > {path}: the kernel accepted it, the simulator said {e}",
                    value.trim_end()
                ));
            }
        }
        r.compare(&sim, checkpoint)?;
    }
    r.verdict(&format!("; {writes} sysfs writes replayed"))
}

/// lab-vfio-bind: 01:00.0 to vfio-pci and back by hand.
pub fn check_lab_vfio_bind(_lines: &[String], art: &Path) -> Result<String, String> {
    let a = "0000:01:00.0";
    replay_writes(
        art,
        vec![(bind_vfio(a), "1-bound"), (unbind_vfio(a), "2-released")],
    )
}

/// lab-shared-group: both members of group 11 to vfio-pci and back, one at a time.
pub fn check_lab_shared_group(_lines: &[String], art: &Path) -> Result<String, String> {
    let (a, b) = ("0000:06:01.0", "0000:06:02.0");
    replay_writes(
        art,
        vec![
            (bind_vfio(a), "1-a-bound"),
            (bind_vfio(b), "2-both-bound"),
            (unbind_vfio(a), "3-a-released"),
            (unbind_vfio(b), "4-released"),
        ],
    )
}

/// lab-mdev: create and remove an mbochs device on the first type with room, as the script
/// chooses it (types in listing order).
pub fn check_lab_mdev(_lines: &[String], art: &Path) -> Result<String, String> {
    let u = "6b2e6c0e-1d2a-4c3b-8e4f-0000000000a1";
    let sim = SimHost::from_fixture(art.join("trees/0-before"))
        .map_err(|e| format!("snapshot 0-before: {e}"))?;
    let types_dir = "/sys/class/mdev_bus/mbochs/mdev_supported_types";
    let mut types = sim.list_dir(Path::new(types_dir)).unwrap_or_default();
    types.sort();
    let t = types
        .iter()
        .find(|t| {
            sim.read_attr(Path::new(&format!("{types_dir}/{t}/available_instances")))
                .ok()
                .and_then(|v| v.trim().parse::<u32>().ok())
                .is_some_and(|n| n > 0)
        })
        .ok_or_else(|| format!("the 'before' tree has no mbochs type with room ({types:?})"))?;
    replay_writes(
        art,
        vec![
            (
                vec![(format!("{types_dir}/{t}/create"), format!("{u}\n"))],
                "1-created",
            ),
            (
                vec![(format!("/sys/bus/mdev/devices/{u}/remove"), "1\n".into())],
                "2-removed",
            ),
        ],
    )
}

/// The UUIDs of the mediated devices in the tree the guest recorded at checkpoint `name`.
fn recorded_mdevs(art: &Path, name: &str) -> Result<Vec<String>, String> {
    let dir = art.join("trees").join(name);
    let h = SimHost::from_fixture(&dir).map_err(|e| format!("snapshot {name}: {e}"))?;
    let mut v = h
        .list_dir(Path::new("/sys/bus/mdev/devices"))
        .unwrap_or_default();
    v.sort();
    Ok(v)
}

/// The one mdev vm-cli created (random UUID), read from checkpoint `name`.
fn the_mdev(art: &Path, name: &str) -> Result<String, String> {
    match recorded_mdevs(art, name)?.as_slice() {
        [u] => Ok(u.clone()),
        other => Err(format!(
            "snapshot {name} should hold exactly the mdev vm-cli created, it holds {other:?}"
        )),
    }
}

/// nested-test, `vm-cli --gpu-mode passthrough --gpu-device ADDR` in L1: the prepare vm-cli
/// made before QEMU started (`1-running`, recorded while L2 showed its pattern) and the
/// release after L2 powered off (`2-after`), replayed on the simulator from `0-before`.
pub fn check_nested_passthrough(art: &Path, target: &str) -> Result<String, String> {
    let mut r = Replay::new(art);
    let sim = r.open("0-before")?;
    let state = state_dir()?;
    let opts = PrepareOptions {
        allow_boot_vga: false,
        state_dir: state.path().to_path_buf(),
    };
    let a = addr(target);
    match prepare(&sim, &a, &opts).and_then(|p| p.detach()) {
        Ok(_) => r.compare(&sim, "1-running")?,
        Err(e) => r.problem(format!(
            "prepare {target}: vm-cli prepared it on the kernel, the simulator failed: {e}"
        )),
    }
    if let Err(e) = release(&sim, &a, state.path()) {
        r.problem(format!(
            "release {target}: vm-cli released it on the kernel, the simulator failed: {e}"
        ));
    }
    r.compare(&sim, "2-after")?;
    r.verdict("")
}

/// nested-test, `vm-cli --gpu-mode mdev --mdev-type TYPE` in L1: the creation (with the
/// UUID vm-cli drew, read from `1-running`) and the removal after power-off (`2-after`).
pub fn check_nested_mdev(art: &Path, type_id: &str) -> Result<String, String> {
    let mut r = Replay::new(art);
    let sim = r.open("0-before")?;
    let uuid = the_mdev(art, "1-running")?;
    let opts = ApplyOptions { state_dir: None };
    match lifecycle::create(&sim, &create_req(type_id, &uuid), &opts) {
        Ok(_) => r.compare(&sim, "1-running")?,
        Err(e) => r.problem(format!(
            "create {type_id} {uuid}: vm-cli created it on the kernel, the simulator failed: {e}"
        )),
    }
    if let Err(e) = lifecycle::remove(&sim, &uuid, &opts) {
        r.problem(format!(
            "remove {uuid}: vm-cli removed it on the kernel, the simulator failed: {e}"
        ));
    }
    r.compare(&sim, "2-after")?;
    r.verdict(&format!("; mdev {uuid}"))
}

/// nested-test's kill: a passthrough launch and an mdev launch killed with -9 (`1-killed`:
/// the group still on vfio-pci, the mdev still there), then `vm-cli gpu restore`
/// (`2-restored`), replayed on the simulator from `0-before`.
pub fn check_nested_kill(art: &Path, target: &str, type_id: &str) -> Result<String, String> {
    let mut r = Replay::new(art);
    let sim = r.open("0-before")?;
    let uuid = the_mdev(art, "1-killed")?;
    let state = state_dir()?;
    let popts = PrepareOptions {
        allow_boot_vga: false,
        state_dir: state.path().to_path_buf(),
    };
    let mopts = ApplyOptions { state_dir: None };
    let a = addr(target);
    if let Err(e) = prepare(&sim, &a, &popts).and_then(|p| p.detach()) {
        r.problem(format!(
            "prepare {target}: vm-cli prepared it on the kernel, the simulator failed: {e}"
        ));
    }
    if let Err(e) = lifecycle::create(&sim, &create_req(type_id, &uuid), &mopts) {
        r.problem(format!(
            "create {type_id} {uuid}: vm-cli created it on the kernel, the simulator failed: {e}"
        ));
    }
    r.compare(&sim, "1-killed")?;
    if let Err(e) = release(&sim, &a, state.path()) {
        r.problem(format!(
            "giving {target} back: gpu restore did on the kernel, the simulator failed: {e}"
        ));
    }
    if let Err(e) = lifecycle::remove(&sim, &uuid, &mopts) {
        r.problem(format!(
            "removing {uuid}: gpu restore did on the kernel, the simulator failed: {e}"
        ));
    }
    r.compare(&sim, "2-restored")?;
    r.verdict(&format!("; mdev {uuid}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lab() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/hosts/qemu-q35-viommu-lab")
    }

    #[test]
    fn state_of_the_lab_fixture_has_drivers_pools_and_groups() {
        let h = SimHost::from_fixture(lab()).unwrap();
        let s = host_state(&h);
        assert_eq!(s["pci 0000:01:00.0 driver"], "bochs-drm");
        assert_eq!(s["pci 0000:01:00.0 driver_override"], "(null)");
        assert_eq!(s["mdev_bus mdpy/mdpy-xga available_instances"], "4");
        assert_eq!(
            s["group 11 devices"],
            "0000:05:00.0 0000:06:01.0 0000:06:02.0"
        );
        assert_eq!(s["/dev/vfio"], "vfio");
    }

    #[test]
    fn a_prepare_shows_up_as_differences_naming_the_keys() {
        let h = SimHost::from_fixture(lab()).unwrap();
        let before = host_state(&h);
        let state = tempfile::tempdir().unwrap();
        let opts = PrepareOptions {
            allow_boot_vga: false,
            state_dir: state.path().to_path_buf(),
        };
        let p = prepare(&h, &addr("0000:01:00.0"), &opts).unwrap();
        let d = diff_states(&before, &host_state(&h));
        assert!(
            d.iter().any(|l| l.starts_with("pci 0000:01:00.0 driver:")),
            "{d:?}"
        );
        assert!(d.iter().any(|l| l.starts_with("/dev/vfio:")), "{d:?}");
        p.release().unwrap();
        assert!(diff_states(&before, &host_state(&h)).is_empty());
    }

    #[test]
    fn json_differences_name_the_leaf() {
        let a: Value = serde_json::json!({"vendor": 4660, "regions": [{"size": 1}, {"size": 2}]});
        let b: Value =
            serde_json::json!({"vendor": 4660, "regions": [{"size": 1}, {"size": 3}], "x": 1});
        let d = diff_json("", &a, &b);
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(d[0].starts_with(".regions[1].size"), "{d:?}");
        assert!(d[1].starts_with(".x"), "{d:?}");
        assert!(diff_json("", &a, &a).is_empty());
    }

    #[test]
    fn gpu_list_differential_names_a_missing_binary() {
        let dir = tempfile::tempdir().unwrap();
        let e = gpu_list_on_sim(dir.path(), &dir.path().join("no-vm-cli")).unwrap_err();
        assert!(e.contains("no-vm-cli"), "{e}");
    }

    #[test]
    fn replayed_writes_that_the_simulator_refuses_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        for t in ["0-before", "1-x"] {
            let d = dir.path().join("trees").join(t);
            std::fs::create_dir_all(&d).unwrap();
            vm_device_sim::copy_fixture(&lab(), &d).unwrap();
        }
        // an unknown address: drivers_probe says ENODEV on the simulator as on the kernel
        let w = vec![(
            "/sys/bus/pci/drivers_probe".to_string(),
            "0000:09:00.0\n".to_string(),
        )];
        let e = replay_writes(dir.path(), vec![(w, "1-x")]).unwrap_err();
        assert!(e.contains("drivers_probe"), "{e}");
        // no writes: the simulator is the recording
        assert!(replay_writes(dir.path(), vec![(Vec::new(), "1-x")]).is_ok());
        // a real bind shows up against an unchanged recording
        let e = replay_writes(dir.path(), vec![(bind_vfio("0000:01:00.0"), "1-x")]).unwrap_err();
        assert!(e.contains("pci 0000:01:00.0 driver"), "{e}");
    }

    #[test]
    fn checks_fail_with_the_path_when_artifacts_are_missing() {
        let dir = tempfile::tempdir().unwrap();
        let e = check_passthrough(&[], dir.path()).unwrap_err();
        assert!(e.contains("0-before"), "{e}");
        let e = check_crash_restore(&[], dir.path()).unwrap_err();
        assert!(e.contains("journal.json"), "{e}");
    }
}
