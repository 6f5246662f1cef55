//! Passthrough prepare/release on every fixture that shows a behaviour: the scenarios of
//! `gpu_passthrough::scenario` (which the real-kernel harness runs too) plus, on the
//! simulator, a byte-for-byte comparison of the whole host tree before and after.

mod common;

use std::path::Path;

use vm_device::gpu_manager::ReasonCode;
use vm_device::gpu_passthrough::{prepare, scenario, PassthroughError, PrepareOptions};
use vm_device::host::SimHost;
use vm_device_host::PciAddress;

const Q35: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/real/qemu-q35-viommu");

fn fixture(name: &str) -> String {
    format!("{}/fixtures/hosts/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn a(s: &str) -> PciAddress {
    s.parse().unwrap()
}

fn host(dir: &str) -> SimHost {
    SimHost::from_fixture(dir).unwrap()
}

fn ok(r: scenario::ScenarioResult) -> Vec<String> {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `f` and asserts the host tree is byte-for-byte what it was.
fn unchanged(host: &SimHost, f: impl FnOnce(&SimHost, &Path)) {
    unchanged_but(host, |_| false, f)
}

/// As [`unchanged`], ignoring paths `exempt` says the simulator cannot restore.
fn unchanged_but(host: &SimHost, exempt: impl Fn(&Path) -> bool, f: impl FnOnce(&SimHost, &Path)) {
    let state = tempfile::tempdir().unwrap();
    let before = host.snapshot();
    f(host, state.path());
    let after = host.snapshot();
    let diff: Vec<String> = before
        .iter()
        .filter(|(k, _)| !exempt(k))
        .filter(|(k, v)| after.get(*k) != Some(v))
        .map(|(k, _)| format!("changed or gone: {}", k.display()))
        .chain(
            after
                .keys()
                .filter(|k| !before.contains_key(*k))
                .map(|k| format!("new: {}", k.display())),
        )
        .collect();
    assert!(diff.is_empty(), "host tree differs:\n{}", diff.join("\n"));
}

#[test]
fn q35_bochs_display_alone_in_its_group_round_trips() {
    let h = host(Q35);
    unchanged(&h, |h, s| {
        ok(scenario::round_trip(h, s, &a("0000:01:00.0")));
    });
}

#[test]
fn q35_shared_group_pair_moves_together_whichever_is_named() {
    for target in ["0000:06:01.0", "0000:06:02.0"] {
        let h = host(Q35);
        unchanged(&h, |h, s| {
            let p = prepare(
                h,
                &a(target),
                &PrepareOptions {
                    allow_boot_vga: false,
                    state_dir: s.to_path_buf(),
                },
            )
            .unwrap_or_else(|e| panic!("{e}"));
            let moved: Vec<String> = p
                .plan()
                .moved
                .iter()
                .map(|m| m.address.to_string())
                .collect();
            assert_eq!(moved.len(), 2, "{moved:?}");
            assert!(moved.contains(&"0000:06:01.0".to_string()));
            assert!(moved.contains(&"0000:06:02.0".to_string()));
            assert!(
                !moved.contains(&"0000:05:00.0".to_string()),
                "the bridge stays"
            );
            p.release().unwrap();
        });
    }
}

#[test]
fn q35_boot_vga_is_refused_and_allowed_with_the_override() {
    let h = host(Q35);
    unchanged(&h, |h, s| {
        ok(scenario::boot_vga_override(h, s, &a("0000:02:00.0")));
    });
}

#[test]
fn q35_two_prepares_of_one_group_one_wins_one_is_told_who_holds_it() {
    let h = host(Q35);
    unchanged(&h, |h, s| {
        let notes = ok(scenario::concurrent_prepare(
            h,
            s,
            &a("0000:06:01.0"),
            &a("0000:06:02.0"),
        ));
        assert!(notes[0].contains("group 11"), "{notes:?}");
        assert!(
            notes[0].contains(&std::process::id().to_string()),
            "{notes:?}"
        );
    });
}

#[test]
fn q35_non_gpu_and_unknown_devices_are_refused() {
    let h = host(Q35);
    unchanged(&h, |h, s| {
        ok(scenario::refused_with(
            h,
            s,
            &a("0000:00:1f.2"),
            ReasonCode::DeviceNotFound,
        ));
        ok(scenario::refused_with(
            h,
            s,
            &a("0000:0a:00.0"),
            ReasonCode::DeviceNotFound,
        ));
    });
}

#[test]
fn desktop_dgpu_takes_its_hdmi_audio_along() {
    let h = host(&fixture("intel-desktop-gvtg-dgpu"));
    unchanged_but(&h, common::sim_drm_node_file, |h, s| {
        ok(scenario::companion_moves_too(
            h,
            s,
            &a("0000:01:00.0"),
            &a("0000:01:00.1"),
        ));
        ok(scenario::round_trip(h, s, &a("0000:01:00.0")));
    });
}

#[test]
fn amd_workstation_spare_gpu_round_trips() {
    let h = host(&fixture("amd-vi-workstation"));
    unchanged_but(&h, common::sim_drm_node_file, |h, s| {
        ok(scenario::round_trip(h, s, &a("0000:0c:00.0")));
    });
}

#[test]
fn shared_group_with_host_nic_and_sata_is_refused_naming_their_drivers() {
    let h = host(&fixture("shared-group-host-devices"));
    unchanged(&h, |h, s| {
        let notes = ok(scenario::refused_with(
            h,
            s,
            &a("0000:04:00.0"),
            ReasonCode::GroupNotViable,
        ));
        let text = notes.join("\n");
        assert!(text.contains("r8169"), "{text}");
        assert!(text.contains("ahci"), "{text}");
    });
}

#[test]
fn gpu_already_on_vfio_pci_is_a_no_op_with_nothing_to_restore() {
    let h = host(&fixture("gpu-on-vfio-pci"));
    unchanged(&h, |h, s| {
        ok(scenario::already_on_vfio(h, s, &a("0000:01:00.0")));
    });
}

#[test]
fn single_boot_gpu_is_refused_without_the_override() {
    let h = host(&fixture("single-gpu-boot-display"));
    unchanged(&h, |h, s| {
        ok(scenario::refused_with(
            h,
            s,
            &a("0000:01:00.0"),
            ReasonCode::BootDisplay,
        ));
    });
}

#[test]
fn iommu_off_is_refused_with_the_kernel_parameters_to_add() {
    let h = host(&fixture("intel-iommu-off"));
    let gpus = vm_device::gpu_passthrough::scan_available_gpus_on(&h);
    let gpu = gpus.first().expect("the fixture has a GPU").pci_address;
    let state = tempfile::tempdir().unwrap();
    let err = prepare(
        &h,
        &gpu,
        &PrepareOptions {
            allow_boot_vga: true,
            state_dir: state.path().into(),
        },
    )
    .unwrap_err();
    match &err {
        PassthroughError::Refused { reasons, .. } => {
            assert_eq!(reasons[0].code, ReasonCode::IommuDisabled);
            assert!(reasons[0]
                .remedy
                .as_deref()
                .unwrap()
                .contains("intel_iommu=on"));
        }
        other => panic!("expected a refusal, got {other}"),
    }
}

#[test]
fn a_gpu_held_open_by_a_host_process_is_refused_naming_pid_and_program() {
    let tree = tempfile::tempdir().unwrap();
    vm_device_sim::copy_fixture(Path::new(Q35), tree.path()).unwrap();
    let fd = tree.path().join("proc/4242/fd");
    std::fs::create_dir_all(&fd).unwrap();
    std::os::unix::fs::symlink("/dev/dri/card0", fd.join("7")).unwrap();
    std::fs::write(tree.path().join("proc/4242/comm"), "Xorg\n").unwrap();
    let h = SimHost::from_fixture(tree.path()).unwrap();
    unchanged(&h, |h, s| {
        let notes = ok(scenario::refused_with(
            h,
            s,
            &a("0000:01:00.0"),
            ReasonCode::HeldOpen,
        ));
        let text = notes.join("\n");
        assert!(text.contains("pid 4242 (Xorg)"), "{text}");
        assert!(text.contains("/dev/dri/card0"), "{text}");
    });
}

#[test]
fn an_unbound_gpu_gets_only_override_and_probe_and_goes_back_to_no_driver() {
    let tree = tempfile::tempdir().unwrap();
    vm_device_sim::copy_fixture(Path::new(Q35), tree.path()).unwrap();
    let dev = tree
        .path()
        .join("sys/devices/pci0000:00/0000:00:02.0/0000:01:00.0");
    std::fs::remove_file(dev.join("driver")).unwrap();
    std::fs::remove_file(
        tree.path()
            .join("sys/bus/pci/drivers/bochs-drm/0000:01:00.0"),
    )
    .unwrap();
    std::fs::write(dev.join("enable"), "0\n").unwrap();
    let empty = tree.path().join(".fixture/empty-dirs");
    let kept: String = std::fs::read_to_string(&empty)
        .unwrap()
        .lines()
        .filter(|l| !l.contains("0000:01:00.0/drm"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&empty, kept).unwrap();
    let _ = std::fs::remove_dir_all(dev.join("drm"));
    let h = SimHost::from_fixture(tree.path()).unwrap();
    unchanged(&h, |h, s| {
        let p = prepare(
            h,
            &a("0000:01:00.0"),
            &PrepareOptions {
                allow_boot_vga: false,
                state_dir: s.to_path_buf(),
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.plan().plan.changes(), 2, "{}", p.plan().plan.to_text());
        assert_eq!(p.plan().moved[0].driver, None);
        p.release().unwrap();
    });
}
