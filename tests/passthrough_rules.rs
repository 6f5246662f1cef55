//! The passthrough rules (`rungs::passthrough::rules`) on every fixture: the inventory-time
//! probe (`gpu list`, the ladder) and the prepare-time re-check (`gpu prepare`) feed them the
//! same facts, so they judge every GPU alike; and the cases where the copies of a rule used
//! to disagree, each on a modified copy of a fixture.

use std::path::{Path, PathBuf};

use serde_json::Value;
use vm_device::gpu_passthrough::{plan_prepare, PassthroughError};
use vm_device::host::SimHost;
use vm_device::inventory::HostInventory;
use vm_device::ladder::{Filter, ReasonCode, Target};
use vm_device::rungs::passthrough::{prepare, probe, read_facts, rules, PrepareOptions, VFIO_PCI};
use vm_device_host::PciAddress;

const Q35: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/real/qemu-q35-viommu");

fn fixtures() -> Vec<PathBuf> {
    let mut out = vec![PathBuf::from(Q35)];
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/hosts");
    let mut more: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|r| r.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    more.sort();
    out.extend(more);
    out
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/hosts")
        .join(name)
}

fn a(s: &str) -> PciAddress {
    s.parse().unwrap()
}

/// A writable copy of a fixture.
fn copy(fx: &Path) -> tempfile::TempDir {
    let tree = tempfile::tempdir().unwrap();
    vm_device_sim::copy_fixture(fx, tree.path()).unwrap();
    tree
}

/// The directory of `addr` in a host tree.
fn dev_dir(tree: &Path, addr: &str) -> PathBuf {
    tree.join("sys/bus/pci/devices")
        .join(addr)
        .canonicalize()
        .unwrap()
}

/// Unbinds `addr` in a host tree (as if its driver were never loaded for it).
fn unbind(tree: &Path, addr: &str, driver: &str) {
    std::fs::remove_file(dev_dir(tree, addr).join("driver")).unwrap();
    std::fs::remove_file(tree.join("sys/bus/pci/drivers").join(driver).join(addr)).unwrap();
}

/// Adds a process `comm` (pid `pid`) holding `node` to a host tree.
fn hold(tree: &Path, pid: u32, comm: &str, node: &str) {
    let fd = tree.join(format!("proc/{pid}/fd"));
    std::fs::create_dir_all(&fd).unwrap();
    std::os::unix::fs::symlink(node, fd.join("7")).unwrap();
    std::fs::write(tree.join(format!("proc/{pid}/comm")), format!("{comm}\n")).unwrap();
}

#[test]
fn probe_and_prepare_feed_the_rules_the_same_facts_on_every_fixture() {
    let mut compared = 0;
    for fx in fixtures() {
        let h = SimHost::from_fixture(&fx).unwrap();
        let inv = HostInventory::scan(&h);
        for allow_boot_vga in [false, true] {
            let filter = Filter {
                allow_boot_vga,
                ..Filter::default()
            };
            for c in probe::probe(&inv, &filter) {
                let Target::Gpu { address, .. } = c.target else {
                    continue;
                };
                let ctx = format!("{} {address} allow_boot_vga={allow_boot_vga}", fx.display());
                // The same judgement from both feeds, reason for reason, text included.
                if let (Some(scanned), Ok(live)) =
                    (probe::facts(&inv, &address), read_facts(&h, &address))
                {
                    let (s, l) = (
                        rules::judge(&scanned, allow_boot_vga),
                        rules::judge(&live, allow_boot_vga),
                    );
                    assert_eq!(s.reasons, l.reasons, "{ctx}");
                    assert_eq!(s.classification, l.classification, "{ctx}");
                }
                // And what the probe tells `gpu list` is what `gpu prepare` refuses with.
                match (c.reasons(), plan_prepare(&h, &address, allow_boot_vga)) {
                    ([], Ok(_)) => {}
                    (rs, Err(PassthroughError::Refused { reasons, .. })) if !rs.is_empty() => {
                        // Evidence says where the facts came from (a scan, or the link
                        // read just now); the rest is the rules' and must be equal.
                        let strip = |r: &[vm_device::ladder::Reason]| {
                            r.iter()
                                .map(|r| (r.code, r.message.clone(), r.remedy.clone()))
                                .collect::<Vec<_>>()
                        };
                        assert_eq!(strip(rs), strip(&reasons), "{ctx}")
                    }
                    (rs, p) => panic!("{ctx}: rung {rs:?}, prepare {p:?}"),
                }
                compared += 1;
            }
        }
    }
    assert!(compared >= 20, "only {compared} GPUs compared");
}

/// An ISA (LPC) bridge has a normal PCI header: bound to its driver it keeps the group from
/// being viable, as the kernel says (`vfio_dev_viable` before 5.19, DMA ownership since).
/// The probe and prepare took every class 0x06 function for a bridge and called this group
/// viable; only `vfio_smoke`'s hint (0x0604 only) named it.
#[test]
fn an_isa_bridge_on_its_driver_keeps_the_group_from_being_viable() {
    let tree = copy(&fixture("shared-group-host-devices"));
    // Group 7: root ports (pcieport), a NIC, a SATA controller and the GPU with its audio.
    // The NIC let go, the SATA function made an ISA bridge on its driver.
    unbind(tree.path(), "0000:02:00.0", "r8169");
    std::fs::write(
        dev_dir(tree.path(), "0000:03:00.0").join("class"),
        "0x060100\n",
    )
    .unwrap();
    let h = SimHost::from_fixture(tree.path()).unwrap();
    let inv = HostInventory::scan(&h);
    let gpu = a("0000:04:00.0");
    let c = probe::probe(
        &inv,
        &Filter {
            device: Some(gpu),
            allow_boot_vga: true,
            ..Filter::default()
        },
    );
    let r = c[0].reason().expect("the group is not viable");
    assert_eq!(r.code, ReasonCode::GroupNotViable, "{r:?}");
    assert!(r.message.contains("0000:03:00.0"), "{}", r.message);
    assert!(r.message.contains("ahci"), "{}", r.message);
    assert!(
        !r.message.contains("0000:00:1c."),
        "root ports on pcieport never block: {}",
        r.message
    );
    match plan_prepare(&h, &gpu, true) {
        Err(PassthroughError::Refused { reasons, .. }) => {
            assert_eq!(reasons[0].code, ReasonCode::GroupNotViable)
        }
        other => panic!("prepare must refuse: {other:?}"),
    }
    // VFIO's own hint names it too (with the GPU and its audio, still on their drivers),
    // and never the root ports.
    let blocking = vm_device::rungs::passthrough::smoke::blocking_members(&h, 7);
    assert!(
        blocking.contains(&("0000:03:00.0".to_string(), "ahci".to_string())),
        "{blocking:?}"
    );
    assert!(
        !blocking.iter().any(|(n, _)| n.starts_with("0000:00:1c.")),
        "{blocking:?}"
    );
}

/// A boot display already on vfio-pci (prepared with `--allow-boot-vga` and kept) has been
/// given up by the host: passing it through takes no console. `gpu prepare` knew it; the
/// probe refused it again, so the ladder would not choose a GPU ready for it.
#[test]
fn a_boot_display_already_on_vfio_pci_is_not_refused_again() {
    let h = SimHost::from_fixture(Path::new(Q35)).unwrap();
    let state = tempfile::tempdir().unwrap();
    let gpu = a("0000:02:00.0");
    let p = prepare(
        &h,
        &gpu,
        &PrepareOptions {
            allow_boot_vga: true,
            state_dir: state.path().into(),
        },
    )
    .unwrap();
    p.detach().unwrap();
    let inv = HostInventory::scan(&h);
    let f = inv.function(&gpu).unwrap();
    assert_eq!(f.driver.as_deref(), Some(VFIO_PCI));
    assert_eq!(f.boot_vga, Some(true));
    let c = probe::probe(
        &inv,
        &Filter {
            device: Some(gpu),
            ..Filter::default()
        },
    );
    assert_eq!(c[0].reasons(), &[], "{:?}", c[0].reasons());
    assert!(plan_prepare(&h, &gpu, false).is_ok());
}

fn doctor_check(host: &Path, id: &str) -> Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vm-cli"))
        .arg("--host-root")
        .arg(host)
        .args(["gpu", "doctor", "--json"])
        .env_remove("WGPU_BACKEND")
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check {id}"))
        .clone()
}

/// Two GPUs of one group move together, so a process holding the other GPU's card would
/// hang the prepare: the probe refused, but `gpu doctor` looked at the named GPU's nodes
/// only and said nothing holds them.
#[test]
fn doctor_checks_the_holders_of_every_device_that_would_move() {
    // The lab recording has DRM nodes: 06:01.0 is card2, 06:02.0 card3 (group 11, behind
    // a bridge).
    let tree = copy(&fixture("qemu-q35-viommu-lab"));
    hold(tree.path(), 4242, "Xorg", "/dev/dri/card3");
    let h = SimHost::from_fixture(tree.path()).unwrap();
    let inv = HostInventory::scan(&h);
    let c = probe::probe(
        &inv,
        &Filter {
            device: Some(a("0000:06:01.0")),
            ..Filter::default()
        },
    );
    assert_eq!(c[0].reason().map(|r| r.code), Some(ReasonCode::HeldOpen));
    let check = doctor_check(tree.path(), "gpu.0000:06:01.0.holders");
    assert_eq!(check["status"], "fail", "{check:#}");
    assert!(
        check["title"].as_str().unwrap().contains("pid 4242"),
        "{check:#}"
    );
}
