//! Host operations of one prepare + release on the simulator, for the benchmark and the
//! "no operation repeated" test.

use std::path::Path;

use vm_device_host::PciAddress;
use vm_device_sim::{Op, SimHost};

use super::{prepare, PassthroughError, PrepareOptions};

/// The host operations of one prepare and its release.
#[derive(Debug, Clone)]
pub struct OpsProfile {
    /// Operations of the prepare (plan + apply), in order.
    pub prepare: Vec<Op>,
    /// Operations of the release, in order.
    pub release: Vec<Op>,
}

/// One operation as text (`read /sys/...`, `write /sys/... = value`).
pub fn op_text(op: &Op) -> String {
    match op {
        Op::Read(p) => format!("read {}", p.display()),
        Op::List(p) => format!("list {}", p.display()),
        Op::ReadLink(p) => format!("readlink {}", p.display()),
        Op::Write(p, v) => format!(
            "write {} = {}",
            p.display(),
            String::from_utf8_lossy(v).escape_debug()
        ),
        Op::LoadModule(n) => format!("modprobe {n}"),
        Op::ProbeAdapters => "probe-adapters".into(),
        Op::Nvml(a) => format!("nvml {a}"),
        Op::Vfio(t) => format!("vfio {t}"),
        Op::SetAffinity(tid, cpus) => format!("sched_setaffinity {tid} {cpus:?}"),
        Op::File(o, p) => format!("{o} {}", p.display()),
    }
}

/// Operations that repeat one before them with nothing changed in between: the same read,
/// listing or link read with no write or module load since, or the same write twice.
pub fn repeated(ops: &[Op]) -> Vec<String> {
    let mut out = Vec::new();
    let mut since_change: Vec<&Op> = Vec::new();
    let mut writes: Vec<&Op> = Vec::new();
    for op in ops {
        match op {
            Op::Write(..) | Op::LoadModule(..) | Op::File(..) => {
                if writes.contains(&op) {
                    out.push(op_text(op));
                }
                writes.push(op);
                since_change.clear();
            }
            _ => {
                if since_change.contains(&op) {
                    out.push(op_text(op));
                }
                since_change.push(op);
            }
        }
    }
    out
}

/// Prepares `addr` on `host` and releases it, recording the operations of each phase.
pub fn profile(
    host: &SimHost,
    addr: &PciAddress,
    state_dir: &Path,
) -> Result<OpsProfile, PassthroughError> {
    let opts = PrepareOptions {
        allow_boot_vga: false,
        state_dir: state_dir.to_path_buf(),
    };
    host.clear_ops();
    let p = prepare(host, addr, &opts)?;
    let prepare_ops = host.ops();
    host.clear_ops();
    p.release()?;
    Ok(OpsProfile {
        prepare: prepare_ops,
        release: host.ops(),
    })
}
