//! Host-wide checks: CPU virtualization and KVM for every rung; IOMMU, kernel parameters,
//! interrupt remapping, VFIO modules, `/dev/vfio/vfio` and the locked-memory limit for
//! passthrough.

use std::path::{Path, PathBuf};

use super::remedy::{self, BootLoader, FIX_VFIO_PERMISSIONS};
use super::{Check, Options, Status};
use crate::host::HostOps;
use crate::inventory::{human_bytes, CpuVendor, HostInventory, IommuKind};
use crate::ladder::reasons::{guest_iommu_remedy, iommu_off};
use crate::ladder::GpuMode;

const PT: Option<GpuMode> = Some(GpuMode::Passthrough);

/// `ECAP.IR`, bit 3 of the VT-d extended capability register: interrupt remapping.
const ECAP_IR: u64 = 1 << 3;

/// `CAP_IPC_LOCK`: VFIO does not charge pinned pages against RLIMIT_MEMLOCK for it.
const CAP_IPC_LOCK: u32 = 14;

/// libvirt sets a VFIO guest's memlock limit to its RAM plus 1 GiB (for MMIO and ROMs).
const MEMLOCK_SLACK: u64 = 1 << 30;

fn amd(inv: &HostInventory) -> bool {
    matches!(inv.host.cpu_vendor, Some(CpuVendor::Amd))
        || inv.host.iommu.kind == Some(IommuKind::AmdVi)
}

/// CPU virtualization and `/dev/kvm`: what any VM needs.
pub(super) fn host_checks(host: &dyn HostOps, inv: &HostInventory, out: &mut Vec<Check>) {
    let flag = if amd(inv) { "svm" } else { "vmx" };
    let cpu = match host.read_attr(Path::new("/proc/cpuinfo")) {
        Ok(text) => {
            let flags: Vec<&str> = text
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    (k.trim() == "flags").then_some(v)
                })
                .map(|v| v.split_whitespace().collect())
                .unwrap_or_default();
            let found: Vec<&str> = ["vmx", "svm"]
                .into_iter()
                .filter(|f| flags.contains(f))
                .collect();
            if found.is_empty() && inv.host.dev_kvm {
                // Sandboxes and some nested setups hide the flag but offer KVM all the same.
                Check::new(
                    "cpu.virtualization",
                    None,
                    Status::Warn,
                    format!("the CPU shows no `{flag}` flag, but /dev/kvm exists (nested or hidden flags)"),
                )
                .evidence("/proc/cpuinfo flags: neither vmx nor svm")
                .evidence("/dev/kvm: present")
                .remedy("ls -l /dev/kvm  # KVM is the authority: see kvm.device")
            } else if found.is_empty() {
                // The launcher runs such a VM under TCG: a warning that names the cost, as
                // `--kernel` prints it, not a failure.
                Check::new(
                    "cpu.virtualization",
                    None,
                    Status::Warn,
                    format!("the CPU shows no `{flag}` flag: no KVM, so VMs run under TCG emulation (many times slower)"),
                )
                .evidence("/proc/cpuinfo flags: neither vmx nor svm")
                .remedy(if inv.host.virtualization.guest {
                    nested_remedy(inv)
                } else {
                    format!(
                        "# enable {} in the firmware setup\nsudo systemctl reboot --firmware-setup",
                        if flag == "svm" { "SVM (AMD-V)" } else { "VT-x" }
                    )
                })
            } else {
                Check::new(
                    "cpu.virtualization",
                    None,
                    Status::Ok,
                    format!("CPU virtualization: {}", found.join(", ")),
                )
                .evidence(format!("/proc/cpuinfo flags: {}", found.join(" ")))
            }
        }
        Err(e) => Check::new(
            "cpu.virtualization",
            None,
            Status::Warn,
            "cannot tell whether the CPU has VT-x / AMD-V",
        )
        .evidence(format!("/proc/cpuinfo: {e}"))
        .remedy("grep -c -w -e vmx -e svm /proc/cpuinfo"),
    };
    out.push(cpu);

    let kvm = Path::new("/dev/kvm");
    let check = if !host.exists(Path::new("/dev")) {
        Check::new(
            "kvm.device",
            None,
            Status::Warn,
            "this host tree has no /dev: cannot tell whether /dev/kvm exists",
        )
        .evidence("/dev: absent")
        .remedy("ls -l /dev/kvm")
    } else if !inv.host.dev_kvm {
        let module = if flag == "svm" {
            "kvm_amd"
        } else {
            "kvm_intel"
        };
        let mut fix = remedy::load_module(module);
        if inv.host.virtualization.guest {
            fix = format!("{}\n{fix}", nested_remedy(inv));
        }
        Check::new(
            "kvm.device",
            None,
            Status::Warn,
            "/dev/kvm is missing: KVM is not loaded, so VMs run under TCG emulation (many times slower)",
        )
        .evidence("/dev/kvm: absent")
        .remedy(fix)
    } else if !host.access(kvm, true) {
        Check::new(
            "kvm.device",
            None,
            Status::Warn,
            "/dev/kvm exists but this user cannot open it read-write, so VMs run under TCG emulation (many times slower)",
        )
        .evidence("/dev/kvm: access(R_OK|W_OK) denied")
        .remedy("sudo usermod -aG kvm $USER\n# log out and in again so that the new group applies")
    } else {
        Check::new(
            "kvm.device",
            None,
            Status::Ok,
            "/dev/kvm is there and usable",
        )
        .evidence("/dev/kvm: access(R_OK|W_OK) ok")
    };
    out.push(check);
}

/// KVM inside a virtual machine: the hypervisor must pass virtualization through.
fn nested_remedy(inv: &HostInventory) -> String {
    format!(
        "# this host is {}: KVM here needs nested virtualization from its hypervisor\n# (a KVM host: `options kvm_intel nested=1` or `options kvm_amd nested=1`, and `-cpu host` for this guest; a cloud: an instance type with nested virtualization)",
        inv.host.virtualization.describe()
    )
}

/// The host-wide prerequisites of passthrough.
pub(super) fn passthrough_checks(
    host: &dyn HostOps,
    inv: &HostInventory,
    opts: &Options,
    out: &mut Vec<Check>,
) {
    let h = &inv.host;
    let params = h.iommu_params_remedy();
    let boot = BootLoader::detect(host);

    // iommu.enabled
    let units = h.iommu.units.join(", ");
    if h.iommu.enabled {
        let kind = match h.iommu.kind {
            Some(IommuKind::IntelVtd) => "Intel VT-d",
            Some(IommuKind::AmdVi) => "AMD-Vi",
            _ => "IOMMU",
        };
        out.push(
            Check::new(
                "iommu.enabled",
                PT,
                Status::Ok,
                format!(
                    "the IOMMU is on ({kind}: {}, {} groups)",
                    if units.is_empty() { "-" } else { &units },
                    h.iommu.group_count
                ),
            )
            .evidence(format!("/sys/class/iommu: {units}"))
            .evidence(format!(
                "/sys/kernel/iommu_groups: {} groups",
                h.iommu.group_count
            )),
        );
    } else {
        let r = iommu_off(&inv.host);
        let mut c = Check::new("iommu.enabled", PT, Status::Fail, r.message.clone());
        c.evidence = r.evidence.clone();
        if h.virtualization.guest {
            // No firmware to set up: the hypervisor decides whether this guest has an IOMMU.
            let fix = guest_iommu_remedy(h);
            out.push(c.remedy(format!("# {fix}")));
        } else {
            let firmware = if params.starts_with("amd") {
                "AMD-Vi / IOMMU (and SVM)"
            } else {
                "VT-d"
            };
            out.push(c.remedy(format!(
                "# enable {firmware} in the firmware setup, and add `{params}` to the kernel command line (see iommu.kernel_params)\nsudo systemctl reboot --firmware-setup"
            )));
        }
    }

    // iommu.kernel_params
    let (want_key, want_val) = if params.starts_with("amd") {
        ("amd_iommu", &h.params.amd_iommu)
    } else {
        ("intel_iommu", &h.params.intel_iommu)
    };
    let cmdline = h.cmdline.clone().unwrap_or_else(|| "(unreadable)".into());
    let explicitly_off = want_val.as_deref().is_some_and(|v| v.contains("off"));
    let pt = h.params.iommu.as_deref() == Some("pt");
    let vendor = if params.starts_with("amd") {
        "AMD"
    } else {
        "Intel"
    };
    let check = if h.cmdline.is_none() {
        Check::new(
            "iommu.kernel_params",
            PT,
            Status::Warn,
            format!("cannot read the kernel command line; this host needs `{params}`"),
        )
        .remedy(format!(
            "cat /proc/cmdline  # should contain {params}\n{}",
            boot.add_params(params)
        ))
    } else if h.virtualization.guest && !h.iommu.enabled && !explicitly_off {
        Check::new(
            "iommu.kernel_params",
            PT,
            Status::Warn,
            format!(
                "no kernel parameter helps until the hypervisor gives this guest an IOMMU; then it needs `{params}`"
            ),
        )
        .remedy("# see iommu.enabled: the virtual IOMMU comes first")
    } else if explicitly_off || (!h.iommu.enabled && want_val.is_none()) {
        Check::new(
            "iommu.kernel_params",
            PT,
            Status::Fail,
            match want_val {
                Some(v) => format!("{want_key}={v} on the kernel command line turns the IOMMU off"),
                None => {
                    format!("{want_key}=on is missing from the kernel command line ({vendor} CPU)")
                }
            },
        )
        .remedy(boot.add_params(params))
    } else if !pt && group_type(host).is_some_and(|t| t == "identity") {
        // Passthrough mode without the parameter (iommu.passthrough=1, or the kernel's
        // default): the host's own devices are not translated, which is what iommu=pt is for.
        Check::new(
            "iommu.kernel_params",
            PT,
            Status::Ok,
            format!("the IOMMU runs the host's devices in passthrough mode (group type identity) ({vendor} CPU)"),
        )
    } else if !pt {
        let c = Check::new(
            "iommu.kernel_params",
            PT,
            Status::Warn,
            format!("iommu=pt is not set: devices the host keeps pay for IOMMU translation ({vendor} CPU)"),
        )
        .remedy(boot.add_params("iommu=pt"));
        match group_type_of(host) {
            Some((p, t)) => c.evidence(format!(
                "{} = {t} (translated: every DMA of the host's devices is looked up)",
                p.display()
            )),
            None => c,
        }
    } else {
        Check::new(
            "iommu.kernel_params",
            PT,
            Status::Ok,
            format!(
                "kernel parameters: {}iommu=pt ({vendor} CPU)",
                want_val
                    .as_ref()
                    .map(|v| format!("{want_key}={v} "))
                    .unwrap_or_default()
            ),
        )
    };
    out.push(
        check
            .evidence(format!("/proc/cmdline = {cmdline}"))
            .evidence(boot.evidence()),
    );

    out.push(interrupt_remapping(host, inv));

    // modules.*
    for m in ["vfio", "vfio_pci", "vfio_iommu_type1"] {
        out.push(module_check(host, inv, m, PT, Status::Warn));
    }

    // vfio.container
    let node = Path::new("/dev/vfio/vfio");
    out.push(if !h.dev_vfio {
        Check::new(
            "vfio.container",
            PT,
            Status::Warn,
            "/dev/vfio/vfio is missing: the vfio module is not loaded yet",
        )
        .evidence("/dev/vfio/vfio: absent")
        .remedy(remedy::load_module("vfio_pci"))
    } else if !host.access(node, true) {
        Check::new(
            "vfio.container",
            PT,
            Status::Fail,
            "this user cannot open /dev/vfio/vfio read-write",
        )
        .evidence("/dev/vfio/vfio: access(R_OK|W_OK) denied")
        .remedy(FIX_VFIO_PERMISSIONS)
    } else {
        Check::new(
            "vfio.container",
            PT,
            Status::Ok,
            "/dev/vfio/vfio is there and usable",
        )
        .evidence("/dev/vfio/vfio: access(R_OK|W_OK) ok")
    });

    out.push(memlock(host, opts));
}

/// The `type` file of the first IOMMU group and what it reads (`identity` in passthrough
/// mode, `DMA` or `DMA-FQ` when translated), when there is a group to read.
fn group_type_of(host: &dyn HostOps) -> Option<(PathBuf, String)> {
    let groups = host.list_dir(Path::new("/sys/kernel/iommu_groups")).ok()?;
    let first = groups.iter().filter_map(|g| g.parse::<u32>().ok()).min()?;
    let p = PathBuf::from(format!("/sys/kernel/iommu_groups/{first}/type"));
    let t = host.read_attr(&p).ok()?.trim().to_string();
    (!t.is_empty()).then_some((p, t))
}

fn group_type(host: &dyn HostOps) -> Option<String> {
    group_type_of(host).map(|(_, t)| t)
}

fn interrupt_remapping(host: &dyn HostOps, inv: &HostInventory) -> Check {
    const ID: &str = "iommu.interrupt_remapping";
    let how = "dmesg | grep -i -e remapping -e x2apic";
    let mut ecaps = Vec::new();
    for unit in inv
        .host
        .iommu
        .units
        .iter()
        .filter(|u| u.starts_with("dmar"))
    {
        let path = format!("/sys/class/iommu/{unit}/intel-iommu/ecap");
        if let Ok(v) = host.read_attr(Path::new(&path)) {
            if let Some(n) = crate::inventory::parse_hex(&v) {
                ecaps.push((path, v, n));
            }
        }
    }
    if ecaps.is_empty() {
        return Check::new(
            ID,
            PT,
            Status::Warn,
            "cannot tell from sysfs whether interrupt remapping is on",
        )
        .evidence("/sys/class/iommu/dmar*/intel-iommu/ecap: absent (not VT-d, or IOMMU off)")
        .evidence("kernel messages are not read")
        .remedy(how);
    }
    let missing: Vec<&(String, String, u64)> =
        ecaps.iter().filter(|(_, _, n)| n & ECAP_IR == 0).collect();
    let mut c = if missing.is_empty() {
        Check::new(
            ID,
            PT,
            Status::Ok,
            "every VT-d unit supports interrupt remapping (ECAP.IR)",
        )
    } else {
        Check::new(
            ID,
            PT,
            Status::Fail,
            "a VT-d unit lacks interrupt remapping: vfio_iommu_type1 refuses devices without it",
        )
        .remedy(format!(
            "# enable interrupt remapping / x2APIC in the firmware setup; check with:\n{how}\n# unsafe fallback (a guest can inject host interrupts):\necho 'options vfio_iommu_type1 allow_unsafe_interrupts=1' | sudo tee /etc/modprobe.d/vfio-unsafe-interrupts.conf"
        ))
    };
    for (path, v, n) in &ecaps {
        c = c.evidence(format!(
            "{path} = {v} (IR bit 3: {})",
            if n & ECAP_IR != 0 { "set" } else { "clear" }
        ));
    }
    c
}

/// A module check: loaded (or built in, `/sys/module/NAME`) is ok; else `missing`.
pub(super) fn module_check(
    host: &dyn HostOps,
    inv: &HostInventory,
    name: &str,
    rung: Option<GpuMode>,
    missing: Status,
) -> Check {
    let id = format!("modules.{name}");
    let sys = format!("/sys/module/{name}");
    if inv.host.module_loaded(name) {
        return Check::new(id, rung, Status::Ok, format!("module {name} is loaded"))
            .evidence("/proc/modules");
    }
    if host.exists(Path::new(&sys)) {
        return Check::new(
            id,
            rung,
            Status::Ok,
            format!("module {name} is built into the kernel"),
        )
        .evidence(format!("{sys}: present"));
    }
    let (title, status) = match inv.host.modules {
        None => (
            format!("cannot tell whether {name} is loaded"),
            Status::Warn,
        ),
        Some(_) => (format!("module {name} is not loaded"), missing),
    };
    Check::new(id, rung, status, title)
        .evidence(if inv.host.modules.is_some() {
            "/proc/modules: not listed".to_string()
        } else {
            "/proc/modules: unreadable".to_string()
        })
        .evidence(format!("{sys}: absent"))
        .remedy(remedy::load_module(name))
}

/// `Max locked memory` of `/proc/self/limits`: soft limit in bytes, `None` for unlimited.
fn parse_memlock(limits: &str) -> Option<Option<u64>> {
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max locked memory"))?;
    let soft = line["Max locked memory".len()..]
        .split_whitespace()
        .next()?;
    if soft == "unlimited" {
        return Some(None);
    }
    soft.parse().ok().map(Some)
}

/// True when `CapEff` of `/proc/self/status` holds `CAP_IPC_LOCK`.
fn has_ipc_lock(status: &str) -> Option<bool> {
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))?
        .trim();
    u64::from_str_radix(hex, 16)
        .ok()
        .map(|caps| caps & (1 << CAP_IPC_LOCK) != 0)
}

fn memlock(host: &dyn HostOps, opts: &Options) -> Check {
    const ID: &str = "memlock.limit";
    let need = opts.memory_bytes.saturating_add(MEMLOCK_SLACK);
    let need_kib = need.div_ceil(1024);
    let fix = format!(
        "ulimit -l {need_kib}  # this shell, when the hard limit allows
echo \"$USER - memlock {need_kib}\" | sudo tee /etc/security/limits.d/90-vm-memlock.conf  # every login, after logging in again
# a systemd service: LimitMEMLOCK={need} in its [Service] section"
    );
    let limits = Path::new("/proc/self/limits");
    let text = match host.read_attr(limits) {
        Ok(t) => t,
        Err(e) => {
            return Check::new(
                ID,
                PT,
                Status::Warn,
                format!(
                    "cannot read the locked-memory limit; VFIO pins all {} of guest RAM",
                    human_bytes(opts.memory_bytes)
                ),
            )
            .evidence(format!("/proc/self/limits: {e}"))
            .remedy("ulimit -l  # KiB; needs at least the guest RAM plus 1 GiB")
        }
    };
    let caps = host
        .read_attr(Path::new("/proc/self/status"))
        .ok()
        .and_then(|s| has_ipc_lock(&s));
    let Some(limit) = parse_memlock(&text) else {
        return Check::new(
            ID,
            PT,
            Status::Warn,
            "/proc/self/limits has no readable `Max locked memory` line",
        )
        .evidence("/proc/self/limits")
        .remedy("ulimit -l  # KiB; needs at least the guest RAM plus 1 GiB");
    };
    let shown = limit.map_or("unlimited".to_string(), human_bytes);
    let base = format!("/proc/self/limits: Max locked memory (soft) = {shown}");
    let want = format!(
        "--memory {} + 1 GiB = {} to pin",
        human_bytes(opts.memory_bytes),
        human_bytes(need)
    );
    if caps == Some(true) {
        return Check::new(
            ID,
            PT,
            Status::Ok,
            "CAP_IPC_LOCK: VFIO pins guest RAM without a memlock limit",
        )
        .evidence(base)
        .evidence("/proc/self/status CapEff has CAP_IPC_LOCK");
    }
    match limit {
        None => Check::new(ID, PT, Status::Ok, "locked memory is unlimited").evidence(base),
        Some(l) if l >= need => Check::new(
            ID,
            PT,
            Status::Ok,
            format!("locked-memory limit {shown} covers the guest RAM"),
        )
        .evidence(base)
        .evidence(want),
        Some(_) => Check::new(
            ID,
            PT,
            Status::Fail,
            format!(
                "locked-memory limit {shown} is below what VFIO pins ({}): VFIO_MAP_DMA would fail",
                human_bytes(need)
            ),
        )
        .evidence(base)
        .evidence(want)
        .remedy(fix),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memlock_line_parses_numbers_and_unlimited() {
        let t = "Limit                     Soft Limit           Hard Limit           Units\nMax locked memory         8388608              8388608              bytes\n";
        assert_eq!(parse_memlock(t), Some(Some(8_388_608)));
        let u = "Max locked memory         unlimited            unlimited            bytes\n";
        assert_eq!(parse_memlock(u), Some(None));
        assert_eq!(parse_memlock("Max open files 1024 1024 files"), None);
    }

    #[test]
    fn cap_ipc_lock_is_bit_14_of_capeff() {
        assert_eq!(has_ipc_lock("CapEff:\t000001ffffffffff\n"), Some(true));
        assert_eq!(has_ipc_lock("CapEff:\t0000000000000000\n"), Some(false));
        assert_eq!(has_ipc_lock("CapEff:\t0000000000004000\n"), Some(true));
        assert_eq!(has_ipc_lock("Name: x"), None);
    }
}
