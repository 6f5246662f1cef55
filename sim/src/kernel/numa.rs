//! Hugepage pools and CPU lists: `nr_hugepages` writes, as `mm/hugetlb.c` answers them.
//!
//! A pool is a `hugepages-SkB` directory, per NUMA node
//! (`/sys/devices/system/node/nodeN/hugepages/hugepages-2048kB`) or host-wide
//! (`/sys/kernel/mm/hugepages/hugepages-2048kB`), with `nr_hugepages` and `free_hugepages`.
//! The kernel's behaviour (6.1, `__nr_hugepages_store_common` / `set_max_huge_pages`):
//!
//! - the value is parsed with `kstrtoul`: anything else is `EINVAL`;
//! - growing allocates pages one by one until the count is reached or allocation fails:
//!   the write still succeeds, and `nr_hugepages` reads what the kernel got. The simulator's
//!   allocation fails past the pool's limit in `.fixture/hugepages.json` (absolute pool
//!   path → most pages), which is how a fixture models fragmented memory;
//! - shrinking frees free pages only: pages in use stay, so `nr_hugepages` never drops
//!   below `nr - free`;
//! - a host-wide write spreads the change over the nodes round-robin (lowest node first),
//!   skipping a node that cannot allocate or has nothing free; the host-wide files read
//!   the sums of the nodes'.
//!
//! Per-node `meminfo` lines (`Node N HugePages_Total`, `HugePages_Free`, `MemFree`) follow
//! the 2 MiB pool, as the kernel's default hugepage size.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use super::{err, errno, text_value};
use crate::tree::Tree;
use crate::State;

const NODES: &str = "/sys/devices/system/node";
const GLOBAL: &str = "/sys/kernel/mm/hugepages";

/// The fixture file with each pool's limit.
pub const LIMITS_FILE: &str = ".fixture/hugepages.json";

/// True when `dir` (canonical) is a hugepage pool directory.
pub(crate) fn is_pool(dir: &Path) -> bool {
    let Some(name) = dir.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    if !(name.starts_with("hugepages-") && name.ends_with("kB")) {
        return false;
    }
    let Some(parent) = dir.parent() else {
        return false;
    };
    if parent == Path::new(GLOBAL) {
        return true;
    }
    parent.file_name().is_some_and(|n| n == "hugepages")
        && parent
            .parent()
            .and_then(|n| n.parent())
            .is_some_and(|p| p == Path::new(NODES))
}

/// The pool limits of the fixture at `root` (none when the file is absent or malformed).
pub(crate) fn limits(root: &Path) -> BTreeMap<PathBuf, u64> {
    let file = root.join(LIMITS_FILE);
    let Ok(bytes) = crate::tree::read_fixture_file(&file, 1 << 20) else {
        return BTreeMap::new();
    };
    match serde_json::from_slice::<BTreeMap<PathBuf, u64>>(&bytes) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("vm-device-sim: warning: {}: {e}", file.display());
            BTreeMap::new()
        }
    }
}

/// Parses a kernel CPU list (`0-3,8,10-11`).
pub fn parse_cpulist(s: &str) -> Option<Vec<u32>> {
    let mut out = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
                if b < a || b - a > 65_536 {
                    return None;
                }
                out.extend(a..=b);
            }
            None => out.push(part.trim().parse().ok()?),
        }
    }
    out.sort_unstable();
    out.dedup();
    Some(out)
}

/// `/sys/devices/system/cpu/online`, when the tree has it.
pub(crate) fn online_cpus(tree: &Tree) -> Option<Vec<u32>> {
    parse_cpulist(&tree.text(Path::new("/sys/devices/system/cpu/online"))?)
}

fn count(tree: &Tree, p: &Path) -> u64 {
    tree.text(p).and_then(|t| t.parse().ok()).unwrap_or(0)
}

fn put_count(tree: &mut Tree, p: &Path, v: u64) {
    tree.put_file(p, format!("{v}\n").into_bytes());
}

/// The node pools of size directory `size` (`hugepages-2048kB`), lowest node first.
fn node_pools(tree: &Tree, size: &str) -> Vec<(u32, PathBuf)> {
    let mut out: Vec<(u32, PathBuf)> = tree
        .list(Path::new(NODES))
        .unwrap_or_default()
        .iter()
        .filter_map(|n| Some((n.strip_prefix("node")?.parse::<u32>().ok()?, n.clone())))
        .map(|(i, n)| (i, Path::new(NODES).join(n).join("hugepages").join(size)))
        .filter(|(_, p)| tree.has(&p.join("nr_hugepages")))
        .collect();
    out.sort();
    out
}

/// `nr_hugepages` of `pool`.
pub(crate) fn store_nr(st: &mut State, pool: &Path, value: &[u8]) -> io::Result<()> {
    let want: u64 = text_value(value).parse().map_err(|_| err(errno::EINVAL))?;
    let size = pool
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if pool.parent() == Some(Path::new(GLOBAL)) {
        let nodes = node_pools(&st.tree, &size);
        if nodes.is_empty() {
            set_pool(st, pool, want);
            return Ok(());
        }
        spread(st, &nodes, want);
    } else {
        set_pool(st, pool, want);
    }
    sync_global(st, &size);
    Ok(())
}

/// Grows or shrinks one pool towards `want`, as far as its limit and its pages in use allow.
fn set_pool(st: &mut State, pool: &Path, want: u64) {
    let nr_p = pool.join("nr_hugepages");
    let free_p = pool.join("free_hugepages");
    let nr = count(&st.tree, &nr_p);
    let free = count(&st.tree, &free_p).min(nr);
    let limit = st
        .kernel
        .hugepage_limits
        .get(pool)
        .copied()
        .unwrap_or(u64::MAX);
    let new = if want >= nr {
        want.min(limit.max(nr))
    } else {
        want.max(nr - free)
    };
    // Shrinking stops at the pages in use, so `nr - new <= free`.
    let new_free = if new >= nr {
        free + (new - nr)
    } else {
        free - (nr - new)
    };
    put_count(&mut st.tree, &nr_p, new);
    put_count(&mut st.tree, &free_p, new_free);
    if new != want {
        st.kernel.dmesg.push(format!(
            "HugeTLB: allocating {want} of page size {} failed.  Only allocated {new} hugepages.",
            size_text(pool)
        ));
    }
    follow_meminfo(st, pool, nr, new);
}

fn size_text(pool: &Path) -> String {
    let kib: u64 = pool
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| {
            n.strip_prefix("hugepages-")?
                .strip_suffix("kB")?
                .parse()
                .ok()
        })
        .unwrap_or(0);
    if kib >= 1 << 20 {
        format!("{} GB", kib >> 20)
    } else {
        format!("{} MB", kib >> 10)
    }
}

/// A host-wide write: one page at a time, round-robin over the nodes.
fn spread(st: &mut State, nodes: &[(u32, PathBuf)], want: u64) {
    let total = |st: &State| -> u64 {
        nodes
            .iter()
            .map(|(_, p)| count(&st.tree, &p.join("nr_hugepages")))
            .sum()
    };
    let mut cur = total(st);
    let mut stuck = 0;
    let mut i = 0;
    while cur != want && stuck < nodes.len() {
        let pool = &nodes[i % nodes.len()].1;
        let nr = count(&st.tree, &pool.join("nr_hugepages"));
        let target = if want > cur {
            nr + 1
        } else {
            nr.saturating_sub(1)
        };
        set_pool(st, pool, target);
        let after = count(&st.tree, &pool.join("nr_hugepages"));
        if after == nr {
            stuck += 1;
        } else {
            stuck = 0;
            cur = if want > cur { cur + 1 } else { cur - 1 };
        }
        i += 1;
    }
}

/// The host-wide files read the sums of the node pools.
fn sync_global(st: &mut State, size: &str) {
    let global = Path::new(GLOBAL).join(size);
    if !st.tree.has(&global.join("nr_hugepages")) {
        return;
    }
    let nodes = node_pools(&st.tree, size);
    if nodes.is_empty() {
        return;
    }
    let (mut nr, mut free) = (0, 0);
    for (_, p) in &nodes {
        nr += count(&st.tree, &p.join("nr_hugepages"));
        free += count(&st.tree, &p.join("free_hugepages"));
    }
    put_count(&mut st.tree, &global.join("nr_hugepages"), nr);
    put_count(&mut st.tree, &global.join("free_hugepages"), free);
}

/// `nodeN/meminfo` after a 2 MiB pool of node N went from `old` to `new` pages.
fn follow_meminfo(st: &mut State, pool: &Path, old: u64, new: u64) {
    if pool.file_name().is_none_or(|n| n != "hugepages-2048kB") {
        return;
    }
    let Some(node_dir) = pool.parent().and_then(Path::parent) else {
        return;
    };
    if node_dir.parent() != Some(Path::new(NODES)) {
        return;
    }
    let info = node_dir.join("meminfo");
    let Some(text) = st.tree.text(&info) else {
        return;
    };
    let delta = new as i128 - old as i128;
    let out: Vec<String> = text
        .lines()
        .map(|l| {
            // The number is replaced in place: the padding before it and the unit after it
            // stay, so undoing a change gives back the same bytes.
            let adjust = |l: &str, key: &str, by: i128| -> Option<String> {
                let at = l.find(key)? + key.len();
                let start = at + l[at..].find(|c: char| c.is_ascii_digit())?;
                let end = start
                    + l[start..]
                        .find(|c: char| !c.is_ascii_digit())
                        .unwrap_or(l.len() - start);
                let v: i128 = l[start..end].parse().ok()?;
                Some(format!("{}{}{}", &l[..start], (v + by).max(0), &l[end..]))
            };
            adjust(l, "HugePages_Total:", delta)
                .or_else(|| adjust(l, "HugePages_Free:", delta))
                .or_else(|| adjust(l, "MemFree:", -delta * 2048))
                .or_else(|| adjust(l, "MemUsed:", delta * 2048))
                .unwrap_or_else(|| l.to_string())
        })
        .collect();
    st.tree
        .put_file(&info, format!("{}\n", out.join("\n")).into_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse_as_the_kernel_prints_them() {
        assert_eq!(
            parse_cpulist("0-3,8,10-11\n"),
            Some(vec![0, 1, 2, 3, 8, 10, 11])
        );
        assert_eq!(parse_cpulist(""), Some(vec![]));
        assert_eq!(parse_cpulist("3-1"), None);
        assert_eq!(parse_cpulist("x"), None);
    }

    #[test]
    fn pools_are_recognised_by_shape() {
        assert!(is_pool(Path::new(
            "/sys/devices/system/node/node1/hugepages/hugepages-2048kB"
        )));
        assert!(is_pool(Path::new(
            "/sys/kernel/mm/hugepages/hugepages-1048576kB"
        )));
        assert!(!is_pool(Path::new(
            "/sys/devices/system/node/node1/hugepages"
        )));
        assert!(!is_pool(Path::new(
            "/sys/bus/pci/devices/x/hugepages-2048kB"
        )));
    }
}
