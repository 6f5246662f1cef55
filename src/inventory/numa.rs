//! NUMA nodes, their CPUs and hugepage pools, as sysfs shows them. Read by the launch's
//! tuning (where a VM's memory and vCPUs go) and by doctor (what the host could give).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Serialize;
use vm_device_host::PciAddress;

use crate::host::HostOps;

/// Where the kernel lists NUMA nodes.
pub const NODE_DIR: &str = "/sys/devices/system/node";
/// The host-wide hugepage pools.
pub const GLOBAL_HUGEPAGES: &str = "/sys/kernel/mm/hugepages";
/// The online CPUs.
pub const CPU_ONLINE: &str = "/sys/devices/system/cpu/online";

/// A hugepage size QEMU can back guest RAM with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PageSize {
    /// 2 MiB pages.
    M2,
    /// 1 GiB pages.
    G1,
}

impl PageSize {
    /// Bytes in one page.
    pub fn bytes(self) -> u64 {
        match self {
            PageSize::M2 => 2 << 20,
            PageSize::G1 => 1 << 30,
        }
    }

    /// The pool directory name (`hugepages-2048kB`).
    pub fn pool_name(self) -> String {
        format!("hugepages-{}kB", self.bytes() >> 10)
    }

    /// As QEMU's `hugetlbsize=` and `--hugepages` take it (`2M`, `1G`).
    pub fn as_str(self) -> &'static str {
        match self {
            PageSize::M2 => "2M",
            PageSize::G1 => "1G",
        }
    }
}

impl fmt::Display for PageSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PageSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_uppercase().as_str() {
            "2M" | "2MB" | "2MIB" | "2048K" | "2048KB" => Ok(PageSize::M2),
            "1G" | "1GB" | "1GIB" | "1024M" | "1048576K" | "1048576KB" => Ok(PageSize::G1),
            _ => Err(format!(
                "unknown hugepage size `{s}`: x86-64 has 2M and 1G pages"
            )),
        }
    }
}

impl Serialize for PageSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// The most CPUs a list may name (the kernel's `CPU_SETSIZE`).
pub const MAX_CPUS: u32 = 1024;

/// Parses a CPU list as the kernel prints it and `--cpu-pin` takes it (`0-3,8,10-11`):
/// sorted, without duplicates.
pub fn parse_cpu_list(s: &str) -> Result<Vec<u32>, String> {
    let bad = |why: &str| format!("`{s}` is not a CPU list ({why}); write it as 0-3,8,10-11");
    let mut out = Vec::new();
    for part in s.trim().split(',') {
        let part = part.trim();
        if part.is_empty() {
            return Err(bad("an empty item"));
        }
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let (a, b): (u32, u32) = match (a.parse(), b.parse()) {
            (Ok(a), Ok(b)) => (a, b),
            _ => return Err(bad(&format!("`{part}` is not a number or range"))),
        };
        if a > b {
            return Err(bad(&format!("the range `{part}` runs backwards")));
        }
        if b >= MAX_CPUS {
            return Err(bad(&format!(
                "CPU {b} is past the {MAX_CPUS} a set can hold"
            )));
        }
        out.extend(a..=b);
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Prints a sorted CPU list in the kernel's form (`0-3,8`).
pub fn cpu_list_text(cpus: &[u32]) -> String {
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

/// The host's NUMA nodes, from `/sys/devices/system/node/online` (a read, not a listing:
/// planning on the manager's scan lists nothing again). Empty when the kernel has no NUMA
/// support (no such file): one node.
pub fn host_nodes(host: &dyn HostOps) -> Vec<u32> {
    host.read_attr(&Path::new(NODE_DIR).join("online"))
        .ok()
        .and_then(|v| parse_cpu_list(&v).ok())
        .unwrap_or_default()
}

/// `numa_node` of a PCI function (`None` for -1, absent or garbage).
pub fn pci_node(host: &dyn HostOps, addr: &PciAddress) -> Option<u32> {
    let v = host
        .read_attr(&PathBuf::from(format!(
            "/sys/bus/pci/devices/{addr}/numa_node"
        )))
        .ok()?;
    v.trim()
        .parse::<i64>()
        .ok()
        .and_then(|n| u32::try_from(n).ok())
}

/// A node's CPUs (`/sys/devices/system/node/nodeN/cpulist`); the error names the file.
pub fn node_cpus(host: &dyn HostOps, node: u32) -> Result<Vec<u32>, String> {
    let p = PathBuf::from(format!("{NODE_DIR}/node{node}/cpulist"));
    let v = host.read_attr(&p).map_err(|e| e.to_string())?;
    parse_cpu_list(&v).map_err(|e| format!("{}: {e}", p.display()))
}

/// The pool the guest's pages come from.
pub fn pool_dir(size: PageSize, node: Option<u32>) -> PathBuf {
    match node {
        Some(n) => PathBuf::from(format!("{NODE_DIR}/node{n}/hugepages/{}", size.pool_name())),
        None => Path::new(GLOBAL_HUGEPAGES).join(size.pool_name()),
    }
}
