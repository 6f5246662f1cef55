//! Names from the PCI ID database (embedded by the `pci-ids` crate, so output does not
//! depend on the reader's `pci.ids` version).

use pci_ids::FromId;

/// Vendor name (`NVIDIA Corporation`).
pub fn vendor_name(vendor: u16) -> Option<&'static str> {
    pci_ids::Vendor::from_id(vendor).map(|v| v.name())
}

/// Device name (`TU104GL [Tesla T4]`).
pub fn device_name(vendor: u16, device: u16) -> Option<&'static str> {
    pci_ids::Device::from_vid_pid(vendor, device).map(|d| d.name())
}

/// Class name from the 24-bit class code (`3D controller`).
pub fn class_name(class: u32) -> Option<&'static str> {
    let (base, sub) = ((class >> 16) as u8, (class >> 8) as u8);
    pci_ids::Subclass::from_cid_sid(base, sub)
        .map(|s| s.name())
        .or_else(|| pci_ids::Class::from_id(base).map(|c| c.name()))
}
