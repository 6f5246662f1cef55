//! `UnifiedGpuManager`: the product guide's API over one scan.

use vm_device_host::{AdapterInfo, PciAddress};

use super::{decide, BackendListing, Candidate, Decision, GpuMode, ManagerError, Preference};
use crate::host::{self, Host};
use crate::inventory::HostInventory;
use crate::ladder::Filter;
use crate::ladder::{BackendStats, GpuBackend};
use crate::rungs;

/// Scans the host, ranks what each rung can offer, selects one and initializes it.
///
/// The wgpu adapter probe is lazy: it runs only when the wgpu rung is looked at (a listing
/// of all backends, or a selection that falls through to wgpu), never for a plan that stops
/// at passthrough or mdev.
pub struct UnifiedGpuManager {
    host: Host,
    inventory: Option<HostInventory>,
    filter: Filter,
    pref: Preference,
    candidates: [Option<Vec<Candidate>>; 3],
    adapters: Option<Result<Vec<AdapterInfo>, String>>,
    decision: Option<Decision>,
    selected: Option<Candidate>,
    backend: Option<Box<dyn GpuBackend>>,
}

impl Default for UnifiedGpuManager {
    fn default() -> Self {
        Self::new()
    }
}

impl UnifiedGpuManager {
    /// A manager for this machine (`LinuxHost`), or for the fixture named by `VM_HOST_ROOT`.
    pub fn new() -> Self {
        Self::with_host(host::default_host())
    }

    /// A manager over any host (a `SimHost` in tests and with `--host-root`).
    pub fn with_host(host: Host) -> Self {
        Self {
            host,
            inventory: None,
            filter: Filter::default(),
            pref: Preference::default(),
            candidates: [None, None, None],
            adapters: None,
            decision: None,
            selected: None,
            backend: None,
        }
    }

    /// The host this manager works on.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// Sets the rung to try first.
    pub fn set_preferred_mode(&mut self, mode: GpuMode) {
        self.pref.preferred = Some(mode);
    }

    /// With fallback on (the default), an unavailable preferred rung falls down the ladder.
    pub fn set_auto_fallback(&mut self, on: bool) {
        self.pref.auto_fallback = on;
    }

    /// Restricts every rung to one GPU (`--gpu-device`).
    pub(crate) fn set_device(&mut self, device: Option<PciAddress>) {
        self.filter.device = device;
        self.candidates = [None, None, None];
    }

    /// Restricts the mediated rung to a type id or name (`--mdev-type`).
    pub(crate) fn set_mdev_type(&mut self, mdev_type: Option<String>) {
        self.filter.mdev_type = mdev_type;
        self.candidates = [None, None, None];
    }

    /// Lets the boot display be passed through (`--allow-boot-vga`).
    pub(crate) fn set_allow_boot_vga(&mut self, allow: bool) {
        self.filter.allow_boot_vga = allow;
        self.candidates = [None, None, None];
    }

    /// The current preference.
    pub fn preference(&self) -> Preference {
        self.pref
    }

    /// Scans the host once; later calls rescan.
    pub fn scan_backends(&mut self) -> Result<(), ManagerError> {
        self.inventory = Some(HostInventory::scan(self.host.as_ref()));
        self.candidates = [None, None, None];
        self.adapters = None;
        self.decision = None;
        self.selected = None;
        Ok(())
    }

    /// The scanned inventory.
    pub fn inventory(&self) -> Option<&HostInventory> {
        self.inventory.as_ref()
    }

    /// Candidates of one rung (probing adapters for wgpu on first use).
    pub fn candidates(&mut self, mode: GpuMode) -> Result<&[Candidate], ManagerError> {
        let inv = self.inventory.as_ref().ok_or(ManagerError::NotScanned)?;
        let slot = mode.rank();
        if self.candidates[slot].is_none() {
            let list = match mode {
                GpuMode::Passthrough => rungs::passthrough::probe(inv, &self.filter),
                GpuMode::Mdev => rungs::mdev::probe(inv, &self.filter),
                GpuMode::Wgpu => {
                    let host = &self.host;
                    let adapters = self
                        .adapters
                        .get_or_insert_with(|| host.probe_adapters().map_err(|e| e.to_string()));
                    rungs::wgpu::probe(inv, adapters, &self.filter)
                }
            };
            self.candidates[slot] = Some(list);
        }
        Ok(self.candidates[slot].as_deref().unwrap_or_default())
    }

    /// Every candidate of every rung, highest priority first: the listing that
    /// `print_available_backends` shows and `select_by_index` indexes.
    pub fn backends(&mut self) -> Result<Vec<Candidate>, ManagerError> {
        let mut all = Vec::new();
        for mode in GpuMode::LADDER {
            all.extend_from_slice(self.candidates(mode)?);
        }
        Ok(all)
    }

    /// True when the wgpu adapter probe has run.
    pub fn adapters_probed(&self) -> bool {
        self.adapters.is_some()
    }

    fn run_decision(&mut self, pref: Preference) -> Result<&Candidate, ManagerError> {
        if self.inventory.is_none() {
            return Err(ManagerError::NotScanned);
        }
        let mut err = None;
        let decision = decide(&pref, |m| match self.candidates(m) {
            Ok(c) => c.to_vec(),
            Err(e) => {
                err = Some(e);
                Vec::new()
            }
        });
        if let Some(e) = err {
            return Err(e);
        }
        self.selected = decision.selected.clone();
        let requested = decision.considered.clone();
        let rejected = decision.rejected.clone();
        self.decision = Some(decision);
        self.selected.as_ref().ok_or(ManagerError::NoBackend {
            requested,
            rejected,
        })
    }

    /// Picks the best available backend: the preferred rung (default passthrough) and,
    /// with fallback on, the rungs below it.
    pub fn auto_select(&mut self) -> Result<&Candidate, ManagerError> {
        self.run_decision(self.pref)
    }

    /// Picks the best candidate of exactly this rung, or fails with every reason.
    pub fn select_by_mode(&mut self, mode: GpuMode) -> Result<&Candidate, ManagerError> {
        self.run_decision(Preference {
            preferred: Some(mode),
            auto_fallback: false,
        })
    }

    /// Picks entry `index` of [`backends`](Self::backends).
    pub fn select_by_index(&mut self, index: usize) -> Result<&Candidate, ManagerError> {
        let all = self.backends()?;
        let len = all.len();
        let c = all
            .into_iter()
            .nth(index)
            .ok_or(ManagerError::BadIndex { index, len })?;
        if let Some(r) = c.reason() {
            return Err(ManagerError::Unavailable {
                index,
                mode: c.mode,
                device: c.device().unwrap_or_else(|| "-".into()),
                reason: r.message.clone(),
            });
        }
        self.decision = Some(Decision {
            selected: Some(c.clone()),
            rejected: Vec::new(),
            considered: vec![c.mode],
        });
        self.selected = Some(c);
        Ok(self.selected.as_ref().expect("just set"))
    }

    /// Builds the selected backend and initializes it: prepares the GPU and opens it through
    /// VFIO (passthrough, a VF), creates the mediated device (mdev, vendor vGPU), or opens
    /// the wgpu adapter. A passthrough backend gives the GPU back when the manager is dropped
    /// or another backend is initialized.
    pub fn initialize_selected(&mut self) -> Result<(), ManagerError> {
        let c = self.selected.clone().ok_or(ManagerError::NothingSelected)?;
        // Drop (release) a previous backend first: one GPU per manager.
        self.backend = None;
        let mut b = super::backends::build(&self.host, &c, self.filter.allow_boot_vga)?;
        b.init().map_err(|e| ManagerError::Init {
            mode: c.mode,
            message: e.source.to_string(),
        })?;
        self.backend = Some(b);
        Ok(())
    }

    /// The initialized backend.
    pub fn backend(&self) -> Option<&dyn GpuBackend> {
        self.backend.as_deref()
    }

    /// Counters of the initialized backend.
    pub fn get_stats(&self) -> Option<BackendStats> {
        self.backend.as_ref().map(|b| b.get_stats())
    }

    /// The selected backend.
    pub fn get_selected_backend(&self) -> Option<&Candidate> {
        self.selected.as_ref()
    }

    /// The last decision, with the candidates passed over.
    pub fn decision(&self) -> Option<&Decision> {
        self.decision.as_ref()
    }

    /// The listing with indexes (for `select_by_index`), as a value the caller renders.
    pub fn listing(&mut self) -> Result<BackendListing, ManagerError> {
        self.backends().map(BackendListing)
    }

    /// The product guide's convenience: [`UnifiedGpuManager::listing`] written to standard
    /// output (or why there is none). Programs that print elsewhere, such as `vm-cli`,
    /// render the listing themselves.
    pub fn print_available_backends(&mut self) {
        match self.listing() {
            Ok(l) => print!("{l}"),
            Err(e) => println!("{e}"),
        }
    }
}
