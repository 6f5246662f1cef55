//! `SimHost`: a host made of a recorded fixture tree that answers writes as Linux does.
//!
//! A fixture (`shared/hosts/SPEC.md`) is a directory that looks, from its root, like the parts
//! of `/sys`, `/proc` and `/dev` that GPU management touches. `SimHost` serves it read-only
//! from disk and keeps every change in an in-memory overlay, so a fixture on disk is never
//! modified and two simulators over one fixture never see each other. Writes to attributes
//! the kernel reacts to run the kernel's reaction (see [`kernel`]), with the errno a real
//! 6.1 kernel gives (`shared/docs/kernel-sysfs-semantics.md`).
#![deny(missing_docs)]

pub mod kernel;
mod tree;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use vm_passthrough::{AdapterInfo, HostError, HostOps, NodeKind};

use tree::Tree;
pub use tree::{SnapNode, Snapshot};

/// One host operation as the simulator saw it, for tests that count or order host access.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A file read.
    Read(PathBuf),
    /// A directory listing.
    List(PathBuf),
    /// A link read.
    ReadLink(PathBuf),
    /// An attribute write with its value.
    Write(PathBuf, Vec<u8>),
    /// A module load.
    LoadModule(String),
    /// A wgpu adapter probe.
    ProbeAdapters,
}

/// A simulated host over a fixture tree.
pub struct SimHost {
    root: PathBuf,
    state: Mutex<State>,
}

pub(crate) struct State {
    pub(crate) tree: Tree,
    pub(crate) log: Vec<Op>,
    pub(crate) logging: bool,
}

impl SimHost {
    /// Opens the fixture tree at `dir` (which must exist). Empty directories listed in
    /// `.fixture/empty-dirs` are recreated in the overlay.
    pub fn from_fixture(dir: impl AsRef<Path>) -> Result<Self, HostError> {
        let root = dir.as_ref().to_path_buf();
        if !root.is_dir() {
            return Err(HostError::Fixture(format!(
                "{} is not a directory (expected a host tree with sys/, proc/, dev/)",
                root.display()
            )));
        }
        let mut tree = Tree::new(root.clone());
        if let Ok(list) = std::fs::read_to_string(root.join(".fixture/empty-dirs")) {
            for line in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
                tree.ensure_dir(&Path::new("/").join(line));
            }
        }
        Ok(Self {
            root,
            state: Mutex::new(State {
                tree,
                log: Vec::new(),
                logging: true,
            }),
        })
    }

    /// The fixture directory this host serves.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every host operation so far, in order.
    pub fn ops(&self) -> Vec<Op> {
        self.lock().log.clone()
    }

    /// Forgets the recorded operations.
    pub fn clear_ops(&self) {
        self.lock().log.clear();
    }

    /// The whole tree as it is now (fixture plus overlay), for byte-equal comparisons.
    pub fn snapshot(&self) -> Snapshot {
        self.lock().tree.snapshot()
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the overlay consistent enough to read.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, st: &mut State, op: Op) {
        if st.logging {
            st.log.push(op);
        }
    }
}

impl HostOps for SimHost {
    fn read(&self, path: &Path) -> Result<Vec<u8>, HostError> {
        let mut st = self.lock();
        self.record(&mut st, Op::Read(path.to_path_buf()));
        st.tree
            .read(path)
            .map_err(|e| HostError::io("read", path, e))
    }

    fn read_link(&self, path: &Path) -> Result<PathBuf, HostError> {
        let mut st = self.lock();
        self.record(&mut st, Op::ReadLink(path.to_path_buf()));
        st.tree
            .read_link(path)
            .map_err(|e| HostError::io("readlink", path, e))
    }

    fn list_dir(&self, path: &Path) -> Result<Vec<String>, HostError> {
        let mut st = self.lock();
        self.record(&mut st, Op::List(path.to_path_buf()));
        st.tree
            .list(path)
            .map_err(|e| HostError::io("list", path, e))
    }

    fn kind(&self, path: &Path) -> Option<NodeKind> {
        self.lock().tree.kind(path)
    }

    fn canonicalize(&self, path: &Path) -> Result<PathBuf, HostError> {
        self.lock()
            .tree
            .resolve(path, true)
            .map_err(|e| HostError::io("realpath", path, e))
    }

    fn write_attr(&self, path: &Path, value: &[u8]) -> Result<(), HostError> {
        let mut st = self.lock();
        self.record(&mut st, Op::Write(path.to_path_buf(), value.to_vec()));
        kernel::write(&mut st.tree, path, value).map_err(|e| HostError::io("write", path, e))
    }

    fn load_module(&self, name: &str) -> Result<(), HostError> {
        let mut st = self.lock();
        self.record(&mut st, Op::LoadModule(name.to_string()));
        kernel::load_module(&mut st.tree, name)
    }

    fn probe_adapters(&self) -> Result<Vec<AdapterInfo>, HostError> {
        let mut st = self.lock();
        self.record(&mut st, Op::ProbeAdapters);
        let file = self.root.join(".fixture/wgpu-adapters.json");
        match std::fs::read(&file) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| HostError::Fixture(format!("{}: {e}", file.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(HostError::io("read", file, e)),
        }
    }
}

/// Per-path counts of operations, for "each attribute read once" checks.
pub fn count_ops(ops: &[Op]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for op in ops {
        let key = match op {
            Op::Read(p) => format!("read {}", p.display()),
            Op::List(p) => format!("list {}", p.display()),
            Op::ReadLink(p) => format!("readlink {}", p.display()),
            Op::Write(p, _) => format!("write {}", p.display()),
            Op::LoadModule(n) => format!("modprobe {n}"),
            Op::ProbeAdapters => "probe-adapters".to_string(),
        };
        *m.entry(key).or_insert(0) += 1;
    }
    m
}
