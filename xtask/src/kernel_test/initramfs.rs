//! The guest's initramfs: busybox, the project's `vm-cli` and the examples the scenarios run
//! (with their shared libraries), the modules, `/init` and the scenario scripts, packed as
//! an uncompressed newc cpio (the kernel unpacks it faster under TCG than a gzip one).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::lab::{Kernel, MODULES};
use super::scenarios::Scenario;
use super::{run_cmd, stamp};

/// Modules `/init` loads after coldplug, in order (VFIO, mdev, the sample parents).
pub const INIT_MODULES: &[&str] = &[
    "vfio",
    "vfio_iommu_type1",
    "vfio-pci",
    "mdev",
    "mtty",
    "mdpy",
    "mbochs",
];

fn mkdirs(p: &Path) -> Result<(), String> {
    std::fs::create_dir_all(p).map_err(|e| format!("mkdir {}: {e}", p.display()))
}

fn copy(from: &Path, to: &Path) -> Result<(), String> {
    if let Some(parent) = to.parent() {
        mkdirs(parent)?;
    }
    std::fs::copy(from, to)
        .map(|_| ())
        .map_err(|e| format!("copy {} -> {}: {e}", from.display(), to.display()))
}

fn write(to: &Path, text: &str, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(parent) = to.parent() {
        mkdirs(parent)?;
    }
    std::fs::write(to, text).map_err(|e| format!("write {}: {e}", to.display()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {}: {e}", to.display()))
}

/// `a-b` and `a_b` name the same module.
fn norm(name: &str) -> String {
    name.replace('-', "_")
}

/// The files (relative to the module root) of `wanted` and everything they depend on,
/// from a `modules.dep`.
pub fn module_closure(modules_dep: &str, wanted: &[&str]) -> Result<BTreeSet<String>, String> {
    let mut deps: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    for line in modules_dep.lines() {
        let Some((file, rest)) = line.split_once(':') else {
            continue;
        };
        let base = Path::new(file)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("");
        let name = base.split(".ko").next().unwrap_or(base);
        deps.insert(
            norm(name),
            (
                file.to_string(),
                rest.split_whitespace().map(str::to_string).collect(),
            ),
        );
    }
    let mut out = BTreeSet::new();
    for w in wanted {
        let (file, d) = deps
            .get(&norm(w))
            .ok_or_else(|| format!("module {w} is not in modules.dep"))?;
        out.insert(file.clone());
        out.extend(d.iter().cloned());
    }
    Ok(out)
}

/// `ldd` output → the absolute paths of the libraries and the loader.
pub fn parse_ldd(text: &str) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for l in text.lines() {
        let l = l.trim();
        let path = if let Some((_, right)) = l.split_once("=>") {
            right.split_whitespace().next()
        } else {
            l.split_whitespace().next()
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            v.push(PathBuf::from(p));
        }
    }
    v
}

/// What a harness puts into the guest beside vm-cli and the scenarios.
pub struct Extras {
    /// Modules packed (with their dependencies).
    pub pack: Vec<&'static str>,
    /// Modules `/init` loads after coldplug, in order.
    pub load: Vec<&'static str>,
    /// More files: (path in the guest, bytes, mode).
    pub files: Vec<(String, Vec<u8>, u32)>,
}

impl Extras {
    /// kernel-test's guest: [`MODULES`], [`INIT_MODULES`] loaded, nothing else.
    pub fn kernel_test() -> Self {
        Extras {
            pack: MODULES.to_vec(),
            load: INIT_MODULES.to_vec(),
            files: Vec::new(),
        }
    }
}

/// Builds kernel-test's initramfs at `out` from the staging directory `root` (emptied first).
pub fn build(
    kernel: &Kernel,
    bins: &[PathBuf],
    scenarios: &[&Scenario],
    root: &Path,
    out: &Path,
) -> Result<(), String> {
    build_with(kernel, bins, scenarios, root, out, &Extras::kernel_test())
}

/// [`build`] with another module set and more files (`cargo xtask nested-test`'s L1).
pub fn build_with(
    kernel: &Kernel,
    bins: &[PathBuf],
    scenarios: &[&Scenario],
    root: &Path,
    out: &Path,
    extras: &Extras,
) -> Result<(), String> {
    let _ = std::fs::remove_dir_all(root);
    for d in [
        "bin",
        "sbin",
        "proc",
        "sys",
        "dev",
        "tmp",
        "ktest/scenarios",
    ] {
        mkdirs(&root.join(d))?;
    }
    let busybox = which("busybox")?;
    copy(&busybox, &root.join("bin/busybox"))?;
    write(&root.join("init"), include_str!("guest/init.sh"), 0o755)?;
    write(
        &root.join("ktest/lib.sh"),
        include_str!("guest/lib.sh"),
        0o644,
    )?;
    let mut order = String::new();
    for s in scenarios {
        write(
            &root.join(format!("ktest/scenarios/{}.sh", s.name)),
            s.script,
            0o644,
        )?;
        order.push_str(s.name);
        order.push('\n');
    }
    write(&root.join("ktest/order"), &order, 0o644)?;
    write(
        &root.join("ktest/modules"),
        &(extras.load.join("\n") + "\n"),
        0o644,
    )?;
    for (rel, data, mode) in &extras.files {
        let p = root.join(rel.trim_start_matches('/'));
        if let Some(parent) = p.parent() {
            mkdirs(parent)?;
        }
        std::fs::write(&p, data).map_err(|e| format!("write {}: {e}", p.display()))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode))
            .map_err(|e| format!("chmod {}: {e}", p.display()))?;
    }

    // vm-cli and the examples, stripped, with the shared libraries ldd names at the same paths
    for bin in bins {
        let name = bin
            .file_name()
            .ok_or_else(|| format!("{} has no file name", bin.display()))?;
        run_cmd(
            Command::new("strip")
                .arg("-o")
                .arg(root.join("bin").join(name))
                .arg(bin),
            &format!("strip {}", bin.display()),
        )?;
        let ldd = run_cmd(
            Command::new("ldd").arg(bin),
            &format!("ldd {}", bin.display()),
        )?;
        for lib in parse_ldd(&ldd) {
            let dest = root.join(lib.strip_prefix("/").unwrap_or(&lib));
            if !dest.exists() {
                copy(&lib, &dest)?; // std::fs::copy follows links: the real file lands there
            }
        }
    }

    // modules and a modules.dep for just these
    let dep_path = kernel.modroot.join("modules.dep");
    let dep = std::fs::read_to_string(&dep_path)
        .map_err(|e| format!("read {}: {e}", dep_path.display()))?;
    let mroot = root.join("lib/modules").join(&kernel.kver);
    for f in module_closure(&dep, &extras.pack)? {
        copy(&kernel.modroot.join(&f), &mroot.join(&f))?;
    }
    for f in [
        "modules.builtin",
        "modules.builtin.modinfo",
        "modules.order",
    ] {
        let p = kernel.modroot.join(f);
        if p.is_file() {
            copy(&p, &mroot.join(f))?;
        }
    }
    run_cmd(
        Command::new("busybox")
            .arg("depmod")
            .arg("-b")
            .arg(root)
            .arg(&kernel.kver),
        "busybox depmod (initramfs)",
    )?;

    let bytes = write_cpio(root, out)?;
    stamp(&format!(
        "initramfs {} ({:.1} MiB)",
        out.display(),
        bytes as f64 / 1048576.0
    ));
    Ok(())
}

fn which(prog: &str) -> Result<PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
        .ok_or_else(|| format!("{prog} not found in PATH"))
}

/// One newc cpio header + name (+ padding).
fn cpio_entry(
    w: &mut impl Write,
    ino: u32,
    name: &str,
    mode: u32,
    rdev: (u32, u32),
    data: &[u8],
) -> std::io::Result<()> {
    let namesize = name.len() + 1;
    write!(
        w,
        "070701{ino:08X}{mode:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{namesize:08X}{:08X}",
        0, // uid
        0, // gid
        1, // nlink
        0, // mtime
        data.len(),
        0, // devmajor
        0, // devminor
        rdev.0,
        rdev.1,
        0, // check
    )?;
    w.write_all(name.as_bytes())?;
    w.write_all(&[0])?;
    let pad = (4 - (110 + namesize) % 4) % 4;
    w.write_all(&[0u8; 3][..pad])?;
    w.write_all(data)?;
    let pad = (4 - data.len() % 4) % 4;
    w.write_all(&[0u8; 3][..pad])
}

/// Packs `root` as a newc cpio archive (owner root, mtime 0) and returns its size; adds
/// `/dev/console`.
pub fn write_cpio(root: &Path, out: &Path) -> Result<u64, String> {
    use std::os::unix::fs::PermissionsExt;
    let mut entries: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir)
            .map_err(|e| format!("list {}: {e}", dir.display()))?
            .flatten()
        {
            let p = e.path();
            let rel = p
                .strip_prefix(root)
                .map_err(|_| format!("{} outside {}", p.display(), root.display()))?
                .to_string_lossy()
                .into_owned();
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(p.clone());
            }
            entries.insert(rel, p);
        }
    }
    let file = std::fs::File::create(out).map_err(|e| format!("create {}: {e}", out.display()))?;
    let mut w = std::io::BufWriter::new(file);
    let io = |e: std::io::Error| format!("write {}: {e}", out.display());
    let mut ino = 1u32;
    // parents sort before their children
    for (rel, p) in &entries {
        let md = std::fs::symlink_metadata(p).map_err(|e| format!("stat {}: {e}", p.display()))?;
        let perm = md.permissions().mode() & 0o7777;
        if md.file_type().is_symlink() {
            let t = std::fs::read_link(p).map_err(|e| format!("readlink {}: {e}", p.display()))?;
            cpio_entry(
                &mut w,
                ino,
                rel,
                0o120777,
                (0, 0),
                t.to_string_lossy().as_bytes(),
            )
            .map_err(io)?;
        } else if md.is_dir() {
            cpio_entry(&mut w, ino, rel, 0o040000 | perm, (0, 0), &[]).map_err(io)?;
        } else {
            let data = std::fs::read(p).map_err(|e| format!("read {}: {e}", p.display()))?;
            cpio_entry(&mut w, ino, rel, 0o100000 | perm, (0, 0), &data).map_err(io)?;
        }
        ino += 1;
        if rel == "dev" {
            cpio_entry(&mut w, ino, "dev/console", 0o020600, (5, 1), &[]).map_err(io)?;
            ino += 1;
        }
    }
    cpio_entry(&mut w, 0, "TRAILER!!!", 0, (0, 0), &[]).map_err(io)?;
    w.flush().map_err(io)?;
    drop(w);
    std::fs::metadata(out)
        .map(|m| m.len())
        .map_err(|e| format!("stat {}: {e}", out.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closure_follows_modules_dep_and_treats_dash_as_underscore() {
        let dep = "\
kernel/drivers/vfio/pci/vfio-pci.ko: kernel/drivers/vfio/pci/vfio-pci-core.ko kernel/drivers/vfio/vfio.ko
kernel/drivers/vfio/vfio.ko:
extra/mbochs.ko: kernel/drivers/vfio/mdev/mdev.ko kernel/drivers/vfio/vfio.ko
";
        let c = module_closure(dep, &["vfio_pci", "mbochs"]).unwrap();
        assert!(c.contains("kernel/drivers/vfio/pci/vfio-pci-core.ko"));
        assert!(c.contains("kernel/drivers/vfio/mdev/mdev.ko"));
        assert_eq!(c.len(), 5);
        assert!(module_closure(dep, &["nosuch"])
            .unwrap_err()
            .contains("nosuch"));
    }

    #[test]
    fn ldd_lines_give_library_and_loader_paths() {
        let text = "\tlinux-vdso.so.1 (0x00007ffc)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            parse_ldd(text),
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2")
            ]
        );
    }

    #[test]
    fn cpio_is_newc_with_trailer_and_console() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("r");
        std::fs::create_dir_all(root.join("dev")).unwrap();
        std::fs::write(root.join("init"), "#!/bin/sh\n").unwrap();
        std::os::unix::fs::symlink("busybox", root.join("sh")).unwrap();
        let out = dir.path().join("x.cpio");
        let n = write_cpio(&root, &out).unwrap();
        let bytes = std::fs::read(&out).unwrap();
        assert_eq!(bytes.len() as u64, n);
        assert!(bytes.starts_with(b"070701"));
        let text = String::from_utf8_lossy(&bytes);
        for name in ["dev\0", "dev/console\0", "init\0", "sh\0", "TRAILER!!!\0"] {
            assert!(text.contains(name), "{name:?} missing");
        }
        assert_eq!(bytes.len() % 4, 0);
    }
}
