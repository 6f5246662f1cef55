//! `--persist` writes mdevctl's definition format under the config root of the host the
//! plan runs on (through the host seam: a simulated host keeps it in its tree, where
//! `mdev-list` reads it), never through a link below that root, and a failure to write it
//! undoes the device.

mod mdev_common;

use mdev_common::*;
use std::path::{Path, PathBuf};

use vm_device::host::{LinuxHost, SimHost};
use vm_device::plan::Action;
use vm_device_host::prelude::*;

use vm_device::gpu_mdev::lifecycle::{self, ApplyOptions, CreateRequest, Persist, UuidSource};
use vm_device::gpu_mdev::{ids, MdevError, MdevctlConfig, StartMode, TypeRequest};

fn req(wanted: &str, start: StartMode, config_root: &Path) -> CreateRequest {
    CreateRequest {
        ty: TypeRequest {
            wanted: wanted.into(),
            parent: None,
            numa_node: None,
        },
        uuid: UuidSource::Vm {
            name: "persisted".into(),
            index: 0,
        },
        persist: Some(Persist {
            start,
            config_root: config_root.to_path_buf(),
        }),
    }
}

/// Reads a file of the simulated host's tree.
fn read_text(h: &SimHost, path: &Path) -> String {
    String::from_utf8(h.read(path).unwrap_or_else(|e| panic!("{e}"))).unwrap()
}

#[test]
fn gvtg_definition_matches_mdevctls_format() {
    let h = host("intel-desktop-gvtg-dgpu");
    let root = PathBuf::from("/");
    let opts = ApplyOptions::default();
    let (p, _) =
        lifecycle::create(&h, &req("i915-GVTg_V5_4", StartMode::Auto, &root), &opts).unwrap();
    let uuid = ids::for_vm("persisted", 0).to_string();
    assert_eq!(p.device, uuid);
    let file = lifecycle::mdevctl_file(&root, "0000:00:02.0", &uuid);
    assert_eq!(
        file,
        PathBuf::from(format!("/etc/mdevctl.d/0000:00:02.0/{uuid}"))
    );
    // What `mdevctl define --parent 0000:00:02.0 --type i915-GVTg_V5_4 --auto` writes
    // (mdevctl's tests/define fixtures), with the attrs list the issue asks for; in the
    // simulated host's tree, not on this machine.
    assert_eq!(
        read_text(&h, &file),
        "{\n  \"mdev_type\": \"i915-GVTg_V5_4\",\n  \"start\": \"auto\",\n  \"attrs\": []\n}"
    );
    let parsed: MdevctlConfig = serde_json::from_str(&read_text(&h, &file)).unwrap();
    assert_eq!(
        parsed,
        MdevctlConfig::new("i915-GVTg_V5_4", StartMode::Auto)
    );
}

#[test]
fn unwritable_config_root_undoes_the_device() {
    let h = lab();
    // The config root is a regular file: no definition can be written under it.
    h.write_file(Path::new("/"), Path::new("not-a-dir"), b"")
        .unwrap();
    let start = h.snapshot();
    let opts = ApplyOptions::default();
    let err = lifecycle::create(
        &h,
        &req("mbochs-small", StartMode::Manual, Path::new("/not-a-dir")),
        &opts,
    )
    .unwrap_err();
    assert!(err.undone(), "{err}");
    let MdevError::StepFailed { index, cause, .. } = &err else {
        panic!("{err}");
    };
    // create, three checks, then the definition.
    assert_eq!(*index, 5);
    assert!(matches!(**cause, MdevError::Persist { .. }), "{cause}");
    assert_eq!(h.snapshot(), start);
}

#[test]
fn existing_definition_is_not_overwritten() {
    let h = lab();
    let uuid = ids::for_vm("persisted", 0).to_string();
    let root = PathBuf::from("/");
    h.create_dir(&root, Path::new("etc/mdevctl.d/mtty"))
        .unwrap();
    let rel = format!("etc/mdevctl.d/mtty/{uuid}");
    h.write_file(
        &root,
        Path::new(&rel),
        b"{\"mdev_type\": \"mtty-1\", \"start\": \"manual\"}",
    )
    .unwrap();
    let start = h.snapshot();
    let file = lifecycle::mdevctl_file(&root, "mtty", &uuid);
    let opts = ApplyOptions::default();
    let err = lifecycle::create(&h, &req("mtty-2", StartMode::Manual, &root), &opts).unwrap_err();
    assert!(err.undone(), "{err}");
    assert!(err.to_string().contains("exists already"), "{err}");
    assert_eq!(
        read_text(&h, &file),
        "{\"mdev_type\": \"mtty-1\", \"start\": \"manual\"}"
    );
    assert_eq!(h.snapshot(), start);
}

#[test]
fn a_link_planted_under_the_config_root_is_never_followed() {
    // On this machine: `etc/mdevctl.d` under the config root is a link to a directory
    // outside it. Writing a definition must refuse it, not write through it.
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("etc")).unwrap();
    std::os::unix::fs::symlink(outside.path(), root.path().join("etc/mdevctl.d")).unwrap();
    let uuid = ids::for_vm("persisted", 0).to_string();
    let path = lifecycle::mdevctl_file(root.path(), "mtty", &uuid);
    let write = Action::WriteFile {
        path: path.clone(),
        contents: "{}".into(),
    };
    let err = write.run(&LinuxHost::new()).unwrap_err();
    assert!(err.to_string().contains("symbolic links"), "{err}");
    assert_eq!(
        std::fs::read_dir(outside.path()).unwrap().count(),
        0,
        "a definition was written through the link"
    );
    // Removing goes no further through a link than writing.
    std::fs::create_dir(outside.path().join("mtty")).unwrap();
    std::fs::write(outside.path().join(format!("mtty/{uuid}")), b"{}").unwrap();
    let remove = Action::RemoveFile { path };
    assert!(remove.run(&LinuxHost::new()).is_err());
    assert!(outside.path().join(format!("mtty/{uuid}")).exists());
}

#[test]
fn vendor_vfio_refuses_persist() {
    let h = host("sriov-pf-with-vfs");
    let start = h.snapshot();
    let err = lifecycle::create(
        &h,
        &req("nvidia-1151", StartMode::Auto, Path::new("/nonexistent")),
        &ApplyOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(err, MdevError::Persist { .. }), "{err}");
    assert_eq!(h.snapshot(), start);
}
