//! Which members of an IOMMU group move to `vfio-pci` with a GPU, which are left alone, and
//! which block passthrough. Pure, so the passthrough rung (`gpu list`) and `gpu prepare`
//! decide the same way.
//!
//! VFIO hands out whole groups: a group is viable when every endpoint is unbound or on a
//! VFIO driver (kernel notes, rule 23). So preparing a GPU moves every endpoint of its group
//! that the host can give up without losing a device it uses:
//! - the GPU and its companions on the same slot (HDMI audio, USB-C, UCSI);
//! - other display functions of the group (and their companions), unless one is the boot
//!   display (without `--allow-boot-vga`) or parents mdevs / VFs: a group of two GPUs
//!   behind a bridge moves as a pair, whichever of the two is named;
//! - bridges are never touched, members already on `vfio-pci` or `pci-stub` need nothing,
//!   and unbound non-GPU members are left unbound (they do not block).
//!
//! Any other endpoint bound to a host driver (storage, network, USB, …) blocks: moving it
//! would take it from the host, so passthrough is refused and the member is named with its
//! driver.

use serde::Serialize;
use vm_device_host::PciAddress;

use crate::inventory::is_companion_class;

/// Drivers a group member may be on without blocking VFIO (rule 23 of the kernel notes).
pub const VFIO_SAFE_DRIVERS: [&str; 2] = ["vfio-pci", "pci-stub"];

/// The facts classification needs about one group member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberFacts {
    /// Address.
    pub address: PciAddress,
    /// Class code, when known.
    pub class: Option<u32>,
    /// Bound driver.
    pub driver: Option<String>,
    /// Boot display.
    pub boot_vga: bool,
    /// Active mdevs it parents.
    pub active_mdevs: usize,
    /// Enabled SR-IOV virtual functions.
    pub vfs: u32,
    /// Name for messages (`0000:00:1f.2 (SATA controller)`).
    pub label: String,
}

impl MemberFacts {
    fn base_class(&self) -> Option<u32> {
        self.class.map(|c| c >> 16)
    }
    fn is_display(&self) -> bool {
        self.base_class() == Some(0x03)
    }
    fn is_bridge(&self) -> bool {
        self.base_class() == Some(0x06)
    }
    fn is_companion(&self) -> bool {
        self.class.is_some_and(is_companion_class)
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
    /// Already on `vfio-pci`.
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
    /// Name.
    pub label: String,
    /// Its driver.
    pub driver: Option<String>,
    /// Why it cannot move.
    pub why: String,
}

impl Blocker {
    /// `0000:00:1f.2 (SATA controller) on ahci: in use by the host`.
    pub fn describe(&self) -> String {
        match &self.driver {
            Some(d) => format!("{} on {d}: {}", self.label, self.why),
            None => format!("{}: {}", self.label, self.why),
        }
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
    members: &[MemberFacts],
    allow_boot_vga: bool,
) -> GroupClassification {
    let mut out = GroupClassification::default();
    let same_slot = |a: &PciAddress, b: &PciAddress| a.same_slot(b);
    // Display functions that can move with the target (the target always counts here; its
    // own refusals are decided by the caller with their own reason codes).
    let movable_display: Vec<PciAddress> = members
        .iter()
        .filter(|m| m.is_display())
        .filter(|m| m.address == target || (peer_refusal(m, allow_boot_vga).is_none()))
        .map(|m| m.address)
        .collect();
    let mut ordered: Vec<&MemberFacts> = members.iter().collect();
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
                    label: m.label.clone(),
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
                Some("vfio-pci") => {
                    out.left.push((m.address, Role::AlreadyVfio));
                }
                Some("pci-stub") => out.left.push((m.address, Role::Stub)),
                None => out.left.push((m.address, Role::Unbound)),
                Some(_) => out.blockers.push(Blocker {
                    address: m.address,
                    label: m.label.clone(),
                    driver: m.driver.clone(),
                    why: IN_USE.into(),
                }),
            }
            continue;
        };
        match m.driver.as_deref() {
            Some("vfio-pci") => out.left.push((m.address, Role::AlreadyVfio)),
            _ => out.moved.push((m.address, role)),
        }
    }
    out
}

fn peer_refusal(m: &MemberFacts, allow_boot_vga: bool) -> Option<String> {
    if m.driver.as_deref() == Some("vfio-pci") {
        return None;
    }
    if m.boot_vga && !allow_boot_vga {
        return Some(
            "the boot display shares the group (pass --allow-boot-vga to move it too)".into(),
        );
    }
    if m.active_mdevs > 0 {
        return Some(format!(
            "a GPU in the group parents {} active mediated device(s)",
            m.active_mdevs
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

#[cfg(test)]
mod tests {
    use super::*;

    fn m(addr: &str, class: u32, driver: Option<&str>) -> MemberFacts {
        MemberFacts {
            address: addr.parse().unwrap(),
            class: Some(class),
            driver: driver.map(str::to_string),
            boot_vga: false,
            active_mdevs: 0,
            vfs: 0,
            label: addr.to_string(),
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
}
