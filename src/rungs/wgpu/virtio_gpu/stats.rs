//! Per-device statistics: lock-free counters the device updates and the backend reads.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::protocol::{ctrl, ErrorCode};
use super::webgpu::cmd;

/// The commands counted by type, in this order (the 3D ones only reach a device serving
/// WebGPU).
pub const COMMAND_NAMES: [(u32, &str); 21] = [
    (ctrl::GET_DISPLAY_INFO, "GET_DISPLAY_INFO"),
    (ctrl::GET_EDID, "GET_EDID"),
    (ctrl::RESOURCE_CREATE_2D, "RESOURCE_CREATE_2D"),
    (ctrl::RESOURCE_UNREF, "RESOURCE_UNREF"),
    (ctrl::SET_SCANOUT, "SET_SCANOUT"),
    (ctrl::RESOURCE_FLUSH, "RESOURCE_FLUSH"),
    (ctrl::TRANSFER_TO_HOST_2D, "TRANSFER_TO_HOST_2D"),
    (ctrl::RESOURCE_ATTACH_BACKING, "RESOURCE_ATTACH_BACKING"),
    (ctrl::RESOURCE_DETACH_BACKING, "RESOURCE_DETACH_BACKING"),
    (ctrl::UPDATE_CURSOR, "UPDATE_CURSOR"),
    (ctrl::MOVE_CURSOR, "MOVE_CURSOR"),
    (cmd::GET_CAPSET_INFO, "GET_CAPSET_INFO"),
    (cmd::GET_CAPSET, "GET_CAPSET"),
    (cmd::CTX_CREATE, "CTX_CREATE"),
    (cmd::CTX_DESTROY, "CTX_DESTROY"),
    (cmd::CTX_ATTACH_RESOURCE, "CTX_ATTACH_RESOURCE"),
    (cmd::CTX_DETACH_RESOURCE, "CTX_DETACH_RESOURCE"),
    (cmd::RESOURCE_CREATE_3D, "RESOURCE_CREATE_3D"),
    (cmd::TRANSFER_TO_HOST_3D, "TRANSFER_TO_HOST_3D"),
    (cmd::TRANSFER_FROM_HOST_3D, "TRANSFER_FROM_HOST_3D"),
    (cmd::SUBMIT_3D, "SUBMIT_3D"),
];
const OTHER: usize = COMMAND_NAMES.len();

/// Live counters of one device. Counters are zeroed by [`DeviceCounters::reset`]; the
/// gauges (resources alive and their bytes) describe state and are never reset.
#[derive(Debug, Default)]
pub struct DeviceCounters {
    commands: [AtomicU64; OTHER + 1],
    errors: [AtomicU64; ErrorCode::ALL.len()],
    bytes_to_host: AtomicU64,
    frames_presented: AtomicU64,
    fences: AtomicU64,
    resources_alive: AtomicU64,
    resource_bytes: AtomicU64,
}

impl DeviceCounters {
    pub(crate) fn command(&self, type_: u32) {
        let i = COMMAND_NAMES
            .iter()
            .position(|(t, _)| *t == type_)
            .unwrap_or(OTHER);
        self.commands[i].fetch_add(1, Relaxed);
    }
    pub(crate) fn error(&self, e: ErrorCode) {
        self.errors[e.index()].fetch_add(1, Relaxed);
    }
    pub(crate) fn bytes_to_host(&self, n: u64) {
        self.bytes_to_host.fetch_add(n, Relaxed);
    }
    pub(crate) fn frame(&self) {
        self.frames_presented.fetch_add(1, Relaxed);
    }
    pub(crate) fn fence(&self) {
        self.fences.fetch_add(1, Relaxed);
    }
    pub(crate) fn set_resources(&self, alive: u64, bytes: u64) {
        self.resources_alive.store(alive, Relaxed);
        self.resource_bytes.store(bytes, Relaxed);
    }

    /// Zeroes the counters; resources alive and their bytes are state and stay.
    pub fn reset(&self) {
        for c in self.commands.iter().chain(self.errors.iter()) {
            c.store(0, Relaxed);
        }
        self.bytes_to_host.store(0, Relaxed);
        self.frames_presented.store(0, Relaxed);
        self.fences.store(0, Relaxed);
    }

    /// A consistent-enough copy of the counters.
    pub fn snapshot(&self) -> DeviceStats {
        let mut commands: Vec<NamedCount> = COMMAND_NAMES
            .iter()
            .zip(&self.commands)
            .map(|((_, n), c)| NamedCount::new(n, c.load(Relaxed)))
            .collect();
        commands.push(NamedCount::new("OTHER", self.commands[OTHER].load(Relaxed)));
        DeviceStats {
            commands,
            errors: ErrorCode::ALL
                .iter()
                .zip(&self.errors)
                .map(|(e, c)| NamedCount::new(e.name(), c.load(Relaxed)))
                .collect(),
            bytes_to_host: self.bytes_to_host.load(Relaxed),
            frames_presented: self.frames_presented.load(Relaxed),
            fences: self.fences.load(Relaxed),
            resources_alive: self.resources_alive.load(Relaxed),
            resource_bytes: self.resource_bytes.load(Relaxed),
        }
    }
}

/// A name and a count.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NamedCount {
    /// Command type or response code name, as the spec spells it.
    pub name: String,
    /// How many.
    pub count: u64,
}

impl NamedCount {
    fn new(name: &str, count: u64) -> Self {
        NamedCount {
            name: name.to_string(),
            count,
        }
    }
}

/// A snapshot of one device's (or, summed, several devices') statistics.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DeviceStats {
    /// Commands processed, by type (including rejected ones); `OTHER` counts unknown types.
    pub commands: Vec<NamedCount>,
    /// Error responses, by response code.
    pub errors: Vec<NamedCount>,
    /// Bytes copied from guest memory into host resources by TRANSFER_TO_HOST_2D.
    pub bytes_to_host: u64,
    /// Scanout updates presented by RESOURCE_FLUSH (one per scanout the flush reached;
    /// cursor redraws are not counted).
    pub frames_presented: u64,
    /// Fenced commands completed.
    pub fences: u64,
    /// Resources alive now.
    pub resources_alive: u64,
    /// Host bytes charged to the budget by those resources.
    pub resource_bytes: u64,
}

impl DeviceStats {
    /// The count of one command type by name (`RESOURCE_FLUSH`), 0 if unknown.
    pub fn command(&self, name: &str) -> u64 {
        self.commands
            .iter()
            .find(|c| c.name == name)
            .map_or(0, |c| c.count)
    }

    /// The count of one error code.
    pub fn error(&self, code: ErrorCode) -> u64 {
        self.errors
            .iter()
            .find(|c| c.name == code.name())
            .map_or(0, |c| c.count)
    }

    /// Total commands.
    pub fn total_commands(&self) -> u64 {
        self.commands.iter().map(|c| c.count).sum()
    }

    /// Total error responses.
    pub fn total_errors(&self) -> u64 {
        self.errors.iter().map(|c| c.count).sum()
    }

    /// Adds another device's stats into this one (for backend totals).
    pub fn accumulate(&mut self, o: &DeviceStats) {
        merge(&mut self.commands, &o.commands);
        merge(&mut self.errors, &o.errors);
        self.bytes_to_host += o.bytes_to_host;
        self.frames_presented += o.frames_presented;
        self.fences += o.fences;
        self.resources_alive += o.resources_alive;
        self.resource_bytes += o.resource_bytes;
    }
}

fn merge(into: &mut Vec<NamedCount>, from: &[NamedCount]) {
    for f in from {
        match into.iter_mut().find(|c| c.name == f.name) {
            Some(c) => c.count += f.count,
            None => into.push(f.clone()),
        }
    }
}

impl fmt::Display for DeviceStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} commands, {} errors, {} bytes to host, {} frames, {} fences, {} resources ({} bytes)",
            self.total_commands(),
            self.total_errors(),
            self.bytes_to_host,
            self.frames_presented,
            self.fences,
            self.resources_alive,
            self.resource_bytes
        )?;
        let nonzero = |v: &[NamedCount]| {
            v.iter()
                .filter(|c| c.count > 0)
                .map(|c| format!("{}={}", c.name, c.count))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let c = nonzero(&self.commands);
        if !c.is_empty() {
            write!(f, "; commands: {c}")?;
        }
        let e = nonzero(&self.errors);
        if !e.is_empty() {
            write!(f, "; errors: {e}")?;
        }
        Ok(())
    }
}
