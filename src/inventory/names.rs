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

/// A size as people read it: `16 GiB`, `256 MiB`, `1.5 KiB`.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if v.fract() == 0.0 {
        format!("{v:.0} {}", UNITS[i])
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}
