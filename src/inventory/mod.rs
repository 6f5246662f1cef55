//! One scan of the host, one value: [`HostInventory`].
//!
//! The scan reads through [`HostOps`] only, reads each attribute once, and never fails on
//! malformed content: an unreadable or garbage attribute leaves that field unknown and adds a
//! [`ScanWarning`] naming the file, and the rest of the scan goes on.

mod host_facts;
mod mdev;
mod names;
pub mod numa;
mod pci;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use host_facts::{
    iommu_params_for, CpuVendor, HostFacts, IommuKind, IommuState, KernelParams, Virtualization,
};
pub use mdev::{MdevDevice, MdevParent, MdevTypeInfo, NvidiaVgpuTypes, DISPLAY_MDEV_DRIVERS};
pub use names::{class_name, device_name, human_bytes, vendor_name};
pub use pci::{
    device_nodes, function_name, read_function, Bar, PciFunction, PciReader, Sriov, Vram,
    VramSource,
};

use crate::host::{HostError, HostOps};
use vm_device_host::{PciAddress, ProcessHolder};

/// Something the scan could not read or understand, with the file that said so.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ScanWarning {
    /// The file (or directory) concerned.
    pub path: PathBuf,
    /// What was wrong with it.
    pub message: String,
}

/// A GPU: a display-class PCI function (class `0x03xxxx`) with its companion functions.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Gpu {
    /// The display function.
    pub address: PciAddress,
    /// Functions on the same slot that go with it (HDMI audio, USB-C, UCSI serial bus).
    pub companions: Vec<PciAddress>,
}

/// Members of one IOMMU group.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct IommuGroup {
    /// Group number.
    pub number: u32,
    /// PCI functions in the group, sorted.
    pub members: Vec<PciAddress>,
}

/// Everything the manager knows about the host, from one scan.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HostInventory {
    /// IOMMU, CPU, kernel parameters, modules, device nodes.
    pub host: HostFacts,
    /// Every PCI function, sorted by address.
    pub functions: Vec<PciFunction>,
    /// IOMMU groups by number.
    pub groups: BTreeMap<u32, IommuGroup>,
    /// Display-class functions with their companions.
    pub gpus: Vec<Gpu>,
    /// Devices that can parent mediated devices (PCI or not).
    pub mdev_parents: Vec<MdevParent>,
    /// Active mediated devices.
    pub mdev_devices: Vec<MdevDevice>,
    /// Other processes holding a device node of a GPU or companion open (this process is
    /// never one): unbinding such a device would hang until they let go. Scanned with the
    /// inventory, before any adapter probe or NVML query opens a node in this process.
    pub holders: Vec<ProcessHolder>,
    /// Why `/proc` could not be scanned for holders, when it could not.
    pub holders_error: Option<String>,
    /// What could not be read.
    pub warnings: Vec<ScanWarning>,
}

/// Collects warnings while scanning.
pub(crate) struct Scan<'a> {
    pub host: &'a dyn HostOps,
    pub warnings: Vec<ScanWarning>,
    /// `/dev`, once listed (the NVIDIA device-node fallback).
    pub dev_names: Option<Vec<String>>,
    /// The first error of the host behind a warning, kept for a strict read
    /// ([`read_function`]) to report with its errno.
    pub first_error: Option<HostError>,
}

impl Scan<'_> {
    pub(crate) fn warn(&mut self, path: &Path, message: impl Into<String>) {
        self.warnings.push(ScanWarning {
            path: path.to_path_buf(),
            message: message.into(),
        });
    }

    /// Reads an optional attribute: absent → `None` silently; unreadable → `None` + warning.
    pub(crate) fn attr(&mut self, path: &Path) -> Option<String> {
        match self.host.read_attr(path) {
            Ok(v) => Some(v),
            Err(e) if e.is_not_found() => None,
            Err(e) => {
                self.warn(path, format!("not readable: {e}"));
                self.first_error.get_or_insert(e);
                None
            }
        }
    }

    /// Reads a hex attribute (`0x10de`), warning on garbage.
    pub(crate) fn hex(&mut self, path: &Path, max: u64) -> Option<u64> {
        let text = self.attr(path)?;
        self.hex_text(path, &text, max)
    }

    fn hex_text(&mut self, path: &Path, text: &str, max: u64) -> Option<u64> {
        match parse_hex(text).filter(|v| *v <= max) {
            Some(v) => Some(v),
            None => {
                self.warn(path, format!("not a hex number: {:?}", truncate(text)));
                None
            }
        }
    }

    /// Reads a hex attribute every function has, warning when it is missing or garbage.
    pub(crate) fn required_hex(&mut self, path: &Path, max: u64, what: &str) -> Option<u64> {
        match self.host.read_attr(path) {
            Ok(text) => self.hex_text(path, &text, max),
            Err(e) if e.is_not_found() => {
                self.warn(path, format!("missing: the function's {what} is unknown"));
                None
            }
            Err(e) => {
                self.warn(path, format!("not readable: {e}"));
                self.first_error.get_or_insert(e);
                None
            }
        }
    }

    /// Reads a decimal attribute, warning on garbage.
    pub(crate) fn dec<T: std::str::FromStr>(&mut self, path: &Path) -> Option<T> {
        let text = self.attr(path)?;
        self.dec_text(path, &text)
    }

    /// Parses the text of a decimal attribute, warning on garbage.
    pub(crate) fn dec_text<T: std::str::FromStr>(&mut self, path: &Path, text: &str) -> Option<T> {
        match text.trim().parse::<T>() {
            Ok(v) => Some(v),
            Err(_) => {
                self.warn(path, format!("not a number: {:?}", truncate(text)));
                None
            }
        }
    }

    /// Lists a directory: absent → empty; unreadable → empty + warning.
    pub(crate) fn list(&mut self, path: &Path) -> Vec<String> {
        match self.host.list_dir(path) {
            Ok(v) => v,
            Err(e) if e.is_not_found() => Vec::new(),
            Err(e) => {
                self.warn(path, format!("cannot list: {e}"));
                self.first_error.get_or_insert(e);
                Vec::new()
            }
        }
    }

    /// The final component of a link, when the link exists.
    pub(crate) fn link_name(&mut self, path: &Path) -> Option<String> {
        match self.host.read_link(path) {
            Ok(t) => t.file_name().map(|n| n.to_string_lossy().into_owned()),
            Err(e) if e.is_not_found() => None,
            Err(e) => {
                self.warn(path, format!("unreadable link: {e}"));
                self.first_error.get_or_insert(e);
                None
            }
        }
    }
}

pub(crate) fn parse_hex(text: &str) -> Option<u64> {
    let t = text.trim();
    let t = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    if t.is_empty() || t.len() > 16 {
        return None;
    }
    u64::from_str_radix(t, 16).ok()
}

pub(crate) fn truncate(s: &str) -> String {
    let s: String = s.chars().take(40).collect();
    s.escape_debug().to_string()
}

/// The PCI class of display controllers (`0x03xxxx`).
pub const CLASS_DISPLAY: u32 = 0x03;

impl HostInventory {
    /// Scans the host.
    pub fn scan(host: &dyn HostOps) -> HostInventory {
        Self::scan_with(host, pci::scan)
    }

    /// Scans the host's GPUs: [`scan`](Self::scan) with `functions` holding only the
    /// display functions, the functions on their slots and the members of their IOMMU
    /// groups, the mdev parents and the PFs of VFs among them (every other function's
    /// class is read, nothing else of it). The passthrough
    /// rules judge a GPU by exactly those, so `rungs::passthrough::probe` answers as on a
    /// full scan; for a node agent's start on a host of a thousand functions, where
    /// reading them all cost most of the start.
    pub fn scan_gpus(host: &dyn HostOps) -> HostInventory {
        Self::scan_with(host, pci::scan_gpus)
    }

    fn scan_with(
        host: &dyn HostOps,
        pci_scan: fn(&mut Scan<'_>, &HostFacts) -> Vec<PciFunction>,
    ) -> HostInventory {
        let mut scan = Scan {
            host,
            warnings: Vec::new(),
            dev_names: None,
            first_error: None,
        };
        let host_facts = host_facts::scan(&mut scan);
        let mut functions = pci_scan(&mut scan, &host_facts);
        let (holders, holders_error) = scan_holders(host, &functions);
        pci::nvml_vram(&mut scan, &mut functions);
        let (mut mdev_parents, mdev_devices) = mdev::scan(&mut scan);
        for p in &mut mdev_parents {
            p.display = mdev::is_display_parent(p, &functions);
        }
        let mut groups: BTreeMap<u32, IommuGroup> = BTreeMap::new();
        for f in &functions {
            if let Some(g) = f.iommu_group {
                groups
                    .entry(g)
                    .or_insert_with(|| IommuGroup {
                        number: g,
                        members: Vec::new(),
                    })
                    .members
                    .push(f.address);
            }
        }
        let gpus = find_gpus(&functions);
        HostInventory {
            host: host_facts,
            functions,
            groups,
            gpus,
            mdev_parents,
            mdev_devices,
            holders,
            holders_error,
            warnings: scan.warnings,
        }
    }

    /// The holders of `f`'s device nodes.
    pub fn holders_of(&self, f: &PciFunction) -> Vec<&ProcessHolder> {
        self.holders
            .iter()
            .filter(|h| f.device_nodes.contains(&h.path))
            .collect()
    }

    /// The function at `addr`.
    pub fn function(&self, addr: &PciAddress) -> Option<&PciFunction> {
        self.functions
            .binary_search_by(|f| f.address.cmp(addr))
            .ok()
            .map(|i| &self.functions[i])
    }

    /// The GPU whose display function is `addr`.
    pub fn gpu(&self, addr: &PciAddress) -> Option<&Gpu> {
        self.gpus.iter().find(|g| g.address == *addr)
    }

    /// The mdev parent that is the PCI function `addr`.
    pub fn mdev_parent(&self, addr: &PciAddress) -> Option<&MdevParent> {
        self.mdev_parents
            .iter()
            .find(|p| p.pci_address == Some(*addr))
    }
}

/// One scan of `/proc` for every device node of the scanned functions (none when no function
/// has one: a host without GPUs never walks `/proc`).
fn scan_holders(
    host: &dyn HostOps,
    functions: &[PciFunction],
) -> (Vec<ProcessHolder>, Option<String>) {
    let nodes: Vec<PathBuf> = functions
        .iter()
        .flat_map(|f| f.device_nodes.iter().cloned())
        .collect();
    if nodes.is_empty() {
        return (Vec::new(), None);
    }
    match host.processes_holding(&nodes) {
        Ok(h) => (h, None),
        Err(e) => (Vec::new(), Some(e.to_string())),
    }
}

pub(crate) fn is_companion_class(class: u32) -> bool {
    let base = class >> 16;
    let sub = (class >> 8) & 0xff;
    // Multimedia (HDMI/DP audio), USB (USB-C on Turing cards), serial bus (UCSI).
    base == 0x04 || (base == 0x0c && (sub == 0x03 || sub == 0x80))
}

fn find_gpus(functions: &[PciFunction]) -> Vec<Gpu> {
    functions
        .iter()
        .filter(|f| f.is_display())
        .map(|g| Gpu {
            address: g.address,
            companions: functions
                .iter()
                .filter(|c| {
                    c.address != g.address
                        && c.address.same_slot(&g.address)
                        && !c.is_display()
                        && c.class.is_some_and(is_companion_class)
                })
                .map(|c| c.address)
                .collect(),
        })
        .collect()
}
