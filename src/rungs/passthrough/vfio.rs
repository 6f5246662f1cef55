//! Opening a prepared group through VFIO: container, group, device fds, and the regions
//! each device exposes. The fds must be closed before the group is given back: unbinding a
//! device whose VFIO fd is open blocks until it closes (kernel notes, rule 25), so the
//! handles borrow the prepared handle that would release it.

use std::path::PathBuf;

use serde::Serialize;
use vm_device_host::vfio::{
    region, DeviceInfo, IommuType, RegionInfo, VfioContainer, VfioDevice, VfioGroup, VfioHandle,
    VFIO_API_VERSION,
};
use vm_device_host::{HostError, HostOps, PciAddress};

use super::error::PassthroughError;
use super::group::VFIO_SAFE_DRIVERS;
use super::PciDeviceInfo;

const EPERM: i32 = 1;
const ENOENT: i32 = 2;
const EACCES: i32 = 13;
const EBUSY: i32 = 16;
const ENODEV: i32 = 19;

/// The product guide's remedy for `/dev/vfio/N` permissions.
pub const VFIO_PERMISSION_REMEDY: &str = "add yourself to the vfio group (`sudo usermod -a -G vfio $USER`, then log in again) and install a udev rule giving it the VFIO nodes: `SUBSYSTEM==\"vfio\", OWNER=\"root\", GROUP=\"vfio\", MODE=\"0660\"` in /etc/udev/rules.d/10-vfio.rules, then `sudo udevadm control --reload && sudo udevadm trigger`";

/// One device opened through VFIO.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OpenedDevice {
    /// Address.
    pub address: PciAddress,
    /// `VFIO_DEVICE_GET_INFO`.
    pub info: DeviceInfo,
    /// `VFIO_DEVICE_GET_REGION_INFO` of every region the device answers (no VGA region on a
    /// device that is not VGA-class).
    pub regions: Vec<RegionInfo>,
    #[serde(skip)]
    pub(crate) handle: Option<VfioDevice>,
}

/// Open VFIO handles of one group (closed with [`VfioHandles::close`]).
#[derive(Debug)]
pub struct VfioHandles {
    /// The IOMMU group.
    pub group_number: u32,
    /// The devices, with their regions.
    pub devices: Vec<OpenedDevice>,
    container: Option<VfioContainer>,
    group: Option<VfioGroup>,
}

fn vfio_err(
    op: impl Into<String>,
    source: HostError,
    remedy: impl Into<String>,
) -> PassthroughError {
    PassthroughError::Vfio {
        op: op.into(),
        source,
        remedy: remedy.into(),
    }
}

/// Members of `group` that keep it from being viable, with their drivers (rule 23: a
/// member on anything but a VFIO driver or pci-stub; bridges and unbound members are fine).
fn blockers_text(host: &dyn HostOps, group: u32) -> String {
    let dir = PathBuf::from(format!("/sys/kernel/iommu_groups/{group}/devices"));
    let blocking: Vec<String> = host
        .list_dir(&dir)
        .unwrap_or_default()
        .iter()
        .filter_map(|n| n.parse::<PciAddress>().ok())
        .filter_map(|a| PciDeviceInfo::read(host, &a).ok())
        .filter(|i| i.class >> 16 != 0x06)
        .filter_map(|i| {
            let d = i.driver.clone()?;
            (!VFIO_SAFE_DRIVERS.contains(&d.as_str())).then(|| format!("{} on {d}", i.label()))
        })
        .collect();
    if blocking.is_empty() {
        format!("group {group} is not viable")
    } else {
        format!(
            "group {group} is not viable: {}; run `vm-cli gpu prepare` on its GPU, which moves every member it can",
            blocking.join(", ")
        )
    }
}

impl VfioHandles {
    /// Opens `/dev/vfio/vfio`, group `group`, attaches the type1 IOMMU, and opens every
    /// device of `devices` with its regions. On error everything opened is closed again.
    pub fn open(
        host: &dyn HostOps,
        group: u32,
        devices: &[PciAddress],
    ) -> Result<Self, PassthroughError> {
        let mut h = VfioHandles {
            group_number: group,
            devices: Vec::new(),
            container: None,
            group: None,
        };
        match h.open_all(host, devices) {
            Ok(()) => Ok(h),
            Err(e) => {
                // The open error is what matters; closing is best effort.
                let _ = h.close(host);
                Err(e)
            }
        }
    }

    fn open_all(
        &mut self,
        host: &dyn HostOps,
        devices: &[PciAddress],
    ) -> Result<(), PassthroughError> {
        let group = self.group_number;
        let node = format!("/dev/vfio/{group}");
        let c = host.vfio_open_container().map_err(|e| {
            let remedy = match e.raw_os_error() {
                Some(ENOENT) => "VFIO is not loaded: `sudo modprobe vfio-pci`".to_string(),
                Some(EACCES) => VFIO_PERMISSION_REMEDY.to_string(),
                _ => "check `dmesg | grep -i vfio`".to_string(),
            };
            vfio_err("open /dev/vfio/vfio", e, remedy)
        })?;
        self.container = Some(c);
        let v = host
            .vfio_api_version(c)
            .map_err(|e| vfio_err("VFIO_GET_API_VERSION", e, "check `dmesg | grep -i vfio`"))?;
        if v != VFIO_API_VERSION {
            return Err(vfio_err(
                "VFIO_GET_API_VERSION",
                HostError::Fixture(format!("API version {v}, expected {VFIO_API_VERSION}")),
                "this kernel's VFIO is too different; update vm-device",
            ));
        }
        let type1 = host
            .vfio_check_extension(c, IommuType::Type1v2.raw())
            .map_err(|e| {
                vfio_err(
                    "VFIO_CHECK_EXTENSION(TYPE1v2)",
                    e,
                    "check `dmesg | grep -i vfio`",
                )
            })?;
        if type1 == 0 {
            return Err(vfio_err(
                "VFIO_CHECK_EXTENSION(TYPE1v2)",
                HostError::Module {
                    module: "vfio_iommu_type1".into(),
                    detail: "not loaded: containers offer no type1 IOMMU".into(),
                },
                "vfio_iommu_type1 is missing: `sudo modprobe vfio_iommu_type1` (and add it to /etc/modules-load.d/vfio.conf)",
            ));
        }
        let g = host.vfio_open_group(group).map_err(|e| {
            let remedy = match e.raw_os_error() {
                Some(EACCES) | Some(EPERM) => VFIO_PERMISSION_REMEDY.to_string(),
                Some(EBUSY) => format!(
                    "another process (a VMM?) has {node} open; find it with `fuser {node}`"
                ),
                Some(ENOENT) => format!(
                    "{node} does not exist: no device of group {group} is on vfio-pci; run `vm-cli gpu prepare`"
                ),
                _ => "check `dmesg | grep -i vfio`".to_string(),
            };
            vfio_err(format!("open {node}"), e, remedy)
        })?;
        self.group = Some(g);
        let status = host
            .vfio_group_status(g)
            .map_err(|e| vfio_err("VFIO_GROUP_GET_STATUS", e, "check `dmesg | grep -i vfio`"))?;
        if !status.viable {
            return Err(vfio_err(
                format!("VFIO_GROUP_GET_STATUS {node}"),
                HostError::errno("VFIO_GROUP_GET_STATUS", &node, EPERM),
                blockers_text(host, group),
            ));
        }
        host.vfio_group_set_container(g, c).map_err(|e| {
            let remedy = if e.raw_os_error() == Some(EPERM) {
                blockers_text(host, group)
            } else {
                "check `dmesg | grep -i vfio`".to_string()
            };
            vfio_err(format!("VFIO_GROUP_SET_CONTAINER {node}"), e, remedy)
        })?;
        host.vfio_set_iommu(c, IommuType::Type1v2).map_err(|e| {
            let remedy = if e.raw_os_error() == Some(ENODEV) {
                "vfio_iommu_type1 is missing: `sudo modprobe vfio_iommu_type1`".to_string()
            } else {
                "check `dmesg | grep -iE 'vfio|DMAR|AMD-Vi'`".to_string()
            };
            vfio_err("VFIO_SET_IOMMU(TYPE1v2)", e, remedy)
        })?;
        for addr in devices {
            let name = addr.to_string();
            let d = host.vfio_group_device(g, &name).map_err(|e| {
                vfio_err(
                    format!("VFIO_GROUP_GET_DEVICE_FD {name}"),
                    e,
                    format!("{name} must be a member of group {group} bound to vfio-pci"),
                )
            })?;
            let mut opened = OpenedDevice {
                address: *addr,
                info: DeviceInfo {
                    flags: 0,
                    num_regions: 0,
                    num_irqs: 0,
                },
                regions: Vec::new(),
                handle: Some(d),
            };
            self.devices.push(opened.clone());
            opened.info = host.vfio_device_info(d).map_err(|e| {
                vfio_err(
                    format!("VFIO_DEVICE_GET_INFO {name}"),
                    e,
                    "check `dmesg | grep -i vfio`",
                )
            })?;
            for index in 0..opened.info.num_regions {
                match host.vfio_region_info(d, index) {
                    Ok(r) => opened.regions.push(r),
                    // vfio-pci answers the VGA region only on VGA-class devices: EINVAL
                    // elsewhere (Linux 6.1, measured in the QEMU lab) means "no such region".
                    Err(e) if index == region::VGA && e.raw_os_error() == Some(22) => {}
                    Err(e) => {
                        return Err(vfio_err(
                            format!("VFIO_DEVICE_GET_REGION_INFO {name} region {index}"),
                            e,
                            "check `dmesg | grep -i vfio`",
                        ))
                    }
                }
            }
            if let Some(last) = self.devices.last_mut() {
                *last = opened;
            }
        }
        Ok(())
    }

    /// Closes every fd, devices first, then the group and the container.
    pub fn close(&mut self, host: &dyn HostOps) -> Result<(), PassthroughError> {
        let mut handles: Vec<VfioHandle> = Vec::new();
        if let Some(c) = self.container.take() {
            handles.push(c.into());
        }
        if let Some(g) = self.group.take() {
            handles.push(g.into());
        }
        for d in &mut self.devices {
            if let Some(h) = d.handle.take() {
                handles.push(h.into());
            }
        }
        let mut first = None;
        while let Some(h) = handles.pop() {
            if let Err(e) = host.vfio_close(h) {
                first.get_or_insert(vfio_err("close", e, "check `dmesg | grep -i vfio`"));
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// True while any fd is open.
    pub fn is_open(&self) -> bool {
        self.container.is_some()
            || self.group.is_some()
            || self.devices.iter().any(|d| d.handle.is_some())
    }
}

/// VFIO handles of a [`super::Prepared`] group; closes them on drop. Borrowing the prepared
/// handle keeps it from being released while a device fd is open.
pub struct VfioSession<'p> {
    pub(crate) host: &'p dyn HostOps,
    pub(crate) handles: VfioHandles,
}

impl VfioSession<'_> {
    /// The opened devices with their regions.
    pub fn devices(&self) -> &[OpenedDevice] {
        &self.handles.devices
    }

    /// Closes every fd now, reporting a failure.
    pub fn close(mut self) -> Result<(), PassthroughError> {
        self.handles.close(self.host)
    }
}

impl Drop for VfioSession<'_> {
    fn drop(&mut self) {
        if self.handles.is_open() {
            let _ = self.handles.close(self.host);
        }
    }
}
