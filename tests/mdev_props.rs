//! Random create/remove sequences on the QEMU lab's sample parents keep every type's
//! `available_instances` consistent with its active devices (the pools measured on Linux
//! 6.1: mbochs 256 MB, mdpy 4 shared, mtty 24 ports), and removing everything gives back
//! the starting tree.

mod mdev_common;

use std::collections::BTreeMap;

use mdev_common::*;
use proptest::prelude::*;
use vm_device::gpu_mdev::lifecycle::{self, ApplyOptions, CreateRequest, UuidSource};
use vm_device::gpu_mdev::{scenario, MdevError, TypeRequest};
use vm_device::host::SimHost;
use vm_device::inventory::HostInventory;

/// (parent, type, units one instance takes from the parent's pool)
const TYPES: [(&str, &str, u32); 8] = [
    ("mbochs", "mbochs-small", 4),
    ("mbochs", "mbochs-medium", 16),
    ("mbochs", "mbochs-large", 64),
    ("mdpy", "mdpy-vga", 1),
    ("mdpy", "mdpy-xga", 1),
    ("mdpy", "mdpy-hd", 1),
    ("mtty", "mtty-1", 1),
    ("mtty", "mtty-2", 2),
];

fn pool(parent: &str) -> u32 {
    match parent {
        "mbochs" => 256,
        "mdpy" => 4,
        _ => 24,
    }
}

#[derive(Debug, Clone)]
enum Op {
    Create(usize),
    Remove(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..TYPES.len()).prop_map(Op::Create),
        2 => (0..64usize).prop_map(Op::Remove),
    ]
}

/// Expected `available_instances` of every type from the devices the model holds.
fn expected(model: &[(String, usize)]) -> BTreeMap<String, u32> {
    let mut used: BTreeMap<&str, u32> = BTreeMap::new();
    for (_, t) in model {
        *used.entry(TYPES[*t].0).or_default() += TYPES[*t].2;
    }
    TYPES
        .iter()
        .map(|(p, t, units)| {
            let free = pool(p) - used.get(p).copied().unwrap_or(0);
            (t.to_string(), free / units)
        })
        .collect()
}

fn observed(h: &SimHost) -> (BTreeMap<String, u32>, BTreeMap<String, usize>) {
    let inv = HostInventory::scan(h);
    let mut avail = BTreeMap::new();
    let mut active = BTreeMap::new();
    for p in &inv.mdev_parents {
        for t in &p.types {
            avail.insert(t.id.clone(), t.available_instances.unwrap_or(u32::MAX));
            active.insert(t.id.clone(), t.devices.len());
        }
    }
    (avail, active)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn available_instances_and_active_devices_stay_consistent_and_removal_restores_the_tree(
        ops in proptest::collection::vec(op(), 1..24)
    ) {
        let h = lab();
        let start = h.snapshot();
        let opts = ApplyOptions::default();
        let mut model: Vec<(String, usize)> = Vec::new();
        for (i, o) in ops.iter().enumerate() {
            match o {
                Op::Create(t) => {
                    let before = scenario::counts(&h, TYPES[*t].0);
                    let snap = h.snapshot();
                    let r = lifecycle::create(&h, &CreateRequest {
                        ty: TypeRequest { wanted: TYPES[*t].1.into(), parent: None, numa_node: None },
                        uuid: UuidSource::Vm { name: "prop".into(), index: i as u32 },
                        persist: None,
                    }, &opts);
                    if before[TYPES[*t].1] > 0 {
                        let (p, _) = r.map_err(|e| TestCaseError::fail(e.to_string()))?;
                        model.push((p.device, *t));
                    } else {
                        // A type that reads 0 is refused before the host, and nothing changes.
                        prop_assert!(matches!(r, Err(MdevError::NoInstances { .. })), "{:?}", r);
                        prop_assert_eq!(h.snapshot(), snap);
                    }
                }
                Op::Remove(k) => {
                    if model.is_empty() {
                        continue;
                    }
                    let (uuid, _) = model.remove(k % model.len());
                    lifecycle::remove(&h, &uuid, &opts).map_err(|e| TestCaseError::fail(e.to_string()))?;
                }
            }
            let (avail, active) = observed(&h);
            prop_assert_eq!(&avail, &expected(&model), "after {:?}", o);
            for (_, t, _) in TYPES {
                let n = model.iter().filter(|(_, m)| TYPES[*m].1 == t).count();
                prop_assert_eq!(active[t], n, "active {} after {:?}", t, o);
            }
        }
        for (uuid, _) in model.drain(..).rev() {
            lifecycle::remove(&h, &uuid, &opts).map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        prop_assert!(h.snapshot() == start, "tree differs from the start after removing everything");
    }
}
