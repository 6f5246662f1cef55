//! Asking wgpu which adapters this host has: the seam's half of the adapter probe.
//!
//! It lives beside `LinuxHost` (which answers `Adapters::probe_adapters` with it) so the
//! seam imports nothing above it; the wgpu rung starts its own instances from
//! [`instance_descriptor`] too, so both see the same backends and environment.

use vm_device_host::{AdapterInfo, HostError};

/// The instance descriptor every wgpu use in vm-device starts from: honours `WGPU_BACKEND`
/// (wgpu ignores it unless asked) and the other `WGPU_*` variables.
pub fn instance_descriptor() -> wgpu::InstanceDescriptor {
    quiet_desktop_probe();
    wgpu::InstanceDescriptor::new_without_display_handle().with_env()
}

/// Keeps Mesa's Vulkan device-select layer from asking a Wayland compositor for the desktop's
/// GPU when this process has no desktop session.
///
/// The layer (an implicit layer of `mesa-vulkan-drivers`) calls `wl_display_connect` while
/// the instance is created; without `XDG_RUNTIME_DIR` libwayland prints "error:
/// XDG_RUNTIME_DIR is invalid or not set in the environment." twice, unprefixed, which reads
/// as if vm-cli had failed (a root shell, `sudo`, a container, a systemd service). With no
/// runtime directory there is no compositor to reach and the layer's answer is only an order
/// of adapters, which vm-device does not use: the layer is switched off through its own
/// variable (`NODEVICE_SELECT=1`) for this process. Drivers' own messages stay visible. A
/// user who sets `NODEVICE_SELECT` or `XDG_RUNTIME_DIR` keeps their choice.
fn quiet_desktop_probe() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let runtime_dir_set = std::env::var_os("XDG_RUNTIME_DIR").is_some_and(|d| !d.is_empty());
        if !runtime_dir_set && std::env::var_os("NODEVICE_SELECT").is_none() {
            // Set once, before the first wgpu instance loads any graphics driver (which is
            // what would read it).
            std::env::set_var("NODEVICE_SELECT", "1");
        }
    });
}

/// Enumerates the adapters wgpu can open on this host (the real half of
/// `HostOps::probe_adapters`). Creating an instance loads graphics drivers: call it only
/// when the wgpu rung is being considered.
pub fn probe_adapters() -> Result<Vec<AdapterInfo>, HostError> {
    let desc = instance_descriptor();
    let backends = desc.backends;
    let instance = wgpu::Instance::new(desc);
    let adapters = pollster::block_on(instance.enumerate_adapters(backends));
    Ok(adapters
        .into_iter()
        .map(|a| {
            let i = a.get_info();
            AdapterInfo {
                name: i.name,
                vendor: i.vendor,
                device: i.device,
                device_type: format!("{:?}", i.device_type),
                backend: format!("{:?}", i.backend),
                driver: i.driver,
                driver_info: i.driver_info,
            }
        })
        .collect())
}
