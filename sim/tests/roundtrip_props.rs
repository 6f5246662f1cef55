//! Property tests on the recorded QEMU q35 tree: random mdev create/remove sequences keep
//! `available_instances` equal to an independent model of the pool rules and undo byte for
//! byte; random bind/unbind/override sequences undo to the original tree.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use common::*;
use proptest::prelude::*;
use vm_device_sim::kernel::errno::*;
use vm_device_sim::{SimHost, Snapshot};

/// (parent types dir, type, cost in the parent's units)
const TYPES: &[(&str, &str, u64)] = &[
    (MBOCHS, "mbochs-small", 4),
    (MBOCHS, "mbochs-medium", 16),
    (MBOCHS, "mbochs-large", 64),
    (MDPY, "mdpy-vga", 1),
    (MDPY, "mdpy-xga", 1),
    (MDPY, "mdpy-hd", 1),
    (MTTY, "mtty-1", 1),
    (MTTY, "mtty-2", 2),
];

fn uuid(n: u8) -> String {
    format!("0d0d0d0d-0000-4000-8000-{n:012x}")
}

/// The pool rules of the lab kernel, written independently of the simulator: mbochs 256 MB,
/// mdpy 4 shared, mtty 24 ports.
fn model_available(live: &BTreeMap<String, usize>, ty: usize) -> u64 {
    let (parent, _, cost) = TYPES[ty];
    let used: u64 = live
        .values()
        .filter(|t| TYPES[**t].0 == parent)
        .map(|t| TYPES[*t].2)
        .sum();
    match parent {
        MBOCHS => (256 - used) / cost,
        MDPY => 4 - used,
        _ => (24 - used) / cost,
    }
}

#[derive(Debug, Clone)]
enum MdevOp {
    Create(usize, u8),
    Remove(u8),
}

fn mdev_op() -> impl Strategy<Value = MdevOp> {
    prop_oneof![
        3 => (0..TYPES.len(), 0u8..24).prop_map(|(t, u)| MdevOp::Create(t, u)),
        2 => (0u8..24).prop_map(MdevOp::Remove),
    ]
}

fn check_counts(h: &SimHost, live: &BTreeMap<String, usize>) -> Result<(), TestCaseError> {
    for (i, (parent, ty, _)) in TYPES.iter().enumerate() {
        let got: u64 = r(h, format!("{parent}/{ty}/available_instances"))
            .parse()
            .unwrap();
        prop_assert_eq!(got, model_available(live, i), "{} with {:?}", ty, live);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn mdev_pools_follow_the_rules_and_undo(ops in prop::collection::vec(mdev_op(), 1..40)) {
        let h = lab();
        let start = h.snapshot();
        let mut live: BTreeMap<String, usize> = BTreeMap::new();
        for op in ops {
            match op {
                MdevOp::Create(t, u) => {
                    let (parent, ty, _) = TYPES[t];
                    let id = uuid(u);
                    let want = if live.contains_key(&id) {
                        Some(EEXIST)
                    } else if model_available(&live, t) == 0 {
                        Some(if parent == MDPY { EUSERS } else { ENOSPC })
                    } else {
                        None
                    };
                    let got = werr(&h, format!("{parent}/{ty}/create"), id.as_bytes());
                    prop_assert_eq!(got, want, "create {} {}", ty, id);
                    if got.is_none() {
                        live.insert(id, t);
                    }
                }
                MdevOp::Remove(u) => {
                    let id = uuid(u);
                    let got = werr(&h, format!("/sys/bus/mdev/devices/{id}/remove"), b"1\n");
                    let want = if live.remove(&id).is_some() { None } else { Some(ENOENT) };
                    prop_assert_eq!(got, want, "remove {}", id);
                }
            }
            check_counts(&h, &live)?;
            // One /dev/vfio node per live mdev (the lab tree has no other VFIO user).
            let nodes = h_list(&h, "/dev/vfio").into_iter().filter(|n| n != "vfio").count();
            prop_assert_eq!(nodes, live.len());
        }
        for id in live.keys() {
            w(&h, format!("/sys/bus/mdev/devices/{id}/remove"), b"1").unwrap();
        }
        prop_assert!(start == h.snapshot(), "removing every mdev gives back the fixture");
    }
}

fn h_list(h: &SimHost, dir: &str) -> Vec<String> {
    use vm_device_host::prelude::*;
    h.list_dir(&p(dir)).unwrap_or_default()
}

const DEVS: &[(&str, &str)] = &[
    (DEV1, "0000:01:00.0"),
    (DEV2, "0000:02:00.0"),
    (DEV3, "0000:03:00.0"),
    (DEV61, "0000:06:01.0"),
    (DEV62, "0000:06:02.0"),
];

const DRIVERS: &[&str] = &["vfio-pci", "bochs-drm", "virtio-pci", "qxl", "nosuch-drv"];

#[derive(Debug, Clone)]
enum BindOp {
    Override(usize, Option<usize>),
    Unbind(usize),
    Probe(usize),
    Bind(usize, usize),
    NewId,
    RemoveId,
}

fn bind_op() -> impl Strategy<Value = BindOp> {
    let d = 0..DEVS.len();
    let drv = 0..DRIVERS.len();
    prop_oneof![
        3 => (d.clone(), prop::option::of(drv.clone())).prop_map(|(d, o)| BindOp::Override(d, o)),
        3 => d.clone().prop_map(BindOp::Unbind),
        3 => d.clone().prop_map(BindOp::Probe),
        2 => (d, drv).prop_map(|(d, x)| BindOp::Bind(d, x)),
        1 => Just(BindOp::NewId),
        1 => Just(BindOp::RemoveId),
    ]
}

/// The snapshot without DRM minors (rule 36 renumbers cards on rebind), plus the DRM node
/// count of each device.
fn without_drm(s: &Snapshot) -> (Snapshot, BTreeMap<String, usize>) {
    let mut rest = Snapshot::new();
    let mut per_dev = BTreeMap::new();
    for (k, v) in s {
        let ks = k.to_string_lossy();
        if ks.starts_with("/dev/dri/") || ks.starts_with("/sys/class/drm/") {
            continue;
        }
        if let Some(i) = ks.find("/drm/") {
            let dev = ks[..i].rsplit('/').next().unwrap_or_default().to_string();
            if ks[i + 5..].split('/').count() == 1 {
                *per_dev.entry(dev).or_insert(0) += 1;
            }
            continue;
        }
        rest.insert(PathBuf::from(k), v.clone());
    }
    (rest, per_dev)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn binding_sequences_undo_to_the_fixture(ops in prop::collection::vec(bind_op(), 1..30)) {
        let h = lab();
        let start = h.snapshot();
        for op in ops {
            // Refusals are part of the behaviour under test elsewhere; here any answer is
            // fine as long as the restore below gets the tree back.
            let _ = match op {
                BindOp::Override(d, o) => {
                    let v = o.map(|x| format!("{}\n", DRIVERS[x])).unwrap_or_else(|| "\n".into());
                    w(&h, format!("{}/driver_override", DEVS[d].0), v.as_bytes())
                }
                BindOp::Unbind(d) => w(&h, format!("{}/driver/unbind", DEVS[d].0), DEVS[d].1.as_bytes()),
                BindOp::Probe(d) => w(&h, PROBE, DEVS[d].1.as_bytes()),
                BindOp::Bind(d, x) => w(&h, format!("/sys/bus/pci/drivers/{}/bind", DRIVERS[x]), DEVS[d].1.as_bytes()),
                BindOp::NewId => w(&h, "/sys/bus/pci/drivers/vfio-pci/new_id", b"1234 1111\n"),
                BindOp::RemoveId => w(&h, "/sys/bus/pci/drivers/vfio-pci/remove_id", b"1234 1111\n"),
            };
            // Rule 20 at every step: a group has a node exactly while a member is on vfio-pci.
            for g in [7u32, 8, 9, 11] {
                let vfio_member = h.group_members(g).iter().any(|(_, d)| d.as_deref() == Some("vfio-pci"));
                prop_assert_eq!(exists(&h, &format!("/dev/vfio/{g}")), vfio_member, "group {}", g);
            }
        }
        // Restore: the id entry, then each device's override and native driver.
        let _ = w(&h, "/sys/bus/pci/drivers/vfio-pci/remove_id", b"1234 1111\n");
        for (dev, addr) in DEVS {
            let native = h.native_driver(addr);
            if driver(&h, dev) != native && driver(&h, dev).is_some() {
                w(&h, format!("{dev}/driver/unbind"), addr.as_bytes()).unwrap();
            }
            w(&h, format!("{dev}/driver_override"), b"\n").unwrap();
            w(&h, PROBE, addr.as_bytes()).unwrap();
            prop_assert_eq!(driver(&h, dev), native, "{}", addr);
        }
        let (want, want_drm) = without_drm(&start);
        let (got, got_drm) = without_drm(&h.snapshot());
        prop_assert!(want == got, "the tree outside DRM minors is the fixture's again");
        prop_assert_eq!(want_drm, got_drm);
        // Same set of DRM minors in use (which device holds which may differ: rule 36).
        let names = |s: &Snapshot| s.keys().filter(|k| k.starts_with("/dev/dri")).cloned().collect::<Vec<_>>();
        prop_assert_eq!(names(&start), names(&h.snapshot()));
    }
}
