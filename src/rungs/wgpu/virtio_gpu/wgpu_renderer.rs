//! The wgpu renderer: each resource a texture, uploads through mapped staging memory (or
//! gathered by the GPU from guest memory in place, [`super::gpu_gather`]), scanouts shown
//! straight from their resource's texture or composed with the cursor on the GPU.

use std::collections::HashMap;
use std::sync::Arc;

use vm_memory::{GuestMemory, VolatileSlice};

use super::gpu_gather::{GatherBinding, Gatherer};
use super::protocol::{ErrorCode, Rect};
use super::renderer::{ReadbackError, Renderer};
use super::resources::{texture_format, Resource};
use super::scanout::{
    composite, create_target, read_back, with_region_bgrx, Cursor, Layer, Readback, RgbaImage,
    Scanout,
};
use super::transfer;
use crate::rungs::wgpu::wgpu_backend::GpuContext;

/// Size of the staging chunks transfers are sub-allocated from, and the largest band of rows
/// one transfer gathers before handing it to the GPU.
const STAGING_CHUNK: u64 = 4 << 20;

/// Transfers larger than this are cut into at least [`MIN_BANDS`] bands, each submitted as
/// soon as it is gathered, so the GPU copies one band while the CPU gathers the next.
const PIPELINE_FROM: u64 = 1 << 20;

/// Bands a pipelined transfer is cut into at least.
const MIN_BANDS: u64 = 4;

/// Rows per band for a transfer of `height` rows `pitch` bytes apart in staging memory.
/// Measured on lavapipe (2 cores), 1080p / 4K full frames: one 8 MiB band 42% / -, 1 MiB
/// bands 50% / 53%, 2 MiB 57% / 66%, 4 MiB 54% / 73% of memcpy throughput; a quarter of the
/// frame capped at 4 MiB takes the best of both.
fn band_rows(pitch: u64, height: u32) -> u32 {
    let total = pitch * height as u64;
    let band = if total > PIPELINE_FROM {
        total.div_ceil(MIN_BANDS).min(STAGING_CHUNK)
    } else {
        STAGING_CHUNK
    };
    (band / pitch).clamp(1, u32::MAX as u64) as u32
}

/// When TRANSFER_TO_HOST_2D is done by the GPU, reading the guest's pages in place
/// ([`super::gpu_gather`]), rather than gathered by the CPU into staging memory. Either
/// needs a Vulkan device with `VK_EXT_external_memory_host` and a backing that qualifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GpuGather {
    /// On hardware adapters, for transfers of at least 256 KiB (on a CPU adapter the CPU
    /// path's two copies run on two threads and measured faster).
    #[default]
    Auto,
    /// Whenever possible (tests use it to check the shader on any adapter).
    Always,
    /// Never.
    Never,
}

/// Smallest transfer [`GpuGather::Auto`] hands to the GPU: below it, the CPU gather is
/// cheaper than a submission and a wait.
const GPU_GATHER_MIN: u64 = 256 << 10;

/// A resource's host copy of its pixels.
#[derive(Debug)]
struct ResourceTexture {
    /// The pixels.
    texture: wgpu::Texture,
    /// A view of `texture` for the GPU gather.
    view: wgpu::TextureView,
}

/// A scanout's image on the GPU.
#[derive(Debug, Default)]
struct ScanoutImage {
    /// The composited image, in the shown resource's texture format.
    target: Option<(wgpu::Texture, wgpu::TextureView)>,
    /// Whether the image currently is the resource texture itself (direct scanout) rather
    /// than `target`.
    direct: bool,
}

/// The cursor image: a copy of a resource's pixels.
#[derive(Debug)]
struct CursorImage {
    /// The copied image (kept alive for the layer's bind group).
    _texture: wgpu::Texture,
    /// Its draw.
    layer: Layer,
}

/// A [`Renderer`] on a shared wgpu context (one per device; the context may be shared by
/// many VMs' devices).
#[derive(Debug)]
pub struct WgpuRenderer {
    ctx: Arc<GpuContext>,
    /// When transfers are gathered by the GPU.
    gpu_gather: GpuGather,
    /// Each resource's texture.
    textures: HashMap<u32, ResourceTexture>,
    /// Each scanout's image (created at its first use).
    scanouts: HashMap<u32, ScanoutImage>,
    /// The cursor image, when there is one.
    cursor: Option<CursorImage>,
    /// Mapped staging memory for transfers, reused across submissions.
    belt: wgpu::util::StagingBelt,
    /// GPU work recorded since the last present (uploads, cursor copies, compositions).
    pending: Option<wgpu::CommandEncoder>,
    /// The last GPU submission of this device (what a fence waits for).
    last_submit: Option<wgpu::SubmissionIndex>,
    /// Cache-sized bounce buffer for formats converted on the way to staging memory.
    scratch: Vec<u8>,
    /// The GPU gather's uniform block and guest memory imports, once used.
    gather: Option<Gatherer>,
    /// Per resource: its GPU gather binding, or `None` when its backing does not qualify.
    gather_bindings: HashMap<u32, Option<GatherBinding>>,
    /// Transfers done by the GPU gather.
    gpu_gathered: u64,
    /// The buffer screenshots and display updates are read back through.
    readback: Readback,
}

impl WgpuRenderer {
    /// A renderer on `ctx`, gathering transfers on the GPU as `gpu_gather` says.
    pub fn new(ctx: Arc<GpuContext>, gpu_gather: GpuGather) -> WgpuRenderer {
        WgpuRenderer {
            gpu_gather,
            textures: HashMap::new(),
            scanouts: HashMap::new(),
            cursor: None,
            belt: wgpu::util::StagingBelt::new(ctx.device.clone(), STAGING_CHUNK),
            pending: None,
            last_submit: None,
            scratch: Vec::new(),
            gather: None,
            gather_bindings: HashMap::new(),
            gpu_gathered: 0,
            readback: Readback::default(),
            ctx,
        }
    }

    /// The wgpu context it renders on.
    pub fn context(&self) -> &Arc<GpuContext> {
        &self.ctx
    }

    /// The transfer done by the GPU from the guest's pages in place; false when the
    /// resource's backing does not qualify (the CPU path runs instead). The transfer is
    /// complete when this returns: the guest may reuse its pages once it has the response.
    fn gpu_transfer<M: GuestMemory>(
        &mut self,
        res: &Resource,
        rect: &Rect,
        offset: u64,
        mem: &M,
    ) -> bool {
        let WgpuRenderer {
            ctx,
            textures,
            gather,
            gather_bindings,
            pending,
            belt,
            last_submit,
            ..
        } = self;
        if ctx.host_import.is_none() {
            return false;
        }
        let Some(tex) = textures.get(&res.id) else {
            return false;
        };
        let Some(backing) = res.backing.as_ref() else {
            return false;
        };
        let gather = gather.get_or_insert_with(|| Gatherer::new(&ctx.device));
        let binding = gather_bindings.entry(res.id).or_insert_with(|| {
            // SAFETY: guest memory stays mapped until `forget_guest_memory`, which whoever
            // changes the memory map calls first (the vhost-user backend does).
            unsafe { gather.bind(ctx, backing, mem) }
        });
        let Some(binding) = binding.as_ref() else {
            return false;
        };
        let enc = pending.get_or_insert_with(|| new_encoder(&ctx.device));
        gather.record(ctx, enc, binding, (res, &tex.view), rect, offset);
        if let Some(i) = submit_pending(ctx, belt, pending) {
            *last_submit = Some(i);
        }
        self.wait_idle();
        self.gpu_gathered += 1;
        true
    }
}

impl Renderer for WgpuRenderer {
    fn name(&self) -> String {
        self.ctx.info.name.clone()
    }

    fn max_texture_dim(&self) -> u32 {
        self.ctx.max_texture_dim
    }

    fn create_resource(&mut self, res: &Resource) -> Result<(), ErrorCode> {
        let (id, w, h) = (res.id, res.width, res.height);
        // The budget is checked by the device; the GPU may still run out (e.g. a small
        // adapter shared by many VMs): catch that as ERR_OUT_OF_MEMORY instead of a wgpu
        // error.
        let scope = self
            .ctx
            .device
            .push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let texture = self.ctx.device.create_texture(&wgpu::TextureDescriptor {
            label: Some("virtio-gpu resource"),
            size: wgpu::Extent3d {
                width: w,
                height: h,
                depth_or_array_layers: 1,
            },
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: texture_format(res.format),
            // RENDER_ATTACHMENT: the GPU gather draws into it.
            usage: wgpu::TextureUsages::TEXTURE_BINDING
                | wgpu::TextureUsages::COPY_DST
                | wgpu::TextureUsages::COPY_SRC
                | wgpu::TextureUsages::RENDER_ATTACHMENT,
            view_formats: &[],
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            eprintln!("vm-device: resource {id} ({w}x{h}): GPU out of memory: {e}");
            return Err(ErrorCode::OutOfMemory);
        }
        let view = texture.create_view(&Default::default());
        self.textures.insert(id, ResourceTexture { texture, view });
        Ok(())
    }

    fn destroy_resource(&mut self, id: u32) {
        self.textures.remove(&id);
        self.gather_bindings.remove(&id);
    }

    fn backing_changed(&mut self, id: u32) {
        self.gather_bindings.remove(&id);
    }

    fn transfer_to_host<M: GuestMemory>(
        &mut self,
        res: &Resource,
        rect: &Rect,
        offset: u64,
        bytes: u64,
        mem: &M,
    ) -> Result<(), ErrorCode> {
        let gpu = match self.gpu_gather {
            GpuGather::Never => false,
            GpuGather::Always => true,
            GpuGather::Auto => {
                self.ctx.info.device_type != wgpu::DeviceType::Cpu && bytes >= GPU_GATHER_MIN
            }
        };
        if gpu && offset % 4 == 0 && self.gpu_transfer(res, rect, offset, mem) {
            return Ok(());
        }
        let texture = &self
            .textures
            .get(&res.id)
            .ok_or(ErrorCode::InvalidResourceId)?
            .texture;
        let (pitch, _) = transfer::staging_len(rect).ok_or(ErrorCode::InvalidParameter)?;
        let align = wgpu::BufferSize::new(wgpu::COPY_BYTES_PER_ROW_ALIGNMENT as u64)
            .ok_or(ErrorCode::Unspec)?;
        // Bands of rows that fit one staging chunk (chunks are reused, and no staging buffer
        // outgrows the adapter's buffer size limit), at least four for a large transfer.
        let band_rows = band_rows(pitch, rect.height);
        let stride = res.width as u64 * transfer::BPP;
        let mut y = 0u32;
        while y < rect.height {
            let rows = band_rows.min(rect.height - y);
            let band = Rect::new(rect.x, rect.y + y, rect.width, rows);
            let band_offset = offset + y as u64 * stride; // validated: no overflow
            let size = wgpu::BufferSize::new(pitch * rows as u64).ok_or(ErrorCode::Unspec)?;
            let slice = self.belt.allocate(size, align);
            {
                let mut view = slice.get_mapped_range_mut().map_err(|e| {
                    eprintln!("vm-device: staging buffer not mapped: {e}");
                    ErrorCode::Unspec
                })?;
                let mut wo = view.slice(..);
                let ptr = wo.as_raw_ptr();
                // SAFETY: `ptr` is the mapped staging range the belt just allocated
                // (`wo.len()` bytes), valid for writes while `view` and `wo` are alive, which
                // outlive `dst`: it is used only inside this block. Nothing else accesses the
                // range meanwhile (the belt hands each range out once), and `dst` is only
                // written, never read, as write-only mapped memory requires.
                let dst = unsafe { VolatileSlice::new(ptr.as_ptr() as *mut u8, wo.len()) };
                transfer::gather(mem, res, &band, band_offset, pitch, &mut self.scratch, &dst)?;
            }
            let enc = self
                .pending
                .get_or_insert_with(|| new_encoder(&self.ctx.device));
            transfer::record_upload(enc, &slice, texture, &band, pitch);
            y += rows;
            if y < rect.height {
                // A multi-band transfer: let the GPU copy this band (still in cache) while
                // the next one is gathered.
                if let Some(i) = submit_pending(&self.ctx, &mut self.belt, &mut self.pending) {
                    self.last_submit = Some(i);
                }
            }
        }
        Ok(())
    }

    fn set_scanout(&mut self, scanout: u32, res: &Resource, rect: Rect) {
        let s = self.scanouts.entry(scanout).or_default();
        let format = texture_format(res.format);
        let reuse = s.target.as_ref().is_some_and(|(t, _)| {
            t.width() == rect.width && t.height() == rect.height && t.format() == format
        });
        if !reuse {
            // Created at the first present that needs composition.
            s.target = None;
        }
        s.direct = false;
    }

    fn disable_scanout(&mut self, scanout: u32) {
        self.scanouts.remove(&scanout);
    }

    fn present_scanout(
        &mut self,
        scanout: u32,
        rect: Rect,
        mut dirty: Vec<Rect>,
        res: &Resource,
        cursor: Option<&Cursor>,
    ) {
        let WgpuRenderer {
            ctx,
            textures,
            scanouts,
            cursor: cursor_image,
            pending,
            ..
        } = self;
        let Some(tex) = textures.get(&res.id) else {
            return;
        };
        let s = scanouts.entry(scanout).or_default();
        let whole = Rect::new(0, 0, rect.width, rect.height);
        if cursor.is_none() && rect == Rect::new(0, 0, res.width, res.height) {
            // Direct scanout: the scanout is the whole resource and no cursor is on it,
            // so the resource texture is the scanout image; nothing to compose.
            s.direct = true;
            return;
        }
        if s.direct || s.target.is_none() {
            // Entering composition: the target has to catch up entirely.
            if s.target.is_none() {
                s.target = Some(create_target(&ctx.device, whole, tex.texture.format()));
            }
            dirty = vec![whole];
            s.direct = false;
        }
        let Some(target) = s.target.as_ref() else {
            return;
        };
        let c = cursor.zip(cursor_image.as_ref().map(|i| &i.layer));
        let e = pending.get_or_insert_with(|| new_encoder(&ctx.device));
        composite(
            e,
            &ctx.queue,
            &ctx.compositor,
            target,
            rect,
            dirty,
            &tex.texture,
            c,
        );
    }

    fn submit(&mut self) {
        if let Some(i) = submit_pending(&self.ctx, &mut self.belt, &mut self.pending) {
            self.last_submit = Some(i);
        }
    }

    fn wait_idle(&mut self) {
        // Only this device's own work: other VMs sharing the wgpu device are not waited for.
        let Some(idx) = self.last_submit.take() else {
            return;
        };
        if let Err(e) = self.ctx.device.poll(wgpu::PollType::Wait {
            submission_index: Some(idx),
            timeout: None,
        }) {
            eprintln!("vm-device: waiting for the GPU to complete a fence: {e}");
        }
    }

    fn set_cursor(&mut self, res: &Resource) {
        let Some(src) = self.textures.get(&res.id) else {
            self.cursor = None;
            return;
        };
        let dev = &self.ctx.device;
        let size = wgpu::Extent3d {
            width: res.width,
            height: res.height,
            depth_or_array_layers: 1,
        };
        let texture = dev.create_texture(&wgpu::TextureDescriptor {
            label: Some("virtio-gpu cursor"),
            size,
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: texture_format(res.format),
            usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
            view_formats: &[],
        });
        // Recorded after any pending upload of the same resource, so the cursor shows it.
        let enc = self.pending.get_or_insert_with(|| new_encoder(dev));
        enc.copy_texture_to_texture(src.texture.as_image_copy(), texture.as_image_copy(), size);
        let view = texture.create_view(&Default::default());
        let layer = Layer::new(dev, &self.ctx.compositor, &view);
        self.cursor = Some(CursorImage {
            _texture: texture,
            layer,
        });
    }

    fn clear_cursor(&mut self) {
        self.cursor = None;
    }

    fn forget_guest_memory(&mut self) {
        self.wait_idle();
        self.gather_bindings.clear();
        if let Some(g) = self.gather.as_mut() {
            g.forget_imports();
        }
    }

    fn gpu_gathered_transfers(&self) -> u64 {
        self.gpu_gathered
    }

    fn screenshot(
        &mut self,
        scanout: u32,
        scanout_state: &Scanout,
        res: &Resource,
    ) -> Result<RgbaImage, ReadbackError> {
        let disabled = ReadbackError::NoImage;
        let img = self.scanouts.get(&scanout);
        let tex = if img.is_some_and(|i| i.direct) {
            &self.textures.get(&res.id).ok_or(disabled)?.texture
        } else {
            &img.and_then(|i| i.target.as_ref()).ok_or(disabled)?.0
        };
        read_back(
            &mut self.readback,
            &self.ctx.device,
            &self.ctx.queue,
            tex,
            scanout_state.opaque,
        )
        .map_err(ReadbackError::Failed)
    }

    fn with_scanout_bgrx<T>(
        &mut self,
        scanout: u32,
        scanout_state: &Scanout,
        res: &Resource,
        rect: Rect,
        f: impl FnOnce(&[u8]) -> T,
    ) -> Result<T, ReadbackError> {
        let s = scanout_state;
        let res_tex = &self
            .textures
            .get(&res.id)
            .ok_or(ReadbackError::NoImage)?
            .texture;
        let img = self.scanouts.get(&scanout);
        let (tex, x, y) = if img.is_some_and(|i| i.direct) {
            (res_tex, s.rect.x + rect.x, s.rect.y + rect.y)
        } else {
            match img.and_then(|i| i.target.as_ref()) {
                Some((t, _)) => (t, rect.x, rect.y),
                None => (res_tex, s.rect.x + rect.x, s.rect.y + rect.y),
            }
        };
        with_region_bgrx(
            &mut self.readback,
            &self.ctx.device,
            &self.ctx.queue,
            tex,
            Rect::new(x, y, rect.width, rect.height),
            f,
        )
        .map_err(ReadbackError::Failed)
    }
}

/// Submits the recorded GPU work and returns its staging chunks to the belt.
fn submit_pending(
    ctx: &GpuContext,
    belt: &mut wgpu::util::StagingBelt,
    pending: &mut Option<wgpu::CommandEncoder>,
) -> Option<wgpu::SubmissionIndex> {
    let e = pending.take()?;
    belt.finish();
    let idx = ctx.queue.submit([e.finish()]);
    belt.recall();
    // Deliver finished map callbacks so staging chunks come back for reuse.
    let _ = ctx.device.poll(wgpu::PollType::Poll);
    Some(idx)
}

fn new_encoder(device: &wgpu::Device) -> wgpu::CommandEncoder {
    device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
        label: Some("virtio-gpu"),
    })
}
