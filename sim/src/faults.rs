//! Fault injection: make any host operation of a [`SimHost`](crate::SimHost) fail on purpose.
//!
//! A [`FaultPlan`] is a list of [`Fault`] rules. Each rule names an operation (`write`,
//! `read`, `list`, `readlink`, `modprobe`, or any other name a simulator component passes,
//! such as `vfio:set_container`), a path pattern, which matching call it fires on, and what
//! happens then:
//!
//! - [`FaultAction::Errno`]: the call fails with that errno and changes nothing;
//! - [`FaultAction::Hang`]: the call is recorded as hung ([`SimHost::hangs`](crate::SimHost::hangs))
//!   and fails with `ETIMEDOUT`, so the caller can treat it as a timeout; nothing changes;
//! - [`FaultAction::Die`]: the process is "killed" before the operation runs: the call fails
//!   with an error for which [`is_killed`] is true, and every later call on that host fails
//!   the same way. [`SimHost::fork`](crate::SimHost::fork) reopens the host's state (the
//!   kernel outlives the process) so a test can run `restore` on it;
//! - [`FaultAction::DieAfter`]: the operation runs and takes effect, then the process is
//!   killed before the call returns (the caller sees the kill, not the success).
//!
//! Faults are checked before the kernel reaction runs: a faulted write changes nothing
//! (except `DieAfter`, whose point is that it did). The operations checked are `read`,
//! `readlink`, `list`, `write`, `modprobe`, `rmmod` ([`SimHost::unload_module`](crate::SimHost::unload_module)),
//! `probe-adapters`, `nvml` (the GPU's address as the path), and whatever names other simulator components pass; `kind` and
//! `canonicalize` take no fault but, like everything else, fail once the process is dead.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use vm_device_host::HostError;

use crate::kernel::errno;

/// What a fault does when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultAction {
    /// Fail with this errno (for `modprobe`, a [`HostError::Module`] quoting its text).
    Errno(i32),
    /// Record the call as hung and fail with `ETIMEDOUT`.
    Hang,
    /// Kill the process before the operation runs.
    Die,
    /// Run the operation, then kill the process before the call returns.
    DieAfter,
}

/// Which of the matching calls a rule fires on (calls are counted per rule, from 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nth {
    /// Every matching call.
    Every,
    /// Only the n-th matching call.
    Only(u32),
    /// The n-th matching call and every one after it.
    From(u32),
}

/// One fault rule. Build with [`Fault::write`] (or another operation constructor), then
/// choose the call with [`Fault::nth`] / [`Fault::from_nth`] and the action with
/// [`Fault::errno`], [`Fault::hang`], [`Fault::die`] or [`Fault::die_after`].
///
/// The path pattern is a glob over the whole path when it contains `*` (any run of
/// characters, `/` included) or `?` (one character); otherwise it matches any path that
/// contains it as a substring. The empty pattern matches every path. For `modprobe` the
/// "path" is the module name as passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    op: String,
    pattern: String,
    nth: Nth,
    action: FaultAction,
    seen: u32,
}

impl Fault {
    /// A rule for operation `op` (`write`, `read`, `list`, `readlink`, `modprobe`, or a
    /// component's own name such as `vfio:set_container`; `*` matches every operation) on
    /// paths matching `pattern`. Until an action is chosen it fails with `EIO`.
    pub fn op(op: impl Into<String>, pattern: impl Into<String>) -> Self {
        Self {
            op: op.into(),
            pattern: pattern.into(),
            nth: Nth::Every,
            action: FaultAction::Errno(errno::EIO),
            seen: 0,
        }
    }

    /// A rule for attribute writes.
    pub fn write(pattern: impl Into<String>) -> Self {
        Self::op("write", pattern)
    }

    /// A rule for file reads.
    pub fn read(pattern: impl Into<String>) -> Self {
        Self::op("read", pattern)
    }

    /// A rule for directory listings.
    pub fn list(pattern: impl Into<String>) -> Self {
        Self::op("list", pattern)
    }

    /// A rule for link reads.
    pub fn readlink(pattern: impl Into<String>) -> Self {
        Self::op("readlink", pattern)
    }

    /// A rule for module loads; `pattern` matches the module name.
    pub fn modprobe(pattern: impl Into<String>) -> Self {
        Self::op("modprobe", pattern)
    }

    /// Fire only on the n-th matching call (1 = the first).
    pub fn nth(mut self, n: u32) -> Self {
        self.nth = Nth::Only(n);
        self
    }

    /// Fire on the n-th matching call and every later one.
    pub fn from_nth(mut self, n: u32) -> Self {
        self.nth = Nth::From(n);
        self
    }

    /// Fail with `errno`.
    pub fn errno(mut self, errno: i32) -> Self {
        self.action = FaultAction::Errno(errno);
        self
    }

    /// Hang (recorded, then `ETIMEDOUT`).
    pub fn hang(mut self) -> Self {
        self.action = FaultAction::Hang;
        self
    }

    /// Kill the process before the operation.
    pub fn die(mut self) -> Self {
        self.action = FaultAction::Die;
        self
    }

    /// Kill the process after the operation took effect.
    pub fn die_after(mut self) -> Self {
        self.action = FaultAction::DieAfter;
        self
    }

    /// The action this rule takes.
    pub fn action(&self) -> FaultAction {
        self.action
    }

    fn matches(&self, op: &str, path: &str) -> bool {
        (self.op == "*" || self.op == op) && pattern_matches(&self.pattern, path)
    }

    /// Counts one matching call; true when the rule fires on it.
    fn count(&mut self) -> bool {
        self.seen = self.seen.saturating_add(1);
        match self.nth {
            Nth::Every => true,
            Nth::Only(n) => self.seen == n,
            Nth::From(n) => self.seen >= n,
        }
    }
}

fn pattern_matches(pattern: &str, path: &str) -> bool {
    if pattern.contains(['*', '?']) {
        glob(pattern.as_bytes(), path.as_bytes())
    } else {
        path.contains(pattern)
    }
}

/// `*` and `?` glob over bytes, iterative with one backtrack point.
fn glob(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

/// An ordered list of fault rules. Every matching rule counts the call; the first rule that
/// fires decides what happens.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaultPlan {
    rules: Vec<Fault>,
}

impl FaultPlan {
    /// A plan with no faults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a rule.
    pub fn rule(mut self, fault: Fault) -> Self {
        self.rules.push(fault);
        self
    }

    /// Adds a rule in place.
    pub fn push(&mut self, fault: Fault) {
        self.rules.push(fault);
    }

    /// True when the plan has no rule.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// The error inside a [`HostError::Io`] for a simulated kill; see [`is_killed`].
#[derive(Debug)]
pub struct Killed {
    /// The operation during which the process died.
    pub op: String,
    /// Its path (or module name).
    pub path: PathBuf,
}

impl fmt::Display for Killed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "simulated process death during {} {}: this SimHost answers nothing more; \
             reopen its state with SimHost::fork",
            self.op,
            self.path.display()
        )
    }
}

impl std::error::Error for Killed {}

/// True when `err` reports a simulated process death ([`FaultAction::Die`] or
/// [`FaultAction::DieAfter`], or any call on a host that already died).
pub fn is_killed(err: &HostError) -> bool {
    match err {
        HostError::Io { source, .. } => source
            .get_ref()
            .is_some_and(|e| e.downcast_ref::<Killed>().is_some()),
        _ => false,
    }
}

/// True when `err` is a timeout: a [`FaultAction::Hang`], or a write the kernel would block
/// (unbinding a device, or removing an mdev, whose VFIO device fd is open).
pub fn is_hang(err: &HostError) -> bool {
    err.raw_os_error() == Some(errno::ETIMEDOUT)
}

/// The fault side of a host's state: the plan with its counters, the hung calls and, once
/// the process has been killed, what killed it.
#[derive(Debug, Clone, Default)]
pub(crate) struct FaultState {
    pub(crate) plan: FaultPlan,
    pub(crate) hangs: Vec<(String, PathBuf)>,
    pub(crate) dead: Option<(String, PathBuf)>,
}

/// What the caller of [`FaultState::check`] must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Proceed {
    /// Run the operation normally.
    Run,
    /// Run the operation, then report a kill.
    RunThenDie,
}

fn static_op(op: &str) -> &'static str {
    match op {
        "write" => "write",
        "read" => "read",
        "list" => "list",
        "readlink" => "readlink",
        "modprobe" => "modprobe",
        o if o.starts_with("vfio") => "vfio",
        _ => "host operation",
    }
}

pub(crate) fn killed_error(op: &str, path: &Path) -> HostError {
    HostError::Io {
        op: static_op(op),
        path: path.to_path_buf(),
        source: io::Error::other(Killed {
            op: op.to_string(),
            path: path.to_path_buf(),
        }),
    }
}

impl FaultState {
    /// Checks operation `op` on `path` against the plan. `Err` is the faulted answer.
    pub(crate) fn check(&mut self, op: &str, path: &Path) -> Result<Proceed, HostError> {
        if self.dead.is_some() {
            return Err(killed_error(op, path));
        }
        let text = path.to_string_lossy();
        let mut fired = None;
        for rule in &mut self.plan.rules {
            if rule.matches(op, &text) && rule.count() && fired.is_none() {
                fired = Some(rule.action);
            }
        }
        match fired {
            None => Ok(Proceed::Run),
            Some(FaultAction::DieAfter) => Ok(Proceed::RunThenDie),
            Some(FaultAction::Die) => {
                self.dead = Some((op.to_string(), path.to_path_buf()));
                Err(killed_error(op, path))
            }
            Some(FaultAction::Hang) => {
                self.hangs.push((op.to_string(), path.to_path_buf()));
                Err(HostError::errno(static_op(op), path, errno::ETIMEDOUT))
            }
            Some(FaultAction::Errno(e)) if op == "modprobe" => Err(HostError::Module {
                module: text.to_string(),
                detail: format!(
                    "modprobe: ERROR: could not insert '{text}': {} (injected fault)",
                    io::Error::from_raw_os_error(e)
                ),
            }),
            Some(FaultAction::Errno(e)) => Err(HostError::errno(static_op(op), path, e)),
        }
    }

    /// Finishes an operation that [`check`](Self::check) let run: with
    /// [`Proceed::RunThenDie`] the process dies now and the result is replaced by the kill.
    pub(crate) fn finish<T>(
        &mut self,
        proceed: Proceed,
        op: &str,
        path: &Path,
        result: Result<T, HostError>,
    ) -> Result<T, HostError> {
        match proceed {
            Proceed::Run => result,
            Proceed::RunThenDie => {
                self.dead = Some((op.to_string(), path.to_path_buf()));
                Err(killed_error(op, path))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_whole_path() {
        assert!(pattern_matches(
            "*/driver/unbind",
            "/sys/bus/pci/devices/x/driver/unbind"
        ));
        assert!(!pattern_matches(
            "*/driver/unbind",
            "/sys/bus/pci/drivers_probe"
        ));
        assert!(pattern_matches(
            "/sys/*/0000:0?:00.0/*",
            "/sys/bus/0000:01:00.0/enable"
        ));
        assert!(pattern_matches(
            "drivers_probe",
            "/sys/bus/pci/drivers_probe"
        ));
        assert!(pattern_matches("", "/anything"));
    }

    #[test]
    fn nth_counts_matching_calls_only() {
        let mut st = FaultState {
            plan: FaultPlan::new().rule(Fault::write("unbind").nth(2).errno(errno::EBUSY)),
            ..Default::default()
        };
        let p = Path::new("/sys/bus/pci/drivers/x/unbind");
        assert!(st.check("write", Path::new("/other")).is_ok());
        assert!(st.check("read", p).is_ok());
        assert!(st.check("write", p).is_ok());
        let e = st.check("write", p).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(errno::EBUSY));
        assert!(st.check("write", p).is_ok());
    }

    #[test]
    fn die_poisons_every_later_call() {
        let mut st = FaultState {
            plan: FaultPlan::new().rule(Fault::op("vfio:set_container", "").die()),
            ..Default::default()
        };
        let e = st
            .check("vfio:set_container", Path::new("/dev/vfio/7"))
            .unwrap_err();
        assert!(is_killed(&e));
        let e = st.check("read", Path::new("/proc/modules")).unwrap_err();
        assert!(is_killed(&e), "{e}");
    }
}
