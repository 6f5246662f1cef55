//! `UnifiedGpuManager`: scan, rank, select and initialize a GPU for a VM.

mod mode;

pub use mode::GpuMode;
