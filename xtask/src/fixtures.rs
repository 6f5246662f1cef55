//! The fixture hosts under `fixtures/hosts/`, one function each, and the synthetic benchmark
//! host. Every host is written from public facts (PCI ids from pci.ids, topologies as the
//! vendors' boards lay them out, sysfs formats as `fixtures/real/` records them); the
//! `.fixture/README` of each says which.

use std::path::Path;

use crate::hostgen::{
    Adapter, BarKind, Cpu, GenError, HostBuilder, HugePool, Iommu, Mdev, MdevType, NumaNode,
    NvidiaVgpuVf, Pci, Sriov,
};

/// A fixture: its directory name and the function that describes it.
pub struct Fixture {
    /// Directory name under `fixtures/hosts/`.
    pub name: &'static str,
    /// Builds the host.
    pub build: fn() -> HostBuilder,
}

/// Every fixture host, in a fixed order.
pub fn all() -> Vec<Fixture> {
    vec![
        Fixture {
            name: "intel-desktop-gvtg-dgpu",
            build: intel_desktop_gvtg_dgpu,
        },
        Fixture {
            name: "amd-vi-workstation",
            build: amd_vi_workstation,
        },
        Fixture {
            name: "intel-iommu-off",
            build: intel_iommu_off,
        },
        Fixture {
            name: "amd-iommu-off",
            build: amd_iommu_off,
        },
        Fixture {
            name: "shared-group-host-devices",
            build: shared_group_host_devices,
        },
        Fixture {
            name: "single-gpu-boot-display",
            build: single_gpu_boot_display,
        },
        Fixture {
            name: "bmc-datacenter-nvidia-vgpu",
            build: bmc_datacenter_nvidia_vgpu,
        },
        Fixture {
            name: "gpu-on-vfio-pci",
            build: gpu_on_vfio_pci,
        },
        Fixture {
            name: "sriov-pf-with-vfs",
            build: sriov_pf_with_vfs,
        },
        Fixture {
            name: "no-gpu-server",
            build: no_gpu_server,
        },
        Fixture {
            name: "intel-flex-sriov-idle",
            build: intel_flex_sriov_idle,
        },
        Fixture {
            name: "malformed",
            build: malformed,
        },
        Fixture {
            name: "boot-display-shared-group-held",
            build: boot_display_shared_group_held,
        },
        Fixture {
            name: "numa-2node-gpus",
            build: numa_2node_gpus,
        },
    ]
}

/// Writes every fixture under `out` (each host directory is wiped and rewritten).
pub fn write_all(out: &Path) -> Result<Vec<(String, crate::hostgen::WriteStats)>, GenError> {
    let mut done = Vec::new();
    for f in all() {
        let stats = (f.build)().write(&out.join(f.name))?;
        done.push((f.name.to_string(), stats));
    }
    Ok(done)
}

// ---------------------------------------------------------------------------------------------
// Building blocks shared by several hosts.

const INTEL: u16 = 0x8086;
const AMD: u16 = 0x1022;
const ATI: u16 = 0x1002;
const NVIDIA: u16 = 0x10de;
const CMDLINE_BASE: &str =
    "BOOT_IMAGE=/boot/vmlinuz-6.1.0-28-amd64 root=UUID=3f1c2a9e-0d4b-4f7e-9a51-2b6c8d0e1f23 ro quiet";

fn cmdline(extra: &str) -> String {
    if extra.is_empty() {
        CMDLINE_BASE.to_string()
    } else {
        format!("{CMDLINE_BASE} {extra}")
    }
}

/// A PCIe root port / downstream port on pcieport, bridging to `sec..=sub`.
fn port(addr: &str, vendor: u16, device: u16, sec: u8, sub: u8) -> Pci {
    Pci::new(addr, vendor, device)
        .class(0x060400)
        .bridge(sec, sub)
        .driver("pcieport")
        .irq(122)
}

/// A Samsung 970 EVO Plus NVMe SSD.
fn nvme_970(addr: &str, base: u64) -> Pci {
    Pci::new(addr, 0x144d, 0xa808)
        .class(0x010802)
        .subsystem(0x144d, 0xa801)
        .bar(0, base, 0x4000, BarKind::Mem64)
        .driver("nvme")
        .reset_method("flr bus")
        .irq(16)
}

/// An Intel I211 gigabit NIC on igb.
fn i211(addr: &str, base: u64) -> Pci {
    Pci::new(addr, INTEL, 0x1539)
        .class(0x020000)
        .revision(0x03)
        .bar(0, base, 0x020000, BarKind::Mem32)
        .bar(2, 0xe000, 0x20, BarKind::Io)
        .bar(3, base + 0x020000, 0x4000, BarKind::Mem32)
        .driver("igb")
        .reset_method("flr bus")
        .irq(17)
}

/// The standard Intel 300-series PCH functions on bus 0 (all in `group`): LPC bridge `lpc`
/// (`0xa305` Z390, `0xa304` H370), HDA, SMBus, SPI and optionally the I219-V NIC, with the
/// board's subsystem ids.
fn intel_pch(
    h: &mut HostBuilder,
    group: Option<u32>,
    lpc: u16,
    board: (u16, u16),
    nic_e1000e: bool,
) {
    let g = |p: Pci| {
        let p = p.subsystem(board.0, board.1);
        match group {
            Some(n) => p.group(n),
            None => p,
        }
    };
    h.pci(g(Pci::new("0000:00:1f.0", INTEL, lpc)
        .class(0x060100)
        .revision(0x10)));
    h.pci(g(Pci::new("0000:00:1f.3", INTEL, 0xa348)
        .class(0x040300)
        .revision(0x10)
        .bar(0, 0xf731_0000, 0x4000, BarKind::Mem64)
        .bar(4, 0xf710_0000, 0x100000, BarKind::Mem64)
        .driver("snd_hda_intel")
        .irq(147)));
    h.pci(g(Pci::new("0000:00:1f.4", INTEL, 0xa323)
        .class(0x0c0500)
        .revision(0x10)
        .bar(0, 0xf731_8000, 0x0100, BarKind::Mem64)
        .bar(4, 0xefa0, 0x20, BarKind::Io)
        .driver("i801_smbus")
        .irq(16)));
    h.pci(g(Pci::new("0000:00:1f.5", INTEL, 0xa324)
        .class(0x0c8000)
        .revision(0x10)
        .bar(0, 0xfe01_0000, 0x1000, BarKind::Mem32)
        .driver("intel-spi")));
    if nic_e1000e {
        h.pci(g(Pci::new("0000:00:1f.6", INTEL, 0x15bc)
            .class(0x020000)
            .revision(0x10)
            .bar(0, 0xf730_0000, 0x020000, BarKind::Mem32)
            .driver("e1000e")
            .irq(146)));
    }
}

/// Intel UHD Graphics 630 (Coffee Lake GT2) at 00:02.0.
fn uhd630(boot: bool) -> Pci {
    Pci::new("0000:00:02.0", INTEL, 0x3e92)
        .class(0x030000)
        .subsystem(0x1043, 0x8694)
        .bar(0, 0xf600_0000, 0x100_0000, BarKind::Mem64)
        .bar(2, 0xe000_0000, 0x1000_0000, BarKind::Mem64Pref)
        .bar(4, 0xf000, 0x40, BarKind::Io)
        .rom(0x0c0000, 0x020000)
        .boot_vga(boot)
        .driver("i915")
        .drm_card(0)
        .render_node(128)
        .irq(148)
}

fn gvtg_type(id: u32, low: u32, high: u32, res: &str, weight: u32, avail: u32) -> MdevType {
    MdevType::new(
        &format!("i915-GVTg_V5_{id}"),
        &format!("GVTg_V5_{id}"),
        &format!(
            "low_gm_size: {low}MB\nhigh_gm_size: {high}MB\nfence: 4\nresolution: {res}\nweight: {weight}"
        ),
        avail,
    )
}

fn intel_desktop_cpu() -> Cpu {
    Cpu::intel("Intel(R) Core(TM) i7-9700K CPU @ 3.60GHz", 6, 158, 8)
}

fn ryzen_5950x() -> Cpu {
    Cpu::amd("AMD Ryzen 9 5950X 16-Core Processor", 25, 33, 16)
}

fn adapter_uhd630() -> Adapter {
    Adapter::new(
        "Intel(R) UHD Graphics 630 (CFL GT2)",
        0x8086,
        0x3e92,
        "IntegratedGpu",
        "Vulkan",
        "Intel open-source Mesa driver",
        "Mesa 22.3.6",
    )
}

fn adapter_nvidia(name: &str, device: u32) -> Adapter {
    Adapter::new(
        name,
        0x10de,
        device,
        "DiscreteGpu",
        "Vulkan",
        "NVIDIA",
        "535.216.01",
    )
}

fn adapter_radv(name: &str, device: u32) -> Adapter {
    Adapter::new(
        name,
        0x1002,
        device,
        "DiscreteGpu",
        "Vulkan",
        "radv",
        "Mesa 22.3.6",
    )
}

// ---------------------------------------------------------------------------------------------
// The hosts.

/// Intel desktop, VT-d on, iGPU with GVT-g types, RTX 3080 + audio on nouveau.
pub fn intel_desktop_gvtg_dgpu() -> HostBuilder {
    let mut h = HostBuilder::new(
        "Written by hand (xtask hostgen), not recorded: an Intel Core i7-9700K desktop on a Z390 \
         board (ASUS subsystem ids), Debian 12 with VT-d on (intel_iommu=on iommu=pt, so groups \
         are of type identity and dmar0 exists). The boot display is the UHD Graphics 630 iGPU \
         [8086:3e92] at 0000:00:02.0 on i915 with GVT-g enabled (i915.enable_gvt=1, kvmgt loaded): \
         mdev types i915-GVTg_V5_{1,2,4,8} with the kernel's type table (low/high GM, fence, \
         resolution, weight) and available_instances as a default 256 MB aperture allows (V5_8: 2, \
         V5_4: 1, V5_2 and V5_1: 0). A GeForce RTX 3080 [10de:2206] with its HDMI audio \
         [10de:1aef] sits at 0000:01:00.0/.1 behind the CPU root port 0000:00:01.0 [8086:1901]; \
         the root port lacks ACS so the port, the GPU and the audio share IOMMU group 1 (as on real \
         Coffee Lake boards). GPU on nouveau, audio on snd_hda_intel. NVMe [144d:a808] and I211 NIC \
         [8086:1539] behind PCH root ports in their own groups; USB xHCI [8086:a36d] with the PCH \
         shared SRAM in one group; the PCH functions at 00:1f.x in one group. IDs from pci.ids, \
         GVT-g type table from the kernel's drivers/gpu/drm/i915/gvt/vgpu.c, sysfs formats as in \
         fixtures/real. wgpu sees the iGPU on Vulkan (anv), the RTX 3080 only through GL \
         (nouveau has no Vulkan in Mesa 22.3) and llvmpipe.",
    );
    h.cpu(intel_desktop_cpu())
        .cmdline(&cmdline("intel_iommu=on iommu=pt i915.enable_gvt=1"))
        .iommu(Iommu::IntelDmar)
        .group_type("identity")
        .kvm_vfio()
        .module("kvmgt", 45_056, &[])
        .module("mdev", 20_480, &["kvmgt"])
        .module("i915", 3_977_216, &["kvmgt"])
        .module("nouveau", 2_801_664, &[])
        .module("snd_hda_intel", 57_344, &[])
        .module("nvme", 57_344, &[])
        .module("igb", 282_624, &[])
        .module("e1000e", 323_584, &[])
        .pci_driver("shpchp")
        .mdev_driver("intel_vgpu_mdev");
    h.pci(
        Pci::new("0000:00:00.0", INTEL, 0x3e30)
            .class(0x060000)
            .revision(0x0d)
            .subsystem(0x1043, 0x8694)
            .driver("skl_uncore")
            .group(0),
    );
    h.pci(
        port("0000:00:01.0", INTEL, 0x1901, 1, 1)
            .revision(0x0d)
            .window(1, 0xf600_0000, 0x100_0000)
            .window(2, 0xc000_0000, 0x1200_0000)
            .group(1),
    );
    h.pci(
        uhd630(true)
            .group(2)
            .mdev_type(gvtg_type(1, 512, 2048, "1920x1200", 16, 0))
            .mdev_type(gvtg_type(2, 256, 1024, "1920x1200", 8, 0))
            .mdev_type(gvtg_type(4, 128, 512, "1920x1200", 4, 1))
            .mdev_type(gvtg_type(8, 64, 384, "1024x768", 2, 2)),
    );
    h.pci(
        Pci::new("0000:01:00.0", NVIDIA, 0x2206)
            .class(0x030000)
            .revision(0xa1)
            .subsystem(0x1458, 0x403b)
            .bar(0, 0xf600_0000, 0x100_0000, BarKind::Mem32)
            .bar(1, 0xc000_0000, 0x1000_0000, BarKind::Mem64Pref)
            .bar(3, 0xd000_0000, 0x200_0000, BarKind::Mem64Pref)
            .bar(5, 0xe000, 0x80, BarKind::Io)
            .rom(0xf700_0000, 0x080000)
            .driver("nouveau")
            .drm_card(1)
            .render_node(129)
            .reset_method("bus")
            .irq(149)
            .group(1),
    );
    h.pci(
        Pci::new("0000:01:00.1", NVIDIA, 0x1aef)
            .class(0x040300)
            .revision(0xa1)
            .subsystem(0x1458, 0x403b)
            .bar(0, 0xf708_0000, 0x4000, BarKind::Mem32)
            .driver("snd_hda_intel")
            .reset_method("bus")
            .irq(17)
            .group(1),
    );
    h.pci(
        Pci::new("0000:00:14.0", INTEL, 0xa36d)
            .class(0x0c0330)
            .revision(0x10)
            .bar(0, 0xf732_0000, 0x010000, BarKind::Mem64)
            .driver("xhci_hcd")
            .irq(124)
            .group(3),
    );
    h.pci(
        Pci::new("0000:00:14.2", INTEL, 0xa36f)
            .class(0x050000)
            .revision(0x10)
            .bar(0, 0xf731_6000, 0x2000, BarKind::Mem64)
            .bar(2, 0xf731_b000, 0x1000, BarKind::Mem64)
            .group(3),
    );
    h.pci(
        Pci::new("0000:00:16.0", INTEL, 0xa360)
            .class(0x078000)
            .revision(0x10)
            .bar(0, 0xf731_a000, 0x1000, BarKind::Mem64)
            .driver("mei_me")
            .irq(150)
            .group(4),
    );
    h.pci(
        Pci::new("0000:00:17.0", INTEL, 0xa352)
            .class(0x010601)
            .revision(0x10)
            .bar(0, 0xf731_4000, 0x2000, BarKind::Mem32)
            .bar(5, 0xf731_9000, 0x0800, BarKind::Mem32)
            .driver("ahci")
            .irq(125)
            .group(5),
    );
    h.pci(
        port("0000:00:1c.0", INTEL, 0xa338, 2, 2)
            .revision(0xf0)
            .group(6),
    );
    h.pci(
        port("0000:00:1d.0", INTEL, 0xa330, 3, 3)
            .revision(0xf0)
            .group(7),
    );
    intel_pch(&mut h, Some(8), 0xa305, (0x1043, 0x8694), true);
    h.pci(i211("0000:02:00.0", 0xf720_0000).group(9));
    h.pci(nvme_970("0000:03:00.0", 0xf700_0000).group(10));
    h.adapter(adapter_uhd630())
        .adapter(Adapter::new(
            "NV172",
            0x10de,
            0,
            "DiscreteGpu",
            "Gl",
            "",
            "4.3 (Core Profile) Mesa 22.3.6",
        ))
        .adapter(Adapter::llvmpipe_vulkan());
    h
}

/// AMD workstation, AMD-Vi on, boot RX 550 and a spare RX 6800 behind its switch.
pub fn amd_vi_workstation() -> HostBuilder {
    let mut h = HostBuilder::new(
        "Written by hand (xtask hostgen), not recorded: an AMD Ryzen 9 5950X workstation on an \
         X570 board, Debian 12 with AMD-Vi on (amd_iommu=on iommu=pt; the IOMMU is the PCI \
         function 0000:00:00.2 [1022:1481] and sys/class/iommu/ivhd0 points into it; 00:00.0 and \
         00:00.2 belong to no group, as on real Zen 2/3 hosts). Boot display: Radeon RX 550 \
         [1002:699f] + HDMI audio [1002:aae0] at 0000:0d:00.0/.1 on amdgpu, boot_vga=1. Spare GPU: \
         Radeon RX 6800 [1002:73bf] + audio [1002:ab28] at 0000:0c:00.0/.1 behind the Navi 21 \
         switch (upstream 0a:00.0 [1002:1478], downstream 0b:00.0 [1002:1479]), on amdgpu with \
         mem_info_vram_total 16 GiB; the switch ports are in their own groups and the GPU with its \
         audio in group 9. NVMe [144d:a808] on a CPU port; the X570 chipset's switch \
         [1022:57ad/57a3/57a4] with an I211 NIC and the chipset SATA [1022:7901]; USB xHCI \
         [1022:149c]. IDs from pci.ids, topology as Navi 21 boards and X570 lay it out. wgpu sees \
         both Radeons through RADV and llvmpipe.",
    );
    h.cpu(ryzen_5950x())
        .cmdline(&cmdline("amd_iommu=on iommu=pt"))
        .iommu(Iommu::AmdIvhd {
            at: "0000:00:00.2".into(),
        })
        .group_type("identity")
        .kvm_vfio()
        .module("amdgpu", 9_748_480, &[])
        .module("snd_hda_intel", 57_344, &[])
        .module("nvme", 57_344, &[])
        .module("igb", 282_624, &[])
        .module("k10temp", 16_384, &[]);
    h.pci(
        Pci::new("0000:00:00.0", AMD, 0x1480)
            .class(0x060000)
            .subsystem(0x1043, 0x87c0),
    );
    h.pci(
        Pci::new("0000:00:00.2", AMD, 0x1481)
            .class(0x080600)
            .subsystem(0x1043, 0x87c0),
    );
    h.pci(
        Pci::new("0000:00:01.0", AMD, 0x1482)
            .class(0x060000)
            .group(0),
    );
    h.pci(port("0000:00:01.1", AMD, 0x1483, 1, 1).group(1));
    h.pci(port("0000:00:01.2", AMD, 0x1483, 2, 5).group(2));
    h.pci(
        Pci::new("0000:00:03.0", AMD, 0x1482)
            .class(0x060000)
            .group(3),
    );
    h.pci(
        port("0000:00:03.1", AMD, 0x1483, 0x0a, 0x0c)
            .window(2, 0x0078_0000_0000, 0x4_1000_0000)
            .group(4),
    );
    h.pci(port("0000:00:03.2", AMD, 0x1483, 0x0d, 0x0d).group(5));
    h.pci(
        Pci::new("0000:00:08.0", AMD, 0x1482)
            .class(0x060000)
            .group(6),
    );
    h.pci(port("0000:00:08.1", AMD, 0x1484, 0x0e, 0x0e).group(7));
    h.pci(
        Pci::new("0000:00:14.0", AMD, 0x790b)
            .class(0x0c0500)
            .revision(0x61)
            .driver("piix4_smbus")
            .group(8),
    );
    h.pci(
        Pci::new("0000:00:14.3", AMD, 0x790e)
            .class(0x060100)
            .revision(0x51)
            .group(8),
    );
    h.pci(
        Pci::new("0000:00:18.0", AMD, 0x1440)
            .class(0x060000)
            .group(10),
    );
    h.pci(
        Pci::new("0000:00:18.3", AMD, 0x1443)
            .class(0x060000)
            .driver("k10temp")
            .group(10),
    );
    h.pci(nvme_970("0000:01:00.0", 0xfcf0_0000).group(11));
    h.pci(
        Pci::new("0000:02:00.0", AMD, 0x57ad)
            .class(0x060400)
            .bridge(3, 5)
            .driver("pcieport")
            .group(12),
    );
    h.pci(port("0000:03:04.0", AMD, 0x57a3, 4, 4).group(13));
    h.pci(port("0000:03:08.0", AMD, 0x57a4, 5, 5).group(14));
    h.pci(i211("0000:04:00.0", 0xfc90_0000).group(15));
    h.pci(
        Pci::new("0000:05:00.0", AMD, 0x7901)
            .class(0x010601)
            .revision(0x51)
            .bar(5, 0xfc70_0000, 0x0800, BarKind::Mem32)
            .driver("ahci")
            .group(14),
    );
    // Spare RX 6800 behind the Navi 21 switch.
    h.pci(
        Pci::new("0000:0a:00.0", ATI, 0x1478)
            .class(0x060400)
            .revision(0xc1)
            .bridge(0x0b, 0x0c)
            .bar(0, 0xfcc0_0000, 0x4000, BarKind::Mem32)
            .driver("pcieport")
            .group(16),
    );
    h.pci(port("0000:0b:00.0", ATI, 0x1479, 0x0c, 0x0c).group(17));
    h.pci(
        Pci::new("0000:0c:00.0", ATI, 0x73bf)
            .class(0x030000)
            .revision(0xc3)
            .subsystem(0x1da2, 0xe437)
            .bar(0, 0x0078_0000_0000, 0x4_0000_0000, BarKind::Mem64Pref)
            .bar(2, 0x007c_0000_0000, 0x1000_0000, BarKind::Mem64Pref)
            .bar(4, 0xf000, 0x0100, BarKind::Io)
            .bar(5, 0xfca0_0000, 0x100000, BarKind::Mem32)
            .rom(0xfcb0_0000, 0x020000)
            .driver("amdgpu")
            .drm_card(1)
            .render_node(129)
            .reset_method("flr bus")
            .file("mem_info_vram_total", "17163091968\n")
            .file("mem_info_vram_used", "26378240\n")
            .irq(160)
            .group(9),
    );
    h.pci(
        Pci::new("0000:0c:00.1", ATI, 0xab28)
            .class(0x040300)
            .subsystem(0x1da2, 0xab28)
            .bar(0, 0xfcb2_0000, 0x4000, BarKind::Mem32)
            .driver("snd_hda_intel")
            .reset_method("flr bus")
            .irq(161)
            .group(9),
    );
    // Boot RX 550.
    h.pci(
        Pci::new("0000:0d:00.0", ATI, 0x699f)
            .class(0x030000)
            .revision(0xc7)
            .subsystem(0x1da2, 0xe367)
            .bar(0, 0xe000_0000, 0x1000_0000, BarKind::Mem64Pref)
            .bar(2, 0xf000_0000, 0x200000, BarKind::Mem64Pref)
            .bar(4, 0xe000, 0x0100, BarKind::Io)
            .bar(5, 0xfce0_0000, 0x040000, BarKind::Mem32)
            .rom(0x0c0000, 0x020000)
            .boot_vga(true)
            .driver("amdgpu")
            .drm_card(0)
            .render_node(128)
            .reset_method("bus")
            .file("mem_info_vram_total", "4294967296\n")
            .file("mem_info_vram_used", "312475648\n")
            .irq(162)
            .group(18),
    );
    h.pci(
        Pci::new("0000:0d:00.1", ATI, 0xaae0)
            .class(0x040300)
            .subsystem(0x1da2, 0xaae0)
            .bar(0, 0xfce4_0000, 0x4000, BarKind::Mem64)
            .driver("snd_hda_intel")
            .reset_method("bus")
            .irq(163)
            .group(18),
    );
    h.pci(
        Pci::new("0000:0e:00.3", AMD, 0x149c)
            .class(0x0c0330)
            .bar(0, 0xfc50_0000, 0x100000, BarKind::Mem64)
            .driver("xhci_hcd")
            .irq(40)
            .group(19),
    );
    h.adapter(adapter_radv("AMD Radeon RX 6800 (RADV NAVI21)", 0x73bf))
        .adapter(adapter_radv(
            "AMD Radeon RX 550 Series (RADV POLARIS12)",
            0x699f,
        ))
        .adapter(Adapter::llvmpipe_vulkan());
    h
}

/// Intel host with two NVIDIA GPUs and no IOMMU.
pub fn intel_iommu_off() -> HostBuilder {
    let mut h = HostBuilder::new(
        "Written by hand (xtask hostgen), not recorded: an Intel Core i5-10400F desktop (no iGPU) \
         on a B460 board with VT-d off in firmware and nothing about the IOMMU on the kernel \
         command line: no IOMMU unit, so sys/class/iommu and sys/kernel/iommu_groups exist (the \
         kernel registers them at boot) but are empty and no device has an iommu_group link. \
         Boot display: GeForce GTX 1650 [10de:1f82] + audio [10de:10fa] at 0000:02:00.0/.1 behind \
         the PCH root port 00:1b.0; a second GPU, GeForce RTX 3060 [10de:2503] + audio \
         [10de:228e] at 0000:01:00.0/.1 behind the CPU port 00:01.0. Both on the proprietary \
         nvidia driver (535); vfio-pci is loaded with nothing bound. I219-V NIC on e1000e, NVMe on \
         nvme. IDs from pci.ids. wgpu sees both GeForces on Vulkan and llvmpipe.",
    );
    h.cpu(Cpu::intel(
        "Intel(R) Core(TM) i5-10400F CPU @ 2.90GHz",
        6,
        165,
        6,
    ))
    .cmdline(&cmdline(""))
    .kvm_vfio()
    .module("nvidia_drm", 77_824, &[])
    .module("nvidia_modeset", 1_314_816, &["nvidia_drm"])
    .module("nvidia", 56_799_232, &["nvidia_modeset"])
    .module("snd_hda_intel", 57_344, &[])
    .module("e1000e", 323_584, &[])
    .module("nvme", 57_344, &[])
    .pci_driver("shpchp")
    .raw_dir("sys/class/iommu")
    .raw_dir("sys/kernel/iommu_groups");
    h.pci(
        Pci::new("0000:00:00.0", INTEL, 0x9b53)
            .class(0x060000)
            .revision(0x03),
    );
    h.pci(port("0000:00:01.0", INTEL, 0x1901, 1, 1).revision(0x03));
    h.pci(port("0000:00:1b.0", INTEL, 0xa3e9, 2, 2).revision(0xf0));
    h.pci(port("0000:00:1d.0", INTEL, 0xa3b0, 3, 3).revision(0xf0));
    h.pci(
        Pci::new("0000:00:14.0", INTEL, 0xa3af)
            .class(0x0c0330)
            .bar(0, 0xf732_0000, 0x010000, BarKind::Mem64)
            .driver("xhci_hcd"),
    );
    h.pci(Pci::new("0000:00:1f.0", INTEL, 0xa3c8).class(0x060100));
    h.pci(
        Pci::new("0000:00:1f.6", INTEL, 0x0d55)
            .class(0x020000)
            .bar(0, 0xf730_0000, 0x020000, BarKind::Mem32)
            .driver("e1000e"),
    );
    h.pci(
        Pci::new("0000:01:00.0", NVIDIA, 0x2503)
            .class(0x030000)
            .revision(0xa1)
            .subsystem(0x1462, 0x397d)
            .bar(0, 0xf600_0000, 0x100_0000, BarKind::Mem32)
            .bar(1, 0xc000_0000, 0x1000_0000, BarKind::Mem64Pref)
            .bar(3, 0xd000_0000, 0x200_0000, BarKind::Mem64Pref)
            .bar(5, 0xe000, 0x80, BarKind::Io)
            .driver("nvidia")
            .drm_card(1)
            .render_node(129)
            .reset_method("bus"),
    );
    h.pci(
        Pci::new("0000:01:00.1", NVIDIA, 0x228e)
            .class(0x040300)
            .revision(0xa1)
            .subsystem(0x1462, 0x397d)
            .bar(0, 0xf708_0000, 0x4000, BarKind::Mem32)
            .driver("snd_hda_intel")
            .reset_method("bus"),
    );
    h.pci(
        Pci::new("0000:02:00.0", NVIDIA, 0x1f82)
            .class(0x030000)
            .revision(0xa1)
            .subsystem(0x1043, 0x8770)
            .bar(0, 0xf400_0000, 0x100_0000, BarKind::Mem32)
            .bar(1, 0xa000_0000, 0x1000_0000, BarKind::Mem64Pref)
            .bar(3, 0xb000_0000, 0x200_0000, BarKind::Mem64Pref)
            .bar(5, 0xd000, 0x80, BarKind::Io)
            .rom(0x0c0000, 0x020000)
            .boot_vga(true)
            .driver("nvidia")
            .drm_card(0)
            .render_node(128)
            .reset_method("bus"),
    );
    h.pci(
        Pci::new("0000:02:00.1", NVIDIA, 0x10fa)
            .class(0x040300)
            .revision(0xa1)
            .subsystem(0x1043, 0x8770)
            .bar(0, 0xf508_0000, 0x4000, BarKind::Mem32)
            .driver("snd_hda_intel")
            .reset_method("bus"),
    );
    h.pci(nvme_970("0000:03:00.0", 0xf710_0000));
    h.adapter(adapter_nvidia("NVIDIA GeForce RTX 3060", 0x2503))
        .adapter(adapter_nvidia("NVIDIA GeForce GTX 1650", 0x1f82))
        .adapter(Adapter::llvmpipe_vulkan());
    h
}

/// AMD host with one Radeon and the IOMMU turned off on the command line.
pub fn amd_iommu_off() -> HostBuilder {
    let mut h = HostBuilder::new(
        "Written by hand (xtask hostgen), not recorded: an AMD Ryzen 7 3700X on a B450 board, \
         Debian 12 booted with amd_iommu=off: the IOMMU PCI function 0000:00:00.2 [1022:1481] is \
         still there but no ivhd unit is registered, sys/class/iommu and sys/kernel/iommu_groups \
         are empty and no device has an iommu_group link. The only GPU is a Radeon RX 6700 XT \
         [1002:73df] + audio [1002:ab28] at 0000:0a:00.0/.1 behind its Navi 22 switch, on amdgpu \
         with mem_info_vram_total 12 GiB and boot_vga=1. vfio modules not loaded (only kvm_amd). \
         IDs from pci.ids. wgpu sees the RX 6700 XT through RADV, GL, and llvmpipe.",
    );
    h.cpu(Cpu::amd("AMD Ryzen 7 3700X 8-Core Processor", 23, 113, 8))
        .cmdline(&cmdline("amd_iommu=off"))
        .kvm_only()
        .module("amdgpu", 9_748_480, &[])
        .module("snd_hda_intel", 57_344, &[])
        .module("r8169", 106_496, &[])
        .module("nvme", 57_344, &[])
        .raw_dir("sys/class/iommu")
        .raw_dir("sys/kernel/iommu_groups");
    h.pci(Pci::new("0000:00:00.0", AMD, 0x1480).class(0x060000));
    h.pci(Pci::new("0000:00:00.2", AMD, 0x1481).class(0x080600));
    h.pci(Pci::new("0000:00:01.0", AMD, 0x1482).class(0x060000));
    h.pci(port("0000:00:01.1", AMD, 0x1483, 1, 1));
    h.pci(port("0000:00:01.2", AMD, 0x1483, 2, 2));
    h.pci(Pci::new("0000:00:03.0", AMD, 0x1482).class(0x060000));
    h.pci(port("0000:00:03.1", AMD, 0x1483, 8, 0x0a));
    h.pci(nvme_970("0000:01:00.0", 0xfcf0_0000));
    h.pci(
        Pci::new("0000:02:00.0", 0x10ec, 0x8168)
            .class(0x020000)
            .revision(0x15)
            .bar(0, 0xf000, 0x0100, BarKind::Io)
            .bar(2, 0xfc90_4000, 0x1000, BarKind::Mem64)
            .bar(4, 0xfc90_0000, 0x4000, BarKind::Mem64)
            .driver("r8169"),
    );
    h.pci(
        Pci::new("0000:08:00.0", ATI, 0x1478)
            .class(0x060400)
            .revision(0xc1)
            .bridge(9, 0x0a)
            .driver("pcieport"),
    );
    h.pci(port("0000:09:00.0", ATI, 0x1479, 0x0a, 0x0a));
    h.pci(
        Pci::new("0000:0a:00.0", ATI, 0x73df)
            .class(0x030000)
            .revision(0xc1)
            .subsystem(0x1849, 0x5220)
            .bar(0, 0x007c_0000_0000, 0x4_0000_0000, BarKind::Mem64Pref)
            .bar(2, 0x007c_1000_0000, 0x1000_0000, BarKind::Mem64Pref)
            .bar(4, 0xe000, 0x0100, BarKind::Io)
            .bar(5, 0xfca0_0000, 0x100000, BarKind::Mem32)
            .rom(0x0c0000, 0x020000)
            .boot_vga(true)
            .driver("amdgpu")
            .drm_card(0)
            .render_node(128)
            .reset_method("flr bus")
            .file("mem_info_vram_total", "12868124672\n")
            .file("mem_info_vram_used", "402653184\n"),
    );
    h.pci(
        Pci::new("0000:0a:00.1", ATI, 0xab28)
            .class(0x040300)
            .subsystem(0x1849, 0xab28)
            .bar(0, 0xfcb2_0000, 0x4000, BarKind::Mem32)
            .driver("snd_hda_intel")
            .reset_method("flr bus"),
    );
    h.adapter(adapter_radv("AMD Radeon RX 6700 XT (RADV NAVI22)", 0x73df))
        .adapter(Adapter::new(
            "AMD Radeon RX 6700 XT (navi22, LLVM 15.0.6, DRM 3.49, 6.1.0-28-amd64)",
            0x1002,
            0,
            "DiscreteGpu",
            "Gl",
            "",
            "4.6 (Core Profile) Mesa 22.3.6",
        ))
        .adapter(Adapter::llvmpipe_vulkan())
        .adapter(Adapter::llvmpipe_gl());
    h
}

/// Consumer board without ACS: the GPU's group also holds a NIC and a SATA controller in use.
pub fn shared_group_host_devices() -> HostBuilder {
    let mut h = HostBuilder::new(
        "Written by hand (xtask hostgen), not recorded: an Intel Core i5-8400 on an H370 board (Gigabyte subsystem ids) \
         whose PCH root ports have no usable ACS, with VT-d on (intel_iommu=on). All PCH root \
         ports (00:1c.0, 00:1c.4, 00:1c.5) and everything behind them land in IOMMU group 7: a \
         GeForce GTX 1060 6GB [10de:1c03] + audio [10de:10f1] at 0000:04:00.0/.1 on nouveau and \
         snd_hda_intel, a Realtek RTL8111 NIC [10ec:8168] on r8169 (the host's network) and an \
         ASMedia ASM1062 SATA controller [1b21:0612] on ahci (the host's disks). The UHD 630 \
         iGPU [8086:3e92] is the boot display (i915, no GVT-g). Groups of type DMA-FQ (no \
         iommu=pt). IDs from pci.ids; the grouping is what the kernel does for PCH ports without \
         ACS. wgpu sees the iGPU on Vulkan and the GTX 1060 on GL only (nouveau).",
    );
    h.cpu(Cpu::intel(
        "Intel(R) Core(TM) i5-8400 CPU @ 2.80GHz",
        6,
        158,
        6,
    ))
    .cmdline(&cmdline("intel_iommu=on"))
    .iommu(Iommu::IntelDmar)
    .group_type("DMA-FQ")
    .kvm_vfio()
    .module("i915", 3_977_216, &[])
    .module("nouveau", 2_801_664, &[])
    .module("snd_hda_intel", 57_344, &[])
    .module("r8169", 106_496, &[])
    .module("ahci", 49_152, &[]);
    h.pci(
        Pci::new("0000:00:00.0", INTEL, 0x3ec2)
            .class(0x060000)
            .revision(0x07)
            .driver("skl_uncore")
            .group(0),
    );
    h.pci(uhd630(true).group(1));
    h.pci(
        Pci::new("0000:00:14.0", INTEL, 0xa36d)
            .class(0x0c0330)
            .revision(0x10)
            .bar(0, 0xf732_0000, 0x010000, BarKind::Mem64)
            .driver("xhci_hcd")
            .group(2),
    );
    h.pci(
        Pci::new("0000:00:17.0", INTEL, 0xa352)
            .class(0x010601)
            .revision(0x10)
            .bar(5, 0xf731_9000, 0x0800, BarKind::Mem32)
            .driver("ahci")
            .group(3),
    );
    h.pci(
        port("0000:00:1c.0", INTEL, 0xa338, 2, 2)
            .revision(0xf0)
            .group(7),
    );
    h.pci(
        port("0000:00:1c.4", INTEL, 0xa33c, 3, 3)
            .revision(0xf0)
            .group(7),
    );
    h.pci(
        port("0000:00:1c.5", INTEL, 0xa33d, 4, 4)
            .revision(0xf0)
            .window(1, 0xf400_0000, 0x200_0000)
            .window(2, 0xa000_0000, 0x1200_0000)
            .group(7),
    );
    intel_pch(&mut h, Some(8), 0xa304, (0x1458, 0x5000), false);
    h.pci(
        Pci::new("0000:02:00.0", 0x10ec, 0x8168)
            .class(0x020000)
            .revision(0x15)
            .subsystem(0x1458, 0xe000)
            .bar(0, 0xd000, 0x0100, BarKind::Io)
            .bar(2, 0xf720_4000, 0x1000, BarKind::Mem64)
            .bar(4, 0xf720_0000, 0x4000, BarKind::Mem64)
            .driver("r8169")
            .group(7),
    );
    h.pci(
        Pci::new("0000:03:00.0", 0x1b21, 0x0612)
            .class(0x010601)
            .revision(0x02)
            .bar(0, 0xc050, 0x08, BarKind::Io)
            .bar(5, 0xf710_0000, 0x0200, BarKind::Mem32)
            .driver("ahci")
            .group(7),
    );
    h.pci(
        Pci::new("0000:04:00.0", NVIDIA, 0x1c03)
            .class(0x030000)
            .revision(0xa1)
            .subsystem(0x1458, 0x3739)
            .bar(0, 0xf400_0000, 0x100_0000, BarKind::Mem32)
            .bar(1, 0xa000_0000, 0x1000_0000, BarKind::Mem64Pref)
            .bar(3, 0xb000_0000, 0x200_0000, BarKind::Mem64Pref)
            .bar(5, 0xb000, 0x80, BarKind::Io)
            .driver("nouveau")
            .drm_card(1)
            .render_node(129)
            .reset_method("bus")
            .group(7),
    );
    h.pci(
        Pci::new("0000:04:00.1", NVIDIA, 0x10f1)
            .class(0x040300)
            .revision(0xa1)
            .subsystem(0x1458, 0x3739)
            .bar(0, 0xf508_0000, 0x4000, BarKind::Mem32)
            .driver("snd_hda_intel")
            .reset_method("bus")
            .group(7),
    );
    h.adapter(adapter_uhd630()).adapter(Adapter::new(
        "NV136",
        0x10de,
        0,
        "DiscreteGpu",
        "Gl",
        "",
        "4.3 (Core Profile) Mesa 22.3.6",
    ));
    h
}

/// One GPU with three blockers at once: it is the boot display, its IOMMU group holds the
/// host's NIC and SATA controller, and Xorg holds its DRM card node. `gpu list` must name all
/// three (`reasons[]`), not only the first.
pub fn boot_display_shared_group_held() -> HostBuilder {
    let mut h = HostBuilder::new(
        "Written by hand (xtask hostgen), not recorded: an Intel Core i5-8400 on an H370 board \
         without a usable iGPU output, VT-d on. Its only GPU, a GeForce GTX 1060 6GB [10de:1c03] \
         on nouveau at 0000:04:00.0, is the boot display, sits behind PCH root ports without \
         ACS in IOMMU group 7 with the host's Realtek RTL8111 NIC (r8169) and ASMedia ASM1062 \
         SATA controller (ahci), and Xorg (pid 1312) holds its /dev/dri/card0. Three blockers \
         of one passthrough candidate, for the list of every reason.",
    );
    h.cpu(Cpu::intel(
        "Intel(R) Core(TM) i5-8400 CPU @ 2.80GHz",
        6,
        158,
        6,
    ))
    .cmdline(&cmdline("intel_iommu=on iommu=pt"))
    .iommu(Iommu::IntelDmar)
    .kvm_vfio()
    .module("nouveau", 2_801_664, &[])
    .module("snd_hda_intel", 57_344, &[])
    .module("r8169", 106_496, &[])
    .module("ahci", 49_152, &[]);
    h.pci(
        Pci::new("0000:00:00.0", INTEL, 0x3ec2)
            .class(0x060000)
            .revision(0x07)
            .group(0),
    );
    h.pci(
        port("0000:00:1c.0", INTEL, 0xa338, 2, 2)
            .revision(0xf0)
            .group(7),
    );
    h.pci(
        port("0000:00:1c.4", INTEL, 0xa33c, 3, 3)
            .revision(0xf0)
            .group(7),
    );
    h.pci(
        port("0000:00:1c.5", INTEL, 0xa33d, 4, 4)
            .revision(0xf0)
            .window(1, 0xf400_0000, 0x200_0000)
            .window(2, 0xa000_0000, 0x1200_0000)
            .group(7),
    );
    h.pci(
        Pci::new("0000:02:00.0", 0x10ec, 0x8168)
            .class(0x020000)
            .revision(0x15)
            .bar(0, 0xd000, 0x0100, BarKind::Io)
            .bar(2, 0xf720_4000, 0x1000, BarKind::Mem64)
            .driver("r8169")
            .group(7),
    );
    h.pci(
        Pci::new("0000:03:00.0", 0x1b21, 0x0612)
            .class(0x010601)
            .revision(0x02)
            .bar(5, 0xf710_0000, 0x0200, BarKind::Mem32)
            .driver("ahci")
            .group(7),
    );
    h.pci(
        Pci::new("0000:04:00.0", NVIDIA, 0x1c03)
            .class(0x030000)
            .revision(0xa1)
            .bar(0, 0xf400_0000, 0x100_0000, BarKind::Mem32)
            .bar(1, 0xa000_0000, 0x1000_0000, BarKind::Mem64Pref)
            .boot_vga(true)
            .driver("nouveau")
            .drm_card(0)
            .render_node(128)
            .reset_method("bus")
            .group(7),
    );
    h.pci(
        Pci::new("0000:04:00.1", NVIDIA, 0x10f1)
            .class(0x040300)
            .revision(0xa1)
            .bar(0, 0xf508_0000, 0x4000, BarKind::Mem32)
            .driver("snd_hda_intel")
            .reset_method("bus")
            .group(7),
    );
    h.raw_file("proc/1312/comm", "Xorg\n")
        .raw_link("proc/1312/fd/11", "/dev/dri/card0")
        .raw_file("dev/dri/card0", "")
        .raw_file("dev/dri/renderD128", "");
    h
}

/// One GPU only, and it is the boot display.
pub fn single_gpu_boot_display() -> HostBuilder {
    let mut h = HostBuilder::new(
        "Written by hand (xtask hostgen), not recorded: an Intel Core i7-12700F desktop (no iGPU) \
         on a Z690 board, VT-d on (intel_iommu=on iommu=pt). The only GPU, a GeForce RTX 3070 \
         [10de:2484] + audio [10de:228b] at 0000:01:00.0/.1 behind the CPU root port 00:01.0 \
         [8086:460d], drives the console (boot_vga=1) on the proprietary nvidia driver; GPU and \
         audio are alone in group 2 (Alder Lake CPU ports have ACS). NVMe and I225-V NIC \
         [8086:15f3] in their own groups. IDs from pci.ids. wgpu sees the RTX 3070 on Vulkan and \
         llvmpipe.",
    );
    h.cpu(Cpu::intel(
        "12th Gen Intel(R) Core(TM) i7-12700F",
        6,
        151,
        12,
    ))
    .cmdline(&cmdline("intel_iommu=on iommu=pt"))
    .iommu(Iommu::IntelDmar)
    .group_type("identity")
    .kvm_vfio()
    .module("nvidia_drm", 77_824, &[])
    .module("nvidia_modeset", 1_314_816, &["nvidia_drm"])
    .module("nvidia", 56_799_232, &["nvidia_modeset"])
    .module("snd_hda_intel", 57_344, &[])
    .module("igc", 176_128, &[])
    .module("nvme", 57_344, &[]);
    h.pci(
        Pci::new("0000:00:00.0", INTEL, 0x4668)
            .class(0x060000)
            .revision(0x02)
            .group(0),
    );
    h.pci(
        port("0000:00:01.0", INTEL, 0x460d, 1, 1)
            .revision(0x02)
            .group(1),
    );
    h.pci(
        port("0000:00:06.0", INTEL, 0x464d, 2, 2)
            .revision(0x02)
            .group(3),
    );
    h.pci(
        port("0000:00:1c.0", INTEL, 0x7ab8, 3, 3)
            .revision(0x11)
            .group(4),
    );
    h.pci(
        Pci::new("0000:00:14.0", INTEL, 0x7ae0)
            .class(0x0c0330)
            .revision(0x11)
            .bar(0, 0x0060_0110_0000, 0x010000, BarKind::Mem64)
            .driver("xhci_hcd")
            .group(5),
    );
    h.pci(
        Pci::new("0000:00:1f.0", INTEL, 0x7a84)
            .class(0x060100)
            .revision(0x11)
            .group(6),
    );
    h.pci(
        Pci::new("0000:00:1f.3", INTEL, 0x7ad0)
            .class(0x040300)
            .revision(0x11)
            .bar(0, 0x0060_0111_0000, 0x4000, BarKind::Mem64)
            .driver("snd_hda_intel")
            .group(6),
    );
    h.pci(
        Pci::new("0000:01:00.0", NVIDIA, 0x2484)
            .class(0x030000)
            .revision(0xa1)
            .subsystem(0x3842, 0x3755)
            .bar(0, 0x7200_0000, 0x100_0000, BarKind::Mem32)
            .bar(1, 0x0060_0000_0000, 0x2_0000_0000, BarKind::Mem64Pref)
            .bar(3, 0x0062_0000_0000, 0x200_0000, BarKind::Mem64Pref)
            .bar(5, 0x4000, 0x80, BarKind::Io)
            .rom(0x0c0000, 0x020000)
            .boot_vga(true)
            .driver("nvidia")
            .drm_card(0)
            .render_node(128)
            .reset_method("bus")
            .group(2),
    );
    h.pci(
        Pci::new("0000:01:00.1", NVIDIA, 0x228b)
            .class(0x040300)
            .revision(0xa1)
            .subsystem(0x3842, 0x3755)
            .bar(0, 0x7308_0000, 0x4000, BarKind::Mem32)
            .driver("snd_hda_intel")
            .reset_method("bus")
            .group(2),
    );
    h.pci(nvme_970("0000:02:00.0", 0x7400_0000).group(7));
    h.pci(
        Pci::new("0000:03:00.0", INTEL, 0x15f3)
            .class(0x020000)
            .revision(0x03)
            .bar(0, 0x7500_0000, 0x100000, BarKind::Mem32)
            .bar(3, 0x7510_0000, 0x4000, BarKind::Mem32)
            .driver("igc")
            .group(8),
    );
    h.adapter(adapter_nvidia("NVIDIA GeForce RTX 3070", 0x2484))
        .adapter(Adapter::llvmpipe_vulkan());
    h
}

/// T4 vGPU types as NVIDIA's GRID driver lists them (type id, profile, frame buffer MiB,
/// heads, max resolution, max instances on a 16 GB T4).
const T4_TYPES: &[(u32, &str, u32, u32, &str, u32)] = &[
    (222, "GRID T4-1B", 1024, 4, "5120x2880", 16),
    (223, "GRID T4-2B", 2048, 4, "5120x2880", 8),
    (225, "GRID T4-1A", 1024, 1, "1280x1024", 16),
    (230, "GRID T4-1Q", 1024, 4, "5120x2880", 16),
    (231, "GRID T4-2Q", 2048, 4, "7680x4320", 8),
    (232, "GRID T4-4Q", 4096, 4, "7680x4320", 4),
    (233, "GRID T4-8Q", 8192, 4, "7680x4320", 2),
    (234, "GRID T4-16Q", 16384, 4, "7680x4320", 1),
];

/// The mdev types of one T4: `active` is `(type id, instances in use)` or None.
fn t4_types(active: Option<(u32, u32)>) -> Vec<MdevType> {
    T4_TYPES
        .iter()
        .map(|&(id, name, fb, heads, res, max)| {
            let avail = match active {
                None => max,
                Some((t, used)) if t == id => max - used,
                Some(_) => 0,
            };
            MdevType::new(
                &format!("nvidia-{id}"),
                name,
                &format!(
                    "num_heads={heads}, frl_config=60, framebuffer={fb}M, max_resolution={res}, max_instance={max}"
                ),
                avail,
            )
        })
        .collect()
}

fn tesla_t4(addr: &str, base32: u64, base64: u64, numa: i32, group: u32) -> Pci {
    Pci::new(addr, NVIDIA, 0x1eb8)
        .class(0x030200)
        .revision(0xa1)
        .subsystem(NVIDIA, 0x12a2)
        .bar(0, base32, 0x100_0000, BarKind::Mem32)
        .bar(1, base64, 0x1000_0000, BarKind::Mem64Pref)
        .bar(3, base64 + 0x1000_0000, 0x200_0000, BarKind::Mem64Pref)
        .driver("nvidia")
        .reset_method("flr bus")
        .numa_node(numa)
        .group(group)
}

/// Dual-socket server, BMC VGA boots, four T4 on nvidia with vGPU mdev types.
pub fn bmc_datacenter_nvidia_vgpu() -> HostBuilder {
    let mut h = HostBuilder::new(
        "Written by hand (xtask hostgen), not recorded: a dual-socket Intel Xeon Gold 6248 server \
         (Cascade Lake, root buses 00/3a/5d on socket 0 and 85/ae on socket 1), VT-d on \
         (intel_iommu=on). The boot display is the BMC's ASPEED AST2500 VGA [1a03:2000] at \
         0000:04:00.0 behind the AST1150 bridge [1a03:1150], on ast with boot_vga=1. Four Tesla T4 \
         [10de:1eb8, subsystem 10de:12a2, 3D controller class 0x030200, so no boot_vga file] at \
         0000:3b:00.0, 5e:00.0 (NUMA 0), 86:00.0, af:00.0 (NUMA 1), each alone in its group behind \
         a Sky Lake-E root port [8086:2030], on the nvidia vGPU host driver with \
         nvidia_vgpu_vfio loaded: every T4 is an mdev parent with GRID T4 types nvidia-222.. \
         (profile names, frame buffer and max_instance as NVIDIA's vGPU user guide lists the T4 \
         profiles; the numeric type ids follow public mdevctl listings of T4 hosts and may differ \
         between driver releases; \
         descriptions in the driver's num_heads=…, frl_config=… form). 3b:00.0 runs one T4-2Q \
         mdev (so by NVIDIA's one-type-per-GPU rule every other type there shows 0 and T4-2Q \
         shows 7); ae:00.0's T4 (af:00.0) runs two T4-8Q mdevs, which exhausts it (all types 0); \
         5e:00.0 and 86:00.0 are free. The mdev driver name nvidia-vgpu-vfio is an assumption. \
         X710 NIC [8086:1572] on i40e. No Vulkan/GL driver on the host: wgpu finds no adapter.",
    );
    h.cpu(Cpu::intel(
        "Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz",
        6,
        85,
        40,
    ))
    .cmdline(&cmdline("intel_iommu=on"))
    .iommu(Iommu::IntelDmar)
    .group_type("DMA")
    .kvm_vfio()
    .module("nvidia_vgpu_vfio", 65_536, &[])
    .module("mdev", 20_480, &["nvidia_vgpu_vfio"])
    .module("nvidia", 56_799_232, &["nvidia_vgpu_vfio"])
    .module("ast", 65_536, &[])
    .module("i40e", 532_480, &[])
    .mdev_driver("nvidia-vgpu-vfio");
    h.pci(
        Pci::new("0000:00:00.0", INTEL, 0x2020)
            .class(0x060000)
            .revision(0x07)
            .numa_node(0)
            .group(0),
    );
    h.pci(
        port("0000:00:1c.0", INTEL, 0xa190, 2, 2)
            .revision(0x09)
            .numa_node(0)
            .group(1),
    );
    h.pci(
        port("0000:00:1c.5", INTEL, 0xa195, 3, 4)
            .revision(0x09)
            .numa_node(0)
            .group(2),
    );
    h.pci(
        Pci::new("0000:00:1f.0", INTEL, 0xa1c1)
            .class(0x060100)
            .revision(0x09)
            .numa_node(0)
            .group(3),
    );
    h.pci(
        Pci::new("0000:00:1f.4", INTEL, 0xa1a3)
            .class(0x0c0500)
            .revision(0x09)
            .bar(0, 0x0020_0000_0000, 0x0100, BarKind::Mem64)
            .driver("i801_smbus")
            .numa_node(0)
            .group(3),
    );
    h.pci(
        Pci::new("0000:02:00.0", INTEL, 0x1572)
            .class(0x020000)
            .revision(0x02)
            .bar(0, 0x0020_0010_0000, 0x800000, BarKind::Mem64Pref)
            .bar(3, 0x0020_0010_8000, 0x8000, BarKind::Mem64Pref)
            .driver("i40e")
            .numa_node(0)
            .reset_method("flr bus")
            .group(4),
    );
    h.pci(
        Pci::new("0000:03:00.0", 0x1a03, 0x1150)
            .class(0x060400)
            .revision(0x04)
            .bridge(4, 4)
            .numa_node(0)
            .group(2),
    );
    h.pci(
        Pci::new("0000:04:00.0", 0x1a03, 0x2000)
            .class(0x030000)
            .revision(0x41)
            .subsystem(0x15d9, 0x1b95)
            .bar(0, 0xab00_0000, 0x100_0000, BarKind::Mem32)
            .bar(1, 0xac00_0000, 0x020000, BarKind::Mem32)
            .bar(2, 0x2000, 0x80, BarKind::Io)
            .boot_vga(true)
            .driver("ast")
            .drm_card(0)
            .numa_node(0)
            .group(2),
    );
    let t4s = [
        (
            "0000:3a:00.0",
            0x3au8,
            "0000:3b:00.0",
            0x3bu8,
            0xb500_0000u64,
            0x38bf_e000_0000u64,
            0,
            10u32,
        ),
        (
            "0000:5d:00.0",
            0x5d,
            "0000:5e:00.0",
            0x5e,
            0xc500_0000,
            0x38ff_e000_0000,
            0,
            12,
        ),
        (
            "0000:85:00.0",
            0x85,
            "0000:86:00.0",
            0x86,
            0xd500_0000,
            0x393f_e000_0000,
            1,
            14,
        ),
        (
            "0000:ae:00.0",
            0xae,
            "0000:af:00.0",
            0xaf,
            0xe500_0000,
            0x397f_e000_0000,
            1,
            16,
        ),
    ];
    for (i, (rp, _root, gpu, bus, b32, b64, numa, g)) in t4s.into_iter().enumerate() {
        h.pci(
            port(rp, INTEL, 0x2030, bus, bus)
                .revision(0x07)
                .numa_node(numa)
                .group(g - 1),
        );
        let active = match i {
            0 => Some((231, 1)),
            3 => Some((233, 2)),
            _ => None,
        };
        let mut p = tesla_t4(gpu, b32, b64, numa, g);
        for t in t4_types(active) {
            p = p.mdev_type(t);
        }
        h.pci(p);
    }
    h.mdev(Mdev {
        parent: "0000:3b:00.0".into(),
        uuid: "5b2e8f3a-6c1d-4e7a-9b0f-1d2c3e4f5a01".into(),
        type_id: "nvidia-231".into(),
        group: 20,
        driver: "nvidia-vgpu-vfio".into(),
    });
    h.mdev(Mdev {
        parent: "0000:af:00.0".into(),
        uuid: "5b2e8f3a-6c1d-4e7a-9b0f-1d2c3e4f5a02".into(),
        type_id: "nvidia-233".into(),
        group: 21,
        driver: "nvidia-vgpu-vfio".into(),
    });
    h.mdev(Mdev {
        parent: "0000:af:00.0".into(),
        uuid: "5b2e8f3a-6c1d-4e7a-9b0f-1d2c3e4f5a03".into(),
        type_id: "nvidia-233".into(),
        group: 22,
        driver: "nvidia-vgpu-vfio".into(),
    });
    h
}

/// Dual-socket server with a GPU on each NUMA node and hugepages free on node 0 only.
pub fn numa_2node_gpus() -> HostBuilder {
    let mut h = HostBuilder::new(
        "Written by hand (xtask hostgen), not recorded: a dual-socket Intel Xeon Silver 4215R \
         server (8 cores a socket, SMT off: node 0 has CPUs 0-7, node 1 CPUs 8-15; 64 GiB a \
         node), VT-d on in translated mode (intel_iommu=on without iommu=pt, groups DMA-FQ), \
         isolcpus=14-15 nohz_full=14-15 on the kernel command line. The boot display is the \
         BMC's ASPEED AST2500 [1a03:2000] at 0000:04:00.0 on ast (node 0). On node 0: an AMD \
         Radeon Pro W6800 [1002:73a3] with its HDMI audio [1002:ab28] at 0000:3b:00.0/.1 on \
         amdgpu and snd_hda_intel, alone in group 10 behind a Sky Lake-E root port \
         [8086:2030], with a RADV Vulkan adapter. On node 1: a Tesla T4 [10de:1eb8] at \
         0000:af:00.0 on the nvidia vGPU host driver with its GRID T4 mdev types (none \
         active), group 16. Hugepages (sysfs as Linux 6.1 lays them out under \
         sys/devices/system/node/nodeN/hugepages and sys/kernel/mm/hugepages): node 0 has \
         1024 2 MiB pages reserved and free and 4 free 1 GiB pages; node 1 has none, and \
         .fixture/hugepages.json lets its pools grow to 1536 2 MiB pages and 1 1 GiB page \
         only (fragmented memory: a larger nr_hugepages write gets fewer pages).",
    );
    h.cpu(Cpu::intel(
        "Intel(R) Xeon(R) Silver 4215R CPU @ 3.20GHz",
        6,
        85,
        16,
    ))
    .cmdline(&cmdline("intel_iommu=on isolcpus=14-15 nohz_full=14-15"))
    .iommu(Iommu::IntelDmar)
    .group_type("DMA-FQ")
    .kvm_vfio()
    .module("nvidia_vgpu_vfio", 65_536, &[])
    .module("mdev", 20_480, &["nvidia_vgpu_vfio"])
    .module("nvidia", 56_799_232, &["nvidia_vgpu_vfio"])
    .module("amdgpu", 9_592_832, &[])
    .module("snd_hda_intel", 61_440, &[])
    .module("ast", 65_536, &[])
    .mdev_driver("nvidia-vgpu-vfio")
    .adapter(adapter_radv("AMD Radeon Pro W6800 (RADV NAVI21)", 0x73a3));
    for (id, cpus, free_mib, pools) in [
        (
            0,
            "0-7",
            40_000,
            [
                HugePool {
                    size_kib: 2048,
                    nr: 1024,
                    free: 1024,
                    limit: None,
                },
                HugePool {
                    size_kib: 1 << 20,
                    nr: 4,
                    free: 4,
                    limit: None,
                },
            ],
        ),
        (
            1,
            "8-15",
            50_000,
            [
                HugePool {
                    size_kib: 2048,
                    nr: 0,
                    free: 0,
                    limit: Some(1536),
                },
                HugePool {
                    size_kib: 1 << 20,
                    nr: 0,
                    free: 0,
                    limit: Some(1),
                },
            ],
        ),
    ] {
        h.numa_node(NumaNode {
            id,
            cpus: cpus.into(),
            mem_total_mib: 65_536,
            mem_free_mib: free_mib,
            pools: pools.to_vec(),
        });
    }
    h.pci(
        Pci::new("0000:00:00.0", INTEL, 0x2020)
            .class(0x060000)
            .revision(0x07)
            .numa_node(0)
            .group(0),
    );
    h.pci(
        port("0000:00:1c.5", INTEL, 0xa195, 3, 4)
            .revision(0x09)
            .numa_node(0)
            .group(2),
    );
    h.pci(
        Pci::new("0000:03:00.0", 0x1a03, 0x1150)
            .class(0x060400)
            .revision(0x04)
            .bridge(4, 4)
            .numa_node(0)
            .group(2),
    );
    h.pci(
        Pci::new("0000:04:00.0", 0x1a03, 0x2000)
            .class(0x030000)
            .revision(0x41)
            .subsystem(0x15d9, 0x1b95)
            .bar(0, 0xab00_0000, 0x100_0000, BarKind::Mem32)
            .bar(1, 0xac00_0000, 0x020000, BarKind::Mem32)
            .bar(2, 0x2000, 0x80, BarKind::Io)
            .boot_vga(true)
            .driver("ast")
            .drm_card(0)
            .numa_node(0)
            .group(2),
    );
    h.pci(
        port("0000:3a:00.0", INTEL, 0x2030, 0x3b, 0x3b)
            .revision(0x07)
            .numa_node(0)
            .group(9),
    );
    h.pci(
        Pci::new("0000:3b:00.0", ATI, 0x73a3)
            .class(0x030000)
            .subsystem(ATI, 0x0e1e)
            .bar(0, 0x38bf_0000_0000, 0x4_0000_0000, BarKind::Mem64Pref)
            .bar(2, 0x38bf_4000_0000, 0x20_0000, BarKind::Mem64Pref)
            .bar(5, 0xb500_0000, 0x10_0000, BarKind::Mem32)
            .boot_vga(false)
            .driver("amdgpu")
            .reset_method("bus")
            .drm_card(1)
            .render_node(128)
            .numa_node(0)
            .group(10),
    );
    h.pci(
        Pci::new("0000:3b:00.1", ATI, 0xab28)
            .class(0x040300)
            .subsystem(ATI, 0xab28)
            .bar(0, 0xb510_0000, 0x4000, BarKind::Mem32)
            .driver("snd_hda_intel")
            .reset_method("flr bus")
            .numa_node(0)
            .group(10),
    );
    h.pci(
        port("0000:ae:00.0", INTEL, 0x2030, 0xaf, 0xaf)
            .revision(0x07)
            .numa_node(1)
            .group(15),
    );
    let mut t4 = tesla_t4("0000:af:00.0", 0xe500_0000, 0x397f_e000_0000, 1, 16);
    for t in t4_types(None) {
        t4 = t4.mdev_type(t);
    }
    h.pci(t4);
    h
}

/// A discrete GPU (4 functions) already on vfio-pci through driver_override.
pub fn gpu_on_vfio_pci() -> HostBuilder {
    let mut h = HostBuilder::new(
        "Written by hand (xtask hostgen), not recorded: an Intel Core i9-9900K on a Z390 board, \
         VT-d on (intel_iommu=on iommu=pt), boot display on the UHD 630 iGPU [8086:3e92] (i915, \
         no GVT-g). A GeForce RTX 2070 SUPER [10de:1e84] at 0000:01:00.0 with its three companion \
         functions (HDA audio [10de:10f8], USB 3.1 xHCI [10de:1ad8], USB Type-C UCSI [10de:1ad9]) \
         sits behind root port 00:01.0 [8086:1901]; all four functions and the port share IOMMU \
         group 1. The four functions are already bound to vfio-pci through driver_override \
         (driver_override=vfio-pci, so /dev/vfio/1 exists), as after a previous prepare or a \
         modprobe.d setup. IDs from pci.ids; the four-function layout is the Turing one. wgpu \
         sees only the iGPU on Vulkan.",
    );
    h.cpu(Cpu::intel(
        "Intel(R) Core(TM) i9-9900K CPU @ 3.60GHz",
        6,
        158,
        8,
    ))
    .cmdline(&cmdline("intel_iommu=on iommu=pt"))
    .iommu(Iommu::IntelDmar)
    .group_type("identity")
    .kvm_vfio()
    .module("i915", 3_977_216, &[])
    .module("snd_hda_intel", 57_344, &[])
    .module("e1000e", 323_584, &[])
    .module("nvme", 57_344, &[]);
    h.pci(
        Pci::new("0000:00:00.0", INTEL, 0x3e30)
            .class(0x060000)
            .revision(0x0d)
            .driver("skl_uncore")
            .group(0),
    );
    h.pci(
        port("0000:00:01.0", INTEL, 0x1901, 1, 1)
            .revision(0x0d)
            .group(1),
    );
    h.pci(uhd630(true).group(2));
    h.pci(
        Pci::new("0000:00:14.0", INTEL, 0xa36d)
            .class(0x0c0330)
            .revision(0x10)
            .bar(0, 0xf732_0000, 0x010000, BarKind::Mem64)
            .driver("xhci_hcd")
            .group(3),
    );
    h.pci(
        port("0000:00:1d.0", INTEL, 0xa330, 2, 2)
            .revision(0xf0)
            .group(4),
    );
    intel_pch(&mut h, Some(5), 0xa305, (0x1043, 0x8694), true);
    h.pci(nvme_970("0000:02:00.0", 0xf700_0000).group(6));
    let vf = |p: Pci| {
        p.driver("vfio-pci")
            .driver_override("vfio-pci")
            .reset_method("bus")
            .group(1)
    };
    h.pci(vf(Pci::new("0000:01:00.0", NVIDIA, 0x1e84)
        .class(0x030000)
        .revision(0xa1)
        .subsystem(0x1043, 0x8706)
        .bar(0, 0xf600_0000, 0x100_0000, BarKind::Mem32)
        .bar(1, 0xc000_0000, 0x1000_0000, BarKind::Mem64Pref)
        .bar(3, 0xd000_0000, 0x200_0000, BarKind::Mem64Pref)
        .bar(5, 0xe000, 0x80, BarKind::Io)
        .rom(0xf700_0000, 0x080000)));
    h.pci(vf(Pci::new("0000:01:00.1", NVIDIA, 0x10f8)
        .class(0x040300)
        .revision(0xa1)
        .subsystem(0x1043, 0x8706)
        .bar(0, 0xf708_0000, 0x4000, BarKind::Mem32)));
    h.pci(vf(Pci::new("0000:01:00.2", NVIDIA, 0x1ad8)
        .class(0x0c0330)
        .revision(0xa1)
        .subsystem(0x1043, 0x8706)
        .bar(0, 0xd200_0000, 0x040000, BarKind::Mem64Pref)
        .bar(3, 0xf704_0000, 0x010000, BarKind::Mem32)));
    h.pci(vf(Pci::new("0000:01:00.3", NVIDIA, 0x1ad9)
        .class(0x0c8000)
        .revision(0xa1)
        .subsystem(0x1043, 0x8706)
        .bar(0, 0xf708_4000, 0x1000, BarKind::Mem32)));
    h.adapter(adapter_uhd630());
    h
}

/// AMD MxGPU (MI25) PF with 4 of 16 VFs enabled, plus an NVIDIA L4 with vendor-VFIO VFs.
pub fn sriov_pf_with_vfs() -> HostBuilder {
    let mut h = HostBuilder::new(
        "Written by hand (xtask hostgen), not recorded: a single-socket AMD EPYC 7302 server running \
         Ubuntu 24.04's 6.8 kernel (NVIDIA's vendor-specific VFIO needs 6.8 or later), AMD-Vi on (amd_iommu=on iommu=pt, ivhd0 under 0000:00:00.2), boot display on the BMC's \
         ASPEED AST2500 [1a03:2000] (ast, boot_vga=1). GPU 1: an AMD Radeon Instinct MI25 MxGPU \
         physical function [1002:6860] at 0000:03:00.0 on AMD's out-of-tree gim driver with \
         sriov_totalvfs 16 and sriov_numvfs 4: VFs [1002:686c] at 03:00.1-03:00.4, each in its own \
         IOMMU group; VF0 and VF1 on vfio-pci (/dev/vfio/N present), VF2 and VF3 unbound. GPU 2: \
         an NVIDIA L4 [10de:27b8, 3D controller] at 0000:41:00.0 on nvidia in the vGPU 17+ \
         vendor-specific VFIO mode (no mdev bus): sriov_totalvfs 32, sriov_numvfs 4, VFs at \
         41:00.4-41:00.7 on nvidia with nvidia/creatable_vgpu_types (\"ID    : vGPU Name\" then \
         one \"ID : NAME\" line per type) and current_vgpu_type 0. VFs read ffff as vendor/device \
         in their own config space, as real VFs do. The L4 vGPU type ids are illustrative, not \
         NVIDIA's. No Vulkan/GL driver on the host: wgpu finds no adapter.",
    );
    h.cpu(Cpu::amd("AMD EPYC 7302 16-Core Processor", 23, 49, 16))
        .kernel_release("6.8.0-45-generic")
        .cmdline(
            "BOOT_IMAGE=/boot/vmlinuz-6.8.0-45-generic root=UUID=9d0e7c11-52a4-4b8e-a0f1-6c3d2b1a0e99 \
             ro amd_iommu=on iommu=pt",
        )
        .iommu(Iommu::AmdIvhd {
            at: "0000:00:00.2".into(),
        })
        .group_type("identity")
        .kvm_vfio()
        .module("gim", 557_056, &[])
        .module("nvidia", 56_799_232, &[])
        .module("ast", 65_536, &[])
        .module("igb", 282_624, &[]);
    h.pci(Pci::new("0000:00:00.0", AMD, 0x1480).class(0x060000));
    h.pci(Pci::new("0000:00:00.2", AMD, 0x1481).class(0x080600));
    h.pci(
        Pci::new("0000:00:01.0", AMD, 0x1482)
            .class(0x060000)
            .group(0),
    );
    h.pci(port("0000:00:01.1", AMD, 0x1483, 1, 2).group(1));
    h.pci(
        port("0000:00:03.1", AMD, 0x1483, 3, 3)
            .window(2, 0x10_0000_0000, 0x8_0000_0000)
            .group(2),
    );
    h.pci(port("0000:00:07.1", AMD, 0x1484, 4, 4).group(3));
    h.pci(
        port("0000:40:01.1", AMD, 0x1483, 0x41, 0x41)
            .window(2, 0x20_0000_0000, 0x20_0000_0000)
            .numa_node(0)
            .group(4),
    );
    // BMC: bridge + VGA.
    h.pci(
        Pci::new("0000:01:00.0", 0x1a03, 0x1150)
            .class(0x060400)
            .revision(0x04)
            .bridge(2, 2)
            .group(1),
    );
    h.pci(
        Pci::new("0000:02:00.0", 0x1a03, 0x2000)
            .class(0x030000)
            .revision(0x41)
            .subsystem(0x15d9, 0x1b95)
            .bar(0, 0xeb00_0000, 0x100_0000, BarKind::Mem32)
            .bar(1, 0xec00_0000, 0x020000, BarKind::Mem32)
            .bar(2, 0x2000, 0x80, BarKind::Io)
            .boot_vga(true)
            .driver("ast")
            .drm_card(0)
            .group(1),
    );
    h.pci(i211("0000:04:00.0", 0xf100_0000).group(5));
    // MI25 PF + VFs.
    h.pci(
        Pci::new("0000:03:00.0", ATI, 0x6860)
            .class(0x038000)
            .revision(0x01)
            .subsystem(ATI, 0x0c35)
            .bar(0, 0x10_0000_0000, 0x4_0000_0000, BarKind::Mem64Pref)
            .bar(2, 0x14_0000_0000, 0x200000, BarKind::Mem64Pref)
            .bar(5, 0xf000_0000, 0x080000, BarKind::Mem32)
            .driver("gim")
            .reset_method("flr bus")
            .sriov(Sriov {
                total: 16,
                num: 4,
                offset: 1,
                stride: 1,
                vf_device: 0x686c,
                vf_bars: vec![
                    crate::hostgen::Bar {
                        index: 0,
                        start: 0x14_4000_0000,
                        size: 0x4_0000_0000,
                        kind: BarKind::Mem64Pref,
                    },
                    crate::hostgen::Bar {
                        index: 5,
                        start: 0xf010_0000,
                        size: 0x800000,
                        kind: BarKind::Mem32,
                    },
                ],
            })
            .group(6),
    );
    for i in 0..4u16 {
        let addr = format!("0000:03:00.{}", i + 1);
        let mut vf = Pci::new(&addr, ATI, 0x686c)
            .class(0x038000)
            .subsystem(ATI, 0x0c35)
            .bar(
                0,
                0x14_4000_0000 + u64::from(i) * 0x4000_0000,
                0x4000_0000,
                BarKind::Mem64Pref,
            )
            .bar(
                5,
                0xf010_0000 + u64::from(i) * 0x80000,
                0x80000,
                BarKind::Mem32,
            )
            .vf_of("0000:03:00.0", i)
            .reset_method("flr")
            .group(7 + u32::from(i));
        if i < 2 {
            vf = vf.driver("vfio-pci");
        }
        h.pci(vf);
    }
    // NVIDIA L4 PF + vendor-VFIO VFs.
    let l4_types: Vec<(u32, String)> = [
        (1, "NVIDIA L4-1B"),
        (2, "NVIDIA L4-2B"),
        (3, "NVIDIA L4-1Q"),
        (4, "NVIDIA L4-2Q"),
        (5, "NVIDIA L4-3Q"),
        (6, "NVIDIA L4-4Q"),
        (7, "NVIDIA L4-6Q"),
        (8, "NVIDIA L4-8Q"),
        (9, "NVIDIA L4-12Q"),
        (10, "NVIDIA L4-24Q"),
    ]
    .iter()
    .map(|(id, n)| (1150 + id, n.to_string()))
    .collect();
    h.pci(
        Pci::new("0000:41:00.0", NVIDIA, 0x27b8)
            .class(0x030200)
            .revision(0xa1)
            .subsystem(NVIDIA, 0x16ca)
            .bar(0, 0xb000_0000, 0x100_0000, BarKind::Mem32)
            .bar(1, 0x20_0000_0000, 0x8_0000_0000, BarKind::Mem64Pref)
            .bar(3, 0x28_0000_0000, 0x200_0000, BarKind::Mem64Pref)
            .driver("nvidia")
            .reset_method("flr bus")
            .numa_node(0)
            .sriov(Sriov {
                total: 32,
                num: 4,
                offset: 4,
                stride: 1,
                vf_device: 0x27b8,
                vf_bars: vec![
                    crate::hostgen::Bar {
                        index: 0,
                        start: 0xb100_0000,
                        size: 0x200_0000,
                        kind: BarKind::Mem32,
                    },
                    crate::hostgen::Bar {
                        index: 1,
                        start: 0x30_0000_0000,
                        size: 0x8_0000_0000,
                        kind: BarKind::Mem64Pref,
                    },
                ],
            })
            .group(11),
    );
    for i in 0..4u16 {
        let addr = format!("0000:41:00.{}", i + 4);
        h.pci(
            Pci::new(&addr, NVIDIA, 0x27b8)
                .class(0x030200)
                .revision(0xa1)
                .subsystem(NVIDIA, 0x16ca)
                .bar(
                    0,
                    0xb100_0000 + u64::from(i) * 0x100000,
                    0x100000,
                    BarKind::Mem32,
                )
                .bar(
                    1,
                    0x30_0000_0000 + u64::from(i) * 0x4000_0000,
                    0x4000_0000,
                    BarKind::Mem64Pref,
                )
                .vf_of("0000:41:00.0", i)
                .driver("nvidia")
                .reset_method("flr")
                .numa_node(0)
                .nvidia_vgpu(NvidiaVgpuVf {
                    creatable: l4_types.clone(),
                    current: 0,
                })
                .group(12 + u32::from(i)),
        );
    }
    h
}

/// Intel Data Center GPU Flex 170 PF on i915, SR-IOV capable with no VF enabled yet.
pub fn intel_flex_sriov_idle() -> HostBuilder {
    let mut h = HostBuilder::new(
        "Written by hand (xtask hostgen), not recorded: a single-socket Intel Xeon Gold 6338 \
         (Ice Lake SP) server on Ubuntu 24.04's 6.8 kernel, VT-d on (intel_iommu=on), boot \
         display on the BMC's ASPEED AST2600 VGA [1a03:2000] (ast, boot_vga=1) behind the \
         AST1150 bridge. An Intel Data Center GPU Flex 170 [8086:56c0, Display controller class \
         0x038000, so no boot_vga file] at 0000:4b:00.0 behind root port 4a:02.0 sits on i915 \
         with GuC submission and SR-IOV enabled (i915.enable_guc=3 i915.max_vfs=31): \
         sriov_totalvfs 31, sriov_numvfs 0, VF device id 56c0, and the VF BAR windows for all 31 \
         VFs in resource lines 7 and 9 (16 MiB registers and 512 MiB local memory per VF). No VF \
         exists yet: a mediated GPU needs sriov_numvfs written first. The PF is alone in its \
         IOMMU group. IDs from pci.ids, the i915 SR-IOV parameters as Intel's Flex SR-IOV guide \
         and the i915-sriov-dkms project describe them. wgpu sees the Flex 170 on Vulkan (anv) \
         and llvmpipe.",
    );
    h.cpu(Cpu::intel(
        "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz",
        6,
        106,
        32,
    ))
    .kernel_release("6.8.0-45-generic")
    .cmdline(
        "BOOT_IMAGE=/boot/vmlinuz-6.8.0-45-generic root=UUID=0b7d9e2f-3c41-4d5a-8e6f-7a8b9c0d1e2f \
         ro intel_iommu=on i915.enable_guc=3 i915.max_vfs=31",
    )
    .iommu(Iommu::IntelDmar)
    .group_type("DMA-FQ")
    .kvm_vfio()
    .module("i915", 3_977_216, &[])
    .module("ast", 65_536, &[])
    .module("ice", 1_114_112, &[]);
    h.pci(
        Pci::new("0000:00:00.0", INTEL, 0x09a2)
            .class(0x088000)
            .revision(0x04)
            .numa_node(0)
            .group(0),
    );
    h.pci(
        port("0000:00:1c.0", INTEL, 0xa190, 2, 3)
            .revision(0x09)
            .numa_node(0)
            .group(1),
    );
    h.pci(
        Pci::new("0000:02:00.0", 0x1a03, 0x1150)
            .class(0x060400)
            .revision(0x06)
            .bridge(3, 3)
            .numa_node(0)
            .group(1),
    );
    h.pci(
        Pci::new("0000:03:00.0", 0x1a03, 0x2000)
            .class(0x030000)
            .revision(0x52)
            .subsystem(0x15d9, 0x1c48)
            .bar(0, 0x9c00_0000, 0x100_0000, BarKind::Mem32)
            .bar(1, 0x9d00_0000, 0x4_0000, BarKind::Mem32)
            .bar(2, 0x2000, 0x80, BarKind::Io)
            .boot_vga(true)
            .driver("ast")
            .drm_card(0)
            .numa_node(0)
            .group(1),
    );
    h.pci(
        port("0000:4a:02.0", INTEL, 0x347a, 0x4b, 0x4b)
            .revision(0x04)
            .window(1, 0xa000_0000, 0x2000_0000)
            .window(2, 0x0040_0000_0000, 0x0010_0000_0000)
            .numa_node(0)
            .group(2),
    );
    h.pci(
        Pci::new("0000:4b:00.0", INTEL, 0x56c0)
            .class(0x038000)
            .revision(0x08)
            .subsystem(INTEL, 0x4905)
            .bar(0, 0xa000_0000, 0x100_0000, BarKind::Mem64)
            .bar(2, 0x0040_0000_0000, 0x4_0000_0000, BarKind::Mem64Pref)
            .driver("i915")
            .drm_card(1)
            .render_node(128)
            .reset_method("flr bus")
            .numa_node(0)
            .sriov(Sriov {
                total: 31,
                num: 0,
                offset: 1,
                stride: 1,
                vf_device: 0x56c0,
                vf_bars: vec![
                    crate::hostgen::Bar {
                        index: 0,
                        start: 0xa100_0000,
                        size: 31 * 0x100_0000,
                        kind: BarKind::Mem64,
                    },
                    crate::hostgen::Bar {
                        index: 2,
                        start: 0x0044_0000_0000,
                        size: 31 * 0x2000_0000,
                        kind: BarKind::Mem64Pref,
                    },
                ],
            })
            .group(3),
    );
    h.pci(
        port("0000:17:02.0", INTEL, 0x347a, 0x18, 0x18)
            .revision(0x04)
            .numa_node(0)
            .group(4),
    );
    h.pci(
        Pci::new("0000:18:00.0", INTEL, 0x1593)
            .class(0x020000)
            .revision(0x02)
            .bar(0, 0x00f0_0000_0000, 0x200_0000, BarKind::Mem64Pref)
            .bar(3, 0x00f0_0200_0000, 0x1_0000, BarKind::Mem64Pref)
            .driver("ice")
            .reset_method("flr bus")
            .numa_node(0)
            .group(5),
    );
    h.adapter(Adapter::new(
        "Intel(R) Data Center GPU Flex 170 (DG2)",
        0x8086,
        0x56c0,
        "DiscreteGpu",
        "Vulkan",
        "Intel open-source Mesa driver",
        "Mesa 24.0.9-0ubuntu0.1",
    ))
    .adapter(Adapter::llvmpipe_vulkan());
    h
}

/// Headless server with IOMMU on and no display-class device at all.
pub fn no_gpu_server() -> HostBuilder {
    let mut h = HostBuilder::new(
        "Written by hand (xtask hostgen), not recorded: a headless single-socket Intel Xeon \
         E-2288G server without BMC video (serial console only), VT-d on (intel_iommu=on). No \
         display-class (0x03) function at all: only the host bridge, two root ports, an Intel \
         X550 10 GbE NIC [8086:1563] (ixgbe, two functions, one group), two Samsung NVMe SSDs \
         [144d:a808], the C246 PCH functions and USB. kvm and vfio loaded. wgpu finds only Mesa's \
         llvmpipe through lavapipe (Vulkan, device type Cpu).",
    );
    h.cpu(Cpu::intel(
        "Intel(R) Xeon(R) E-2288G CPU @ 3.70GHz",
        6,
        158,
        8,
    ))
    .cmdline(&cmdline("intel_iommu=on console=ttyS0,115200"))
    .iommu(Iommu::IntelDmar)
    .group_type("DMA-FQ")
    .kvm_vfio()
    .module("ixgbe", 397_312, &[])
    .module("nvme", 57_344, &[]);
    h.pci(
        Pci::new("0000:00:00.0", INTEL, 0x3e31)
            .class(0x060000)
            .revision(0x0d)
            .group(0),
    );
    h.pci(
        port("0000:00:01.0", INTEL, 0x1901, 1, 1)
            .revision(0x0d)
            .group(1),
    );
    h.pci(
        port("0000:00:1b.0", INTEL, 0xa340, 2, 2)
            .revision(0xf0)
            .group(2),
    );
    h.pci(
        port("0000:00:1d.0", INTEL, 0xa330, 3, 3)
            .revision(0xf0)
            .group(3),
    );
    h.pci(
        Pci::new("0000:00:14.0", INTEL, 0xa36d)
            .class(0x0c0330)
            .revision(0x10)
            .bar(0, 0xa132_0000, 0x010000, BarKind::Mem64)
            .driver("xhci_hcd")
            .group(4),
    );
    h.pci(
        Pci::new("0000:00:1f.0", INTEL, 0xa309)
            .class(0x060100)
            .revision(0x10)
            .group(5),
    );
    h.pci(
        Pci::new("0000:00:1f.4", INTEL, 0xa323)
            .class(0x0c0500)
            .revision(0x10)
            .bar(0, 0xa131_8000, 0x0100, BarKind::Mem64)
            .driver("i801_smbus")
            .group(5),
    );
    for f in 0..2u8 {
        h.pci(
            Pci::new(&format!("0000:01:00.{f}"), INTEL, 0x1563)
                .class(0x020000)
                .revision(0x01)
                .bar(
                    0,
                    0xa000_0000 + u64::from(f) * 0x400000,
                    0x400000,
                    BarKind::Mem64Pref,
                )
                .bar(
                    4,
                    0xa080_0000 + u64::from(f) * 0x4000,
                    0x4000,
                    BarKind::Mem64Pref,
                )
                .driver("ixgbe")
                .reset_method("flr bus")
                .sriov(Sriov {
                    total: 63,
                    num: 0,
                    offset: 128,
                    stride: 2,
                    vf_device: 0x1565,
                    vf_bars: vec![],
                })
                .group(1),
        );
    }
    h.pci(nvme_970("0000:02:00.0", 0xa110_0000).group(6));
    h.pci(nvme_970("0000:03:00.0", 0xa100_0000).group(7));
    h.adapter(Adapter::llvmpipe_vulkan());
    h
}

/// A loadable tree full of things a scanner must survive.
pub fn malformed() -> HostBuilder {
    let mut h = HostBuilder::new(
        "Written by hand (xtask hostgen) to break parsers, not a real host. IOMMU on (dmar0). \
         0000:00:00.0 is a sane host bridge. 0000:00:02.0 has vendor 0xZZZZ (not hex) and class \
         0x03 (truncated) and is an mdev parent whose type junk-1 has binary garbage in \
         available_instances and whose type junk-2 has no available_instances at all. \
         0000:01:00.0 (behind root port 00:01.0) has a resource file with junk lines, a driver \
         link to a driver directory that does not exist (dangling), and an iommu_group link to \
         group 99 that does not exist. 0000:01:00.1 has no class file. 0000:01:00.2 is a device \
         directory with no files at all. 0000:01:00.3 has an empty vendor file, a device id with \
         trailing junk and a numa_node of 'banana'. proc/cmdline has no trailing newline and \
         proc/cpuinfo has no vendor_id line. sys/bus/pci/devices also holds a name that is not a \
         PCI address, linking nowhere.",
    );
    h.iommu(Iommu::IntelDmar).kvm_vfio();
    h.pci(
        Pci::new("0000:00:00.0", INTEL, 0x3e30)
            .class(0x060000)
            .group(0),
    );
    h.pci(port("0000:00:01.0", INTEL, 0x1901, 1, 1).group(1));
    let mut junk_type = MdevType::new("junk-1", "JUNK\u{7f}", "line1\nline2", 0);
    junk_type.available_instances = Some(vec![0xff, 0xfe, 0x00, 0x41, 0x0a]);
    let mut junk2 = MdevType::new("junk-2", "missing instances", "", 1);
    junk2.available_instances = None;
    h.pci(
        Pci::new("0000:00:02.0", INTEL, 0x3e92)
            .raw("vendor", "0xZZZZ\n")
            .raw("class", "0x03\n")
            .driver("i915")
            .mdev_type(junk_type)
            .mdev_type(junk2)
            .group(2),
    );
    h.pci(Pci::new("0000:01:00.0", NVIDIA, 0x2206)
        .class(0x030000)
        .raw(
            "resource",
            "0x00000000f6000000 0x00000000f6ffffff 0x0000000000040200\nnot a resource line\n0x1 0x2\n\u{1}\u{2}\u{3}\n",
        )
        .omit("iommu_group")
        .omit("driver")
        .group(3));
    h.pci(
        Pci::new("0000:01:00.1", NVIDIA, 0x1aef)
            .omit("class")
            .group(3),
    );
    h.pci(Pci::new("0000:01:00.2", NVIDIA, 0x1aef).empty_dir());
    h.pci(
        Pci::new("0000:01:00.3", NVIDIA, 0x1aef)
            .class(0x0c0330)
            .raw("vendor", "")
            .raw("device", "0x1ad8 trailing junk\n")
            .raw("numa_node", "banana\n")
            .group(3),
    );
    h.raw_link(
        "sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0/driver",
        "sys/bus/pci/drivers/ghost-driver",
    )
    .raw_link(
        "sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0/iommu_group",
        "sys/kernel/iommu_groups/99",
    )
    .raw_link(
        "sys/bus/pci/devices/not-a-pci-address",
        "sys/devices/nowhere",
    )
    .raw_file("proc/cpuinfo", "processor\t: 0\nmodel name\t: ???\n")
    .raw_file("proc/cmdline", "BOOT_IMAGE=/vmlinuz intel_iommu=on");
    h
}

/// `gen-fixtures [--out DIR]`.
pub fn write_all_cmd(args: &[String]) -> Result<(), String> {
    let mut out = default_out();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--out" => {
                out = it.next().ok_or("--out needs a directory")?.into();
            }
            other => {
                return Err(format!(
                    "gen-fixtures: unknown argument {other:?} (usage: gen-fixtures [--out DIR])"
                ))
            }
        }
    }
    let done = write_all(&out).map_err(|e| e.to_string())?;
    for (name, s) in done {
        println!(
            "{}/{name}: {} dirs, {} files, {} links",
            out.display(),
            s.dirs,
            s.files,
            s.links
        );
    }
    Ok(())
}

/// `fixtures/hosts` of the workspace this xtask was built in.
pub fn default_out() -> std::path::PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).join("fixtures/hosts")
}

// ---------------------------------------------------------------------------------------------
// Benchmark host.

/// Parameters of the synthetic benchmark host.
#[derive(Debug, Clone, Copy)]
pub struct BenchParams {
    /// Total PCI functions (bridges, GPUs, audio and filler endpoints together).
    pub functions: usize,
    /// Number of GPUs (each with an audio function, behind its own root port).
    pub gpus: usize,
    /// mdev types offered by each GPU.
    pub mdev_types: usize,
}

/// A big synthetic host: `gpus` T4-like GPUs with `mdev_types` types each, plus NVMe/NIC
/// filler endpoints behind more root ports until `functions` functions exist.
pub fn bench_host(p: BenchParams) -> Result<HostBuilder, GenError> {
    // host bridge + per GPU (root port, GPU, audio)
    let fixed = 1 + 3 * p.gpus;
    if p.functions < fixed {
        return Err(GenError(format!(
            "--functions {} is too few for {} GPUs (need at least {fixed})",
            p.functions, p.gpus
        )));
    }
    if p.gpus > 200 {
        return Err(GenError(format!(
            "--gpus {} is more than the 200 buses this layout has",
            p.gpus
        )));
    }
    let mut h = HostBuilder::new(&format!(
        "Synthetic benchmark host written by `cargo xtask gen-bench-host`: {} PCI functions, {} \
         GPUs (Tesla T4 ids [10de:1eb8], 3D controller class) on nvidia, each with its HDMI-less \
         audio stand-in [10de:10fa] behind its own root port and offering {} mdev types, plus \
         NVMe [144d:a808] and I211 [8086:1539] filler endpoints. Not a real host.",
        p.functions, p.gpus, p.mdev_types
    ));
    h.cpu(Cpu::intel(
        "Intel(R) Xeon(R) Platinum 8380 CPU @ 2.30GHz",
        6,
        106,
        4,
    ))
    .cmdline(&cmdline("intel_iommu=on iommu=pt"))
    .iommu(Iommu::IntelDmar)
    .group_type("identity")
    .kvm_vfio()
    .module("nvidia_vgpu_vfio", 65_536, &[])
    .module("mdev", 20_480, &["nvidia_vgpu_vfio"])
    .module("nvidia", 56_799_232, &["nvidia_vgpu_vfio"])
    .mdev_driver("nvidia-vgpu-vfio");
    let mut group = 0u32;
    fn take(n: &mut u32) -> u32 {
        *n += 1;
        *n - 1
    }
    h.pci(
        Pci::new("0000:00:00.0", INTEL, 0x09a2)
            .class(0x060000)
            .group(take(&mut group)),
    );
    // Root ports on bus 0: 00:01.0 onwards, functions 0..7 of devices 1..31.
    let mut port_slot = 8usize;
    fn port_addr(slot: &mut usize) -> String {
        let (d, f) = (*slot / 8, *slot % 8);
        *slot += 1;
        format!("0000:00:{d:02x}.{f}")
    }
    let mut bus = 1u8;
    for g in 0..p.gpus {
        let rp = port_addr(&mut port_slot);
        h.pci(port(&rp, INTEL, 0x347a, bus, bus).group(take(&mut group)));
        let gg = take(&mut group);
        let base32 = 0x8000_0000u64 + (g as u64) * 0x100_0000;
        let base64 = 0x1000_0000_0000u64 + (g as u64) * 0x4000_0000;
        let mut gpu = tesla_t4(
            &format!("0000:{bus:02x}:00.0"),
            base32,
            base64,
            (g % 2) as i32,
            gg,
        );
        for t in 0..p.mdev_types {
            let fb = 1u32 << (t % 5);
            gpu = gpu.mdev_type(MdevType::new(
                &format!("nvidia-{}", 500 + t),
                &format!("GRID BENCH-{fb}Q-{t}"),
                &format!(
                    "num_heads=4, frl_config=60, framebuffer={}M, max_resolution=5120x2880, max_instance={}",
                    fb * 1024,
                    16 / fb
                ),
                16 / fb,
            ));
        }
        h.pci(gpu);
        h.pci(
            Pci::new(&format!("0000:{bus:02x}:00.1"), NVIDIA, 0x10fa)
                .class(0x040300)
                .bar(0, base32 + 0x800000, 0x4000, BarKind::Mem32)
                .driver("snd_hda_intel")
                .group(gg),
        );
        bus += 1;
    }
    // Filler: behind further root ports, up to 256 functions per bus (32 devices x 8).
    let mut remaining = p.functions - fixed;
    let mut n = 0u64;
    while remaining > 0 {
        if bus == 0xff || port_slot >= 256 {
            return Err(GenError(format!(
                "--functions {} does not fit on one PCI domain in this layout",
                p.functions
            )));
        }
        let rp = port_addr(&mut port_slot);
        h.pci(port(&rp, INTEL, 0x347b, bus, bus).group(take(&mut group)));
        remaining -= 1;
        let mut slot = 0usize;
        while remaining > 0 && slot < 256 {
            let addr = format!("0000:{bus:02x}:{:02x}.{}", slot / 8, slot % 8);
            let base = 0x2000_0000_0000u64 + n * 0x100000;
            let f = if n.is_multiple_of(2) {
                nvme_970(&addr, base)
            } else {
                i211(&addr, base)
            };
            h.pci(f.group(take(&mut group)));
            slot += 1;
            n += 1;
            remaining -= 1;
        }
        bus += 1;
    }
    Ok(h)
}

/// `gen-bench-host DIR [--functions N] [--gpus N] [--mdev-types N]`.
pub fn bench_host_cmd(args: &[String]) -> Result<(), String> {
    let usage = "usage: gen-bench-host DIR [--functions 1024] [--gpus 16] [--mdev-types 32]";
    let mut p = BenchParams {
        functions: 1024,
        gpus: 16,
        mdev_types: 32,
    };
    let mut dir = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut num = |name: &str| -> Result<usize, String> {
            let v = it.next().ok_or(format!("{name} needs a number; {usage}"))?;
            v.parse()
                .map_err(|_| format!("{name} {v:?} is not a number; {usage}"))
        };
        match a.as_str() {
            "--functions" => p.functions = num("--functions")?,
            "--gpus" => p.gpus = num("--gpus")?,
            "--mdev-types" => p.mdev_types = num("--mdev-types")?,
            s if s.starts_with("--") => return Err(format!("unknown option {s:?}; {usage}")),
            s => {
                if dir.replace(s.to_string()).is_some() {
                    return Err(format!("more than one DIR given; {usage}"));
                }
            }
        }
    }
    let dir = dir.ok_or(usage)?;
    let h = bench_host(p).map_err(|e| e.to_string())?;
    let count = h.function_count();
    let s = h.write(Path::new(&dir)).map_err(|e| e.to_string())?;
    println!(
        "{dir}: {count} PCI functions, {} dirs, {} files, {} links",
        s.dirs, s.files, s.links
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fixture_builds_and_writes() {
        let tmp = std::env::temp_dir().join(format!("hostgen-test-{}", std::process::id()));
        let done = write_all(&tmp).unwrap();
        assert_eq!(done.len(), all().len());
        assert!(all().len() >= 10);
        for (name, s) in &done {
            assert!(s.files > 20 && s.links > 5, "{name}: {s:?}");
        }
        // The writes are deterministic: a second run gives byte-equal trees.
        let tmp2 = tmp.with_extension("again");
        write_all(&tmp2).unwrap();
        let a = listing(&tmp);
        assert_eq!(a, listing(&tmp2));
        std::fs::remove_dir_all(&tmp).unwrap();
        std::fs::remove_dir_all(&tmp2).unwrap();
    }

    fn listing(root: &Path) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let e = e.unwrap();
                let p = e.path();
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                let ft = e.file_type().unwrap();
                if ft.is_symlink() {
                    out.push((
                        rel,
                        format!("-> {}", std::fs::read_link(&p).unwrap().display()),
                    ));
                } else if ft.is_dir() {
                    out.push((rel, "dir".into()));
                    stack.push(p);
                } else {
                    out.push((rel, format!("{:?}", std::fs::read(&p).unwrap())));
                }
            }
        }
        out.sort();
        out
    }

    /// Files and links (not directories: git keeps none) of a tree.
    fn files_and_links(root: &Path) -> Vec<(String, String)> {
        listing(root)
            .into_iter()
            .filter(|(_, v)| v != "dir")
            .collect()
    }

    #[test]
    fn checked_in_fixtures_match_the_generator() {
        let tmp = std::env::temp_dir().join(format!("hostgen-sync-{}", std::process::id()));
        write_all(&tmp).unwrap();
        let checked_in = default_out();
        for f in all() {
            let want = files_and_links(&tmp.join(f.name));
            let got = files_and_links(&checked_in.join(f.name));
            assert!(
                want == got,
                "fixtures/hosts/{} differs from what the generator writes; run `cargo xtask gen-fixtures`",
                f.name
            );
        }
        std::fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn fixtures_load_in_the_simulator() {
        use vm_device_host::prelude::*;
        use vm_device_sim::SimHost;
        for f in all() {
            let dir = default_out().join(f.name);
            let host = SimHost::from_fixture(&dir).unwrap();
            let devs = host.list_dir(Path::new("/sys/bus/pci/devices")).unwrap();
            assert!(!devs.is_empty(), "{}: no PCI devices", f.name);
            host.probe_adapters().unwrap();
            if f.name == "malformed" {
                // Every entry can be probed without a panic; some reads must fail.
                let mut failures = 0;
                for d in &devs {
                    let p = Path::new("/sys/bus/pci/devices").join(d);
                    for attr in ["vendor", "class", "driver", "iommu_group"] {
                        if host.canonicalize(&p.join(attr)).is_err() {
                            failures += 1;
                        }
                    }
                }
                assert!(failures > 0, "malformed has nothing malformed");
                continue;
            }
            let vendor = host.cpu_vendor().unwrap();
            assert!(
                vendor == "GenuineIntel" || vendor == "AuthenticAMD",
                "{}: {vendor}",
                f.name
            );
            for d in &devs {
                let p = Path::new("/sys/bus/pci/devices").join(d);
                let real = host.canonicalize(&p).unwrap();
                assert!(
                    real.to_string_lossy().starts_with("/sys/devices/pci"),
                    "{}: {d} -> {}",
                    f.name,
                    real.display()
                );
                assert!(host.read_attr(&p.join("vendor")).unwrap().starts_with("0x"));
                for link in ["driver", "iommu_group", "physfn"] {
                    if host.kind(&p.join(link)).is_some() {
                        let t = host.canonicalize(&p.join(link)).unwrap();
                        assert!(
                            host.is_dir(&t),
                            "{}: {d}/{link} -> {} is no directory",
                            f.name,
                            t.display()
                        );
                    }
                }
            }
            if host.exists(Path::new("/sys/class/mdev_bus")) {
                for parent in host.list_dir(Path::new("/sys/class/mdev_bus")).unwrap() {
                    let types = Path::new("/sys/class/mdev_bus")
                        .join(&parent)
                        .join("mdev_supported_types");
                    for t in host.list_dir(&types).unwrap() {
                        let n: u32 = host
                            .read_attr(&types.join(&t).join("available_instances"))
                            .unwrap()
                            .trim()
                            .parse()
                            .unwrap();
                        assert!(n <= 64, "{}: {parent} {t}: {n}", f.name);
                        assert!(
                            host.is_dir(&types.join(&t).join("devices")),
                            "{}: {parent} {t} has no devices/",
                            f.name
                        );
                    }
                }
                for m in host.list_dir(Path::new("/sys/bus/mdev/devices")).unwrap() {
                    let md = Path::new("/sys/bus/mdev/devices").join(&m);
                    let ty = host.canonicalize(&md.join("mdev_type")).unwrap();
                    assert!(
                        host.is_dir(&ty.join("devices").join(&m)),
                        "{}: {m} not listed under its type",
                        f.name
                    );
                    assert!(host.exists(&md.join("iommu_group/devices").join(&m)));
                }
            }
        }
    }

    #[test]
    fn bench_host_has_the_requested_shape() {
        let h = bench_host(BenchParams {
            functions: 1024,
            gpus: 16,
            mdev_types: 32,
        })
        .unwrap();
        assert_eq!(h.function_count(), 1024);
        assert!(bench_host(BenchParams {
            functions: 10,
            gpus: 16,
            mdev_types: 1
        })
        .is_err());
    }
}
