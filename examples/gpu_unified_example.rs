//! The product guide's unified-manager program: auto mode, manual selection, and a preferred
//! mode with fallback. Runs on this machine, or on a recorded host with
//! `VM_HOST_ROOT=fixtures/hosts/NAME cargo run --example gpu_unified_example`.

use vm_device::gpu_manager::{GpuMode, UnifiedGpuManager};

fn main() {
    // 1. Auto mode (recommended): the best available rung.
    let mut gpu_manager = UnifiedGpuManager::new();
    gpu_manager
        .scan_backends()
        .expect("Failed to scan GPU backends");
    match gpu_manager.auto_select() {
        Ok(c) => println!("auto: {} {}", c.mode(), c.describe()),
        Err(e) => {
            println!("auto: {e}");
            std::process::exit(3);
        }
    }
    gpu_manager
        .initialize_selected()
        .expect("Failed to initialize GPU");
    if let Some(stats) = gpu_manager.get_stats() {
        println!("{}", stats);
    }
    // Releases the GPU (a passthrough backend gives its group back) before the next part.
    drop(gpu_manager);

    // 2. Manual selection: list, then by mode, then by index.
    let mut gpu_manager = UnifiedGpuManager::new();
    gpu_manager
        .scan_backends()
        .expect("Failed to scan GPU backends");
    gpu_manager.print_available_backends();
    match gpu_manager.select_by_mode(GpuMode::Passthrough) {
        Ok(_) => println!("Selected GPU Passthrough"),
        Err(e) => println!("GPU Passthrough not available: {}", e),
    }
    let first_available = gpu_manager
        .backends()
        .expect("scanned")
        .iter()
        .position(|c| c.is_available());
    if let Some(i) = first_available {
        gpu_manager
            .select_by_index(i)
            .expect("Failed to select backend");
        println!(
            "by index {i}: {}",
            gpu_manager.get_selected_backend().unwrap().mode()
        );
    }
    drop(gpu_manager);

    // 3. Preferred mode with automatic fallback.
    let mut gpu_manager = UnifiedGpuManager::new();
    gpu_manager.set_preferred_mode(GpuMode::Passthrough);
    gpu_manager.set_auto_fallback(true);
    gpu_manager
        .scan_backends()
        .expect("Failed to scan GPU backends");
    gpu_manager
        .auto_select()
        .expect("Failed to select GPU backend");
    println!(
        "Selected: {:?}",
        gpu_manager.get_selected_backend().unwrap().mode()
    );
}
