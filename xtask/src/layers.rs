//! `cargo xtask layers`: the crate's import graph keeps its layering (README, "How it fits
//! together"):
//!
//! ```text
//! cli > launch > report > doctor > gpu_manager > rungs::{passthrough,mdev,wgpu} > ladder
//!     > inventory, plan, recorder > host (the seam)
//! ```
//!
//! Every `crate::…` path in `src/` (a `use` or a path in code; comments are skipped) is an
//! arrow from the file's module to the module it names. An arrow to a higher layer fails,
//! and so does a cycle between modules of one layer (the rungs, or inventory and plan), or
//! among the files of one module folder (`super::x` and `crate::FOLDER::x` paths).
//! Arrows known today and left to their owners are listed in [`KNOWN`]: the check fails on
//! a new one, and on a listed one that is gone (so the list only shrinks).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Layers, lowest first: a module may use its own layer and those below.
const LAYERS: &[&[&str]] = &[
    &["host"],
    &["inventory", "plan", "recorder"],
    &["ladder"],
    &["rungs::passthrough", "rungs::mdev", "rungs::wgpu", "rungs"],
    &["gpu_manager"],
    &["doctor"],
    &["report"],
    &["launch"],
    &["cli"],
];

/// Upward arrows that exist today in files other parts of the work own (issue 14), as
/// `from -> to`; each is to be removed by its owner, and then from this list.
const KNOWN: &[&str] = &[
    // The mdev rung's lifecycle -> plan -> verify loop (issue 14; the rules' part).
    "rungs/mdev: lifecycle, plan, verify",
];

/// The product guide's aliases of the rungs (`lib.rs`).
fn alias(name: &str) -> Option<&'static str> {
    match name {
        "gpu_passthrough" => Some("rungs::passthrough"),
        "gpu_mdev" => Some("rungs::mdev"),
        "gpu_virt" => Some("rungs::wgpu"),
        _ => None,
    }
}

fn rank(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// One arrow: where it was seen, from which module to which.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Arrow {
    /// `src/…rs:LINE`.
    pub at: String,
    /// The importing module (`launch`, `rungs::mdev`).
    pub from: String,
    /// The imported module.
    pub to: String,
}

/// The module of a file under `src/` (`src/rungs/mdev/plan.rs` → `rungs::mdev`); `None`
/// for the crate root and binaries.
fn module_of(rel: &Path) -> Option<String> {
    let parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    match parts.as_slice() {
        [first, ..] if first == "lib" || first == "bin" || first == "main" => None,
        [r, rung, ..] if r == "rungs" && rung != "mod" => Some(format!("rungs::{rung}")),
        [first, ..] => Some(first.clone()),
        [] => None,
    }
}

/// The module a path after `crate::` names (`rungs::mdev::plan::x` → `rungs::mdev`).
fn target_of(path: &str) -> Option<String> {
    let mut segs = path
        .split("::")
        .map(|s| s.trim_matches(|c: char| !(c.is_alphanumeric() || c == '_')));
    let first = segs.next().filter(|s| !s.is_empty())?;
    if let Some(a) = alias(first) {
        return Some(a.to_string());
    }
    if first == "rungs" {
        return Some(match segs.next() {
            Some(r @ ("passthrough" | "mdev" | "wgpu")) => format!("rungs::{r}"),
            _ => "rungs".to_string(),
        });
    }
    Some(first.to_string())
}

/// Every `crate::…` arrow in one file's text (line comments and doc comments skipped; a
/// `use crate::{a::x, b::y}` group gives one arrow per module).
pub fn arrows_in(at: &str, from: &str, text: &str) -> Vec<Arrow> {
    let mut out = Vec::new();
    let mut group: Option<String> = None;
    for (n, line) in text.lines().enumerate() {
        let code = match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        };
        let mut names: Vec<String> = Vec::new();
        if let Some(g) = group.as_mut() {
            g.push_str(code);
            if code.contains("};") {
                names.extend(group_names(group.take().unwrap_or_default().as_str()));
            }
        } else if let Some(rest) = code
            .trim_start()
            .strip_prefix("use crate::{")
            .or_else(|| code.trim_start().strip_prefix("pub use crate::{"))
            .or_else(|| code.trim_start().strip_prefix("pub(crate) use crate::{"))
        {
            if code.contains("};") {
                names.extend(group_names(rest));
            } else {
                group = Some(rest.to_string());
            }
        } else {
            let mut s = code;
            while let Some(i) = s.find("crate::") {
                let rest = &s[i + "crate::".len()..];
                let end = rest
                    .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                    .unwrap_or(rest.len());
                names.push(rest[..end].to_string());
                s = &rest[end..];
            }
        }
        for name in names {
            if let Some(to) = target_of(&name) {
                if to != from {
                    out.push(Arrow {
                        at: format!("{at}:{}", n + 1),
                        from: from.to_string(),
                        to,
                    });
                }
            }
        }
    }
    out
}

/// The first segment of each item of a `use crate::{…}` group (nested braces kept whole).
fn group_names(inner: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut cur = String::new();
    for c in inner.chars() {
        match c {
            '{' => {
                depth += 1;
                cur.push(c);
            }
            '}' if depth == 0 => break,
            '}' => {
                depth -= 1;
                cur.push(c);
            }
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut cur).trim().to_string());
            }
            _ => cur.push(c),
        }
    }
    out.push(cur.trim().to_string());
    out.retain(|s| !s.is_empty());
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// Every arrow between modules of the crate under `src`.
pub fn arrows(src: &Path) -> Result<Vec<Arrow>, String> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut all = Vec::new();
    for f in files {
        let rel = f.strip_prefix(src).unwrap_or(&f);
        let Some(from) = module_of(rel) else {
            continue;
        };
        let text = std::fs::read_to_string(&f).map_err(|e| format!("{}: {e}", f.display()))?;
        all.extend(arrows_in(&format!("src/{}", rel.display()), &from, &text));
    }
    Ok(all)
}

/// What is wrong with these arrows: upward ones (and modules of no layer), and cycles
/// inside a layer. Each as `from -> to (first seen at FILE:LINE)`, one per pair.
pub fn violations(arrows: &[Arrow]) -> Vec<(String, String)> {
    let mut first: BTreeMap<(String, String), String> = BTreeMap::new();
    for a in arrows {
        first
            .entry((a.from.clone(), a.to.clone()))
            .or_insert_with(|| a.at.clone());
    }
    let mut out = Vec::new();
    for ((from, to), at) in &first {
        let why = match (rank(from), rank(to)) {
            (Some(f), Some(t)) if t > f => format!("up from layer {f} to layer {t}"),
            (Some(f), Some(t)) if t == f && first.contains_key(&(to.clone(), from.clone())) => {
                "a cycle inside one layer".to_string()
            }
            (None, _) => format!("`{from}` is in no layer (add it to LAYERS)"),
            (_, None) => format!("`{to}` is in no layer (add it to LAYERS)"),
            _ => continue,
        };
        out.push((format!("{from} -> {to}"), format!("{why}, first at {at}")));
    }
    out
}

/// Cycles among the files of one module folder (`rungs/mdev`: `lifecycle -> plan ->
/// lifecycle`), through `super::x` and `crate::FOLDER::x` paths; each as the folder and
/// the sorted members of one strongly connected set (`rungs/mdev: lifecycle, plan`).
pub fn sibling_cycles(src: &Path) -> Result<Vec<String>, String> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut by_dir: BTreeMap<PathBuf, Vec<PathBuf>> = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(src).unwrap_or(&f).to_path_buf();
        let dir = rel.parent().map(Path::to_path_buf).unwrap_or_default();
        by_dir.entry(dir).or_default().push(f);
    }
    let mut out = Vec::new();
    for (dir, files) in &by_dir {
        let stem = |f: &Path| f.file_stem().map(|s| s.to_string_lossy().into_owned());
        let mut names: BTreeSet<String> = files
            .iter()
            .filter_map(|f| stem(f))
            .filter(|n| n != "mod" && n != "lib")
            .collect();
        if let Ok(rd) = std::fs::read_dir(src.join(dir)) {
            names.extend(
                rd.flatten()
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.file_name().to_string_lossy().into_owned()),
            );
        }
        let prefix = format!(
            "crate::{}::",
            dir.iter()
                .map(|c| c.to_string_lossy())
                .collect::<Vec<_>>()
                .join("::")
        );
        let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for f in files {
            let Some(me) = stem(f).filter(|n| names.contains(n)) else {
                continue;
            };
            let text = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
            let code: String = text
                .lines()
                .map(|l| l.find("//").map_or(l, |i| &l[..i]))
                .collect::<Vec<_>>()
                .join("\n");
            let mut used = BTreeSet::new();
            for head in ["super::", prefix.as_str()] {
                if head == "crate::::" {
                    continue;
                }
                let mut rest = code.as_str();
                while let Some(i) = rest.find(head) {
                    rest = &rest[i + head.len()..];
                    if let Some(inner) = rest.strip_prefix('{') {
                        let end = inner.find('}').unwrap_or(inner.len());
                        used.extend(group_names(&inner[..end]));
                    } else {
                        let end = rest
                            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                            .unwrap_or(rest.len());
                        used.insert(rest[..end].to_string());
                    }
                }
            }
            for u in used {
                let first = u.split("::").next().unwrap_or("").trim().to_string();
                if first != me && names.contains(&first) {
                    edges.entry(me.clone()).or_default().insert(first);
                }
            }
        }
        for scc in strongly_connected(&edges) {
            out.push(format!("{}: {}", dir.display(), scc.join(", ")));
        }
    }
    Ok(out)
}

/// The sets of two or more nodes that reach each other (Tarjan would do; the graphs are a
/// dozen nodes, so reachability is enough).
fn strongly_connected(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let reach = |from: &str| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.to_string()];
        while let Some(n) = todo.pop() {
            for m in edges.get(&n).into_iter().flatten() {
                if seen.insert(m.clone()) {
                    todo.push(m.clone());
                }
            }
        }
        seen
    };
    let nodes: BTreeSet<&String> = edges.keys().collect();
    let reaches: BTreeMap<&String, BTreeSet<String>> =
        nodes.iter().map(|n| (*n, reach(n))).collect();
    let mut out: Vec<Vec<String>> = Vec::new();
    let mut placed = BTreeSet::new();
    for n in &nodes {
        if placed.contains(*n) || !reaches[*n].contains(*n) {
            continue;
        }
        let scc: Vec<String> = nodes
            .iter()
            .filter(|m| reaches[*n].contains(**m) && reaches[**m].contains(*n))
            .map(|m| (*m).clone())
            .collect();
        placed.extend(scc.iter().cloned());
        out.push(scc);
    }
    out
}

/// `cargo xtask layers [--src DIR]` (another checkout's `src/`, to compare).
pub fn layers_cmd(args: &[String]) -> Result<(), String> {
    let src = match args {
        [] => crate::sim::repo_root().join("src"),
        [flag, dir] if flag == "--src" => PathBuf::from(dir),
        _ => {
            return Err(format!(
                "unknown options {args:?}; usage: layers [--src DIR]"
            ))
        }
    };
    let arrows = arrows(&src)?;
    let found = violations(&arrows);
    let known: BTreeSet<&str> = KNOWN.iter().copied().collect();
    let mut new = Vec::new();
    for (pair, why) in &found {
        if known.contains(pair.as_str()) {
            println!("known: {pair} ({why})");
        } else {
            new.push(format!("{pair}: {why}"));
        }
    }
    for cycle in sibling_cycles(&src)? {
        if known.contains(cycle.as_str()) {
            println!("known: cycle {cycle}");
        } else {
            new.push(format!("a cycle among the files of {cycle}"));
        }
    }
    let cycles = sibling_cycles(&src)?;
    let found_pairs: BTreeSet<&str> = found
        .iter()
        .map(|(p, _)| p.as_str())
        .chain(cycles.iter().map(String::as_str))
        .collect();
    let gone: Vec<&str> = known
        .iter()
        .filter(|k| !found_pairs.contains(*k))
        .copied()
        .collect();
    let modules: BTreeSet<&str> = arrows.iter().map(|a| a.from.as_str()).collect();
    println!(
        "{} arrows between {} modules, {} cycle(s) among files; {} known exception(s) left",
        arrows.len(),
        modules.len(),
        cycles.len(),
        known.len() - gone.len()
    );
    if !gone.is_empty() {
        return Err(format!(
            "these known arrows are gone: remove them from KNOWN in xtask/src/layers.rs: {}",
            gone.join(", ")
        ));
    }
    if new.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the import graph breaks the layering (README, \"How it fits together\"):\n  {}",
            new.join("\n  ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_map_to_their_modules() {
        assert_eq!(
            module_of(Path::new("rungs/mdev/plan.rs")).as_deref(),
            Some("rungs::mdev")
        );
        assert_eq!(
            module_of(Path::new("rungs/mod.rs")).as_deref(),
            Some("rungs")
        );
        assert_eq!(module_of(Path::new("cli/mod.rs")).as_deref(), Some("cli"));
        assert_eq!(
            module_of(Path::new("recorder.rs")).as_deref(),
            Some("recorder")
        );
        assert_eq!(module_of(Path::new("lib.rs")), None);
    }

    #[test]
    fn finds_uses_groups_and_inline_paths_but_not_comments() {
        let text = "use crate::host::HostOps;\n\
                    use crate::{\n    inventory::HostInventory,\n    gpu_virt::WgpuBackend,\n};\n\
                    // crate::cli::EXIT_OK in a comment\n\
                    /// [`crate::report::x`] in a doc comment\n\
                    fn f() { let c = crate::cli::EXIT_OK; }\n";
        let got: Vec<(String, String)> = arrows_in("src/plan/x.rs", "plan", text)
            .into_iter()
            .map(|a| (a.to, a.at))
            .collect();
        assert_eq!(
            got,
            [
                ("host".to_string(), "src/plan/x.rs:1".to_string()),
                ("inventory".to_string(), "src/plan/x.rs:5".to_string()),
                ("rungs::wgpu".to_string(), "src/plan/x.rs:5".to_string()),
                ("cli".to_string(), "src/plan/x.rs:8".to_string()),
            ]
        );
    }

    #[test]
    fn strongly_connected_sets_are_the_cycles() {
        let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (a, b) in [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d"), ("d", "e")] {
            g.entry(a.into()).or_default().insert(b.into());
        }
        assert_eq!(strongly_connected(&g), [["a", "b", "c"]]);
    }

    #[test]
    fn an_upward_arrow_and_a_cycle_in_a_layer_are_violations() {
        let a = |from: &str, to: &str| Arrow {
            at: "src/x.rs:1".into(),
            from: from.into(),
            to: to.into(),
        };
        let v = violations(&[
            a("launch", "cli"),
            a("cli", "launch"),
            a("rungs::mdev", "rungs::passthrough"),
            a("rungs::passthrough", "rungs::mdev"),
            a("rungs::wgpu", "ladder"),
        ]);
        let pairs: Vec<&str> = v.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            pairs,
            [
                "launch -> cli",
                "rungs::mdev -> rungs::passthrough",
                "rungs::passthrough -> rungs::mdev"
            ]
        );
    }
}
