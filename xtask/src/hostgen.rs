//! A small builder that writes host fixture trees in the format of `docs/fixture-format.md`.
//!
//! The builder collects PCI functions, IOMMU units, mediated devices, kernel command line,
//! CPU and module information in memory, checks that the pieces fit together (every parent
//! bus exists, every VF names an existing PF, every mediated device names an existing type),
//! and then writes one tree: attribute files with the kernel's text formats, relative symlinks
//! exactly where the kernel has them, `.fixture/empty-dirs` for every empty directory, and
//! `.fixture/wgpu-adapters.json`.
//!
//! ```ignore
//! let mut h = HostBuilder::new("an example host, written by hand");
//! h.cpu(Cpu::intel("Intel(R) Core(TM) i7-9700K CPU @ 3.60GHz"))
//!     .cmdline("BOOT_IMAGE=/vmlinuz root=/dev/sda1 intel_iommu=on iommu=pt")
//!     .iommu(Iommu::IntelDmar);
//! h.pci(Pci::new("0000:00:01.0", 0x8086, 0x1901).class(0x060400).bridge(1, 1)
//!     .driver("pcieport").group(1));
//! h.pci(Pci::new("0000:01:00.0", 0x10de, 0x2206).class(0x030000).driver("nouveau").group(1));
//! h.write(Path::new("fixtures/hosts/example"))?;
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Component, Path, PathBuf};

/// An error while building or writing a tree: what went wrong and where.
#[derive(Debug)]
pub struct GenError(pub String);

impl fmt::Display for GenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for GenError {}

fn err<T>(msg: impl Into<String>) -> Result<T, GenError> {
    Err(GenError(msg.into()))
}

/// A PCI address `DDDD:BB:DD.F`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bdf {
    /// PCI domain (segment).
    pub domain: u16,
    /// Bus number.
    pub bus: u8,
    /// Device (slot) number, 0..=31.
    pub dev: u8,
    /// Function number, 0..=7.
    pub func: u8,
}

impl Bdf {
    /// Parses `DDDD:BB:DD.F` (the domain is required, as in sysfs names).
    pub fn parse(s: &str) -> Result<Self, GenError> {
        let bad = || {
            GenError(format!(
                "{s:?} is not a PCI address of the form DDDD:BB:DD.F"
            ))
        };
        let (dom, rest) = s.split_once(':').ok_or_else(bad)?;
        let (bus, rest) = rest.split_once(':').ok_or_else(bad)?;
        let (dev, func) = rest.split_once('.').ok_or_else(bad)?;
        if dom.len() != 4 || bus.len() != 2 || dev.len() != 2 || func.len() != 1 {
            return Err(bad());
        }
        let b = Bdf {
            domain: u16::from_str_radix(dom, 16).map_err(|_| bad())?,
            bus: u8::from_str_radix(bus, 16).map_err(|_| bad())?,
            dev: u8::from_str_radix(dev, 16).map_err(|_| bad())?,
            func: func.parse().map_err(|_| bad())?,
        };
        if b.dev > 31 || b.func > 7 {
            return Err(bad());
        }
        Ok(b)
    }
}

impl fmt::Display for Bdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{}",
            self.domain, self.bus, self.dev, self.func
        )
    }
}

/// The kind of a base address register, which decides its `resource` flags and config bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarKind {
    /// 32-bit memory, not prefetchable.
    Mem32,
    /// 64-bit memory, not prefetchable (uses two BAR slots).
    Mem64,
    /// 64-bit memory, prefetchable (uses two BAR slots).
    Mem64Pref,
    /// I/O ports.
    Io,
}

impl BarKind {
    /// The flags the kernel prints in `resource` for a BAR of this kind
    /// (IORESOURCE_{MEM,IO,PREFETCH,MEM_64,SIZEALIGN} plus the BAR's low type bits).
    fn resource_flags(self) -> u64 {
        const IO: u64 = 0x100;
        const MEM: u64 = 0x200;
        const PREFETCH: u64 = 0x2000;
        const MEM_64: u64 = 0x10_0000;
        const SIZEALIGN: u64 = 0x4_0000;
        match self {
            BarKind::Mem32 => SIZEALIGN | MEM,
            BarKind::Mem64 => MEM_64 | SIZEALIGN | MEM | 0x4,
            BarKind::Mem64Pref => MEM_64 | SIZEALIGN | PREFETCH | MEM | 0xc,
            BarKind::Io => SIZEALIGN | IO | 0x1,
        }
    }

    fn is_64(self) -> bool {
        matches!(self, BarKind::Mem64 | BarKind::Mem64Pref)
    }
}

/// One base address register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bar {
    /// BAR index 0..=5 (a 64-bit BAR also occupies index + 1).
    pub index: usize,
    /// Bus address of the first byte.
    pub start: u64,
    /// Size in bytes (a power of two).
    pub size: u64,
    /// Memory/IO, width, prefetchability.
    pub kind: BarKind,
}

/// A mediated-device type offered by a parent device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdevType {
    /// Directory name under `mdev_supported_types/` (`nvidia-222`, `i915-GVTg_V5_4`).
    pub id: String,
    /// Content of `name` (`GRID T4-1Q`).
    pub name: String,
    /// Content of `description` (may contain newlines).
    pub description: String,
    /// Content of `device_api` (`vfio-pci`).
    pub device_api: String,
    /// Content of `available_instances`, written as given (a number, or garbage for
    /// robustness fixtures); `None` leaves the file out.
    pub available_instances: Option<Vec<u8>>,
}

impl MdevType {
    /// A `vfio-pci` type with a numeric `available_instances`.
    pub fn new(id: &str, name: &str, description: &str, available: u32) -> Self {
        MdevType {
            id: id.to_string(),
            name: name.to_string(),
            description: description.to_string(),
            device_api: "vfio-pci".to_string(),
            available_instances: Some(format!("{available}\n").into_bytes()),
        }
    }
}

/// NVIDIA vendor-specific VFIO (vGPU 17+) attributes of a VF's `nvidia/` directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NvidiaVgpuVf {
    /// Lines of `creatable_vgpu_types`: type id and name.
    pub creatable: Vec<(u32, String)>,
    /// Content of `current_vgpu_type` (0: no vGPU configured).
    pub current: u32,
}

/// SR-IOV capability of a physical function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sriov {
    /// `sriov_totalvfs`.
    pub total: u16,
    /// `sriov_numvfs`.
    pub num: u16,
    /// `sriov_offset` (routing-id offset of the first VF).
    pub offset: u16,
    /// `sriov_stride`.
    pub stride: u16,
    /// `sriov_vf_device` (device id of the VFs).
    pub vf_device: u16,
    /// VF BARs (resource lines 7..=12), sizes are for all VFs together.
    pub vf_bars: Vec<Bar>,
}

/// One PCI function and everything the kernel shows about it.
#[derive(Debug, Clone)]
pub struct Pci {
    addr_text: String,
    vendor: u16,
    device: u16,
    subsystem_vendor: u16,
    subsystem_device: u16,
    class: u32,
    revision: u8,
    bars: Vec<Bar>,
    rom: Option<(u64, u64)>,
    bridge: Option<(u8, u8)>,
    windows: [Option<(u64, u64)>; 3],
    driver: Option<String>,
    driver_override: Option<String>,
    numa_node: i32,
    reset_method: Option<String>,
    boot_vga: Option<bool>,
    iommu_group: Option<u32>,
    irq: u32,
    sriov: Option<Sriov>,
    physfn: Option<(String, u16)>,
    mdev_types: Vec<MdevType>,
    nvidia_vf: Option<NvidiaVgpuVf>,
    drm_cards: Vec<u32>,
    render_nodes: Vec<u32>,
    extra: Vec<(String, Vec<u8>)>,
    omit: BTreeSet<String>,
    no_files: bool,
}

impl Pci {
    /// A function at `addr` (`DDDD:BB:DD.F`) with these ids; class defaults to `0xff0000`,
    /// subsystem ids to the device's own ids, no driver, no IOMMU group.
    pub fn new(addr: &str, vendor: u16, device: u16) -> Self {
        Pci {
            addr_text: addr.to_string(),
            vendor,
            device,
            subsystem_vendor: vendor,
            subsystem_device: device,
            class: 0xff0000,
            revision: 0,
            bars: Vec::new(),
            rom: None,
            bridge: None,
            windows: [None, None, None],
            driver: None,
            driver_override: None,
            numa_node: -1,
            reset_method: None,
            boot_vga: None,
            iommu_group: None,
            irq: 0,
            sriov: None,
            physfn: None,
            mdev_types: Vec::new(),
            nvidia_vf: None,
            drm_cards: Vec::new(),
            render_nodes: Vec::new(),
            extra: Vec::new(),
            omit: BTreeSet::new(),
            no_files: false,
        }
    }

    /// Sets the 24-bit class code (`0x030000` VGA, `0x030200` 3D, `0x040300` HDA audio, …).
    pub fn class(mut self, class: u32) -> Self {
        self.class = class;
        self
    }

    /// Sets the subsystem vendor and device ids.
    pub fn subsystem(mut self, vendor: u16, device: u16) -> Self {
        self.subsystem_vendor = vendor;
        self.subsystem_device = device;
        self
    }

    /// Sets the revision id.
    pub fn revision(mut self, rev: u8) -> Self {
        self.revision = rev;
        self
    }

    /// Adds a BAR.
    pub fn bar(mut self, index: usize, start: u64, size: u64, kind: BarKind) -> Self {
        self.bars.push(Bar {
            index,
            start,
            size,
            kind,
        });
        self
    }

    /// Adds an expansion ROM (resource line 6), shown disabled in config space.
    pub fn rom(mut self, start: u64, size: u64) -> Self {
        self.rom = Some((start, size));
        self
    }

    /// Makes this function a PCI-to-PCI bridge (type-1 header) for buses
    /// `secondary..=subordinate`; functions on `secondary` are nested under it.
    pub fn bridge(mut self, secondary: u8, subordinate: u8) -> Self {
        self.bridge = Some((secondary, subordinate));
        self
    }

    /// Sets a bridge window: 0 I/O, 1 memory, 2 prefetchable 64-bit memory.
    pub fn window(mut self, which: usize, start: u64, size: u64) -> Self {
        if which < 3 {
            self.windows[which] = Some((start, size));
        }
        self
    }

    /// Binds the function to driver `name` (`driver` link + `drivers/NAME/ADDR` back-link).
    pub fn driver(mut self, name: &str) -> Self {
        self.driver = Some(name.to_string());
        self
    }

    /// Sets `driver_override` (default `(null)`).
    pub fn driver_override(mut self, name: &str) -> Self {
        self.driver_override = Some(name.to_string());
        self
    }

    /// Sets `numa_node` (default -1).
    pub fn numa_node(mut self, node: i32) -> Self {
        self.numa_node = node;
        self
    }

    /// Sets `reset_method` (`flr bus`, `pm bus`, `bus`, …); absent by default (no reset).
    pub fn reset_method(mut self, methods: &str) -> Self {
        self.reset_method = Some(methods.to_string());
        self
    }

    /// Sets `boot_vga`. The kernel shows the file only on VGA-class (`0x0300xx`) devices; it
    /// defaults to 0 there and is absent elsewhere.
    pub fn boot_vga(mut self, on: bool) -> Self {
        self.boot_vga = Some(on);
        self
    }

    /// Puts the function into IOMMU group `n`.
    pub fn group(mut self, n: u32) -> Self {
        self.iommu_group = Some(n);
        self
    }

    /// Sets the legacy interrupt number in `irq`.
    pub fn irq(mut self, irq: u32) -> Self {
        self.irq = irq;
        self
    }

    /// Gives the function an SR-IOV capability.
    pub fn sriov(mut self, sriov: Sriov) -> Self {
        self.sriov = Some(sriov);
        self
    }

    /// Makes this function VF number `index` of the physical function at `pf`.
    pub fn vf_of(mut self, pf: &str, index: u16) -> Self {
        self.physfn = Some((pf.to_string(), index));
        self
    }

    /// Adds a mediated-device type (makes the function an mdev parent).
    pub fn mdev_type(mut self, t: MdevType) -> Self {
        self.mdev_types.push(t);
        self
    }

    /// Adds NVIDIA vendor-VFIO vGPU attributes (`nvidia/…`) to this VF.
    pub fn nvidia_vgpu(mut self, vf: NvidiaVgpuVf) -> Self {
        self.nvidia_vf = Some(vf);
        self
    }

    /// Adds a DRM card `cardN` (and `/dev/dri/cardN`).
    pub fn drm_card(mut self, n: u32) -> Self {
        self.drm_cards.push(n);
        self
    }

    /// Adds a DRM render node `renderDN` (and `/dev/dri/renderDN`).
    pub fn render_node(mut self, n: u32) -> Self {
        self.render_nodes.push(n);
        self
    }

    /// Adds an extra attribute file in the device directory (written as given).
    pub fn file(mut self, name: &str, content: impl Into<Vec<u8>>) -> Self {
        self.extra.push((name.to_string(), content.into()));
        self
    }

    /// Leaves out a standard attribute file (`class`, `config`, …), for robustness fixtures.
    pub fn omit(mut self, name: &str) -> Self {
        self.omit.insert(name.to_string());
        self
    }

    /// Writes the device directory with no files and no links inside it at all.
    pub fn empty_dir(mut self) -> Self {
        self.no_files = true;
        self
    }

    /// Overrides the text of `vendor`, `device` or `class` with raw bytes (robustness fixtures).
    pub fn raw(self, name: &str, content: impl Into<Vec<u8>>) -> Self {
        self.omit(name).file(name, content)
    }
}

/// CPU description for `proc/cpuinfo`.
#[derive(Debug, Clone)]
pub struct Cpu {
    vendor_id: String,
    family: u32,
    model: u32,
    model_name: String,
    flags: String,
    cores: u32,
}

const COMMON_FLAGS: &str = "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat \
pse36 clflush mmx fxsr sse sse2 ht syscall nx pdpe1gb rdtscp lm constant_tsc rep_good nopl \
xtopology nonstop_tsc cpuid aperfmperf pni pclmulqdq monitor ssse3 fma cx16 sse4_1 sse4_2 \
x2apic movbe popcnt aes xsave avx f16c rdrand lahf_lm abm 3dnowprefetch cpuid_fault \
bmi1 avx2 smep bmi2 erms invpcid rdseed adx smap clflushopt sha_ni xsaveopt xsavec xgetbv1 xsaves";

impl Cpu {
    /// An Intel CPU with `vmx` in its flags.
    pub fn intel(model_name: &str, family: u32, model: u32, cores: u32) -> Self {
        Cpu {
            vendor_id: "GenuineIntel".into(),
            family,
            model,
            model_name: model_name.into(),
            flags: format!("{COMMON_FLAGS} vmx ept vpid flexpriority tpr_shadow"),
            cores,
        }
    }

    /// An AMD CPU with `svm` in its flags.
    pub fn amd(model_name: &str, family: u32, model: u32, cores: u32) -> Self {
        Cpu {
            vendor_id: "AuthenticAMD".into(),
            family,
            model,
            model_name: model_name.into(),
            flags: format!(
                "{COMMON_FLAGS} svm extapic cr8_legacy sse4a misalignsse npt lbrv nrip_save"
            ),
            cores,
        }
    }

    fn render(&self) -> String {
        let mut s = String::new();
        for p in 0..self.cores {
            s.push_str(&format!(
                "processor\t: {p}\nvendor_id\t: {}\ncpu family\t: {}\nmodel\t\t: {}\n\
                 model name\t: {}\nstepping\t: 0\ncpu MHz\t\t: 3600.000\ncache size\t: 16384 KB\n\
                 physical id\t: 0\nsiblings\t: {}\ncore id\t\t: {p}\ncpu cores\t: {}\n\
                 apicid\t\t: {}\nfpu\t\t: yes\nfpu_exception\t: yes\ncpuid level\t: 22\nwp\t\t: yes\n\
                 flags\t\t: {}\nbogomips\t: 7200.00\nclflush size\t: 64\ncache_alignment\t: 64\n\
                 address sizes\t: 39 bits physical, 48 bits virtual\npower management:\n\n",
                self.vendor_id,
                self.family,
                self.model,
                self.model_name,
                self.cores,
                self.cores,
                p * 2,
                self.flags
            ));
        }
        s
    }
}

/// An active IOMMU unit, shown under `sys/class/iommu/`.
#[derive(Debug, Clone)]
pub enum Iommu {
    /// Intel VT-d: `dmar0` (a virtual device).
    IntelDmar,
    /// AMD-Vi: `ivhd0`, a child of the IOMMU's own PCI function (usually `0000:00:00.2`).
    AmdIvhd {
        /// Address of the IOMMU PCI function; it must be added with [`HostBuilder::pci`].
        at: String,
    },
}

/// An active mediated device.
#[derive(Debug, Clone)]
pub struct Mdev {
    /// Parent device address.
    pub parent: String,
    /// Device UUID.
    pub uuid: String,
    /// Type id under the parent's `mdev_supported_types/`.
    pub type_id: String,
    /// IOMMU group of the mediated device.
    pub group: u32,
    /// Name of the mdev-bus driver bound to it (`sys/bus/mdev/drivers/NAME`).
    pub driver: String,
}

/// One wgpu adapter for `.fixture/wgpu-adapters.json`.
#[derive(Debug, Clone)]
pub struct Adapter {
    /// Adapter name.
    pub name: String,
    /// PCI vendor id (0 for software).
    pub vendor: u32,
    /// PCI device id (0 for software).
    pub device: u32,
    /// `DiscreteGpu`, `IntegratedGpu`, `VirtualGpu`, `Cpu`, `Other`.
    pub device_type: String,
    /// `Vulkan`, `Gl`, …
    pub backend: String,
    /// Driver name.
    pub driver: String,
    /// Driver version text.
    pub driver_info: String,
}

impl Adapter {
    /// An adapter with every field given.
    pub fn new(
        name: &str,
        vendor: u32,
        device: u32,
        device_type: &str,
        backend: &str,
        driver: &str,
        driver_info: &str,
    ) -> Self {
        Adapter {
            name: name.into(),
            vendor,
            device,
            device_type: device_type.into(),
            backend: backend.into(),
            driver: driver.into(),
            driver_info: driver_info.into(),
        }
    }

    /// Mesa's llvmpipe through lavapipe (Vulkan), as Debian 12 reports it.
    pub fn llvmpipe_vulkan() -> Self {
        Adapter::new(
            "llvmpipe (LLVM 15.0.6, 256 bits)",
            0x10005,
            0,
            "Cpu",
            "Vulkan",
            "llvmpipe",
            "Mesa 22.3.6 (LLVM 15.0.6)",
        )
    }

    /// Mesa's llvmpipe through GL.
    pub fn llvmpipe_gl() -> Self {
        Adapter::new(
            "llvmpipe (LLVM 15.0.6, 256 bits)",
            0,
            0,
            "Cpu",
            "Gl",
            "",
            "4.5 (Core Profile) Mesa 22.3.6",
        )
    }
}

/// A loaded kernel module for `proc/modules`.
#[derive(Debug, Clone)]
struct Module {
    name: String,
    size: u32,
    used_by: Vec<String>,
}

/// Collects a host and writes it as a fixture tree.
#[derive(Debug, Clone)]
pub struct HostBuilder {
    readme: String,
    cmdline: String,
    kernel_release: String,
    cpu: Cpu,
    modules: Vec<Module>,
    iommu: Option<Iommu>,
    group_type: String,
    functions: Vec<Pci>,
    mdevs: Vec<Mdev>,
    pci_drivers: BTreeSet<String>,
    mdev_drivers: BTreeSet<String>,
    adapters: Vec<Adapter>,
    dev_nodes: BTreeSet<String>,
    raw_files: Vec<(String, Vec<u8>)>,
    raw_links: Vec<(String, String)>,
    raw_dirs: Vec<String>,
    numa: Vec<NumaNode>,
}

/// A hugepage pool of one NUMA node: `hugepages-SkB/{nr,free,surplus}_hugepages`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HugePool {
    /// Page size in KiB (2048, 1048576).
    pub size_kib: u64,
    /// `nr_hugepages`.
    pub nr: u64,
    /// `free_hugepages` (at most `nr`).
    pub free: u64,
    /// Most pages an `nr_hugepages` write can reach (fragmented memory); `None`: no limit.
    /// Goes to `.fixture/hugepages.json`, which the simulator reads.
    pub limit: Option<u64>,
}

/// A NUMA node: `sys/devices/system/node/nodeN`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumaNode {
    /// Node number.
    pub id: i32,
    /// Its CPUs, as the kernel prints them (`0-15,32-47`).
    pub cpus: String,
    /// `MemTotal` in MiB.
    pub mem_total_mib: u64,
    /// `MemFree` in MiB.
    pub mem_free_mib: u64,
    /// Hugepage pools (a size another node has and this one lacks reads 0 pages).
    pub pools: Vec<HugePool>,
}

/// Expands a CPU list (`0-3,8`) for checks.
fn cpulist(s: &str) -> Result<Vec<u32>, GenError> {
    let mut out = Vec::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        let bad = || GenError(format!("bad CPU list `{s}`"));
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) =
                    (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                out.extend(a..=b);
            }
            None => out.push(part.parse().map_err(|_| bad())?),
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Prints a sorted CPU list in the kernel's form.
fn cpulist_text(cpus: &[u32]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let mut j = i;
        while j + 1 < cpus.len() && cpus[j + 1] == cpus[j] + 1 {
            j += 1;
        }
        parts.push(if i == j {
            cpus[i].to_string()
        } else {
            format!("{}-{}", cpus[i], cpus[j])
        });
        i = j + 1;
    }
    parts.join(",")
}

/// What goes on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Dir,
    File(Vec<u8>),
    Link(PathBuf),
}

/// An in-memory tree keyed by path relative to the fixture root.
#[derive(Debug, Default)]
struct Tree {
    nodes: BTreeMap<PathBuf, Node>,
}

impl Tree {
    fn dir(&mut self, p: &Path) -> Result<(), GenError> {
        let mut cur = PathBuf::new();
        for c in p.components() {
            cur.push(c);
            match self.nodes.get(&cur) {
                None => {
                    self.nodes.insert(cur.clone(), Node::Dir);
                }
                Some(Node::Dir) => {}
                Some(_) => {
                    return err(format!(
                        "{} is already a file or link, cannot make directory {}",
                        cur.display(),
                        p.display()
                    ))
                }
            }
        }
        Ok(())
    }

    fn file(&mut self, p: &Path, content: impl Into<Vec<u8>>) -> Result<(), GenError> {
        if let Some(parent) = p.parent() {
            self.dir(parent)?;
        }
        if matches!(self.nodes.get(p), Some(Node::Dir)) {
            return err(format!(
                "{} is a directory, cannot write a file",
                p.display()
            ));
        }
        self.nodes
            .insert(p.to_path_buf(), Node::File(content.into()));
        Ok(())
    }

    /// A symlink at `at` pointing at `target` (both relative to the root), stored relative.
    fn link(&mut self, at: &Path, target: &Path) -> Result<(), GenError> {
        let parent = at.parent().unwrap_or(Path::new(""));
        self.dir(parent)?;
        if matches!(self.nodes.get(at), Some(Node::Dir)) {
            return err(format!(
                "{} is a directory, cannot make a link",
                at.display()
            ));
        }
        // An absolute target is kept as it is: what `/proc/PID/fd/N` links hold (the node a
        // process has open), not a place inside the fixture.
        let stored = if target.is_absolute() {
            target.to_path_buf()
        } else {
            relative(parent, target)
        };
        self.nodes.insert(at.to_path_buf(), Node::Link(stored));
        Ok(())
    }

    fn empty_dirs(&self) -> Vec<PathBuf> {
        let mut nonempty = BTreeSet::new();
        for p in self.nodes.keys() {
            if let Some(parent) = p.parent() {
                nonempty.insert(parent.to_path_buf());
            }
        }
        self.nodes
            .iter()
            .filter(|(p, n)| **n == Node::Dir && !nonempty.contains(*p))
            .map(|(p, _)| p.clone())
            .collect()
    }
}

/// The relative path from directory `from` to `to` (both relative to the same root).
fn relative(from: &Path, to: &Path) -> PathBuf {
    let f: Vec<Component> = from.components().collect();
    let t: Vec<Component> = to.components().collect();
    let common = f.iter().zip(&t).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..f.len() {
        out.push("..");
    }
    for c in &t[common..] {
        out.push(c);
    }
    out
}

fn hex16(v: u16) -> String {
    format!("0x{v:04x}\n")
}

fn put16(c: &mut [u8], off: usize, v: u16) {
    c[off..off + 2].copy_from_slice(&v.to_le_bytes());
}

fn put32(c: &mut [u8], off: usize, v: u32) {
    c[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

impl HostBuilder {
    /// An empty host; `readme` is the paragraph for `.fixture/README`.
    pub fn new(readme: &str) -> Self {
        HostBuilder {
            readme: readme.to_string(),
            cmdline: "BOOT_IMAGE=/boot/vmlinuz-6.1.0-28-amd64 root=UUID=3f1c2a9e-0d4b-4f7e-9a51-2b6c8d0e1f23 ro quiet".into(),
            kernel_release: "6.1.0-28-amd64".into(),
            cpu: Cpu::intel("Intel(R) Core(TM) i7-9700K CPU @ 3.60GHz", 6, 158, 8),
            modules: Vec::new(),
            iommu: None,
            group_type: "DMA-FQ".into(),
            functions: Vec::new(),
            mdevs: Vec::new(),
            pci_drivers: BTreeSet::new(),
            mdev_drivers: BTreeSet::new(),
            adapters: Vec::new(),
            dev_nodes: BTreeSet::new(),
            raw_files: Vec::new(),
            raw_links: Vec::new(),
            raw_dirs: Vec::new(),
            numa: Vec::new(),
        }
    }

    /// Adds a NUMA node: `sys/devices/system/node/nodeN` (cpulist, meminfo, hugepage pools),
    /// and, once any node is declared, the host-wide pools (`sys/kernel/mm/hugepages`, the
    /// nodes' sums), `sys/devices/system/{node,cpu}/online` and every PCI function's
    /// `local_cpulist` (its node's CPUs; all CPUs for `numa_node` -1).
    pub fn numa_node(&mut self, node: NumaNode) -> &mut Self {
        self.numa.push(node);
        self
    }

    /// Sets `proc/cmdline`.
    pub fn cmdline(&mut self, line: &str) -> &mut Self {
        self.cmdline = line.to_string();
        self
    }

    /// Sets `proc/kernel-release` (what `uname -r` printed; default `6.1.0-28-amd64`).
    pub fn kernel_release(&mut self, release: &str) -> &mut Self {
        self.kernel_release = release.to_string();
        self
    }

    /// Sets the CPU of `proc/cpuinfo`.
    pub fn cpu(&mut self, cpu: Cpu) -> &mut Self {
        self.cpu = cpu;
        self
    }

    /// Adds a loaded module to `proc/modules`; `used_by` lists modules that depend on it.
    pub fn module(&mut self, name: &str, size: u32, used_by: &[&str]) -> &mut Self {
        self.modules.push(Module {
            name: name.to_string(),
            size,
            used_by: used_by.iter().map(|s| s.to_string()).collect(),
        });
        self
    }

    /// Adds the usual KVM + VFIO modules (`kvm_intel`/`kvm_amd` by CPU vendor, `vfio`,
    /// `vfio_iommu_type1`, `vfio_pci`, `vfio_pci_core`), `/dev/kvm`, `/dev/vfio/vfio`, and
    /// the `vfio-pci` PCI driver directory.
    pub fn kvm_vfio(&mut self) -> &mut Self {
        let kvm_vendor = if self.cpu.vendor_id == "AuthenticAMD" {
            "kvm_amd"
        } else {
            "kvm_intel"
        };
        self.module(kvm_vendor, 372_736, &[])
            .module("kvm", 1_142_784, &[kvm_vendor])
            .module("irqbypass", 16_384, &["vfio_pci_core", "kvm"])
            .module("vfio_pci", 16_384, &[])
            .module("vfio_pci_core", 94_208, &["vfio_pci"])
            .module("vfio_iommu_type1", 45_056, &[])
            .module(
                "vfio",
                57_344,
                &["vfio_pci_core", "vfio_iommu_type1", "vfio_pci"],
            );
        self.dev_nodes.insert("dev/kvm".into());
        self.dev_nodes.insert("dev/vfio/vfio".into());
        self.pci_drivers.insert("vfio-pci".into());
        self
    }

    /// Adds only KVM (no VFIO modules loaded).
    pub fn kvm_only(&mut self) -> &mut Self {
        let v = if self.cpu.vendor_id == "AuthenticAMD" {
            "kvm_amd"
        } else {
            "kvm_intel"
        };
        self.module(v, 372_736, &[]).module("kvm", 1_142_784, &[v]);
        self.dev_nodes.insert("dev/kvm".into());
        self
    }

    /// Turns an IOMMU unit on.
    pub fn iommu(&mut self, unit: Iommu) -> &mut Self {
        self.iommu = Some(unit);
        self
    }

    /// Sets the `type` of every PCI IOMMU group (`identity` with `iommu=pt`, `DMA-FQ` or `DMA`).
    pub fn group_type(&mut self, t: &str) -> &mut Self {
        self.group_type = t.to_string();
        self
    }

    /// Adds a PCI function.
    pub fn pci(&mut self, f: Pci) -> &mut Self {
        self.functions.push(f);
        self
    }

    /// Declares a loaded PCI driver (its `sys/bus/pci/drivers/NAME` directory exists even with
    /// nothing bound).
    pub fn pci_driver(&mut self, name: &str) -> &mut Self {
        self.pci_drivers.insert(name.to_string());
        self
    }

    /// Declares a loaded mdev-bus driver (`sys/bus/mdev/drivers/NAME`).
    pub fn mdev_driver(&mut self, name: &str) -> &mut Self {
        self.mdev_drivers.insert(name.to_string());
        self
    }

    /// Adds an active mediated device.
    pub fn mdev(&mut self, m: Mdev) -> &mut Self {
        self.mdev_drivers.insert(m.driver.clone());
        self.mdevs.push(m);
        self
    }

    /// Adds a wgpu adapter.
    pub fn adapter(&mut self, a: Adapter) -> &mut Self {
        self.adapters.push(a);
        self
    }

    /// Adds an arbitrary file (robustness fixtures).
    pub fn raw_file(&mut self, path: &str, content: impl Into<Vec<u8>>) -> &mut Self {
        self.raw_files.push((path.to_string(), content.into()));
        self
    }

    /// Adds an arbitrary link; `target` is relative to the fixture root and stored relative
    /// to the link's directory, or, when absolute (`/dev/dri/card0`, as `/proc/PID/fd/N`
    /// links hold it), stored as it is.
    pub fn raw_link(&mut self, at: &str, target: &str) -> &mut Self {
        self.raw_links.push((at.to_string(), target.to_string()));
        self
    }

    /// Adds an arbitrary (empty) directory.
    pub fn raw_dir(&mut self, path: &str) -> &mut Self {
        self.raw_dirs.push(path.to_string());
        self
    }

    /// Number of PCI functions added so far.
    pub fn function_count(&self) -> usize {
        self.functions.len()
    }

    /// Builds the tree in memory and checks it.
    fn build(&self) -> Result<Tree, GenError> {
        let mut t = Tree::default();
        // Parse addresses and index functions.
        let mut by_addr: BTreeMap<Bdf, usize> = BTreeMap::new();
        for (i, f) in self.functions.iter().enumerate() {
            let a = Bdf::parse(&f.addr_text)?;
            if by_addr.insert(a, i).is_some() {
                return err(format!("PCI function {a} is added twice"));
            }
        }
        // Bus -> bridge that owns it.
        let mut bus_owner: BTreeMap<(u16, u8), Bdf> = BTreeMap::new();
        for (a, &i) in &by_addr {
            if let Some((sec, _)) = self.functions[i].bridge {
                if let Some(prev) = bus_owner.insert((a.domain, sec), *a) {
                    return err(format!(
                        "bus {sec:02x} has two upstream bridges: {prev} and {a}"
                    ));
                }
            }
        }
        // Device directory of each function.
        let mut paths: BTreeMap<Bdf, PathBuf> = BTreeMap::new();
        fn path_of(
            a: Bdf,
            owner: &BTreeMap<(u16, u8), Bdf>,
            memo: &mut BTreeMap<Bdf, PathBuf>,
            depth: usize,
        ) -> Result<PathBuf, GenError> {
            if let Some(p) = memo.get(&a) {
                return Ok(p.clone());
            }
            if depth > 64 {
                return err(format!("bridge loop above {a}"));
            }
            let p = match owner.get(&(a.domain, a.bus)) {
                Some(up) if *up != a => path_of(*up, owner, memo, depth + 1)?.join(a.to_string()),
                Some(_) => return err(format!("{a} is the bridge to its own bus")),
                None => PathBuf::from(format!("sys/devices/pci{:04x}:{:02x}", a.domain, a.bus))
                    .join(a.to_string()),
            };
            memo.insert(a, p.clone());
            Ok(p)
        }
        for a in by_addr.keys() {
            path_of(*a, &bus_owner, &mut paths, 0)?;
        }
        // Groups: number -> members (device paths).
        let mut groups: BTreeMap<u32, Vec<(String, PathBuf)>> = BTreeMap::new();
        let mut vfio_groups: BTreeSet<u32> = BTreeSet::new();
        let iommu_on = self.iommu.is_some();
        // Which function slots have more than one function (multifunction header bit).
        let mut slot_count: BTreeMap<(u16, u8, u8), usize> = BTreeMap::new();
        for a in by_addr.keys() {
            *slot_count.entry((a.domain, a.bus, a.dev)).or_default() += 1;
        }
        // sys/bus/pci/devices must exist even when empty.
        t.dir(Path::new("sys/bus/pci/devices"))?;
        t.dir(Path::new("sys/bus/pci/drivers"))?;
        for d in &self.pci_drivers {
            t.dir(&Path::new("sys/bus/pci/drivers").join(d))?;
        }
        let mut mdev_parents: Vec<(Bdf, PathBuf)> = Vec::new();
        let mut drm_seen: BTreeSet<String> = BTreeSet::new();
        for (a, &i) in &by_addr {
            let f = &self.functions[i];
            let dp = paths[a].clone();
            t.dir(&dp)?;
            t.link(&Path::new("sys/bus/pci/devices").join(a.to_string()), &dp)?;
            if f.no_files {
                continue;
            }
            let is_bridge = f.bridge.is_some();
            let want = |n: &str| !f.omit.contains(n);
            let w = |t: &mut Tree, name: &str, content: Vec<u8>| -> Result<(), GenError> {
                if want(name) {
                    t.file(&dp.join(name), content)?;
                }
                Ok(())
            };
            w(&mut t, "vendor", hex16(f.vendor).into_bytes())?;
            w(&mut t, "device", hex16(f.device).into_bytes())?;
            w(
                &mut t,
                "subsystem_vendor",
                hex16(f.subsystem_vendor).into_bytes(),
            )?;
            w(
                &mut t,
                "subsystem_device",
                hex16(f.subsystem_device).into_bytes(),
            )?;
            w(&mut t, "class", format!("0x{:06x}\n", f.class).into_bytes())?;
            w(
                &mut t,
                "revision",
                format!("0x{:02x}\n", f.revision).into_bytes(),
            )?;
            w(&mut t, "irq", format!("{}\n", f.irq).into_bytes())?;
            w(
                &mut t,
                "numa_node",
                format!("{}\n", f.numa_node).into_bytes(),
            )?;
            if !self.numa.is_empty() {
                let local = match self.numa.iter().find(|n| n.id == f.numa_node) {
                    Some(n) => n.cpus.clone(),
                    None => self.all_cpus_text()?,
                };
                w(&mut t, "local_cpulist", format!("{local}\n").into_bytes())?;
            }
            w(
                &mut t,
                "enable",
                if f.driver.is_some() {
                    b"1\n".to_vec()
                } else {
                    b"0\n".to_vec()
                },
            )?;
            w(
                &mut t,
                "driver_override",
                format!("{}\n", f.driver_override.as_deref().unwrap_or("(null)")).into_bytes(),
            )?;
            let modalias = format!(
                "pci:v{:08X}d{:08X}sv{:08X}sd{:08X}bc{:02X}sc{:02X}i{:02X}",
                f.vendor,
                f.device,
                f.subsystem_vendor,
                f.subsystem_device,
                (f.class >> 16) & 0xff,
                (f.class >> 8) & 0xff,
                f.class & 0xff
            );
            w(&mut t, "modalias", format!("{modalias}\n").into_bytes())?;
            let mut uevent = String::new();
            if let Some(d) = &f.driver {
                uevent.push_str(&format!("DRIVER={d}\n"));
            }
            uevent.push_str(&format!(
                "PCI_CLASS={:X}\nPCI_ID={:04X}:{:04X}\nPCI_SUBSYS_ID={:04X}:{:04X}\nPCI_SLOT_NAME={a}\nMODALIAS={modalias}\n",
                f.class, f.vendor, f.device, f.subsystem_vendor, f.subsystem_device
            ));
            w(&mut t, "uevent", uevent.into_bytes())?;
            if let Some(r) = &f.reset_method {
                w(&mut t, "reset_method", format!("{r}\n").into_bytes())?;
            }
            if f.class >> 8 == 0x0300 {
                let on = f.boot_vga.unwrap_or(false);
                w(
                    &mut t,
                    "boot_vga",
                    if on { b"1\n".to_vec() } else { b"0\n".to_vec() },
                )?;
            } else if f.boot_vga.is_some() {
                return err(format!(
                    "{a}: boot_vga is only shown on VGA-class (0x0300xx) devices, class is 0x{:06x}",
                    f.class
                ));
            }
            // resource: 13 lines for endpoints, 17 for bridges (plus the 4 windows).
            let mut lines = vec![(0u64, 0u64, 0u64); if is_bridge { 17 } else { 13 }];
            for b in &f.bars {
                if b.index > 5 || (b.kind.is_64() && b.index > 4) {
                    return err(format!("{a}: BAR {} does not fit", b.index));
                }
                lines[b.index] = (b.start, b.start + b.size - 1, b.kind.resource_flags());
            }
            if let Some((s, sz)) = f.rom {
                lines[6] = (s, s + sz - 1, 0x46200);
            }
            if let Some(sr) = &f.sriov {
                for b in &sr.vf_bars {
                    if b.index > 5 {
                        return err(format!("{a}: VF BAR {} does not fit", b.index));
                    }
                    lines[7 + b.index] = (b.start, b.start + b.size - 1, b.kind.resource_flags());
                }
            }
            if is_bridge {
                let flags = [0x100u64, 0x200, 0x102201];
                for (k, win) in f.windows.iter().enumerate() {
                    if let Some((s, sz)) = win {
                        lines[13 + k] = (*s, s + sz - 1, flags[k]);
                    }
                }
            }
            let res: String = lines
                .iter()
                .map(|(s, e, fl)| format!("0x{s:016x} 0x{e:016x} 0x{fl:016x}\n"))
                .collect();
            w(&mut t, "resource", res.into_bytes())?;
            // config: 256 bytes of type-0 or type-1 header.
            let mut c = vec![0u8; 256];
            let is_vf = f.physfn.is_some();
            if is_vf {
                put16(&mut c, 0, 0xffff);
                put16(&mut c, 2, 0xffff);
            } else {
                put16(&mut c, 0, f.vendor);
                put16(&mut c, 2, f.device);
            }
            let mut cmd = 0u16;
            if f.driver.is_some() {
                if f.bars.iter().any(|b| b.kind == BarKind::Io) {
                    cmd |= 0x1;
                }
                if f.bars.iter().any(|b| b.kind != BarKind::Io) || is_bridge {
                    cmd |= 0x2;
                }
                cmd |= 0x4;
            }
            put16(&mut c, 4, cmd);
            c[8] = f.revision;
            c[9] = (f.class & 0xff) as u8;
            c[10] = ((f.class >> 8) & 0xff) as u8;
            c[11] = ((f.class >> 16) & 0xff) as u8;
            let multi = slot_count[&(a.domain, a.bus, a.dev)] > 1 && a.func == 0 && !is_vf;
            c[14] = u8::from(is_bridge) | if multi { 0x80 } else { 0 };
            let write_bar = |c: &mut [u8], b: &Bar| {
                let off = 0x10 + 4 * b.index;
                let low = match b.kind {
                    BarKind::Io => (b.start as u32 & !0x3) | 0x1,
                    k => (b.start as u32 & !0xf) | (k.resource_flags() & 0xf) as u32,
                };
                put32(c, off, low);
                if b.kind.is_64() {
                    put32(c, off + 4, (b.start >> 32) as u32);
                }
            };
            if is_bridge {
                for b in f.bars.iter().filter(|b| b.index < 2) {
                    write_bar(&mut c, b);
                }
                let (sec, sub) = f.bridge.unwrap_or((0, 0));
                c[0x18] = a.bus;
                c[0x19] = sec;
                c[0x1a] = sub;
                // I/O window
                match f.windows[0] {
                    Some((s, sz)) => {
                        c[0x1c] = ((s >> 8) & 0xf0) as u8;
                        c[0x1d] = (((s + sz - 1) >> 8) & 0xf0) as u8;
                    }
                    None => {
                        c[0x1c] = 0xf0;
                        c[0x1d] = 0x00;
                    }
                }
                match f.windows[1] {
                    Some((s, sz)) => {
                        put16(&mut c, 0x20, ((s >> 16) & 0xfff0) as u16);
                        put16(&mut c, 0x22, (((s + sz - 1) >> 16) & 0xfff0) as u16);
                    }
                    None => {
                        put16(&mut c, 0x20, 0xfff0);
                        put16(&mut c, 0x22, 0x0000);
                    }
                }
                match f.windows[2] {
                    Some((s, sz)) => {
                        let e = s + sz - 1;
                        put16(&mut c, 0x24, (((s >> 16) & 0xfff0) | 1) as u16);
                        put16(&mut c, 0x26, (((e >> 16) & 0xfff0) | 1) as u16);
                        put32(&mut c, 0x28, (s >> 32) as u32);
                        put32(&mut c, 0x2c, (e >> 32) as u32);
                    }
                    None => {
                        put16(&mut c, 0x24, 0xfff1);
                        put16(&mut c, 0x26, 0x0001);
                    }
                }
                if let Some((s, _)) = f.rom {
                    put32(&mut c, 0x38, s as u32 & !0x7ff);
                }
                c[0x3e] = 0x10;
            } else {
                if !is_vf {
                    for b in &f.bars {
                        write_bar(&mut c, b);
                    }
                    if let Some((s, _)) = f.rom {
                        put32(&mut c, 0x30, s as u32 & !0x7ff);
                    }
                }
                put16(&mut c, 0x2c, f.subsystem_vendor);
                put16(&mut c, 0x2e, f.subsystem_device);
            }
            if !is_vf {
                c[0x3c] = (f.irq & 0xff) as u8;
                c[0x3d] = if f.irq != 0 { 1 } else { 0 };
            }
            w(&mut t, "config", c)?;
            // Links.
            if want("subsystem") {
                t.link(&dp.join("subsystem"), Path::new("sys/bus/pci"))?;
            }
            if let Some(d) = &f.driver {
                let ddir = Path::new("sys/bus/pci/drivers").join(d);
                t.dir(&ddir)?;
                if want("driver") {
                    t.link(&dp.join("driver"), &ddir)?;
                }
                t.link(&ddir.join(a.to_string()), &dp)?;
                if d == "vfio-pci" {
                    match f.iommu_group {
                        Some(g) => {
                            vfio_groups.insert(g);
                        }
                        None => {
                            return err(format!(
                                "{a} is on vfio-pci but has no IOMMU group (vfio-pci cannot bind without one)"
                            ))
                        }
                    }
                }
            }
            if let Some(g) = f.iommu_group {
                if !iommu_on {
                    return err(format!(
                        "{a} has IOMMU group {g} but the host has no IOMMU unit; call iommu()"
                    ));
                }
                if want("iommu_group") {
                    t.link(
                        &dp.join("iommu_group"),
                        &PathBuf::from(format!("sys/kernel/iommu_groups/{g}")),
                    )?;
                }
                groups
                    .entry(g)
                    .or_default()
                    .push((a.to_string(), dp.clone()));
            }
            if let Some(sr) = &f.sriov {
                w(
                    &mut t,
                    "sriov_totalvfs",
                    format!("{}\n", sr.total).into_bytes(),
                )?;
                w(&mut t, "sriov_numvfs", format!("{}\n", sr.num).into_bytes())?;
                w(
                    &mut t,
                    "sriov_offset",
                    format!("{}\n", sr.offset).into_bytes(),
                )?;
                w(
                    &mut t,
                    "sriov_stride",
                    format!("{}\n", sr.stride).into_bytes(),
                )?;
                w(
                    &mut t,
                    "sriov_vf_device",
                    format!("{:x}\n", sr.vf_device).into_bytes(),
                )?;
                w(&mut t, "sriov_drivers_autoprobe", b"1\n".to_vec())?;
                if sr.num > sr.total {
                    return err(format!(
                        "{a}: sriov_numvfs {} > sriov_totalvfs {}",
                        sr.num, sr.total
                    ));
                }
            }
            if let Some((pf_text, idx)) = &f.physfn {
                let pf = Bdf::parse(pf_text)?;
                let Some(&pi) = by_addr.get(&pf) else {
                    return err(format!("{a} is a VF of {pf}, which was not added"));
                };
                let Some(sr) = &self.functions[pi].sriov else {
                    return err(format!(
                        "{a} is a VF of {pf}, which has no SR-IOV capability"
                    ));
                };
                if *idx >= sr.num {
                    return err(format!(
                        "{a} is VF {idx} of {pf}, but {pf} has sriov_numvfs {}",
                        sr.num
                    ));
                }
                let pfp = paths[&pf].clone();
                t.link(&dp.join("physfn"), &pfp)?;
                t.link(&pfp.join(format!("virtfn{idx}")), &dp)?;
            }
            if !f.mdev_types.is_empty() {
                for mt in &f.mdev_types {
                    let td = dp.join("mdev_supported_types").join(&mt.id);
                    t.file(&td.join("name"), format!("{}\n", mt.name))?;
                    t.file(&td.join("description"), format!("{}\n", mt.description))?;
                    t.file(&td.join("device_api"), format!("{}\n", mt.device_api))?;
                    if let Some(ai) = &mt.available_instances {
                        t.file(&td.join("available_instances"), ai.clone())?;
                    }
                    t.dir(&td.join("devices"))?;
                }
                mdev_parents.push((*a, dp.clone()));
                t.link(&Path::new("sys/class/mdev_bus").join(a.to_string()), &dp)?;
            }
            if let Some(nv) = &f.nvidia_vf {
                let nd = dp.join("nvidia");
                let mut s = String::from("ID    : vGPU Name\n");
                for (id, name) in &nv.creatable {
                    s.push_str(&format!("{id:<6}: {name}\n"));
                }
                t.file(&nd.join("creatable_vgpu_types"), s)?;
                t.file(&nd.join("current_vgpu_type"), format!("{}\n", nv.current))?;
                t.file(&nd.join("gpu_instance_id"), "4294967295\n")?;
                t.file(&nd.join("placement_id"), "65535\n")?;
                t.file(&nd.join("vgpu_params"), "\n")?;
            }
            for n in &f.drm_cards {
                let name = format!("card{n}");
                if !drm_seen.insert(name.clone()) {
                    return err(format!("DRM node {name} is used twice"));
                }
                let cd = dp.join("drm").join(&name);
                t.file(&cd.join("dev"), format!("226:{n}\n"))?;
                t.link(&cd.join("device"), &dp)?;
                t.link(&Path::new("sys/class/drm").join(&name), &cd)?;
                t.file(&Path::new("dev/dri").join(&name), Vec::new())?;
            }
            for n in &f.render_nodes {
                let name = format!("renderD{n}");
                if !drm_seen.insert(name.clone()) {
                    return err(format!("DRM node {name} is used twice"));
                }
                let cd = dp.join("drm").join(&name);
                t.file(&cd.join("dev"), format!("226:{n}\n"))?;
                t.link(&cd.join("device"), &dp)?;
                t.link(&Path::new("sys/class/drm").join(&name), &cd)?;
                t.file(&Path::new("dev/dri").join(&name), Vec::new())?;
            }
            for (name, content) in &f.extra {
                t.file(&dp.join(name), content.clone())?;
            }
        }
        // IOMMU unit.
        match &self.iommu {
            Some(Iommu::IntelDmar) => {
                let d = Path::new("sys/devices/virtual/iommu/dmar0");
                t.file(&d.join("intel-iommu/version"), "1:0\n")?;
                t.file(&d.join("intel-iommu/cap"), "d2008c40660462\n")?;
                t.file(&d.join("intel-iommu/ecap"), "f050da\n")?;
                t.link(Path::new("sys/class/iommu/dmar0"), d)?;
            }
            Some(Iommu::AmdIvhd { at }) => {
                let a = Bdf::parse(at)?;
                let Some(p) = paths.get(&a) else {
                    return err(format!(
                        "AMD-Vi unit is at {a}, but no PCI function was added there"
                    ));
                };
                let d = p.join("iommu/ivhd0");
                t.file(&d.join("amd-iommu/cap"), "0x00190063\n")?;
                t.file(&d.join("amd-iommu/features"), "0x25bf732fa2295afe\n")?;
                t.link(Path::new("sys/class/iommu/ivhd0"), &d)?;
            }
            None => {}
        }
        // Mediated devices.
        if !mdev_parents.is_empty() || !self.mdevs.is_empty() || !self.mdev_drivers.is_empty() {
            t.dir(Path::new("sys/bus/mdev/devices"))?;
            t.dir(Path::new("sys/bus/mdev/drivers"))?;
            for d in &self.mdev_drivers {
                t.dir(&Path::new("sys/bus/mdev/drivers").join(d))?;
            }
        }
        for m in &self.mdevs {
            let pa = Bdf::parse(&m.parent)?;
            let Some(&pi) = by_addr.get(&pa) else {
                return err(format!(
                    "mdev {} names parent {pa}, which was not added",
                    m.uuid
                ));
            };
            if !self.functions[pi]
                .mdev_types
                .iter()
                .any(|t| t.id == m.type_id)
            {
                return err(format!(
                    "mdev {} has type {} that parent {pa} does not offer",
                    m.uuid, m.type_id
                ));
            }
            if groups.contains_key(&m.group) {
                return err(format!(
                    "mdev {} is in group {}, which PCI devices already use",
                    m.uuid, m.group
                ));
            }
            let pp = paths[&pa].clone();
            let md = pp.join(&m.uuid);
            let td = pp.join("mdev_supported_types").join(&m.type_id);
            t.link(&md.join("mdev_type"), &td)?;
            t.link(&td.join("devices").join(&m.uuid), &md)?;
            let ddir = Path::new("sys/bus/mdev/drivers").join(&m.driver);
            t.link(&md.join("driver"), &ddir)?;
            t.link(&ddir.join(&m.uuid), &md)?;
            t.link(&md.join("subsystem"), Path::new("sys/bus/mdev"))?;
            let gdir = PathBuf::from(format!("sys/kernel/iommu_groups/{}", m.group));
            t.link(&md.join("iommu_group"), &gdir)?;
            t.link(&Path::new("sys/bus/mdev/devices").join(&m.uuid), &md)?;
            t.link(&gdir.join("devices").join(&m.uuid), &md)?;
            t.file(&gdir.join("type"), "unknown\n")?;
            t.file(&gdir.join("name"), "vfio-noiommu\n")?;
            t.file(&gdir.join("reserved_regions"), Vec::new())?;
            vfio_groups.insert(m.group);
        }
        // PCI IOMMU groups.
        if iommu_on {
            t.dir(Path::new("sys/kernel/iommu_groups"))?;
        }
        for (g, members) in &groups {
            let gdir = PathBuf::from(format!("sys/kernel/iommu_groups/{g}"));
            for (name, dp) in members {
                t.link(&gdir.join("devices").join(name), dp)?;
            }
            t.file(&gdir.join("type"), format!("{}\n", self.group_type))?;
            t.file(
                &gdir.join("reserved_regions"),
                "0x00000000fee00000 0x00000000feefffff msi\n",
            )?;
        }
        // A group bound to a VFIO driver has /dev/vfio/N and /sys/class/vfio/N; the char
        // device's minor is handed out in order (kernel-sysfs-semantics.md rules 20-21).
        for (minor, g) in vfio_groups.iter().enumerate() {
            t.file(&PathBuf::from(format!("dev/vfio/{g}")), Vec::new())?;
            let vd = PathBuf::from(format!("sys/devices/virtual/vfio/{g}"));
            t.file(&vd.join("dev"), format!("246:{minor}\n"))?;
            t.link(&vd.join("subsystem"), Path::new("sys/class/vfio"))?;
            t.link(&PathBuf::from(format!("sys/class/vfio/{g}")), &vd)?;
        }
        // proc.
        t.file(Path::new("proc/cmdline"), format!("{}\n", self.cmdline))?;
        t.file(Path::new("proc/cpuinfo"), self.cpu.render())?;
        // Not a kernel file: what the recorder (docs/tools/record-host.sh) stores from uname -r.
        t.file(
            Path::new("proc/kernel-release"),
            format!("{}\n", self.kernel_release),
        )?;
        let mut mods = String::new();
        let mut addr = 0xffff_ffff_c100_0000u64;
        for m in &self.modules {
            let used = if m.used_by.is_empty() {
                "-".to_string()
            } else {
                format!("{},", m.used_by.join(","))
            };
            mods.push_str(&format!(
                "{} {} {} {} Live 0x{addr:016x}\n",
                m.name,
                m.size,
                m.used_by.len(),
                used
            ));
            addr += u64::from(m.size).next_multiple_of(0x1000);
        }
        t.file(Path::new("proc/modules"), mods)?;
        for n in &self.dev_nodes {
            t.file(Path::new(n), Vec::new())?;
        }
        for d in &self.raw_dirs {
            t.dir(Path::new(d))?;
        }
        for (p, c) in &self.raw_files {
            t.file(Path::new(p), c.clone())?;
        }
        for (at, target) in &self.raw_links {
            t.link(Path::new(at), Path::new(target))?;
        }
        // .fixture
        t.file(
            Path::new(".fixture/README"),
            format!("{}\n", self.readme.trim()),
        )?;
        let adapters: Vec<serde_json::Value> = self
            .adapters
            .iter()
            .map(|a| {
                serde_json::json!({
                    "name": a.name,
                    "vendor": a.vendor,
                    "device": a.device,
                    "device_type": a.device_type,
                    "backend": a.backend,
                    "driver": a.driver,
                    "driver_info": a.driver_info,
                })
            })
            .collect();
        let json = serde_json::to_string_pretty(&adapters)
            .map_err(|e| GenError(format!("cannot encode wgpu adapters: {e}")))?;
        t.file(
            Path::new(".fixture/wgpu-adapters.json"),
            format!("{json}\n"),
        )?;
        self.write_numa(&mut t)?;
        let mut empty: String = t
            .empty_dirs()
            .iter()
            .map(|p| format!("{}\n", p.display()))
            .collect();
        if empty.is_empty() {
            empty.push('\n');
        }
        t.file(Path::new(".fixture/empty-dirs"), empty)?;
        Ok(t)
    }

    fn all_cpus_text(&self) -> Result<String, GenError> {
        let mut all = Vec::new();
        for n in &self.numa {
            all.extend(cpulist(&n.cpus)?);
        }
        all.sort_unstable();
        all.dedup();
        Ok(cpulist_text(&all))
    }

    /// The NUMA nodes, their pools, the host-wide pools and `.fixture/hugepages.json`.
    fn write_numa(&self, t: &mut Tree) -> Result<(), GenError> {
        if self.numa.is_empty() {
            return Ok(());
        }
        let mut ids: Vec<i32> = self.numa.iter().map(|n| n.id).collect();
        ids.sort_unstable();
        if ids.windows(2).any(|w| w[0] == w[1]) || ids.first().is_some_and(|i| *i < 0) {
            return err("NUMA node ids must be distinct and not negative");
        }
        let sizes: BTreeSet<u64> = self
            .numa
            .iter()
            .flat_map(|n| n.pools.iter().map(|p| p.size_kib))
            .collect();
        let ids_text = cpulist_text(&ids.iter().map(|i| *i as u32).collect::<Vec<_>>());
        let nd = Path::new("sys/devices/system/node");
        for f in [
            "online",
            "possible",
            "has_cpu",
            "has_memory",
            "has_normal_memory",
        ] {
            t.file(&nd.join(f), format!("{ids_text}\n"))?;
        }
        let mut limits: BTreeMap<String, u64> = BTreeMap::new();
        let mut sums: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
        for n in &self.numa {
            let dir = nd.join(format!("node{}", n.id));
            let cpus = cpulist(&n.cpus)?;
            t.file(&dir.join("cpulist"), format!("{}\n", cpulist_text(&cpus)))?;
            let two_m = n.pools.iter().find(|p| p.size_kib == 2048);
            let (ht, hf) = two_m.map(|p| (p.nr, p.free)).unwrap_or((0, 0));
            let id = n.id;
            t.file(
                &dir.join("meminfo"),
                format!(
                    "Node {id} MemTotal:       {} kB\nNode {id} MemFree:        {} kB\n\
                     Node {id} MemUsed:        {} kB\nNode {id} HugePages_Total: {ht:5}\n\
                     Node {id} HugePages_Free:  {hf:5}\nNode {id} HugePages_Surp:      0\n",
                    n.mem_total_mib * 1024,
                    n.mem_free_mib * 1024,
                    (n.mem_total_mib - n.mem_free_mib.min(n.mem_total_mib)) * 1024,
                ),
            )?;
            for &size in &sizes {
                let p = n.pools.iter().find(|p| p.size_kib == size);
                let (nr, free) = p.map(|p| (p.nr, p.free.min(p.nr))).unwrap_or((0, 0));
                let pd = dir.join("hugepages").join(format!("hugepages-{size}kB"));
                t.file(&pd.join("nr_hugepages"), format!("{nr}\n"))?;
                t.file(&pd.join("free_hugepages"), format!("{free}\n"))?;
                t.file(&pd.join("surplus_hugepages"), "0\n")?;
                if let Some(l) = p.and_then(|p| p.limit) {
                    limits.insert(format!("/{}", pd.display()), l);
                }
                let s = sums.entry(size).or_default();
                s.0 += nr;
                s.1 += free;
            }
        }
        for (size, (nr, free)) in &sums {
            let pd = PathBuf::from(format!("sys/kernel/mm/hugepages/hugepages-{size}kB"));
            t.file(&pd.join("nr_hugepages"), format!("{nr}\n"))?;
            t.file(&pd.join("free_hugepages"), format!("{free}\n"))?;
            t.file(&pd.join("resv_hugepages"), "0\n")?;
            t.file(&pd.join("surplus_hugepages"), "0\n")?;
            t.file(&pd.join("nr_overcommit_hugepages"), "0\n")?;
        }
        let all = self.all_cpus_text()?;
        let cd = Path::new("sys/devices/system/cpu");
        for f in ["online", "possible", "present"] {
            t.file(&cd.join(f), format!("{all}\n"))?;
        }
        // The kernel lists `isolcpus=` CPUs (without flags such as `domain,`) here.
        let isolated = self
            .cmdline
            .split_whitespace()
            .find_map(|w| w.strip_prefix("isolcpus="))
            .map(|v| v.rsplit(',').next().unwrap_or(v))
            .filter(|v| v.chars().next().is_some_and(|c| c.is_ascii_digit()))
            .unwrap_or("");
        t.file(&cd.join("isolated"), format!("{isolated}\n"))?;
        let json = serde_json::to_string_pretty(&limits)
            .map_err(|e| GenError(format!("cannot encode hugepage limits: {e}")))?;
        t.file(Path::new(".fixture/hugepages.json"), format!("{json}\n"))?;
        Ok(())
    }

    /// Writes the tree into `dir`, replacing an earlier tree there. A non-empty `dir` without
    /// `.fixture/README` is refused rather than removed.
    pub fn write(&self, dir: &Path) -> Result<WriteStats, GenError> {
        let tree = self.build()?;
        if dir.exists() {
            let nonempty = std::fs::read_dir(dir)
                .map_err(|e| GenError(format!("cannot read {}: {e}", dir.display())))?
                .next()
                .is_some();
            if nonempty && !dir.join(".fixture/README").is_file() {
                return err(format!(
                    "refusing to replace {}: it is not empty and has no .fixture/README, so it \
                     does not look like a host tree this generator wrote; pick another directory",
                    dir.display()
                ));
            }
            std::fs::remove_dir_all(dir)
                .map_err(|e| GenError(format!("cannot remove old tree {}: {e}", dir.display())))?;
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| GenError(format!("cannot create {}: {e}", dir.display())))?;
        let mut stats = WriteStats::default();
        for (p, n) in &tree.nodes {
            let full = dir.join(p);
            let res = match n {
                Node::Dir => {
                    stats.dirs += 1;
                    std::fs::create_dir_all(&full)
                }
                Node::File(c) => {
                    stats.files += 1;
                    std::fs::write(&full, c)
                }
                Node::Link(target) => {
                    stats.links += 1;
                    std::os::unix::fs::symlink(target, &full)
                }
            };
            res.map_err(|e| GenError(format!("cannot write {}: {e}", full.display())))?;
        }
        Ok(stats)
    }
}

/// Counts of what [`HostBuilder::write`] wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WriteStats {
    /// Directories.
    pub dirs: usize,
    /// Regular files.
    pub files: usize,
    /// Symlinks.
    pub links: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_links_climb_to_the_common_ancestor() {
        assert_eq!(
            relative(
                Path::new("sys/devices/pci0000:00/0000:00:02.0/0000:01:00.0"),
                Path::new("sys/bus/pci/drivers/vfio-pci")
            ),
            PathBuf::from("../../../../bus/pci/drivers/vfio-pci")
        );
        assert_eq!(
            relative(
                Path::new("sys/bus/pci/devices"),
                Path::new("sys/devices/pci0000:00/0000:00:00.0")
            ),
            PathBuf::from("../../../devices/pci0000:00/0000:00:00.0")
        );
        assert_eq!(
            relative(
                Path::new("sys/devices/pci0000:00/0000:00:03.0/0000:03:00.1"),
                Path::new("sys/devices/pci0000:00/0000:00:03.0/0000:03:00.0")
            ),
            PathBuf::from("../0000:03:00.0")
        );
    }

    #[test]
    fn bdf_parse_round_trips_and_rejects_junk() {
        let b = Bdf::parse("0000:3b:1f.7").unwrap();
        assert_eq!(b.to_string(), "0000:3b:1f.7");
        for bad in [
            "3b:00.0",
            "0000:3b:20.0",
            "0000:3b:00.8",
            "zzzz:00:00.0",
            "",
        ] {
            assert!(Bdf::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn devices_nest_under_their_bridge_and_links_resolve() {
        let mut h = HostBuilder::new("test host");
        h.iommu(Iommu::IntelDmar);
        h.pci(
            Pci::new("0000:00:01.0", 0x8086, 0x1901)
                .class(0x060400)
                .bridge(1, 1)
                .driver("pcieport")
                .group(1),
        );
        h.pci(
            Pci::new("0000:01:00.0", 0x10de, 0x2206)
                .class(0x030000)
                .bar(0, 0xf600_0000, 0x100_0000, BarKind::Mem32)
                .bar(1, 0xe000_0000, 0x1000_0000, BarKind::Mem64Pref)
                .driver("vfio-pci")
                .group(1),
        );
        let t = h.build().unwrap();
        let dp = PathBuf::from("sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0");
        assert_eq!(
            t.nodes.get(&dp.join("driver")),
            Some(&Node::Link(PathBuf::from(
                "../../../../bus/pci/drivers/vfio-pci"
            )))
        );
        assert!(t.nodes.contains_key(Path::new("dev/vfio/1")));
        let Some(Node::File(res)) = t.nodes.get(&dp.join("resource")) else {
            panic!("no resource")
        };
        let text = String::from_utf8(res.clone()).unwrap();
        assert_eq!(text.lines().count(), 13);
        assert_eq!(
            text.lines().nth(1).unwrap(),
            "0x00000000e0000000 0x00000000efffffff 0x000000000014220c"
        );
        let Some(Node::File(cfg)) = t.nodes.get(&dp.join("config")) else {
            panic!("no config")
        };
        assert_eq!(cfg.len(), 256);
        assert_eq!(&cfg[0..4], &[0xde, 0x10, 0x06, 0x22]);
        assert_eq!(&cfg[9..12], &[0x00, 0x00, 0x03]);
        assert_eq!(cfg[0x14] & 0xf, 0xc);
    }

    #[test]
    fn inconsistent_hosts_are_refused_with_the_device_named() {
        let mut h = HostBuilder::new("bad");
        h.pci(Pci::new("0000:01:00.0", 0x10de, 0x2206).group(3));
        let e = h.build().unwrap_err().to_string();
        assert!(e.contains("0000:01:00.0") && e.contains("no IOMMU"), "{e}");
        let mut h = HostBuilder::new("bad vf");
        h.pci(Pci::new("0000:03:00.1", 0x1002, 0x686c).vf_of("0000:03:00.0", 0));
        let e = h.build().unwrap_err().to_string();
        assert!(e.contains("0000:03:00.0"), "{e}");
        let mut h = HostBuilder::new("bad mdev");
        h.pci(Pci::new("0000:00:02.0", 0x8086, 0x3e92).class(0x030000));
        h.mdev(Mdev {
            parent: "0000:00:02.0".into(),
            uuid: "u".into(),
            type_id: "i915-GVTg_V5_4".into(),
            group: 9,
            driver: "intel_vgpu_mdev".into(),
        });
        let e = h.build().unwrap_err().to_string();
        assert!(e.contains("does not offer"), "{e}");
    }
}

/// What `lspci -nnk -vmm -D` should print for one function of a built host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LspciExpect {
    /// `Slot:` (`0000:01:00.0`).
    pub slot: String,
    /// Class code in `Class:` brackets (`0300`).
    pub class: String,
    /// Vendor id in `Vendor:` brackets.
    pub vendor: String,
    /// Device id in `Device:` brackets.
    pub device: String,
    /// Subsystem vendor id in `SVendor:` brackets.
    pub svendor: String,
    /// Subsystem device id in `SDevice:` brackets.
    pub sdevice: String,
    /// `Rev:` (absent when 0).
    pub rev: Option<String>,
    /// `ProgIf:`.
    pub progif: String,
    /// `Driver:` (absent when unbound).
    pub driver: Option<String>,
    /// `IOMMUGroup:` (absent when the IOMMU is off).
    pub iommu_group: Option<String>,
}

impl HostBuilder {
    /// The records `lspci -nnk -vmm -D` should print for this host, sorted by address.
    pub fn lspci_expect(&self) -> Result<Vec<LspciExpect>, GenError> {
        let mut out = Vec::new();
        for f in &self.functions {
            let a = Bdf::parse(&f.addr_text)?;
            out.push((
                a,
                LspciExpect {
                    slot: a.to_string(),
                    class: format!("{:04x}", f.class >> 8),
                    vendor: format!("{:04x}", f.vendor),
                    device: format!("{:04x}", f.device),
                    svendor: format!("{:04x}", f.subsystem_vendor),
                    sdevice: format!("{:04x}", f.subsystem_device),
                    rev: (f.revision != 0).then(|| format!("{:02x}", f.revision)),
                    progif: format!("{:02x}", f.class & 0xff),
                    driver: f.driver.clone(),
                    iommu_group: f.iommu_group.map(|g| g.to_string()),
                },
            ));
        }
        out.sort_by_key(|(a, _)| *a);
        Ok(out.into_iter().map(|(_, e)| e).collect())
    }
}
