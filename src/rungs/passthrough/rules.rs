//! The passthrough rung's rules, each written once: which members of an IOMMU group keep it
//! from being viable, which move to `vfio-pci` with a GPU, which processes must let go of
//! what moves, and every reason a GPU is refused.
//!
//! The rules read a small facts value, [`PassthroughFacts`]. The inventory-time probe
//! (`gpu list`, the ladder: [`super::probe()`]) fills it from a [`crate::inventory::HostInventory`];
//! the prepare-time re-check ([`super::plan_prepare`]) fills it from the live host just before
//! changing it. Both then ask [`judge`], so they cannot disagree; `gpu doctor` asks it too.
//!
//! # Group viability (what the kernel does)
//! VFIO hands out whole groups. Before Linux 5.19 `vfio_dev_viable` accepted a member that
//! is unbound, bound to a VFIO driver, bound to `pci-stub` (`vfio_driver_allowed`), or whose
//! PCI header is not a normal (type 0) header, i.e. a PCI-to-PCI or CardBus bridge, whatever
//! its driver. Since 5.19 the IOMMU core counts DMA owners: a member blocks when its driver
//! uses the kernel's DMA API; `vfio-pci`, `pci-stub` and the PCIe port driver (`pcieport`,
//! bound to bridges) set `driver_managed_dma` and do not. Both come to one rule,
//! [`leaves_group_viable`]: unbound, a VFIO driver, `pci-stub`, or a bridge header. Sysfs
//! shows the class, not the header type, so a bridge header is read from the class codes that
//! have one (0x0604 PCI-to-PCI, 0x0609 semi-transparent PCI-to-PCI: type 1; 0x0607 CardBus:
//! type 2). Host bridges (0x0600), ISA/LPC bridges (0x0601) and "other" bridges (0x0680) have
//! normal headers: on a driver (`lpc_ich`, …) they block, as the kernel says.
//!
//! # What moves
//! Preparing a GPU moves every endpoint of its group that the host can give up without losing
//! a device it uses:
//! - the GPU and its companions on the same slot (HDMI audio, USB-C, UCSI);
//! - other display functions of the group (and their companions), unless one is the boot
//!   display (without `--allow-boot-vga`) or parents mdevs / VFs: a group of two GPUs
//!   behind a bridge moves as a pair, whichever of the two is named;
//! - bridges are never touched, members already on a VFIO driver or `pci-stub` need
//!   nothing, and unbound non-GPU members are left unbound (they do not block).
//!
//! Any other endpoint bound to a host driver (storage, network, USB, …) blocks: moving it
//! would take it from the host, so passthrough is refused and the member is named with its
//! driver.
//!
//! # Holders
//! Unbinding a driver blocks while a process holds one of the device's nodes. The nodes of a
//! function are its DRM nodes and, on the `nvidia` driver, its `/dev/nvidiaN`
//! ([`crate::inventory::device_nodes`], keyed on the bound driver, not the vendor: a GPU of
//! NVIDIA on `nouveau` has only DRM nodes). The nodes that must be free are those of every
//! member that moves ([`nodes_to_free`]).

use std::path::PathBuf;

use serde::Serialize;
use vm_device_host::{PciAddress, ProcessHolder};

use crate::inventory::{is_companion_class, IommuKind};
use crate::ladder::{attr_evidence, Reason, ReasonCode};

/// The VFIO driver every moved device ends up on.
pub const VFIO_PCI: &str = "vfio-pci";

/// A VFIO driver: `vfio-pci`, a vendor variant built on `vfio-pci-core`
/// (`mlx5_vfio_pci`, `nvgrace_gpu_vfio_pci`, …) or an mdev's VFIO driver.
pub fn is_vfio_driver(driver: &str) -> bool {
    driver.contains("vfio")
}

/// A class code whose function has a bridge (type 1 or type 2) PCI header: PCI-to-PCI
/// (0x0604), semi-transparent PCI-to-PCI (0x0609), CardBus (0x0607).
pub fn has_bridge_header(class: u32) -> bool {
    matches!(class >> 8, 0x0604 | 0x0607 | 0x0609)
}

/// True when a member of class `class` on `driver` leaves its IOMMU group viable: unbound,
/// on a VFIO driver, on `pci-stub`, or a bridge (see the module's notes for the kernel's
/// rule).
pub fn leaves_group_viable(class: Option<u32>, driver: Option<&str>) -> bool {
    match driver {
        None => true,
        Some(d) => is_vfio_driver(d) || d == "pci-stub" || class.is_some_and(has_bridge_header),
    }
}

/// True when passing through a function that is (`boot_vga`) or is not the boot display,
/// on `driver`, would take the host's console: it is the boot display, not already on a
/// VFIO driver (then the host has given it up already), and `--allow-boot-vga` is not set.
pub fn takes_the_console(boot_vga: bool, driver: Option<&str>, allow_boot_vga: bool) -> bool {
    boot_vga && !allow_boot_vga && !driver.is_some_and(is_vfio_driver)
}

/// What the rules need to know about one PCI function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceFacts {
    /// Address.
    pub address: PciAddress,
    /// Class code, when known.
    pub class: Option<u32>,
    /// Bound driver.
    pub driver: Option<String>,
    /// Boot display (`boot_vga` = 1).
    pub boot_vga: bool,
    /// UUIDs of the active mediated devices it parents.
    pub mdevs: Vec<String>,
    /// Enabled SR-IOV virtual functions.
    pub vfs: u32,
    /// Name for messages (`Intel Corporation SATA controller`), without the address.
    pub name: String,
    /// Device nodes through which host processes use it.
    pub device_nodes: Vec<PathBuf>,
}

impl DeviceFacts {
    fn base_class(&self) -> Option<u32> {
        self.class.map(|c| c >> 16)
    }
    fn is_display(&self) -> bool {
        self.base_class() == Some(0x03)
    }
    fn is_bridge(&self) -> bool {
        self.class.is_some_and(has_bridge_header)
    }
    fn is_companion(&self) -> bool {
        self.class.is_some_and(is_companion_class)
    }
    fn on_vfio(&self) -> bool {
        self.driver.as_deref().is_some_and(is_vfio_driver)
    }
}

/// Everything the rules decide on for one GPU with an IOMMU group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassthroughFacts {
    /// The GPU asked for.
    pub gpu: PciAddress,
    /// Its IOMMU group.
    pub group: u32,
    /// Every PCI function of the group, the GPU included.
    pub members: Vec<DeviceFacts>,
    /// Host processes holding device nodes of members (more is harmless: the rules keep
    /// those of the nodes that must be free).
    pub holders: Vec<ProcessHolder>,
}

impl PassthroughFacts {
    /// The facts of the GPU itself.
    pub fn target(&self) -> Option<&DeviceFacts> {
        self.members.iter().find(|m| m.address == self.gpu)
    }

    fn member(&self, a: &PciAddress) -> Option<&DeviceFacts> {
        self.members.iter().find(|m| m.address == *a)
    }
}

/// What a member is to the prepare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The GPU asked for.
    Target,
    /// A function on the GPU's slot (HDMI audio, USB-C, UCSI).
    Companion,
    /// Another display function sharing the group.
    GroupPeer,
    /// A companion of a group peer.
    PeerCompanion,
    /// A bridge: never touched.
    Bridge,
    /// Already on `vfio-pci` (or another VFIO driver).
    AlreadyVfio,
    /// On `pci-stub`: harmless to VFIO, left there.
    Stub,
    /// No driver and not a GPU function: does not block, left unbound.
    Unbound,
}

/// Why an endpoint on a host driver blocks its group: VFIO needs every endpoint of a group.
pub const IN_USE: &str = "in use by the host";

/// A member that keeps the group from being passed through.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Blocker {
    /// Address.
    pub address: PciAddress,
    /// Name (without the address).
    pub name: String,
    /// Its driver.
    pub driver: Option<String>,
    /// Why it cannot move.
    pub why: String,
}

impl Blocker {
    /// The driver part of a message: `ahci`, `i915 (the boot display shares the group …)`,
    /// `no driver (…)`; the plain "in use by the host" is what the messages around say.
    pub fn driver_text(&self) -> String {
        match (&self.driver, self.why == IN_USE) {
            (Some(d), true) => d.clone(),
            (Some(d), false) => format!("{d} ({})", self.why),
            (None, _) => format!("no driver ({})", self.why),
        }
    }

    /// `0000:00:1f.2 (Intel Corporation SATA controller) on ahci`.
    pub fn describe(&self) -> String {
        format!("{} ({}) on {}", self.address, self.name, self.driver_text())
    }
}

/// The decision for one group.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GroupClassification {
    /// Members to move to `vfio-pci`, target first.
    pub moved: Vec<(PciAddress, Role)>,
    /// Members left as they are.
    pub left: Vec<(PciAddress, Role)>,
    /// Members that block.
    pub blockers: Vec<Blocker>,
}

/// Classifies the members of `target`'s group (`members` includes the target).
pub fn classify(
    target: PciAddress,
    members: &[DeviceFacts],
    allow_boot_vga: bool,
) -> GroupClassification {
    let mut out = GroupClassification::default();
    let same_slot = |a: &PciAddress, b: &PciAddress| a.same_slot(b);
    // Display functions that can move with the target (the target always counts here; its
    // own refusals are decided by [`judge`] with their own reason codes).
    let movable_display: Vec<PciAddress> = members
        .iter()
        .filter(|m| m.is_display())
        .filter(|m| m.address == target || (peer_refusal(m, allow_boot_vga).is_none()))
        .map(|m| m.address)
        .collect();
    let mut ordered: Vec<&DeviceFacts> = members.iter().collect();
    ordered.sort_by_key(|m| (m.address != target, m.address));
    for m in ordered {
        let role = if m.address == target {
            Role::Target
        } else if m.is_bridge() {
            out.left.push((m.address, Role::Bridge));
            continue;
        } else if m.is_display() {
            if let Some(why) = peer_refusal(m, allow_boot_vga) {
                out.blockers.push(Blocker {
                    address: m.address,
                    name: m.name.clone(),
                    driver: m.driver.clone(),
                    why,
                });
                continue;
            }
            Role::GroupPeer
        } else if m.is_companion() && same_slot(&m.address, &target) {
            Role::Companion
        } else if m.is_companion() && movable_display.iter().any(|d| same_slot(d, &m.address)) {
            Role::PeerCompanion
        } else {
            match m.driver.as_deref() {
                Some(d) if is_vfio_driver(d) => out.left.push((m.address, Role::AlreadyVfio)),
                Some("pci-stub") => out.left.push((m.address, Role::Stub)),
                None => out.left.push((m.address, Role::Unbound)),
                Some(_) => out.blockers.push(Blocker {
                    address: m.address,
                    name: m.name.clone(),
                    driver: m.driver.clone(),
                    why: IN_USE.into(),
                }),
            }
            continue;
        };
        match m.driver.as_deref() {
            Some(VFIO_PCI) => out.left.push((m.address, Role::AlreadyVfio)),
            _ => out.moved.push((m.address, role)),
        }
    }
    out
}

fn peer_refusal(m: &DeviceFacts, allow_boot_vga: bool) -> Option<String> {
    if m.on_vfio() {
        return None;
    }
    if takes_the_console(m.boot_vga, m.driver.as_deref(), allow_boot_vga) {
        return Some(
            "the boot display shares the group (pass --allow-boot-vga to move it too)".into(),
        );
    }
    if !m.mdevs.is_empty() {
        return Some(format!(
            "a GPU in the group parents {} active mediated device(s)",
            m.mdevs.len()
        ));
    }
    if m.vfs > 0 {
        return Some(format!(
            "a GPU in the group has {} SR-IOV virtual function(s) enabled",
            m.vfs
        ));
    }
    None
}

/// The device nodes that must be free before the moved members are unbound: every node of
/// every member that moves.
pub fn nodes_to_free(facts: &PassthroughFacts, class: &GroupClassification) -> Vec<PathBuf> {
    class
        .moved
        .iter()
        .filter_map(|(a, _)| facts.member(a))
        .flat_map(|m| m.device_nodes.iter().cloned())
        .collect()
}

/// The host processes holding nodes of members that move, member by member (the GPU first),
/// each once.
pub fn holders_of_moved<'f>(
    facts: &'f PassthroughFacts,
    class: &GroupClassification,
) -> Vec<&'f ProcessHolder> {
    let mut out: Vec<&ProcessHolder> = Vec::new();
    for m in class.moved.iter().filter_map(|(a, _)| facts.member(a)) {
        for h in facts
            .holders
            .iter()
            .filter(|h| m.device_nodes.contains(&h.path))
        {
            if !out.contains(&h) {
                out.push(h);
            }
        }
    }
    out
}

/// The rules' answer for one GPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judgement {
    /// How each member of the group is treated.
    pub classification: GroupClassification,
    /// Every reason the GPU cannot be passed through, the one to fix first first (empty:
    /// it can).
    pub reasons: Vec<Reason>,
}

/// Judges `facts`: the refusals (the GPU is no display function; the boot display unless
/// allowed or already on VFIO; active mediated devices; enabled VFs; a group shared with
/// devices the host uses; host processes holding nodes of what would move: unbinding would
/// hang on them), and how every member is treated.
pub fn judge(facts: &PassthroughFacts, allow_boot_vga: bool) -> Judgement {
    let addr = facts.gpu;
    let group = facts.group;
    let classification = classify(addr, &facts.members, allow_boot_vga);
    let Some(t) = facts.target() else {
        return Judgement {
            classification,
            reasons: vec![Reason::new(
                ReasonCode::UnreadableState,
                format!("{addr} is not listed in IOMMU group {group}"),
            )
            .evidence(format!("/sys/kernel/iommu_groups/{group}/devices"))],
        };
    };
    if !t.is_display() {
        let class = t
            .class
            .map_or("unknown".to_string(), |c| format!("0x{c:06x}"));
        return Judgement {
            classification,
            reasons: vec![Reason::new(
                ReasonCode::DeviceNotFound,
                format!("{addr} ({}) is not a GPU (class {class})", t.name),
            )
            .evidence(format!("/sys/bus/pci/devices/{addr}/class = {class}"))
            .remedy("pick a GPU from `vm-cli gpu list`")],
        };
    }
    let mut out = Vec::new();
    if takes_the_console(t.boot_vga, t.driver.as_deref(), allow_boot_vga) {
        out.push(
            Reason::new(
                ReasonCode::BootDisplay,
                format!("{addr} is the boot display: the host would lose its console"),
            )
            .evidence(attr_evidence(&addr, "boot_vga", "1"))
            .remedy("use another GPU, or pass --allow-boot-vga if the host can run without a local display"),
        );
    }
    if !t.mdevs.is_empty() {
        out.push(
            Reason::new(
                ReasonCode::ActiveMdevs,
                format!("{addr} parents {} active mediated device(s)", t.mdevs.len()),
            )
            .evidence(format!("/sys/bus/mdev/devices: {}", t.mdevs.join(", ")))
            .remedy("stop the VMs using them and remove them (`vm-cli gpu release`, or `mdevctl stop --uuid UUID`)"),
        );
    }
    if t.vfs > 0 {
        out.push(
            Reason::new(
                ReasonCode::VfsEnabled,
                format!("{addr} has {} SR-IOV virtual function(s) enabled", t.vfs),
            )
            .evidence(attr_evidence(&addr, "sriov_numvfs", &t.vfs.to_string()))
            .remedy(format!(
                "echo 0 | sudo tee /sys/bus/pci/devices/{addr}/sriov_numvfs"
            )),
        );
    }
    if !classification.blockers.is_empty() {
        let list: Vec<String> = classification
            .blockers
            .iter()
            .map(Blocker::describe)
            .collect();
        out.push(
            Reason::new(
                ReasonCode::GroupNotViable,
                format!(
                    "IOMMU group {group} also holds devices the host is using (VFIO takes every endpoint of a group): {}",
                    list.join("; ")
                ),
            )
            .evidence(format!("/sys/kernel/iommu_groups/{group}/devices"))
            .remedy("move the GPU to a slot with its own IOMMU group (a CPU-attached slot, or a board with ACS), or stop using those devices on the host"),
        );
    }
    let held = holders_of_moved(facts, &classification);
    if !held.is_empty() {
        out.push(held_open(&held));
    }
    Judgement {
        classification,
        reasons: out,
    }
}

/// The refusal when host processes hold device nodes of the devices a prepare would move:
/// unbinding their driver would block until they close them.
pub fn held_open(holders: &[&ProcessHolder]) -> Reason {
    let who: Vec<String> = holders
        .iter()
        .map(|h| format!("pid {} ({}) holds {}", h.pid, h.comm, h.path.display()))
        .collect();
    let mut r = Reason::new(
        ReasonCode::HeldOpen,
        format!("host processes use the device: {}", who.join("; ")),
    );
    for h in holders {
        r = r.evidence(format!("/proc/{}/fd -> {}", h.pid, h.path.display()));
    }
    r.remedy("stop those programs (a display server or compute job), or log out of the graphical session, then retry")
}

/// The refusal for a GPU without an IOMMU group while the IOMMU is on; `kind` (when known)
/// names the kernel log to read.
pub fn no_iommu_group(addr: &PciAddress, kind: Option<IommuKind>) -> Reason {
    Reason::new(
        ReasonCode::NoIommuGroup,
        format!("{addr} has no IOMMU group although the IOMMU is on"),
    )
    .evidence(format!(
        "/sys/bus/pci/devices/{addr}/iommu_group is missing"
    ))
    .remedy(match kind {
        Some(IommuKind::AmdVi) => {
            "check `dmesg | grep -i AMD-Vi` for devices the IOMMU does not cover"
        }
        _ => "check `dmesg | grep -i DMAR` for devices the IOMMU does not cover",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(addr: &str, class: u32, driver: Option<&str>) -> DeviceFacts {
        DeviceFacts {
            address: addr.parse().unwrap(),
            class: Some(class),
            driver: driver.map(str::to_string),
            boot_vga: false,
            mdevs: Vec::new(),
            vfs: 0,
            name: format!("class {class:06x}"),
            device_nodes: Vec::new(),
        }
    }

    fn a(s: &str) -> PciAddress {
        s.parse().unwrap()
    }

    #[test]
    fn gpu_and_hdmi_audio_move_together() {
        let c = classify(
            a("0000:01:00.0"),
            &[
                m("0000:01:00.0", 0x030000, Some("nouveau")),
                m("0000:01:00.1", 0x040300, Some("snd_hda_intel")),
            ],
            false,
        );
        assert_eq!(
            c.moved,
            vec![
                (a("0000:01:00.0"), Role::Target),
                (a("0000:01:00.1"), Role::Companion)
            ]
        );
        assert!(c.blockers.is_empty());
    }

    #[test]
    fn two_gpus_behind_a_bridge_move_as_a_pair_and_the_bridge_stays() {
        let members = [
            m("0000:05:00.0", 0x060400, None),
            m("0000:06:01.0", 0x038000, Some("bochs-drm")),
            m("0000:06:02.0", 0x038000, Some("bochs-drm")),
        ];
        let c = classify(a("0000:06:02.0"), &members, false);
        assert_eq!(
            c.moved,
            vec![
                (a("0000:06:02.0"), Role::Target),
                (a("0000:06:01.0"), Role::GroupPeer)
            ]
        );
        assert_eq!(c.left, vec![(a("0000:05:00.0"), Role::Bridge)]);
    }

    #[test]
    fn a_storage_controller_on_its_driver_blocks_and_is_named_with_it() {
        let c = classify(
            a("0000:00:1f.0"),
            &[
                m("0000:00:1f.0", 0x030000, Some("i915")),
                m("0000:00:1f.2", 0x010601, Some("ahci")),
            ],
            false,
        );
        assert_eq!(c.blockers.len(), 1);
        assert_eq!(c.blockers[0].driver.as_deref(), Some("ahci"));
        assert!(c.blockers[0].describe().contains("on ahci"));
    }

    #[test]
    fn a_boot_vga_peer_blocks_unless_allowed() {
        let mut vga = m("0000:06:02.0", 0x030000, Some("bochs-drm"));
        vga.boot_vga = true;
        let members = [m("0000:06:01.0", 0x038000, Some("bochs-drm")), vga];
        assert_eq!(
            classify(a("0000:06:01.0"), &members, false).blockers.len(),
            1
        );
        let allowed = classify(a("0000:06:01.0"), &members, true);
        assert!(allowed.blockers.is_empty());
        assert_eq!(allowed.moved.len(), 2);
    }

    #[test]
    fn members_already_on_vfio_and_unbound_non_gpus_are_left_alone() {
        let c = classify(
            a("0000:01:00.0"),
            &[
                m("0000:01:00.0", 0x030000, Some("vfio-pci")),
                m("0000:01:00.1", 0x040300, Some("vfio-pci")),
                m("0000:02:00.0", 0x0c0500, None),
            ],
            false,
        );
        assert!(c.moved.is_empty());
        assert!(c.blockers.is_empty());
        assert_eq!(c.left.len(), 3);
    }

    /// A member on a vendor VFIO driver (built on vfio-pci-core) is a VFIO device: the
    /// group stays viable. Only `vfio-pci` itself was accepted before.
    #[test]
    fn a_member_on_a_vendor_vfio_driver_leaves_the_group_viable() {
        let c = classify(
            a("0000:01:00.0"),
            &[
                m("0000:01:00.0", 0x030000, Some("nouveau")),
                m("0000:02:00.0", 0x020000, Some("mlx5_vfio_pci")),
            ],
            false,
        );
        assert!(c.blockers.is_empty(), "{:?}", c.blockers);
        assert_eq!(c.left, vec![(a("0000:02:00.0"), Role::AlreadyVfio)]);
    }

    /// Bridges are the functions with a bridge header, not every class 0x06 function: an
    /// ISA/LPC or host bridge on a driver blocks like any endpoint.
    #[test]
    fn only_bridge_headers_are_bridges() {
        let gpu = m("0000:01:00.0", 0x030000, Some("nouveau"));
        let blocks = |member: DeviceFacts| {
            !classify(gpu.address, &[gpu.clone(), member], false)
                .blockers
                .is_empty()
        };
        assert!(!blocks(m("0000:00:1c.0", 0x060400, Some("pcieport"))));
        assert!(!blocks(m("0000:00:1e.0", 0x060401, Some("shpchp"))));
        assert!(!blocks(m("0000:00:1e.1", 0x060700, Some("yenta_cardbus"))));
        assert!(!blocks(m("0000:00:00.0", 0x060000, None)));
        assert!(blocks(m("0000:00:1f.0", 0x060100, Some("lpc_ich"))));
        assert!(blocks(m("0000:00:00.0", 0x060000, Some("skx_uncore"))));
        assert!(!leaves_group_viable(Some(0x068000), Some("amd_pmc")));
        assert!(leaves_group_viable(Some(0x010601), Some("pci-stub")));
        assert!(leaves_group_viable(Some(0x010601), None));
    }

    #[test]
    fn the_boot_display_is_refused_unless_allowed_or_already_on_vfio() {
        let mut gpu = m("0000:01:00.0", 0x030000, Some("i915"));
        gpu.boot_vga = true;
        let facts = |g: &DeviceFacts| PassthroughFacts {
            gpu: g.address,
            group: 1,
            members: vec![g.clone()],
            holders: Vec::new(),
        };
        let codes = |f: &PassthroughFacts, allow| -> Vec<ReasonCode> {
            judge(f, allow).reasons.iter().map(|r| r.code).collect()
        };
        assert_eq!(codes(&facts(&gpu), false), vec![ReasonCode::BootDisplay]);
        assert!(codes(&facts(&gpu), true).is_empty());
        gpu.driver = Some(VFIO_PCI.into());
        assert!(codes(&facts(&gpu), false).is_empty());
    }
}
