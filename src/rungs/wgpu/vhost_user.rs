//! The wgpu rung's vhost-user-gpu backend: [`VirtioGpuDevice`] behind QEMU's
//! `vhost-user-gpu-pci`, one process per VM (`vm-cli gpu serve-wgpu --socket PATH`).
//!
//! QEMU is the vhost-user front end: it connects to the socket this backend listens on,
//! shares guest RAM (memfd regions, [`VhostUserBackend::update_memory`]), and hands over a
//! second socket with `VHOST_USER_GPU_SET_SOCKET` ([`VhostUserBackend::set_gpu_socket`]). On
//! that display socket this backend sends QEMU's vhost-user-gpu messages (QEMU
//! `docs/interop/vhost-user-gpu.rst`): `VHOST_USER_GPU_SCANOUT` {scanout_id, width, height}
//! when the guest sets, resizes or disables (0×0) a scanout, and `VHOST_USER_GPU_UPDATE`
//! {scanout_id, x, y, width, height} followed by the pixels of that rectangle (x8r8g8b8
//! little-endian, read back from the wgpu image, the cursor composed in) for each area the
//! guest flushed. QEMU draws them into its console surface: its display (and `screendump`)
//! shows the guest's screen. Only the flushed rectangle travels, never the whole frame.
//!
//! Features offered: `VIRTIO_F_VERSION_1`, `VIRTIO_RING_F_INDIRECT_DESC`,
//! `VIRTIO_RING_F_EVENT_IDX`, `VIRTIO_F_RING_RESET` (QEMU acks the last two whatever the
//! backend offers, and the backend library refuses features it did not offer), the device's
//! `VIRTIO_GPU_F_EDID`; protocol features `CONFIG` (QEMU reads `num_scanouts` with
//! `GET_CONFIG`) and `MQ`. `VIRTIO_GPU_F_VIRGL` when the device serves WebGPU
//! ([`super::virtio_gpu::webgpu`]: its 3D commands carry WebGPU, never virgl); never
//! RESOURCE_BLOB.

use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use vhost::vhost_user::gpu_message::{VhostUserGpuScanout, VhostUserGpuUpdate};
use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost::vhost_user::GpuBackend;
use vhost_user_backend::{VhostUserBackend, VhostUserDaemon, VringRwLock, VringT};
use virtio_queue::QueueT;
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};

use super::virtio_gpu::{DisplayEvent, QueueKind, Rect, VirtioGpuDevice};

/// `VIRTIO_F_VERSION_1`.
const VIRTIO_F_VERSION_1: u64 = 1 << 32;
/// `VIRTIO_RING_F_INDIRECT_DESC`.
const VIRTIO_RING_F_INDIRECT_DESC: u64 = 1 << 28;
/// `VIRTIO_RING_F_EVENT_IDX`.
const VIRTIO_RING_F_EVENT_IDX: u64 = 1 << 29;
/// `VIRTIO_F_RING_RESET`.
const VIRTIO_F_RING_RESET: u64 = 1 << 40;
/// Queue size the backend accepts.
const MAX_QUEUE_SIZE: usize = 1024;

type Mem = GuestMemoryAtomic<GuestMemoryMmap>;

struct Inner {
    device: VirtioGpuDevice,
    mem: Option<Mem>,
    display: Option<GpuBackend>,
    /// Display socket failures, reported once.
    display_failed: bool,
}

/// The vhost-user backend around one [`VirtioGpuDevice`]. Clones share the device.
#[derive(Clone)]
pub struct VhostUserGpu {
    inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for VhostUserGpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VhostUserGpu").finish_non_exhaustive()
    }
}

fn other(msg: String) -> io::Error {
    io::Error::other(msg)
}

impl VhostUserGpu {
    /// A backend serving `device`; it starts recording display changes for QEMU.
    pub fn new(mut device: VirtioGpuDevice) -> Self {
        device.record_display_events(true);
        VhostUserGpu {
            inner: Arc::new(Mutex::new(Inner {
                device,
                mem: None,
                display: None,
                display_failed: false,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves a device whose state is still consistent
        // enough to answer (every command is validated); keep serving.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the device (statistics, screenshots).
    pub fn with_device<R>(&self, f: impl FnOnce(&mut VirtioGpuDevice) -> R) -> R {
        f(&mut self.lock().device)
    }

    /// Listens on `socket`, serves the one front end that connects (QEMU) until it
    /// disconnects, and returns. The socket file is created (an old one is replaced).
    pub fn serve(&self, socket: &Path) -> Result<(), String> {
        let mut daemon = VhostUserDaemon::new(
            "vm-device-vhost-user-gpu".to_string(),
            self.clone(),
            GuestMemoryAtomic::new(GuestMemoryMmap::new()),
        )
        .map_err(|e| format!("creating the vhost-user daemon: {e}"))?;
        daemon
            .serve(socket)
            .map_err(|e| format!("serving vhost-user-gpu on {}: {e}", socket.display()))
    }
}

impl Inner {
    fn process(&mut self, kind: QueueKind, vring: &VringRwLock) -> io::Result<()> {
        let mem = self
            .mem
            .as_ref()
            .ok_or_else(|| other("a queue was kicked before the guest memory was set".into()))?
            .memory();
        let mut notify = false;
        {
            let mut state = vring.get_mut();
            let queue = state.get_queue_mut();
            let qerr = |e: virtio_queue::Error| other(format!("queue {kind:?}: {e}"));
            // Process until no chain is left with notifications on: a chain made available
            // while they were off is seen by `enable_notification`, and with EVENT_IDX
            // enabling them is what tells the driver to kick again.
            loop {
                queue.disable_notification(&*mem).map_err(qerr)?;
                let run = self
                    .device
                    .process_queue(kind, queue, &*mem)
                    .map_err(|e| other(e.to_string()))?;
                notify |= run.needs_notification;
                if !queue.enable_notification(&*mem).map_err(qerr)? {
                    break;
                }
            }
        }
        if notify {
            vring.signal_used_queue()?;
        }
        self.send_display_updates();
        Ok(())
    }

    fn send_display_updates(&mut self) {
        let Some(display) = self.display.clone() else {
            // No display socket (yet): drop the events, QEMU gets a full update at SET_SCANOUT.
            self.device.take_display_events();
            return;
        };
        if let Err(e) = forward_display(&mut self.device, &display) {
            if !self.display_failed {
                eprintln!("vm-device: vhost-user-gpu: the display socket failed: {e}; the guest keeps running without a display");
                self.display_failed = true;
            }
        }
    }
}

/// Sends `device`'s display changes since the last call to QEMU on its vhost-user-gpu
/// display socket: `VHOST_USER_GPU_SCANOUT` for each mode change (0×0 disables), then one
/// `VHOST_USER_GPU_UPDATE` with the x8r8g8b8 pixels of the bounding box of each scanout's
/// damage. Returns the number of messages sent.
pub fn forward_display(device: &mut VirtioGpuDevice, display: &GpuBackend) -> io::Result<usize> {
    let mut sent = 0;
    let mut damage: Vec<(u32, Rect)> = Vec::new();
    for e in device.take_display_events() {
        match e {
            DisplayEvent::Mode {
                scanout,
                width,
                height,
            } => {
                damage.retain(|(s, _)| *s != scanout);
                display.set_scanout(&VhostUserGpuScanout {
                    scanout_id: scanout,
                    width,
                    height,
                })?;
                sent += 1;
            }
            DisplayEvent::Damage { scanout, rect } => {
                match damage.iter_mut().find(|(s, _)| *s == scanout) {
                    Some((_, r)) => *r = r.union(&rect),
                    None => damage.push((scanout, rect)),
                }
            }
        }
    }
    for (scanout, rect) in damage {
        let update = VhostUserGpuUpdate {
            scanout_id: scanout,
            x: rect.x,
            y: rect.y,
            width: rect.width,
            height: rect.height,
        };
        // The pixels go to the socket straight from the mapped readback buffer.
        match device.with_scanout_bgrx(scanout, rect, |pixels| {
            display.update_scanout(&update, pixels)
        }) {
            Ok(sent_ok) => sent_ok?,
            // A scanout disabled after its last flush: nothing to show.
            Err(super::virtio_gpu::DeviceError::ScanoutDisabled(_)) => continue,
            Err(e) => return Err(other(e.to_string())),
        }
        sent += 1;
    }
    Ok(sent)
}

impl VhostUserBackend for VhostUserGpu {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        2
    }

    fn max_queue_size(&self) -> usize {
        MAX_QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1
            | VIRTIO_RING_F_INDIRECT_DESC
            | VIRTIO_RING_F_EVENT_IDX
            | VIRTIO_F_RING_RESET
            | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
            | self.lock().device.device_features()
    }

    fn acked_features(&self, features: u64) {
        self.lock().device.set_driver_features(features);
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::CONFIG | VhostUserProtocolFeatures::MQ
    }

    fn set_event_idx(&self, _enabled: bool) {
        // The vrings track it themselves (`set_queue_event_idx`); `process` re-enables
        // notifications after each pass, which writes `avail_event` when it is on.
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let space = self.lock().device.config_space();
        let mut out = vec![0u8; size as usize];
        let start = (offset as usize).min(space.len());
        let end = (offset as usize)
            .saturating_add(size as usize)
            .min(space.len());
        out[..end - start].copy_from_slice(&space[start..end]);
        out
    }

    fn set_config(&self, _offset: u32, _buf: &[u8]) -> io::Result<()> {
        // events_clear: this device raises no config events, so there is nothing to clear.
        Ok(())
    }

    fn update_memory(&self, mem: Mem) -> io::Result<()> {
        let mut inner = self.lock();
        // The old regions may be unmapped once replaced: nothing may refer to them in place.
        inner.device.forget_guest_memory();
        inner.mem = Some(mem);
        Ok(())
    }

    fn set_gpu_socket(&self, gpu_backend: GpuBackend) -> io::Result<()> {
        let mut inner = self.lock();
        inner.display = Some(gpu_backend);
        inner.display_failed = false;
        Ok(())
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        // Without it the queue worker threads never learn that QEMU went away, and `serve`
        // waits for them forever.
        match new_event_consumer_and_notifier(EventFlag::NONBLOCK | EventFlag::CLOEXEC) {
            Ok(pair) => Some(pair),
            Err(e) => {
                eprintln!("vm-device: vhost-user-gpu: cannot create the exit event: {e}");
                None
            }
        }
    }

    fn handle_event(
        &self,
        device_event: u16,
        evset: EventSet,
        vrings: &[VringRwLock],
        _thread_id: usize,
    ) -> io::Result<()> {
        if evset != EventSet::IN {
            return Err(other(format!(
                "unexpected epoll events {evset:?} for queue {device_event}"
            )));
        }
        let kind = match device_event {
            0 => QueueKind::Control,
            1 => QueueKind::Cursor,
            n => return Err(other(format!("event for queue {n}: the device has 2"))),
        };
        let vring = vrings
            .get(device_event as usize)
            .ok_or_else(|| other(format!("no vring {device_event}")))?;
        self.lock().process(kind, vring)
    }
}
