//! The renderer behind a [`super::VirtioGpuDevice`]: where resources' pixels live, how
//! uploads reach them, how scanouts are composed and read back (as vhost-device-gpu hides
//! virglrenderer, gfxstream and its null backend behind one trait).
//!
//! The device keeps the protocol state (resources' sizes, formats and backings, scanouts'
//! rectangles and damage, the cursor's position, fences) and validates every command before
//! it calls the renderer, so a renderer never sees a command the protocol refuses: it only
//! holds pixels. Two implementations: [`super::wgpu_renderer::WgpuRenderer`] (textures on a
//! wgpu adapter, composition on the GPU) and [`NullRenderer`] (nothing stored; for tests of
//! the protocol that do not look at pixels, with no adapter).

use vm_memory::GuestMemory;

use super::protocol::{ErrorCode, Rect};
use super::resources::Resource;
use super::scanout::{Cursor, RgbaImage, Scanout};

/// Why a renderer could not read a scanout's image back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadbackError {
    /// The scanout has no image (nothing presented on it).
    NoImage,
    /// Reading the image back failed (the renderer's message).
    Failed(String),
}

/// What a virtio-gpu device asks of whatever holds its pixels. Every call comes after the
/// device checked the command against its protocol state: resources named exist, rectangles
/// fit, transfers stay inside their backing.
pub trait Renderer: std::fmt::Debug {
    /// A name for messages (the adapter's).
    fn name(&self) -> String;

    /// The largest width or height of a resource.
    fn max_texture_dim(&self) -> u32;

    /// Creates the storage of a new resource (no backing yet); `ERR_OUT_OF_MEMORY` when the
    /// host cannot hold it.
    fn create_resource(&mut self, res: &Resource) -> Result<(), ErrorCode>;

    /// Drops the storage of resource `id` (RESOURCE_UNREF).
    fn destroy_resource(&mut self, id: u32);

    /// The guest backing of resource `id` was attached or detached: forget anything derived
    /// from the old one.
    fn backing_changed(&mut self, id: u32);

    /// TRANSFER_TO_HOST_2D of `rect` (`bytes` bytes) from `res`'s backing, its top-left pixel
    /// at backing byte `offset` (checked by [`super::transfer::validate`], never empty). The
    /// guest may reuse its pages once this returns and the work is waited for.
    fn transfer_to_host<M: GuestMemory>(
        &mut self,
        res: &Resource,
        rect: &Rect,
        offset: u64,
        bytes: u64,
        mem: &M,
    ) -> Result<(), ErrorCode>;

    /// Scanout `scanout` now shows `rect` of `res` (SET_SCANOUT with a resource).
    fn set_scanout(&mut self, scanout: u32, res: &Resource, rect: Rect);

    /// Scanout `scanout` shows nothing any more.
    fn disable_scanout(&mut self, scanout: u32);

    /// Brings the image of scanout `scanout` (showing `rect` of `res`) up to date in its
    /// `dirty` areas (scanout coordinates, never empty), `cursor` on top when it is on this
    /// scanout. Work may be recorded until [`Renderer::submit`].
    fn present_scanout(
        &mut self,
        scanout: u32,
        rect: Rect,
        dirty: Vec<Rect>,
        res: &Resource,
        cursor: Option<&Cursor>,
    );

    /// Starts everything recorded so far (uploads, cursor copies, compositions).
    fn submit(&mut self);

    /// Waits until everything submitted so far is done (a fence).
    fn wait_idle(&mut self);

    /// Takes a copy of `res`'s pixels as the cursor image (UPDATE_CURSOR).
    fn set_cursor(&mut self, res: &Resource);

    /// Drops the cursor image.
    fn clear_cursor(&mut self);

    /// Drops everything that refers to guest memory in place, after waiting for the work
    /// that reads it (before the guest memory map changes).
    fn forget_guest_memory(&mut self);

    /// Transfers the GPU gathered from guest memory in place.
    fn gpu_gathered_transfers(&self) -> u64;

    /// Scanout `scanout`'s presented image as RGBA, `scanout_state.rect`'s size (alpha 255
    /// when `scanout_state.opaque`).
    fn screenshot(
        &mut self,
        scanout: u32,
        scanout_state: &Scanout,
        res: &Resource,
    ) -> Result<RgbaImage, ReadbackError>;

    /// Lends `rect` (scanout coordinates, inside the scanout, not empty) of scanout
    /// `scanout`'s presented image to `f` as B, G, R, X bytes, `rect.width * 4` per row.
    fn with_scanout_bgrx<T>(
        &mut self,
        scanout: u32,
        scanout_state: &Scanout,
        res: &Resource,
        rect: Rect,
        f: impl FnOnce(&[u8]) -> T,
    ) -> Result<T, ReadbackError>;
}

/// A renderer that accepts everything the protocol allows and stores nothing: no adapter,
/// no pixels. Its readbacks are what the wgpu renderer shows of resources the guest never
/// wrote: every byte 0 (screenshots: alpha 255 where the scanout's format is opaque),
/// whatever the guest transferred.
#[derive(Debug, Clone)]
pub struct NullRenderer {
    max_texture_dim: u32,
}

impl NullRenderer {
    /// The largest resource side of a null renderer by default: wgpu's default
    /// `max_texture_dimension_2d`, what every wgpu adapter offers.
    pub const DEFAULT_MAX_TEXTURE_DIM: u32 = 8192;

    /// A null renderer whose resources may be up to [`Self::DEFAULT_MAX_TEXTURE_DIM`] a side.
    pub fn new() -> NullRenderer {
        NullRenderer::with_max_texture_dim(Self::DEFAULT_MAX_TEXTURE_DIM)
    }

    /// A null renderer whose resources may be up to `max` pixels a side.
    pub fn with_max_texture_dim(max: u32) -> NullRenderer {
        NullRenderer {
            max_texture_dim: max,
        }
    }
}

impl Default for NullRenderer {
    fn default() -> Self {
        NullRenderer::new()
    }
}

impl Renderer for NullRenderer {
    fn name(&self) -> String {
        "null renderer".into()
    }

    fn max_texture_dim(&self) -> u32 {
        self.max_texture_dim
    }

    fn create_resource(&mut self, _res: &Resource) -> Result<(), ErrorCode> {
        Ok(())
    }

    fn destroy_resource(&mut self, _id: u32) {}

    fn backing_changed(&mut self, _id: u32) {}

    fn transfer_to_host<M: GuestMemory>(
        &mut self,
        _res: &Resource,
        _rect: &Rect,
        _offset: u64,
        _bytes: u64,
        _mem: &M,
    ) -> Result<(), ErrorCode> {
        Ok(())
    }

    fn set_scanout(&mut self, _scanout: u32, _res: &Resource, _rect: Rect) {}

    fn disable_scanout(&mut self, _scanout: u32) {}

    fn present_scanout(
        &mut self,
        _scanout: u32,
        _rect: Rect,
        _dirty: Vec<Rect>,
        _res: &Resource,
        _cursor: Option<&Cursor>,
    ) {
    }

    fn submit(&mut self) {}

    fn wait_idle(&mut self) {}

    fn set_cursor(&mut self, _res: &Resource) {}

    fn clear_cursor(&mut self) {}

    fn forget_guest_memory(&mut self) {}

    fn gpu_gathered_transfers(&self) -> u64 {
        0
    }

    fn screenshot(
        &mut self,
        _scanout: u32,
        scanout_state: &Scanout,
        _res: &Resource,
    ) -> Result<RgbaImage, ReadbackError> {
        let (w, h) = (scanout_state.rect.width, scanout_state.rect.height);
        let alpha = if scanout_state.opaque { 255 } else { 0 };
        let data = [0, 0, 0, alpha].repeat(w as usize * h as usize);
        Ok(RgbaImage {
            width: w,
            height: h,
            data,
        })
    }

    fn with_scanout_bgrx<T>(
        &mut self,
        _scanout: u32,
        _scanout_state: &Scanout,
        _res: &Resource,
        rect: Rect,
        f: impl FnOnce(&[u8]) -> T,
    ) -> Result<T, ReadbackError> {
        Ok(f(&vec![0; rect.width as usize * rect.height as usize * 4]))
    }
}
