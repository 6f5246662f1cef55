//! `cargo bench -p vm-device --bench passthrough`: plan + apply + release of a two-function
//! IOMMU group on the simulator, printing the host operations per prepare (SimHost::ops)
//! and flagging any that repeat with nothing changed in between.

use std::time::Instant;

use vm_device::gpu_passthrough::profile::{op_text, profile, repeated};
use vm_device_sim::{Op, SimHost};

fn kinds(ops: &[Op]) -> String {
    let n = |f: fn(&Op) -> bool| ops.iter().filter(|o| f(o)).count();
    format!(
        "{} total: {} read, {} list, {} readlink, {} write, {} modprobe",
        ops.len(),
        n(|o| matches!(o, Op::Read(_))),
        n(|o| matches!(o, Op::List(_))),
        n(|o| matches!(o, Op::ReadLink(_))),
        n(|o| matches!(o, Op::Write(..))),
        n(|o| matches!(o, Op::LoadModule(_))),
    )
}

fn main() {
    let verbose = std::env::args().any(|a| a == "--verbose");
    let cases = [
        (
            concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/real/qemu-q35-viommu"),
            "0000:06:01.0",
            "QEMU q35: two bochs-display behind a bridge, IOMMU group 11",
        ),
        (
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/fixtures/hosts/intel-desktop-gvtg-dgpu"
            ),
            "0000:01:00.0",
            "desktop: RTX 3080 + HDMI audio, IOMMU group 1",
        ),
    ];
    let mut failed = false;
    for (fx, addr, what) in cases {
        let addr = addr.parse().expect("a PCI address");
        let pristine = SimHost::from_fixture(fx).expect("fixture");
        let state = tempfile::tempdir().expect("tempdir");
        let p = profile(&pristine.fork(), &addr, state.path()).expect("prepare + release");
        println!("{what} ({addr})");
        println!("  prepare: {}", kinds(&p.prepare));
        println!("  release: {}", kinds(&p.release));
        let rep: Vec<String> = repeated(&p.prepare)
            .into_iter()
            .chain(repeated(&p.release))
            .collect();
        if rep.is_empty() {
            println!("  repeated operations: none");
        } else {
            failed = true;
            println!("  repeated operations: {rep:?}");
        }
        if verbose {
            for op in p.prepare.iter().chain(&p.release) {
                println!("    {}", op_text(op));
            }
        }
        let iters = 200;
        let start = Instant::now();
        for _ in 0..iters {
            let h = pristine.fork();
            profile(&h, &addr, state.path()).expect("prepare + release");
        }
        let per = start.elapsed() / iters;
        println!("  plan + apply + release: {per:?} per round trip ({iters} rounds, journal fsyncs included)");
    }
    if failed {
        std::process::exit(1);
    }
}
