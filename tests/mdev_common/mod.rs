//! Fixtures and helpers shared by the mdev tests.
#![allow(dead_code)]

use vm_device::host::SimHost;

/// The recorded QEMU q35 guest with the mbochs, mdpy and mtty sample parents.
pub const QEMU_LAB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/real/qemu-q35-viommu");

/// A fixture host of this repository.
pub fn fixture_dir(name: &str) -> String {
    format!("{}/fixtures/hosts/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// The QEMU lab host.
pub fn lab() -> SimHost {
    SimHost::from_fixture(QEMU_LAB).expect("qemu-q35-viommu fixture")
}

/// A fixture host by name.
pub fn host(name: &str) -> SimHost {
    SimHost::from_fixture(fixture_dir(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

pub const ENOENT: i32 = 2;
pub const EIO: i32 = 5;
pub const EEXIST: i32 = 17;
pub const EINVAL: i32 = 22;
pub const ENOSPC: i32 = 28;
pub const EUSERS: i32 = 87;
