//! The product guide's tuning of a launch: guest RAM from hugepages, memory and vCPUs on the
//! GPU's NUMA node, vCPU threads pinned.
//!
//! [`plan_tuning`] reads the host (through [`HostOps`]) and changes nothing: the node (from
//! `--numa`, or the GPU's `numa_node` — for an mdev or VF its parent's, for the wgpu rung the
//! adapter's PCI device's), the cores (`--cpu-pin`, the GPU's `local_cpulist`, or the node's
//! `cpulist`), the cores left to QEMU's other threads, and the hugepages: enough free pages in
//! the pool (the node's when memory is bound, else the host's), or a refusal naming the exact
//! command, or with `--reserve-hugepages` a [`Plan`] that raises `nr_hugepages` (journaled,
//! undone by writing the old count back; its check fails when the kernel reserved fewer pages
//! than asked, as it does when memory is fragmented). The QEMU side is in
//! [`super::argv`]; applying the reservation and pinning the threads in `supervise`.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Serialize;
use vm_device_host::PciAddress;

use crate::host::HostOps;
use crate::ladder::Target;
use crate::plan::{Action, Check, Plan, Step};

pub use crate::inventory::numa::{
    cpu_list_text, host_nodes, parse_cpu_list, pci_node, pool_dir, PageSize, CPU_ONLINE,
    GLOBAL_HUGEPAGES, MAX_CPUS, NODE_DIR,
};

/// `--numa`: where guest memory and vCPUs go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NumaChoice {
    /// The GPU's node when the host has more than one and the GPU's node is known.
    #[default]
    Auto,
    /// This node.
    Node(u32),
    /// No binding, no pinning (unless `--cpu-pin`).
    Off,
}

impl FromStr for NumaChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "auto" => Ok(NumaChoice::Auto),
            "off" | "none" => Ok(NumaChoice::Off),
            n => n.parse::<u32>().map(NumaChoice::Node).map_err(|_| {
                format!("`{s}` is not a NUMA node: give auto, off, or a node number (0, 1, …)")
            }),
        }
    }
}

/// What the user asked for: `--hugepages`, `--reserve-hugepages`, `--numa`, `--cpu-pin`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TuningOptions {
    /// Back guest RAM with hugepages of this size.
    pub hugepages: Option<PageSize>,
    /// Reserve missing hugepages (a journaled `nr_hugepages` write, undone when the VM ends).
    pub reserve_hugepages: bool,
    /// NUMA placement.
    pub numa: NumaChoice,
    /// Pin vCPUs to these host CPUs (overrides the node's cores).
    pub cpu_pin: Option<Vec<u32>>,
    /// The PCI device a wgpu adapter runs on (`--gpu-device`), when known; else the display
    /// function with the adapter's vendor and device ids.
    pub adapter_device: Option<PciAddress>,
}

/// The hugepages of the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HugePagePlan {
    /// Page size.
    pub size: PageSize,
    /// Pages the guest's RAM takes.
    pub pages: u64,
    /// The pool: `…/nodeN/hugepages/hugepages-2048kB`, or the host-wide one.
    pub pool: PathBuf,
    /// The node whose pool it is (`None`: the host-wide pool).
    pub node: Option<u32>,
    /// `nr_hugepages` of the pool now.
    pub total: u64,
    /// Free pages in the pool now.
    pub free: u64,
    /// The reservation (`--reserve-hugepages` when too few are free).
    pub reserve: Option<Plan>,
}

/// Where the VM runs, and on what memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TuningPlan {
    /// The host's NUMA nodes.
    pub host_nodes: Vec<u32>,
    /// The PCI device whose node counts (the GPU, the mdev or VF parent, the adapter's GPU).
    pub device: Option<PciAddress>,
    /// Its `numa_node` (`None`: -1 or unreadable).
    pub device_node: Option<u32>,
    /// The node guest memory is bound to (`host-nodes=N,policy=bind`), if any.
    pub node: Option<u32>,
    /// Why that node, or why none.
    pub node_why: String,
    /// Host CPUs the vCPU threads are pinned to (empty: not pinned).
    pub vcpu_cores: Vec<u32>,
    /// Where those cores come from.
    pub cores_from: String,
    /// `--cpu-pin` with one CPU per vCPU: vCPU i on the i-th CPU; else every vCPU on all.
    pub one_to_one: bool,
    /// Cores QEMU's other threads (main loop, I/O) are moved to (empty: left alone).
    pub other_cores: Vec<u32>,
    /// Why they are, or are not, moved.
    pub other_why: String,
    /// Hugepages, when asked for.
    pub hugepages: Option<HugePagePlan>,
}

impl TuningPlan {
    /// Nothing to do: no binding, no pinning, no hugepages.
    pub fn is_empty(&self) -> bool {
        self.node.is_none() && self.vcpu_cores.is_empty() && self.hugepages.is_none()
    }

    /// The cores vCPU `index` (of `cpus`) is pinned to.
    pub fn cores_for_vcpu(&self, index: usize) -> Vec<u32> {
        if self.one_to_one {
            self.vcpu_cores
                .get(index)
                .map(|c| vec![*c])
                .unwrap_or_else(|| self.vcpu_cores.clone())
        } else {
            self.vcpu_cores.clone()
        }
    }

    /// The plan for people, a few lines.
    pub fn text(&self) -> String {
        let mut out = String::from("Tuning:\n");
        match self.node {
            Some(n) => out.push_str(&format!(
                "  NUMA: guest memory bound to node {n} ({})\n",
                self.node_why
            )),
            None => out.push_str(&format!("  NUMA: not bound ({})\n", self.node_why)),
        }
        if self.vcpu_cores.is_empty() {
            out.push_str("  vCPUs: not pinned\n");
        } else {
            out.push_str(&format!(
                "  vCPUs: pinned to CPUs {}{} ({})\n",
                cpu_list_text(&self.vcpu_cores),
                if self.one_to_one { ", one each" } else { "" },
                self.cores_from
            ));
            if self.other_cores.is_empty() {
                out.push_str(&format!(
                    "  QEMU's other threads: left alone ({})\n",
                    self.other_why
                ));
            } else {
                out.push_str(&format!(
                    "  QEMU's other threads: on CPUs {} ({})\n",
                    cpu_list_text(&self.other_cores),
                    self.other_why
                ));
            }
        }
        match &self.hugepages {
            None => out.push_str("  Hugepages: no (guest RAM in ordinary pages)\n"),
            Some(h) => {
                let whose = match h.node {
                    Some(n) => format!("node {n}"),
                    None => "the host".to_string(),
                };
                out.push_str(&format!(
                    "  Hugepages: {} pages of {} from {whose} ({} free of {} in {})\n",
                    h.pages,
                    h.size,
                    h.free,
                    h.total,
                    h.pool.display()
                ));
                if let Some(p) = &h.reserve {
                    for l in p.to_text().lines() {
                        out.push_str(&format!("  {l}\n"));
                    }
                }
            }
        }
        out
    }
}

/// Why tuning cannot be planned or applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TuningError {
    /// The options contradict the host or each other (`--numa 3` on a two-node host).
    #[error("{0}")]
    Invalid(String),
    /// The host cannot do it as it stands (too few free hugepages); the message names the
    /// command that fixes it.
    #[error("{0}")]
    Refused(String),
    /// The host could not be read, or a thread could not be pinned.
    #[error("{0}")]
    Host(String),
    /// The reservation failed; `undone` says whether the host is as it was.
    #[error("{message}")]
    Reservation {
        /// What happened.
        message: String,
        /// The old `nr_hugepages` is back.
        undone: bool,
    },
}

fn read_u64(host: &dyn HostOps, p: &Path) -> Result<u64, TuningError> {
    let v = host
        .read_attr(p)
        .map_err(|e| TuningError::Host(e.to_string()))?;
    v.trim()
        .parse()
        .map_err(|_| TuningError::Host(format!("{}: `{}` is not a number", p.display(), v.trim())))
}

/// A node's CPUs (`/sys/devices/system/node/nodeN/cpulist`).
pub fn node_cpus(host: &dyn HostOps, node: u32) -> Result<Vec<u32>, TuningError> {
    crate::inventory::numa::node_cpus(host, node).map_err(TuningError::Host)
}

/// The online CPUs (`/sys/devices/system/cpu/online`; the nodes' CPUs when unreadable).
pub fn online_cpus(host: &dyn HostOps, nodes: &[u32]) -> Vec<u32> {
    if let Ok(v) = host.read_attr(Path::new(CPU_ONLINE)) {
        if let Ok(l) = parse_cpu_list(&v) {
            return l;
        }
    }
    let mut all: Vec<u32> = nodes
        .iter()
        .filter_map(|n| node_cpus(host, *n).ok())
        .flatten()
        .collect();
    all.sort_unstable();
    all.dedup();
    all
}

/// The physical function behind a VF (`physfn` link).
fn physfn(host: &dyn HostOps, vf: &PciAddress) -> Option<PciAddress> {
    host.link_name(&PathBuf::from(format!("/sys/bus/pci/devices/{vf}/physfn")))
        .ok()?
        .parse()
        .ok()
}

/// The PCI device of a wgpu adapter: `--gpu-device` when given, else the first display
/// function with the adapter's vendor and device ids.
fn adapter_device(
    host: &dyn HostOps,
    info: &vm_device_host::AdapterInfo,
    gpu_device: Option<PciAddress>,
) -> Option<PciAddress> {
    if info.vendor == 0 {
        return None;
    }
    if let Some(d) = gpu_device {
        return Some(d);
    }
    let id = |dir: &Path, f: &str| -> Option<u32> {
        let v = host.read_attr(&dir.join(f)).ok()?;
        u32::from_str_radix(v.trim().trim_start_matches("0x"), 16).ok()
    };
    host.list_dir(Path::new("/sys/bus/pci/devices"))
        .ok()?
        .into_iter()
        .filter_map(|n| n.parse::<PciAddress>().ok())
        .find(|a| {
            let dir = PathBuf::from(format!("/sys/bus/pci/devices/{a}"));
            id(&dir, "class").is_some_and(|c| c >> 16 == 0x03)
                && id(&dir, "vendor") == Some(info.vendor)
                && id(&dir, "device") == Some(info.device)
        })
}

/// The PCI device whose NUMA node counts for `target`, and in words what it is.
pub fn placement_device(
    host: &dyn HostOps,
    target: &Target,
    gpu_device: Option<PciAddress>,
) -> (Option<PciAddress>, String) {
    match target {
        Target::Gpu { address, .. } => (Some(*address), format!("the GPU {address}")),
        Target::SriovVf { pf, vf } => (Some(*pf), format!("{vf}'s physical function {pf}")),
        Target::SriovPf { pf, .. } => (Some(*pf), format!("the GPU {pf}")),
        Target::NvidiaVgpu { vf, .. } => match physfn(host, vf) {
            Some(pf) => (Some(pf), format!("{vf}'s physical function {pf}")),
            None => (Some(*vf), format!("the VF {vf}")),
        },
        Target::MdevType { parent, .. } => match parent.parse::<PciAddress>() {
            Ok(a) => (Some(a), format!("the mdev parent {a}")),
            Err(_) => (
                None,
                format!("the mdev parent {parent} is not a PCI device"),
            ),
        },
        Target::Adapter { info } => match adapter_device(host, info, gpu_device) {
            Some(a) => (Some(a), format!("the adapter's GPU {a}")),
            None => (
                None,
                format!(
                    "the adapter `{}` is not a PCI device of this host",
                    info.name
                ),
            ),
        },
        Target::Nothing => (None, "nothing is attached".into()),
    }
}

/// Plans the tuning of a launch of `target` with `memory_bytes` of RAM and `vcpus` vCPUs:
/// reads the host, changes nothing. Every refusal comes before any host change.
pub fn plan_tuning(
    host: &dyn HostOps,
    target: &Target,
    memory_bytes: u64,
    vcpus: u32,
    opts: &TuningOptions,
) -> Result<TuningPlan, TuningError> {
    if opts.reserve_hugepages && opts.hugepages.is_none() {
        return Err(TuningError::Invalid(
            "--reserve-hugepages needs --hugepages 2M or 1G".into(),
        ));
    }
    let nodes = host_nodes(host);
    let (device, device_what) = placement_device(host, target, opts.adapter_device);
    let device_node = device.and_then(|d| pci_node(host, &d));
    let nodes_text = if nodes.is_empty() {
        "this host has no NUMA nodes in sysfs".to_string()
    } else {
        format!("this host has node(s) {}", cpu_list_text(&nodes))
    };
    let (node, node_why) = match opts.numa {
        NumaChoice::Off => (None, "--numa off".to_string()),
        NumaChoice::Node(n) => {
            if !nodes.contains(&n) {
                return Err(TuningError::Invalid(format!(
                    "--numa {n}: there is no node {n} ({nodes_text}); give one of them, auto or off"
                )));
            }
            let why = match (device_node, device) {
                (Some(d), Some(_)) if d != n => {
                    format!("--numa {n}; {device_what} is on node {d}, so its DMA crosses sockets")
                }
                _ => format!("--numa {n}"),
            };
            (Some(n), why)
        }
        NumaChoice::Auto => {
            if nodes.len() <= 1 {
                (
                    None,
                    format!("auto: one NUMA node ({nodes_text}), nothing to choose"),
                )
            } else {
                match (device, device_node) {
                    (Some(_), Some(n)) if nodes.contains(&n) => {
                        (Some(n), format!("auto: {device_what} is on node {n}"))
                    }
                    (Some(d), _) => (
                        None,
                        format!("auto: the platform gives no NUMA node for {d} (numa_node -1)"),
                    ),
                    (None, _) => (None, format!("auto: {device_what}")),
                }
            }
        }
    };
    let online = online_cpus(host, &nodes);
    let (vcpu_cores, cores_from, one_to_one) = match (&opts.cpu_pin, node) {
        (Some(list), _) => {
            if list.is_empty() {
                return Err(TuningError::Invalid("--cpu-pin names no CPU".into()));
            }
            if !online.is_empty() {
                let off: Vec<u32> = list
                    .iter()
                    .copied()
                    .filter(|c| !online.contains(c))
                    .collect();
                if !off.is_empty() {
                    return Err(TuningError::Invalid(format!(
                        "--cpu-pin {}: CPU(s) {} are not online (online: {})",
                        cpu_list_text(list),
                        cpu_list_text(&off),
                        cpu_list_text(&online)
                    )));
                }
            }
            let one = list.len() == vcpus as usize;
            (list.clone(), "--cpu-pin".to_string(), one)
        }
        (None, Some(n)) => {
            let local = device.filter(|_| device_node == Some(n)).and_then(|d| {
                let p = PathBuf::from(format!("/sys/bus/pci/devices/{d}/local_cpulist"));
                let l = parse_cpu_list(&host.read_attr(&p).ok()?).ok()?;
                (!l.is_empty()).then_some((l, d))
            });
            let (l, from) = match local {
                Some((l, d)) => (l, format!("local_cpulist of {d}")),
                None => (node_cpus(host, n)?, format!("cpulist of node {n}")),
            };
            (l, from, false)
        }
        (None, None) => (Vec::new(), String::new(), false),
    };
    if !vcpu_cores.is_empty()
        && vcpu_cores.iter().all(|c| !online.contains(c))
        && !online.is_empty()
    {
        return Err(TuningError::Host(format!(
            "none of the CPUs {} ({cores_from}) is online",
            cpu_list_text(&vcpu_cores)
        )));
    }
    let (other_cores, other_why) = if vcpu_cores.is_empty() {
        (Vec::new(), String::new())
    } else {
        let rest: Vec<u32> = online
            .iter()
            .copied()
            .filter(|c| !vcpu_cores.contains(c))
            .collect();
        if rest.is_empty() {
            (
                Vec::new(),
                "no other CPU is online: they share the vCPUs' CPUs".to_string(),
            )
        } else {
            (rest, "off the vCPUs' CPUs".to_string())
        }
    };
    let hugepages = match opts.hugepages {
        None => None,
        Some(size) => Some(plan_hugepages(
            host,
            size,
            memory_bytes,
            node,
            opts.reserve_hugepages,
        )?),
    };
    Ok(TuningPlan {
        host_nodes: nodes,
        device,
        device_node,
        node,
        node_why,
        vcpu_cores,
        cores_from,
        one_to_one,
        other_cores,
        other_why,
        hugepages,
    })
}

/// The journal key of a reservation in `pool`.
pub fn reservation_key(size: PageSize, node: Option<u32>) -> String {
    match node {
        Some(n) => format!("hugepages-node{n}-{}", size.pool_name()),
        None => format!("hugepages-{}", size.pool_name()),
    }
}

fn plan_hugepages(
    host: &dyn HostOps,
    size: PageSize,
    memory_bytes: u64,
    node: Option<u32>,
    reserve: bool,
) -> Result<HugePagePlan, TuningError> {
    if memory_bytes % size.bytes() != 0 {
        return Err(TuningError::Invalid(format!(
            "--memory {} is not a whole number of {size} hugepages; give a multiple of {size}",
            super::argv::qemu_size(memory_bytes)
        )));
    }
    let pages = memory_bytes / size.bytes();
    let pool = pool_dir(size, node);
    let whose = match node {
        Some(n) => format!("node {n}"),
        None => "this host".to_string(),
    };
    if !host.is_dir(&pool) {
        return Err(TuningError::Refused(format!(
            "{whose} has no {size} hugepage pool ({} is missing){}",
            pool.display(),
            if size == PageSize::G1 {
                ": 1G pages need a CPU with pdpe1gb and a kernel that offers them (hugepagesz=1G)"
            } else {
                ": the kernel was built without hugetlbfs"
            }
        )));
    }
    let nr_path = pool.join("nr_hugepages");
    let total = read_u64(host, &nr_path)?;
    let mut free = read_u64(host, &pool.join("free_hugepages"))?;
    if node.is_none() {
        // Host-wide, pages promised to mappings but not yet faulted in are not free to us.
        if let Ok(resv) = read_u64(host, &pool.join("resv_hugepages")) {
            free = free.saturating_sub(resv);
        }
    }
    let mut plan = HugePagePlan {
        size,
        pages,
        pool: pool.clone(),
        node,
        total,
        free,
        reserve: None,
    };
    if free >= pages {
        return Ok(plan);
    }
    let target = total + (pages - free);
    if !reserve {
        return Err(TuningError::Refused(format!(
            "{whose} has {free} free {size} hugepages and the guest's {} needs {pages}; reserve \
             them with `echo {target} | sudo tee {}` (undo: `echo {total} | sudo tee {}`), or \
             add --reserve-hugepages and vm-cli reserves them for this VM and gives them back \
             when it ends",
            super::argv::qemu_size(memory_bytes),
            nr_path.display(),
            nr_path.display()
        )));
    }
    let device = match node {
        Some(n) => format!("node{n}"),
        None => "host".to_string(),
    };
    plan.reserve = Some(Plan {
        subject: format!(
            "reserve {} more {size} hugepages on {whose} for the guest's RAM",
            pages - free
        ),
        key: reservation_key(size, node),
        steps: vec![
            Step::new(
                Action::Write {
                    path: nr_path.clone(),
                    value: target.to_string(),
                },
                Some(Action::Write {
                    path: nr_path.clone(),
                    value: total.to_string(),
                }),
                device.clone(),
                format!("{pages} free {size} pages for the guest"),
            ),
            Step::new(
                Action::Verify(Check::Content {
                    path: nr_path.clone(),
                    value: target.to_string(),
                }),
                None,
                device,
                "the kernel reserved them all; fragmented memory gives fewer",
            ),
        ],
        origin: vec![Check::Content {
            path: nr_path,
            value: total.to_string(),
        }],
    });
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_round_trip_and_bad_ones_say_why() {
        assert_eq!(
            parse_cpu_list("8-11,2,3").unwrap(),
            vec![2, 3, 8, 9, 10, 11]
        );
        assert_eq!(cpu_list_text(&[2, 3, 8, 9, 10, 11]), "2-3,8-11");
        assert_eq!(cpu_list_text(&[5]), "5");
        for bad in ["", "1,,2", "3-1", "a", "1-x", "5000"] {
            assert!(parse_cpu_list(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_and_nodes_parse() {
        assert_eq!("2M".parse::<PageSize>(), Ok(PageSize::M2));
        assert_eq!("1g".parse::<PageSize>(), Ok(PageSize::G1));
        assert!("4K".parse::<PageSize>().is_err());
        assert_eq!(PageSize::M2.pool_name(), "hugepages-2048kB");
        assert_eq!(PageSize::G1.pool_name(), "hugepages-1048576kB");
        assert_eq!("auto".parse::<NumaChoice>(), Ok(NumaChoice::Auto));
        assert_eq!("1".parse::<NumaChoice>(), Ok(NumaChoice::Node(1)));
        assert_eq!("off".parse::<NumaChoice>(), Ok(NumaChoice::Off));
        assert!("-1".parse::<NumaChoice>().is_err());
    }
}
