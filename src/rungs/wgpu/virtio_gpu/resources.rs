//! 2D resources: the protocol's view of one (size, format, an optional guest scatter list:
//! the backing; its pixels live in the [`super::renderer::Renderer`]), and the per-device
//! host-memory budget that caps them.

use vm_memory::{Bytes, GuestAddress, GuestMemory, Permissions, VolatileSlice};

use super::protocol::{ErrorCode, Format, MemEntry};

/// Host bytes charged for a resource: its pixels rounded up to whole 4 KiB pages, so that
/// tiny resources still cost something and a guest cannot create millions for free.
pub fn charged_bytes(width: u32, height: u32) -> Option<u64> {
    let px = (width as u64).checked_mul(height as u64)?.checked_mul(4)?;
    px.checked_next_multiple_of(4096).map(|b| b.max(4096))
}

/// The guest pages behind a resource, with a prefix index so a transfer finds the segment of
/// its first byte by binary search and then walks forward.
#[derive(Debug, Clone)]
pub struct Backing {
    /// (guest address, length) of each entry, in the guest's order.
    segs: Vec<(u64, u64)>,
    /// Byte offset of each entry inside the backing (prefix sums of the lengths).
    starts: Vec<u64>,
    /// Total length.
    total: u64,
}

impl Backing {
    /// Validates a scatter list against guest memory: no empty list, no empty entry, no
    /// address overflow, every entry inside guest memory.
    pub fn new<M: GuestMemory>(entries: &[MemEntry], mem: &M) -> Result<Backing, ErrorCode> {
        if entries.is_empty() {
            return Err(ErrorCode::InvalidParameter);
        }
        let mut segs = Vec::with_capacity(entries.len());
        let mut starts = Vec::with_capacity(entries.len());
        let mut total = 0u64;
        for e in entries {
            if e.length == 0 || e.addr.checked_add(e.length as u64).is_none() {
                return Err(ErrorCode::InvalidParameter);
            }
            if !mem.check_range(GuestAddress(e.addr), e.length as usize, Permissions::Read) {
                // As QEMU: a scatter list that does not map to guest RAM is ERR_UNSPEC.
                return Err(ErrorCode::Unspec);
            }
            starts.push(total);
            segs.push((e.addr, e.length as u64));
            total = total
                .checked_add(e.length as u64)
                .ok_or(ErrorCode::InvalidParameter)?;
        }
        Ok(Backing {
            segs,
            starts,
            total,
        })
    }

    /// Total length in bytes.
    pub fn len(&self) -> u64 {
        self.total
    }

    /// Whether the backing is empty (never true for a validated backing).
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Number of entries.
    pub fn entries(&self) -> usize {
        self.segs.len()
    }

    /// (guest address, length) of each entry, in the guest's order.
    pub fn segments(&self) -> &[(u64, u64)] {
        &self.segs
    }

    /// Index of the segment holding byte `off` (`off < len()`).
    pub(crate) fn segment_of(&self, off: u64) -> usize {
        self.starts.partition_point(|s| *s <= off).saturating_sub(1)
    }

    /// Copies `dst.len()` bytes starting at backing offset `off` into `dst`, starting the
    /// search at segment `*seg` (advanced so later, larger offsets continue from there).
    pub(crate) fn read<M: GuestMemory>(
        &self,
        mem: &M,
        seg: &mut usize,
        off: u64,
        dst: &mut [u8],
    ) -> Result<(), ErrorCode> {
        let end = off
            .checked_add(dst.len() as u64)
            .ok_or(ErrorCode::InvalidParameter)?;
        if end > self.total {
            return Err(ErrorCode::InvalidParameter);
        }
        while *seg + 1 < self.segs.len() && self.starts[*seg + 1] <= off {
            *seg += 1;
        }
        let mut i = *seg;
        let mut pos = off;
        let mut done = 0usize;
        while done < dst.len() {
            let (addr, len) = *self.segs.get(i).ok_or(ErrorCode::InvalidParameter)?;
            let within = pos - self.starts[i];
            let n = ((len - within) as usize).min(dst.len() - done);
            mem.read_slice(&mut dst[done..done + n], GuestAddress(addr + within))
                .map_err(|_| ErrorCode::Unspec)?;
            done += n;
            pos += n as u64;
            i += 1;
        }
        Ok(())
    }
}

impl Backing {
    /// Like [`Backing::read`], but into a volatile destination (mapped staging memory), with
    /// no intermediate copy.
    pub(crate) fn read_volatile<M: GuestMemory>(
        &self,
        mem: &M,
        seg: &mut usize,
        off: u64,
        dst: &VolatileSlice<'_>,
    ) -> Result<(), ErrorCode> {
        let want = dst.len();
        let end = off
            .checked_add(want as u64)
            .ok_or(ErrorCode::InvalidParameter)?;
        if end > self.total {
            return Err(ErrorCode::InvalidParameter);
        }
        while *seg + 1 < self.segs.len() && self.starts[*seg + 1] <= off {
            *seg += 1;
        }
        let mut i = *seg;
        let mut pos = off;
        let mut done = 0usize;
        while done < want {
            let (addr, len) = *self.segs.get(i).ok_or(ErrorCode::InvalidParameter)?;
            let within = pos - self.starts[i];
            let n = ((len - within) as usize).min(want - done);
            let slices = mem
                .get_slices(GuestAddress(addr + within), n, Permissions::Read)
                .map_err(|_| ErrorCode::Unspec)?;
            for src in slices {
                let src = src.map_err(|_| ErrorCode::Unspec)?;
                let d = dst
                    .subslice(done, src.len())
                    .map_err(|_| ErrorCode::Unspec)?;
                src.copy_to_volatile_slice(d);
                done += src.len();
            }
            pos = off + done as u64;
            i += 1;
        }
        Ok(())
    }
}

/// One 2D resource.
#[derive(Debug)]
pub struct Resource {
    /// Guest id.
    pub id: u32,
    /// Pixel format.
    pub format: Format,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Host bytes charged to the budget.
    pub charged: u64,
    /// The guest pages, once attached.
    pub backing: Option<Backing>,
}

/// Converts in place from a guest byte order to the host texture's (both swizzling layouts
/// are a byte reversal of each pixel).
pub fn swizzle_in_place(row: &mut [u8]) {
    for px in row.chunks_exact_mut(4) {
        px.reverse();
    }
}

/// The wgpu format that stores `f`.
pub fn texture_format(f: Format) -> wgpu::TextureFormat {
    use super::protocol::HostLayout::*;
    match f.host_layout() {
        Bgra | BgraFromArgb => wgpu::TextureFormat::Bgra8Unorm,
        Rgba | RgbaFromAbgr => wgpu::TextureFormat::Rgba8Unorm,
    }
}
