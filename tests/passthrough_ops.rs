//! A prepare reads what it needs once: no operation repeats without a change in between,
//! and the count stays small.

use vm_device::gpu_passthrough::profile::{op_text, profile, repeated};
use vm_device::host::SimHost;

const Q35: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/real/qemu-q35-viommu");

#[test]
fn prepare_and_release_of_a_two_function_group_repeat_no_operation() {
    for (fx, addr) in [
        (Q35.to_string(), "0000:06:01.0"),
        (
            format!(
                "{}/fixtures/hosts/intel-desktop-gvtg-dgpu",
                env!("CARGO_MANIFEST_DIR")
            ),
            "0000:01:00.0",
        ),
    ] {
        let h = SimHost::from_fixture(&fx).unwrap();
        let state = tempfile::tempdir().unwrap();
        let p = profile(&h, &addr.parse().unwrap(), state.path()).unwrap();
        let all: Vec<String> = p.prepare.iter().map(op_text).collect();
        assert!(
            repeated(&p.prepare).is_empty(),
            "{fx} {addr}: repeated in prepare: {:?}\nall:\n{}",
            repeated(&p.prepare),
            all.join("\n")
        );
        assert!(
            repeated(&p.release).is_empty(),
            "{fx} {addr}: repeated in release: {:?}",
            repeated(&p.release)
        );
        assert!(
            p.prepare.len() <= 60,
            "{fx} {addr}: {} ops:\n{}",
            p.prepare.len(),
            all.join("\n")
        );
    }
}
