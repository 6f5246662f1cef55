//! Configuration files of a simulated host (mdevctl definitions), kept in its tree as Linux
//! keeps them on disk, with the real host's rules: the root is resolved (links followed),
//! nothing below it is followed as a link (`ELOOP`), a new file never replaces an existing
//! name (`EEXIST`), and a directory is removed only when empty (`ENOTEMPTY`).

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::tree::{Entry, Expect, Tree};

/// One change to a configuration file, as the persistent log records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "file_op", rename_all = "snake_case")]
pub(crate) enum FileOp {
    /// `mkdir -p root/rel` below the root.
    CreateDir,
    /// A new file with these bytes.
    Write {
        /// The contents.
        contents: Vec<u8>,
    },
    /// Remove a file (or link).
    RemoveFile,
    /// Remove an empty directory.
    RemoveDir,
}

impl FileOp {
    /// The operation's name in errors and fault rules.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            FileOp::CreateDir => "mkdir",
            FileOp::Write { .. } => "create",
            FileOp::RemoveFile | FileOp::RemoveDir => "remove",
        }
    }
}

fn errno(n: i32) -> io::Error {
    io::Error::from_raw_os_error(n)
}

const ENOENT: i32 = 2;
const EEXIST: i32 = 17;
const ENOTDIR: i32 = 20;
const EISDIR: i32 = 21;
const ENOTEMPTY: i32 = 39;
const ELOOP: i32 = 40;

/// Walks `names` below the canonical directory `dir`, making missing directories when
/// `create`; a link, file or missing directory on the way fails as `openat` would.
fn walk(
    tree: &mut Tree,
    mut dir: PathBuf,
    names: &[std::ffi::OsString],
    create: bool,
) -> io::Result<PathBuf> {
    for name in names {
        dir.push(name);
        match tree.node_expect(&dir, Expect::Dir) {
            Some(Entry::Dir { .. }) => {}
            Some(Entry::Link(_)) => return Err(errno(ELOOP)),
            Some(Entry::File(_)) => return Err(errno(ENOTDIR)),
            Some(Entry::Gone) | None if create => tree.ensure_dir(&dir),
            Some(Entry::Gone) | None => return Err(errno(ENOENT)),
        }
    }
    Ok(dir)
}

/// Applies `op` to `root/rel` in `tree`. `rel` has been checked by
/// [`vm_device_host::config_path`] already.
pub(crate) fn apply(tree: &mut Tree, root: &Path, rel: &Path, op: &FileOp) -> io::Result<()> {
    let names: Vec<_> = rel.iter().map(|n| n.to_os_string()).collect();
    let Some((last, parents)) = names.split_last() else {
        return Err(errno(ENOENT));
    };
    let base = tree.resolve_expect(root, true, Expect::Dir)?;
    match tree.node_expect(&base, Expect::Dir) {
        Some(Entry::Dir { .. }) => {}
        Some(_) => return Err(errno(ENOTDIR)),
        None => return Err(errno(ENOENT)),
    }
    if *op == FileOp::CreateDir {
        return walk(tree, base, &names, true).map(drop);
    }
    let dir = walk(tree, base, parents, false)?;
    let path = dir.join(last);
    let node = tree.node(&path);
    match op {
        // Made above, with every directory on the way.
        FileOp::CreateDir => Ok(()),
        FileOp::Write { contents } => match node {
            Some(Entry::Gone) | None => {
                tree.put_file(&path, contents.clone());
                Ok(())
            }
            Some(_) => Err(errno(EEXIST)),
        },
        FileOp::RemoveFile => match node {
            Some(Entry::File(_)) | Some(Entry::Link(_)) => {
                tree.remove(&path);
                Ok(())
            }
            Some(Entry::Dir { .. }) => Err(errno(EISDIR)),
            Some(Entry::Gone) | None => Err(errno(ENOENT)),
        },
        FileOp::RemoveDir => match node {
            Some(Entry::Dir { .. }) => {
                if tree.list(&path)?.is_empty() {
                    tree.remove(&path);
                    Ok(())
                } else {
                    Err(errno(ENOTEMPTY))
                }
            }
            Some(Entry::Link(_)) | Some(Entry::File(_)) => Err(errno(ENOTDIR)),
            Some(Entry::Gone) | None => Err(errno(ENOENT)),
        },
    }
}
