//! The QEMU command line: pure, from a [`VmConfig`] and the [`QemuBinary`] that runs it.

use std::path::PathBuf;

use serde::Serialize;
use vm_device_host::PciAddress;

use super::accel::Accel;
use super::qemu::QemuBinary;
use crate::inventory::numa::PageSize;

/// How the chosen GPU reaches the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum GpuAttachment {
    /// A whole GPU on vfio-pci, with its companions; the GPU first. Functions of one
    /// slot stay one multifunction device behind their own PCIe root port.
    Passthrough {
        /// The GPU, then its companions.
        functions: Vec<PciAddress>,
        /// `x-vga=on` on the GPU: legacy VGA ranges go to it (`--x-vga`).
        x_vga: bool,
    },
    /// A mediated device (an mdev, or an NVIDIA vendor-VFIO vGPU on its VF), named by
    /// its sysfs directory.
    Mediated {
        /// `/sys/bus/mdev/devices/UUID`, or the VF's PCI directory.
        sysfsdev: PathBuf,
        /// `display=on`: the type offers a display region or dmabuf (mbochs, mdpy, GVT-g).
        display: bool,
    },
    /// An SR-IOV virtual function, passed through like a GPU of its own.
    VirtualFunction {
        /// The VF.
        vf: PciAddress,
    },
    /// vm-cli's own vhost-user-gpu backend (the wgpu rung) on a unix socket.
    VhostUserGpu {
        /// The backend's listening socket.
        socket: PathBuf,
    },
}

impl GpuAttachment {
    /// Guest RAM must be a shared memfd: the vhost-user backend maps it.
    pub(crate) fn needs_shared_memory(&self) -> bool {
        matches!(self, GpuAttachment::VhostUserGpu { .. })
    }
}

/// Everything about the VM that the command line says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VmConfig {
    /// Guest kernel.
    pub kernel: PathBuf,
    /// Initial ramdisk.
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    pub append: Option<String>,
    /// Guest RAM in bytes.
    pub memory_bytes: u64,
    /// vCPUs.
    pub cpus: u32,
    /// Accelerator.
    pub accel: Accel,
    /// The GPU.
    pub gpu: GpuAttachment,
    /// QMP socket (`-qmp unix:PATH,server=on,wait=off`), for screendumps and shutdown.
    pub qmp: Option<PathBuf>,
    /// Guest RAM from hugepages of this size (`hugetlb=on,hugetlbsize=…,prealloc=on`).
    pub hugepages: Option<PageSize>,
    /// Guest RAM bound to this host NUMA node (`host-nodes=N,policy=bind`).
    pub host_node: Option<u32>,
}

/// `2G` → `2048M`: what QEMU's `-m` and `size=` take, in MiB when whole, else bytes.
pub(crate) fn qemu_size(bytes: u64) -> String {
    if bytes % (1 << 20) == 0 {
        format!("{}M", bytes >> 20)
    } else {
        bytes.to_string()
    }
}

/// `0000:01:00.0` with the slot's functions, for the root port layout.
fn slots(functions: &[PciAddress]) -> Vec<Vec<PciAddress>> {
    let mut out: Vec<Vec<PciAddress>> = Vec::new();
    for f in functions {
        match out.iter_mut().find(|s| s[0].same_slot(f)) {
            Some(s) => s.push(*f),
            None => out.push(vec![*f]),
        }
    }
    for s in &mut out {
        s.sort_by_key(|a| a.function);
    }
    out
}

fn passthrough_devices(args: &mut Vec<String>, functions: &[PciAddress], x_vga: bool) {
    let gpu = functions.first().copied();
    for (port, slot) in slots(functions).iter().enumerate() {
        let bus = format!("vmgpu-rp{port}");
        args.push("-device".into());
        args.push(format!(
            "pcie-root-port,id={bus},chassis={},slot={}",
            port + 1,
            port + 1
        ));
        let multi = slot.len() > 1;
        // Guest function numbers follow the host's order from 0, so function 0 exists.
        for (guest_fn, f) in slot.iter().enumerate() {
            let mut dev = format!("vfio-pci,host={f},bus={bus},addr=00.{guest_fn}");
            if multi && guest_fn == 0 {
                dev.push_str(",multifunction=on");
            }
            if x_vga && Some(*f) == gpu {
                dev.push_str(",x-vga=on");
            }
            args.push("-device".into());
            args.push(dev);
        }
    }
}

/// The whole command line: `argv[0]` is the QEMU binary.
pub fn qemu_argv(qemu: &QemuBinary, vm: &VmConfig) -> Vec<String> {
    let mut a: Vec<String> = vec![qemu.path.display().to_string()];
    for d in &qemu.data_dirs {
        a.push("-L".into());
        a.push(d.display().to_string());
    }
    let size = qemu_size(vm.memory_bytes);
    let mut machine = "q35".to_string();
    let shared = vm.gpu.needs_shared_memory();
    if shared || vm.hugepages.is_some() || vm.host_node.is_some() {
        let mut backend = format!("memory-backend-memfd,id=mem,size={size}");
        if shared {
            backend.push_str(",share=on");
        }
        if let Some(h) = vm.hugepages {
            // Preallocated: the pages are taken (and counted) at start, never a SIGBUS later.
            backend.push_str(&format!(",hugetlb=on,hugetlbsize={h},prealloc=on"));
        }
        if let Some(n) = vm.host_node {
            backend.push_str(&format!(",host-nodes={n},policy=bind"));
        }
        a.push("-object".into());
        a.push(backend);
        machine.push_str(",memory-backend=mem");
    }
    a.extend(["-machine".into(), machine]);
    a.extend(["-accel".into(), vm.accel.as_str().into()]);
    a.extend([
        "-cpu".into(),
        match vm.accel {
            Accel::Kvm => "host".into(),
            Accel::Tcg => "max".into(),
        },
    ]);
    a.extend(["-m".into(), size]);
    a.extend(["-smp".into(), vm.cpus.to_string()]);
    a.extend(
        [
            "-nodefaults",
            "-no-user-config",
            "-vga",
            "none",
            "-display",
            "none",
            "-serial",
            "stdio",
        ]
        .map(String::from),
    );
    if let Some(q) = &vm.qmp {
        a.push("-qmp".into());
        a.push(format!("unix:{},server=on,wait=off", q.display()));
    }
    match &vm.gpu {
        GpuAttachment::Passthrough { functions, x_vga } => {
            passthrough_devices(&mut a, functions, *x_vga)
        }
        GpuAttachment::VirtualFunction { vf } => passthrough_devices(&mut a, &[*vf], false),
        GpuAttachment::Mediated { sysfsdev, display } => {
            a.push("-device".into());
            a.push(format!(
                "vfio-pci,sysfsdev={},display={}",
                sysfsdev.display(),
                if *display { "on" } else { "off" }
            ));
        }
        GpuAttachment::VhostUserGpu { socket } => {
            a.push("-chardev".into());
            a.push(format!("socket,id=gpu0,path={}", socket.display()));
            a.push("-device".into());
            a.push("vhost-user-gpu-pci,chardev=gpu0".into());
        }
    }
    a.push("-kernel".into());
    a.push(vm.kernel.display().to_string());
    if let Some(i) = &vm.initrd {
        a.push("-initrd".into());
        a.push(i.display().to_string());
    }
    if let Some(c) = &vm.append {
        a.push("-append".into());
        a.push(c.clone());
    }
    a
}

/// The command line as one shell line, quoted where needed, for people to copy.
pub fn shell_line(argv: &[String]) -> String {
    argv.iter()
        .map(|w| {
            if !w.is_empty()
                && w.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:=,+@%".contains(c))
            {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
