//! The interface every rung's backend implements.

use std::fmt;

use super::GpuMode;

/// A GPU backend: one rung of the ladder, ready to give a VM a GPU once initialized.
///
/// The methods carry the product guide's names (`init`, `get_stats`). A backend may also
/// have inherent methods of the same names with its own error and statistics types
/// (`WgpuBackend::init` returns a `WgpuError`): one operation, one name, typed where the
/// caller knows the rung and erased behind this trait where it does not.
pub trait GpuBackend {
    /// Which rung this is.
    fn mode(&self) -> GpuMode;
    /// One line for humans: what this backend drives (device, adapter, state).
    fn description(&self) -> String;
    /// Opens whatever the rung needs (driver, adapter, device). Idempotent.
    fn init(&mut self) -> Result<(), BackendError>;
    /// Current counters.
    fn get_stats(&self) -> BackendStats;
}

/// A backend failed to initialize or operate.
#[derive(Debug)]
pub struct BackendError {
    /// The rung that failed.
    pub mode: GpuMode,
    /// What went wrong, with the remedy where there is one.
    pub source: Box<dyn std::error::Error + Send + Sync + 'static>,
}

impl BackendError {
    /// Wraps a rung-specific error.
    pub fn new(mode: GpuMode, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        BackendError {
            mode,
            source: source.into(),
        }
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} backend: {}", self.mode, self.source)
    }
}

impl std::error::Error for BackendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

/// One named counter.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Counter {
    /// Name, e.g. `frames_presented` or `commands.RESOURCE_FLUSH`.
    pub name: String,
    /// Value.
    pub value: u64,
}

/// A backend's counters, tagged with its rung.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BackendStats {
    /// The rung.
    pub mode: GpuMode,
    /// Named counters, in a stable order.
    pub counters: Vec<Counter>,
}

impl BackendStats {
    /// Empty stats for a rung.
    pub fn new(mode: GpuMode) -> Self {
        BackendStats {
            mode,
            counters: Vec::new(),
        }
    }

    /// Appends a counter.
    pub fn push(&mut self, name: impl Into<String>, value: u64) {
        self.counters.push(Counter {
            name: name.into(),
            value,
        });
    }

    /// A counter's value by name.
    pub fn get(&self, name: &str) -> Option<u64> {
        self.counters
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.value)
    }
}

impl fmt::Display for BackendStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.mode)?;
        for c in &self.counters {
            write!(f, " {}={}", c.name, c.value)?;
        }
        Ok(())
    }
}
