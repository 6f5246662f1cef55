//! TRANSFER_TO_HOST_2D: copy a rectangle from the guest backing into mapped staging memory
//! (a reused `wgpu::util::StagingBelt` slice) laid out with a 256-byte-aligned row pitch,
//! in one copy (formats needing a byte swap go through a cache-sized bounce buffer, since
//! mapped memory is write-only), then record a buffer-to-texture copy. `queue.write_texture` would instead copy the whole rectangle a
//! second time into a staging buffer it allocates per call; on lavapipe that path measured
//! markedly slower.

use vm_memory::{GuestMemory, VolatileSlice};

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

/// Bytes of the staging area for a rectangle: `pitch * height`.
pub fn staging_len(rect: &Rect) -> Option<(u64, u64)> {
    let pitch = aligned_pitch(rect.width as u64 * BPP)?;
    Some((pitch, pitch.checked_mul(rect.height as u64)?))
}

/// Bytes converted per step through the CPU scratch buffer (formats that need a byte swap;
/// small enough to stay in cache).
pub const SCRATCH_BYTES: usize = 64 << 10;

/// Gathers the rectangle into `dst` (mapped staging memory, `pitch * height` bytes, rows
/// `pitch` bytes apart), walking the scatter list once. Formats stored as they are copy
/// straight from guest memory into `dst`; the byte-swapped ones go through `scratch`
/// (mapped memory is write-only). The caller has run [`validate`].
pub fn gather<M: GuestMemory>(
    mem: &M,
    res: &Resource,
    rect: &Rect,
    offset: u64,
    pitch: u64,
    scratch: &mut Vec<u8>,
    dst: &VolatileSlice<'_>,
) -> Result<(), ErrorCode> {
    let backing = res.backing.as_ref().ok_or(ErrorCode::Unspec)?;
    let stride = res.width as u64 * BPP;
    let row_bytes = rect.width as u64 * BPP;
    let total = pitch
        .checked_mul(rect.height as u64)
        .ok_or(ErrorCode::InvalidParameter)?;
    if pitch < row_bytes || total != dst.len() as u64 {
        return Err(ErrorCode::Unspec);
    }
    let sub = |at: u64, n: u64| {
        dst.subslice(at as usize, n as usize)
            .map_err(|_| ErrorCode::Unspec)
    };
    let swizzle = matches!(
        res.format.host_layout(),
        HostLayout::BgraFromArgb | HostLayout::RgbaFromAbgr
    );
    let mut seg = backing.segment_of(offset);
    if !swizzle {
        if stride == row_bytes && pitch == row_bytes {
            // Full-width rows with an aligned pitch: one contiguous run.
            return backing.read_volatile(mem, &mut seg, offset, dst);
        }
        for r in 0..rect.height as u64 {
            // validated: offset + r·stride cannot overflow
            backing.read_volatile(
                mem,
                &mut seg,
                offset + r * stride,
                &sub(r * pitch, row_bytes)?,
            )?;
        }
        return Ok(());
    }
    let rows_per_step = (SCRATCH_BYTES / pitch as usize).max(1);
    scratch.resize(rows_per_step * pitch as usize, 0);
    let mut r = 0u64;
    while r < rect.height as u64 {
        let rows = (rect.height as u64 - r).min(rows_per_step as u64);
        for k in 0..rows {
            let d = (k * pitch) as usize;
            let row = &mut scratch[d..d + row_bytes as usize];
            backing.read(mem, &mut seg, offset + (r + k) * stride, row)?;
            swizzle_in_place(row);
        }
        let n = rows * pitch;
        sub(r * pitch, n)?.copy_from(&scratch[..n as usize]);
        r += rows;
    }
    Ok(())
}

/// Records the copy of a gathered rectangle from a staging-belt slice into the resource's
/// texture.
pub fn record_upload(
    enc: &mut wgpu::CommandEncoder,
    src: &wgpu::BufferSlice<'_>,
    texture: &wgpu::Texture,
    rect: &Rect,
    pitch: u64,
) {
    enc.copy_buffer_to_texture(
        wgpu::TexelCopyBufferInfo {
            buffer: src.buffer(),
            layout: wgpu::TexelCopyBufferLayout {
                offset: src.offset(),
                bytes_per_row: Some(pitch as u32),
                rows_per_image: Some(rect.height),
            },
        },
        wgpu::TexelCopyTextureInfo {
            texture,
            mip_level: 0,
            origin: wgpu::Origin3d {
                x: rect.x,
                y: rect.y,
                z: 0,
            },
            aspect: wgpu::TextureAspect::All,
        },
        wgpu::Extent3d {
            width: rect.width,
            height: rect.height,
            depth_or_array_layers: 1,
        },
    );
}
