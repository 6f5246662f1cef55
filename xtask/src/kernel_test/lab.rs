//! The kernel side of the lab: Debian packages, the kernel image and modules, the
//! out-of-tree mdev samples and the uncompressed `vmlinux`, all cached under
//! `target/kernel-lab/<kernel-version>/` so a warm run downloads and builds nothing.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::initramfs::module_closure;
use super::{run_cmd, stamp, Opts};

/// Debian packages the harness installs on the host (when missing and allowed).
/// `linux-headers-<kver>` is added when the mdev samples must be built.
pub const HOST_PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "busybox-static",
    "xz-utils",
    "binutils",
    "gcc",
    "make",
    "libc6-dev",
];

/// Modules the initramfs carries (with their dependencies): native display drivers for
/// the lab's devices, VFIO, mdev and the sample mdev parents.
pub const MODULES: &[&str] = &[
    "bochs",
    "qxl",
    "virtio-gpu",
    "cirrus",
    "virtio_pci",
    "vfio",
    "vfio_iommu_type1",
    "vfio-pci",
    "mdev",
    "mtty",
    "mdpy",
    "mdpy-fb",
    "mbochs",
];

/// Modules `cargo xtask nested-test`'s L1 guest needs beyond [`MODULES`]: KVM (TCG's
/// `-cpu max` emulates AMD SVM, so `kvm_amd` loads and `/dev/kvm` appears) and the 9p share
/// that brings the L2 QEMU. Kept in the same cache, so one extraction serves both harnesses.
pub const NESTED_MODULES: &[&str] = &["kvm_amd", "9pnet_virtio", "9p"];

/// Debian's modules the cache keeps: [`MODULES`] without the samples, and [`NESTED_MODULES`].
fn debian_modules() -> Vec<&'static str> {
    MODULES
        .iter()
        .chain(NESTED_MODULES)
        .copied()
        .filter(|m| !SAMPLES.contains(m))
        .collect()
}

/// The sample mdev drivers built out of tree from `linux-source`.
const SAMPLES: &[&str] = &["mtty", "mdpy", "mdpy-fb", "mbochs"];

/// A kernel ready to boot, from the cache.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// `6.1.0-56-amd64`
    pub kver: String,
    /// Debian package version, `6.1.192-2`.
    pub pkg_version: String,
    /// `target/kernel-lab/<kver>/`
    pub dir: PathBuf,
    /// The uncompressed kernel, booted through its PVH entry.
    pub vmlinux: PathBuf,
    /// `kimg/lib/modules/<kver>`, samples in `extra/`, `modules.dep` generated.
    pub modroot: PathBuf,
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

/// Installs whichever of `pkgs` are missing (apt-get, no recommends).
pub fn ensure_packages(pkgs: &[String], opts: &Opts) -> Result<(), String> {
    let missing: Vec<&String> = pkgs.iter().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    if opts.no_install || !is_root() {
        return Err(format!(
            "missing Debian packages: {list}; install them (apt-get install --no-install-recommends {list}) or run as root without --no-install"
        ));
    }
    stamp(&format!("apt-get install {list}"));
    let mut cmd = Command::new("apt-get");
    cmd.args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(missing.iter().map(|s| s.as_str()))
        .env("DEBIAN_FRONTEND", "noninteractive");
    match run_cmd(&mut cmd, "apt-get install") {
        Ok(_) => Ok(()),
        Err(_) => {
            apt_update(opts)?;
            let mut cmd = Command::new("apt-get");
            cmd.args(["install", "-y", "-qq", "--no-install-recommends"])
                .args(missing.iter().map(|s| s.as_str()))
                .env("DEBIAN_FRONTEND", "noninteractive");
            run_cmd(&mut cmd, "apt-get install").map(|_| ())
        }
    }
}

fn apt_update(opts: &Opts) -> Result<(), String> {
    if opts.no_install || !is_root() {
        return Err(
            "apt lists are stale or missing and apt-get update needs root (or drop --no-install)"
                .into(),
        );
    }
    stamp("apt-get update");
    run_cmd(
        Command::new("apt-get").args(["update", "-qq"]),
        "apt-get update",
    )
    .map(|_| ())
}

/// The kernel flavour `linux-image-amd64` depends on now, e.g. `6.1.0-56-amd64`.
pub fn debian_kernel_version(opts: &Opts) -> Result<String, String> {
    let query = || -> Option<String> {
        let out = Command::new("apt-cache")
            .args(["depends", "linux-image-amd64"])
            .stderr(Stdio::null())
            .output()
            .ok()?;
        parse_depends(&String::from_utf8_lossy(&out.stdout))
    };
    if let Some(v) = query() {
        return Ok(v);
    }
    apt_update(opts)?;
    query().ok_or_else(|| {
        "apt-cache depends linux-image-amd64 names no linux-image-<version> package (is this Debian, with the main component enabled?)".into()
    })
}

/// `  Depends: linux-image-6.1.0-56-amd64` → `6.1.0-56-amd64`.
pub fn parse_depends(text: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let v = l.trim().strip_prefix("Depends:")?.trim();
        let kver = v.strip_prefix("linux-image-")?;
        kver.starts_with(|c: char| c.is_ascii_digit())
            .then(|| kver.to_string())
    })
}

/// `6.1.0-56-amd64` → `6.1`.
fn series(kver: &str) -> String {
    kver.split('.').take(2).collect::<Vec<_>>().join(".")
}

/// Debian's `linux-image-KVER` package under `dir/debs` (downloaded once): the folder, the
/// .deb and its package version.
fn kernel_image_deb(
    dir: &Path,
    kver: &str,
    opts: &Opts,
) -> Result<(PathBuf, PathBuf, String), String> {
    let debs = dir.join("debs");
    std::fs::create_dir_all(&debs).map_err(|e| format!("mkdir {}: {e}", debs.display()))?;
    let img_prefix = format!("linux-image-{kver}_");
    if find_deb(&debs, &img_prefix).is_none() {
        apt_download(&format!("linux-image-{kver}"), &debs, opts)?;
    }
    let img_deb = find_deb(&debs, &img_prefix).ok_or_else(|| {
        format!(
            "apt-get download left no {img_prefix}*.deb in {}",
            debs.display()
        )
    })?;
    let pkg_version = run_cmd(
        Command::new("dpkg-deb")
            .arg("-f")
            .arg(&img_deb)
            .arg("Version"),
        "dpkg-deb -f Version",
    )?
    .trim()
    .to_string();
    Ok((debs, img_deb, pkg_version))
}

fn find_deb(dir: &Path, prefix: &str) -> Option<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix) && n.ends_with(".deb"))
        })
        .collect();
    v.sort();
    v.pop()
}

fn apt_download(spec: &str, debs: &Path, opts: &Opts) -> Result<(), String> {
    stamp(&format!("apt-get download {spec}"));
    let attempt = || {
        run_cmd(
            Command::new("apt-get")
                .args(["download", "-qq", spec])
                .current_dir(debs),
            "apt-get download",
        )
    };
    if attempt().is_ok() {
        return Ok(());
    }
    apt_update(opts)?;
    attempt().map(|_| ())
}

/// Fills the cache for the current Debian kernel and returns it.
pub fn prepare(lab_root: &Path, opts: &Opts) -> Result<Kernel, String> {
    let kver = debian_kernel_version(opts)?;
    stamp(&format!("kernel linux-image-{kver}"));
    let mut pkgs: Vec<String> = HOST_PACKAGES.iter().map(|s| s.to_string()).collect();
    let dir = lab_root.join(&kver);
    let samples_dir = dir.join("mdev-samples");
    let samples_built = SAMPLES
        .iter()
        .all(|s| samples_dir.join(format!("{s}.ko")).is_file());
    if !samples_built {
        pkgs.push(format!("linux-headers-{kver}"));
    }
    ensure_packages(&pkgs, opts)?;

    let (debs, img_deb, pkg_version) = kernel_image_deb(&dir, &kver, opts)?;

    // kernel image and modules
    let kimg = dir.join("kimg");
    let modroot = kimg.join("lib/modules").join(&kver);
    let vmlinuz = kimg.join("boot").join(format!("vmlinuz-{kver}"));
    if !vmlinuz.is_file() || !modules_present(&modroot) {
        stamp(&format!("extract {}", img_deb.display()));
        let _ = std::fs::remove_dir_all(&kimg);
        std::fs::create_dir_all(&kimg).map_err(|e| format!("mkdir {}: {e}", kimg.display()))?;
        run_cmd(
            Command::new("dpkg-deb").arg("-x").arg(&img_deb).arg(&kimg),
            "dpkg-deb -x",
        )?;
        depmod(&kimg, &kver)?;
    }

    // the sample mdev parents, built out of tree against the headers
    if !samples_built {
        build_samples(&dir, &debs, &kver, &pkg_version, opts)?;
    }
    let extra = modroot.join("extra");
    if SAMPLES
        .iter()
        .any(|s| !extra.join(format!("{s}.ko")).is_file())
    {
        std::fs::create_dir_all(&extra).map_err(|e| format!("mkdir {}: {e}", extra.display()))?;
        for s in SAMPLES {
            let from = samples_dir.join(format!("{s}.ko"));
            std::fs::copy(&from, extra.join(format!("{s}.ko")))
                .map_err(|e| format!("copy {}: {e}", from.display()))?;
        }
        depmod(&kimg, &kver)?;
    }

    prune_modules(&modroot)?;

    // uncompressed ELF for the PVH entry (skips the xz decompressor: ~5 s under TCG)
    let vmlinux = dir.join(format!("vmlinux-{kver}"));
    if !vmlinux.is_file() {
        stamp("uncompress vmlinuz -> vmlinux");
        extract_vmlinux(&vmlinuz, &vmlinux)?;
    }
    Ok(Kernel {
        kver,
        pkg_version,
        dir,
        vmlinux,
        modroot,
    })
}

/// The kernel alone for `cargo xtask e2e`: the image and the modules of `modules` (with
/// their dependencies) from the same cache as [`prepare`], without the mdev samples or their
/// headers.
pub fn prepare_plain(lab_root: &Path, opts: &Opts, modules: &[&str]) -> Result<Kernel, String> {
    let kver = debian_kernel_version(opts)?;
    stamp(&format!("kernel linux-image-{kver}"));
    ensure_packages(
        &["busybox-static".to_string(), "xz-utils".to_string()],
        opts,
    )?;
    let dir = lab_root.join(&kver);
    let (_, img_deb, pkg_version) = kernel_image_deb(&dir, &kver, opts)?;
    let kimg = dir.join("kimg");
    let modroot = kimg.join("lib/modules").join(&kver);
    let vmlinuz = kimg.join("boot").join(format!("vmlinuz-{kver}"));
    let present = std::fs::read_to_string(modroot.join("modules.dep"))
        .ok()
        .and_then(|dep| module_closure(&dep, modules).ok())
        .is_some_and(|files| files.iter().all(|f| modroot.join(f).is_file()));
    if !vmlinuz.is_file() || !present {
        stamp(&format!("extract {}", img_deb.display()));
        let _ = std::fs::remove_dir_all(&kimg);
        std::fs::create_dir_all(&kimg).map_err(|e| format!("mkdir {}: {e}", kimg.display()))?;
        run_cmd(
            Command::new("dpkg-deb").arg("-x").arg(&img_deb).arg(&kimg),
            "dpkg-deb -x",
        )?;
        depmod(&kimg, &kver)?;
        // Keep what kernel-test needs too (the samples are not built here, so only the
        // Debian modules of its list), drop the other 400 MB.
        let dep_path = modroot.join("modules.dep");
        let dep = std::fs::read_to_string(&dep_path)
            .map_err(|e| format!("read {}: {e}", dep_path.display()))?;
        let mut keep = module_closure(&dep, modules)?;
        keep.extend(module_closure(&dep, &debian_modules()).unwrap_or_default());
        prune_except(&modroot, &keep)?;
    }
    let vmlinux = dir.join(format!("vmlinux-{kver}"));
    if !vmlinux.is_file() {
        stamp("uncompress vmlinuz -> vmlinux");
        extract_vmlinux(&vmlinuz, &vmlinux)?;
    }
    Ok(Kernel {
        kver,
        pkg_version,
        dir,
        vmlinux,
        modroot,
    })
}

/// True when `modules.dep` is there and every Debian module of [`MODULES`]' and
/// [`NESTED_MODULES`]' closure too
/// (the samples in `extra/` are checked separately).
fn modules_present(modroot: &Path) -> bool {
    let Ok(dep) = std::fs::read_to_string(modroot.join("modules.dep")) else {
        return false;
    };
    match module_closure(&dep, &debian_modules()) {
        Ok(files) => files.iter().all(|f| modroot.join(f).is_file()),
        Err(_) => false,
    }
}

/// Deletes every `.ko` the initramfs does not need: the extracted package is 400 MB, the
/// closure of [`MODULES`] and [`NESTED_MODULES`] a few MB. The `.deb` stays, so a changed
/// list re-extracts offline.
fn prune_modules(modroot: &Path) -> Result<(), String> {
    let dep_path = modroot.join("modules.dep");
    let dep = std::fs::read_to_string(&dep_path)
        .map_err(|e| format!("read {}: {e}", dep_path.display()))?;
    let mut keep = module_closure(&dep, MODULES)?;
    keep.extend(module_closure(&dep, NESTED_MODULES)?);
    prune_except(modroot, &keep)
}

/// Deletes every `.ko` under `modroot/kernel` not in `keep`.
fn prune_except(modroot: &Path, keep: &std::collections::BTreeSet<String>) -> Result<(), String> {
    let mut stack = vec![modroot.join("kernel")];
    let mut removed = 0usize;
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(p);
                continue;
            }
            let rel = p
                .strip_prefix(modroot)
                .map(|r| r.to_string_lossy().into_owned())
                .unwrap_or_default();
            if rel.contains(".ko") && !keep.contains(&rel) {
                std::fs::remove_file(&p).map_err(|e| format!("remove {}: {e}", p.display()))?;
                removed += 1;
            }
        }
    }
    if removed > 0 {
        stamp(&format!(
            "pruned {removed} modules the initramfs does not need ({} kept)",
            keep.len()
        ));
    }
    Ok(())
}

fn depmod(base: &Path, kver: &str) -> Result<(), String> {
    // Debian's image package ships no modules.dep (postinst makes it)
    run_cmd(
        Command::new("busybox")
            .arg("depmod")
            .arg("-b")
            .arg(base)
            .arg(kver),
        "busybox depmod",
    )
    .map(|_| ())
}

fn build_samples(
    dir: &Path,
    debs: &Path,
    kver: &str,
    pkg_version: &str,
    opts: &Opts,
) -> Result<(), String> {
    let ser = series(kver);
    let src_name = format!("linux-source-{ser}_{pkg_version}_all.deb");
    let src_deb = debs.join(&src_name);
    if !src_deb.is_file() {
        apt_download(&format!("linux-source-{ser}={pkg_version}"), debs, opts)?;
    }
    if !src_deb.is_file() {
        return Err(format!("apt-get download left no {}", src_deb.display()));
    }
    let src = dir.join("src");
    let samples_src = src.join("samples/vfio-mdev");
    if !samples_src.join("mbochs.c").is_file() {
        stamp(&format!("extract samples/vfio-mdev from {src_name}"));
        let _ = std::fs::remove_dir_all(&src);
        std::fs::create_dir_all(&src).map_err(|e| format!("mkdir {}: {e}", src.display()))?;
        // only samples/vfio-mdev (116 KB) of the 139 MB source package
        let script = format!(
            "dpkg-deb --fsys-tarfile '{deb}' | tar -xO './usr/src/linux-source-{ser}.tar.xz' | tar -xJ -C '{src}' --strip-components=1 'linux-source-{ser}/samples/vfio-mdev'",
            deb = src_deb.display(),
            src = src.display()
        );
        run_cmd(
            Command::new("bash").args(["-o", "pipefail", "-c", &script]),
            "extract samples/vfio-mdev",
        )?;
    }
    let build = dir.join("mdev-samples");
    stamp(&format!(
        "build {} against linux-headers-{kver}",
        SAMPLES.join(" ")
    ));
    let _ = std::fs::remove_dir_all(&build);
    std::fs::create_dir_all(&build).map_err(|e| format!("mkdir {}: {e}", build.display()))?;
    for e in std::fs::read_dir(&samples_src)
        .map_err(|e| format!("list {}: {e}", samples_src.display()))?
        .flatten()
    {
        let p = e.path();
        if matches!(p.extension().and_then(|x| x.to_str()), Some("c" | "h")) {
            std::fs::copy(&p, build.join(e.file_name()))
                .map_err(|e| format!("copy {}: {e}", p.display()))?;
        }
    }
    let objs: Vec<String> = SAMPLES.iter().map(|s| format!("{s}.o")).collect();
    std::fs::write(
        build.join("Kbuild"),
        format!("obj-m := {}\n", objs.join(" ")),
    )
    .map_err(|e| format!("write Kbuild: {e}"))?;
    let headers = PathBuf::from(format!("/usr/src/linux-headers-{kver}"));
    if !headers.is_dir() {
        return Err(format!(
            "{} is missing: install linux-headers-{kver}",
            headers.display()
        ));
    }
    run_cmd(
        Command::new("make")
            .arg("-s")
            .arg("-C")
            .arg(&headers)
            .arg(format!("M={}", build.display()))
            .arg("modules"),
        "make (mdev samples)",
    )?;
    // the samples are built: the 139 MB source package is not needed again
    let _ = std::fs::remove_file(&src_deb);
    Ok(())
}

/// Finds the xz stream in a bzImage and uncompresses it to an ELF `vmlinux`.
fn extract_vmlinux(vmlinuz: &Path, out: &Path) -> Result<(), String> {
    let img = std::fs::read(vmlinuz).map_err(|e| format!("read {}: {e}", vmlinuz.display()))?;
    const XZ_MAGIC: &[u8] = b"\xfd7zXZ\x00";
    let off = img
        .windows(XZ_MAGIC.len())
        .position(|w| w == XZ_MAGIC)
        .ok_or_else(|| {
            format!(
                "{}: no xz stream inside (not an xz-compressed bzImage?)",
                vmlinuz.display()
            )
        })?;
    let tmp = out.with_extension("tmp");
    let file = std::fs::File::create(&tmp).map_err(|e| format!("create {}: {e}", tmp.display()))?;
    let mut child = Command::new("xz")
        .arg("-dc")
        .stdin(Stdio::piped())
        .stdout(file)
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run xz: {e} (install xz-utils)"))?;
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().ok_or("xz: no stdin")?;
        // xz stops at the end of the stream; the bytes after it make it complain: ignore
        let _ = stdin.write_all(&img[off..]);
    }
    let _ = child.wait();
    let head = std::fs::read(&tmp)
        .map(|b| b.get(..4).map(|h| h.to_vec()))
        .map_err(|e| format!("read {}: {e}", tmp.display()))?;
    if head.as_deref() != Some(b"\x7fELF") {
        return Err(format!(
            "uncompressing {} did not give an ELF file",
            vmlinuz.display()
        ));
    }
    std::fs::rename(&tmp, out).map_err(|e| format!("rename to {}: {e}", out.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depends_line_gives_the_kernel_version() {
        let text = "linux-image-amd64\n  Depends: linux-image-6.1.0-56-amd64\n";
        assert_eq!(parse_depends(text).as_deref(), Some("6.1.0-56-amd64"));
        assert_eq!(
            parse_depends("linux-image-amd64\n  Depends: <linux-image>\n"),
            None
        );
        assert_eq!(series("6.1.0-56-amd64"), "6.1");
    }
}
