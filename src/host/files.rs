//! Configuration files on the real host (mdevctl definitions), written without following a
//! link below the configuration root.
//!
//! The root (`/`, or `--config-root DIR`) is what the user named and is opened as it is; from
//! there every component is opened relative to its parent's descriptor (`openat`) with
//! `O_NOFOLLOW | O_DIRECTORY`, so a link planted under the root (`etc/mdevctl.d` pointing at
//! `/root/.ssh`, say) is refused with `ELOOP` instead of being written through. A new file is
//! written to an `O_EXCL | O_NOFOLLOW` temporary beside it, synced, and linked into place
//! (`linkat` refuses an existing name, a link included), so it appears whole or not at all.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{mkdirat, Mode};
use nix::unistd::{linkat, unlinkat, UnlinkatFlags};
use vm_device_host::{config_path, HostError};

/// Opens a directory with `flags` added to `O_RDONLY | O_DIRECTORY | O_CLOEXEC`.
fn open_dir(at: Option<&OwnedFd>, name: &OsStr, flags: OFlag) -> Result<OwnedFd, Errno> {
    let raw = openat(
        at.map(|d| d.as_raw_fd()),
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | flags,
        Mode::empty(),
    )?;
    // SAFETY: `openat` returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// A directory `root/parts…` opened without following links below `root`; with `create`,
/// missing directories are made (0755) on the way.
fn walk(root: &Path, parts: &[OsString], create: bool) -> Result<OwnedFd, HostError> {
    let err = |op: &'static str, upto: usize, e: Errno| {
        let mut p = root.to_path_buf();
        p.extend(&parts[..upto]);
        HostError::io(op, p, io::Error::from(e))
    };
    let mut dir =
        open_dir(None, root.as_os_str(), OFlag::empty()).map_err(|e| err("open", 0, e))?;
    for (i, name) in parts.iter().enumerate() {
        if create {
            match mkdirat(
                Some(dir.as_raw_fd()),
                name.as_os_str(),
                Mode::from_bits_truncate(0o755),
            ) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(err("mkdir", i + 1, e)),
            }
        }
        dir = open_dir(Some(&dir), name, OFlag::O_NOFOLLOW).map_err(|e| {
            // A link opened with O_NOFOLLOW | O_DIRECTORY fails ENOTDIR on Linux: name it.
            let e = if e == Errno::ENOTDIR && is_link(&dir, name) {
                Errno::ELOOP
            } else {
                e
            };
            err("open", i + 1, e)
        })?;
    }
    Ok(dir)
}

/// True when `name` in `dir` is a symbolic link.
fn is_link(dir: &OwnedFd, name: &OsStr) -> bool {
    nix::sys::stat::fstatat(
        Some(dir.as_raw_fd()),
        name,
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .is_ok_and(|st| st.st_mode & nix::libc::S_IFMT == nix::libc::S_IFLNK)
}

/// The directory of `rel` (opened) and its last component.
fn parent_of(root: &Path, rel: &Path, create: bool) -> Result<(OwnedFd, OsString), HostError> {
    let mut parts = config_path(root, rel)?;
    let name = parts.pop().expect("config_path is never empty");
    Ok((walk(root, &parts, create)?, name))
}

pub(super) fn create_dir(root: &Path, rel: &Path) -> Result<(), HostError> {
    let parts = config_path(root, rel)?;
    walk(root, &parts, true).map(drop)
}

pub(super) fn write_file(root: &Path, rel: &Path, contents: &[u8]) -> Result<(), HostError> {
    let (dir, name) = parent_of(root, rel, false)?;
    let path = root.join(rel);
    let mut tmp = name.clone();
    tmp.push(format!(".vm-device-tmp.{}", std::process::id()));
    let fail = |op: &'static str, e: io::Error| HostError::io(op, &path, e);
    // A temporary left by a process of the same pid (long dead) is ours to replace.
    match unlinkat(
        Some(dir.as_raw_fd()),
        tmp.as_os_str(),
        UnlinkatFlags::NoRemoveDir,
    ) {
        Ok(()) | Err(Errno::ENOENT) => {}
        Err(e) => return Err(fail("unlink", e.into())),
    }
    let raw = openat(
        Some(dir.as_raw_fd()),
        tmp.as_os_str(),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o644),
    )
    .map_err(|e| fail("create", e.into()))?;
    // SAFETY: `openat` returned a new descriptor that nothing else owns.
    let mut f = unsafe { File::from_raw_fd(raw) };
    // The mode is the file's whatever the umask: mdevctl's definitions are world-readable.
    let written = nix::sys::stat::fchmod(f.as_raw_fd(), Mode::from_bits_truncate(0o644))
        .map_err(io::Error::from)
        .and_then(|()| f.write_all(contents))
        .and_then(|()| f.sync_all())
        .map_err(|e| fail("write", e))
        .and_then(|()| {
            // linkat never replaces: an existing name (a planted link too) is EEXIST.
            linkat(
                Some(dir.as_raw_fd()),
                tmp.as_os_str(),
                Some(dir.as_raw_fd()),
                name.as_os_str(),
                nix::fcntl::AtFlags::empty(),
            )
            .map_err(|e| fail("create", e.into()))
        });
    drop(f);
    let _ = unlinkat(
        Some(dir.as_raw_fd()),
        tmp.as_os_str(),
        UnlinkatFlags::NoRemoveDir,
    );
    written?;
    nix::unistd::fsync(dir.as_raw_fd()).map_err(|e| fail("fsync", e.into()))
}

pub(super) fn remove(root: &Path, rel: &Path, dir_flag: UnlinkatFlags) -> Result<(), HostError> {
    let (dir, name) = parent_of(root, rel, false)?;
    unlinkat(Some(dir.as_raw_fd()), name.as_os_str(), dir_flag)
        .map_err(|e| HostError::io("remove", root.join(rel), e.into()))?;
    nix::unistd::fsync(dir.as_raw_fd())
        .map_err(|e| HostError::io("fsync", root.join(rel), e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_once_and_refuses_a_second_time() {
        let t = tempfile::tempdir().unwrap();
        let rel = Path::new("etc/mdevctl.d/mtty/f");
        create_dir(t.path(), Path::new("etc/mdevctl.d/mtty")).unwrap();
        write_file(t.path(), rel, b"{}").unwrap();
        assert_eq!(std::fs::read(t.path().join(rel)).unwrap(), b"{}");
        let again = write_file(t.path(), rel, b"[]").unwrap_err();
        assert_eq!(again.raw_os_error(), Some(nix::libc::EEXIST), "{again}");
        assert_eq!(std::fs::read(t.path().join(rel)).unwrap(), b"{}");
        // No temporary is left beside it.
        let names: Vec<_> = std::fs::read_dir(t.path().join("etc/mdevctl.d/mtty"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![OsString::from("f")]);
        remove(t.path(), rel, UnlinkatFlags::NoRemoveDir).unwrap();
        remove(
            t.path(),
            Path::new("etc/mdevctl.d/mtty"),
            UnlinkatFlags::RemoveDir,
        )
        .unwrap();
        assert!(!t.path().join("etc/mdevctl.d/mtty").exists());
    }

    #[test]
    fn a_link_below_the_root_is_never_followed() {
        let t = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("etc")).unwrap();
        std::os::unix::fs::symlink(outside.path(), t.path().join("etc/mdevctl.d")).unwrap();
        let e = create_dir(t.path(), Path::new("etc/mdevctl.d/mtty")).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(nix::libc::ELOOP), "{e}");
        let e = write_file(t.path(), Path::new("etc/mdevctl.d/f"), b"x").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(nix::libc::ELOOP), "{e}");
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
        // A link where the file goes is an existing name, not a way out.
        std::fs::remove_file(t.path().join("etc/mdevctl.d")).unwrap();
        std::fs::create_dir(t.path().join("etc/mdevctl.d")).unwrap();
        let target = outside.path().join("victim");
        std::os::unix::fs::symlink(&target, t.path().join("etc/mdevctl.d/f")).unwrap();
        let e = write_file(t.path(), Path::new("etc/mdevctl.d/f"), b"x").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(nix::libc::EEXIST), "{e}");
        assert!(!target.exists());
    }

    #[test]
    fn dot_dot_and_absolute_paths_are_refused_before_any_access() {
        let t = tempfile::tempdir().unwrap();
        for bad in ["../x", "/etc/x", "etc/../x", "", "."] {
            assert!(write_file(t.path(), Path::new(bad), b"x").is_err(), "{bad}");
            assert!(create_dir(t.path(), Path::new(bad)).is_err(), "{bad}");
        }
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 0);
    }
}
