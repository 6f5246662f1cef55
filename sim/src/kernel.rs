//! The kernel's reactions to writes and module loads, measured on Linux 6.1
//! (`shared/docs/kernel-sysfs-semantics.md`).

use std::io;
use std::path::Path;

use vm_passthrough::HostError;

use crate::tree::Tree;

/// EACCES: opening a read-only attribute for writing, even as root.
const EACCES: i32 = 13;

/// Applies one `write(2)` of `value` to `path`.
pub(crate) fn write(tree: &mut Tree, path: &Path, value: &[u8]) -> io::Result<()> {
    let p = tree.resolve(path, true)?;
    if tree.node(&p).is_none() {
        return Err(io::Error::from_raw_os_error(
            crate::tree::libc_errno::ENOENT,
        ));
    }
    // Rule 1: a 0-byte write never reaches the store method.
    if value.is_empty() {
        return Ok(());
    }
    Err(io::Error::from_raw_os_error(EACCES))
}

/// `modprobe NAME`.
pub(crate) fn load_module(_tree: &mut Tree, name: &str) -> Result<(), HostError> {
    Err(HostError::Module {
        module: name.to_string(),
        detail: "the simulator has no loadable modules yet".into(),
    })
}
