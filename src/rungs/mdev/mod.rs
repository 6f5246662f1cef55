//! The mediated rung: mdev types (GVT-g, NVIDIA vGPU, the kernel's mbochs/mdpy/mtty
//! samples), SR-IOV virtual functions and NVIDIA's vendor-VFIO vGPU.
//!
//! - [`types`]: one model for every shareable type (`mdev_supported_types/T` and a VF's
//!   `nvidia/creatable_vgpu_types`), type choice by id or name with a did-you-mean, parent
//!   choice (free instance, NUMA node asked for, least loaded).
//! - [`lifecycle`]: pure plans for create (UUID random, given, or v5 of a VM name and
//!   index), remove, `sriov_numvfs` and vendor-VFIO `current_vgpu_type`; [`lifecycle::apply`]
//!   runs them through [`crate::plan`]'s executor, journal and locks, so a failure is undone
//!   and a killed process is restored like a passthrough prepare.
//! - [`persist`]: mdevctl definitions (`/etc/mdevctl.d/PARENT/UUID`) for `--persist`.
//! - [`verify`]: what the kernel made (group, `/dev/vfio/N`, VFs), reported after a change.
//! - [`scenario`]: round trips and capacity probes the real-kernel harness runs on any
//!   [`HostOps`].
//! - [`GpuMdev`]: the product guide's handle (`new`, `create`, `get_uuid`, `remove`).

pub mod error;
pub mod ids;
pub mod lifecycle;
pub mod persist;
pub mod plan;
pub mod probe;
pub mod render;
#[cfg(feature = "test-support")]
pub mod scenario;
pub mod types;
pub mod verify;

use std::path::PathBuf;

use uuid::Uuid;
use vm_device_host::PciAddress;

use crate::host::{self, Host, HostOps};
use crate::inventory::{HostInventory, MdevParent};

pub use error::{errno_name, MdevError};
pub use lifecycle::{
    plan_create, plan_remove, plan_sriov, ApplyOptions, CreateRequest, Persist, Planned, UuidSource,
};
pub use persist::{DeviceRow, MdevctlConfig, StartMode};
pub use plan::{execute, Action, Check, Expectation, MdevPlan, Plan, Step};
pub use probe::probe;
pub use types::{Backend, Choice, TypeRequest, TypeRow};
pub use verify::Verified;

/// The sharing technology behind an mdev type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum MdevType {
    /// Intel GVT-g (`i915-GVTg_*`).
    IntelGvtg,
    /// NVIDIA vGPU on the mdev bus (`nvidia-NNN`).
    NvidiaVgpu,
    /// AMD MxGPU.
    AmdMxgpu,
    /// The kernel's sample drivers (mbochs, mdpy, mtty) and anything else.
    Other,
}

impl MdevType {
    /// Classifies a type by its parent's driver and its id.
    pub fn classify(parent_driver: Option<&str>, type_id: &str) -> Self {
        if type_id.starts_with("i915-") {
            MdevType::IntelGvtg
        } else if type_id.starts_with("nvidia-") || parent_driver == Some("nvidia") {
            MdevType::NvidiaVgpu
        } else if matches!(parent_driver, Some("amdgpu") | Some("gim")) {
            MdevType::AmdMxgpu
        } else {
            MdevType::Other
        }
    }
}

/// One creatable type of a parent (the product guide's `config`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MdevConfig {
    /// Human name (`GRID T4-1Q`, or the id when the driver gives no name).
    pub name: String,
    /// Type id (`nvidia-222`).
    pub type_id: String,
    /// Instances that can still be created.
    pub available_instances: u32,
    /// The technology.
    pub mdev_type: MdevType,
    /// `description`, when given.
    pub description: Option<String>,
}

fn configs(p: &MdevParent) -> Vec<MdevConfig> {
    p.types
        .iter()
        .map(|t| MdevConfig {
            name: t.name.clone().unwrap_or_else(|| t.id.clone()),
            type_id: t.id.clone(),
            available_instances: t.available_instances.unwrap_or(0),
            mdev_type: MdevType::classify(p.driver.as_deref(), &t.id),
            description: t.description.clone(),
        })
        .collect()
}

/// PCI GPUs that parent mdev types, with their types, on the default host.
pub fn scan_mdev_capable_gpus() -> Vec<(PciAddress, Vec<MdevConfig>)> {
    scan_mdev_capable_gpus_on(host::default_host().as_ref())
}

/// PCI GPUs that parent mdev types, with their types, on `host`.
pub fn scan_mdev_capable_gpus_on(host: &dyn HostOps) -> Vec<(PciAddress, Vec<MdevConfig>)> {
    mdev_capable_of(&HostInventory::scan(host))
}

/// PCI mdev parents of a scanned inventory (non-PCI parents such as mbochs are in
/// `HostInventory::mdev_parents`).
pub fn mdev_capable_of(inv: &HostInventory) -> Vec<(PciAddress, Vec<MdevConfig>)> {
    inv.mdev_parents
        .iter()
        .filter_map(|p| Some((p.pci_address?, configs(p))))
        .collect()
}

/// One mediated device of the product guide: `GpuMdev::new(address, mdev_type, type_id)`,
/// `create()`, `get_uuid()`, `remove()`.
///
/// ```no_run
/// use vm_device::gpu_mdev::{scan_mdev_capable_gpus, GpuMdev};
/// let gpus = scan_mdev_capable_gpus();
/// if let Some((address, configs)) = gpus.first() {
///     let config = &configs[0];
///     let mut mdev = GpuMdev::new(*address, config.mdev_type, config.type_id.clone());
///     mdev.create().expect("create mdev");
///     println!("{}", mdev.get_uuid().unwrap());
/// }
/// ```
pub struct GpuMdev {
    host: Host,
    parent: String,
    mdev_type: MdevType,
    type_id: String,
    uuid_source: UuidSource,
    persist: Option<Persist>,
    options: ApplyOptions,
    created: Option<Planned>,
}

impl std::fmt::Debug for GpuMdev {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuMdev")
            .field("parent", &self.parent)
            .field("mdev_type", &self.mdev_type)
            .field("type_id", &self.type_id)
            .field("device", &self.created.as_ref().map(|c| &c.device))
            .finish()
    }
}

impl GpuMdev {
    /// A device of type `type_id` on the PCI GPU `address` (an mdev parent, or an NVIDIA
    /// vendor-VFIO PF or VF), on the default host (`VM_HOST_ROOT` or this machine).
    pub fn new(address: PciAddress, mdev_type: MdevType, type_id: String) -> Self {
        Self::for_parent(&address.to_string(), mdev_type, type_id)
    }

    /// A device on a parent named as `/sys/class/mdev_bus` names it; non-PCI parents such as
    /// the kernel's `mbochs`, `mdpy` and `mtty` samples are named this way.
    pub fn for_parent(parent: &str, mdev_type: MdevType, type_id: String) -> Self {
        GpuMdev {
            host: host::default_host(),
            parent: parent.to_string(),
            mdev_type,
            type_id,
            uuid_source: UuidSource::Random,
            persist: None,
            // On a real host, journal where `restore` looks; a simulated one (VM_HOST_ROOT)
            // uses a scratch directory. `with_options` overrides either.
            options: ApplyOptions {
                state_dir: std::env::var_os("VM_HOST_ROOT")
                    .is_none_or(|v| v.is_empty())
                    .then(crate::plan::default_state_dir),
            },
            created: None,
        }
    }

    /// Uses `host` instead of the default host.
    pub fn with_host(mut self, host: Host) -> Self {
        self.host = host;
        self
    }

    /// Derives the UUID from a VM name and device index, so a restarted VM gets the same
    /// device back.
    pub fn for_vm(mut self, vm_name: &str, index: u32) -> Self {
        self.uuid_source = UuidSource::Vm {
            name: vm_name.to_string(),
            index,
        };
        self
    }

    /// Writes an mdevctl definition under `config_root` (`/` on a real host) on create.
    pub fn persist(mut self, start: StartMode, config_root: impl Into<PathBuf>) -> Self {
        self.persist = Some(Persist {
            start,
            config_root: config_root.into(),
        });
        self
    }

    /// Where the journal and lock go.
    pub fn with_options(mut self, options: ApplyOptions) -> Self {
        self.options = options;
        self
    }

    /// The technology given at construction.
    pub fn mdev_type(&self) -> MdevType {
        self.mdev_type
    }

    fn request(&self) -> CreateRequest {
        CreateRequest {
            ty: TypeRequest {
                wanted: self.type_id.clone(),
                parent: Some(self.parent.clone()),
                numa_node: None,
            },
            uuid: self.uuid_source.clone(),
            persist: self.persist.clone(),
        }
    }

    /// The plan `create` would run, without running it.
    pub fn plan(&self) -> Result<Planned, MdevError> {
        plan_create(&HostInventory::scan(self.host.as_ref()), &self.request())
    }

    /// Creates the device; on any failure the host is put back as it was.
    pub fn create(&mut self) -> Result<(), MdevError> {
        if let Some(c) = &self.created {
            return Err(MdevError::UuidInUse {
                uuid: c.device.clone(),
                existing_type: self.type_id.clone(),
            });
        }
        let (planned, _) = lifecycle::create(self.host.as_ref(), &self.request(), &self.options)?;
        self.created = Some(planned);
        Ok(())
    }

    /// The UUID of the created mdev (`None` before `create`, and for vendor-VFIO vGPUs,
    /// which are named by their VF: see [`GpuMdev::device`]).
    pub fn get_uuid(&self) -> Option<Uuid> {
        Uuid::parse_str(&self.created.as_ref()?.device).ok()
    }

    /// The created device: mdev UUID or VF address.
    pub fn device(&self) -> Option<&str> {
        self.created.as_ref().map(|c| c.device.as_str())
    }

    /// Its sysfs directory (what QEMU's `vfio-pci,sysfsdev=` takes).
    pub fn sysfs_path(&self) -> Option<PathBuf> {
        self.created.as_ref().map(|c| c.sysfs_path.clone())
    }

    /// Removes the created device.
    pub fn remove(&mut self) -> Result<(), MdevError> {
        let Some(c) = &self.created else {
            return Err(MdevError::NoSuchDevice(
                "(this GpuMdev created nothing yet)".into(),
            ));
        };
        lifecycle::remove(self.host.as_ref(), &c.device, &self.options)?;
        self.created = None;
        Ok(())
    }
}
