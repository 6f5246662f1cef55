//! Reasons every rung shares: they come from the host as a whole (the IOMMU) or from the
//! user's request, not from one rung's rules.

use vm_device_host::PciAddress;

use super::{Reason, ReasonCode};
use crate::inventory::{HostFacts, HostInventory};

/// `--gpu-device` names no GPU of this host: say what it is and which GPUs there are.
pub fn device_not_found(inv: &HostInventory, dev: &PciAddress) -> Reason {
    let known: Vec<String> = inv.gpus.iter().map(|g| g.address.to_string()).collect();
    let what = match inv.function(dev) {
        Some(f) => format!("{dev} is not a GPU ({})", f.display_name()),
        None => format!("{dev} is not a PCI function of this host"),
    };
    Reason::new(ReasonCode::DeviceNotFound, what)
        .evidence(format!("/sys/bus/pci/devices/{dev}"))
        .remedy(if known.is_empty() {
            "this host has no GPU; leave out --gpu-device".to_string()
        } else {
            format!("pass one of: {}", known.join(", "))
        })
}

/// The reason the IOMMU is off. On bare metal: the firmware switch and the kernel
/// parameters of the IOMMU present or the CPU ([`HostFacts::iommu_params_remedy`]). In a
/// virtual machine neither helps: the hypervisor must give the guest a virtual IOMMU.
pub fn iommu_off(h: &HostFacts) -> Reason {
    let params = h.iommu_params_remedy();
    let mut r = Reason::new(ReasonCode::IommuDisabled, "the IOMMU is off: VFIO needs it")
        .evidence("/sys/class/iommu is empty")
        .evidence("/sys/kernel/iommu_groups is empty");
    if let Some(cmd) = &h.cmdline {
        r = r.evidence(format!("/proc/cmdline = {cmd}"));
    }
    if h.virtualization.guest {
        for e in &h.virtualization.evidence {
            r = r.evidence(e.clone());
        }
        return r.remedy(guest_iommu_remedy(h));
    }
    let firmware = if params.starts_with("amd") {
        "AMD-Vi (SVM/IOMMU)"
    } else {
        "VT-d"
    };
    r.remedy(format!(
        "enable {firmware} in the firmware, add `{params}` to GRUB_CMDLINE_LINUX_DEFAULT in /etc/default/grub, run `sudo update-grub` and reboot"
    ))
}

/// What a guest without an IOMMU needs: a virtual IOMMU from its hypervisor.
pub fn guest_iommu_remedy(h: &HostFacts) -> String {
    format!(
        "this host is {}: its hypervisor must expose a virtual IOMMU to it (QEMU: `-machine q35,kernel-irqchip=split -device intel-iommu,intremap=on,caching-mode=on`; a cloud: an instance type with GPU passthrough), then boot the guest with `{}`",
        h.virtualization.describe(),
        h.iommu_params_remedy()
    )
}
