//! What the agent offers: a JSON file read at start.
//!
//! ```json
//! {
//!   "passthrough": ["0000:86:00.0"],
//!   "mdev": [{ "type": "nvidia-222", "count": 2, "parent": "0000:5e:00.0" }],
//!   "sriov": [{ "pf": "0000:03:00.0", "num_vfs": 4 }],
//!   "wgpu_shares": 0,
//!   "plugin_dir": "/var/lib/kubelet/device-plugins",
//!   "kubelet_socket": "/var/lib/kubelet/device-plugins/kubelet.sock",
//!   "poll_interval_ms": 5000
//! }
//! ```
//!
//! A `"dra"` object turns on the DRA driver beside the device plugin (see [`DraConfig`]):
//! `{"dra": {"wgpu_shares": 2}}`; every field has a default.
//!
//! `passthrough` takes PCI addresses, or `"available"`: every GPU the passthrough rung finds
//! available at start (as `vm-cli gpu list` shows it).

use std::path::{Path, PathBuf};

use serde::Deserialize;
use vm_passthrough::PciAddress;

/// Default directory of kubelet's device-plugin sockets.
pub const DEFAULT_PLUGIN_DIR: &str = "/var/lib/kubelet/device-plugins";
/// Default kubelet registration socket.
pub const DEFAULT_KUBELET_SOCKET: &str = "/var/lib/kubelet/device-plugins/kubelet.sock";
/// Default interval between two looks at the host (and at kubelet's socket).
pub const DEFAULT_POLL_MS: u64 = 5000;
/// The resource-name domain of everything the agent offers.
pub const DOMAIN: &str = "vm-device.io";

/// Which GPUs to hand over whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PassthroughSel {
    /// Every GPU the passthrough rung finds available at start.
    Available,
    /// These GPUs.
    Addresses(Vec<PciAddress>),
}

impl Default for PassthroughSel {
    fn default() -> Self {
        PassthroughSel::Addresses(Vec::new())
    }
}

/// Mediated devices to create at start.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MdevSpec {
    /// Type id (`nvidia-222`, `i915-GVTg_V5_4`) or name (`GRID T4-1B`).
    #[serde(rename = "type")]
    pub mdev_type: String,
    /// How many.
    pub count: u32,
    /// Parent (PCI address or mdev_bus name); chosen by the library when absent.
    #[serde(default)]
    pub parent: Option<String>,
    /// Prefer parents on this NUMA node.
    #[serde(default)]
    pub numa_node: Option<u32>,
}

/// SR-IOV virtual functions to enable at start.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SriovSpec {
    /// The physical function.
    pub pf: PciAddress,
    /// `sriov_numvfs` wanted.
    pub num_vfs: u32,
}

/// Default directory where kubelet's plugin watcher looks for registration sockets.
pub const DEFAULT_REGISTRY_DIR: &str = "/var/lib/kubelet/plugins_registry";
/// Default directory of the DRA driver's own socket.
pub const DEFAULT_DRA_PLUGIN_DIR: &str = "/var/lib/kubelet/plugins/gpu.vm-device.io";
/// Default directory of CDI spec files (read by containerd and CRI-O).
pub const DEFAULT_CDI_DIR: &str = "/var/run/cdi";

/// The DRA driver's settings (the `"dra"` object).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DraConfig {
    /// kubelet's plugin registry: the registration socket is created here.
    pub registry_dir: PathBuf,
    /// The driver's own directory: its DRA socket (`dra.sock`) is created here.
    pub plugin_dir: PathBuf,
    /// Where the CDI spec files of prepared claims are written.
    pub cdi_dir: PathBuf,
    /// Shares of the software rung offered as DRA devices (`wgpu-N`) when an adapter is
    /// available.
    pub wgpu_shares: u32,
}

impl Default for DraConfig {
    fn default() -> Self {
        DraConfig {
            registry_dir: PathBuf::from(DEFAULT_REGISTRY_DIR),
            plugin_dir: PathBuf::from(DEFAULT_DRA_PLUGIN_DIR),
            cdi_dir: PathBuf::from(DEFAULT_CDI_DIR),
            wgpu_shares: 0,
        }
    }
}

/// The agent's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// GPUs handed over whole.
    pub passthrough: PassthroughSel,
    /// Mediated devices created at start.
    pub mdev: Vec<MdevSpec>,
    /// Virtual functions enabled at start (before the mdevs, so vGPU types on VFs work).
    pub sriov: Vec<SriovSpec>,
    /// Shares of the software rung offered as `vm-device.io/wgpu` (0: none).
    pub wgpu_shares: u32,
    /// Where kubelet looks for plugin sockets; ours are created there.
    pub plugin_dir: PathBuf,
    /// kubelet's registration socket.
    pub kubelet_socket: PathBuf,
    /// Interval between two looks at the host and kubelet's socket.
    pub poll_interval_ms: u64,
    /// Allow the boot display to be passed through.
    pub allow_boot_vga: bool,
    /// The DRA driver, when on.
    pub dra: Option<DraConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            passthrough: PassthroughSel::default(),
            mdev: Vec::new(),
            sriov: Vec::new(),
            wgpu_shares: 0,
            plugin_dir: PathBuf::from(DEFAULT_PLUGIN_DIR),
            kubelet_socket: PathBuf::from(DEFAULT_KUBELET_SOCKET),
            poll_interval_ms: DEFAULT_POLL_MS,
            allow_boot_vga: false,
            dra: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    passthrough: RawPassthrough,
    #[serde(default)]
    mdev: Vec<MdevSpec>,
    #[serde(default)]
    sriov: Vec<SriovSpec>,
    #[serde(default)]
    wgpu_shares: u32,
    #[serde(default)]
    plugin_dir: Option<PathBuf>,
    #[serde(default)]
    kubelet_socket: Option<PathBuf>,
    #[serde(default)]
    poll_interval_ms: Option<u64>,
    #[serde(default)]
    allow_boot_vga: bool,
    #[serde(default)]
    dra: Option<DraConfig>,
}

#[derive(Deserialize, Default)]
#[serde(untagged)]
enum RawPassthrough {
    #[default]
    None,
    Word(String),
    List(Vec<String>),
}

/// A configuration that cannot be used, saying why.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Parses a configuration from JSON text.
    pub fn from_json(text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = serde_json::from_str(text)
            .map_err(|e| ConfigError(format!("not a valid agent configuration: {e}")))?;
        let passthrough = match raw.passthrough {
            RawPassthrough::None => PassthroughSel::default(),
            RawPassthrough::Word(w) if w == "available" => PassthroughSel::Available,
            RawPassthrough::Word(w) => {
                return Err(ConfigError(format!(
                    "passthrough: {w:?} is neither \"available\" nor a list of PCI addresses"
                )))
            }
            RawPassthrough::List(l) => PassthroughSel::Addresses(
                l.iter()
                    .map(|a| {
                        a.parse::<PciAddress>()
                            .map_err(|e| ConfigError(format!("passthrough: {a:?}: {e}")))
                    })
                    .collect::<Result<_, _>>()?,
            ),
        };
        for m in &raw.mdev {
            if m.count == 0 || m.count > 1024 {
                return Err(ConfigError(format!(
                    "mdev {:?}: count must be 1 to 1024, not {}",
                    m.mdev_type, m.count
                )));
            }
        }
        if raw.wgpu_shares > 1024 {
            return Err(ConfigError(format!(
                "wgpu_shares must be at most 1024, not {}",
                raw.wgpu_shares
            )));
        }
        if let Some(d) = &raw.dra {
            if d.wgpu_shares > 1024 {
                return Err(ConfigError(format!(
                    "dra.wgpu_shares must be at most 1024, not {}",
                    d.wgpu_shares
                )));
            }
        }
        let poll = raw.poll_interval_ms.unwrap_or(DEFAULT_POLL_MS);
        if !(10..=3_600_000).contains(&poll) {
            return Err(ConfigError(format!(
                "poll_interval_ms must be 10 to 3600000, not {poll}"
            )));
        }
        let plugin_dir = raw
            .plugin_dir
            .unwrap_or_else(|| PathBuf::from(DEFAULT_PLUGIN_DIR));
        let kubelet_socket = raw
            .kubelet_socket
            .unwrap_or_else(|| plugin_dir.join("kubelet.sock"));
        Ok(Config {
            passthrough,
            mdev: raw.mdev,
            sriov: raw.sriov,
            wgpu_shares: raw.wgpu_shares,
            plugin_dir,
            kubelet_socket,
            poll_interval_ms: poll,
            allow_boot_vga: raw.allow_boot_vga,
            dra: raw.dra,
        })
    }

    /// Reads and parses a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
        Self::from_json(&text).map_err(|e| ConfigError(format!("{}: {}", path.display(), e.0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_config() {
        let c = Config::from_json(
            r#"{"passthrough":["0000:86:00.0"],"mdev":[{"type":"nvidia-222","count":2}],
                "sriov":[{"pf":"0000:03:00.0","num_vfs":4}],"wgpu_shares":3,
                "plugin_dir":"/tmp/p","poll_interval_ms":100}"#,
        )
        .unwrap();
        assert_eq!(
            c.passthrough,
            PassthroughSel::Addresses(vec!["0000:86:00.0".parse().unwrap()])
        );
        assert_eq!(c.mdev[0].count, 2);
        assert_eq!(c.kubelet_socket, PathBuf::from("/tmp/p/kubelet.sock"));
        assert_eq!(c.wgpu_shares, 3);
        assert_eq!(
            Config::from_json(r#"{"passthrough":"available"}"#)
                .unwrap()
                .passthrough,
            PassthroughSel::Available
        );
    }

    #[test]
    fn bad_configs_are_refused_with_the_reason() {
        for (text, says) in [
            (r#"{"passthrough":"all"}"#, "neither"),
            (r#"{"passthrough":["00:02"]}"#, "passthrough"),
            (r#"{"mdev":[{"type":"x","count":0}]}"#, "count"),
            (r#"{"poll_interval_ms":0}"#, "poll_interval_ms"),
            (r#"{"gpus":[]}"#, "unknown field"),
            (r#"{"dra":{"wgpu_shares":5000}}"#, "dra.wgpu_shares"),
            (r#"{"dra":{"socket":"/x"}}"#, "unknown field"),
            ("[", "not a valid"),
        ] {
            let e = Config::from_json(text).unwrap_err().0;
            assert!(e.contains(says), "{text}: {e}");
        }
    }
}
