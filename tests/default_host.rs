//! `default_host()` with a `VM_HOST_ROOT` that names no host tree fails instead of falling
//! back to this machine (issue 12); `--host-root` of such a directory says what is wrong.
//! One test in its own binary: it sets the process environment.

use std::path::Path;
use std::process::Command;

#[test]
fn an_invalid_host_root_is_refused_never_this_machine() {
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vm-cli"))
        .arg("--host-root")
        .arg(empty.path())
        .args(["gpu", "list"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("holds no sys/ tree"), "{err}");

    for bad in [empty.path().to_path_buf(), empty.path().join("missing")] {
        std::env::set_var("VM_HOST_ROOT", &bad);
        let e = vm_device::host::try_default_host().err().expect("an error");
        assert!(e.to_string().contains(&bad.display().to_string()), "{e}");
        let host = vm_device::host::default_host();
        // This machine has /sys/bus/pci/devices; the unusable host answers nothing.
        let r = host.list_dir(Path::new("/sys/bus/pci/devices"));
        assert!(
            r.is_err(),
            "{}: fell back to this machine: {r:?}",
            bad.display()
        );
        assert!(r.unwrap_err().to_string().contains("VM_HOST_ROOT"));
    }
    std::env::remove_var("VM_HOST_ROOT");
}
