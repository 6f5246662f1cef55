//! Guest RAM the GPU reads in place: Vulkan's `VK_EXT_external_memory_host`.
//!
//! A virtio-gpu transfer otherwise costs the CPU a full copy of the rectangle into staging
//! memory before the GPU copies it again into the texture. With this extension a guest
//! memory region (page-aligned host memory: an anonymous or memfd mapping) is imported once
//! as a storage buffer, and a shader gathers the rectangle from the guest's scattered pages
//! straight into the texture ([`crate::rungs::wgpu::virtio_gpu::gpu_gather`]).
//!
//! Only the Vulkan backend offers this; the device is then opened through wgpu-hal with the
//! extension added to wgpu's own list. Every other case keeps wgpu's ordinary device.

use ash::vk;

/// What the device can import.
pub struct HostImport {
    ext: ash::ext::external_memory_host::Device,
    /// `minImportedHostPointerAlignment`: pointer and size granularity of an import.
    pub min_alignment: u64,
    /// Largest single memory allocation.
    pub max_allocation: u64,
}

impl std::fmt::Debug for HostImport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostImport")
            .field("min_alignment", &self.min_alignment)
            .field("max_allocation", &self.max_allocation)
            .finish_non_exhaustive()
    }
}

/// Whether the adapter is a Vulkan one offering `VK_EXT_external_memory_host`.
fn adapter_supports(adapter: &wgpu::Adapter) -> bool {
    // SAFETY: the hal adapter is only queried; nothing created through it outlives the guard.
    let Some(hal) = (unsafe { adapter.as_hal::<wgpu::hal::api::Vulkan>() }) else {
        return false;
    };
    let instance = hal.shared_instance().raw_instance();
    // SAFETY: a physical device of this instance.
    let exts = unsafe { instance.enumerate_device_extension_properties(hal.raw_physical_device()) };
    exts.is_ok_and(|v| {
        v.iter()
            .any(|e| e.extension_name_as_c_str() == Ok(ash::ext::external_memory_host::NAME))
    })
}

/// Opens a device on `adapter` with `VK_EXT_external_memory_host` enabled besides what wgpu
/// enables itself; `None` when the adapter is not Vulkan or lacks the extension (open it the
/// ordinary way then).
pub fn open_device(
    adapter: &wgpu::Adapter,
    desc: &wgpu::DeviceDescriptor<'_>,
) -> Option<Result<(wgpu::Device, wgpu::Queue), String>> {
    if !adapter_supports(adapter) {
        return None;
    }
    let open = {
        // SAFETY: opens the device wgpu would open, with one more extension the adapter
        // offers (checked above); the callback only appends to the extension list.
        let hal = unsafe { adapter.as_hal::<wgpu::hal::api::Vulkan>() }?;
        let add: Box<wgpu::hal::vulkan::CreateDeviceCallback<'_>> = Box::new(|args| {
            if !args
                .extensions
                .contains(&ash::ext::external_memory_host::NAME)
            {
                args.extensions.push(ash::ext::external_memory_host::NAME);
            }
        });
        // SAFETY: as above.
        unsafe {
            hal.open_with_callback(
                desc.required_features,
                &desc.required_limits,
                &desc.memory_hints,
                Some(add),
            )
        }
    };
    Some(match open {
        Err(e) => Err(format!(
            "opening the Vulkan device with VK_EXT_external_memory_host: {e}"
        )),
        Ok(open) => {
            // SAFETY: `open` was opened on this very adapter with the descriptor's features
            // and limits.
            unsafe { adapter.create_device_from_hal(open, desc) }.map_err(|e| e.to_string())
        }
    })
}

impl HostImport {
    /// The import capability of `device`, if it was opened with the extension.
    pub fn probe(device: &wgpu::Device) -> Option<HostImport> {
        // SAFETY: the hal device is used to load the extension's entry point and to query
        // properties; the loaded function table lives with the device, which `HostImport`
        // never outlives (it sits in the same `GpuContext`).
        let hal = unsafe { device.as_hal::<wgpu::hal::api::Vulkan>() }?;
        if !hal
            .enabled_device_extensions()
            .contains(&ash::ext::external_memory_host::NAME)
        {
            return None;
        }
        let instance = hal.shared_instance().raw_instance();
        let ext = ash::ext::external_memory_host::Device::new(instance, hal.raw_device());
        let mut host = vk::PhysicalDeviceExternalMemoryHostPropertiesEXT::default();
        let mut m3 = vk::PhysicalDeviceMaintenance3Properties::default();
        let mut props = vk::PhysicalDeviceProperties2::default()
            .push_next(&mut host)
            .push_next(&mut m3);
        // SAFETY: a physical device of this instance; the chained structs are valid.
        unsafe { instance.get_physical_device_properties2(hal.raw_physical_device(), &mut props) };
        let min_alignment = host.min_imported_host_pointer_alignment.max(1);
        Some(HostImport {
            ext,
            min_alignment,
            max_allocation: m3.max_memory_allocation_size,
        })
    }

    /// Imports `len` bytes of host memory at `ptr` as a read-only storage buffer.
    ///
    /// # Safety
    ///
    /// `ptr..ptr + len` must be mapped host memory that stays mapped for as long as GPU work
    /// may read the returned buffer; `ptr` and `len` must be multiples of
    /// [`HostImport::min_alignment`].
    pub unsafe fn import(
        &self,
        device: &wgpu::Device,
        ptr: *mut u8,
        len: u64,
    ) -> Result<wgpu::Buffer, String> {
        let handle = vk::ExternalMemoryHandleTypeFlags::HOST_ALLOCATION_EXT;
        if len == 0 || len % self.min_alignment != 0 || (ptr as u64) % self.min_alignment != 0 {
            return Err(format!(
                "{len} bytes at {ptr:p} are not aligned to {} bytes",
                self.min_alignment
            ));
        }
        if len > self.max_allocation || len > device.limits().max_buffer_size {
            return Err(format!("{len} bytes are more than one buffer can hold"));
        }
        let (raw_buffer, memory) = {
            // SAFETY: used to create, bind one buffer and import its memory; both are handed
            // to wgpu or destroyed on the error paths.
            let hal = unsafe { device.as_hal::<wgpu::hal::api::Vulkan>() }
                .ok_or("not a Vulkan device")?;
            let raw = hal.raw_device();
            let mut hp = vk::MemoryHostPointerPropertiesEXT::default();
            // SAFETY: `ptr` is host memory (the caller's contract); the struct is valid.
            unsafe {
                (self.ext.fp().get_memory_host_pointer_properties_ext)(
                    raw.handle(),
                    handle,
                    ptr.cast(),
                    &mut hp,
                )
            }
            .result()
            .map_err(|e| format!("vkGetMemoryHostPointerPropertiesEXT: {e}"))?;
            let mut ext_info = vk::ExternalMemoryBufferCreateInfo::default().handle_types(handle);
            let info = vk::BufferCreateInfo::default()
                .size(len)
                .usage(vk::BufferUsageFlags::STORAGE_BUFFER)
                .sharing_mode(vk::SharingMode::EXCLUSIVE)
                .push_next(&mut ext_info);
            // SAFETY: valid create info on a live device.
            let buffer = unsafe { raw.create_buffer(&info, None) }
                .map_err(|e| format!("vkCreateBuffer: {e}"))?;
            // SAFETY: `buffer` belongs to `raw`.
            let req = unsafe { raw.get_buffer_memory_requirements(buffer) };
            let bits = req.memory_type_bits & hp.memory_type_bits;
            if bits == 0 || req.size > len {
                // SAFETY: an unused buffer of this device.
                unsafe { raw.destroy_buffer(buffer, None) };
                return Err(format!(
                    "no memory type for imported host memory (buffer {:#x}, host pointer {:#x})",
                    req.memory_type_bits, hp.memory_type_bits
                ));
            }
            let mut import = vk::ImportMemoryHostPointerInfoEXT::default()
                .handle_type(handle)
                .host_pointer(ptr.cast());
            let alloc = vk::MemoryAllocateInfo::default()
                .allocation_size(len)
                .memory_type_index(bits.trailing_zeros())
                .push_next(&mut import);
            // SAFETY: the caller guarantees the host range; the type accepts it.
            let memory = match unsafe { raw.allocate_memory(&alloc, None) } {
                Ok(m) => m,
                Err(e) => {
                    // SAFETY: an unused buffer of this device.
                    unsafe { raw.destroy_buffer(buffer, None) };
                    return Err(format!("importing host memory: {e}"));
                }
            };
            // SAFETY: fresh buffer and memory of this device, large enough.
            if let Err(e) = unsafe { raw.bind_buffer_memory(buffer, memory, 0) } {
                // SAFETY: objects of this device no GPU work uses.
                unsafe {
                    raw.destroy_buffer(buffer, None);
                    raw.free_memory(memory, None);
                }
                return Err(format!("vkBindBufferMemory: {e}"));
            }
            (buffer, memory)
        };
        // SAFETY: the buffer is bound to the whole of `memory` (offset 0, `len` bytes); wgpu
        // takes both over and frees them when the buffer is dropped. wgpu never maps it.
        Ok(unsafe {
            let hal_buffer =
                wgpu::hal::vulkan::Buffer::from_raw_managed(raw_buffer, memory, 0, len);
            device.create_buffer_from_hal::<wgpu::hal::api::Vulkan>(
                hal_buffer,
                &wgpu::BufferDescriptor {
                    label: Some("guest memory"),
                    size: len,
                    usage: wgpu::BufferUsages::STORAGE,
                    mapped_at_creation: false,
                },
            )
        })
    }
}
