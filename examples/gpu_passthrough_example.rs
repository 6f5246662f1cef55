//! The product guide's passthrough program: list GPUs, then prepare the first one that the
//! passthrough rung can take (moved to vfio-pci and opened through VFIO) and release it.
//! `VM_HOST_ROOT=fixtures/hosts/NAME` runs it on a recorded host.

use vm_device::gpu_manager::{GpuMode, UnifiedGpuManager};
use vm_device::gpu_passthrough::{scan_available_gpus, GpuPassthrough, PciDeviceInfo};
use vm_device::host::default_host;
use vm_passthrough::PciAddress;

fn main() {
    // Scan the available GPUs.
    let gpus = scan_available_gpus();
    for gpu in &gpus {
        println!(
            "Found GPU: {:?} {} at {}",
            gpu.vendor, gpu.model, gpu.pci_address
        );
        if gpu.vram_source == "unknown" {
            println!("  VRAM: unknown (no driver or NVML reports it)");
        } else {
            println!(
                "  VRAM: {} MB ({})",
                gpu.vram_size / 1024 / 1024,
                gpu.vram_source
            );
        }
        println!("  Driver: {}", gpu.driver);
    }

    // Pick a GPU the passthrough rung accepts (not the boot display, a viable group, …).
    let mut manager = UnifiedGpuManager::new();
    manager
        .scan_backends()
        .expect("Failed to scan GPU backends");
    let address: PciAddress = match manager.select_by_mode(GpuMode::Passthrough) {
        Ok(c) => c.device().expect("a GPU").parse().expect("an address"),
        Err(e) => {
            println!("no GPU can be passed through here: {e}");
            return;
        }
    };
    let info = PciDeviceInfo::read(default_host().as_ref(), &address)
        .expect("read the device's PCI information");
    let mut gpu_pt = GpuPassthrough::new(address, info).expect("Failed to create GPU passthrough");
    gpu_pt.prepare().expect("Failed to prepare GPU passthrough");
    for d in gpu_pt.devices() {
        println!(
            "  {} open through VFIO: {} regions",
            d.address,
            d.regions.len()
        );
    }
    gpu_pt.release().expect("Failed to release the GPU");
    println!("released {address}");
}
