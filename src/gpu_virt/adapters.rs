//! Asking wgpu which adapters this host has.

use vm_passthrough::{AdapterInfo, HostError};

/// The instance descriptor every wgpu use in vm-device starts from: honours `WGPU_BACKEND`
/// (wgpu ignores it unless asked) and the other `WGPU_*` variables.
pub fn instance_descriptor() -> wgpu::InstanceDescriptor {
    wgpu::InstanceDescriptor::new_without_display_handle().with_env()
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
