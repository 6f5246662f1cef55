//! The presentation hook: a guest's render target copied into a scanout's bytes.
//!
//! The transport calls [`Context::present`] when the guest asks to show a texture on a
//! scanout; the bytes land in the caller's buffer (the scanout resource) with its stride and
//! channel order, and the caller sends them on through the display path it already has.

use webgpu_wire::Id;

use crate::context::{Context, Entry, Object};

/// The channel order of a scanout's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanoutFormat {
    /// B, G, R, A bytes per pixel (virtio-gpu's `B8G8R8A8`/`B8G8R8X8`).
    Bgra8,
    /// R, G, B, A bytes per pixel (virtio-gpu's `R8G8B8A8`).
    Rgba8,
}

/// A texture could not be presented.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PresentError {
    /// The id names no texture of this context.
    #[error("id {0} names no texture of this context")]
    NoTexture(Id),
    /// Only 8-bit RGBA/BGRA textures can be shown.
    #[error("a {0:?} texture cannot be presented: use Rgba8Unorm(Srgb) or Bgra8Unorm(Srgb)")]
    Format(wgpu::TextureFormat),
    /// The region or the destination does not fit.
    #[error(
        "cannot present {width}x{height} from a {tex_w}x{tex_h} texture into {len} bytes \
         with a stride of {stride}"
    )]
    Size {
        /// Requested width.
        width: u32,
        /// Requested height.
        height: u32,
        /// The texture's width.
        tex_w: u32,
        /// The texture's height.
        tex_h: u32,
        /// Destination length.
        len: usize,
        /// Destination stride.
        stride: usize,
    },
    /// wgpu refused the copy (a texture without `COPY_SRC`, a destroyed texture) or the
    /// readback failed.
    #[error("presenting the texture failed: {0}")]
    Gpu(String),
}

impl Context {
    /// Copies the top-left `width`×`height` pixels of the texture the guest named `texture`
    /// (mip level 0, layer 0) into `dst`, one row every `stride` bytes, in `format`'s channel
    /// order. The texture must be 8-bit RGBA or BGRA and have `COPY_SRC` usage. Waits for the
    /// guest's work submitted so far, like a present.
    pub fn present(
        &mut self,
        texture: Id,
        dst: &mut [u8],
        width: u32,
        height: u32,
        stride: usize,
        format: ScanoutFormat,
    ) -> Result<(), PresentError> {
        let (tex, dev) = match self.objects.get(&texture) {
            Some(Entry {
                obj: Object::Texture(t),
                device,
                ..
            }) => (t.clone(), *device),
            _ => return Err(PresentError::NoTexture(texture)),
        };
        let swap = match (tex.format(), format) {
            (wgpu::TextureFormat::Rgba8Unorm | wgpu::TextureFormat::Rgba8UnormSrgb, f) => {
                f == ScanoutFormat::Bgra8
            }
            (wgpu::TextureFormat::Bgra8Unorm | wgpu::TextureFormat::Bgra8UnormSrgb, f) => {
                f == ScanoutFormat::Rgba8
            }
            (other, _) => return Err(PresentError::Format(other)),
        };
        let row = width as usize * 4;
        let fits = width <= tex.width()
            && height <= tex.height()
            && stride >= row
            && (height as usize)
                .checked_sub(1)
                .map_or(Some(0), |h| h.checked_mul(stride)?.checked_add(row))
                .is_some_and(|need| need <= dst.len());
        if !fits || width == 0 || height == 0 {
            return Err(PresentError::Size {
                width,
                height,
                tex_w: tex.width(),
                tex_h: tex.height(),
                len: dst.len(),
                stride,
            });
        }
        let Ok(d) = self.device(dev) else {
            return Err(PresentError::NoTexture(texture));
        };
        let (device, queue) = (d.device.clone(), d.queue.clone());
        let padded = row.next_multiple_of(wgpu::COPY_BYTES_PER_ROW_ALIGNMENT as usize);
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let staging = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("webgpu-host present staging"),
            size: (padded * height as usize) as u64,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = device.create_command_encoder(&Default::default());
        enc.copy_texture_to_buffer(
            tex.as_image_copy(),
            wgpu::TexelCopyBufferInfo {
                buffer: &staging,
                layout: wgpu::TexelCopyBufferLayout {
                    offset: 0,
                    bytes_per_row: Some(padded as u32),
                    rows_per_image: None,
                },
            },
            wgpu::Extent3d {
                width,
                height,
                depth_or_array_layers: 1,
            },
        );
        queue.submit([enc.finish()]);
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(PresentError::Gpu(e.to_string()));
        }
        let (tx, rx) = std::sync::mpsc::channel();
        staging
            .slice(..)
            .map_async(wgpu::MapMode::Read, move |r| drop(tx.send(r)));
        device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| PresentError::Gpu(e.to_string()))?;
        match rx.try_recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(PresentError::Gpu(e.to_string())),
            Err(_) => return Err(PresentError::Gpu("the readback did not complete".into())),
        }
        {
            let view = staging
                .slice(..)
                .get_mapped_range()
                .map_err(|e| PresentError::Gpu(e.to_string()))?;
            for y in 0..height as usize {
                let src = &view[y * padded..y * padded + row];
                let out = &mut dst[y * stride..y * stride + row];
                if swap {
                    for (o, s) in out.chunks_exact_mut(4).zip(src.chunks_exact(4)) {
                        o.copy_from_slice(&[s[2], s[1], s[0], s[3]]);
                    }
                } else {
                    out.copy_from_slice(src);
                }
            }
        }
        staging.unmap();
        Ok(())
    }
}
