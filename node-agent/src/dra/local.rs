//! [`ClaimSource`] and [`Publisher`] on local files: for a node run without an API server
//! (allocations written by hand or by another tool) and for the process-level tests. Marked
//! as such in the README: a cluster uses [`super::kube::KubeDra`].
//!
//! The claims file maps a claim UID to its allocation:
//! `{"<uid>": {"namespace": "ns", "name": "c", "devices": [{"request": "gpu", "pool": "node",
//! "device": "gpu-0000-86-00-0"}]}}`. The slices file receives the ResourceSlices the API
//! server would (a JSON list), rewritten atomically at every publication.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};

use serde::Deserialize;

use super::api::{Allocated, BoxFuture, ClaimRef, ClaimSource, Publisher};
use super::devices::DraDevice;
use super::slices;

/// The largest claims file read.
const MAX_BYTES: u64 = 16 << 20;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileClaim {
    namespace: String,
    name: String,
    devices: Vec<FileDevice>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDevice {
    request: String,
    pool: String,
    device: String,
}

/// Claims read from a JSON file at every prepare.
pub struct FileClaims {
    /// The file.
    pub path: PathBuf,
}

impl ClaimSource for FileClaims {
    fn allocated<'a>(
        &'a self,
        claim: &'a ClaimRef,
    ) -> BoxFuture<'a, Result<Vec<Allocated>, String>> {
        Box::pin(async move {
            let at = self.path.display();
            let meta = std::fs::metadata(&self.path).map_err(|e| format!("{at}: {e}"))?;
            if !meta.is_file() || meta.len() > MAX_BYTES {
                return Err(format!(
                    "{at}: not a regular file of at most {MAX_BYTES} bytes"
                ));
            }
            let text = std::fs::read_to_string(&self.path).map_err(|e| format!("{at}: {e}"))?;
            let all: BTreeMap<String, FileClaim> =
                serde_json::from_str(&text).map_err(|e| format!("{at}: {e}"))?;
            let c = all.get(&claim.uid).ok_or_else(|| {
                format!("{at}: no claim with UID {} (not allocated yet)", claim.uid)
            })?;
            if c.namespace != claim.namespace || c.name != claim.name {
                return Err(format!(
                    "{at}: UID {} is claim {}/{}, but kubelet names {}/{}",
                    claim.uid, c.namespace, c.name, claim.namespace, claim.name
                ));
            }
            Ok(c.devices
                .iter()
                .map(|d| Allocated {
                    request: d.request.clone(),
                    pool: d.pool.clone(),
                    device: d.device.clone(),
                })
                .collect())
        })
    }
}

/// Publishes the node's ResourceSlices into a JSON file.
pub struct FilePublisher {
    /// The file.
    pub path: PathBuf,
    /// The node (pool) name.
    pub node: String,
    generation: AtomicI64,
}

impl FilePublisher {
    /// Publishes `node`'s slices into `path`.
    pub fn new(path: PathBuf, node: String) -> Self {
        FilePublisher {
            path,
            node,
            generation: AtomicI64::new(0),
        }
    }
}

impl Publisher for FilePublisher {
    fn publish<'a>(&'a self, devices: &'a [DraDevice]) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
            let pool =
                slices::slices(&self.node, generation, devices).map_err(|e| e.to_string())?;
            let text = serde_json::to_vec_pretty(&pool.slices).map_err(|e| e.to_string())?;
            let tmp = self.path.with_extension("tmp");
            std::fs::write(&tmp, text)
                .and_then(|()| std::fs::rename(&tmp, &self.path))
                .map_err(|e| format!("{}: {e}", self.path.display()))
        })
    }
}
