//! The product guide's performance section as checks (issue 17): hugepages free for
//! `--memory` per NUMA node (`hugepages.free`), each GPU's node and the free memory there
//! (`gpu.ADDR.numa`), and CPU isolation on the kernel command line (`cpu.isolation`, only
//! when `isolcpus=` or `nohz_full=` is there). The `iommu=pt` advice is `iommu.kernel_params`
//! (in `host.rs`): one rule.
//!
//! Hosts without hugepage pools or with one NUMA node get no hugepage or NUMA check: there
//! is nothing to choose there.

use std::path::{Path, PathBuf};

use super::{Check, Options, Status};
use crate::host::HostOps;
use crate::inventory::numa::{self as tuning, PageSize};
use crate::inventory::HostInventory;
use crate::ladder::GpuMode;

const PT: Option<GpuMode> = Some(GpuMode::Passthrough);

fn count(host: &dyn HostOps, p: &Path) -> Option<u64> {
    host.read_attr(p).ok()?.trim().parse().ok()
}

/// `MemFree` of a node's `meminfo`, in bytes.
fn node_mem_free(host: &dyn HostOps, node: u32) -> Option<u64> {
    let text = host
        .read_attr(&PathBuf::from(format!(
            "{}/node{node}/meminfo",
            tuning::NODE_DIR
        )))
        .ok()?;
    text.lines().find_map(|l| {
        let (_, rest) = l.split_once("MemFree:")?;
        let kib: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kib * 1024)
    })
}

fn gib(bytes: u64) -> String {
    if bytes % (1 << 30) == 0 {
        format!("{} GiB", bytes >> 30)
    } else {
        format!("{} MiB", bytes >> 20)
    }
}

pub(super) fn tuning_checks(
    host: &dyn HostOps,
    inv: &HostInventory,
    opts: &Options,
    out: &mut Vec<Check>,
) {
    let nodes = tuning::host_nodes(host);
    hugepages(host, &nodes, opts, out);
    if nodes.len() > 1 {
        for g in inv
            .gpus
            .iter()
            .filter(|g| opts.device.is_none_or(|d| d == g.address))
        {
            out.push(gpu_numa(host, inv, &g.address, &nodes, opts));
        }
    }
    if let Some(c) = isolation(inv) {
        out.push(c);
    }
}

/// `hugepages.free`: per size, the nodes (or the host) with enough free pages for `--memory`.
fn hugepages(host: &dyn HostOps, nodes: &[u32], opts: &Options, out: &mut Vec<Check>) {
    let sizes: Vec<PageSize> = [PageSize::M2, PageSize::G1]
        .into_iter()
        .filter(|s| host.is_dir(&tuning::pool_dir(*s, None)))
        .collect();
    if sizes.is_empty() {
        return;
    }
    let mut evidence = Vec::new();
    let mut fits = Vec::new();
    let mut best: Option<(PageSize, Option<u32>, u64, u64)> = None;
    for &size in &sizes {
        if opts.memory_bytes % size.bytes() != 0 {
            evidence.push(format!(
                "{size}: --memory {} is not a whole number of {size} pages",
                gib(opts.memory_bytes)
            ));
            continue;
        }
        let need = opts.memory_bytes / size.bytes();
        let pools: Vec<Option<u32>> = if nodes.is_empty() {
            vec![None]
        } else {
            nodes.iter().map(|n| Some(*n)).collect()
        };
        for node in pools {
            let pool = tuning::pool_dir(size, node);
            let (Some(nr), Some(free)) = (
                count(host, &pool.join("nr_hugepages")),
                count(host, &pool.join("free_hugepages")),
            ) else {
                continue;
            };
            evidence.push(format!(
                "{}/free_hugepages = {free} (nr_hugepages {nr}; {need} needed)",
                pool.display()
            ));
            let whose = node.map_or("the host".to_string(), |n| format!("node {n}"));
            if free >= need {
                fits.push(format!("{size} on {whose}"));
            } else if best.is_none_or(|b| size == PageSize::M2 && b.0 != PageSize::M2) {
                best = Some((size, node, nr + (need - free), need));
            }
        }
    }
    let c = if !fits.is_empty() {
        Check::new(
            "hugepages.free",
            None,
            Status::Ok,
            format!(
                "enough free hugepages for --memory {}: {} (vm-cli --hugepages SIZE)",
                gib(opts.memory_bytes),
                fits.join(", ")
            ),
        )
    } else {
        let mut c = Check::new(
            "hugepages.free",
            None,
            Status::Warn,
            format!(
                "no pool has enough free hugepages for --memory {}: the guest gets ordinary \
                 pages (more TLB misses) unless they are reserved",
                gib(opts.memory_bytes)
            ),
        );
        if let Some((size, node, target, _)) = best {
            let pool = tuning::pool_dir(size, node);
            c = c.remedy(format!(
                "echo {target} | sudo tee {}/nr_hugepages\n# or let vm-cli reserve them for the VM and give them back: --hugepages {size} --reserve-hugepages",
                pool.display()
            ));
        }
        c
    };
    let mut c = c;
    c.evidence = evidence;
    out.push(c);
}

/// `gpu.ADDR.numa`: the GPU's node and the free memory there.
fn gpu_numa(
    host: &dyn HostOps,
    inv: &HostInventory,
    addr: &vm_device_host::PciAddress,
    nodes: &[u32],
    opts: &Options,
) -> Check {
    let id = format!("gpu.{addr}.numa");
    let node = inv.function(addr).and_then(|f| f.numa_node);
    let nodes_text = tuning::cpu_list_text(nodes);
    let Some(n) = node else {
        return Check::new(
            id,
            PT,
            Status::Warn,
            format!(
                "{addr} has no NUMA node (numa_node -1) on a host with nodes {nodes_text}: \
                 --numa auto cannot place the VM next to it"
            ),
        )
        .device(addr.to_string())
        .evidence(format!("/sys/bus/pci/devices/{addr}/numa_node = -1"))
        .remedy(format!(
            "# the firmware does not say which socket the slot hangs off (no _PXM); give it by hand:\nvm-cli --kernel … --gpu-device {addr} --numa N  # N: the node of the slot's socket"
        ));
    };
    let cpus = tuning::node_cpus(host, n)
        .map(|c| tuning::cpu_list_text(&c))
        .unwrap_or_else(|_| "?".into());
    let free = node_mem_free(host, n);
    let base = Check::new(id, PT, Status::Ok, String::new())
        .device(addr.to_string())
        .evidence(format!("/sys/bus/pci/devices/{addr}/numa_node = {n}"))
        .evidence(format!("{}/node{n}/cpulist = {cpus}", tuning::NODE_DIR));
    match free {
        Some(f) if f >= opts.memory_bytes => Check {
            title: format!(
                "{addr} is on node {n} (CPUs {cpus}) with {} free: --numa auto binds the \
                 guest's {} there and pins its vCPUs to those CPUs",
                gib(f & !((1 << 20) - 1)),
                gib(opts.memory_bytes)
            ),
            ..base
        }
        .evidence(format!("{}/node{n}/meminfo MemFree = {} kB", tuning::NODE_DIR, f >> 10)),
        Some(f) => Check {
            status: Status::Warn,
            title: format!(
                "{addr} is on node {n}, which has {} free for a guest of {}: bound there \
                 (--numa auto) the guest may not start; unbound its memory lands on the far \
                 node and DMA crosses sockets",
                gib(f & !((1 << 20) - 1)),
                gib(opts.memory_bytes)
            ),
            remedy: Some(format!(
                "# free memory on node {n} (stop other VMs or services there), or give a smaller --memory\nnumastat -m  # what uses node {n}'s memory"
            )),
            ..base
        }
        .evidence(format!("{}/node{n}/meminfo MemFree = {} kB", tuning::NODE_DIR, f >> 10)),
        None => Check {
            status: Status::Warn,
            title: format!("{addr} is on node {n}; its free memory cannot be read"),
            remedy: Some(format!("cat {}/node{n}/meminfo", tuning::NODE_DIR)),
            ..base
        },
    }
}

/// `cpu.isolation`: `isolcpus=` / `nohz_full=` noted, with how to pin onto those CPUs.
fn isolation(inv: &HostInventory) -> Option<Check> {
    let cmdline = inv.host.cmdline.as_deref()?;
    let found: Vec<&str> = cmdline
        .split_whitespace()
        .filter(|w| w.starts_with("isolcpus=") || w.starts_with("nohz_full="))
        .collect();
    // isolcpus=domain,managed_irq,2-3: the CPU list is the items that start with a digit.
    let list = found.iter().find_map(|w| {
        let v = w.split_once('=')?.1;
        let items: Vec<&str> = v
            .split(',')
            .filter(|p| p.starts_with(|c: char| c.is_ascii_digit()))
            .collect();
        tuning::parse_cpu_list(&items.join(",")).ok()
    })?;
    Some(
        Check::new(
            "cpu.isolation",
            None,
            Status::Ok,
            format!(
                "{} on the kernel command line: CPUs {} are kept for pinned work; give them \
                 to the vCPUs with --cpu-pin {} (--numa auto pins to the GPU's node instead)",
                found.join(" "),
                tuning::cpu_list_text(&list),
                tuning::cpu_list_text(&list)
            ),
        )
        .evidence(format!("/proc/cmdline: {}", found.join(" "))),
    )
}
