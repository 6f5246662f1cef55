//! Ownership of prepared groups: a live owner's group is busy for everyone else; a dead
//! owner's journal is reclaimed by the next prepare or by restore; a group prepared on
//! purpose (`vm-cli gpu prepare`, detached) survives restore and is given back by release.

use vm_device::gpu_passthrough::{holders, prepare, release, restore, PrepareOptions};
use vm_device::host::SimHost;
use vm_device::plan::{JournalState, OwnerStatus};
use vm_device_host::PciAddress;
use vm_device_sim::faults::{Fault, FaultPlan};

const Q35: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/real/qemu-q35-viommu");

fn a(s: &str) -> PciAddress {
    s.parse().unwrap()
}

fn opts(dir: &std::path::Path) -> PrepareOptions {
    PrepareOptions {
        allow_boot_vga: false,
        state_dir: dir.to_path_buf(),
    }
}

#[test]
fn a_dead_owners_group_is_reclaimed_by_the_next_prepare() {
    let h = SimHost::from_fixture(Q35).unwrap();
    let before = h.snapshot();
    let state = tempfile::tempdir().unwrap();
    // Killed right after its second write (override set, probe not yet done).
    h.set_faults(FaultPlan::new().rule(Fault::write("").nth(2).die_after()));
    assert!(prepare(&h, &a("0000:06:01.0"), &opts(state.path())).is_err());
    let reborn = h.fork();
    let held = holders(&reborn, state.path());
    assert_eq!(held.len(), 1);
    assert!(held[0].stale(), "{held:?}");
    assert!(!held[0].locked);
    // The owner is read from this machine's /proc (journals are vm-device's own state, not
    // the simulated host's): the simulated process that "died" is this test process.
    assert_eq!(held[0].owner_status, OwnerStatus::Alive);
    assert_eq!(held[0].state, JournalState::Undoing);

    let p = prepare(&reborn, &a("0000:06:02.0"), &opts(state.path()))
        .unwrap_or_else(|e| panic!("reclaim failed: {e}"));
    assert_eq!(p.plan().moved.len(), 2);
    p.release().unwrap();
    assert_eq!(reborn.snapshot(), before);
    assert!(holders(&reborn, state.path()).is_empty());
}

#[test]
fn a_detached_group_survives_restore_and_is_given_back_by_release() {
    let h = SimHost::from_fixture(Q35).unwrap();
    let before = h.snapshot();
    let state = tempfile::tempdir().unwrap();
    let journal = prepare(&h, &a("0000:01:00.0"), &opts(state.path()))
        .unwrap()
        .detach()
        .unwrap();
    assert!(journal.exists());
    let held = holders(&h, state.path());
    assert!(
        held[0].detached && !held[0].locked && !held[0].stale(),
        "{held:?}"
    );

    let r = restore(&h, state.path());
    assert!(r.complete());
    assert!(journal.exists(), "restore leaves a detached group alone");
    assert_ne!(h.snapshot(), before);

    let again = prepare(&h, &a("0000:01:00.0"), &opts(state.path()));
    assert!(
        matches!(again, Err(ref e) if e.is_refusal()),
        "a second prepare is told the group is held: {again:?}"
    );

    let report = release(&h, &a("0000:01:00.0"), state.path()).unwrap();
    assert_eq!(report.undone.len(), 3);
    assert!(!journal.exists());
    assert_eq!(h.snapshot(), before);
}

#[test]
fn release_of_a_group_a_live_handle_holds_is_refused() {
    let h = SimHost::from_fixture(Q35).unwrap();
    let state = tempfile::tempdir().unwrap();
    let p = prepare(&h, &a("0000:01:00.0"), &opts(state.path())).unwrap();
    let e = release(&h, &a("0000:01:00.0"), state.path()).unwrap_err();
    assert!(e.is_refusal(), "{e}");
    assert!(e.to_string().contains("still running"), "{e}");
    let r = restore(&h, state.path());
    assert!(r.complete());
    assert!(
        p.journal_path().exists(),
        "restore leaves a live owner alone"
    );
    p.release().unwrap();
}

#[test]
fn releasing_what_was_never_prepared_says_so() {
    let h = SimHost::from_fixture(Q35).unwrap();
    let state = tempfile::tempdir().unwrap();
    let e = release(&h, &a("0000:01:00.0"), state.path()).unwrap_err();
    assert!(e.to_string().contains("not prepared"), "{e}");
}
