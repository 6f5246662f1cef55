//! The host seam: [`HostOps`] and its two implementations.
//!
//! Nothing outside this module (and the simulator crate) touches `std::fs`, `libc` or `nix`
//! for host access.

pub mod adapters;
mod files;
mod linux;
mod nvml;
mod unusable;
mod vfio_linux;
pub mod vfio_probe;

pub use linux::LinuxHost;
pub use vfio_probe::{vfio_smoke, vfio_smoke_with, PathChoice, VfioReport, VfioSmokeError};
pub use vm_device_host::{
    AdapterInfo, Adapters, HostError, HostOps, NodeKind, ProcessHolder, Sysfs, System, Vfio,
};
#[cfg(feature = "sim")]
pub use vm_device_sim::SimHost;

use std::sync::Arc;

/// A shared handle to whichever host the manager runs on.
pub type Host = Arc<dyn HostOps>;

/// The host the library uses when none is given: the fixture named by `VM_HOST_ROOT` when
/// set (so the product guide's programs run against the simulator), else this machine.
///
/// A `VM_HOST_ROOT` that names no host tree never falls back to this machine (a program
/// meant for a simulation must not rebind real devices): the host returned then fails every
/// call with the reason; [`try_default_host`] reports it at once.
pub fn default_host() -> Host {
    match try_default_host() {
        Ok(h) => h,
        Err(e) => {
            let why = format!("VM_HOST_ROOT: {e}; fix or unset VM_HOST_ROOT");
            eprintln!("vm-device: {why}");
            Arc::new(unusable::UnusableHost::new(why))
        }
    }
}

/// [`default_host`], with an invalid `VM_HOST_ROOT` as an error.
pub fn try_default_host() -> Result<Host, HostError> {
    match std::env::var_os("VM_HOST_ROOT") {
        Some(dir) if !dir.is_empty() => open(Some(std::path::Path::new(&dir)), None),
        _ => Ok(Arc::new(LinuxHost::new())),
    }
}

/// The host named by `--host-root` / `VM_HOST_ROOT`, or the real one. A host tree must
/// hold a `sys/` directory (an empty or wrong directory is refused, saying so). With
/// `sim_state` (`--sim-state DIR`), the simulated host's changes persist in that directory
/// from one process to the next (see [`SimHost::from_fixture_with_state`]).
pub fn open(
    host_root: Option<&std::path::Path>,
    sim_state: Option<&std::path::Path>,
) -> Result<Host, HostError> {
    match (host_root, sim_state) {
        #[cfg(not(feature = "sim"))]
        (Some(dir), _) => Err(HostError::Fixture(format!(
            "{}: this vm-cli was built without the simulator (cargo feature `sim`), so it \
             cannot run against a recorded host tree",
            dir.display()
        ))),
        #[cfg(feature = "sim")]
        (Some(dir), state) => {
            let sim = match state {
                Some(s) => SimHost::from_fixture_with_state(dir, s)?,
                None => SimHost::from_fixture(dir)?,
            };
            if !dir.join("sys").is_dir() {
                return Err(HostError::Fixture(format!(
                    "{} holds no sys/ tree, so it is no recorded host (a host tree has sys/, \
                     proc/ and dev/; record one with `vm-cli host record DIR`)",
                    dir.display()
                )));
            }
            sim.set_logging(false);
            Ok(Arc::new(sim))
        }
        (None, Some(_)) => Err(HostError::Fixture(
            "--sim-state keeps the changes of a simulated host: it needs --host-root".into(),
        )),
        (None, None) => Ok(Arc::new(LinuxHost::new())),
    }
}
