//! The state directory (`/run/vm-device`): checked before it is trusted, and written without
//! following links.
//!
//! vm-cli runs as root, and what its journals say is replayed on the host. So, as ssh's
//! `StrictModes` does for `~/.ssh`, the directory and every parent up to `/` must be owned by
//! the user running vm-cli or by root, and none may be writable by group or others — except
//! a parent with the sticky bit (`/tmp`), where nobody else can rename or delete our entry.
//! The directories vm-device creates are 0700 and its files 0600 whatever the umask. Journal
//! temp files are created with `O_EXCL | O_NOFOLLOW` and lock files with `O_NOFOLLOW`, both
//! relative to a descriptor of the checked directory (`openat`), so a link planted in the
//! directory is never followed.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, renameat, OFlag};
use nix::sys::stat::{fchmod, fstat, mkdirat, Mode};
use nix::unistd::{unlinkat, UnlinkatFlags};

/// The largest journal read back (a real one is a few KiB).
const MAX_JOURNAL: u64 = 1 << 20;

/// The state directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The directory (or a parent) could be changed by someone else: it is not trusted.
    #[error("state directory {}: {path_shown} {why}; vm-cli does not trust journals and locks others could write: {remedy}", dir.display(), path_shown = path.display())]
    Unsafe {
        /// The state directory.
        dir: PathBuf,
        /// The offending directory or file.
        path: PathBuf,
        /// What is wrong (`is writable by group or others (mode 0777)`).
        why: String,
        /// What to do.
        remedy: String,
    },
    /// A call failed.
    #[error("state directory {}: {op} {}: {source}", dir.display(), path.display())]
    Io {
        /// The state directory.
        dir: PathBuf,
        /// What was done (`create`, `read`).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}

impl StateError {
    /// The offending file or directory.
    pub fn path(&self) -> &Path {
        match self {
            StateError::Unsafe { path, .. } | StateError::Io { path, .. } => path,
        }
    }
}

impl From<StateError> for io::Error {
    fn from(e: StateError) -> Self {
        let kind = match &e {
            StateError::Io { source, .. } => source.kind(),
            StateError::Unsafe { .. } => io::ErrorKind::PermissionDenied,
        };
        io::Error::new(kind, e.to_string())
    }
}

/// True for a journal and lock key: letters, digits, `_ . : -`, not starting with a dot,
/// at most 200 bytes. Keys name files, so nothing else may reach a path.
pub fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 200
        && !key.starts_with('.')
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

fn bad_key(key: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "`{}` is not a journal key (letters, digits, `_ . : -`)",
            key.escape_debug()
        ),
    )
}

/// A checked state directory, open.
#[derive(Debug)]
pub struct StateDir {
    path: PathBuf,
    fd: OwnedFd,
}

fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Who may own a trusted directory: this user or root.
fn trusted_owner(uid: u32) -> bool {
    uid == 0 || uid == euid()
}

fn owner_remedy(path: &Path) -> String {
    format!(
        "`chown {} {}`, or pass another --state-dir",
        euid(),
        path.display()
    )
}

impl StateDir {
    /// Opens `dir`, creating it (and missing parents, 0700) when `create`; `Ok(None)` when
    /// it is absent and not `create`. Refuses a directory that is not one, or that others
    /// could change (see the module documentation).
    pub fn open(dir: &Path, create: bool) -> Result<Option<Self>, StateError> {
        let io_err = |op, path: &Path, source| StateError::Io {
            dir: dir.to_path_buf(),
            op,
            path: path.to_path_buf(),
            source,
        };
        let mut created = false;
        match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(io_err(
                    "open",
                    dir,
                    io::Error::new(
                        io::ErrorKind::NotADirectory,
                        "not a directory (--state-dir must name a directory)",
                    ),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(|e| io_err("create", dir, e))?;
                created = true;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("open", dir, e)),
        }
        let canonical = std::fs::canonicalize(dir).map_err(|e| io_err("resolve", dir, e))?;
        let checked = check_chain(dir, &canonical)?;
        let raw = openat(
            None,
            &canonical,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_err("open", &canonical, io::Error::from(e)))?;
        // SAFETY: `openat` returned a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let st = fstat(fd.as_raw_fd()).map_err(|e| io_err("stat", &canonical, e.into()))?;
        if (st.st_dev, st.st_ino) != checked {
            return Err(StateError::Unsafe {
                dir: dir.to_path_buf(),
                path: canonical,
                why: "was replaced while it was checked".into(),
                remedy: "find out who else writes there".into(),
            });
        }
        if created {
            fchmod(fd.as_raw_fd(), Mode::from_bits_truncate(0o700))
                .map_err(|e| io_err("chmod", &canonical, e.into()))?;
        }
        Ok(Some(StateDir {
            path: dir.to_path_buf(),
            fd,
        }))
    }

    /// The directory as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io_err(&self, op: &'static str, path: PathBuf, source: io::Error) -> StateError {
        StateError::Io {
            dir: self.path.clone(),
            op,
            path,
            source,
        }
    }

    /// The subdirectory `name` (`journal`, `locks`), created 0700 when `create`; `Ok(None)`
    /// when absent and not `create`. It must be a directory (not a link) owned by this user
    /// or root and not writable by group or others.
    pub(crate) fn subdir(&self, name: &str, create: bool) -> Result<Option<OwnedFd>, StateError> {
        let path = self.path.join(name);
        if create {
            match mkdirat(
                Some(self.fd.as_raw_fd()),
                name,
                Mode::from_bits_truncate(0o700),
            ) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(self.io_err("create", path, e.into())),
            }
        }
        let raw = match openat(
            Some(self.fd.as_raw_fd()),
            name,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) if !create => return Ok(None),
            Err(Errno::ELOOP) => {
                return Err(StateError::Unsafe {
                    dir: self.path.clone(),
                    path: path.clone(),
                    why: "is a symbolic link".into(),
                    remedy: format!("remove it (`rm {}`)", path.display()),
                })
            }
            Err(e) => return Err(self.io_err("open", path, e.into())),
        };
        // SAFETY: `openat` returned a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let st = fstat(fd.as_raw_fd()).map_err(|e| self.io_err("stat", path.clone(), e.into()))?;
        if !trusted_owner(st.st_uid) {
            return Err(StateError::Unsafe {
                dir: self.path.clone(),
                path: path.clone(),
                why: format!("is owned by uid {}", st.st_uid),
                remedy: owner_remedy(&path),
            });
        }
        if st.st_mode & 0o022 != 0 {
            return Err(StateError::Unsafe {
                dir: self.path.clone(),
                path: path.clone(),
                why: format!(
                    "is writable by group or others (mode {:04o})",
                    st.st_mode & 0o7777
                ),
                remedy: format!("`chmod 700 {}`", path.display()),
            });
        }
        Ok(Some(fd))
    }

    /// Opens `name` in `dir` for reading without following a link; it must be a regular
    /// file. `Ok(None)` when absent.
    pub(crate) fn read_file(
        &self,
        dir: &OwnedFd,
        sub: &str,
        name: &str,
    ) -> io::Result<Option<Vec<u8>>> {
        let raw = match openat(
            Some(dir.as_raw_fd()),
            name,
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(None),
            Err(Errno::ELOOP) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{}: is a symbolic link, not a journal; remove it",
                        self.path.join(sub).join(name).display()
                    ),
                ))
            }
            Err(e) => return Err(e.into()),
        };
        // SAFETY: `openat` returned a new descriptor that nothing else owns.
        let mut f = unsafe { File::from_raw_fd(raw) };
        let m = f.metadata()?;
        if !m.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: not a regular file",
                    self.path.join(sub).join(name).display()
                ),
            ));
        }
        if m.len() > MAX_JOURNAL {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: {} bytes, larger than any journal ({MAX_JOURNAL})",
                    self.path.join(sub).join(name).display(),
                    m.len()
                ),
            ));
        }
        let mut bytes = Vec::with_capacity(m.len() as usize);
        Read::by_ref(&mut f)
            .take(MAX_JOURNAL + 1)
            .read_to_end(&mut bytes)?;
        Ok(Some(bytes))
    }

    /// Replaces `journal/NAME` with `bytes` atomically: a temp file created with
    /// `O_EXCL | O_NOFOLLOW` (0600), fsync, rename, fsync of the directory. A failed write
    /// leaves no temp file.
    pub(crate) fn write_journal(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        let dir = self.subdir("journal", true)?.expect("created");
        let tmp = format!(".{name}.tmp");
        // A temp file left by a killed writer, or something planted there: unlink the name
        // (never what a link points to).
        match unlinkat(
            Some(dir.as_raw_fd()),
            tmp.as_str(),
            UnlinkatFlags::NoRemoveDir,
        ) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(e.into()),
        }
        let raw = openat(
            Some(dir.as_raw_fd()),
            tmp.as_str(),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )?;
        // SAFETY: `openat` returned a new descriptor that nothing else owns.
        let mut f = unsafe { File::from_raw_fd(raw) };
        let written = f.write_all(bytes).and_then(|()| f.sync_all());
        drop(f);
        let renamed = written.and_then(|()| {
            renameat(
                Some(dir.as_raw_fd()),
                tmp.as_str(),
                Some(dir.as_raw_fd()),
                name,
            )
            .map_err(io::Error::from)
        });
        if let Err(e) = renamed {
            let _ = unlinkat(
                Some(dir.as_raw_fd()),
                tmp.as_str(),
                UnlinkatFlags::NoRemoveDir,
            );
            return Err(e);
        }
        nix::unistd::fsync(dir.as_raw_fd()).map_err(io::Error::from)
    }

    /// Deletes `journal/NAME` (absent is fine) and syncs the directory.
    pub(crate) fn remove_journal(&self, name: &str) -> io::Result<()> {
        let Some(dir) = self.subdir("journal", false)? else {
            return Ok(());
        };
        match unlinkat(Some(dir.as_raw_fd()), name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(e.into()),
        }
        nix::unistd::fsync(dir.as_raw_fd()).map_err(io::Error::from)
    }

    /// Opens the lock file of `key` (created 0600 when `create`) without following a link;
    /// `Ok(None)` when absent and not `create`.
    pub(crate) fn lock_file(&self, key: &str, create: bool) -> io::Result<Option<File>> {
        if !valid_key(key) {
            return Err(bad_key(key));
        }
        let Some(dir) = self.subdir("locks", create)? else {
            return Ok(None);
        };
        let mut flags = OFlag::O_RDWR | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
        if create {
            flags |= OFlag::O_CREAT;
        }
        let raw = match openat(
            Some(dir.as_raw_fd()),
            key,
            flags,
            Mode::from_bits_truncate(0o600),
        ) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) if !create => return Ok(None),
            Err(Errno::ELOOP) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{}: is a symbolic link, not a lock; remove it",
                        self.path.join("locks").join(key).display()
                    ),
                ))
            }
            Err(e) => return Err(e.into()),
        };
        // SAFETY: `openat` returned a new descriptor that nothing else owns.
        let f = unsafe { File::from_raw_fd(raw) };
        let m = f.metadata()?;
        if !m.is_file() || !trusted_owner(m.uid()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: not a regular file of this user or root; remove it",
                    self.path.join("locks").join(key).display()
                ),
            ));
        }
        Ok(Some(f))
    }
}

/// Checks `canonical` and each parent up to `/` (ssh StrictModes); returns the device and
/// inode of `canonical` as checked.
fn check_chain(dir: &Path, canonical: &Path) -> Result<(u64, u64), StateError> {
    let mut first = None;
    for (i, p) in canonical.ancestors().enumerate() {
        let m = std::fs::symlink_metadata(p).map_err(|source| StateError::Io {
            dir: dir.to_path_buf(),
            op: "stat",
            path: p.to_path_buf(),
            source,
        })?;
        if i == 0 {
            first = Some((m.dev(), m.ino()));
        }
        if !trusted_owner(m.uid()) {
            return Err(StateError::Unsafe {
                dir: dir.to_path_buf(),
                path: p.to_path_buf(),
                why: format!(
                    "is owned by uid {}, neither you (uid {}) nor root",
                    m.uid(),
                    euid()
                ),
                remedy: owner_remedy(p),
            });
        }
        let mode = m.mode();
        let sticky_parent = i > 0 && mode & 0o1000 != 0;
        if mode & 0o022 != 0 && !sticky_parent {
            return Err(StateError::Unsafe {
                dir: dir.to_path_buf(),
                path: p.to_path_buf(),
                why: format!(
                    "is writable by group or others (mode {:04o})",
                    mode & 0o7777
                ),
                remedy: format!("`chmod go-w {}`, or pass another --state-dir", p.display()),
            });
        }
    }
    Ok(first.expect("a path has itself as first ancestor"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn keys_name_files_and_nothing_else() {
        for k in [
            "group-7",
            "mdev-mbochs",
            "sriov-0000:4b:00.0",
            "launch-mdev-a_b",
        ] {
            assert!(valid_key(k), "{k}");
        }
        for k in ["", "../../x", "a/b", ".hidden", "x\n", "a b"] {
            assert!(!valid_key(k), "{k:?}");
        }
    }

    #[test]
    fn created_directories_are_0700_whatever_the_umask() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("a/b");
        let s = StateDir::open(&dir, true).unwrap().unwrap();
        s.write_journal("group-1.json", b"{}").unwrap();
        for p in [dir.clone(), dir.join("journal")] {
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", p.display());
        }
        let mode = std::fs::metadata(dir.join("journal/group-1.json"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn a_world_writable_directory_is_refused_with_the_remedy() {
        let base = tempfile::tempdir().unwrap();
        std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = StateDir::open(base.path(), true).unwrap_err();
        assert!(e.to_string().contains("mode 0777"), "{e}");
        assert!(e.to_string().contains("chmod go-w"), "{e}");
    }
}
