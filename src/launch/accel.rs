//! KVM or TCG: whether KVM can run an ordinary guest kernel here.

use std::path::Path;

use serde::Serialize;

use crate::host::HostOps;

/// QEMU's accelerator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Accel {
    /// Hardware virtualization through `/dev/kvm` (`-accel kvm -cpu host`).
    Kvm,
    /// QEMU's emulator (`-accel tcg -cpu max`): slow, runs anywhere.
    Tcg,
}

impl Accel {
    /// QEMU's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// The accelerator chosen, and why (shown as a warning when it is TCG).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccelChoice {
    /// The accelerator.
    pub accel: Accel,
    /// What was looked at, in one sentence.
    pub why: String,
}

/// `/sys/module/kvm_pvm`: the PVM flavour of KVM, which runs only PVM-enlightened guests.
pub(crate) const KVM_PVM_MODULE: &str = "/sys/module/kvm_pvm";

/// Decides between KVM and TCG on `host`: KVM when `/dev/kvm` opens, `KVM_CREATE_VM`
/// succeeds, and the KVM is not PVM (`kvm_pvm`, as on nested cloud sandboxes), whose
/// `/dev/kvm` creates VMs but cannot boot a stock kernel (QEMU aborts setting MSR 0x10a,
/// or the guest stops on an emulation failure at `cmpxchg16b`/`xrstor`).
pub fn choose_accel(host: &dyn HostOps) -> AccelChoice {
    match host.kvm_create_vm() {
        Err(e) => AccelChoice {
            accel: Accel::Tcg,
            why: format!("KVM is not usable ({e}); load kvm_intel or kvm_amd, enable VT-x/AMD-V in the firmware, and give this user access to /dev/kvm (group kvm)"),
        },
        Ok(_) if host.exists(Path::new(KVM_PVM_MODULE)) => AccelChoice {
            accel: Accel::Tcg,
            why: format!(
                "/dev/kvm is PVM ({KVM_PVM_MODULE} exists): it runs only PVM-enlightened guest kernels, a stock kernel does not boot under it"
            ),
        },
        Ok(version) => AccelChoice {
            accel: Accel::Kvm,
            why: format!("/dev/kvm opens and KVM_CREATE_VM succeeds (API {version})"),
        },
    }
}
