//! `vfio_smoke`: the whole VFIO open sequence for one device, as one call, on any host.
//!
//! The same function runs on `SimHost` (tests) and on a real kernel (the QEMU lab harness,
//! or a user's machine), so the two can be compared step by step. It opens, reports and
//! closes; it changes no binding. Every failure names the step, keeps the kernel's errno,
//! and says what to do.

use std::path::Path;

use serde::Serialize;
use vm_device_host::prelude::*;
use vm_device_host::vfio::{region, VFIO_API_VERSION};
use vm_device_host::{
    DeviceInfo, DmaMapping, GroupStatus, HostError, IommuInfo, IommuType, IrqInfo, RegionInfo,
    VfioContainer, VfioHandle, VfioPath,
};

/// IOVA of the test mapping.
pub const SMOKE_IOVA: u64 = 0x10_0000;
/// Size of the test mapping (1 MiB).
pub const SMOKE_DMA_SIZE: u64 = 0x10_0000;

/// Which way to open the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathChoice {
    /// iommufd when `/dev/iommu` and the device's cdev exist, else the legacy group path.
    Auto,
    /// Container + group.
    Legacy,
    /// iommufd + device cdev.
    Iommufd,
}

/// What the sequence found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VfioReport {
    /// PCI address or mdev UUID.
    pub device: String,
    /// IOMMU group.
    pub group: u32,
    /// Which API opened the device.
    pub path: VfioPath,
    /// `VFIO_GET_API_VERSION` (legacy path).
    pub api_version: Option<i32>,
    /// `VFIO_CHECK_EXTENSION(VFIO_TYPE1v2_IOMMU)` (legacy path).
    pub type1v2: Option<bool>,
    /// `VFIO_GROUP_GET_STATUS` before the container was set (legacy path).
    pub group_status: Option<GroupStatus>,
    /// `VFIO_IOMMU_GET_INFO` (legacy path).
    pub iommu: Option<IommuInfo>,
    /// `VFIO_DEVICE_GET_INFO`.
    pub device_info: DeviceInfo,
    /// Every region `0..num_regions` the device answers (vfio-pci refuses the VGA region,
    /// EINVAL, on devices that are not VGA-class: it is left out).
    pub regions: Vec<RegionInfo>,
    /// Every IRQ index the device answers (the kernel refuses ERR on conventional PCI:
    /// such indices are left out).
    pub irqs: Vec<IrqInfo>,
    /// Vendor id read through the config region.
    pub vendor: u16,
    /// Device id read through the config region.
    pub device_id: u16,
    /// Class code (24 bits) read through the config region.
    pub class: u32,
    /// The test mapping.
    pub dma: DmaMapping,
    /// Bytes the unmap released.
    pub dma_unmapped: u64,
}

/// A failed step.
#[derive(Debug, thiserror::Error)]
#[error("VFIO smoke of {device} (IOMMU group {group}) failed at {step}: {source}; {hint}")]
pub struct VfioSmokeError {
    /// PCI address or mdev UUID.
    pub device: String,
    /// IOMMU group.
    pub group: u32,
    /// The step (`open container`, `set container`, ...).
    pub step: &'static str,
    /// What the host said (boxed: keeps the error small to return).
    #[source]
    pub source: Box<HostError>,
    /// What to do about it.
    pub hint: String,
}

impl VfioSmokeError {
    /// The errno, when the host gave one.
    pub fn errno(&self) -> Option<i32> {
        self.source.raw_os_error()
    }
}

const EPERM: i32 = 1;
const ENOENT: i32 = 2;
const EBUSY: i32 = 16;
const ENODEV: i32 = 19;
const EINVAL: i32 = 22;

/// Members of group `n` that keep it from being viable: `(name, driver)` for each member
/// bound to a driver other than vfio-pci / pci-stub / an mdev driver, bridges excepted.
pub fn blocking_members(host: &dyn HostOps, n: u32) -> Vec<(String, String)> {
    let dir = format!("/sys/kernel/iommu_groups/{n}/devices");
    let names = host.list_dir(Path::new(&dir)).unwrap_or_default();
    names
        .into_iter()
        .filter_map(|name| {
            let p = Path::new(&dir).join(&name);
            let driver = host.link_name(&p.join("driver")).ok()?;
            let class = host.read_attr(&p.join("class")).unwrap_or_default();
            let bridge = class.trim_start_matches("0x").starts_with("0604");
            let mdev = host.read_link(&p.join("mdev_type")).is_ok();
            let vfio_ok = driver.contains("vfio") || driver == "pci-stub";
            (!bridge && !mdev && !vfio_ok).then_some((name, driver))
        })
        .collect()
}

fn hint(host: &dyn HostOps, step: &str, e: &HostError, group: u32, name: &str) -> String {
    match (step, e.raw_os_error()) {
        ("open container", Some(ENOENT)) => {
            "/dev/vfio/vfio is missing: load VFIO (`modprobe vfio-pci`)".into()
        }
        ("open group", Some(ENOENT)) => format!(
            "/dev/vfio/{group} is missing: no member of group {group} is bound to vfio-pci \
             (bind {name} with driver_override=vfio-pci, unbind, drivers_probe)"
        ),
        ("open group", Some(EBUSY)) => format!(
            "group {group} is already open (a VMM or another tool holds /dev/vfio/{group}); \
             find it with `fuser /dev/vfio/{group}`"
        ),
        ("set container", Some(EPERM)) => {
            let blockers = blocking_members(host, group);
            if blockers.is_empty() {
                format!("group {group} is not viable")
            } else {
                let list: Vec<String> = blockers
                    .iter()
                    .map(|(n, d)| format!("{n} is bound to {d}"))
                    .collect();
                format!(
                    "group {group} is not viable: {}; bind every member of the group to \
                     vfio-pci (or unbind it) first",
                    list.join(", ")
                )
            }
        }
        ("set IOMMU", Some(ENODEV)) | ("check TYPE1v2", _) => {
            "the type1 IOMMU backend is not loaded: `modprobe vfio_iommu_type1`".into()
        }
        ("get device fd", Some(ENODEV)) => format!(
            "{name} is not a VFIO device of group {group}: check that it is a member and \
             bound to vfio-pci (or is an mdev of that group)"
        ),
        ("get device fd", Some(EINVAL)) => "the group has no container with an IOMMU set".into(),
        ("open iommufd", Some(ENOENT)) | ("bind iommufd", Some(ENOENT)) => {
            "this kernel has no iommufd / VFIO device cdev (needs CONFIG_IOMMUFD and \
             CONFIG_VFIO_DEVICE_CDEV, Linux 6.6+): use the legacy path"
                .into()
        }
        ("map DMA", Some(12)) => {
            "could not pin the buffer: raise RLIMIT_MEMLOCK (`ulimit -l`)".into()
        }
        _ => "see the errno above".into(),
    }
}

/// Closes what the sequence opened, newest first, whatever happens.
struct Opened<'a> {
    host: &'a dyn HostOps,
    handles: Vec<VfioHandle>,
}

impl Drop for Opened<'_> {
    fn drop(&mut self) {
        while let Some(h) = self.handles.pop() {
            // Closing is best effort here: the report (or the first error) is what matters.
            let _ = self.host.vfio_close(h);
        }
    }
}

/// [`vfio_smoke_with`] choosing the path automatically.
pub fn vfio_smoke(
    host: &dyn HostOps,
    group: u32,
    name: &str,
) -> Result<VfioReport, VfioSmokeError> {
    vfio_smoke_with(host, group, name, PathChoice::Auto)
}

/// Runs the whole sequence on device `name` of IOMMU group `group`: container, API version,
/// TYPE1v2 extension, group, status (must be viable), set container, set IOMMU, IOMMU info,
/// device fd, device info, every region's info, IRQ info, vendor/device/class read through
/// the config region, and a 1 MiB DMA map + unmap. On the iommufd path the container steps
/// are replaced by `IOMMU_IOAS_ALLOC` + bind + attach. Everything opened is closed again.
pub fn vfio_smoke_with(
    host: &dyn HostOps,
    group: u32,
    name: &str,
    choice: PathChoice,
) -> Result<VfioReport, VfioSmokeError> {
    let fail = |step: &'static str| {
        move |source: HostError| VfioSmokeError {
            device: name.to_string(),
            group,
            step,
            hint: hint(host, step, &source, group, name),
            source: Box::new(source),
        }
    };
    let use_iommufd = match choice {
        PathChoice::Legacy => false,
        PathChoice::Iommufd => true,
        PathChoice::Auto => host.vfio_iommufd_availability(name).usable(),
    };
    let mut opened = Opened {
        host,
        handles: Vec::new(),
    };
    let mut report = VfioReport {
        device: name.to_string(),
        group,
        path: if use_iommufd {
            VfioPath::Iommufd
        } else {
            VfioPath::Legacy
        },
        api_version: None,
        type1v2: None,
        group_status: None,
        iommu: None,
        device_info: DeviceInfo {
            flags: 0,
            num_regions: 0,
            num_irqs: 0,
        },
        regions: Vec::new(),
        irqs: Vec::new(),
        vendor: 0,
        device_id: 0,
        class: 0,
        dma: DmaMapping { iova: 0, size: 0 },
        dma_unmapped: 0,
    };

    let (container, device): (VfioContainer, _) = if use_iommufd {
        let c = host.vfio_iommufd_open().map_err(fail("open iommufd"))?;
        opened.handles.push(c.into());
        let d = host
            .vfio_iommufd_device(c, name)
            .map_err(fail("bind iommufd"))?;
        opened.handles.push(d.into());
        (c, d)
    } else {
        let c = host.vfio_open_container().map_err(fail("open container"))?;
        opened.handles.push(c.into());
        let v = host.vfio_api_version(c).map_err(fail("API version"))?;
        report.api_version = Some(v);
        if v != VFIO_API_VERSION {
            return Err(fail("API version")(HostError::errno(
                "VFIO_GET_API_VERSION",
                "/dev/vfio/vfio",
                EINVAL,
            )));
        }
        let t1 = host
            .vfio_check_extension(c, IommuType::Type1v2.raw())
            .map_err(fail("check TYPE1v2"))?;
        report.type1v2 = Some(t1 != 0);
        let g = host.vfio_open_group(group).map_err(fail("open group"))?;
        opened.handles.push(g.into());
        report.group_status = Some(host.vfio_group_status(g).map_err(fail("group status"))?);
        host.vfio_group_set_container(g, c)
            .map_err(fail("set container"))?;
        host.vfio_set_iommu(c, IommuType::Type1v2)
            .map_err(fail("set IOMMU"))?;
        report.iommu = Some(host.vfio_iommu_info(c).map_err(fail("IOMMU info"))?);
        let d = host
            .vfio_group_device(g, name)
            .map_err(fail("get device fd"))?;
        opened.handles.push(d.into());
        (c, d)
    };

    report.device_info = host.vfio_device_info(device).map_err(fail("device info"))?;
    for index in 0..report.device_info.num_regions {
        match host.vfio_region_info(device, index) {
            Ok(r) => report.regions.push(r),
            // vfio-pci has the VGA region only on VGA-class devices; elsewhere it says EINVAL.
            Err(e) if index == region::VGA && e.raw_os_error() == Some(EINVAL) => {}
            Err(e) => return Err(fail("region info")(e)),
        }
    }
    for index in 0..report.device_info.num_irqs {
        match host.vfio_irq_info(device, index) {
            Ok(i) => report.irqs.push(i),
            Err(e) if e.raw_os_error() == Some(EINVAL) => {}
            Err(e) => return Err(fail("IRQ info")(e)),
        }
    }
    let mut cfg = [0u8; 12];
    let n = host
        .vfio_region_read(device, region::CONFIG, 0, &mut cfg)
        .map_err(fail("config read"))?;
    if n < cfg.len() {
        return Err(fail("config read")(HostError::Fixture(format!(
            "config region of {name} gave {n} bytes, expected at least 12"
        ))));
    }
    report.vendor = u16::from_le_bytes([cfg[0], cfg[1]]);
    report.device_id = u16::from_le_bytes([cfg[2], cfg[3]]);
    report.class = u32::from_le_bytes([cfg[9], cfg[10], cfg[11], 0]);

    report.dma = host
        .vfio_dma_map(container, SMOKE_IOVA, SMOKE_DMA_SIZE)
        .map_err(fail("map DMA"))?;
    report.dma_unmapped = host
        .vfio_dma_unmap(container, SMOKE_IOVA, SMOKE_DMA_SIZE)
        .map_err(fail("unmap DMA"))?;

    // Close in order (device, group, container), reporting a failure to close.
    while let Some(h) = opened.handles.pop() {
        host.vfio_close(h).map_err(fail("close"))?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::LinuxHost;

    /// This machine may or may not have VFIO: either way the answer must be coherent.
    #[test]
    fn linux_host_reports_missing_vfio_with_path_and_errno() {
        let host = LinuxHost::new();
        let has_vfio = Path::new("/dev/vfio/vfio").exists();
        match host.vfio_open_container() {
            Ok(c) => {
                assert!(has_vfio);
                assert_eq!(host.vfio_api_version(c).unwrap(), VFIO_API_VERSION);
                host.vfio_close(c.into()).unwrap();
                assert_eq!(
                    host.vfio_close(c.into()).unwrap_err().raw_os_error(),
                    Some(9),
                    "a closed handle is EBADF"
                );
            }
            Err(e) => {
                assert!(!has_vfio, "{e}");
                assert_eq!(e.raw_os_error(), Some(ENOENT));
                assert!(e.to_string().contains("/dev/vfio/vfio"), "{e}");
                let smoke =
                    vfio_smoke_with(&host, 7, "0000:01:00.0", PathChoice::Legacy).unwrap_err();
                assert_eq!(smoke.step, "open container");
                assert_eq!(smoke.errno(), Some(ENOENT));
                assert!(smoke.to_string().contains("modprobe vfio-pci"), "{smoke}");
            }
        }
        if !Path::new("/dev/vfio/999999").exists() {
            let e = host.vfio_open_group(999_999).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(ENOENT));
            assert!(e.to_string().contains("/dev/vfio/999999"), "{e}");
        }
        if !Path::new("/dev/iommu").exists() {
            let e = host.vfio_iommufd_open().unwrap_err();
            assert_eq!(e.raw_os_error(), Some(ENOENT));
            assert!(e.to_string().contains("/dev/iommu"), "{e}");
            assert!(!host.vfio_iommufd_availability("0000:01:00.0").iommu_dev);
        }
    }
}
