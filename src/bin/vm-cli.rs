//! `vm-cli`: give a VM the best GPU this host can offer, and explain every decision.

fn main() {
    std::process::exit(vm_device::cli::main());
}
