//! Properties of the whole decision on generated hosts: random GPUs (boot display or not,
//! groups shared with busy devices or not), IOMMU on or off, mdev parents with random room,
//! random wgpu adapters; the rung probes and `decide` together must pick the highest
//! available rung at or below the preferred one, never an unavailable candidate, and the
//! same answer every time.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use proptest::prelude::*;
use vm_device::gpu_manager::{decide, Candidate, GpuMode, Preference};
use vm_device::inventory::{
    Gpu, HostFacts, HostInventory, IommuGroup, IommuKind, IommuState, KernelParams, MdevParent,
    MdevTypeInfo, PciFunction,
};
use vm_device::ladder::Filter;
use vm_device::rungs::{
    mdev::probe as mdev, passthrough::probe as passthrough, wgpu::probe as wgpu,
};
use vm_device_host::{AdapterInfo, PciAddress};

fn function(addr: PciAddress, class: u32, driver: Option<&str>, group: Option<u32>) -> PciFunction {
    PciFunction {
        address: addr,
        sysfs_path: PathBuf::from(format!("/sys/devices/pci0000:00/{addr}")),
        vendor_id: Some(0x10de),
        device_id: Some(0x1eb8),
        subsystem_vendor_id: None,
        subsystem_device_id: None,
        class: Some(class),
        revision: None,
        vendor_name: None,
        device_name: None,
        driver: driver.map(str::to_string),
        driver_override: None,
        numa_node: None,
        bars: Vec::new(),
        iommu_group: group,
        boot_vga: None,
        reset_method: None,
        sriov: None,
        physfn: None,
        vram: None,
        vram_unknown: None,
        device_nodes: Vec::new(),
        nvidia_vgpu: None,
    }
}

#[derive(Debug, Clone)]
struct GpuSpec {
    boot_vga: bool,
    busy_neighbour: bool,
    mdev_room: Option<Vec<u32>>,
}

fn gpu_spec() -> impl Strategy<Value = GpuSpec> {
    (
        any::<bool>(),
        prop::bool::weighted(0.3),
        prop::option::of(prop::collection::vec(0u32..3, 1..4)),
    )
        .prop_map(|(boot_vga, busy_neighbour, mdev_room)| GpuSpec {
            boot_vga,
            busy_neighbour,
            mdev_room,
        })
}

fn adapter(kind: u8) -> AdapterInfo {
    let (device_type, name) = match kind {
        0 => ("DiscreteGpu", "discrete"),
        1 => ("IntegratedGpu", "integrated"),
        _ => ("Cpu", "llvmpipe"),
    };
    AdapterInfo {
        name: name.into(),
        vendor: 0,
        device: 0,
        device_type: device_type.into(),
        backend: "Vulkan".into(),
        driver: String::new(),
        driver_info: String::new(),
    }
}

fn inventory(iommu: bool, gpus: &[GpuSpec]) -> HostInventory {
    let mut functions = Vec::new();
    let mut groups: BTreeMap<u32, IommuGroup> = BTreeMap::new();
    let mut inv_gpus = Vec::new();
    let mut parents = Vec::new();
    for (i, g) in gpus.iter().enumerate() {
        let bus = i as u8 + 1;
        let addr = PciAddress::new(0, bus, 0, 0).unwrap();
        let group = iommu.then_some(u32::from(bus));
        let mut f = function(addr, 0x030200, Some("nvidia"), group);
        f.boot_vga = Some(g.boot_vga);
        functions.push(f);
        let mut members = vec![addr];
        if g.busy_neighbour {
            let nic = PciAddress::new(0, bus, 1, 0).unwrap();
            functions.push(function(nic, 0x020000, Some("igb"), group));
            members.push(nic);
        }
        if let Some(n) = group {
            groups.insert(n, IommuGroup { number: n, members });
        }
        inv_gpus.push(Gpu {
            address: addr,
            companions: Vec::new(),
        });
        if let Some(room) = &g.mdev_room {
            parents.push(MdevParent {
                name: addr.to_string(),
                pci_address: Some(addr),
                sysfs_path: PathBuf::from(format!("/sys/devices/pci0000:00/{addr}")),
                driver: Some("nvidia".into()),
                types: room
                    .iter()
                    .enumerate()
                    .map(|(t, n)| MdevTypeInfo {
                        id: format!("nvidia-{}", 220 + t),
                        name: None,
                        description: None,
                        device_api: Some("vfio-pci".into()),
                        available_instances: Some(*n),
                        devices: Vec::new(),
                    })
                    .collect(),
                display: true,
            });
        }
    }
    functions.sort_by_key(|f| f.address);
    HostInventory {
        host: HostFacts {
            iommu: IommuState {
                enabled: iommu,
                units: if iommu { vec!["dmar0".into()] } else { vec![] },
                kind: iommu.then_some(IommuKind::IntelVtd),
                group_count: groups.len(),
                group_numbers: groups.keys().copied().collect(),
            },
            cpu_vendor: None,
            cmdline: None,
            params: KernelParams::default(),
            modules: Some(BTreeSet::from(["nvidia_vgpu_vfio".to_string()])),
            dev_vfio: true,
            dev_kvm: true,
            virtualization: Default::default(),
        },
        functions,
        groups,
        gpus: inv_gpus,
        mdev_parents: parents,
        mdev_devices: Vec::new(),
        holders: Vec::new(),
        holders_error: None,
        warnings: Vec::new(),
    }
}

fn candidates(inv: &HostInventory, adapters: &[AdapterInfo], mode: GpuMode) -> Vec<Candidate> {
    let filter = Filter::default();
    match mode {
        GpuMode::Passthrough => passthrough::probe(inv, &filter),
        GpuMode::Mdev => mdev::probe(inv, &filter),
        GpuMode::Wgpu => wgpu::probe(inv, &Ok(adapters.to_vec()), &filter),
    }
}

fn host() -> impl Strategy<Value = (bool, Vec<GpuSpec>, Vec<u8>)> {
    (
        any::<bool>(),
        prop::collection::vec(gpu_spec(), 0..5),
        prop::collection::vec(0u8..3, 0..3),
    )
}

fn mode() -> impl Strategy<Value = Option<GpuMode>> {
    prop::option::of(prop::sample::select(GpuMode::LADDER.to_vec()))
}

proptest! {
    #[test]
    fn the_choice_is_the_highest_available_rung_at_or_below_the_preferred_one(
        (iommu, gpus, kinds) in host(), preferred in mode(), fallback in any::<bool>()
    ) {
        let inv = inventory(iommu, &gpus);
        let adapters: Vec<AdapterInfo> = kinds.iter().map(|k| adapter(*k)).collect();
        let pref = Preference { preferred, auto_fallback: fallback };
        let d = decide(&pref, |m| candidates(&inv, &adapters, m));
        let start = preferred.unwrap_or(GpuMode::Passthrough);
        let allowed: Vec<GpuMode> = GpuMode::LADDER
            .into_iter()
            .filter(|m| if fallback { m.rank() >= start.rank() } else { *m == start })
            .collect();
        let best = allowed
            .iter()
            .copied()
            .find(|m| candidates(&inv, &adapters, *m).iter().any(|c| c.is_available()));
        prop_assert_eq!(d.selected.as_ref().map(|c| c.mode()), best);
        if let Some(c) = &d.selected {
            prop_assert!(c.is_available());
        }
        prop_assert!(d.rejected.iter().all(|c| c.reason().is_some()));
        // Deterministic.
        prop_assert_eq!(d, decide(&pref, |m| candidates(&inv, &adapters, m)));
    }

    #[test]
    fn passthrough_is_never_offered_without_iommu_on_the_boot_display_or_next_to_busy_devices(
        (iommu, gpus, _kinds) in host()
    ) {
        let inv = inventory(iommu, &gpus);
        for c in passthrough::probe(&inv, &Filter::default()) {
            if !c.is_available() {
                continue;
            }
            let addr: PciAddress = c.device().unwrap().parse().unwrap();
            let spec = &gpus[usize::from(addr.bus) - 1];
            prop_assert!(iommu && !spec.boot_vga && !spec.busy_neighbour, "{:?}", spec);
        }
    }

    #[test]
    fn an_mdev_type_is_offered_exactly_when_it_has_room(
        (iommu, gpus, _kinds) in host()
    ) {
        let inv = inventory(iommu, &gpus);
        let offered: usize = mdev::probe(&inv, &Filter::default()).iter().filter(|c| c.is_available()).count();
        let with_room: usize = gpus
            .iter()
            .filter_map(|g| g.mdev_room.as_ref())
            .map(|r| r.iter().filter(|n| **n > 0).count())
            .sum();
        prop_assert_eq!(offered, with_room);
    }
}
