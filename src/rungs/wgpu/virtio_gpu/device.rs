//! The virtio-gpu 2D device: command processing over guest memory, and a split-virtqueue
//! front end.

use std::collections::HashMap;
use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemory};

use super::edid::{build_edid, EDID_MAX_DIMENSION};
use super::protocol::{
    ctrl, decode_request, Command, CtrlHeader, CursorPos, DisplayOne, ErrorCode, Format, Rect,
    Response, DEVICE_FEATURES, HDR_SIZE, MAX_REQUEST_SIZE, VIRTIO_GPU_F_EDID, VIRTIO_GPU_F_VIRGL,
    VIRTIO_GPU_MAX_SCANOUTS,
};
use super::renderer::{ReadbackError, Renderer};
use super::resources::{charged_bytes, Backing, Resource};
use super::scanout::{Cursor, RgbaImage, Scanout, MAX_CURSOR_SIZE};
use super::stats::{DeviceCounters, DeviceStats};
use super::transfer;
use super::webgpu::{self, WebGpu3d};
use super::wgpu_renderer::{GpuGather, WgpuRenderer};
use crate::rungs::wgpu::wgpu_backend::{GpuContext, WgpuError};

/// Default per-device host-memory budget for resources (QEMU's `max_hostmem`).
pub const DEFAULT_MAX_HOSTMEM: u64 = 256 << 20;

/// How one VM's virtio-gpu looks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtioGpuConfig {
    /// Display mode of each scanout (1 to 16), offered in GET_DISPLAY_INFO and GET_EDID.
    pub scanouts: Vec<(u32, u32)>,
    /// Host bytes all resources together may use.
    pub max_hostmem: u64,
    /// Serial number written into the EDIDs.
    pub edid_serial: u32,
    /// When transfers are gathered by the GPU from guest memory imported in place.
    pub gpu_gather: GpuGather,
    /// WebGPU for the guest ([`super::webgpu`]): offer `VIRTIO_GPU_F_VIRGL` and the WebGPU
    /// capset, and run the guest's contexts on the adapter within this budget (shared by
    /// all of the VM's contexts). `None`: a 2D device only.
    pub webgpu: Option<webgpu_host::Budget>,
}

impl Default for VirtioGpuConfig {
    fn default() -> Self {
        VirtioGpuConfig {
            scanouts: vec![(1024, 768)],
            max_hostmem: DEFAULT_MAX_HOSTMEM,
            edid_serial: 1,
            gpu_gather: GpuGather::Auto,
            webgpu: None,
        }
    }
}

/// Which virtqueue a request arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueKind {
    /// Queue 0: control commands.
    Control,
    /// Queue 1: cursor commands.
    Cursor,
}

/// Errors of device operations that are not guest commands.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// A scanout id outside the device's scanouts.
    #[error("scanout {0} does not exist on this virtio-gpu device")]
    NoSuchScanout(u32),
    /// The scanout shows nothing.
    #[error("scanout {0} is disabled (the guest has not set a resource on it)")]
    ScanoutDisabled(u32),
    /// Reading the GPU image back failed.
    #[error("reading back scanout {scanout}: {message}")]
    Readback {
        /// Scanout.
        scanout: u32,
        /// wgpu's message.
        message: String,
    },
    /// The virtqueue could not be read or written.
    #[error("virtqueue {queue:?}: {message}")]
    Queue {
        /// Queue.
        queue: QueueKind,
        /// What failed.
        message: String,
    },
}

/// A change an external display must see (the vhost-user-gpu display socket), recorded
/// once [`VirtioGpuDevice::record_display_events`] is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisplayEvent {
    /// The scanout now shows an image of this size; 0×0: it is disabled.
    Mode {
        /// Scanout.
        scanout: u32,
        /// Width.
        width: u32,
        /// Height.
        height: u32,
    },
    /// This area of the scanout (scanout coordinates) changed: a flush, or the cursor.
    Damage {
        /// Scanout.
        scanout: u32,
        /// The area.
        rect: Rect,
    },
}

/// What one pass over a virtqueue did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueRun {
    /// Descriptor chains completed.
    pub chains: usize,
    /// Whether the driver wants an interrupt.
    pub needs_notification: bool,
}

/// One VM's virtio-gpu device: the protocol state, its pixels in a [`Renderer`] (by
/// default the wgpu one; [`super::renderer::NullRenderer`] for tests without an adapter).
#[derive(Debug)]
pub struct VirtioGpuDevice<R: Renderer = WgpuRenderer> {
    renderer: R,
    config: VirtioGpuConfig,
    resources: HashMap<u32, Resource>,
    hostmem_used: u64,
    scanouts: Vec<Scanout>,
    cursor: Option<Cursor>,
    counters: Arc<DeviceCounters>,
    driver_features: u64,
    /// Display changes since the last [`VirtioGpuDevice::take_display_events`], when on.
    display_events: Option<Vec<DisplayEvent>>,
    /// The 3D (WebGPU) side, when the configuration asks for it.
    webgpu: Option<WebGpu3d>,
}

impl VirtioGpuDevice {
    /// A device on a shared wgpu context (see `WgpuBackend::create_device`).
    pub fn new(ctx: Arc<GpuContext>, config: VirtioGpuConfig) -> Result<Self, WgpuError> {
        let adapter = ctx.adapter.clone();
        let renderer = WgpuRenderer::new(ctx, config.gpu_gather);
        VirtioGpuDevice::build(renderer, config, Some(adapter))
    }
}

impl<R: Renderer> VirtioGpuDevice<R> {
    /// A device rendering with `renderer` (e.g. a [`super::renderer::NullRenderer`]), 2D
    /// only: [`VirtioGpuConfig::webgpu`] needs a wgpu adapter ([`VirtioGpuDevice::new`]).
    pub fn with_renderer(renderer: R, config: VirtioGpuConfig) -> Result<Self, WgpuError> {
        if config.webgpu.is_some() {
            return Err(WgpuError::InvalidConfig(format!(
                "WebGPU is served only on a wgpu adapter, not on the {}",
                renderer.name()
            )));
        }
        VirtioGpuDevice::build(renderer, config, None)
    }

    /// Checks the configuration and builds the device; the WebGPU side runs on `adapter`.
    fn build(
        renderer: R,
        config: VirtioGpuConfig,
        adapter: Option<wgpu::Adapter>,
    ) -> Result<Self, WgpuError> {
        let n = config.scanouts.len();
        if n == 0 || n > VIRTIO_GPU_MAX_SCANOUTS {
            return Err(WgpuError::InvalidConfig(format!(
                "{n} scanouts: a virtio-gpu has 1 to {VIRTIO_GPU_MAX_SCANOUTS}"
            )));
        }
        let max = renderer.max_texture_dim().min(EDID_MAX_DIMENSION);
        for (i, &(w, h)) in config.scanouts.iter().enumerate() {
            if w == 0 || h == 0 || w > max || h > max {
                return Err(WgpuError::InvalidConfig(format!(
                    "scanout {i} mode {w}x{h}: each side must be 1..={max} (adapter {} and EDID limits)",
                    renderer.name()
                )));
            }
        }
        if config.max_hostmem == 0 {
            return Err(WgpuError::InvalidConfig(
                "max_hostmem is 0: no resource could ever be created".into(),
            ));
        }
        let webgpu = config
            .webgpu
            .zip(adapter)
            .map(|(budget, adapter)| WebGpu3d::new(adapter, budget));
        Ok(VirtioGpuDevice {
            webgpu,
            scanouts: config.scanouts.iter().map(|&m| Scanout::new(m)).collect(),
            config,
            resources: HashMap::new(),
            hostmem_used: 0,
            cursor: None,
            counters: Arc::new(DeviceCounters::default()),
            driver_features: DEVICE_FEATURES,
            display_events: None,
            renderer,
        })
    }

    /// The renderer holding the pixels.
    pub fn renderer(&self) -> &R {
        &self.renderer
    }

    /// The configuration.
    pub fn config(&self) -> &VirtioGpuConfig {
        &self.config
    }

    /// Device-specific feature bits offered: `VIRTIO_GPU_F_EDID`, and `VIRTIO_GPU_F_VIRGL`
    /// when WebGPU is served.
    pub fn device_features(&self) -> u64 {
        if self.webgpu.is_some() {
            DEVICE_FEATURES | 1 << VIRTIO_GPU_F_VIRGL
        } else {
            DEVICE_FEATURES
        }
    }

    /// Records the features the driver accepted (bits not offered are dropped). A driver
    /// negotiating again is a new driver: its 3D contexts and resources are gone.
    pub fn set_driver_features(&mut self, features: u64) {
        self.driver_features = features & self.device_features();
        if let Some(w) = &mut self.webgpu {
            w.reset();
        }
    }

    /// The 3D (WebGPU) side, when served.
    pub fn webgpu(&self) -> Option<&WebGpu3d> {
        self.webgpu.as_ref()
    }

    /// The device configuration space: events_read, events_clear, num_scanouts,
    /// num_capsets (16 bytes, little-endian).
    pub fn config_space(&self) -> [u8; 16] {
        let mut c = [0u8; 16];
        c[8..12].copy_from_slice(&(self.scanouts.len() as u32).to_le_bytes());
        let capsets = u32::from(self.webgpu.is_some());
        c[12..16].copy_from_slice(&capsets.to_le_bytes());
        c
    }

    /// The live counters (shared with the backend).
    pub fn counters(&self) -> &Arc<DeviceCounters> {
        &self.counters
    }

    /// A snapshot of this device's statistics.
    pub fn stats(&self) -> DeviceStats {
        self.counters.snapshot()
    }

    /// Zeroes the counters; resources and scanouts stay.
    pub fn reset_stats(&self) {
        self.counters.reset();
    }

    /// Host bytes the resources use now (never above `max_hostmem`).
    pub fn hostmem_used(&self) -> u64 {
        self.hostmem_used
    }

    /// Number of resources alive.
    pub fn resource_count(&self) -> usize {
        self.resources.len()
    }

    /// Number of scanouts.
    pub fn num_scanouts(&self) -> u32 {
        self.scanouts.len() as u32
    }

    /// The resource and rectangle a scanout shows, if any.
    pub fn scanout_state(&self, scanout: u32) -> Option<(u32, Rect)> {
        let s = self.scanouts.get(scanout as usize)?;
        s.is_enabled().then_some((s.resource_id, s.rect))
    }

    /// Reads a scanout's composited image back (resource and cursor), as RGBA, after
    /// presenting whatever is pending.
    pub fn screenshot(&mut self, scanout: u32) -> Result<RgbaImage, DeviceError> {
        self.present();
        let s = self
            .scanouts
            .get(scanout as usize)
            .ok_or(DeviceError::NoSuchScanout(scanout))?;
        let disabled = DeviceError::ScanoutDisabled(scanout);
        let res = self.resources.get(&s.resource_id).ok_or(disabled)?;
        self.renderer
            .screenshot(scanout, s, res)
            .map_err(|e| readback_error(scanout, e))
    }

    /// Starts (or stops) recording [`DisplayEvent`]s for an external display.
    pub fn record_display_events(&mut self, on: bool) {
        self.display_events = on.then(Vec::new);
    }

    /// The display changes since the last call (empty when not recording).
    pub fn take_display_events(&mut self) -> Vec<DisplayEvent> {
        self.display_events
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    fn display_event(&mut self, e: DisplayEvent) {
        let Some(v) = self.display_events.as_mut() else {
            return;
        };
        if v.len() < 4096 {
            v.push(e);
            return;
        }
        // Nobody took the events for a long time: the current state says it all.
        v.clear();
        for (i, s) in self.scanouts.iter().enumerate() {
            let (scanout, width, height) = (i as u32, s.rect.width, s.rect.height);
            v.push(DisplayEvent::Mode {
                scanout,
                width,
                height,
            });
            if s.is_enabled() {
                v.push(DisplayEvent::Damage {
                    scanout,
                    rect: Rect::new(0, 0, width, height),
                });
            }
        }
    }

    /// Reads `rect` (scanout coordinates) of a scanout's presented image as x8r8g8b8
    /// little-endian pixels (bytes B, G, R, X: what QEMU's vhost-user-gpu UPDATE carries),
    /// `rect.width * 4` bytes per row.
    pub fn read_scanout_bgrx(&mut self, scanout: u32, rect: Rect) -> Result<Vec<u8>, DeviceError> {
        self.with_scanout_bgrx(scanout, rect, <[u8]>::to_vec)
    }

    /// Like [`VirtioGpuDevice::read_scanout_bgrx`], but lends the pixels to `f` instead of
    /// copying them out: straight from the mapped readback buffer where the layout allows.
    pub fn with_scanout_bgrx<T>(
        &mut self,
        scanout: u32,
        rect: Rect,
        f: impl FnOnce(&[u8]) -> T,
    ) -> Result<T, DeviceError> {
        self.present();
        let s = self
            .scanouts
            .get(scanout as usize)
            .ok_or(DeviceError::NoSuchScanout(scanout))?;
        let res = self
            .resources
            .get(&s.resource_id)
            .ok_or(DeviceError::ScanoutDisabled(scanout))?;
        if rect.is_empty() || !rect.fits_in(s.rect.width, s.rect.height) {
            return Err(DeviceError::Readback {
                scanout,
                message: format!(
                    "area {rect:?} is outside the {}x{} scanout",
                    s.rect.width, s.rect.height
                ),
            });
        }
        self.renderer
            .with_scanout_bgrx(scanout, s, res, rect, f)
            .map_err(|e| readback_error(scanout, e))
    }

    /// Processes one request (the bytes the driver wrote) and returns the response bytes;
    /// the scanouts it changed are presented before it returns.
    pub fn process_request<M: GuestMemory>(
        &mut self,
        queue: QueueKind,
        request: &[u8],
        mem: &M,
    ) -> Vec<u8> {
        let r = self.handle_request(queue, request, mem);
        self.present();
        r
    }

    /// Processes one request; presentation of changed scanouts is left pending (a fenced
    /// request presents and waits for the GPU before its response).
    fn handle_request<M: GuestMemory>(
        &mut self,
        queue: QueueKind,
        request: &[u8],
        mem: &M,
    ) -> Vec<u8> {
        if let Some(hdr) = CtrlHeader::decode(request).filter(|h| webgpu::cmd::is_3d(h.type_)) {
            return self.handle_3d(queue, &hdr, request, mem);
        }
        match decode_request(request) {
            Err((hdr, _why)) => {
                self.counters.command(hdr.map_or(u32::MAX, |h| h.type_));
                self.counters.error(ErrorCode::Unspec);
                Response::Err(ErrorCode::Unspec).encode(hdr.as_ref())
            }
            Ok((hdr, cmd)) => {
                self.counters.command(hdr.type_);
                let resp = self.execute(queue, cmd, mem);
                if let Response::Err(e) = &resp {
                    self.counters.error(*e);
                }
                if hdr.is_fenced() {
                    self.present();
                    self.complete_gpu_work();
                    self.counters.fence();
                }
                resp.encode(Some(&hdr))
            }
        }
    }

    /// A 3D or capset command: ERR_UNSPEC when WebGPU is not served (as before it existed)
    /// or on the cursor queue.
    fn handle_3d<M: GuestMemory>(
        &mut self,
        queue: QueueKind,
        hdr: &CtrlHeader,
        request: &[u8],
        mem: &M,
    ) -> Vec<u8> {
        self.counters.command(hdr.type_);
        // The first body word: the resource of RESOURCE_CREATE_3D and CTX_*_RESOURCE.
        let id = request
            .get(HDR_SIZE..HDR_SIZE + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        let id_is_2d = id.is_some_and(|id| self.resources.contains_key(&id));
        let resp = match (&mut self.webgpu, queue) {
            (Some(w), QueueKind::Control) => {
                if matches!(
                    hdr.type_,
                    webgpu::cmd::CTX_ATTACH_RESOURCE | webgpu::cmd::CTX_DETACH_RESOURCE
                ) && id_is_2d
                {
                    // Linux attaches every GEM object a DRM client opens to its context,
                    // the fbdev's dumb buffers (2D) included; the 3D side never uses them.
                    match w.has_context(hdr.ctx_id) {
                        true => Response::OkNoData.encode(Some(hdr)),
                        false => Response::Err(ErrorCode::InvalidContextId).encode(Some(hdr)),
                    }
                } else if hdr.type_ == webgpu::cmd::RESOURCE_CREATE_3D {
                    let r = match id {
                        Some(id) if self.resources.contains_key(&id) => {
                            Err(ErrorCode::InvalidResourceId)
                        }
                        _ => w.create_resource(request),
                    };
                    match r {
                        Ok(()) => Response::OkNoData.encode(Some(hdr)),
                        Err(e) => Response::Err(e).encode(Some(hdr)),
                    }
                } else {
                    w.handle(hdr, request, mem)
                }
            }
            _ => Response::Err(ErrorCode::Unspec).encode(Some(hdr)),
        };
        if let Some(e) = response_type(&resp).and_then(ErrorCode::from_wire) {
            self.counters.error(e);
        }
        if hdr.is_fenced() {
            self.present();
            self.complete_gpu_work();
            self.counters.fence();
        }
        resp
    }

    /// Presents every scanout with pending changes and counts a frame for each scanout a
    /// RESOURCE_FLUSH reached. A scanout showing a whole resource with no cursor on it is
    /// scanned out directly from the resource texture (like a KMS primary plane); otherwise
    /// its damage is composed into its target (resource copy, cursor blended on top). All
    /// recorded GPU work (uploads, cursor copies, composition) goes in one submission.
    pub fn present(&mut self) {
        let VirtioGpuDevice {
            renderer,
            scanouts,
            resources,
            cursor,
            counters,
            ..
        } = self;
        for (i, s) in scanouts.iter_mut().enumerate() {
            if s.dirty.is_empty() {
                continue;
            }
            let dirty = std::mem::take(&mut s.dirty);
            let Some(res) = resources.get(&s.resource_id) else {
                continue;
            };
            let c = cursor.as_ref().filter(|c| c.scanout == i as u32);
            renderer.present_scanout(i as u32, s.rect, dirty, res, c);
            if s.flushed {
                counters.frame();
            }
            s.flushed = false;
        }
        renderer.submit();
    }

    /// Waits until the GPU has finished everything submitted so far.
    fn complete_gpu_work(&mut self) {
        self.renderer.wait_idle();
    }

    /// Executes a decoded command that arrived on `queue` (control commands on the cursor
    /// queue and vice versa are ERR_UNSPEC). Presentation is left pending.
    pub fn execute<M: GuestMemory>(&mut self, queue: QueueKind, cmd: Command, mem: &M) -> Response {
        let cursor_cmd = matches!(
            cmd,
            Command::UpdateCursor { .. } | Command::MoveCursor { .. }
        );
        if cursor_cmd != (queue == QueueKind::Cursor) {
            return Response::Err(ErrorCode::Unspec);
        }
        let r = match cmd {
            Command::GetDisplayInfo => Ok(Response::OkDisplayInfo(
                self.scanouts
                    .iter()
                    .map(|s| DisplayOne {
                        rect: Rect::new(0, 0, s.mode.0, s.mode.1),
                        enabled: true,
                    })
                    .collect(),
            )),
            Command::GetEdid { scanout } => self.get_edid(scanout),
            Command::ResourceCreate2d {
                resource_id,
                format,
                width,
                height,
            } => self.create_2d(resource_id, format, width, height),
            Command::ResourceUnref { resource_id } if self.is_3d(resource_id) => self
                .webgpu
                .as_mut()
                .map_or(Err(ErrorCode::InvalidResourceId), |w| w.unref(resource_id))
                .map(|()| Response::OkNoData),
            Command::ResourceUnref { resource_id } => self.unref(resource_id),
            Command::ResourceAttachBacking {
                resource_id,
                entries,
            } if self.is_3d(resource_id) => Backing::new(&entries, mem).and_then(|b| {
                self.webgpu
                    .as_mut()
                    .map_or(Err(ErrorCode::InvalidResourceId), |w| {
                        w.attach_backing(resource_id, b)
                    })
                    .map(|()| Response::OkNoData)
            }),
            Command::ResourceDetachBacking { resource_id } if self.is_3d(resource_id) => self
                .webgpu
                .as_mut()
                .map_or(Err(ErrorCode::InvalidResourceId), |w| {
                    w.detach_backing(resource_id)
                })
                .map(|()| Response::OkNoData),
            Command::SetScanout {
                rect,
                scanout_id,
                resource_id,
            } => self.set_scanout(scanout_id, resource_id, rect),
            Command::ResourceFlush { rect, resource_id } => self.flush(resource_id, rect),
            Command::TransferToHost2d {
                rect,
                offset,
                resource_id,
            } => self.transfer(resource_id, rect, offset, mem),
            Command::ResourceAttachBacking {
                resource_id,
                entries,
            } => {
                let res = self
                    .resources
                    .get_mut(&resource_id)
                    .ok_or(ErrorCode::InvalidResourceId);
                res.and_then(|res| {
                    if res.backing.is_some() {
                        return Err(ErrorCode::Unspec);
                    }
                    res.backing = Some(Backing::new(&entries, mem)?);
                    self.renderer.backing_changed(resource_id);
                    Ok(Response::OkNoData)
                })
            }
            Command::ResourceDetachBacking { resource_id } => self
                .resources
                .get_mut(&resource_id)
                .ok_or(ErrorCode::InvalidResourceId)
                .and_then(|res| {
                    self.renderer.backing_changed(resource_id);
                    res.backing
                        .take()
                        .map(|_| Response::OkNoData)
                        .ok_or(ErrorCode::Unspec)
                }),
            Command::UpdateCursor {
                pos,
                resource_id,
                hot_x,
                hot_y,
            } => self.update_cursor(pos, resource_id, hot_x, hot_y),
            Command::MoveCursor { pos } => self.move_cursor(pos),
        };
        r.unwrap_or_else(Response::Err)
    }

    fn is_3d(&self, resource_id: u32) -> bool {
        self.webgpu
            .as_ref()
            .is_some_and(|w| w.has_resource(resource_id))
    }

    fn get_edid(&self, scanout: u32) -> Result<Response, ErrorCode> {
        if self.driver_features & (1 << VIRTIO_GPU_F_EDID) == 0 {
            return Err(ErrorCode::Unspec);
        }
        let s = self
            .scanouts
            .get(scanout as usize)
            .ok_or(ErrorCode::InvalidScanoutId)?;
        Ok(Response::OkEdid(
            build_edid(
                s.mode.0,
                s.mode.1,
                self.config.edid_serial.wrapping_add(scanout),
            )
            .to_vec(),
        ))
    }

    fn create_2d(&mut self, id: u32, format: u32, w: u32, h: u32) -> Result<Response, ErrorCode> {
        if id == 0 || self.resources.contains_key(&id) || self.is_3d(id) {
            return Err(ErrorCode::InvalidResourceId);
        }
        let format = Format::from_wire(format).ok_or(ErrorCode::InvalidParameter)?;
        let max = self.renderer.max_texture_dim();
        if w == 0 || h == 0 || w > max || h > max {
            return Err(ErrorCode::InvalidParameter);
        }
        let charged = charged_bytes(w, h).ok_or(ErrorCode::OutOfMemory)?;
        let used = self
            .hostmem_used
            .checked_add(charged)
            .ok_or(ErrorCode::OutOfMemory)?;
        if used > self.config.max_hostmem {
            return Err(ErrorCode::OutOfMemory);
        }
        let res = Resource {
            id,
            format,
            width: w,
            height: h,
            charged,
            backing: None,
        };
        self.renderer.create_resource(&res)?;
        self.resources.insert(id, res);
        self.hostmem_used = used;
        self.publish_resources();
        Ok(Response::OkNoData)
    }

    fn publish_resources(&self) {
        self.counters
            .set_resources(self.resources.len() as u64, self.hostmem_used);
    }

    fn unref(&mut self, id: u32) -> Result<Response, ErrorCode> {
        let res = self
            .resources
            .remove(&id)
            .ok_or(ErrorCode::InvalidResourceId)?;
        self.renderer.destroy_resource(id);
        self.hostmem_used = self.hostmem_used.saturating_sub(res.charged);
        let mut disabled = Vec::new();
        for (i, s) in self.scanouts.iter_mut().enumerate() {
            if s.resource_id == id {
                s.disable();
                disabled.push(i as u32);
            }
        }
        for &scanout in &disabled {
            self.renderer.disable_scanout(scanout);
        }
        for scanout in disabled {
            self.display_event(DisplayEvent::Mode {
                scanout,
                width: 0,
                height: 0,
            });
        }
        self.publish_resources();
        Ok(Response::OkNoData)
    }

    fn set_scanout(&mut self, sid: u32, rid: u32, rect: Rect) -> Result<Response, ErrorCode> {
        let s = self
            .scanouts
            .get_mut(sid as usize)
            .ok_or(ErrorCode::InvalidScanoutId)?;
        if rid == 0 {
            s.disable();
            self.renderer.disable_scanout(sid);
            self.display_event(DisplayEvent::Mode {
                scanout: sid,
                width: 0,
                height: 0,
            });
            return Ok(Response::OkNoData);
        }
        let res = self
            .resources
            .get(&rid)
            .ok_or(ErrorCode::InvalidResourceId)?;
        if rect.is_empty() || !rect.fits_in(res.width, res.height) {
            return Err(ErrorCode::InvalidParameter);
        }
        self.renderer.set_scanout(sid, res, rect);
        s.resource_id = rid;
        s.rect = rect;
        s.opaque = res.format.is_opaque();
        s.dirty.clear();
        s.mark_dirty(Rect::new(0, 0, rect.width, rect.height));
        self.display_event(DisplayEvent::Mode {
            scanout: sid,
            width: rect.width,
            height: rect.height,
        });
        self.display_event(DisplayEvent::Damage {
            scanout: sid,
            rect: Rect::new(0, 0, rect.width, rect.height),
        });
        Ok(Response::OkNoData)
    }

    fn flush(&mut self, rid: u32, rect: Rect) -> Result<Response, ErrorCode> {
        let res = self
            .resources
            .get(&rid)
            .ok_or(ErrorCode::InvalidResourceId)?;
        if !rect.fits_in(res.width, res.height) {
            return Err(ErrorCode::InvalidParameter);
        }
        let mut damaged = Vec::new();
        for (i, s) in self.scanouts.iter_mut().enumerate() {
            if s.resource_id != rid {
                continue;
            }
            let Some(r) = rect.intersect(&s.rect) else {
                continue;
            };
            let local = Rect::new(r.x - s.rect.x, r.y - s.rect.y, r.width, r.height);
            s.mark_dirty(local);
            s.flushed = true;
            damaged.push((i as u32, local));
        }
        for (scanout, rect) in damaged {
            self.display_event(DisplayEvent::Damage { scanout, rect });
        }
        Ok(Response::OkNoData)
    }

    fn transfer<M: GuestMemory>(
        &mut self,
        rid: u32,
        rect: Rect,
        offset: u64,
        mem: &M,
    ) -> Result<Response, ErrorCode> {
        let res = self
            .resources
            .get(&rid)
            .ok_or(ErrorCode::InvalidResourceId)?;
        let bytes = transfer::validate(res, &rect, offset)?;
        if bytes == 0 {
            return Ok(Response::OkNoData);
        }
        self.renderer
            .transfer_to_host(res, &rect, offset, bytes, mem)?;
        self.counters.bytes_to_host(bytes);
        Ok(Response::OkNoData)
    }

    /// Drops everything that refers to guest memory in place (GPU gather imports), after
    /// waiting for the GPU work that reads it. Call it before the guest memory map changes
    /// or is unmapped.
    pub fn forget_guest_memory(&mut self) {
        self.renderer.forget_guest_memory();
    }

    /// Transfers the GPU gathered from guest memory in place (the rest went through the
    /// CPU).
    pub fn gpu_gathered_transfers(&self) -> u64 {
        self.renderer.gpu_gathered_transfers()
    }

    fn update_cursor(
        &mut self,
        pos: CursorPos,
        rid: u32,
        hot_x: u32,
        hot_y: u32,
    ) -> Result<Response, ErrorCode> {
        if pos.scanout_id as usize >= self.scanouts.len() {
            return Err(ErrorCode::InvalidScanoutId);
        }
        if rid == 0 {
            let old = self.cursor.take();
            self.renderer.clear_cursor();
            self.redraw_after_cursor_change(old);
            return Ok(Response::OkNoData);
        }
        let res = self
            .resources
            .get(&rid)
            .ok_or(ErrorCode::InvalidResourceId)?;
        if res.width > MAX_CURSOR_SIZE
            || res.height > MAX_CURSOR_SIZE
            || hot_x >= res.width
            || hot_y >= res.height
        {
            return Err(ErrorCode::InvalidParameter);
        }
        self.renderer.set_cursor(res);
        let new = Cursor {
            scanout: pos.scanout_id,
            x: pos.x,
            y: pos.y,
            hot: (hot_x, hot_y),
            size: (res.width, res.height),
            opaque: res.format.is_opaque(),
        };
        let old = self.cursor.replace(new);
        self.redraw_after_cursor_change(old);
        Ok(Response::OkNoData)
    }

    fn move_cursor(&mut self, pos: CursorPos) -> Result<Response, ErrorCode> {
        if pos.scanout_id as usize >= self.scanouts.len() {
            return Err(ErrorCode::InvalidScanoutId);
        }
        let Some(c) = self.cursor.as_mut() else {
            // No cursor image yet: nothing is drawn, the position is kept by the next update.
            return Ok(Response::OkNoData);
        };
        let (old_sid, old_x, old_y, hot, size) = (c.scanout, c.x, c.y, c.hot, c.size);
        c.scanout = pos.scanout_id;
        c.x = pos.x;
        c.y = pos.y;
        self.mark_cursor_area(old_sid, old_x, old_y, hot, size);
        self.mark_cursor_area(pos.scanout_id, pos.x, pos.y, hot, size);
        Ok(Response::OkNoData)
    }

    /// Marks the scanout areas the old and the new cursor cover for recomposition.
    fn redraw_after_cursor_change(&mut self, old: Option<Cursor>) {
        if let Some(o) = &old {
            self.mark_cursor_area(o.scanout, o.x, o.y, o.hot, o.size);
        }
        if let Some(c) = &self.cursor {
            let (sid, x, y, hot, size) = (c.scanout, c.x, c.y, c.hot, c.size);
            self.mark_cursor_area(sid, x, y, hot, size);
        }
    }

    /// Marks where a cursor with this geometry is (or was) for recomposition.
    fn mark_cursor_area(&mut self, sid: u32, x: u32, y: u32, hot: (u32, u32), size: (u32, u32)) {
        let Some(s) = self.scanouts.get_mut(sid as usize) else {
            return;
        };
        let x0 = x as i64 - hot.0 as i64;
        let y0 = y as i64 - hot.1 as i64;
        let clip = |v: i64, max: u32| v.clamp(0, max as i64) as u32;
        let (w, h) = (s.rect.width, s.rect.height);
        let (cx0, cy0) = (clip(x0, w), clip(y0, h));
        let (cx1, cy1) = (clip(x0 + size.0 as i64, w), clip(y0 + size.1 as i64, h));
        if cx1 > cx0 && cy1 > cy0 {
            let rect = Rect::new(cx0, cy0, cx1 - cx0, cy1 - cy0);
            s.mark_dirty(rect);
            self.display_event(DisplayEvent::Damage { scanout: sid, rect });
        }
    }

    /// Pops every available chain of `queue`, processes it and returns it to the used ring.
    /// Readable descriptors form the request (at most [`MAX_REQUEST_SIZE`] bytes), writable
    /// ones receive the response; a chain whose writable space cannot hold the response gets
    /// an ERR_UNSPEC header if that fits, else nothing.
    pub fn process_queue<M: GuestMemory>(
        &mut self,
        kind: QueueKind,
        queue: &mut Queue,
        mem: &M,
    ) -> Result<QueueRun, DeviceError> {
        let qerr = |message: String| DeviceError::Queue {
            queue: kind,
            message,
        };
        let mut run = QueueRun::default();
        while let Some(chain) = queue.pop_descriptor_chain(mem) {
            let head = chain.head_index();
            let mut request = Vec::new();
            let mut writable: Vec<(GuestAddress, usize)> = Vec::new();
            let mut bad = false;
            for d in chain {
                let len = d.len() as usize;
                if d.is_write_only() {
                    writable.push((d.addr(), len));
                } else if !writable.is_empty() || request.len() + len > MAX_REQUEST_SIZE {
                    // Readable after writable, or an oversized request: malformed.
                    bad = true;
                } else {
                    let start = request.len();
                    request.resize(start + len, 0);
                    if mem.read_slice(&mut request[start..], d.addr()).is_err() {
                        bad = true;
                    }
                }
            }
            let response = if bad {
                self.counters.command(u32::MAX);
                self.counters.error(ErrorCode::Unspec);
                Response::Err(ErrorCode::Unspec).encode(CtrlHeader::decode(&request).as_ref())
            } else {
                self.handle_request(kind, &request, mem)
            };
            let cap: usize = writable.iter().map(|w| w.1).fold(0, usize::saturating_add);
            let response = if response.len() <= cap {
                response
            } else if cap >= HDR_SIZE {
                self.counters.error(ErrorCode::Unspec);
                let mut r =
                    Response::Err(ErrorCode::Unspec).encode(CtrlHeader::decode(&request).as_ref());
                r.truncate(HDR_SIZE);
                r
            } else {
                Vec::new()
            };
            let mut written = 0usize;
            for (addr, len) in writable {
                if written == response.len() {
                    break;
                }
                let n = len.min(response.len() - written);
                if mem
                    .write_slice(&response[written..written + n], addr)
                    .is_err()
                {
                    // The driver's response buffer is not guest RAM: complete the chain with
                    // what was written so far and go on with the next one.
                    self.counters.error(ErrorCode::Unspec);
                    break;
                }
                written += n;
            }
            queue
                .add_used(mem, head, written as u32)
                .map_err(|e| qerr(format!("add_used({head}): {e}")))?;
            run.chains += 1;
        }
        // One composition per queue run: every flush of the run reaches the scanouts together.
        self.present();
        run.needs_notification = run.chains > 0
            && queue
                .needs_notification(mem)
                .map_err(|e| qerr(format!("needs_notification: {e}")))?;
        Ok(run)
    }
}

/// The device error for a renderer's readback error on scanout `scanout`.
fn readback_error(scanout: u32, e: ReadbackError) -> DeviceError {
    match e {
        ReadbackError::NoImage => DeviceError::ScanoutDisabled(scanout),
        ReadbackError::Failed(message) => DeviceError::Readback { scanout, message },
    }
}

/// The response type carried by response bytes (for tests and front ends).
pub fn response_type(resp: &[u8]) -> Option<u32> {
    CtrlHeader::decode(resp).map(|h| h.type_)
}

/// Whether a response type is one of the protocol's OK responses.
pub fn is_ok(type_: u32) -> bool {
    (ctrl::RESP_OK_NODATA..ctrl::RESP_ERR_UNSPEC).contains(&type_)
}
