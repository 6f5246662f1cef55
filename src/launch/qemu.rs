//! Finding a QEMU that can run the chosen device.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;

/// The QEMU binary vm-cli looks for.
pub(crate) const QEMU_NAME: &str = "qemu-system-x86_64";

/// A QEMU version (`10.0.2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct QemuVersion {
    /// Major.
    pub major: u32,
    /// Minor.
    pub minor: u32,
    /// Micro.
    pub micro: u32,
}

impl QemuVersion {
    /// `major.minor.micro`.
    pub const fn new(major: u32, minor: u32, micro: u32) -> Self {
        QemuVersion {
            major,
            minor,
            micro,
        }
    }

    /// Reads `QEMU emulator version 10.0.2 (Debian …)`, the first line of `--version`.
    pub(crate) fn parse_version_output(text: &str) -> Option<Self> {
        let rest = text.split("version ").nth(1)?;
        let word = rest.split_whitespace().next()?;
        let mut parts = word
            .split(|c: char| !c.is_ascii_digit())
            .map(|p| p.parse::<u32>());
        let major = parts.next()?.ok()?;
        let minor = parts.next().and_then(|p| p.ok()).unwrap_or(0);
        let micro = parts.next().and_then(|p| p.ok()).unwrap_or(0);
        Some(QemuVersion::new(major, minor, micro))
    }
}

impl fmt::Display for QemuVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.micro)
    }
}

/// A QEMU found on this machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QemuBinary {
    /// The executable.
    pub path: PathBuf,
    /// Its version.
    pub version: QemuVersion,
    /// Firmware directories (`-L`), for a QEMU extracted from packages into a directory
    /// (`ROOT/usr/bin/qemu-system-x86_64`): its own `ROOT/usr/share/qemu`, then the system's
    /// `/usr/share/qemu` for the firmware other packages bring (SeaBIOS, iPXE).
    pub data_dirs: Vec<PathBuf>,
    /// `QEMU_MODULE_DIR` for such a tree, so it loads its own modules, not the installed
    /// QEMU's.
    pub module_dir: Option<PathBuf>,
}

/// Why no usable QEMU was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QemuError {
    /// Nothing on PATH (or at --qemu).
    #[error("no {QEMU_NAME} found {where_}; install it (Debian: apt-get install qemu-system-x86) or pass --qemu PATH")]
    NotFound {
        /// Where it looked.
        where_: String,
    },
    /// `--version` failed or said nothing readable.
    #[error("{path}: cannot tell the QEMU version ({detail}); pass --qemu PATH to a working {QEMU_NAME}")]
    NoVersion {
        /// The binary.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// Too old for the device.
    #[error("{path} is QEMU {found}, but {what} needs QEMU {needed} or newer; pass --qemu PATH to a newer build (Debian 12: qemu-system-x86 from bookworm-backports, which can be extracted without replacing the installed one)")]
    TooOld {
        /// The binary.
        path: PathBuf,
        /// Its version.
        found: QemuVersion,
        /// The version needed.
        needed: QemuVersion,
        /// The device and accelerator that need it.
        what: String,
    },
}

impl QemuBinary {
    /// Asks `path --version` and looks for an extracted package tree around it.
    pub fn probe(path: &Path) -> Result<Self, QemuError> {
        let out =
            Command::new(path)
                .arg("--version")
                .output()
                .map_err(|e| QemuError::NoVersion {
                    path: path.to_path_buf(),
                    detail: e.to_string(),
                })?;
        let text = String::from_utf8_lossy(&out.stdout);
        let version =
            QemuVersion::parse_version_output(&text).ok_or_else(|| QemuError::NoVersion {
                path: path.to_path_buf(),
                detail: if out.status.success() {
                    format!("`--version` printed {:?}", text.trim())
                } else {
                    format!(
                        "`--version` exited with {}: {}",
                        out.status,
                        String::from_utf8_lossy(&out.stderr).trim()
                    )
                },
            })?;
        let (data_dirs, module_dir) = extracted_tree(path);
        Ok(QemuBinary {
            path: path.to_path_buf(),
            version,
            data_dirs,
            module_dir,
        })
    }

    /// Fails when this QEMU is older than `needed` for `what`.
    pub fn require(&self, needed: QemuVersion, what: &str) -> Result<(), QemuError> {
        if self.version >= needed {
            Ok(())
        } else {
            Err(QemuError::TooOld {
                path: self.path.clone(),
                found: self.version,
                needed,
                what: what.to_string(),
            })
        }
    }

    /// Environment for the QEMU process (`QEMU_MODULE_DIR` of an extracted tree).
    pub fn env(&self) -> Vec<(OsString, OsString)> {
        self.module_dir
            .iter()
            .map(|d| ("QEMU_MODULE_DIR".into(), d.clone().into_os_string()))
            .collect()
    }
}

/// `ROOT/usr/bin/qemu-system-x86_64` outside `/usr/bin`: `-L` dirs and module dir.
fn extracted_tree(path: &Path) -> (Vec<PathBuf>, Option<PathBuf>) {
    let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let Some(root) = abs
        .parent()
        .filter(|d| d.ends_with("usr/bin"))
        .and_then(|d| d.parent())
        .and_then(|d| d.parent())
    else {
        return (Vec::new(), None);
    };
    if root == Path::new("/") {
        return (Vec::new(), None);
    }
    let share = root.join("usr/share/qemu");
    if !share.is_dir() {
        return (Vec::new(), None);
    }
    let mut dirs = vec![share];
    if Path::new("/usr/share/qemu").is_dir() {
        dirs.push(PathBuf::from("/usr/share/qemu"));
    }
    let modules = root.join("usr/lib/x86_64-linux-gnu/qemu");
    (dirs, modules.is_dir().then_some(modules))
}

/// `--qemu PATH` when given, else the newest `qemu-system-x86_64` on `path_var` (`PATH`).
pub fn find_qemu(
    explicit: Option<&Path>,
    path_var: Option<OsString>,
) -> Result<QemuBinary, QemuError> {
    if let Some(p) = explicit {
        if !p.exists() {
            return Err(QemuError::NotFound {
                where_: format!("at {} (--qemu)", p.display()),
            });
        }
        return QemuBinary::probe(p);
    }
    let dirs: Vec<PathBuf> = path_var
        .map(|v| std::env::split_paths(&v).collect())
        .unwrap_or_default();
    let mut found: Vec<QemuBinary> = Vec::new();
    let mut last_err = None;
    for d in &dirs {
        let candidate = d.join(QEMU_NAME);
        if !candidate.is_file() {
            continue;
        }
        let real = std::fs::canonicalize(&candidate).unwrap_or_else(|_| candidate.clone());
        if found
            .iter()
            .any(|q| std::fs::canonicalize(&q.path).ok().as_deref() == Some(real.as_path()))
        {
            continue;
        }
        match QemuBinary::probe(&candidate) {
            Ok(q) => found.push(q),
            Err(e) => last_err = Some(e),
        }
    }
    // Newest wins; among equals, the one earlier on PATH (stable sort keeps PATH order).
    found.sort_by_key(|q| std::cmp::Reverse(q.version));
    match found.into_iter().next() {
        Some(q) => Ok(q),
        None => Err(last_err.unwrap_or(QemuError::NotFound {
            where_: format!(
                "on PATH ({})",
                dirs.iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(":")
            ),
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_debian_and_plain_versions() {
        assert_eq!(
            QemuVersion::parse_version_output(
                "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)\nCopyright"
            ),
            Some(QemuVersion::new(10, 0, 2))
        );
        assert_eq!(
            QemuVersion::parse_version_output("QEMU emulator version 7.2.22"),
            Some(QemuVersion::new(7, 2, 22))
        );
        assert_eq!(
            QemuVersion::parse_version_output("QEMU emulator version 9.1"),
            Some(QemuVersion::new(9, 1, 0))
        );
        assert_eq!(QemuVersion::parse_version_output("garbage"), None);
        assert!(QemuVersion::new(10, 0, 0) > QemuVersion::new(8, 2, 9));
    }

    fn fake(dir: &Path, version: &str) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(dir).unwrap();
        let p = dir.join(QEMU_NAME);
        std::fs::write(
            &p,
            format!("#!/bin/sh\necho 'QEMU emulator version {version} (test)'\n"),
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn the_newest_on_path_wins_and_an_extracted_tree_brings_its_firmware_dirs() {
        let t = tempfile::tempdir().unwrap();
        let old = t.path().join("old");
        let tree = t.path().join("bpo/root");
        let new = tree.join("usr/bin");
        fake(&old, "7.2.22");
        fake(&new, "10.0.2");
        std::fs::create_dir_all(tree.join("usr/share/qemu")).unwrap();
        std::fs::create_dir_all(tree.join("usr/lib/x86_64-linux-gnu/qemu")).unwrap();
        let path = std::env::join_paths([
            old.as_path(),
            t.path().join("empty").as_path(),
            new.as_path(),
        ])
        .unwrap();
        let q = find_qemu(None, Some(path)).unwrap();
        assert_eq!(q.version, QemuVersion::new(10, 0, 2));
        assert_eq!(q.path, new.join(QEMU_NAME));
        assert_eq!(
            q.data_dirs[0],
            std::fs::canonicalize(tree.join("usr/share/qemu")).unwrap()
        );
        assert_eq!(
            q.env()[0].1,
            std::fs::canonicalize(tree.join("usr/lib/x86_64-linux-gnu/qemu"))
                .unwrap()
                .into_os_string()
        );
        let only_old = find_qemu(None, Some(old.clone().into_os_string())).unwrap();
        assert_eq!(only_old.version, QemuVersion::new(7, 2, 22));
        assert!(only_old.data_dirs.is_empty());
        let e = find_qemu(None, Some(t.path().join("empty").into_os_string())).unwrap_err();
        assert!(matches!(e, QemuError::NotFound { .. }), "{e}");
        assert!(only_old
            .require(QemuVersion::new(8, 0, 0), "vhost-user-gpu-pci under TCG")
            .is_err());
    }
}
