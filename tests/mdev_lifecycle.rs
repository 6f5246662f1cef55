//! Creating and removing shared GPU slices on simulated hosts: mdevs on the QEMU lab's
//! sample parents, GVT-g and NVIDIA mdev vGPUs, NVIDIA vendor-VFIO vGPUs on VFs, SR-IOV.

mod mdev_common;

use mdev_common::*;
use vm_device::gpu_mdev::lifecycle::{self, ApplyOptions, CreateRequest, UuidSource};
use vm_device::gpu_mdev::{
    ids, scenario, Choice, GpuMdev, MdevError, MdevType, TypeRequest, Verified,
};
use vm_device::host::SimHost;
use vm_device::inventory::HostInventory;
use vm_device_host::prelude::*;

fn req(wanted: &str, parent: Option<&str>) -> CreateRequest {
    CreateRequest {
        ty: TypeRequest {
            wanted: wanted.into(),
            parent: parent.map(str::to_string),
            numa_node: None,
        },
        uuid: UuidSource::Random,
        persist: None,
    }
}

fn create(h: &SimHost, r: &CreateRequest) -> Result<String, MdevError> {
    lifecycle::create(h, r, &ApplyOptions::default()).map(|(p, _)| p.device)
}

#[test]
fn qemu_lab_round_trip_on_every_sample_parent_restores_the_tree() {
    let h = lab();
    let start = h.snapshot();
    let results = scenario::round_trip_every_parent(&h, "lab-vm");
    let parents: Vec<&str> = results.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(parents, ["mbochs", "mdpy", "mtty"]);
    for (parent, r) in results {
        let rt = r.unwrap_or_else(|e| panic!("{parent}: {e}"));
        assert!(rt.problems().is_empty(), "{parent}: {:?}", rt.problems());
        // Rule 30: the lowest free group above the lab's 0..=11.
        assert_eq!(rt.iommu_group, 12, "{parent}");
    }
    assert_eq!(h.snapshot(), start);
}

#[test]
fn created_mdev_is_verified_with_its_group_node_and_type() {
    let h = lab();
    let (planned, verified) =
        lifecycle::create(&h, &req("mbochs-small", None), &ApplyOptions::default()).unwrap();
    let uuid = planned.device.clone();
    assert_eq!(
        verified,
        vec![Verified::Mdev {
            uuid: uuid.clone(),
            type_id: "mbochs-small".into(),
            iommu_group: 12,
            vfio_group: "/dev/vfio/12".into(),
        }]
    );
    let inv = HostInventory::scan(&h);
    let d = inv.mdev_devices.iter().find(|d| d.uuid == uuid).unwrap();
    assert_eq!(d.parent, "mbochs");
    assert_eq!(d.type_id.as_deref(), Some("mbochs-small"));
    // Rule 29: the whole mbochs pool shrank, mdpy did not.
    let counts = scenario::counts(&h, "mbochs");
    assert_eq!(counts["mbochs-small"], 63);
    assert_eq!(counts["mbochs-large"], 3);
    assert_eq!(scenario::counts(&h, "mdpy")["mdpy-xga"], 4);
}

#[test]
fn gvtg_round_trip_restores_the_tree() {
    let h = host("intel-desktop-gvtg-dgpu");
    let start = h.snapshot();
    let rt = scenario::round_trip(
        &h,
        "0000:00:02.0",
        "i915-GVTg_V5_4",
        ids::for_vm("desktop", 0),
    )
    .unwrap();
    assert!(rt.problems().is_empty(), "{:?}", rt.problems());
    assert_eq!(h.snapshot(), start);
}

#[test]
fn nvidia_mdev_round_trip_by_name_restores_the_tree() {
    let h = host("bmc-datacenter-nvidia-vgpu");
    let start = h.snapshot();
    let uuid = create(&h, &req("grid t4-8q", None)).unwrap();
    let inv = HostInventory::scan(&h);
    let d = inv.mdev_devices.iter().find(|d| d.uuid == uuid).unwrap();
    assert_eq!(d.type_id.as_deref(), Some("nvidia-233"));
    // Least loaded first: 3b:00.0 and af:00.0 already run vGPUs; 5e:00.0 sorts before 86:00.0.
    assert_eq!(d.parent, "0000:5e:00.0");
    lifecycle::remove(&h, &uuid, &ApplyOptions::default()).unwrap();
    assert_eq!(h.snapshot(), start);
}

#[test]
fn nvidia_one_type_per_gpu_is_explained() {
    let h = host("bmc-datacenter-nvidia-vgpu");
    let err = create(&h, &req("nvidia-233", Some("0000:3b:00.0"))).unwrap_err();
    let MdevError::NoInstances { hint, .. } = &err else {
        panic!("{err}");
    };
    assert!(hint.contains("one vGPU type at a time"), "{hint}");
    assert!(hint.contains("nvidia-231"), "{hint}");
}

#[test]
fn type_by_name_picks_the_type_id() {
    let h = lab();
    let inv = HostInventory::scan(&h);
    let c = lifecycle::plan_create(&inv, &req("Dual port serial", None)).unwrap();
    assert!(
        matches!(&c.choice, Choice::Mdev { parent, type_id, mdev_type: MdevType::Other, .. } if parent == "mtty" && type_id == "mtty-2"),
        "{:?}",
        c.choice
    );
}

#[test]
fn unknown_type_suggests_the_closest() {
    let h = lab();
    let err = create(&h, &req("mbochs-lage", None)).unwrap_err();
    match &err {
        MdevError::TypeNotFound {
            did_you_mean,
            known,
            ..
        } => {
            assert_eq!(did_you_mean.as_deref(), Some("mbochs-large"));
            assert!(known.iter().any(|k| k == "mtty-2 (Dual port serial)"));
        }
        other => panic!("{other}"),
    }
}

#[test]
fn unknown_parent_lists_the_parents() {
    let h = lab();
    let err = create(&h, &req("mbochs-small", Some("mbochz"))).unwrap_err();
    assert!(
        matches!(&err, MdevError::ParentNotFound { known, .. } if known == &["mbochs", "mdpy", "mtty"]),
        "{err}"
    );
}

#[test]
fn vm_derived_uuid_gives_a_restarted_vm_the_same_device() {
    let h = lab();
    let mut r = req("mdpy-vga", None);
    r.uuid = UuidSource::Vm {
        name: "web-1".into(),
        index: 2,
    };
    let first = create(&h, &r).unwrap();
    assert_eq!(first, ids::for_vm("web-1", 2).to_string());
    // While it exists, the same VM cannot get a second one with that UUID.
    assert!(matches!(create(&h, &r), Err(MdevError::UuidInUse { .. })));
    lifecycle::remove(&h, &first, &ApplyOptions::default()).unwrap();
    assert_eq!(create(&h, &r).unwrap(), first);
}

#[test]
fn exhausting_mbochs_large_fills_the_pool_and_removal_restores_it() {
    let h = lab();
    let start = h.snapshot();
    let ex = scenario::exhaust(&h, "mbochs", "mbochs-large", "fill", 8).unwrap();
    assert_eq!(ex.advertised, 4);
    assert_eq!(ex.created, 4);
    // vm-device refuses before the kernel: available_instances read 0, and four 64 MB
    // devices used the whole 256 MB pool, so no mbochs type has room.
    assert_eq!(ex.kernel_errno, None);
    assert!(
        ex.refusal.contains("no type of these parents has room"),
        "{}",
        ex.refusal
    );
    assert_eq!(ex.after, ex.before);
    assert_eq!(h.snapshot(), start);
}

#[test]
fn no_instances_lists_the_types_that_still_have_room() {
    let h = lab();
    for t in [
        "mbochs-large",
        "mbochs-large",
        "mbochs-large",
        "mbochs-medium",
    ] {
        create(&h, &req(t, None)).unwrap();
    }
    // 48 MB left: no large (64 MB), three medium (16 MB), twelve small (4 MB).
    let err = create(&h, &req("mbochs-large", None)).unwrap_err();
    let MdevError::NoInstances { hint, parents, .. } = &err else {
        panic!("{err}");
    };
    assert_eq!(parents, &["mbochs"]);
    assert_eq!(
        hint,
        "types that still have room: mbochs-medium on mbochs (3 left), mbochs-small on mbochs (12 left)"
    );
}

#[test]
fn kernel_refusals_name_the_errno() {
    use vm_device::gpu_mdev::{execute, Action, MdevPlan};
    let h = lab();
    for _ in 0..4 {
        create(&h, &req("mdpy-hd", None)).unwrap();
    }
    // Bypass vm-device's own check to hear the kernel: mdpy answers EUSERS (rule 28).
    let mut plan = MdevPlan::new("test", "mdev-mdpy");
    plan.push(
        Action::Write {
            path: "/sys/class/mdev_bus/mdpy/mdev_supported_types/mdpy-vga/create".into(),
            value: ids::random().to_string(),
        },
        None,
        "mdpy",
        "test",
    );
    let err = execute(&h, &plan, &ApplyOptions::default()).unwrap_err();
    assert_eq!(err.errno(), Some(EUSERS));
    assert!(err.to_string().contains("EUSERS"), "{err}");
    assert!(err.undone());
}

#[test]
fn given_uuid_is_used_lower_case_and_bad_ones_refused() {
    let h = lab();
    let mut r = req("mtty-1", None);
    r.uuid = UuidSource::Given("5E5E5E5E-0000-4000-8000-00000000000C".into());
    assert_eq!(
        create(&h, &r).unwrap(),
        "5e5e5e5e-0000-4000-8000-00000000000c"
    );
    r.uuid = UuidSource::Given("not-a-uuid".into());
    assert!(matches!(create(&h, &r), Err(MdevError::BadUuid(_))));
}

#[test]
fn product_guide_gpu_mdev_on_a_pci_parent_and_a_named_one() {
    let h: std::sync::Arc<dyn HostOps> = std::sync::Arc::new(host("intel-desktop-gvtg-dgpu"));
    let inv = HostInventory::scan(h.as_ref());
    let gpus = vm_device::gpu_mdev::mdev_capable_of(&inv);
    let (address, configs) = &gpus[0];
    let config = configs.iter().find(|c| c.available_instances > 0).unwrap();
    let mut mdev = GpuMdev::new(*address, config.mdev_type, config.type_id.clone())
        .with_host(h.clone())
        .with_options(ApplyOptions::default());
    assert_eq!(mdev.get_uuid(), None);
    mdev.create().unwrap();
    let uuid = mdev.get_uuid().unwrap();
    assert!(h.is_dir(&mdev.sysfs_path().unwrap()));
    assert_eq!(config.mdev_type, MdevType::IntelGvtg);
    mdev.remove().unwrap();
    assert!(!h.exists(std::path::Path::new(&format!(
        "/sys/bus/mdev/devices/{uuid}"
    ))));

    let lab: std::sync::Arc<dyn HostOps> = std::sync::Arc::new(lab());
    let mut m = GpuMdev::for_parent("mtty", MdevType::Other, "mtty-2".into())
        .with_host(lab.clone())
        .with_options(ApplyOptions::default())
        .for_vm("serial-vm", 0);
    m.create().unwrap();
    assert_eq!(m.get_uuid(), Some(ids::for_vm("serial-vm", 0)));
    m.remove().unwrap();
}

#[test]
fn nvidia_vendor_vfio_round_trip_restores_the_tree() {
    let h = host("sriov-pf-with-vfs");
    let start = h.snapshot();
    let (planned, verified) = lifecycle::create(
        &h,
        &req("NVIDIA L4-8Q", Some("0000:41:00.0")),
        &ApplyOptions::default(),
    )
    .unwrap();
    let Choice::NvidiaVfio { vf, type_id, .. } = planned.choice else {
        panic!("{:?}", planned.choice);
    };
    assert_eq!(type_id, 1158);
    assert_eq!(planned.device, vf.to_string());
    assert!(verified
        .iter()
        .any(|v| matches!(v, Verified::NvidiaType { type_id: 1158, .. })));
    let cur = h
        .read_attr(std::path::Path::new(&format!(
            "/sys/bus/pci/devices/{vf}/nvidia/current_vgpu_type"
        )))
        .unwrap();
    assert_eq!(cur.trim(), "1158");
    lifecycle::remove(&h, &vf.to_string(), &ApplyOptions::default()).unwrap();
    assert_eq!(h.snapshot(), start);
}

#[test]
fn sriov_enable_then_disable_restores_the_tree() {
    let h = host("intel-flex-sriov-idle");
    let start = h.snapshot();
    let pf = "0000:4b:00.0".parse().unwrap();
    let (_, verified) = lifecycle::set_num_vfs(&h, &pf, 3, &ApplyOptions::default()).unwrap();
    let Some(Verified::Vfs { vfs }) = verified.last() else {
        panic!("{verified:?}");
    };
    assert_eq!(vfs.len(), 3);
    // VFs are passthrough candidates of the mediated rung once they exist.
    let inv = HostInventory::scan(&h);
    assert_eq!(
        inv.function(&pf).unwrap().sriov.as_ref().unwrap().vfs.len(),
        3
    );
    // Changing a non-zero count goes through 0.
    let (plan, _) = lifecycle::set_num_vfs(&h, &pf, 2, &ApplyOptions::default()).unwrap();
    let writes: Vec<String> = plan
        .plan
        .steps
        .iter()
        .filter_map(|s| match &s.action {
            vm_device::gpu_mdev::Action::Write { value, .. } => Some(value.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(writes, ["0", "2"]);
    lifecycle::set_num_vfs(&h, &pf, 0, &ApplyOptions::default()).unwrap();
    assert_eq!(h.snapshot(), start);
}

#[test]
fn sriov_beyond_totalvfs_is_refused_before_the_host() {
    let h = host("intel-flex-sriov-idle");
    let pf = "0000:4b:00.0".parse().unwrap();
    h.clear_ops();
    let err = lifecycle::set_num_vfs(&h, &pf, 32, &ApplyOptions::default()).unwrap_err();
    assert!(err.to_string().contains("sriov_totalvfs is 31"), "{err}");
    assert!(!h
        .ops()
        .iter()
        .any(|o| matches!(o, vm_device_sim::Op::Write(..))));
}

#[test]
fn numa_node_preference_picks_a_parent_on_that_node() {
    let h = host("bmc-datacenter-nvidia-vgpu");
    let inv = HostInventory::scan(&h);
    let mut r = req("GRID T4-1Q", None);
    r.ty.numa_node = Some(1);
    let p = lifecycle::plan_create(&inv, &r).unwrap();
    // 86:00.0 is the free T4 on node 1 (af:00.0 runs T4-8Q, so T4-1Q reads 0 there).
    assert!(
        matches!(&p.choice, Choice::Mdev { parent, .. } if parent == "0000:86:00.0"),
        "{:?}",
        p.choice
    );
    // A node with no parent that has room falls back to any node.
    r.ty.numa_node = Some(7);
    let p = lifecycle::plan_create(&inv, &r).unwrap();
    assert!(
        matches!(&p.choice, Choice::Mdev { parent, .. } if parent == "0000:5e:00.0"),
        "{:?}",
        p.choice
    );
}

#[test]
fn missing_vendor_module_is_named_with_the_modprobe_to_run() {
    // An i915 iGPU without GVT-g: kvmgt is not loaded, so there is no mdev type.
    let h = host("gpu-on-vfio-pci");
    let start = h.snapshot();
    let err = create(&h, &req("i915-GVTg_V5_4", None)).unwrap_err();
    assert!(
        matches!(&err, MdevError::ModuleNotLoaded { device, module } if device == "0000:00:02.0" && module == "kvmgt"),
        "{err}"
    );
    assert!(err.to_string().contains("sudo modprobe kvmgt"), "{err}");
    assert_eq!(h.snapshot(), start);
}

#[test]
fn removing_an_unknown_device_changes_nothing() {
    let h = lab();
    let start = h.snapshot();
    let err = lifecycle::remove(
        &h,
        "5e5e5e5e-0000-4000-8000-0000000000ff",
        &ApplyOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(err, MdevError::NoSuchDevice(_)), "{err}");
    assert_eq!(h.snapshot(), start);
}

#[test]
fn every_available_mediated_candidate_of_the_rung_can_be_created() {
    use vm_device::ladder::Filter;
    use vm_device::rungs::mdev::probe;
    for name in [
        "bmc-datacenter-nvidia-vgpu",
        "sriov-pf-with-vfs",
        "intel-desktop-gvtg-dgpu",
    ] {
        let h = host(name);
        let start = h.snapshot();
        let inv = HostInventory::scan(&h);
        let mut made = 0;
        for c in probe(&inv, &Filter::default())
            .iter()
            .filter(|c| c.is_available())
        {
            let Some(r) = lifecycle::request_for_target(&c.target, UuidSource::Random) else {
                continue;
            };
            let (p, _) = lifecycle::create(&h, &r, &ApplyOptions::default())
                .unwrap_or_else(|e| panic!("{name}: {:?}: {e}", c.target));
            lifecycle::remove(&h, &p.device, &ApplyOptions::default()).unwrap();
            made += 1;
        }
        assert!(made > 0, "{name}");
        assert_eq!(h.snapshot(), start, "{name}");
    }
}

#[test]
fn kernel_answers_to_create_beyond_capacity_and_for_a_used_uuid() {
    let h = lab();
    let start = h.snapshot();
    let answer = |parent: &str, ty: &str, u: uuid::Uuid| {
        scenario::kernel_answer_to_create(&h, parent, ty, u).unwrap()
    };
    assert_eq!(answer("mtty", "mtty-1", ids::random()), None);
    assert_eq!(h.snapshot(), start);
    let ex = |parent: &str, ty: &str| {
        let mut made = Vec::new();
        while scenario::counts(&h, parent)[ty] > 0 {
            let mut r = req(ty, Some(parent));
            r.uuid = UuidSource::Vm {
                name: format!("full-{parent}"),
                index: made.len() as u32,
            };
            made.push(create(&h, &r).unwrap());
        }
        made
    };
    let mdpy = ex("mdpy", "mdpy-vga");
    assert_eq!(answer("mdpy", "mdpy-hd", ids::random()), Some(EUSERS));
    let mbochs = ex("mbochs", "mbochs-large");
    assert_eq!(
        answer("mbochs", "mbochs-small", ids::random()),
        Some(ENOSPC)
    );
    let used: uuid::Uuid = mdpy[0].parse().unwrap();
    assert_eq!(answer("mtty", "mtty-2", used), Some(EEXIST));
    for u in mdpy.iter().chain(&mbochs) {
        lifecycle::remove(&h, u, &ApplyOptions::default()).unwrap();
    }
    assert_eq!(h.snapshot(), start);
}
