//! What a journal read from disk may ask `restore` (or `release`) to do.
//!
//! A journal is a file: whoever could write it could ask root to write anything anywhere. So
//! before replaying one, every undo action and every check is matched against the kinds the
//! plan layer produces, component by component (no `..`, no extra components):
//!
//! | undo action                                   | path                                                   | value            |
//! |-----------------------------------------------|--------------------------------------------------------|------------------|
//! | give a device back to its driver / take it off | `/sys/bus/pci/drivers/DRIVER/{bind,unbind}`            | a PCI address    |
//! | restore an override                           | `/sys/bus/pci/devices/ADDR/driver_override`            | a driver name or `\n` |
//! | restore a VF count                            | `/sys/bus/pci/devices/ADDR/sriov_numvfs`               | a number         |
//! | restore a vGPU type                           | `/sys/bus/pci/devices/ADDR/nvidia/current_vgpu_type`   | a number         |
//! | remove a created mdev                         | `/sys/bus/mdev/devices/UUID/remove`                    | `1`              |
//! | re-create a removed mdev                      | `/sys/class/mdev_bus/PARENT/mdev_supported_types/TYPE/create` | a UUID    |
//! | give back reserved hugepages                  | `/sys/devices/system/node/nodeN/hugepages/hugepages-SkB/nr_hugepages`, `/sys/kernel/mm/hugepages/hugepages-SkB/nr_hugepages` | a number |
//! | delete an mdevctl definition                  | `CONFIG_ROOT/etc/mdevctl.d/PARENT/UUID`                | —                |
//!
//! Checks only read, but what they read is printed, so they must stay under `/sys` or
//! `/dev/vfio`. Module loads and file creations are never undo actions: refused.

use std::path::{Component, Path, PathBuf};

use vm_device_host::PciAddress;

use super::{Action, Check};

/// What a replay may touch besides sysfs: the config root of mdevctl definitions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayScope {
    /// Where `--persist` wrote `etc/mdevctl.d` (`/` on a real host); `None`: definitions
    /// are not deleted by a replay.
    pub config_root: Option<PathBuf>,
}

/// The normal components of an absolute path with no `.`, `..` or empty component.
fn components(path: &Path) -> Option<Vec<&str>> {
    let mut out = Vec::new();
    let mut it = path.components();
    if it.next() != Some(Component::RootDir) {
        return None;
    }
    for c in it {
        match c {
            Component::Normal(n) => out.push(n.to_str()?),
            _ => return None,
        }
    }
    Some(out)
}

/// A sysfs name: a driver, an mdev parent or type.
fn name_ok(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

fn pci_ok(s: &str) -> bool {
    s.parse::<PciAddress>().is_ok()
}

fn uuid_ok(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// `hugepages-2048kB` or `hugepages-1048576kB`: the sizes `--hugepages` reserves.
fn pool_ok(s: &str) -> bool {
    matches!(s, "hugepages-2048kB" | "hugepages-1048576kB")
}

/// `node0`, `node1`, …
fn node_ok(s: &str) -> bool {
    s.strip_prefix("node")
        .is_some_and(|n| !n.is_empty() && n.len() <= 5 && n.bytes().all(|b| b.is_ascii_digit()))
}

fn number_ok(s: &str) -> bool {
    let t = s.trim_end_matches('\n');
    !t.is_empty() && t.len() <= 10 && t.bytes().all(|b| b.is_ascii_digit())
}

impl ReplayScope {
    /// `Ok` when `a` is an undo action the plan layer produces; else what is wrong.
    pub(crate) fn allows_action(&self, a: &Action) -> Result<(), String> {
        match a {
            Action::Write { path, value } => {
                let c = components(path).ok_or("not a plain absolute path")?;
                let v = value.as_str();
                let ok = match c.as_slice() {
                    ["sys", "bus", "pci", "drivers", drv, "bind" | "unbind"] => {
                        name_ok(drv) && pci_ok(v)
                    }
                    ["sys", "bus", "pci", "devices", addr, "driver_override"] => {
                        pci_ok(addr) && (v == "\n" || name_ok(v.trim_end_matches('\n')))
                    }
                    ["sys", "bus", "pci", "devices", addr, "sriov_numvfs"]
                    | ["sys", "bus", "pci", "devices", addr, "nvidia", "current_vgpu_type"] => {
                        pci_ok(addr) && number_ok(v)
                    }
                    ["sys", "bus", "mdev", "devices", uuid, "remove"] => {
                        uuid_ok(uuid) && v.trim_end_matches('\n') == "1"
                    }
                    ["sys", "devices", "system", "node", node, "hugepages", pool, "nr_hugepages"] => {
                        node_ok(node) && pool_ok(pool) && number_ok(v)
                    }
                    ["sys", "kernel", "mm", "hugepages", pool, "nr_hugepages"] => {
                        pool_ok(pool) && number_ok(v)
                    }
                    ["sys", "class", "mdev_bus", parent, "mdev_supported_types", ty, "create"] => {
                        name_ok(parent) && name_ok(ty) && uuid_ok(v.trim_end_matches('\n'))
                    }
                    _ => return Err("not a sysfs attribute vm-device writes".into()),
                };
                if ok {
                    Ok(())
                } else {
                    Err(format!(
                        "the value `{}` is not what vm-device writes there",
                        v.escape_debug()
                    ))
                }
            }
            Action::RemoveFile { path } => {
                let Some(root) = &self.config_root else {
                    return Err("deleting files is allowed only under a config root (--config-root), and none was given".into());
                };
                let rel = path
                    .strip_prefix(root)
                    .map_err(|_| format!("not under the config root {}", root.display()))?;
                let rooted = Path::new("/").join(rel);
                let c = components(&rooted).ok_or("not a plain path under the config root")?;
                match c.as_slice() {
                    ["etc", "mdevctl.d", parent, uuid] if name_ok(parent) && uuid_ok(uuid) => {
                        Ok(())
                    }
                    _ => Err("not an mdevctl definition (etc/mdevctl.d/PARENT/UUID)".into()),
                }
            }
            Action::LoadModule { .. } => Err("a module load is never an undo action".into()),
            Action::WriteFile { .. } => Err("a file creation is never an undo action".into()),
            Action::Verify(c) => self.allows_check(c),
        }
    }

    /// `Ok` when `c` reads only under `/sys` or `/dev/vfio`.
    pub(crate) fn allows_check(&self, c: &Check) -> Result<(), String> {
        match components(c.path()).as_deref() {
            Some(["sys", ..]) | Some(["dev", "vfio", ..]) => Ok(()),
            _ => Err("reads outside /sys and /dev/vfio".into()),
        }
    }
}

/// True when the effect of undo action `a` already holds on `host` (the device is back on
/// its driver, the override or count reads the old value, the mdev is gone or back, the
/// definition is deleted): someone restored it by hand, and running it again would fail.
pub(crate) fn already_holds(a: &Action, host: &dyn vm_device_host::HostOps) -> bool {
    // Only positive evidence counts: a host that cannot be read proves nothing.
    let reads = |p: &Path, want: &str| host.read_attr(p).is_ok_and(|v| v.trim() == want.trim());
    match a {
        Action::Write { path, value } => {
            let Some(c) = components(path) else {
                return false;
            };
            let v = value.trim_end_matches('\n');
            let driver = |addr: &str| {
                host.read_link(&PathBuf::from(format!(
                    "/sys/bus/pci/devices/{addr}/driver"
                )))
                .map(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()))
            };
            match c.as_slice() {
                ["sys", "bus", "pci", "drivers", drv, "bind"] => {
                    driver(v).is_ok_and(|d| d.as_deref() == Some(*drv))
                }
                ["sys", "bus", "pci", "drivers", drv, "unbind"] => match driver(v) {
                    Ok(d) => d.as_deref() != Some(*drv),
                    Err(e) => e.is_not_found(),
                },
                ["sys", "bus", "pci", "devices", _, "driver_override"] => {
                    let want = if v.is_empty() { "(null)" } else { v };
                    reads(path, want)
                }
                ["sys", "bus", "pci", "devices", _, "sriov_numvfs"]
                | ["sys", "bus", "pci", "devices", _, "nvidia", "current_vgpu_type"]
                | ["sys", "devices", "system", "node", _, "hugepages", _, "nr_hugepages"]
                | ["sys", "kernel", "mm", "hugepages", _, "nr_hugepages"] => reads(path, v),
                ["sys", "bus", "mdev", "devices", uuid, "remove"] => {
                    match host.list_dir(Path::new("/sys/bus/mdev/devices")) {
                        Ok(list) => !list.iter().any(|n| n == uuid),
                        Err(e) => e.is_not_found(),
                    }
                }
                ["sys", "class", "mdev_bus", _, "mdev_supported_types", ty, "create"] => host
                    .link_name(&PathBuf::from(format!(
                        "/sys/bus/mdev/devices/{v}/mdev_type"
                    )))
                    .is_ok_and(|t| t == *ty),
                _ => false,
            }
        }
        // The definition is gone (no node at all there, a link included).
        Action::RemoveFile { path } => host.kind(path).is_none(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(path: &str, value: &str) -> Action {
        Action::Write {
            path: path.into(),
            value: value.into(),
        }
    }

    #[test]
    fn what_the_plans_write_is_allowed_and_nothing_else() {
        let s = ReplayScope {
            config_root: Some("/cfg".into()),
        };
        for a in [
            w("/sys/bus/pci/drivers/bochs-drm/bind", "0000:01:00.0"),
            w("/sys/bus/pci/drivers/vfio-pci/unbind", "0000:01:00.0"),
            w("/sys/bus/pci/devices/0000:01:00.0/driver_override", "\n"),
            w("/sys/bus/pci/devices/0000:4b:00.0/sriov_numvfs", "4"),
            w(
                "/sys/bus/mdev/devices/5e5e5e5e-0000-4000-8000-000000000001/remove",
                "1",
            ),
            w(
                "/sys/class/mdev_bus/mbochs/mdev_supported_types/mbochs-small/create",
                "5e5e5e5e-0000-4000-8000-000000000001",
            ),
            Action::RemoveFile {
                path: "/cfg/etc/mdevctl.d/mbochs/5e5e5e5e-0000-4000-8000-000000000001".into(),
            },
            w(
                "/sys/devices/system/node/node1/hugepages/hugepages-2048kB/nr_hugepages",
                "0",
            ),
            w(
                "/sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages",
                "4",
            ),
        ] {
            assert_eq!(s.allows_action(&a), Ok(()), "{a:?}");
        }
        for a in [
            w("/etc/passwd", "x"),
            w(
                "/sys/bus/pci/drivers/../../../../etc/x/bind",
                "0000:01:00.0",
            ),
            w("/sys/bus/pci/drivers/bochs-drm/bind", "/etc/shadow"),
            w("/sys/bus/pci/devices/0000:01:00.0/remove", "1"),
            w("/sys/bus/pci/devices/0000:01:00.0/driver_override", "a/b"),
            w(
                "/sys/devices/system/node/node1/hugepages/hugepages-2048kB/nr_hugepages",
                "-1",
            ),
            w(
                "/sys/devices/system/node/node1/hugepages/hugepages-2048kB/free_hugepages",
                "0",
            ),
            w(
                "/sys/devices/system/node/nodeX/hugepages/hugepages-2048kB/nr_hugepages",
                "0",
            ),
            w(
                "/sys/devices/system/node/node1/hugepages/hugepages-64kB/nr_hugepages",
                "0",
            ),
            w(
                "/sys/devices/system/node/node1/hugepages/../../../../../etc/nr_hugepages",
                "0",
            ),
            w(
                "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_overcommit_hugepages",
                "9",
            ),
            Action::RemoveFile {
                path: "/etc/shadow".into(),
            },
            Action::RemoveFile {
                path: "/cfg/etc/mdevctl.d/../../x/5e5e5e5e-0000-4000-8000-000000000001".into(),
            },
            Action::LoadModule {
                name: "evil".into(),
            },
            Action::WriteFile {
                path: "/cfg/etc/mdevctl.d/a/b".into(),
                contents: String::new(),
            },
        ] {
            assert!(s.allows_action(&a).is_err(), "{a:?}");
        }
        assert!(ReplayScope::default()
            .allows_action(&Action::RemoveFile {
                path: "/etc/mdevctl.d/mbochs/5e5e5e5e-0000-4000-8000-000000000001".into()
            })
            .is_err());
    }
}
