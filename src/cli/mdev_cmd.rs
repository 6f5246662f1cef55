//! `vm-cli gpu mdev-types | mdev-create | mdev-remove | sriov`: glue from clap to
//! [`crate::rungs::mdev`], exit codes, and printing.

use std::path::{Path, PathBuf};

use vm_device_host::PciAddress;

use super::{write_json, write_text};
use super::{ChangeDirs, MdevCreateArgs, EXIT_OK, EXIT_UNAVAILABLE};
use crate::host::HostOps;
use crate::inventory::HostInventory;
use crate::rungs::mdev::{
    lifecycle, render, types, ApplyOptions, CreateRequest, MdevError, Persist, StartMode,
    TypeRequest, UuidSource,
};

/// `gpu sriov`: sets a PF's number of VFs (through 0 when changing a non-zero count).
pub(super) fn sriov(
    host: &dyn HostOps,
    gpu_device: &PciAddress,
    num_vfs: u32,
    (json, dry_run): (bool, bool),
    state_dir: &Path,
) -> i32 {
    let inv = HostInventory::scan(host);
    let plan = match lifecycle::plan_sriov(&inv, gpu_device, num_vfs) {
        Ok(p) => p,
        Err(e) => return fail("sriov", &e, json),
    };
    let pf = gpu_device.to_string();
    let verified = if dry_run {
        Vec::new()
    } else {
        let opts = options(state_dir);
        match crate::rungs::mdev::execute(host, &plan, &opts) {
            Ok(v) => v,
            Err(e) => return fail("sriov", &e, json),
        }
    };
    if json {
        write_json(&render::sriov_json(&pf, num_vfs, &plan, &verified, dry_run));
    } else {
        write_text(&render::sriov_text(&pf, num_vfs, &plan, &verified, dry_run));
    }
    EXIT_OK
}

fn fail(command: &str, e: &MdevError, json: bool) -> i32 {
    if json {
        write_json(&render::error_json(command, e));
    }
    eprintln!("vm-cli: {e}");
    e.exit_kind().code()
}

/// The state directory, as `cli::run` chose it for this run (`StateDirChoice`).
fn options(state_dir: &Path) -> ApplyOptions {
    ApplyOptions {
        state_dir: Some(state_dir.to_path_buf()),
    }
}

/// The config root for `--persist`: `--config-root`, else `/` of the host the command runs
/// on (a simulated host writes its own tree, never this machine's /etc).
fn config_root(dirs: &ChangeDirs) -> PathBuf {
    dirs.config_root
        .clone()
        .unwrap_or_else(|| PathBuf::from("/"))
}

pub(super) fn mdev_list(host: &dyn HostOps, json: bool) -> i32 {
    let mut inv = HostInventory::scan(host);
    let defined = crate::rungs::mdev::persist::read_definitions(host, &mut inv.warnings);
    let rows = crate::rungs::mdev::persist::device_rows(&inv, &defined);
    if json {
        write_json(&render::devices_json(&rows));
    } else {
        write_text(&render::devices_text(&rows));
    }
    for w in &inv.warnings {
        eprintln!("vm-cli: warning: {}: {}", w.path.display(), w.message);
    }
    EXIT_OK
}

pub(super) fn mdev_types(host: &dyn HostOps, parent: Option<&str>, json: bool) -> i32 {
    let inv = HostInventory::scan(host);
    if let Some(p) = parent {
        // A named parent that does not exist is an error, not an empty table.
        if let Err(e) = types::check_parent(&inv, p) {
            return fail("mdev-types", &e, json);
        }
    }
    let rows = types::list(&inv, parent);
    if json {
        write_json(&render::types_json(&rows));
    } else {
        write_text(&render::types_text(&rows));
        if render::has_vendor_vfio(&rows) {
            write_text("(NVIDIA vendor-VFIO types: AVAILABLE counts free VFs that can take the type; ACTIVE counts VFs carrying it)\n");
        }
    }
    for w in &inv.warnings {
        eprintln!("vm-cli: warning: {}: {}", w.path.display(), w.message);
    }
    if rows.is_empty() {
        EXIT_UNAVAILABLE
    } else {
        EXIT_OK
    }
}

pub(super) fn mdev_create(
    host: &dyn HostOps,
    a: &MdevCreateArgs,
    json: bool,
    (_simulated, dry_run): (bool, bool),
    state_dir: &Path,
) -> i32 {
    let mut req = CreateRequest {
        ty: TypeRequest {
            wanted: a.mdev_type.clone(),
            parent: a.gpu_device.clone(),
            numa_node: a.numa_node,
        },
        uuid: match (&a.mdev_uuid, &a.vm_name) {
            (Some(u), _) => UuidSource::Given(u.clone()),
            (None, Some(n)) => UuidSource::Vm {
                name: n.clone(),
                index: a.index,
            },
            (None, None) => UuidSource::Random,
        },
        persist: None,
    };
    if a.persist {
        let root = config_root(&a.dirs);
        req.persist = Some(Persist {
            start: if a.auto {
                StartMode::Auto
            } else {
                StartMode::Manual
            },
            config_root: root,
        });
    }
    let inv = HostInventory::scan(host);
    let planned = match lifecycle::plan_create(&inv, &req) {
        Ok(p) => p,
        Err(e) => return fail("mdev-create", &e, json),
    };
    let verified = if dry_run {
        Vec::new()
    } else {
        let opts = options(state_dir);
        match lifecycle::apply(host, &planned, &opts) {
            Ok(v) => v,
            Err(e) => return fail("mdev-create", &e, json),
        }
    };
    if json {
        write_json(&render::change_json(
            "mdev-create",
            &planned,
            &verified,
            dry_run,
        ));
    } else {
        write_text(&render::change_text("create", &planned, &verified, dry_run));
    }
    EXIT_OK
}

pub(super) fn mdev_remove(
    host: &dyn HostOps,
    device: &str,
    dry_run: bool,
    json: bool,
    state_dir: &Path,
) -> i32 {
    let inv = HostInventory::scan(host);
    let planned = match lifecycle::plan_remove(&inv, device) {
        Ok(p) => p,
        Err(e) => return fail("mdev-remove", &e, json),
    };
    let verified = if dry_run {
        Vec::new()
    } else {
        let opts = options(state_dir);
        match lifecycle::apply(host, &planned, &opts) {
            Ok(v) => v,
            Err(e) => return fail("mdev-remove", &e, json),
        }
    };
    if json {
        write_json(&render::change_json(
            "mdev-remove",
            &planned,
            &verified,
            dry_run,
        ));
    } else {
        write_text(&render::change_text("remove", &planned, &verified, dry_run));
    }
    EXIT_OK
}
