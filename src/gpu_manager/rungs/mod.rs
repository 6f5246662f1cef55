//! Per-rung probes: pure functions from the inventory (and, for wgpu, the adapter list) to
//! candidates. Every rung answers at least one candidate: when it has nothing, one
//! [`Target::Nothing`](super::Target::Nothing) entry says why.

pub mod mdev;
pub mod passthrough;
pub mod wgpu;

use vm_passthrough::PciAddress;

/// What the user asked for that narrows the candidates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// `--gpu-device`: only this GPU (as passthrough target, mdev/VF parent, adapter).
    pub device: Option<PciAddress>,
    /// `--mdev-type`: type id or name for the mediated rung.
    pub mdev_type: Option<String>,
    /// `--allow-boot-vga`: the boot display may be passed through.
    pub allow_boot_vga: bool,
}

/// `path = value` evidence for a device attribute.
pub(crate) fn attr_evidence(addr: &PciAddress, attr: &str, value: &str) -> String {
    format!("/sys/bus/pci/devices/{addr}/{attr} = {value}")
}
