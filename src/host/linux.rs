//! `LinuxHost`: the machine itself.

use std::path::{Path, PathBuf};
use std::process::Command;

use vm_passthrough::{AdapterInfo, HostError, HostOps, NodeKind};

/// The real host: paths are opened as they are, modules loaded with `modprobe`, adapters
/// found by asking wgpu.
#[derive(Debug, Default, Clone)]
pub struct LinuxHost {
    _private: (),
}

impl LinuxHost {
    /// A handle to the running kernel.
    pub fn new() -> Self {
        Self::default()
    }
}

impl HostOps for LinuxHost {
    fn read(&self, path: &Path) -> Result<Vec<u8>, HostError> {
        std::fs::read(path).map_err(|e| HostError::io("read", path, e))
    }

    fn read_link(&self, path: &Path) -> Result<PathBuf, HostError> {
        std::fs::read_link(path).map_err(|e| HostError::io("readlink", path, e))
    }

    fn list_dir(&self, path: &Path) -> Result<Vec<String>, HostError> {
        let rd = std::fs::read_dir(path).map_err(|e| HostError::io("list", path, e))?;
        let mut names: Vec<String> = rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        Ok(names)
    }

    fn kind(&self, path: &Path) -> Option<NodeKind> {
        use std::os::unix::fs::FileTypeExt;
        let md = std::fs::symlink_metadata(path).ok()?;
        let ft = md.file_type();
        Some(if ft.is_symlink() {
            NodeKind::Link
        } else if ft.is_dir() {
            NodeKind::Dir
        } else if ft.is_char_device() || ft.is_block_device() {
            NodeKind::Device
        } else {
            NodeKind::File
        })
    }

    fn canonicalize(&self, path: &Path) -> Result<PathBuf, HostError> {
        std::fs::canonicalize(path).map_err(|e| HostError::io("realpath", path, e))
    }

    fn write_attr(&self, path: &Path, value: &[u8]) -> Result<(), HostError> {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| HostError::io("open", path, e))?;
        // One write(2): sysfs store methods see exactly these bytes, once.
        let n = f
            .write(value)
            .map_err(|e| HostError::io("write", path, e))?;
        if n != value.len() {
            return Err(HostError::io(
                "write",
                path,
                std::io::Error::new(
                    std::io::ErrorKind::WriteZero,
                    format!("short write: {n} of {} bytes", value.len()),
                ),
            ));
        }
        Ok(())
    }

    fn load_module(&self, name: &str) -> Result<(), HostError> {
        let out = Command::new("modprobe")
            .arg(name)
            .output()
            .map_err(|e| HostError::Module {
                module: name.to_string(),
                detail: format!("cannot run modprobe: {e}"),
            })?;
        if out.status.success() {
            Ok(())
        } else {
            Err(HostError::Module {
                module: name.to_string(),
                detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    }

    fn probe_adapters(&self) -> Result<Vec<AdapterInfo>, HostError> {
        crate::gpu_virt::probe_adapters()
    }
}
