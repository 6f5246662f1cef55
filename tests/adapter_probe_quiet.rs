//! The wgpu adapter probe on this machine prints nothing that reads as vm-cli failing when
//! the environment has no desktop session (`XDG_RUNTIME_DIR` unset: root shells, `sudo`,
//! containers, services).

use std::process::Command;

#[test]
fn gpu_list_without_a_runtime_dir_prints_no_wayland_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_vm-cli"))
        .args(["--json", "gpu", "list"])
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("NODEVICE_SELECT")
        .env_remove("VM_HOST_ROOT")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("XDG_RUNTIME_DIR is invalid"),
        "the adapter probe leaked libwayland's complaint:\n{stderr}"
    );
    // The probe really ran: the listing names the wgpu rung's outcome.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("\"wgpu\""), "{stdout}");
}
