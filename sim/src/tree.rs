//! A copy-on-write view of a fixture directory: reads fall through to disk, changes live in
//! an in-memory overlay keyed by canonical virtual path (`/sys/...`).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use vm_device_host::NodeKind;

/// Symbolic-link hops allowed while resolving one path, as Linux's `MAXSYMLINKS`.
const MAX_HOPS: usize = 40;

/// An overlay entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Entry {
    File(Vec<u8>),
    Link(PathBuf),
    /// A directory; `opaque` hides whatever the fixture had at this path.
    Dir {
        opaque: bool,
    },
    /// Removed: hides the fixture's node and everything under it.
    Gone,
}

/// One node of a [`Snapshot`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum SnapNode {
    /// A regular file and its bytes.
    File(Vec<u8>),
    /// A link and its stored target.
    Link(PathBuf),
    /// A directory.
    Dir,
}

/// The whole tree, path by path.
pub type Snapshot = BTreeMap<PathBuf, SnapNode>;

#[derive(Clone)]
pub(crate) struct Tree {
    root: PathBuf,
    /// The fixture root, open: disk lookups go relative to it (`openat`), so the kernel
    /// walks only the path inside the fixture, not the fixture's own location each time.
    /// `None` when it could not be opened: absolute paths are used then.
    root_fd: Option<Arc<OwnedFd>>,
    overlay: BTreeMap<PathBuf, Entry>,
    /// Directories the fixture has without holding them on disk (`.fixture/empty-dirs`).
    /// A hash set: a host opens with hundreds of them, and a B-tree of `PathBuf`s compares
    /// component by component on every insert.
    base_dirs: std::collections::HashSet<PathBuf, std::hash::BuildHasherDefault<Fnv>>,
    /// What the fixture on disk holds at a path (it never changes): saves a `stat` and, for
    /// small files, the read that tells a flattened link from an attribute.
    disk_nodes: RefCell<PathMap<Option<DiskNode>>>,
    /// Resolved paths; cleared whenever the overlay changes.
    /// Indexed by `follow_last`.
    resolved: [RefCell<PathMap<PathBuf>>; 2],
    /// File types learnt from directory listings.
    disk_kinds: RefCell<PathMap<DiskKind>>,
    /// Overlay entries that hide what the fixture has below them (`Gone`, opaque
    /// directories, files and links): while there are none, no ancestor walk is needed.
    hiders: usize,
    /// The overlay's keys by bytes: most lookups miss, and a hash miss is cheaper than a
    /// component-wise `Path` comparison down the B-tree.
    overlay_keys: std::collections::HashSet<std::ffi::OsString, std::hash::BuildHasherDefault<Fnv>>,
}

/// A word-at-a-time multiplicative hash (FxHash's): the caches are keyed by path bytes,
/// hashed on every lookup of a scan; SipHash over `Path`'s component-wise `Hash` cost more
/// than the lookups it saved. Keys come from the fixture, not from an adversary.
#[derive(Default)]
pub(crate) struct Fnv(u64);

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Eight bytes at a time (FxHash's step): paths are long and hashed on every lookup.
        let mut h = self.0;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_le_bytes(c.try_into().expect("8 bytes"));
            h = (h.rotate_left(5) ^ w).wrapping_mul(0x517c_c1b7_2722_0a95);
        }
        for b in chunks.remainder() {
            h = (h.rotate_left(5) ^ u64::from(*b)).wrapping_mul(0x517c_c1b7_2722_0a95);
        }
        self.0 = h;
    }
}

/// A map keyed by a path's bytes.
pub(crate) type PathMap<V> = HashMap<std::ffi::OsString, V, std::hash::BuildHasherDefault<Fnv>>;

fn key(p: &Path) -> std::ffi::OsString {
    p.as_os_str().to_owned()
}

/// An overlay key in the normalised form that resolved paths have (no trailing `/`).
fn normal_key(p: &Path) -> std::ffi::OsString {
    p.components().collect::<PathBuf>().into_os_string()
}

fn hides(e: &Entry) -> bool {
    !matches!(e, Entry::Dir { opaque: false })
}

/// What the fixture on disk holds at a path, as [`Tree`] keeps it.
#[derive(Debug, Clone)]
enum DiskNode {
    /// A directory or a link, as the overlay would hold it.
    Entry(Entry),
    /// A regular file and its bytes, read when the node was first looked at (`None`: it
    /// could not be read then; `read` opens it again and reports why).
    File(Option<Vec<u8>>),
}

impl DiskNode {
    /// The node as [`Tree::node`] gives it: a file's bytes stay here (a marker goes out).
    fn entry(&self) -> Entry {
        match self {
            DiskNode::Entry(e) => e.clone(),
            DiskNode::File(_) => Entry::File(Vec::new()),
        }
    }
}

/// The type of a fixture node as a directory listing gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DiskKind {
    Link,
    Dir,
    File,
}

impl DiskKind {
    fn of(ft: std::fs::FileType) -> Self {
        if ft.is_symlink() {
            DiskKind::Link
        } else if ft.is_dir() {
            DiskKind::Dir
        } else {
            DiskKind::File
        }
    }
}

/// A fixture path as the `*at` calls take it: the root's fd and the path below it, or (no
/// fd) the absolute path on disk.
struct At<'a> {
    dirfd: Option<RawFd>,
    path: std::borrow::Cow<'a, Path>,
    /// The most a read of this path takes (see [`cap_for`]).
    cap: usize,
}

pub use vm_device_host::{cap_for, MAX_ATTR_BYTES, MAX_PROC_BYTES};

/// Opens a fixture file for reading (`O_CLOEXEC`, plus `extra` flags).
fn open_at(at: &At<'_>, extra: nix::fcntl::OFlag) -> io::Result<std::fs::File> {
    use nix::fcntl::OFlag;
    let fd = nix::fcntl::openat(
        at.dirfd,
        at.path.as_ref(),
        OFlag::O_RDONLY | OFlag::O_CLOEXEC | extra,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| io::Error::from_raw_os_error(e as i32))?;
    // SAFETY: `openat` just returned this fd and nothing else owns it.
    Ok(unsafe { std::fs::File::from_raw_fd(fd) })
}

/// `readlinkat(2)` in one call (nix's version adds an `fstatat` to size its buffer).
fn read_link_at(at: &At<'_>) -> io::Result<PathBuf> {
    use std::os::unix::ffi::OsStringExt;
    let mut buf = [0u8; MAX_LINK_FILE as usize];
    let n = nix::NixPath::with_nix_path(at.path.as_ref(), |c| {
        // SAFETY: `c` is NUL-terminated and `buf` is writable for `buf.len()` bytes.
        unsafe {
            nix::libc::readlinkat(
                at.dirfd.unwrap_or(nix::libc::AT_FDCWD),
                c.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        }
    })
    .map_err(|e| io::Error::from_raw_os_error(e as i32))?;
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // `PATH_MAX` bytes filled means the target may have been cut short: no kernel link is
    // that long, so refuse it as Linux refuses an over-long path.
    let n = n as usize;
    if n >= buf.len() {
        return Err(io::Error::from_raw_os_error(libc_errno::ENAMETOOLONG));
    }
    Ok(PathBuf::from(std::ffi::OsString::from_vec(
        buf[..n].to_vec(),
    )))
}

/// The type of a fixture node from one `fstatat(AT_SYMLINK_NOFOLLOW)`.
fn stat_kind(at: &At<'_>) -> io::Result<DiskKind> {
    use nix::sys::stat::{fstatat, SFlag};
    let st = fstatat(
        at.dirfd,
        at.path.as_ref(),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(|e| io::Error::from_raw_os_error(e as i32))?;
    let fmt = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
    Ok(if fmt == SFlag::S_IFLNK {
        DiskKind::Link
    } else if fmt == SFlag::S_IFDIR {
        DiskKind::Dir
    } else {
        DiskKind::File
    })
}

/// Reads a whole file without the `stat` and `lseek` that `std::fs::read` adds to size its
/// buffer (fixture files are small).
fn read_small(at: &At<'_>, buf: &mut Vec<u8>) -> io::Result<()> {
    let mut f = open_at(at, nix::fcntl::OFlag::O_NONBLOCK)?;
    regular(&f)?;
    read_all(&mut f, buf, at.cap)
}

/// Refuses what is not a regular file (a FIFO would block a read forever, a device node
/// is no attribute).
fn regular(f: &std::fs::File) -> io::Result<()> {
    let ft = f.metadata()?.file_type();
    if ft.is_file() || ft.is_dir() {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a regular file (a FIFO, socket or device node where an attribute belongs); not read",
        ))
    }
}

/// Reads a whole fixture file outside the tree (`.fixture/…`): opened without blocking,
/// refused unless it is a regular file, at most `cap` bytes.
pub fn read_fixture_file(path: &Path, cap: usize) -> io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
        .open(path)?;
    regular(&f)?;
    let mut buf = Vec::new();
    f.take(cap as u64 + 1).read_to_end(&mut buf)?;
    if buf.len() > cap {
        return Err(too_big(cap));
    }
    Ok(buf)
}

fn too_big(cap: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "larger than {} KiB, which no sysfs attribute is; not read",
            cap >> 10
        ),
    )
}

/// Reads an open fixture file to its end. A short read of a regular file on a local file
/// system is its end, which saves the second `read` that would return 0.
fn read_all(f: &mut std::fs::File, buf: &mut Vec<u8>, cap: usize) -> io::Result<()> {
    use std::io::Read;
    buf.resize(512, 0);
    let mut n = 0;
    loop {
        if n == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        if n > cap {
            return Err(too_big(cap));
        }
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => {
                n += k;
                if n < buf.len() {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(n);
    Ok(())
}

/// What a path of the fixture is, found with one `open(O_NOFOLLOW)` instead of a `stat`
/// and an `open`: a link refuses (`ELOOP`), a directory opens but refuses `read`
/// (`EISDIR`), and a file hands over its bytes at once.
fn probe_disk(at: &At<'_>) -> Option<(DiskKind, Option<Vec<u8>>)> {
    let flags = nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_NONBLOCK;
    match open_at(at, flags) {
        Ok(mut f) => {
            if regular(&f).is_err() {
                // A FIFO or device node: a file that `read` refuses.
                return Some((DiskKind::File, None));
            }
            let mut buf = Vec::new();
            match read_all(&mut f, &mut buf, at.cap) {
                Ok(()) => Some((DiskKind::File, Some(buf))),
                Err(e) if e.raw_os_error() == Some(libc_errno::EISDIR) => {
                    Some((DiskKind::Dir, None))
                }
                Err(_) => Some((DiskKind::File, None)),
            }
        }
        Err(e) if e.raw_os_error() == Some(libc_errno::ELOOP) => Some((DiskKind::Link, None)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        // Anything else (a fixture file without read permission): ask stat what it is.
        Err(_) => Some((stat_kind(at).ok()?, None)),
    }
}

/// What the caller of a lookup expects to find, so that the first look at a fixture path
/// costs one system call where the guess is right (and stays correct where it is wrong).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expect {
    /// Probably a file to read: `open` it, which reads it too.
    File,
    /// A directory (a path's parent, a listing, a device directory to canonicalize):
    /// `fstatat`, instead of an `open`, a `read` that fails and a `close`.
    Dir,
    /// A link to read: `readlinkat`, instead of an `open` that fails with `ELOOP` first.
    Link,
}

/// Longest link target a flattened link file may hold (`PATH_MAX`).
const MAX_LINK_FILE: u64 = 4096;

/// True when a regular file's bytes are a relative link target written out as text.
///
/// A fixture checked out where symbolic links are not kept (git with `core.symlinks=false`,
/// or a copy that dereferenced nothing but flattened links) stores each link as a file
/// holding the target. Kernel attribute files always end in a newline (or are binary, like
/// `config`), and the kernel's links are always relative (`../../bus/pci/drivers/X`), so a
/// file that starts with `../` and holds no newline or NUL is read as the link it stands for.
pub(crate) fn flattened_link(bytes: &[u8]) -> Option<PathBuf> {
    if !bytes.starts_with(b"../") || bytes.iter().any(|b| *b == b'\n' || *b == 0) {
        return None;
    }
    // Some recorders keep the trailing `/` of a directory target (hwloc's trees).
    let text = std::str::from_utf8(bytes).ok()?;
    Some(PathBuf::from(text.strip_suffix('/').unwrap_or(text)))
}

/// The relative link text from directory `from_dir` to `to` (both canonical), as sysfs
/// writes its links: up to the common ancestor, then down.
pub(crate) fn relative(from_dir: &Path, to: &Path) -> PathBuf {
    let a: Vec<_> = from_dir.components().collect();
    let b: Vec<_> = to.components().collect();
    let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut out = PathBuf::new();
    for _ in common..a.len() {
        out.push("..");
    }
    for c in &b[common..] {
        out.push(c.as_os_str());
    }
    out
}

/// True for the errors that mean "nothing at this path" (a missing node, or a file where
/// a directory was needed on the way).
fn is_absent(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc_errno::ENOENT) | Some(libc_errno::ENOTDIR)
    )
}

fn enoent() -> io::Error {
    io::Error::from_raw_os_error(libc_errno::ENOENT)
}

/// The few errno values the simulator uses (Linux x86-64 numbering).
pub mod libc_errno {
    /// No such file or directory.
    pub const ENOENT: i32 = 2;
    /// Not a directory.
    pub const ENOTDIR: i32 = 20;
    /// Is a directory.
    pub const EISDIR: i32 = 21;
    /// Invalid argument.
    pub const EINVAL: i32 = 22;
    /// Too many levels of symbolic links.
    pub const ELOOP: i32 = 40;
    /// File name too long.
    pub const ENAMETOOLONG: i32 = 36;
}

impl Tree {
    pub(crate) fn new(root: PathBuf) -> Self {
        use nix::fcntl::OFlag;
        let root_fd = nix::fcntl::openat(
            None,
            &root,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .ok()
        // SAFETY: `openat` just returned this fd and nothing else owns it.
        .map(|fd| Arc::new(unsafe { OwnedFd::from_raw_fd(fd) }));
        Self {
            root,
            root_fd,
            overlay: BTreeMap::new(),
            base_dirs: Default::default(),
            disk_nodes: Default::default(),
            resolved: Default::default(),
            hiders: 0,
            overlay_keys: Default::default(),
            disk_kinds: Default::default(),
        }
    }

    /// Records an empty directory of the fixture (from `.fixture/empty-dirs`).
    pub(crate) fn add_base_dir(&mut self, p: &Path) {
        self.ensure_dir(p);
        let mut cur = Some(p);
        while let Some(d) = cur {
            // A directory already recorded came with all its ancestors.
            if d == Path::new("/") || !self.base_dirs.insert(d.to_path_buf()) {
                break;
            }
            cur = d.parent();
        }
    }

    /// True when the fixture itself has a node at `p` (on disk or as a listed empty dir).
    pub(crate) fn in_base(&self, p: &Path) -> bool {
        self.base_dirs.contains(p) || std::fs::symlink_metadata(self.disk(p)).is_ok()
    }

    /// Removes `p` and then each parent up to (not including) `stop` while it is an empty
    /// directory the fixture did not have: directories the simulator created for a node
    /// (`/sys/class/vfio`) go away with their last entry, so undoing every change gives back
    /// the fixture byte for byte.
    pub(crate) fn prune_empty(&mut self, p: &Path, stop: &Path) {
        let mut cur = p.to_path_buf();
        while cur != stop && cur.starts_with(stop) {
            let empty = matches!(self.node(&cur), Some(Entry::Dir { .. }))
                && self.list(&cur).map(|l| l.is_empty()).unwrap_or(false);
            if !empty || self.in_base(&cur) {
                break;
            }
            self.forget(&cur);
            if !cur.pop() {
                break;
            }
        }
    }

    /// Removes `p`, then every parent directory left empty that the fixture did not have.
    pub(crate) fn remove_pruned(&mut self, p: &Path) {
        self.remove(p);
        if let Some(parent) = p.parent() {
            self.prune_empty(parent, Path::new("/"));
        }
    }

    /// Drops every overlay entry at and below `p`, so the fixture's own content shows again.
    pub(crate) fn restore_base(&mut self, p: &Path) {
        let below: Vec<PathBuf> = self
            .overlay
            .range(p.to_path_buf()..)
            .take_while(|(k, _)| k.starts_with(p))
            .map(|(k, _)| k.clone())
            .collect();
        for k in below {
            self.forget(&k);
        }
        let mut empty: Vec<PathBuf> = self
            .base_dirs
            .iter()
            .filter(|d| d.starts_with(p))
            .cloned()
            .collect();
        // Parents first, as the fixture lists them.
        empty.sort();
        for d in empty {
            self.ensure_dir(&d);
        }
    }

    /// Writes a regular file (overlay only).
    pub(crate) fn put_file(&mut self, p: &Path, bytes: impl Into<Vec<u8>>) {
        self.put(p, Entry::File(bytes.into()));
    }

    /// Writes a symbolic link at `p` pointing at canonical `target`, relative as sysfs does.
    pub(crate) fn put_link(&mut self, p: &Path, target: &Path) {
        let from = p.parent().unwrap_or(Path::new("/"));
        self.put(p, Entry::Link(relative(from, target)));
    }

    /// True when a node exists at canonical `p` (no link followed).
    pub(crate) fn has(&self, p: &Path) -> bool {
        self.node(p).is_some()
    }

    /// Reads a file as trimmed text; `None` when absent.
    pub(crate) fn text(&self, p: &Path) -> Option<String> {
        let b = self.read(p).ok()?;
        Some(String::from_utf8_lossy(&b).trim().to_string())
    }

    /// The last component of the link at `p`'s target (`driver` -> `vfio-pci`).
    pub(crate) fn link_name(&self, p: &Path) -> Option<String> {
        match self.node(p)? {
            Entry::Link(t) => t.file_name().map(|n| n.to_string_lossy().into_owned()),
            _ => None,
        }
    }

    fn disk(&self, p: &Path) -> PathBuf {
        self.root.join(p.strip_prefix("/").unwrap_or(p))
    }

    /// Canonical path `p` as the `*at` calls take it.
    fn at<'a>(&self, p: &'a Path) -> At<'a> {
        match &self.root_fd {
            Some(fd) => {
                let rel = p.strip_prefix("/").unwrap_or(p);
                At {
                    cap: cap_for(p),
                    dirfd: Some(fd.as_raw_fd()),
                    path: if rel.as_os_str().is_empty() {
                        std::borrow::Cow::Borrowed(Path::new("."))
                    } else {
                        std::borrow::Cow::Borrowed(rel)
                    },
                }
            }
            None => At {
                cap: cap_for(p),
                dirfd: None,
                path: std::borrow::Cow::Owned(self.disk(p)),
            },
        }
    }

    /// The node at canonical path `p` (no link followed), overlay first.
    pub(crate) fn node(&self, p: &Path) -> Option<Entry> {
        self.node_expect(p, Expect::File)
    }

    /// [`node`](Self::node), saying what the caller expects there (see [`Expect`]).
    pub(crate) fn node_expect(&self, p: &Path, expect: Expect) -> Option<Entry> {
        if let Some(e) = self.overlay_get(p) {
            return (*e != Entry::Gone).then(|| e.clone());
        }
        if self.hidden_by_ancestor(p) {
            return None;
        }
        if let Some(e) = self.disk_nodes.borrow().get(p.as_os_str()) {
            return e.as_ref().map(DiskNode::entry);
        }
        let e = self.read_disk_node(p, expect);
        let out = e.as_ref().map(DiskNode::entry);
        self.disk_nodes.borrow_mut().insert(key(p), e);
        out
    }

    fn read_disk_node(&self, p: &Path, expect: Expect) -> Option<DiskNode> {
        let d = self.at(p);
        let known = self.disk_kinds.borrow().get(p.as_os_str()).copied();
        let (kind, mut bytes) = match (known, expect) {
            (Some(k), _) => (k, None),
            (None, Expect::File) => probe_disk(&d)?,
            (None, Expect::Dir) => match stat_kind(&d) {
                Ok(k) => (k, None),
                Err(e) if is_absent(&e) => return None,
                Err(_) => probe_disk(&d)?,
            },
            (None, Expect::Link) => match read_link_at(&d) {
                Ok(t) => return Some(DiskNode::Entry(Entry::Link(t))),
                Err(e) if is_absent(&e) => return None,
                // Not a link (EINVAL), or unreadable: find out what it is.
                Err(_) => probe_disk(&d)?,
            },
        };
        match kind {
            DiskKind::Link => read_link_at(&d)
                .ok()
                .map(|t| DiskNode::Entry(Entry::Link(t))),
            DiskKind::Dir => Some(DiskNode::Entry(Entry::Dir { opaque: false })),
            DiskKind::File => {
                // Read it now (one open, no stat): it is either a flattened link or an
                // attribute whose bytes `read` will want.
                if bytes.is_none() {
                    let mut buf = Vec::new();
                    if read_small(&d, &mut buf).is_ok() {
                        bytes = Some(buf);
                    }
                }
                if let Some(t) = bytes
                    .as_deref()
                    .filter(|b| b.len() < MAX_LINK_FILE as usize)
                    .and_then(flattened_link)
                {
                    return Some(DiskNode::Entry(Entry::Link(t)));
                }
                Some(DiskNode::File(bytes))
            }
        }
    }

    /// Recounts the hiding entries and the key set from the whole overlay (what `put_entry`
    /// and `forget` keep up to date one entry at a time), and forgets resolved paths.
    #[cfg(test)]
    fn changed(&mut self) {
        for c in &mut self.resolved {
            c.get_mut().clear();
        }
        self.hiders = self.overlay.values().filter(|e| hides(e)).count();
        self.overlay_keys = self.overlay.keys().map(|k| normal_key(k)).collect();
    }

    fn overlay_get(&self, p: &Path) -> Option<&Entry> {
        if self.overlay_keys.contains(p.as_os_str()) {
            self.overlay.get(p)
        } else {
            None
        }
    }

    fn hidden_by_ancestor(&self, p: &Path) -> bool {
        if self.hiders == 0 {
            return false;
        }
        let mut cur = p.parent();
        while let Some(a) = cur {
            match self.overlay_get(a) {
                Some(Entry::Gone) | Some(Entry::Dir { opaque: true }) => return true,
                Some(Entry::File(_)) | Some(Entry::Link(_)) => return true,
                _ => {}
            }
            cur = a.parent();
        }
        false
    }

    /// Resolves links in `path`; the last component's link is followed when `follow_last`.
    pub(crate) fn resolve(&self, path: &Path, follow_last: bool) -> io::Result<PathBuf> {
        self.resolve_expect(path, follow_last, Expect::File)
    }

    /// [`resolve`](Self::resolve), saying what the caller expects the last component to be.
    pub(crate) fn resolve_expect(
        &self,
        path: &Path,
        follow_last: bool,
        expect: Expect,
    ) -> io::Result<PathBuf> {
        let cache = &self.resolved[usize::from(follow_last)];
        if let Some(p) = cache.borrow().get(path.as_os_str()) {
            return Ok(p.clone());
        }
        // Resolve the parent (cached: siblings share it), then only the last component.
        let p = match (path.parent(), path.file_name()) {
            (Some(parent), Some(name)) if path.is_absolute() && parent != path => {
                let base = self.resolve_expect(parent, true, Expect::Dir)?;
                match self.node_expect(&base, Expect::Dir) {
                    Some(Entry::Dir { .. }) => {}
                    Some(_) => return Err(io::Error::from_raw_os_error(libc_errno::ENOTDIR)),
                    None => return Err(enoent()),
                }
                let cand = base.join(name);
                // Without following, the last component is whatever it is: no need to look.
                let followed = if follow_last {
                    match self.node_expect(&cand, expect) {
                        Some(Entry::Link(_)) => Some(self.resolve_uncached(&cand, true, expect)?),
                        _ => None,
                    }
                } else {
                    None
                };
                match followed {
                    Some(p) => p,
                    // A file or link read once needs no entry: its parent's is enough to
                    // find it again (directories are kept: their children ask for them).
                    None if expect != Expect::Dir => return Ok(cand),
                    None => cand,
                }
            }
            _ => self.resolve_uncached(path, follow_last, expect)?,
        };
        cache.borrow_mut().insert(key(path), p.clone());
        Ok(p)
    }

    fn resolve_uncached(
        &self,
        path: &Path,
        follow_last: bool,
        expect: Expect,
    ) -> io::Result<PathBuf> {
        let mut out = PathBuf::from("/");
        let mut pending: Vec<PathBuf> = path
            .components()
            .rev()
            .map(|c| PathBuf::from(c.as_os_str()))
            .collect();
        let mut hops = 0;
        while let Some(c) = pending.pop() {
            let comp = c.components().next();
            match comp {
                Some(Component::RootDir) | Some(Component::Prefix(_)) => out = PathBuf::from("/"),
                Some(Component::CurDir) | None => {}
                Some(Component::ParentDir) => {
                    out.pop();
                }
                Some(Component::Normal(name)) => {
                    let cand = out.join(name);
                    let last = pending.is_empty();
                    if last && !follow_last {
                        // The last component is not followed, so what it is does not matter.
                        out = cand;
                        continue;
                    }
                    let want = if last { expect } else { Expect::Dir };
                    match self.node_expect(&cand, want) {
                        Some(Entry::Link(target)) => {
                            hops += 1;
                            if hops > MAX_HOPS {
                                return Err(io::Error::from_raw_os_error(libc_errno::ELOOP));
                            }
                            if target.is_absolute() {
                                out = PathBuf::from("/");
                            }
                            for t in target.components().rev() {
                                pending.push(PathBuf::from(t.as_os_str()));
                            }
                        }
                        Some(Entry::File(_)) if !last => {
                            return Err(io::Error::from_raw_os_error(libc_errno::ENOTDIR))
                        }
                        None if !last => return Err(enoent()),
                        _ => out = cand,
                    }
                }
            }
        }
        Ok(out)
    }

    pub(crate) fn kind(&self, path: &Path) -> Option<NodeKind> {
        let p = self.resolve(path, false).ok()?;
        match self.node(&p)? {
            Entry::File(_) => Some(NodeKind::File),
            Entry::Link(_) => Some(NodeKind::Link),
            Entry::Dir { .. } => Some(NodeKind::Dir),
            Entry::Gone => None,
        }
    }

    pub(crate) fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let p = self.resolve(path, true)?;
        match self.overlay_get(&p) {
            Some(Entry::File(b)) => return Ok(b.clone()),
            Some(Entry::Dir { .. }) => {
                return Err(io::Error::from_raw_os_error(libc_errno::EISDIR))
            }
            Some(Entry::Gone) | Some(Entry::Link(_)) => return Err(enoent()),
            None => {}
        }
        match self.node(&p) {
            Some(Entry::File(_)) => match self.disk_nodes.borrow().get(p.as_os_str()) {
                Some(Some(DiskNode::File(Some(b)))) => Ok(b.clone()),
                _ => {
                    let mut buf = Vec::new();
                    read_small(&self.at(&p), &mut buf).map(|()| buf)
                }
            },
            Some(Entry::Dir { .. }) => Err(io::Error::from_raw_os_error(libc_errno::EISDIR)),
            _ => Err(enoent()),
        }
    }

    pub(crate) fn read_link(&self, path: &Path) -> io::Result<PathBuf> {
        let p = self.resolve(path, false)?;
        match self.node_expect(&p, Expect::Link) {
            Some(Entry::Link(t)) => Ok(t),
            Some(_) => Err(io::Error::from_raw_os_error(libc_errno::EINVAL)),
            None => Err(enoent()),
        }
    }

    pub(crate) fn list(&self, path: &Path) -> io::Result<Vec<String>> {
        let p = self.resolve_expect(path, true, Expect::Dir)?;
        match self.node_expect(&p, Expect::Dir) {
            Some(Entry::Dir { .. }) => {}
            Some(_) => return Err(io::Error::from_raw_os_error(libc_errno::ENOTDIR)),
            None => return Err(enoent()),
        }
        let mut names = std::collections::BTreeSet::new();
        let base_visible = !matches!(self.overlay_get(&p), Some(Entry::Dir { opaque: true }))
            && !self.hidden_by_ancestor(&p);
        if base_visible {
            if let Ok(rd) = std::fs::read_dir(self.disk(&p)) {
                let mut kinds = self.disk_kinds.borrow_mut();
                for e in rd.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    // The directory entry's type saves a `stat` when the child is looked up.
                    if let Ok(ft) = e.file_type() {
                        kinds.insert(key(&p.join(&name)), DiskKind::of(ft));
                    }
                    names.insert(name);
                }
            }
        }
        for (k, v) in self.children(&p) {
            let name = k.file_name().unwrap().to_string_lossy().into_owned();
            if *v == Entry::Gone {
                names.remove(&name);
            } else {
                names.insert(name);
            }
        }
        if p == Path::new("/") {
            names.remove(".fixture");
        }
        Ok(names.into_iter().collect())
    }

    fn children<'a>(&'a self, p: &'a Path) -> impl Iterator<Item = (&'a PathBuf, &'a Entry)> {
        self.overlay
            .range(p.to_path_buf()..)
            .skip_while(move |(k, _)| k.as_path() == p)
            .take_while(move |(k, _)| k.starts_with(p))
            .filter(move |(k, _)| k.parent() == Some(p))
    }

    /// Sets the overlay entry at canonical path `p`, creating parent directories as needed.
    pub(crate) fn put(&mut self, p: &Path, e: Entry) {
        if let Some(parent) = p.parent() {
            if parent != Path::new("/") {
                self.ensure_dir(parent);
            }
        }
        // One entry changed: update the counts and key set for it alone (the fixture's
        // empty directories are put one by one when a host opens; recounting the whole
        // overlay each time made that quadratic).
        self.put_entry(p, e);
    }

    /// Sets the overlay entry at `p` alone (no parent made), updating the hider count and
    /// key set for it.
    fn put_entry(&mut self, p: &Path, e: Entry) {
        let new_hides = hides(&e);
        let old = self.overlay.insert(p.to_path_buf(), e);
        if old.as_ref().is_some_and(hides) {
            self.hiders -= 1;
        }
        if new_hides {
            self.hiders += 1;
        }
        self.overlay_keys.insert(normal_key(p));
        for c in &mut self.resolved {
            c.get_mut().clear();
        }
    }

    /// Makes sure a directory exists at canonical path `p`.
    pub(crate) fn ensure_dir(&mut self, p: &Path) {
        let node = self.node_expect(p, Expect::Dir);
        match node {
            Some(Entry::Dir { .. }) => {}
            Some(Entry::File(_)) | Some(Entry::Link(_)) | Some(Entry::Gone) | None => {
                let overlaid = self.overlay_get(p);
                // Nothing in the overlay and nothing found: the lookup just asked the disk,
                // which has nothing there either (a fixture's empty directory).
                let on_disk = (node.is_some() || overlaid.is_some())
                    && std::fs::symlink_metadata(self.disk(p)).is_ok();
                // A previously removed directory comes back empty, as the kernel recreates it.
                let opaque =
                    overlaid == Some(&Entry::Gone) || self.hidden_by_ancestor(p) || on_disk;
                self.put(p, Entry::Dir { opaque });
            }
        }
    }

    /// Removes the node at canonical path `p` and everything below it.
    pub(crate) fn remove(&mut self, p: &Path) {
        let below: Vec<PathBuf> = self
            .overlay
            .range(p.to_path_buf()..)
            .take_while(|(k, _)| k.starts_with(p))
            .map(|(k, _)| k.clone())
            .collect();
        for k in below {
            self.forget(&k);
        }
        self.put_entry(p, Entry::Gone);
    }

    /// Drops the overlay entry at `k`, keeping the hider count and key set in step with
    /// it (a recount of the whole overlay on every change made each sysfs write cost as
    /// much as the fixture's empty directories: thousands of keys on a generated host).
    fn forget(&mut self, k: &Path) {
        if let Some(old) = self.overlay.remove(k) {
            if hides(&old) {
                self.hiders -= 1;
            }
            self.overlay_keys.remove(&normal_key(k));
        }
        for c in &mut self.resolved {
            c.get_mut().clear();
        }
    }

    /// Everything visible, depth first.
    pub(crate) fn snapshot(&self) -> Snapshot {
        let mut out = Snapshot::new();
        self.walk(Path::new("/"), &mut out);
        out
    }

    fn walk(&self, dir: &Path, out: &mut Snapshot) {
        let Ok(names) = self.list(dir) else { return };
        for n in names {
            let p = dir.join(&n);
            match self.node(&p) {
                Some(Entry::Dir { .. }) => {
                    out.insert(p.clone(), SnapNode::Dir);
                    self.walk(&p, out);
                }
                Some(Entry::Link(t)) => {
                    out.insert(p, SnapNode::Link(t));
                }
                Some(Entry::File(_)) => {
                    let bytes = self.read(&p).unwrap_or_default();
                    out.insert(p, SnapNode::File(bytes));
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixture with each kind of node a lookup can meet.
    fn fixture() -> tempfile::TempDir {
        let d = tempfile::tempdir().expect("tempdir");
        let dev = d.path().join("sys/devices/pci0000:00/0000:00:02.0");
        std::fs::create_dir_all(&dev).expect("mkdir");
        std::fs::write(dev.join("vendor"), "0x8086\n").expect("write");
        std::os::unix::fs::symlink("../../../bus/pci/drivers/i915", dev.join("driver"))
            .expect("symlink");
        // A link stored as a file holding its target (a flattened tree).
        std::fs::write(dev.join("iommu_group"), "../../../kernel/iommu_groups/1").expect("write");
        std::fs::create_dir_all(d.path().join("sys/kernel/iommu_groups/1")).expect("mkdir");
        d
    }

    #[test]
    fn every_expectation_finds_the_same_node() {
        let d = fixture();
        let dev = Path::new("/sys/devices/pci0000:00/0000:00:02.0");
        let names = ["vendor", "driver", "iommu_group", "missing", "vendor/x"];
        for name in names {
            let p = dev.join(name);
            let truth = Tree::new(d.path().to_path_buf()).node_expect(&p, Expect::File);
            for e in [Expect::Dir, Expect::Link] {
                let t = Tree::new(d.path().to_path_buf());
                assert_eq!(t.node_expect(&p, e), truth, "{name} looked up as {e:?}");
                // The first look must not leave a wrong answer behind for the next one.
                assert_eq!(t.node(&p), truth, "{name} after a look as {e:?}");
            }
        }
        let t = Tree::new(d.path().to_path_buf());
        assert_eq!(
            t.node_expect(dev, Expect::Link),
            Some(Entry::Dir { opaque: false })
        );
        assert_eq!(t.read(&dev.join("vendor")).expect("read"), b"0x8086\n");
        assert_eq!(
            t.read_link(&dev.join("iommu_group")).expect("readlink"),
            PathBuf::from("../../../kernel/iommu_groups/1")
        );
        assert_eq!(
            t.read_link(&dev.join("vendor"))
                .map_err(|e| e.raw_os_error()),
            Err(Some(libc_errno::EINVAL))
        );
        assert_eq!(
            t.resolve_expect(&dev.join("iommu_group"), true, Expect::Dir)
                .expect("resolve"),
            PathBuf::from("/sys/kernel/iommu_groups/1")
        );
    }

    #[test]
    fn a_root_that_cannot_be_opened_falls_back_to_absolute_paths() {
        let d = fixture();
        let mut t = Tree::new(d.path().to_path_buf());
        t.root_fd = None;
        let dev = Path::new("/sys/devices/pci0000:00/0000:00:02.0");
        assert_eq!(t.read(&dev.join("vendor")).expect("read"), b"0x8086\n");
        assert_eq!(
            t.read_link(&dev.join("driver")).expect("readlink"),
            PathBuf::from("../../../bus/pci/drivers/i915")
        );
        assert_eq!(
            t.list(dev).expect("list"),
            vec!["driver", "iommu_group", "vendor"]
        );
    }

    #[test]
    fn one_by_one_puts_keep_the_overlay_index_whole() {
        let d = fixture();
        let mut t = Tree::new(d.path().to_path_buf());
        let dev = Path::new("/sys/devices/pci0000:00/0000:00:02.0");
        t.add_base_dir(&dev.join("mdev_supported_types/t1/devices"));
        t.add_base_dir(&dev.join("mdev_supported_types/t2/devices"));
        t.put_file(&dev.join("vendor"), "0x10de\n");
        t.put_link(
            &dev.join("driver"),
            Path::new("/sys/bus/pci/drivers/vfio-pci"),
        );
        t.put(&dev.join("vendor"), Entry::Dir { opaque: false });
        t.remove(&dev.join("mdev_supported_types/t2"));
        t.ensure_dir(&dev.join("mdev_supported_types/t2"));
        let incremental = (t.hiders, t.overlay_keys.clone());
        t.changed();
        assert_eq!((t.hiders, t.overlay_keys.clone()), incremental);
        // Removals keep the index whole too: a created node pruned with its new parents,
        // and a subtree given back to the fixture.
        let node = Path::new("/dev/vfio/7");
        t.put_file(node, Vec::new());
        t.remove_pruned(node);
        t.restore_base(&dev.join("mdev_supported_types/t1"));
        let incremental = (t.hiders, t.overlay_keys.clone());
        t.changed();
        assert_eq!((t.hiders, t.overlay_keys.clone()), incremental);
        assert!(!t.has(node));
        assert_eq!(
            t.list(&dev.join("mdev_supported_types")).expect("list"),
            vec!["t1", "t2"]
        );
        assert!(t
            .list(&dev.join("mdev_supported_types/t2"))
            .expect("list")
            .is_empty());
        assert_eq!(
            t.list(dev).expect("list"),
            vec!["driver", "iommu_group", "mdev_supported_types", "vendor"]
        );
    }
}
