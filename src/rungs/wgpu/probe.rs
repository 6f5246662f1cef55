//! The wgpu rung: a virtio-gpu rendered by a wgpu adapter.

use vm_device_host::AdapterInfo;

use crate::inventory::HostInventory;
use crate::ladder::Filter;
use crate::ladder::{Candidate, GpuMode, Reason, ReasonCode, Target};

const MODE: GpuMode = GpuMode::Wgpu;

/// Remedy when no adapter is found (the product guide's troubleshooting).
pub const NO_ADAPTER_REMEDY: &str = "check `vulkaninfo --summary`; install a driver: `sudo apt install mesa-vulkan-drivers` (Intel/AMD, and the lavapipe CPU renderer) or the NVIDIA Vulkan driver (`nvidia-vulkan-icd`); WGPU_BACKEND=vulkan|gl picks a backend";

fn type_rank(a: &AdapterInfo) -> u8 {
    match a.device_type.as_str() {
        "DiscreteGpu" => 0,
        "IntegratedGpu" => 1,
        "VirtualGpu" => 2,
        "Other" => 3,
        _ => 4, // Cpu last
    }
}

fn backend_rank(a: &AdapterInfo) -> u8 {
    match a.backend.as_str() {
        "Vulkan" | "Metal" | "Dx12" => 0,
        _ => 1,
    }
}

/// wgpu candidates from the adapter probe: hardware first, CPU renderers last.
pub fn probe(
    inv: &HostInventory,
    adapters: &Result<Vec<AdapterInfo>, String>,
    filter: &Filter,
) -> Vec<Candidate> {
    let adapters = match adapters {
        Ok(a) => a,
        Err(e) => {
            return vec![Candidate::nothing(
                MODE,
                Reason::new(
                    ReasonCode::AdapterProbeFailed,
                    format!("asking wgpu for adapters failed: {e}"),
                )
                .remedy(NO_ADAPTER_REMEDY),
            )]
        }
    };
    if adapters.is_empty() {
        return vec![Candidate::nothing(
            MODE,
            Reason::new(ReasonCode::NoAdapter, "wgpu found no adapter (Vulkan, GL)")
                .evidence("wgpu::Instance::enumerate_adapters(Backends::from_env() or all)")
                .remedy(NO_ADAPTER_REMEDY),
        )];
    }
    let mut list: Vec<&AdapterInfo> = adapters.iter().collect();
    if let Some(dev) = filter.device {
        let ids = inv
            .function(&dev)
            .and_then(|f| Some((f.vendor_id?, f.device_id?)));
        list.retain(|a| {
            ids.is_some_and(|(v, d)| a.vendor == u32::from(v) && a.device == u32::from(d))
        });
        if list.is_empty() {
            let names: Vec<&str> = adapters.iter().map(|a| a.name.as_str()).collect();
            return vec![Candidate::nothing(
                MODE,
                Reason::new(ReasonCode::AdapterNotOnDevice, format!("no wgpu adapter runs on {dev}"))
                    .evidence(format!("adapters: {}", names.join(", ")))
                    .remedy("leave out --gpu-device to render on any adapter, or install that GPU's Vulkan driver"),
            )];
        }
    }
    list.sort_by_key(|a| (type_rank(a), backend_rank(a)));
    list.into_iter()
        .map(|a| Candidate::available(MODE, Target::Adapter { info: a.clone() }))
        .collect()
}
