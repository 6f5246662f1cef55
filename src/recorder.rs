//! Recording the running host as a fixture tree (`docs/fixture-format.md`), so that a user can
//! attach their host to a bug report and the simulator can replay it.
//!
//! [`record_host`] reads the host only through [`HostOps`] (`list_dir`, `read`, `read_link`,
//! `kind`, `canonicalize`, `probe_adapters`), so it records a real host ([`crate::host::LinuxHost`])
//! and re-records a fixture ([`crate::host::SimHost`]) the same way. The output tree is plain
//! files written with `std::fs`: attributes as the kernel printed them, links with the
//! kernel's relative targets, device nodes as empty files, and `.fixture/` metadata.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::host::{HostError, HostOps, NodeKind};

/// PCI function attributes kept in a recording (the set `docs/tools/record-host.sh` keeps).
pub const PCI_ATTRS: &[&str] = &[
    "vendor",
    "device",
    "class",
    "subsystem_vendor",
    "subsystem_device",
    "revision",
    "resource",
    "boot_vga",
    "numa_node",
    "driver_override",
    "irq",
    "enable",
    "local_cpulist",
    "local_cpus",
    "modalias",
    "current_link_speed",
    "current_link_width",
    "max_link_speed",
    "max_link_width",
    "sriov_numvfs",
    "sriov_totalvfs",
    "sriov_offset",
    "sriov_stride",
    "sriov_vf_device",
    "sriov_drivers_autoprobe",
    "d3cold_allowed",
    "reset_method",
    "power_state",
    "label",
    "index",
    "acpi_index",
    "config",
];

/// Links of a PCI function kept in a recording (plus every `virtfnN`).
const PCI_LINKS: &[&str] = &["driver", "iommu_group", "physfn", "subsystem"];

/// Attributes of a mediated-device type.
const MDEV_TYPE_ATTRS: &[&str] = &["name", "description", "device_api", "available_instances"];

/// Links of an active mediated device.
const MDEV_LINKS: &[&str] = &["mdev_type", "iommu_group", "driver", "subsystem"];

/// What a recording holds (`vm-cli --json host record` prints it as is).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RecordSummary {
    /// The tree's root directory.
    pub root: PathBuf,
    /// Kernel release of the recorded host.
    pub kernel_release: String,
    /// PCI functions recorded (`sys/bus/pci/devices`).
    pub pci_functions: usize,
    /// Display-class (0x03xxxx) functions among them.
    pub display_functions: usize,
    /// IOMMU groups recorded.
    pub iommu_groups: usize,
    /// Devices that can parent mediated devices (`sys/class/mdev_bus`).
    pub mdev_parents: usize,
    /// Active mediated devices (`sys/bus/mdev/devices`).
    pub mdevs: usize,
    /// Device nodes recorded as empty files under `dev/`.
    pub device_nodes: usize,
    /// wgpu adapters written to `.fixture/wgpu-adapters.json`.
    pub adapters: usize,
    /// Files, links and directories written (`.fixture/` included).
    pub entries: usize,
    /// What could not be read and was left out, with the reason (`PATH: error`).
    pub skipped: Vec<String>,
}

impl fmt::Display for RecordSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "recorded {} (Linux {}): {} PCI functions ({} display), {} IOMMU groups, {} mdev parents, {} mdevs, {} device nodes, {} wgpu adapters; {} entries",
            self.root.display(),
            self.kernel_release,
            self.pci_functions,
            self.display_functions,
            self.iommu_groups,
            self.mdev_parents,
            self.mdevs,
            self.device_nodes,
            self.adapters,
            self.entries
        )?;
        if !self.skipped.is_empty() {
            write!(f, "; {} left out (unreadable)", self.skipped.len())?;
        }
        Ok(())
    }
}

/// Why a recording failed.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// A part of the host every recording needs could not be read.
    #[error("reading the host: {0}")]
    Host(#[from] HostError),
    /// Writing the output tree failed.
    #[error("writing {}: {source}", path.display())]
    Output {
        /// The output path.
        path: PathBuf,
        /// The error from the filesystem.
        #[source]
        source: std::io::Error,
    },
    /// The output directory already holds something.
    #[error("{} exists and is not empty: record into a new or empty directory", .0.display())]
    NotEmpty(PathBuf),
}

/// The output tree being written.
struct Out {
    root: PathBuf,
    entries: usize,
}

impl Out {
    fn path(&self, host_path: &Path) -> PathBuf {
        self.root
            .join(host_path.strip_prefix("/").unwrap_or(host_path))
    }

    fn err(path: &Path, source: std::io::Error) -> RecordError {
        RecordError::Output {
            path: path.to_path_buf(),
            source,
        }
    }

    fn dir(&mut self, host_path: &Path) -> Result<(), RecordError> {
        let p = self.path(host_path);
        if !p.is_dir() {
            std::fs::create_dir_all(&p).map_err(|e| Self::err(&p, e))?;
            self.entries += 1;
        }
        Ok(())
    }

    fn file(&mut self, host_path: &Path, bytes: &[u8]) -> Result<(), RecordError> {
        if let Some(parent) = host_path.parent() {
            self.dir(parent)?;
        }
        let p = self.path(host_path);
        std::fs::write(&p, bytes).map_err(|e| Self::err(&p, e))?;
        self.entries += 1;
        Ok(())
    }

    fn link(&mut self, host_path: &Path, target: &Path) -> Result<(), RecordError> {
        if let Some(parent) = host_path.parent() {
            self.dir(parent)?;
        }
        let p = self.path(host_path);
        if std::fs::symlink_metadata(&p).is_ok() {
            return Ok(());
        }
        std::os::unix::fs::symlink(target, &p).map_err(|e| Self::err(&p, e))?;
        self.entries += 1;
        Ok(())
    }
}

/// The recording in progress.
struct Recorder<'a> {
    host: &'a dyn HostOps,
    out: Out,
    skipped: Vec<String>,
    done: BTreeSet<PathBuf>,
}

impl Recorder<'_> {
    /// Copies a regular attribute if it is there; unreadable ones are noted and skipped.
    fn attr(&mut self, path: &Path) -> Result<(), RecordError> {
        if self.host.kind(path) != Some(NodeKind::File) {
            return Ok(());
        }
        match self.host.read(path) {
            Ok(bytes) => self.out.file(path, &bytes),
            Err(e) => {
                self.skipped.push(format!("{}: {e}", path.display()));
                Ok(())
            }
        }
    }

    /// Where link `l` leads, or `None` (noted in `skipped`) when it dangles or loops.
    fn resolve(&mut self, l: &Path) -> Option<PathBuf> {
        match self.host.canonicalize(l) {
            Ok(p) => Some(p),
            Err(e) => {
                self.skipped.push(format!("{}: {e}", l.display()));
                None
            }
        }
    }

    /// Copies a link (its stored, relative target) if it is there.
    fn link(&mut self, path: &Path) -> Result<(), RecordError> {
        if self.host.kind(path) != Some(NodeKind::Link) {
            return Ok(());
        }
        match self.host.read_link(path) {
            Ok(t) => self.out.link(path, &t),
            Err(e) => {
                self.skipped.push(format!("{}: {e}", path.display()));
                Ok(())
            }
        }
    }

    /// Names in a directory, or none when it is absent or unreadable (noted).
    fn names(&mut self, dir: &Path) -> Vec<String> {
        if !self.host.is_dir(dir) {
            return Vec::new();
        }
        match self.host.list_dir(dir) {
            Ok(v) => v,
            Err(e) => {
                self.skipped.push(format!("{}: {e}", dir.display()));
                Vec::new()
            }
        }
    }

    fn pci_function(&mut self, dev: &Path) -> Result<(), RecordError> {
        if !self.done.insert(dev.to_path_buf()) {
            return Ok(());
        }
        self.out.dir(dev)?;
        for a in PCI_ATTRS {
            self.attr(&dev.join(a))?;
        }
        for l in PCI_LINKS {
            self.link(&dev.join(l))?;
        }
        for n in self.names(dev) {
            if n.starts_with("virtfn") {
                self.link(&dev.join(&n))?;
            }
        }
        let nv = dev.join("nvidia");
        for n in self.names(&nv) {
            self.attr(&nv.join(n))?;
        }
        Ok(())
    }

    fn pci(&mut self) -> Result<(usize, usize), RecordError> {
        let bus = Path::new("/sys/bus/pci/devices");
        self.out.dir(bus)?;
        let names = self.host.list_dir(bus)?;
        let mut display = 0;
        for n in &names {
            let l = bus.join(n);
            self.link(&l)?;
            // A dangling or looping link is noted and left out; the rest is recorded.
            let Some(real) = self.resolve(&l) else {
                continue;
            };
            self.pci_function(&real)?;
            // the bridges above it, up to the root complex
            let mut p = real.parent().map(Path::to_path_buf);
            while let Some(dir) = p {
                if self.host.kind(&dir.join("vendor")) != Some(NodeKind::File) {
                    break;
                }
                self.pci_function(&dir)?;
                p = dir.parent().map(Path::to_path_buf);
            }
            if self
                .host
                .read_attr(&l.join("class"))
                .is_ok_and(|c| c.starts_with("0x03"))
            {
                display += 1;
            }
        }
        let drivers = Path::new("/sys/bus/pci/drivers");
        self.out.dir(drivers)?;
        for d in self.names(drivers) {
            let dir = drivers.join(&d);
            self.out.dir(&dir)?;
            for n in self.names(&dir) {
                if looks_like_pci_address(&n) {
                    self.link(&dir.join(n))?;
                }
            }
        }
        Ok((names.len(), display))
    }

    fn iommu_groups(&mut self) -> Result<usize, RecordError> {
        let root = Path::new("/sys/kernel/iommu_groups");
        self.out.dir(root)?;
        let groups = self.names(root);
        for g in &groups {
            let dir = root.join(g);
            self.out.dir(&dir.join("devices"))?;
            for n in self.names(&dir.join("devices")) {
                self.link(&dir.join("devices").join(n))?;
            }
            self.attr(&dir.join("type"))?;
        }
        Ok(groups.len())
    }

    /// `sys/class/{iommu,mdev_bus,drm}`: the links, and their targets as directories so the
    /// links resolve inside the tree.
    fn classes(&mut self) -> Result<(), RecordError> {
        for c in ["iommu", "mdev_bus", "drm"] {
            let dir = Path::new("/sys/class").join(c);
            if !self.host.is_dir(&dir) {
                continue;
            }
            self.out.dir(&dir)?;
            for n in self.names(&dir) {
                let l = dir.join(&n);
                if self.host.kind(&l) != Some(NodeKind::Link) {
                    continue;
                }
                self.link(&l)?;
                match self.host.canonicalize(&l) {
                    Ok(target) => self.out.dir(&target)?,
                    Err(e) => self.skipped.push(format!("{}: {e}", l.display())),
                }
            }
        }
        Ok(())
    }

    fn mdev(&mut self) -> Result<(usize, usize), RecordError> {
        let class = Path::new("/sys/class/mdev_bus");
        let parents = self.names(class);
        for p in &parents {
            let Some(real) = self.resolve(&class.join(p)) else {
                continue;
            };
            let types = real.join("mdev_supported_types");
            for t in self.names(&types) {
                let tdir = types.join(&t);
                self.out.dir(&tdir.join("devices"))?;
                for a in MDEV_TYPE_ATTRS {
                    self.attr(&tdir.join(a))?;
                }
                for n in self.names(&tdir.join("devices")) {
                    self.link(&tdir.join("devices").join(n))?;
                }
            }
        }
        let bus = Path::new("/sys/bus/mdev");
        let mut active = 0;
        if self.host.is_dir(bus) {
            self.out.dir(&bus.join("devices"))?;
            self.out.dir(&bus.join("drivers"))?;
            for m in self.names(&bus.join("devices")) {
                let l = bus.join("devices").join(&m);
                self.link(&l)?;
                let Some(real) = self.resolve(&l) else {
                    continue;
                };
                self.out.dir(&real)?;
                for n in MDEV_LINKS {
                    self.link(&real.join(n))?;
                }
                active += 1;
            }
            for d in self.names(&bus.join("drivers")) {
                let dir = bus.join("drivers").join(&d);
                self.out.dir(&dir)?;
                for n in self.names(&dir) {
                    if looks_like_uuid(&n) {
                        self.link(&dir.join(n))?;
                    }
                }
            }
        }
        Ok((parents.len(), active))
    }

    fn proc(&mut self) -> Result<String, RecordError> {
        let cmdline = self.host.read(Path::new("/proc/cmdline"))?;
        self.out.file(Path::new("/proc/cmdline"), &cmdline)?;
        self.attr(Path::new("/proc/modules"))?;
        // the first processor's block is enough (vendor_id, flags) and keeps the tree small
        let cpuinfo = self.host.read(Path::new("/proc/cpuinfo"))?;
        let text = String::from_utf8_lossy(&cpuinfo);
        let mut first = String::new();
        for l in text.lines() {
            if l.trim().is_empty() {
                break;
            }
            first.push_str(l);
            first.push('\n');
        }
        self.out
            .file(Path::new("/proc/cpuinfo"), first.as_bytes())?;
        // What tells a guest from bare metal besides the cpuinfo flag (DMI names the
        // hypervisor; Xen has /sys/hypervisor): the scan reads these, so the recording keeps
        // them and a replay recognises the same host.
        for p in [
            "/sys/class/dmi/id/sys_vendor",
            "/sys/class/dmi/id/product_name",
            "/sys/hypervisor/type",
        ] {
            self.attr(Path::new(p))?;
        }
        // a real host has osrelease; a fixture has the recorded proc/kernel-release
        let release = self
            .host
            .read_attr(Path::new("/proc/sys/kernel/osrelease"))
            .or_else(|_| self.host.read_attr(Path::new("/proc/kernel-release")))
            .unwrap_or_else(|e| {
                self.skipped.push(format!("kernel release: {e}"));
                "unknown".to_string()
            });
        self.out.file(
            Path::new("/proc/kernel-release"),
            format!("{release}\n").as_bytes(),
        )?;
        Ok(release)
    }

    fn dev(&mut self) -> Result<Vec<String>, RecordError> {
        let mut nodes = Vec::new();
        let mut candidates: Vec<PathBuf> = vec!["/dev/kvm".into(), "/dev/iommu".into()];
        for dir in ["/dev/vfio", "/dev/vfio/devices", "/dev/dri"] {
            for n in self.names(Path::new(dir)) {
                candidates.push(Path::new(dir).join(n));
            }
        }
        for p in candidates {
            match self.host.kind(&p) {
                Some(NodeKind::Device) | Some(NodeKind::File) => {
                    self.out.file(&p, b"")?;
                    nodes.push(p.to_string_lossy().trim_start_matches('/').to_string());
                }
                // dri/by-path holds links to the nodes already recorded
                _ => {}
            }
        }
        Ok(nodes)
    }
}

fn looks_like_pci_address(n: &str) -> bool {
    n.len() >= 12 && n.matches(':').count() == 2 && n.contains('.')
}

fn looks_like_uuid(n: &str) -> bool {
    let parts: Vec<&str> = n.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// `YYYY-MM-DD` (UTC) of a Unix time.
fn utc_date(secs: u64) -> String {
    // days since 1970-01-01 → civil date (Howard Hinnant's algorithm)
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Every empty directory under `root` (links not followed), relative, sorted.
fn empty_dirs(root: &Path) -> Result<Vec<String>, RecordError> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut any = false;
        for e in std::fs::read_dir(&dir).map_err(|e| Out::err(&dir, e))? {
            let e = e.map_err(|e| Out::err(&dir, e))?;
            any = true;
            if e.file_type()
                .map_err(|err| Out::err(&e.path(), err))?
                .is_dir()
            {
                stack.push(e.path());
            }
        }
        if !any && dir != root {
            if let Ok(rel) = dir.strip_prefix(root) {
                out.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Records the host behind `host` as a fixture tree at `out` (created; must be absent or
/// empty). Reads only through [`HostOps`]; writes the tree with `std::fs`.
///
/// Kept: every PCI function (nested under its bridges) with the attributes of
/// [`PCI_ATTRS`] and its `driver`/`iommu_group`/`physfn`/`subsystem`/`virtfnN` links,
/// `sys/bus/pci/{devices,drivers}`, `sys/kernel/iommu_groups`, `sys/class/{iommu,mdev_bus,drm}`,
/// mdev parents' types (PCI or virtual) and active mdevs, `sys/bus/mdev`,
/// `proc/{cmdline,cpuinfo,modules,kernel-release}`, `sys/class/dmi/id/{sys_vendor,product_name}`
/// and `sys/hypervisor/type` where present, `dev/{kvm,iommu,vfio/*,dri/*}` as empty
/// files, and `.fixture/{README,empty-dirs,wgpu-adapters.json}`. Attributes that cannot be
/// read are left out and listed in [`RecordSummary::skipped`]; a failed adapter probe gives
/// an empty adapter list and a note in the README.
pub fn record_host(host: &dyn HostOps, out: &Path) -> Result<RecordSummary, RecordError> {
    if out.exists() {
        let mut rd = std::fs::read_dir(out).map_err(|e| Out::err(out, e))?;
        if rd.next().is_some() {
            return Err(RecordError::NotEmpty(out.to_path_buf()));
        }
    }
    std::fs::create_dir_all(out).map_err(|e| Out::err(out, e))?;
    let mut r = Recorder {
        host,
        out: Out {
            root: out.to_path_buf(),
            entries: 0,
        },
        skipped: Vec::new(),
        done: BTreeSet::new(),
    };
    let (pci_functions, display_functions) = r.pci()?;
    let iommu_groups = r.iommu_groups()?;
    r.classes()?;
    let (mdev_parents, mdevs) = r.mdev()?;
    let kernel_release = r.proc()?;
    let nodes = r.dev()?;

    // .fixture/
    let (adapters, adapter_note) = match host.probe_adapters() {
        Ok(a) => (a, String::new()),
        Err(e) => (
            Vec::new(),
            format!(
                " The wgpu adapter probe failed ({e}), so wgpu-adapters.json is an empty list."
            ),
        ),
    };
    let json = serde_json::to_string_pretty(&adapters).map_err(|e| RecordError::Output {
        path: out.join(".fixture/wgpu-adapters.json"),
        source: std::io::Error::other(e),
    })?;
    r.out
        .file(Path::new("/.fixture/wgpu-adapters.json"), json.as_bytes())?;

    let mut devices = Vec::new();
    for n in host.list_dir(Path::new("/sys/bus/pci/devices"))? {
        let d = Path::new("/sys/bus/pci/devices").join(&n);
        let class = host.read_attr(&d.join("class")).unwrap_or_default();
        if !class.starts_with("0x03") {
            continue;
        }
        let id = |a: &str| {
            host.read_attr(&d.join(a))
                .map(|v| v.trim_start_matches("0x").to_string())
                .unwrap_or_else(|_| "?".into())
        };
        let drv = host
            .link_name(&d.join("driver"))
            .unwrap_or_else(|_| "none".into());
        let grp = host
            .link_name(&d.join("iommu_group"))
            .unwrap_or_else(|_| "none".into());
        devices.push(format!(
            "{n} [{}:{}] class {class}, driver {drv}, IOMMU group {grp}",
            id("vendor"),
            id("device")
        ));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let adapters_text = if adapters.is_empty() {
        "none".to_string()
    } else {
        adapters
            .iter()
            .map(|a| format!("{} ({}, {})", a.name, a.backend, a.device_type))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let readme = format!(
        "Recorded by vm-device (vm_device::recorder::record_host) on {} from a host running Linux {kernel_release}: {pci_functions} PCI functions, {iommu_groups} IOMMU groups, {mdev_parents} mdev parents, {mdevs} active mdevs. Display functions: {}. Device nodes: {}. wgpu adapters: {adapters_text}.{adapter_note}{}\n",
        utc_date(now),
        if devices.is_empty() { "none".to_string() } else { devices.join("; ") },
        if nodes.is_empty() { "none".to_string() } else { nodes.join(" ") },
        if r.skipped.is_empty() {
            String::new()
        } else {
            format!(" {} unreadable attributes were left out.", r.skipped.len())
        },
    );
    r.out
        .file(Path::new("/.fixture/README"), readme.as_bytes())?;
    let empties = empty_dirs(out)?;
    let mut list = empties.join("\n");
    if !list.is_empty() {
        list.push('\n');
    }
    r.out
        .file(Path::new("/.fixture/empty-dirs"), list.as_bytes())?;

    Ok(RecordSummary {
        root: out.to_path_buf(),
        kernel_release,
        pci_functions,
        display_functions,
        iommu_groups,
        mdev_parents,
        mdevs,
        device_nodes: nodes.len(),
        adapters: adapters.len(),
        entries: r.out.entries,
        skipped: r.skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::SimHost;
    use vm_device_sim::Snapshot;

    fn shared_fixture(name: &str) -> PathBuf {
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/real")).join(name)
    }

    /// Copies a fixture tree, turning flattened links back into symlinks. Some copies of
    /// the recorded trees store each link as a regular file holding its target (`../../..`);
    /// sysfs attributes always end with a newline, kernel link targets never hold one.
    fn materialize(src: &Path, dst: &Path) {
        std::fs::create_dir_all(dst).unwrap();
        for e in std::fs::read_dir(src).unwrap().flatten() {
            let (from, to) = (e.path(), dst.join(e.file_name()));
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                materialize(&from, &to);
            } else if ft.is_symlink() {
                std::os::unix::fs::symlink(std::fs::read_link(&from).unwrap(), &to).unwrap();
            } else {
                let bytes = std::fs::read(&from).unwrap();
                if bytes.starts_with(b"../") && !bytes.iter().any(|b| *b == b'\n' || *b == 0) {
                    let target = String::from_utf8(bytes).unwrap();
                    std::os::unix::fs::symlink(target, &to).unwrap();
                } else {
                    std::fs::write(&to, bytes).unwrap();
                }
            }
        }
    }

    /// A guest's DMI names its hypervisor; the recording keeps it, so the simulator
    /// recognises the recorded host as the same guest (the kernel-test differential failed
    /// on exactly this: the kernel said QEMU, the replay said nothing).
    #[test]
    fn keeps_what_identifies_a_guest() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("source");
        materialize(&shared_fixture("qemu-q35-viommu"), &src);
        std::fs::create_dir_all(src.join("sys/class/dmi/id")).unwrap();
        std::fs::write(src.join("sys/class/dmi/id/sys_vendor"), "QEMU\n").unwrap();
        let host = SimHost::from_fixture(&src).unwrap();
        let out = dir.path().join("out");
        record_host(&host, &out).unwrap();
        assert_eq!(
            std::fs::read_to_string(out.join("sys/class/dmi/id/sys_vendor")).unwrap(),
            "QEMU\n"
        );
    }

    /// Records `name` through SimHost and checks the re-read tree is the same, node for node.
    fn round_trip(name: &str) -> (RecordSummary, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("source");
        materialize(&shared_fixture(name), &src);
        let host = SimHost::from_fixture(&src).expect("shared fixture");
        let out = dir.path().join(name);
        let summary = record_host(&host, &out).expect("record");

        assert!(summary.skipped.is_empty(), "{:?}", summary.skipped);
        let again = SimHost::from_fixture(&out).unwrap();
        let a: Snapshot = host.snapshot();
        let b: Snapshot = again.snapshot();
        let only_a: Vec<_> = a.keys().filter(|k| !b.contains_key(*k)).collect();
        let only_b: Vec<_> = b.keys().filter(|k| !a.contains_key(*k)).collect();
        let differ: Vec<_> = a
            .iter()
            .filter(|(k, v)| b.get(*k).is_some_and(|w| w != *v))
            .map(|(k, _)| k)
            .collect();
        assert!(
            only_a.is_empty() && only_b.is_empty() && differ.is_empty(),
            "only in {name}: {only_a:?}\nonly in the record: {only_b:?}\ndiffer: {differ:?}"
        );
        (summary, dir)
    }

    #[test]
    fn recording_the_q35_fixture_gives_the_same_tree() {
        let (s, dir) = round_trip("qemu-q35-viommu");
        assert_eq!(s.pci_functions, 16);
        assert_eq!(s.display_functions, 6);
        assert_eq!(s.iommu_groups, 12);
        assert_eq!(s.mdev_parents, 3);
        assert_eq!(s.mdevs, 0);
        assert_eq!(s.kernel_release, "6.1.0-56-amd64");
        let root = dir.path().join("qemu-q35-viommu");
        let readme = std::fs::read_to_string(root.join(".fixture/README")).unwrap();
        assert!(
            readme.contains(
                "0000:02:00.0 [1234:1111] class 0x030000, driver bochs-drm, IOMMU group 8"
            ),
            "{readme}"
        );
        let empties = std::fs::read_to_string(root.join(".fixture/empty-dirs")).unwrap();
        assert!(
            empties.lines().any(|l| l == "sys/bus/mdev/devices"),
            "{empties}"
        );
        let adapters = std::fs::read_to_string(root.join(".fixture/wgpu-adapters.json")).unwrap();
        assert_eq!(adapters.trim(), "[]");
    }

    #[test]
    fn recording_the_assigned_fixture_keeps_mdevs_and_vfio_nodes() {
        let (s, dir) = round_trip("qemu-q35-viommu-assigned");
        assert_eq!(s.mdevs, 2);
        let root = dir.path().join("qemu-q35-viommu-assigned");
        assert!(root.join("dev/vfio/7").is_file());
        let drv = std::fs::read_link(
            root.join("sys/devices/pci0000:00/0000:00:02.0/0000:01:00.0/driver"),
        )
        .unwrap();
        assert!(drv.ends_with("vfio-pci"), "{}", drv.display());
    }

    #[test]
    fn a_non_empty_output_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let host = SimHost::from_fixture(shared_fixture("qemu-q35-viommu")).unwrap();
        std::fs::write(dir.path().join("keep-me"), "x").unwrap();
        let err = record_host(&host, dir.path()).unwrap_err();
        assert!(matches!(err, RecordError::NotEmpty(_)), "{err}");
        assert!(dir.path().join("keep-me").is_file());
    }

    #[test]
    fn a_host_without_pci_bus_fails_with_the_path() {
        let empty = tempfile::tempdir().unwrap();
        let host = SimHost::from_fixture(empty.path()).unwrap();
        let out = tempfile::tempdir().unwrap();
        let err = record_host(&host, &out.path().join("t")).unwrap_err();
        assert!(err.to_string().contains("/sys/bus/pci/devices"), "{err}");
    }

    #[test]
    fn dates_and_names() {
        assert_eq!(utc_date(0), "1970-01-01");
        assert_eq!(utc_date(1_795_000_000), "2026-11-18");
        assert!(looks_like_pci_address("0000:01:00.0"));
        assert!(!looks_like_pci_address("bind"));
        assert!(looks_like_uuid("4b9a3c1e-7d2f-4a6b-9e8d-0a0000000001"));
        assert!(!looks_like_uuid("new_id"));
    }
}
