//! TRANSFER_TO_HOST_2D: copy a rectangle from the guest backing into a staging buffer laid
//! out with a 256-byte-aligned row pitch, then `queue.write_texture` it.

use vm_memory::GuestMemory;

use super::protocol::{ErrorCode, HostLayout, Rect};
use super::resources::{swizzle_in_place, Resource};

/// Bytes per pixel of every 2D format.
pub const BPP: u64 = 4;

/// Row pitch of the staging layout for `row_bytes` (wgpu's `COPY_BYTES_PER_ROW_ALIGNMENT`).
pub fn aligned_pitch(row_bytes: u64) -> Option<u64> {
    row_bytes.checked_next_multiple_of(wgpu::COPY_BYTES_PER_ROW_ALIGNMENT as u64)
}

/// Checks a transfer against the resource and its backing without touching memory. Returns
/// the byte count of the rectangle.
pub fn validate(res: &Resource, rect: &Rect, offset: u64) -> Result<u64, ErrorCode> {
    if !rect.fits_in(res.width, res.height) {
        return Err(ErrorCode::InvalidParameter);
    }
    let backing = res.backing.as_ref().ok_or(ErrorCode::Unspec)?;
    if rect.is_empty() {
        return Ok(0);
    }
    let stride = res.width as u64 * BPP;
    let row_bytes = rect.width as u64 * BPP;
    // Last byte read: offset + (h-1)·stride + row_bytes, all checked.
    let end = (rect.height as u64 - 1)
        .checked_mul(stride)
        .and_then(|v| v.checked_add(row_bytes))
        .and_then(|v| v.checked_add(offset))
        .ok_or(ErrorCode::InvalidParameter)?;
    if end > backing.len() {
        return Err(ErrorCode::InvalidParameter);
    }
    Ok(row_bytes * rect.height as u64)
}

/// Gathers the rectangle into `staging` (resized as needed, rows `pitch` bytes apart),
/// walking the scatter list once, and converts the byte order for the swizzled formats.
/// Returns the pitch. The caller has run [`validate`].
pub fn gather<M: GuestMemory>(
    mem: &M,
    res: &Resource,
    rect: &Rect,
    offset: u64,
    staging: &mut Vec<u8>,
) -> Result<u64, ErrorCode> {
    let backing = res.backing.as_ref().ok_or(ErrorCode::Unspec)?;
    let stride = res.width as u64 * BPP;
    let row_bytes = rect.width as u64 * BPP;
    let pitch = aligned_pitch(row_bytes).ok_or(ErrorCode::InvalidParameter)?;
    let total = pitch
        .checked_mul(rect.height as u64)
        .and_then(|t| usize::try_from(t).ok())
        .ok_or(ErrorCode::OutOfMemory)?;
    if staging.len() < total {
        staging.resize(total, 0);
    }
    let mut seg = backing.segment_of(offset);
    if stride == row_bytes && pitch == row_bytes {
        // Full-width rows with an aligned pitch: one contiguous run.
        backing.read(mem, &mut seg, offset, &mut staging[..total])?;
    } else {
        for r in 0..rect.height as u64 {
            let src = offset + r * stride; // validated: no overflow
            let d = (r * pitch) as usize;
            backing.read(mem, &mut seg, src, &mut staging[d..d + row_bytes as usize])?;
        }
    }
    match res.format.host_layout() {
        HostLayout::Bgra | HostLayout::Rgba => {}
        HostLayout::BgraFromArgb | HostLayout::RgbaFromAbgr => {
            for r in 0..rect.height as usize {
                let d = r * pitch as usize;
                swizzle_in_place(&mut staging[d..d + row_bytes as usize]);
            }
        }
    }
    Ok(pitch)
}

/// Uploads a gathered rectangle into the resource's texture.
pub fn upload(queue: &wgpu::Queue, res: &Resource, rect: &Rect, staging: &[u8], pitch: u64) {
    queue.write_texture(
        wgpu::TexelCopyTextureInfo {
            texture: &res.texture,
            mip_level: 0,
            origin: wgpu::Origin3d {
                x: rect.x,
                y: rect.y,
                z: 0,
            },
            aspect: wgpu::TextureAspect::All,
        },
        staging,
        wgpu::TexelCopyBufferLayout {
            offset: 0,
            bytes_per_row: Some(pitch as u32),
            rows_per_image: Some(rect.height),
        },
        wgpu::Extent3d {
            width: rect.width,
            height: rect.height,
            depth_or_array_layers: 1,
        },
    );
}
