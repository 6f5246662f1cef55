//! What the user asked for that narrows every rung's candidates.

use vm_device_host::PciAddress;

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

/// `path = value` evidence for a device attribute (the form every rung's reasons use).
pub fn attr_evidence(addr: &PciAddress, attr: &str, value: &str) -> String {
    format!("/sys/bus/pci/devices/{addr}/{attr} = {value}")
}
