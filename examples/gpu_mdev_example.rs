//! The product guide's mediated-device program: list mdev-capable GPUs and their types, then
//! create a device of the first type with room and remove it again.
//! `VM_HOST_ROOT=fixtures/hosts/NAME` runs it on a recorded host.

use vm_device::gpu_mdev::{scan_mdev_capable_gpus, GpuMdev};

fn main() {
    // Scan GPUs that support mdev.
    let mdev_gpus = scan_mdev_capable_gpus();
    for (address, configs) in &mdev_gpus {
        println!("GPU at {}:", address);
        for config in configs {
            println!("  - {} ({})", config.name, config.type_id);
            println!("    Available instances: {}", config.available_instances);
        }
    }

    // Create an mdev device of the first type that has room.
    let choice = mdev_gpus.iter().find_map(|(address, configs)| {
        configs
            .iter()
            .find(|c| c.available_instances > 0)
            .map(|c| (address, c))
    });
    if let Some((address, config)) = choice {
        let mut mdev = GpuMdev::new(*address, config.mdev_type, config.type_id.clone());
        mdev.create().expect("Failed to create mdev device");
        println!("Created mdev device: {}", mdev.get_uuid().unwrap());
        mdev.remove().expect("Failed to remove mdev device");
        println!("Removed it again");
    } else {
        println!("No mdev type with a free instance on this host");
    }
}
