//! Shared helpers for the simulator's tests: where the recorded trees are, and short
//! spellings for writes and reads.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use vm_device_host::prelude::*;
use vm_device_host::HostError;
use vm_device_sim::SimHost;

/// The recorded trees kept in the repository: `fixtures/real` beside this crate.
pub fn real_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/real")
}

/// A recorded tree under `fixtures/real`.
pub fn real(name: &str) -> PathBuf {
    real_dir().join(name)
}

/// A simulator over the QEMU q35 lab guest before any assignment.
pub fn lab() -> SimHost {
    SimHost::from_fixture(real("qemu-q35-viommu")).expect("open qemu-q35-viommu")
}

pub const DEV1: &str = "/sys/bus/pci/devices/0000:01:00.0";
pub const DEV2: &str = "/sys/bus/pci/devices/0000:02:00.0";
pub const DEV3: &str = "/sys/bus/pci/devices/0000:03:00.0";
pub const BRIDGE: &str = "/sys/bus/pci/devices/0000:05:00.0";
pub const DEV61: &str = "/sys/bus/pci/devices/0000:06:01.0";
pub const DEV62: &str = "/sys/bus/pci/devices/0000:06:02.0";
pub const PROBE: &str = "/sys/bus/pci/drivers_probe";
pub const MBOCHS: &str = "/sys/class/mdev_bus/mbochs/mdev_supported_types";
pub const MDPY: &str = "/sys/class/mdev_bus/mdpy/mdev_supported_types";
pub const MTTY: &str = "/sys/class/mdev_bus/mtty/mdev_supported_types";

pub fn w(h: &SimHost, path: impl AsRef<Path>, value: &[u8]) -> Result<(), HostError> {
    h.write_attr(path.as_ref(), value)
}

/// The errno a write failed with (`None` when it succeeded).
pub fn werr(h: &SimHost, path: impl AsRef<Path>, value: &[u8]) -> Option<i32> {
    match w(h, path, value) {
        Ok(()) => None,
        Err(e) => Some(e.raw_os_error().unwrap_or(-1)),
    }
}

/// Reads an attribute (trailing newline dropped); panics with the path when it fails.
pub fn r(h: &SimHost, path: impl AsRef<Path>) -> String {
    let p = path.as_ref();
    h.read_attr(p)
        .unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

/// The driver bound to the device at `dev` (a `/sys/bus/pci/devices/ADDR` path).
pub fn driver(h: &SimHost, dev: &str) -> Option<String> {
    h.link_name(&Path::new(dev).join("driver")).ok()
}

pub fn exists(h: &SimHost, path: &str) -> bool {
    h.exists(Path::new(path))
}

pub fn p(s: &str) -> PathBuf {
    PathBuf::from(s)
}
