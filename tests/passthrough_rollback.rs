//! Crash safety of prepare and release: for every fault point of every plan on every
//! fixture — each host write and module load failing with the kernel's errnos, hanging, or
//! the process being killed before or after it — the host tree after the automatic undo (or
//! after `restore` by a new process, for a kill) equals the tree before, byte for byte.

mod common;

use std::path::{Path, PathBuf};

use vm_device::gpu_passthrough::{plan_prepare, prepare, restore, PrepareOptions};
use vm_device::host::SimHost;
use vm_device_host::PciAddress;
use vm_device_sim::faults::{Fault, FaultPlan};
use vm_device_sim::{Op, Snapshot};

const EIO: i32 = 5;
const EACCES: i32 = 13;
const EBUSY: i32 = 16;
const ENODEV: i32 = 19;

fn fixtures() -> Vec<PathBuf> {
    let mut out = vec![PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/real/qemu-q35-viommu"
    ))];
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/hosts");
    let mut more: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|r| r.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    more.sort();
    out.extend(more);
    out
}

/// Every (fixture, GPU) whose prepare changes the host, with the number of writes and
/// module loads a clean prepare makes.
fn plans() -> Vec<(PathBuf, PciAddress, usize, usize)> {
    let mut out = Vec::new();
    for fx in fixtures() {
        let Ok(h) = SimHost::from_fixture(&fx) else {
            continue;
        };
        for gpu in vm_device::gpu_passthrough::scan_available_gpus_on(&h) {
            let addr = gpu.pci_address;
            let h = SimHost::from_fixture(&fx).unwrap();
            let Ok(plan) = plan_prepare(&h, &addr, true) else {
                continue;
            };
            if plan.plan.changes() == 0 {
                continue;
            }
            h.clear_ops();
            let state = tempfile::tempdir().unwrap();
            let p = prepare(&h, &addr, &opts(state.path()))
                .unwrap_or_else(|e| panic!("{}: clean prepare of {addr}: {e}", fx.display()));
            let ops = h.ops();
            let writes = ops.iter().filter(|o| matches!(o, Op::Write(..))).count();
            let loads = ops
                .iter()
                .filter(|o| matches!(o, Op::LoadModule(..)))
                .count();
            p.release().unwrap();
            out.push((fx.clone(), addr, writes, loads));
        }
    }
    out
}

fn opts(state: &Path) -> PrepareOptions {
    PrepareOptions {
        allow_boot_vga: true,
        state_dir: state.to_path_buf(),
    }
}

fn journals(state: &Path) -> usize {
    std::fs::read_dir(state.join("journal"))
        .map(|r| r.count())
        .unwrap_or(0)
}

/// Prepares under `faults`; checks the host is back as it was, through the automatic undo
/// or, when the fault killed the process, through `restore` run by a new one.
fn check(
    fx: &Path,
    pristine: &SimHost,
    before: &Snapshot,
    addr: &PciAddress,
    faults: FaultPlan,
    what: &str,
) {
    // A fork of the untouched host is the same host, without rescanning the fixture.
    let h = pristine.fork();
    let state = tempfile::tempdir().unwrap();
    h.set_faults(faults);
    let ctx = format!("{} {addr} {what}", fx.display());
    // Whether the fault killed the process is known only after prepare returns.
    enum Seen {
        Prepared(usize),
        Failed(Option<bool>, String),
    }
    let seen = match prepare(&h, addr, &opts(state.path())) {
        Ok(p) => {
            let n = p.plan().moved.len();
            // If the process was killed, the handle must not release: restore does.
            std::mem::forget(p);
            Seen::Prepared(n)
        }
        Err(e) => Seen::Failed(e.undone_fully(), e.to_string()),
    };
    let dead = h.is_dead();
    let outcome: Result<(), String> = match seen {
        _ if dead => Ok(()),
        Seen::Prepared(n) => Err(format!("prepare succeeded under the fault ({n} moved)")),
        Seen::Failed(Some(true), _) => Ok(()),
        Seen::Failed(_, e) => Err(format!("expected a failed step undone fully, got: {e}")),
    };
    if let Err(e) = outcome {
        panic!("{ctx}: {e}");
    }
    let host_after = if dead {
        let reborn = h.fork();
        let report = restore(&reborn, state.path());
        assert!(report.complete(), "{ctx}: restore incomplete: {report:?}");
        reborn
    } else {
        h
    };
    let d = common::snapshot_diff(before, &host_after.snapshot());
    assert!(d.is_empty(), "{ctx}: host differs:\n{}", d.join("\n"));
    assert_eq!(journals(state.path()), 0, "{ctx}: journal left behind");
}

#[test]
fn every_fault_point_of_every_plan_leaves_the_host_as_it_was() {
    let plans = plans();
    assert!(
        plans.len() >= 8,
        "expected plans on several fixtures, got {plans:?}"
    );
    // Plans are independent: spread them over the cores.
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(4);
    let chunks: Vec<&[(PathBuf, PciAddress, usize, usize)]> =
        plans.chunks(plans.len().div_ceil(threads)).collect();
    let cases: usize = std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| scope.spawn(move || run_cases(chunk)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .sum()
    });
    eprintln!("{cases} fault cases over {} plans", plans.len());
}

#[test]
fn a_release_that_fails_midway_is_finished_by_restore() {
    for (fx, addr, writes, _) in plans() {
        // Fault each write of the release (they come after the prepare's writes).
        for k in 1..=writes as u32 {
            let h = SimHost::from_fixture(&fx).unwrap();
            let before = h.snapshot();
            let state = tempfile::tempdir().unwrap();
            let p = prepare(&h, &addr, &opts(state.path())).unwrap();
            h.set_faults(FaultPlan::new().rule(Fault::write("").nth(k).errno(EIO)));
            let ctx = format!("{} {addr} release write #{k} EIO", fx.display());
            let err = p.release().expect_err(&ctx);
            assert_eq!(err.undone_fully(), Some(false), "{ctx}: {err}");
            assert!(
                err.to_string().contains("vm-cli gpu restore"),
                "{ctx}: {err}"
            );
            h.set_faults(FaultPlan::new());
            let report = restore(&h, state.path());
            assert!(report.complete(), "{ctx}: {report:?}");
            let d = common::snapshot_diff(&before, &h.snapshot());
            assert!(d.is_empty(), "{ctx}: host differs:\n{}", d.join("\n"));
            assert_eq!(journals(state.path()), 0, "{ctx}");
        }
    }
}

/// Every fault case of `chunk`'s plans; returns how many ran.
fn run_cases(chunk: &[(PathBuf, PciAddress, usize, usize)]) -> usize {
    let mut cases = 0;
    for (fx, addr, writes, loads) in chunk {
        let pristine = SimHost::from_fixture(fx).unwrap();
        let before = pristine.snapshot();
        let check =
            |faults: FaultPlan, what: &str| check(fx, &pristine, &before, addr, faults, what);
        for i in 1..=*writes as u32 {
            let variants: Vec<(Fault, String)> = vec![
                (
                    Fault::write("").nth(i).errno(EBUSY),
                    format!("write #{i} EBUSY"),
                ),
                (
                    Fault::write("").nth(i).errno(EACCES),
                    format!("write #{i} EACCES"),
                ),
                (
                    Fault::write("").nth(i).errno(ENODEV),
                    format!("write #{i} ENODEV"),
                ),
                (
                    Fault::write("").nth(i).errno(EIO),
                    format!("write #{i} EIO"),
                ),
                (Fault::write("").nth(i).hang(), format!("write #{i} hangs")),
                (
                    Fault::write("").nth(i).die(),
                    format!("killed before write #{i}"),
                ),
                (
                    Fault::write("").nth(i).die_after(),
                    format!("killed after write #{i}"),
                ),
            ];
            for (f, what) in variants {
                check(FaultPlan::new().rule(f), &what);
                cases += 1;
            }
            // Killed in the middle of the rollback of a failure at write i.
            check(
                FaultPlan::new()
                    .rule(Fault::write("").nth(i).errno(EIO))
                    .rule(Fault::write("").nth(i + 1).die()),
                &format!("write #{i} EIO, killed at the first undo write"),
            );
            cases += 1;
        }
        for i in 1..=*loads as u32 {
            check(
                FaultPlan::new().rule(Fault::modprobe("").nth(i).errno(ENODEV)),
                &format!("modprobe #{i} fails"),
            );
            check(
                FaultPlan::new().rule(Fault::modprobe("").nth(i).die_after()),
                &format!("killed after modprobe #{i}"),
            );
            cases += 2;
        }
    }
    cases
}
