//! The three rungs of the ladder.

use std::fmt;
use std::str::FromStr;

/// How a VM gets its GPU, highest priority first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GpuMode {
    /// A whole GPU bound to `vfio-pci` and handed to the VM.
    Passthrough,
    /// A slice of a GPU: an mdev type, an SR-IOV VF, or NVIDIA's vendor-VFIO vGPU.
    Mdev,
    /// A virtio-gpu device whose scanouts the host renders with wgpu.
    Wgpu,
}

impl GpuMode {
    /// Every mode, highest priority first.
    pub const LADDER: [GpuMode; 3] = [GpuMode::Passthrough, GpuMode::Mdev, GpuMode::Wgpu];

    /// The name used on the command line and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            GpuMode::Passthrough => "passthrough",
            GpuMode::Mdev => "mdev",
            GpuMode::Wgpu => "wgpu",
        }
    }

    /// Priority rank: 0 is the best.
    pub fn rank(self) -> usize {
        self as usize
    }
}

impl fmt::Display for GpuMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for GpuMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "passthrough" | "vfio" => Ok(GpuMode::Passthrough),
            "mdev" | "mediated" => Ok(GpuMode::Mdev),
            "wgpu" => Ok(GpuMode::Wgpu),
            _ => Err(format!(
                "unknown GPU mode `{s}`: expected passthrough, mdev or wgpu"
            )),
        }
    }
}
