//! Running the VM: apply the host change, start the backend and QEMU, wait, release.

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{self, SigHandler, Signal};
use nix::unistd::Pid;
use serde::Serialize;

use super::{HostChange, LaunchError, LaunchOptions, LaunchPlan, TuningError};
use crate::host::HostOps;
use crate::plan::{Executor, GroupLock, PlanLock};
use crate::rungs::passthrough::{prepare, PrepareOptions, Prepared};

/// A stop request: set from a signal handler, or by a caller that wants the VM stopped.
pub type StopFlag = AtomicBool;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: nix::libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Turns SIGINT, SIGTERM and SIGHUP into a stop request ([`stop_requested`]) instead of
/// killing this process, so the release path runs; returns the flag to pass to [`run`].
pub fn install_stop_signals() -> Result<&'static StopFlag, LaunchError> {
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        let action = signal::SigAction::new(
            SigHandler::Handler(on_stop_signal),
            signal::SaFlags::SA_RESTART,
            signal::SigSet::empty(),
        );
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { signal::sigaction(sig, &action) }.map_err(|e| LaunchError::Process {
            what: format!("installing a {sig} handler"),
            detail: e.to_string(),
        })?;
    }
    Ok(&STOP)
}

/// True once SIGINT/SIGTERM/SIGHUP arrived (after [`install_stop_signals`]).
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// How a launch ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LaunchOutcome {
    /// QEMU's exit code (`None`: never started, or ended by a signal).
    pub qemu_exit: Option<i32>,
    /// QEMU's status in words (`exited with 0`, `killed by SIGTERM`).
    pub qemu_status: String,
    /// What ended the VM: `guest` (QEMU exited on its own), `stop` (a signal or caller),
    /// `backend` (the GPU backend died while QEMU ran), `signal` (QEMU was killed by a
    /// signal vm-cli did not send, such as SIGABRT: a failure).
    pub ended_by: String,
    /// What the release could not put back, one line each (empty: host as before).
    pub left: Vec<String>,
    /// The vCPU threads pinned (empty: no pinning asked for).
    pub pinned: Vec<PinnedThread>,
}

/// A QEMU thread vm-cli pinned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PinnedThread {
    /// The vCPU (`cpu-index`), or `None` for one of QEMU's other threads.
    pub vcpu: Option<u32>,
    /// The host thread id.
    pub thread_id: u32,
    /// The host CPUs it may run on.
    pub cpus: Vec<u32>,
}

impl LaunchOutcome {
    /// The host is as it was, and the VM ended as asked: the guest powered off (QEMU
    /// exited 0) or a stop was requested. A dead backend is not clean.
    pub fn clean(&self) -> bool {
        self.left.is_empty()
            && match self.ended_by.as_str() {
                "stop" => true,
                "guest" => self.qemu_exit == Some(0),
                _ => false,
            }
    }
}

/// What is held while the VM runs.
enum Held<'h> {
    Passthrough(Prepared<'h>),
    Mdev(Executor),
    None,
}

fn apply<'h>(
    host: &'h dyn HostOps,
    plan: &LaunchPlan,
    opts: &LaunchOptions,
) -> Result<Held<'h>, LaunchError> {
    match &plan.change {
        HostChange::Passthrough { plan: p } => {
            let prepared = prepare(
                host,
                &p.target,
                &PrepareOptions {
                    allow_boot_vga: opts.allow_boot_vga,
                    state_dir: opts.state_dir.clone(),
                },
            )?;
            Ok(Held::Passthrough(prepared))
        }
        HostChange::Mdev { planned } => {
            // Journaled under this device's own key and kept while the VM runs, so
            // `vm-cli gpu restore` removes the device if this process is killed. Creations
            // on one parent are serialized by the kernel (a full type refuses with EINVAL).
            let mut p = planned.plan.plan.clone();
            p.key = format!("launch-mdev-{}", planned.device.replace([':', '/'], "_"));
            let lock = PlanLock::acquire(&opts.state_dir, &p.key, Duration::ZERO).map_err(|e| {
                LaunchError::Process {
                    what: format!(
                        "locking {}",
                        GroupLock::path_for(&opts.state_dir, &p.key).display()
                    ),
                    detail: e.to_string(),
                }
            })?;
            let exec = lock
                .apply(host, &p)
                .map_err(|e| crate::rungs::mdev::plan::from_apply(*e))?;
            Ok(Held::Mdev(exec))
        }
        HostChange::None => Ok(Held::None),
    }
}

/// Reserves the hugepages the plan lacks (`--reserve-hugepages`), journaled under the
/// pool's key and held while the VM runs, so `vm-cli gpu restore` gives them back if this
/// process is killed.
fn reserve_hugepages(
    host: &dyn HostOps,
    plan: &LaunchPlan,
    opts: &LaunchOptions,
) -> Result<Option<Executor>, LaunchError> {
    let Some(p) = plan
        .tuning
        .hugepages
        .as_ref()
        .and_then(|h| h.reserve.as_ref())
    else {
        return Ok(None);
    };
    let lock = PlanLock::acquire(&opts.state_dir, &p.key, Duration::ZERO).map_err(|e| {
        TuningError::Refused(format!(
            "the {} pool is being reserved by another vm-cli ({}: {e}); launch again when it \
             ends, or reserve the pages by hand",
            p.key,
            GroupLock::path_for(&opts.state_dir, &p.key).display()
        ))
    })?;
    // A journal a killed vm-cli left for this pool holds the count to give back: writing a
    // new one over it would lose that.
    match lock.left_journal() {
        Ok(None) => {}
        Ok(Some(_)) => {
            return Err(TuningError::Refused(format!(
                "a vm-cli that ended without giving them back left a reservation of the {} \
                 pool ({}); run `vm-cli gpu restore` first, then launch again",
                p.key,
                lock.journal_path().display()
            ))
            .into())
        }
        Err(e) => {
            return Err(TuningError::Host(format!("{}: {e}", lock.journal_path().display())).into())
        }
    }
    match lock.apply(host, p) {
        Ok(exec) => Ok(Some(exec)),
        Err(e) => {
            let undone = e.undo.complete();
            let fewer = matches!(e.error, crate::plan::StepError::Verify { .. });
            let message = if fewer {
                format!(
                    "{}: the kernel reserved fewer hugepages than asked ({}): host memory is \
                     too fragmented for more; {}. Free memory first (`echo 1 | sudo tee \
                     /proc/sys/vm/compact_memory`), reserve them at boot (hugepagesz= \
                     hugepages= on the kernel command line), or give a smaller --memory",
                    p.subject,
                    e.error,
                    if undone {
                        "the count is back as it was"
                    } else {
                        "and the old count could not be restored"
                    }
                )
            } else {
                format!(
                    "{}: {e}; {}",
                    p.subject,
                    if undone {
                        "undone".to_string()
                    } else {
                        format!("NOT undone: {}", e.undo.leftovers().join("; "))
                    }
                )
            };
            Err(TuningError::Reservation { message, undone }.into())
        }
    }
}

fn release_reservation(host: &dyn HostOps, exec: Option<Executor>) -> Vec<String> {
    match exec {
        Some(mut exec) => {
            let r = exec.undo(host);
            if r.complete() {
                Vec::new()
            } else {
                r.leftovers()
            }
        }
        None => Vec::new(),
    }
}

/// How long QEMU may take to answer on its QMP socket before pinning gives up.
const QMP_WAIT: Duration = Duration::from_secs(180);

/// Pins the vCPU threads (found with QMP `query-cpus-fast`) to the plan's cores, after
/// moving QEMU's other threads (the process's tasks, read through the host) off them.
fn pin_threads(
    host: &dyn HostOps,
    plan: &LaunchPlan,
    qemu: &mut Child,
    stop: &StopFlag,
) -> Result<Vec<PinnedThread>, LaunchError> {
    let t = &plan.tuning;
    let Some(socket) = plan.vm.qmp.as_ref() else {
        return Err(TuningError::Host("pinning needs QMP, and the VM has none".into()).into());
    };
    // QEMU opens its QMP socket early, but a QEMU started from slow storage (the nested
    // lab's 9p share under TCG) takes tens of seconds to get there: wait while it runs.
    let vcpus = super::qmp::vcpu_threads(socket, QMP_WAIT, || {
        !stop.load(Ordering::SeqCst) && matches!(qemu.try_wait(), Ok(None))
    })
    .map_err(|e| TuningError::Host(format!("finding the vCPU threads: {e}")))?;
    let mut pinned = Vec::new();
    let pin = |tid: u32, cpus: &[u32]| {
        host.set_thread_affinity(tid, cpus).map_err(|e| {
            TuningError::Host(format!(
                "pinning thread {tid} to CPUs {}: {e}",
                super::tuning::cpu_list_text(cpus)
            ))
        })
    };
    if !t.other_cores.is_empty() {
        let pid = qemu.id();
        let mut others = vec![pid];
        let task = std::path::PathBuf::from(format!("/proc/{pid}/task"));
        others.extend(
            host.list_dir(&task)
                .unwrap_or_default()
                .iter()
                .filter_map(|n| n.parse::<u32>().ok()),
        );
        others.sort_unstable();
        others.dedup();
        for tid in others {
            if vcpus.iter().any(|v| v.thread_id == tid) {
                continue;
            }
            match pin(tid, &t.other_cores) {
                Ok(()) => pinned.push(PinnedThread {
                    vcpu: None,
                    thread_id: tid,
                    cpus: t.other_cores.clone(),
                }),
                // A worker thread may end between the listing and the call.
                Err(_) if tid != pid => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    for v in &vcpus {
        let cpus = t.cores_for_vcpu(v.cpu_index as usize);
        pin(v.thread_id, &cpus)?;
        pinned.push(PinnedThread {
            vcpu: Some(v.cpu_index),
            thread_id: v.thread_id,
            cpus,
        });
    }
    Ok(pinned)
}

fn release(host: &dyn HostOps, held: Held<'_>) -> Vec<String> {
    match held {
        Held::Passthrough(p) => match p.release() {
            Ok(r) if r.complete() => Vec::new(),
            Ok(r) => r.leftovers(),
            Err(e) => vec![e.to_string()],
        },
        Held::Mdev(mut exec) => {
            let r = exec.undo(host);
            if r.complete() {
                Vec::new()
            } else {
                r.leftovers()
            }
        }
        Held::None => Vec::new(),
    }
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with {c}"),
        (None, Some(s)) => match Signal::try_from(s) {
            Ok(sig) => format!("killed by {sig}"),
            Err(_) => format!("killed by signal {s}"),
        },
        _ => status.to_string(),
    }
}

/// SIGTERM, then SIGKILL after `grace`; waits for the exit.
fn terminate(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    if let Ok(Some(s)) = child.try_wait() {
        return Some(s);
    }
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = signal::kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
    let start = Instant::now();
    while start.elapsed() < grace {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait().ok()
}

fn start_backend(cmd: &[String], socket: &Path, stop: &StopFlag) -> Result<Child, LaunchError> {
    use std::os::unix::process::CommandExt;
    let (prog, args) = cmd.split_first().ok_or_else(|| LaunchError::Process {
        what: "starting the GPU backend".into(),
        detail: "empty backend command".into(),
    })?;
    let mut child = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        // Its own process group: a Ctrl-C on the terminal reaches QEMU and vm-cli, and
        // vm-cli stops the backend after QEMU, not before.
        .process_group(0)
        .spawn()
        .map_err(|e| LaunchError::Process {
            what: format!("starting the GPU backend `{prog}`"),
            detail: e.to_string(),
        })?;
    let start = Instant::now();
    while !socket.exists() {
        if let Ok(Some(s)) = child.try_wait() {
            return Err(LaunchError::Process {
                what: format!("GPU backend `{}`", cmd.join(" ")),
                detail: format!("{} before listening on {}", describe(s), socket.display()),
            });
        }
        if stop.load(Ordering::SeqCst) || start.elapsed() > Duration::from_secs(30) {
            terminate(&mut child, Duration::from_secs(2));
            return Err(LaunchError::Process {
                what: format!("GPU backend `{}`", cmd.join(" ")),
                detail: if stop.load(Ordering::SeqCst) {
                    "stopped on request before it listened".into()
                } else {
                    format!("no socket at {} after 30 s", socket.display())
                },
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(child)
}

/// Runs the VM of `plan` on `host`: applies the host change (journaled under
/// `opts.state_dir`), starts the backend (wgpu), runs QEMU with this process's terminal,
/// and when QEMU exits, the backend dies or `stop` is set, stops QEMU and the backend and
/// undoes the host change. An error before QEMU starts is returned after the same release.
pub fn run(
    host: &dyn HostOps,
    plan: &LaunchPlan,
    opts: &LaunchOptions,
    stop: &StopFlag,
) -> Result<LaunchOutcome, LaunchError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&opts.run_dir)
        .map_err(|e| LaunchError::Process {
            what: format!("creating {}", opts.run_dir.display()),
            detail: e.to_string(),
        })?;
    let result = run_in_dir(host, plan, opts, stop);
    let _ = std::fs::remove_dir_all(&opts.run_dir);
    result
}

fn run_in_dir(
    host: &dyn HostOps,
    plan: &LaunchPlan,
    opts: &LaunchOptions,
    stop: &StopFlag,
) -> Result<LaunchOutcome, LaunchError> {
    let reservation = reserve_hugepages(host, plan, opts)?;
    let held = match apply(host, plan, opts) {
        Ok(h) => h,
        Err(e) => {
            for l in release_reservation(host, reservation) {
                eprintln!("vm-cli: left on the host: {l}");
            }
            return Err(e);
        }
    };
    let started = start_processes(plan, stop);
    let (mut qemu, mut backend) = match started {
        Ok(p) => p,
        Err(e) => {
            let mut left = release(host, held);
            left.extend(release_reservation(host, reservation));
            for l in &left {
                eprintln!("vm-cli: left on the host: {l}");
            }
            return Err(e);
        }
    };
    let pinned = if plan.tuning.vcpu_cores.is_empty() {
        Vec::new()
    } else {
        match pin_threads(host, plan, &mut qemu, stop) {
            Ok(p) => p,
            Err(e) => {
                // Asked for placement and could not give it: stop rather than run unpinned.
                terminate(&mut qemu, Duration::from_secs(10));
                if let Some(b) = backend.as_mut() {
                    terminate(b, Duration::from_secs(5));
                }
                let mut left = release(host, held);
                left.extend(release_reservation(host, reservation));
                for l in &left {
                    eprintln!("vm-cli: left on the host: {l}");
                }
                return Err(e);
            }
        }
    };
    let mut ended_by = "guest";
    let status = loop {
        if let Ok(Some(s)) = qemu.try_wait() {
            break Some(s);
        }
        if stop.load(Ordering::SeqCst) {
            ended_by = "stop";
            break terminate(&mut qemu, Duration::from_secs(10));
        }
        if let Some(b) = backend.as_mut() {
            if let Ok(Some(s)) = b.try_wait() {
                // A backend ends cleanly when QEMU closes its socket, which QEMU does as
                // the guest powers off, a moment before QEMU itself exits: give QEMU that
                // moment before deciding who ended the VM.
                let qemu_end = if s.success() {
                    wait_for_exit(&mut qemu, BACKEND_END_GRACE)
                } else {
                    None
                };
                let (by, status) = match qemu_end {
                    Some(q) => (decide_end(Some(q), s), Some(q)),
                    None => {
                        eprintln!("vm-cli: the GPU backend {}; stopping the VM", describe(s));
                        ("backend", terminate(&mut qemu, Duration::from_secs(10)))
                    }
                };
                ended_by = by;
                break status;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if ended_by == "guest" && status.is_some_and(|s| s.code().is_none()) {
        // Killed by a signal nobody here sent (SIGABRT, SIGSEGV, the OOM killer): a
        // failure, not a guest power-off.
        ended_by = "signal";
    }
    if let Some(b) = backend.as_mut() {
        terminate(b, Duration::from_secs(5));
    }
    let mut left = release(host, held);
    left.extend(release_reservation(host, reservation));
    Ok(LaunchOutcome {
        qemu_exit: status.and_then(|s| s.code()),
        qemu_status: status
            .map(describe)
            .unwrap_or_else(|| "could not be waited for".into()),
        ended_by: ended_by.into(),
        left,
        pinned,
    })
}

/// How long QEMU may take to exit after the backend ended cleanly (QEMU closed the
/// socket as the guest powered off) before the backend's end counts as what stopped the VM.
const BACKEND_END_GRACE: Duration = Duration::from_secs(5);

/// Waits up to `limit` for `child` to exit on its own.
fn wait_for_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return Some(s),
            Ok(None) if start.elapsed() < limit => std::thread::sleep(Duration::from_millis(20)),
            _ => return None,
        }
    }
}

/// Who ended the VM, once both QEMU and the backend are reaped, the backend first: a
/// backend that exited 0 after QEMU disconnected ended normally, so QEMU's own status
/// decides (`guest`, or `signal` for a QEMU killed by one); a backend that failed ended it.
pub(crate) fn decide_end(qemu: Option<ExitStatus>, backend: ExitStatus) -> &'static str {
    match qemu {
        Some(q) if backend.success() => {
            if q.code().is_some() {
                "guest"
            } else {
                "signal"
            }
        }
        _ => "backend",
    }
}

fn start_processes(
    plan: &LaunchPlan,
    stop: &StopFlag,
) -> Result<(Child, Option<Child>), LaunchError> {
    let mut backend = match (&plan.backend, &plan.vm.gpu) {
        (Some(cmd), super::GpuAttachment::VhostUserGpu { socket }) => {
            Some(start_backend(cmd, socket, stop)?)
        }
        _ => None,
    };
    if stop.load(Ordering::SeqCst) {
        if let Some(b) = backend.as_mut() {
            terminate(b, Duration::from_secs(2));
        }
        return Err(LaunchError::Process {
            what: "starting QEMU".into(),
            detail: "stopped on request before QEMU started".into(),
        });
    }
    let (prog, args) = plan
        .argv
        .split_first()
        .expect("qemu_argv always starts with the binary");
    match Command::new(prog).args(args).envs(plan.qemu.env()).spawn() {
        Ok(q) => Ok((q, backend)),
        Err(e) => {
            if let Some(b) = backend.as_mut() {
                terminate(b, Duration::from_secs(2));
            }
            Err(LaunchError::Process {
                what: format!("starting {prog}"),
                detail: e.to_string(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::decide_end;
    use std::os::unix::process::ExitStatusExt;
    use std::process::ExitStatus;

    fn exited(code: i32) -> ExitStatus {
        ExitStatus::from_raw(code << 8)
    }

    #[test]
    fn a_clean_backend_end_after_qemu_exits_is_the_guests() {
        assert_eq!(decide_end(Some(exited(0)), exited(0)), "guest");
        assert_eq!(decide_end(Some(exited(1)), exited(0)), "guest");
        // SIGABRT (6): a failure whoever noticed it first.
        assert_eq!(
            decide_end(Some(ExitStatus::from_raw(6)), exited(0)),
            "signal"
        );
        assert_eq!(decide_end(None, exited(0)), "backend");
        assert_eq!(decide_end(Some(exited(0)), exited(1)), "backend");
    }
}
