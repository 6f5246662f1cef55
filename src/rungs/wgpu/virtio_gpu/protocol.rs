//! The virtio-gpu 2D wire format (virtio spec, "GPU Device"): constants, request decoding and
//! response encoding. Every field is little-endian; every length is checked before it is read.

use std::fmt;

/// Device ID of a virtio-gpu device.
pub const VIRTIO_ID_GPU: u32 = 16;
/// Feature bit: 3D (virgl). Offered only when the device serves WebGPU
/// (`webgpu`), whose 3D commands carry WebGPU, never virgl.
pub const VIRTIO_GPU_F_VIRGL: u32 = 0;
/// Feature bit: GET_EDID is supported. The only device feature this device offers.
pub const VIRTIO_GPU_F_EDID: u32 = 1;
/// Feature bit: blob resources. Never offered (Linux would scan out guest blobs instead).
pub const VIRTIO_GPU_F_RESOURCE_BLOB: u32 = 3;
/// The device-specific feature bits every device offers (VIRGL is added when WebGPU is
/// served).
pub const DEVICE_FEATURES: u64 = 1 << VIRTIO_GPU_F_EDID;

/// Request flag: the response must carry the fence and be sent only after the work is done.
pub const VIRTIO_GPU_FLAG_FENCE: u32 = 1;
/// Request flag: `ring_idx` is valid (needs CONTEXT_INIT, which this device does not offer).
pub const VIRTIO_GPU_FLAG_INFO_RING_IDX: u32 = 2;

/// Maximum number of scanouts the protocol can describe.
pub const VIRTIO_GPU_MAX_SCANOUTS: usize = 16;
/// Size of the common request/response header.
pub const HDR_SIZE: usize = 24;
/// Size of the EDID blob field in an OK_EDID response.
pub const EDID_BLOB_SIZE: usize = 1024;
/// Size of one scatter-list entry of RESOURCE_ATTACH_BACKING.
pub const MEM_ENTRY_SIZE: usize = 16;

/// A command or response type (`enum virtio_gpu_ctrl_type`).
pub mod ctrl {
    /// GET_DISPLAY_INFO.
    pub const GET_DISPLAY_INFO: u32 = 0x100;
    /// RESOURCE_CREATE_2D.
    pub const RESOURCE_CREATE_2D: u32 = 0x101;
    /// RESOURCE_UNREF.
    pub const RESOURCE_UNREF: u32 = 0x102;
    /// SET_SCANOUT.
    pub const SET_SCANOUT: u32 = 0x103;
    /// RESOURCE_FLUSH.
    pub const RESOURCE_FLUSH: u32 = 0x104;
    /// TRANSFER_TO_HOST_2D.
    pub const TRANSFER_TO_HOST_2D: u32 = 0x105;
    /// RESOURCE_ATTACH_BACKING.
    pub const RESOURCE_ATTACH_BACKING: u32 = 0x106;
    /// RESOURCE_DETACH_BACKING.
    pub const RESOURCE_DETACH_BACKING: u32 = 0x107;
    /// GET_CAPSET_INFO (handled by the device's `webgpu` module; ERR_UNSPEC on a 2D-only device).
    pub const GET_CAPSET_INFO: u32 = 0x108;
    /// GET_EDID.
    pub const GET_EDID: u32 = 0x10a;
    /// UPDATE_CURSOR (cursor queue).
    pub const UPDATE_CURSOR: u32 = 0x300;
    /// MOVE_CURSOR (cursor queue).
    pub const MOVE_CURSOR: u32 = 0x301;
    /// OK_NODATA.
    pub const RESP_OK_NODATA: u32 = 0x1100;
    /// OK_DISPLAY_INFO.
    pub const RESP_OK_DISPLAY_INFO: u32 = 0x1101;
    /// OK_EDID.
    pub const RESP_OK_EDID: u32 = 0x1104;
    /// ERR_UNSPEC.
    pub const RESP_ERR_UNSPEC: u32 = 0x1200;
    /// ERR_OUT_OF_MEMORY.
    pub const RESP_ERR_OUT_OF_MEMORY: u32 = 0x1201;
    /// ERR_INVALID_SCANOUT_ID.
    pub const RESP_ERR_INVALID_SCANOUT_ID: u32 = 0x1202;
    /// ERR_INVALID_RESOURCE_ID.
    pub const RESP_ERR_INVALID_RESOURCE_ID: u32 = 0x1203;
    /// ERR_INVALID_CONTEXT_ID.
    pub const RESP_ERR_INVALID_CONTEXT_ID: u32 = 0x1204;
    /// ERR_INVALID_PARAMETER.
    pub const RESP_ERR_INVALID_PARAMETER: u32 = 0x1205;
}

/// Size of the OK_DISPLAY_INFO response.
pub const DISPLAY_INFO_RESP_SIZE: usize = HDR_SIZE + VIRTIO_GPU_MAX_SCANOUTS * 24;
/// Size of the OK_EDID response.
pub const EDID_RESP_SIZE: usize = HDR_SIZE + 8 + EDID_BLOB_SIZE;

/// The error responses of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum ErrorCode {
    /// ERR_UNSPEC: unknown command, missing backing, guest memory gone, malformed request.
    Unspec,
    /// ERR_OUT_OF_MEMORY: the device's host-memory budget would be exceeded.
    OutOfMemory,
    /// ERR_INVALID_SCANOUT_ID.
    InvalidScanoutId,
    /// ERR_INVALID_RESOURCE_ID: id 0, duplicate or unknown.
    InvalidResourceId,
    /// ERR_INVALID_CONTEXT_ID (3D only; never produced by the 2D device, kept for decoding).
    InvalidContextId,
    /// ERR_INVALID_PARAMETER: bad format, size, rectangle, offset or scatter list.
    InvalidParameter,
}

impl ErrorCode {
    /// Every error code, in wire order.
    pub const ALL: [ErrorCode; 6] = [
        ErrorCode::Unspec,
        ErrorCode::OutOfMemory,
        ErrorCode::InvalidScanoutId,
        ErrorCode::InvalidResourceId,
        ErrorCode::InvalidContextId,
        ErrorCode::InvalidParameter,
    ];

    /// The response type on the wire.
    pub fn wire(self) -> u32 {
        match self {
            ErrorCode::Unspec => ctrl::RESP_ERR_UNSPEC,
            ErrorCode::OutOfMemory => ctrl::RESP_ERR_OUT_OF_MEMORY,
            ErrorCode::InvalidScanoutId => ctrl::RESP_ERR_INVALID_SCANOUT_ID,
            ErrorCode::InvalidResourceId => ctrl::RESP_ERR_INVALID_RESOURCE_ID,
            ErrorCode::InvalidContextId => ctrl::RESP_ERR_INVALID_CONTEXT_ID,
            ErrorCode::InvalidParameter => ctrl::RESP_ERR_INVALID_PARAMETER,
        }
    }

    /// The code for a wire response type, if it is an error.
    pub fn from_wire(v: u32) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.wire() == v)
    }

    /// The spec's name, e.g. `ERR_INVALID_PARAMETER`.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::Unspec => "ERR_UNSPEC",
            ErrorCode::OutOfMemory => "ERR_OUT_OF_MEMORY",
            ErrorCode::InvalidScanoutId => "ERR_INVALID_SCANOUT_ID",
            ErrorCode::InvalidResourceId => "ERR_INVALID_RESOURCE_ID",
            ErrorCode::InvalidContextId => "ERR_INVALID_CONTEXT_ID",
            ErrorCode::InvalidParameter => "ERR_INVALID_PARAMETER",
        }
    }

    /// Position in [`ErrorCode::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The pixel formats of 2D resources, named by their byte order in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Format {
    /// B8G8R8A8_UNORM = 1.
    B8G8R8A8,
    /// B8G8R8X8_UNORM = 2 (Linux's XRGB8888 on little-endian hosts).
    B8G8R8X8,
    /// A8R8G8B8_UNORM = 3.
    A8R8G8B8,
    /// X8R8G8B8_UNORM = 4.
    X8R8G8B8,
    /// R8G8B8A8_UNORM = 67.
    R8G8B8A8,
    /// X8B8G8R8_UNORM = 68.
    X8B8G8R8,
    /// A8B8G8R8_UNORM = 121.
    A8B8G8R8,
    /// R8G8B8X8_UNORM = 134.
    R8G8B8X8,
}

impl Format {
    /// Every format the spec defines for 2D resources.
    pub const ALL: [Format; 8] = [
        Format::B8G8R8A8,
        Format::B8G8R8X8,
        Format::A8R8G8B8,
        Format::X8R8G8B8,
        Format::R8G8B8A8,
        Format::X8B8G8R8,
        Format::A8B8G8R8,
        Format::R8G8B8X8,
    ];

    /// Decodes `enum virtio_gpu_formats`.
    pub fn from_wire(v: u32) -> Option<Format> {
        Some(match v {
            1 => Format::B8G8R8A8,
            2 => Format::B8G8R8X8,
            3 => Format::A8R8G8B8,
            4 => Format::X8R8G8B8,
            67 => Format::R8G8B8A8,
            68 => Format::X8B8G8R8,
            121 => Format::A8B8G8R8,
            134 => Format::R8G8B8X8,
            _ => return None,
        })
    }

    /// The wire value.
    pub fn wire(self) -> u32 {
        match self {
            Format::B8G8R8A8 => 1,
            Format::B8G8R8X8 => 2,
            Format::A8R8G8B8 => 3,
            Format::X8R8G8B8 => 4,
            Format::R8G8B8A8 => 67,
            Format::X8B8G8R8 => 68,
            Format::A8B8G8R8 => 121,
            Format::R8G8B8X8 => 134,
        }
    }

    /// Whether the fourth channel is padding (shown as opaque).
    pub fn is_opaque(self) -> bool {
        matches!(
            self,
            Format::B8G8R8X8 | Format::X8R8G8B8 | Format::X8B8G8R8 | Format::R8G8B8X8
        )
    }

    /// The host texture layout: formats whose memory order is B,G,R,x go to BGRA textures,
    /// those with R,G,B,x to RGBA textures; the x-first formats are swizzled on the copy.
    pub fn host_layout(self) -> HostLayout {
        match self {
            Format::B8G8R8A8 | Format::B8G8R8X8 => HostLayout::Bgra,
            Format::A8R8G8B8 | Format::X8R8G8B8 => HostLayout::BgraFromArgb,
            Format::R8G8B8A8 | Format::R8G8B8X8 => HostLayout::Rgba,
            Format::X8B8G8R8 | Format::A8B8G8R8 => HostLayout::RgbaFromAbgr,
        }
    }

    /// Converts one pixel in this format's memory order to `[r, g, b, a]` (alpha forced to
    /// 255 for the X formats). Used by tests and the CPU reference path.
    pub fn to_rgba(self, p: [u8; 4]) -> [u8; 4] {
        let [r, g, b, a] = match self {
            Format::B8G8R8A8 | Format::B8G8R8X8 => [p[2], p[1], p[0], p[3]],
            Format::A8R8G8B8 | Format::X8R8G8B8 => [p[1], p[2], p[3], p[0]],
            Format::R8G8B8A8 | Format::R8G8B8X8 => [p[0], p[1], p[2], p[3]],
            Format::X8B8G8R8 | Format::A8B8G8R8 => [p[3], p[2], p[1], p[0]],
        };
        [r, g, b, if self.is_opaque() { 255 } else { a }]
    }
}

/// How a guest format is stored on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostLayout {
    /// Copied as is into a `Bgra8Unorm` texture.
    Bgra,
    /// A,R,G,B bytes reversed into a `Bgra8Unorm` texture.
    BgraFromArgb,
    /// Copied as is into an `Rgba8Unorm` texture.
    Rgba,
    /// x,B,G,R bytes reversed into an `Rgba8Unorm` texture.
    RgbaFromAbgr,
}

/// A rectangle in pixels, origin top-left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Rect {
    /// Left edge.
    pub x: u32,
    /// Top edge.
    pub y: u32,
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
}

impl Rect {
    /// A rectangle.
    pub const fn new(x: u32, y: u32, width: u32, height: u32) -> Rect {
        Rect {
            x,
            y,
            width,
            height,
        }
    }

    /// Whether the rectangle has no pixels.
    pub fn is_empty(&self) -> bool {
        self.width == 0 || self.height == 0
    }

    /// Whether the rectangle lies inside a `w`×`h` area (without overflow).
    pub fn fits_in(&self, w: u32, h: u32) -> bool {
        matches!(self.x.checked_add(self.width), Some(r) if r <= w)
            && matches!(self.y.checked_add(self.height), Some(b) if b <= h)
    }

    /// The intersection, or `None` if it is empty. Both rectangles must fit in u32 space.
    pub fn intersect(&self, o: &Rect) -> Option<Rect> {
        let x0 = self.x.max(o.x);
        let y0 = self.y.max(o.y);
        let x1 = self
            .x
            .saturating_add(self.width)
            .min(o.x.saturating_add(o.width));
        let y1 = self
            .y
            .saturating_add(self.height)
            .min(o.y.saturating_add(o.height));
        (x1 > x0 && y1 > y0).then(|| Rect::new(x0, y0, x1 - x0, y1 - y0))
    }

    /// The smallest rectangle containing both (saturating).
    pub fn union(&self, o: &Rect) -> Rect {
        if self.is_empty() {
            return *o;
        }
        if o.is_empty() {
            return *self;
        }
        let x0 = self.x.min(o.x);
        let y0 = self.y.min(o.y);
        let x1 = self
            .x
            .saturating_add(self.width)
            .max(o.x.saturating_add(o.width));
        let y1 = self
            .y
            .saturating_add(self.height)
            .max(o.y.saturating_add(o.height));
        Rect::new(x0, y0, x1 - x0, y1 - y0)
    }
}

/// The 24-byte header of every request and response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CtrlHeader {
    /// Command or response type.
    pub type_: u32,
    /// `VIRTIO_GPU_FLAG_*`.
    pub flags: u32,
    /// Fence id (meaningful with `VIRTIO_GPU_FLAG_FENCE`).
    pub fence_id: u64,
    /// 3D context id (echoed, unused in 2D).
    pub ctx_id: u32,
    /// Timeline index (with `VIRTIO_GPU_FLAG_INFO_RING_IDX`).
    pub ring_idx: u8,
}

impl CtrlHeader {
    /// Decodes the header from the first 24 bytes of `b`.
    pub fn decode(b: &[u8]) -> Option<CtrlHeader> {
        let mut r = Cursor::new(b);
        let h = CtrlHeader {
            type_: r.u32()?,
            flags: r.u32()?,
            fence_id: r.u64()?,
            ctx_id: r.u32()?,
            ring_idx: r.u8()?,
        };
        r.skip(3)?;
        Some(h)
    }

    /// Encodes the header.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.type_.to_le_bytes());
        out.extend_from_slice(&self.flags.to_le_bytes());
        out.extend_from_slice(&self.fence_id.to_le_bytes());
        out.extend_from_slice(&self.ctx_id.to_le_bytes());
        out.push(self.ring_idx);
        out.extend_from_slice(&[0; 3]);
    }

    /// Whether the request asks for a fence.
    pub fn is_fenced(&self) -> bool {
        self.flags & VIRTIO_GPU_FLAG_FENCE != 0
    }
}

/// One scatter-list entry of RESOURCE_ATTACH_BACKING.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemEntry {
    /// Guest-physical address.
    pub addr: u64,
    /// Length in bytes.
    pub length: u32,
}

/// The cursor position structure of the cursor queue commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CursorPos {
    /// Scanout the cursor is shown on.
    pub scanout_id: u32,
    /// X position (of the hot spot) in scanout pixels.
    pub x: u32,
    /// Y position (of the hot spot) in scanout pixels.
    pub y: u32,
}

/// A decoded request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// GET_DISPLAY_INFO.
    GetDisplayInfo,
    /// GET_EDID.
    GetEdid {
        /// Scanout asked about.
        scanout: u32,
    },
    /// RESOURCE_CREATE_2D.
    ResourceCreate2d {
        /// Guest-chosen id.
        resource_id: u32,
        /// Raw format value (validated by the device, so the error is the right one).
        format: u32,
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
    },
    /// RESOURCE_UNREF.
    ResourceUnref {
        /// Resource.
        resource_id: u32,
    },
    /// SET_SCANOUT.
    SetScanout {
        /// Part of the resource shown.
        rect: Rect,
        /// Scanout.
        scanout_id: u32,
        /// Resource, 0 to disable the scanout.
        resource_id: u32,
    },
    /// RESOURCE_FLUSH.
    ResourceFlush {
        /// Dirty rectangle in resource coordinates.
        rect: Rect,
        /// Resource.
        resource_id: u32,
    },
    /// TRANSFER_TO_HOST_2D.
    TransferToHost2d {
        /// Rectangle of the resource to update.
        rect: Rect,
        /// Byte offset of the rectangle's first pixel in the backing.
        offset: u64,
        /// Resource.
        resource_id: u32,
    },
    /// RESOURCE_ATTACH_BACKING.
    ResourceAttachBacking {
        /// Resource.
        resource_id: u32,
        /// Scatter list.
        entries: Vec<MemEntry>,
    },
    /// RESOURCE_DETACH_BACKING.
    ResourceDetachBacking {
        /// Resource.
        resource_id: u32,
    },
    /// UPDATE_CURSOR.
    UpdateCursor {
        /// Position.
        pos: CursorPos,
        /// Cursor image resource, 0 hides the cursor.
        resource_id: u32,
        /// Hot spot x inside the image.
        hot_x: u32,
        /// Hot spot y inside the image.
        hot_y: u32,
    },
    /// MOVE_CURSOR.
    MoveCursor {
        /// New position.
        pos: CursorPos,
    },
}

impl Command {
    /// The command's wire type.
    pub fn wire_type(&self) -> u32 {
        match self {
            Command::GetDisplayInfo => ctrl::GET_DISPLAY_INFO,
            Command::GetEdid { .. } => ctrl::GET_EDID,
            Command::ResourceCreate2d { .. } => ctrl::RESOURCE_CREATE_2D,
            Command::ResourceUnref { .. } => ctrl::RESOURCE_UNREF,
            Command::SetScanout { .. } => ctrl::SET_SCANOUT,
            Command::ResourceFlush { .. } => ctrl::RESOURCE_FLUSH,
            Command::TransferToHost2d { .. } => ctrl::TRANSFER_TO_HOST_2D,
            Command::ResourceAttachBacking { .. } => ctrl::RESOURCE_ATTACH_BACKING,
            Command::ResourceDetachBacking { .. } => ctrl::RESOURCE_DETACH_BACKING,
            Command::UpdateCursor { .. } => ctrl::UPDATE_CURSOR,
            Command::MoveCursor { .. } => ctrl::MOVE_CURSOR,
        }
    }

    /// Encodes the command as a request (header + body), as a guest driver would.
    pub fn encode(&self, hdr: CtrlHeader) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        CtrlHeader {
            type_: self.wire_type(),
            ..hdr
        }
        .encode(&mut out);
        let mut put = |v: u32| out.extend_from_slice(&v.to_le_bytes());
        match self {
            Command::GetDisplayInfo => {}
            Command::GetEdid { scanout } => {
                put(*scanout);
                put(0);
            }
            Command::ResourceCreate2d {
                resource_id,
                format,
                width,
                height,
            } => {
                put(*resource_id);
                put(*format);
                put(*width);
                put(*height);
            }
            Command::ResourceUnref { resource_id }
            | Command::ResourceDetachBacking { resource_id } => {
                put(*resource_id);
                put(0);
            }
            Command::SetScanout {
                rect,
                scanout_id,
                resource_id,
            } => {
                put_rect(&mut put, rect);
                put(*scanout_id);
                put(*resource_id);
            }
            Command::ResourceFlush { rect, resource_id } => {
                put_rect(&mut put, rect);
                put(*resource_id);
                put(0);
            }
            Command::TransferToHost2d {
                rect,
                offset,
                resource_id,
            } => {
                put_rect(&mut put, rect);
                put(*offset as u32);
                put((*offset >> 32) as u32);
                put(*resource_id);
                put(0);
            }
            Command::ResourceAttachBacking {
                resource_id,
                entries,
            } => {
                put(*resource_id);
                put(entries.len() as u32);
                for e in entries {
                    put(e.addr as u32);
                    put((e.addr >> 32) as u32);
                    put(e.length);
                    put(0);
                }
            }
            Command::UpdateCursor {
                pos,
                resource_id,
                hot_x,
                hot_y,
            } => {
                put_pos(&mut put, pos);
                put(*resource_id);
                put(*hot_x);
                put(*hot_y);
                put(0);
            }
            Command::MoveCursor { pos } => {
                put_pos(&mut put, pos);
                put(0);
                put(0);
                put(0);
                put(0);
            }
        }
        out
    }
}

fn put_rect(put: &mut impl FnMut(u32), r: &Rect) {
    put(r.x);
    put(r.y);
    put(r.width);
    put(r.height);
}

fn put_pos(put: &mut impl FnMut(u32), p: &CursorPos) {
    put(p.scanout_id);
    put(p.x);
    put(p.y);
    put(0);
}

/// Why a request could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer than 24 bytes: not even a header.
    NoHeader {
        /// Bytes received.
        len: usize,
    },
    /// The body is shorter than the command needs.
    Truncated {
        /// Command type.
        type_: u32,
        /// Bytes needed.
        need: usize,
        /// Bytes received.
        got: usize,
    },
    /// A type this 2D device does not implement (3D, blob, capsets, or garbage).
    Unsupported {
        /// Command type.
        type_: u32,
    },
    /// RESOURCE_ATTACH_BACKING with more entries than the device accepts.
    TooManyEntries {
        /// Entries asked for.
        nr_entries: u32,
        /// Device maximum.
        max: u32,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::NoHeader { len } => {
                write!(
                    f,
                    "request of {len} bytes is shorter than the 24-byte header"
                )
            }
            DecodeError::Truncated { type_, need, got } => write!(
                f,
                "command {type_:#x} needs {need} bytes, the request has {got}"
            ),
            DecodeError::Unsupported { type_ } => {
                write!(f, "command {type_:#x} is not part of the 2D command set")
            }
            DecodeError::TooManyEntries { nr_entries, max } => write!(
                f,
                "RESOURCE_ATTACH_BACKING with {nr_entries} entries (max {max})"
            ),
        }
    }
}

/// Maximum scatter-list entries in one RESOURCE_ATTACH_BACKING (as QEMU's cap, ×8: a 4K
/// framebuffer in 4 KiB pages needs 8100).
pub const MAX_BACKING_ENTRIES: u32 = 131_072;
/// Largest request the device reads from a descriptor chain.
pub const MAX_REQUEST_SIZE: usize = HDR_SIZE + 8 + MAX_BACKING_ENTRIES as usize * MEM_ENTRY_SIZE;

/// Decodes a request: header and command.
pub fn decode_request(
    b: &[u8],
) -> Result<(CtrlHeader, Command), (Option<CtrlHeader>, DecodeError)> {
    let hdr = CtrlHeader::decode(b).ok_or((None, DecodeError::NoHeader { len: b.len() }))?;
    let body = &b[HDR_SIZE..];
    let need = |n: usize| -> Result<Cursor<'_>, (Option<CtrlHeader>, DecodeError)> {
        if body.len() < n {
            Err((
                Some(hdr),
                DecodeError::Truncated {
                    type_: hdr.type_,
                    need: HDR_SIZE + n,
                    got: b.len(),
                },
            ))
        } else {
            Ok(Cursor::new(body))
        }
    };
    // The reads below cannot fail after `need` (lengths are checked first); `?` on Option is
    // mapped to a Truncated error all the same, so no path can panic.
    let trunc = (
        Some(hdr),
        DecodeError::Truncated {
            type_: hdr.type_,
            need: 0,
            got: b.len(),
        },
    );
    let cmd = (|| -> Result<Command, (Option<CtrlHeader>, DecodeError)> {
        Ok(match hdr.type_ {
            ctrl::GET_DISPLAY_INFO => Command::GetDisplayInfo,
            ctrl::GET_EDID => {
                let mut c = need(8)?;
                Command::GetEdid {
                    scanout: c.u32().ok_or(trunc.clone())?,
                }
            }
            ctrl::RESOURCE_CREATE_2D => {
                let mut c = need(16)?;
                let mut g = || c.u32().ok_or(trunc.clone());
                Command::ResourceCreate2d {
                    resource_id: g()?,
                    format: g()?,
                    width: g()?,
                    height: g()?,
                }
            }
            ctrl::RESOURCE_UNREF => Command::ResourceUnref {
                resource_id: need(8)?.u32().ok_or(trunc.clone())?,
            },
            ctrl::RESOURCE_DETACH_BACKING => Command::ResourceDetachBacking {
                resource_id: need(8)?.u32().ok_or(trunc.clone())?,
            },
            ctrl::SET_SCANOUT => {
                let mut c = need(24)?;
                let rect = c.rect().ok_or(trunc.clone())?;
                Command::SetScanout {
                    rect,
                    scanout_id: c.u32().ok_or(trunc.clone())?,
                    resource_id: c.u32().ok_or(trunc.clone())?,
                }
            }
            ctrl::RESOURCE_FLUSH => {
                let mut c = need(24)?;
                let rect = c.rect().ok_or(trunc.clone())?;
                Command::ResourceFlush {
                    rect,
                    resource_id: c.u32().ok_or(trunc.clone())?,
                }
            }
            ctrl::TRANSFER_TO_HOST_2D => {
                let mut c = need(32)?;
                let rect = c.rect().ok_or(trunc.clone())?;
                Command::TransferToHost2d {
                    rect,
                    offset: c.u64().ok_or(trunc.clone())?,
                    resource_id: c.u32().ok_or(trunc.clone())?,
                }
            }
            ctrl::RESOURCE_ATTACH_BACKING => {
                let mut c = need(8)?;
                let resource_id = c.u32().ok_or(trunc.clone())?;
                let nr = c.u32().ok_or(trunc.clone())?;
                if nr > MAX_BACKING_ENTRIES {
                    return Err((
                        Some(hdr),
                        DecodeError::TooManyEntries {
                            nr_entries: nr,
                            max: MAX_BACKING_ENTRIES,
                        },
                    ));
                }
                // nr ≤ 2^17, so this cannot overflow.
                let mut c = need(8 + nr as usize * MEM_ENTRY_SIZE)?;
                c.skip(8).ok_or(trunc.clone())?;
                let mut entries = Vec::with_capacity(nr as usize);
                for _ in 0..nr {
                    let addr = c.u64().ok_or(trunc.clone())?;
                    let length = c.u32().ok_or(trunc.clone())?;
                    c.skip(4).ok_or(trunc.clone())?;
                    entries.push(MemEntry { addr, length });
                }
                Command::ResourceAttachBacking {
                    resource_id,
                    entries,
                }
            }
            ctrl::UPDATE_CURSOR | ctrl::MOVE_CURSOR => {
                let mut c = need(32)?;
                let mut g = || c.u32().ok_or(trunc.clone());
                let pos = CursorPos {
                    scanout_id: g()?,
                    x: g()?,
                    y: g()?,
                };
                let _pad = g()?;
                if hdr.type_ == ctrl::MOVE_CURSOR {
                    Command::MoveCursor { pos }
                } else {
                    Command::UpdateCursor {
                        pos,
                        resource_id: g()?,
                        hot_x: g()?,
                        hot_y: g()?,
                    }
                }
            }
            t => return Err((Some(hdr), DecodeError::Unsupported { type_: t })),
        })
    })()?;
    Ok((hdr, cmd))
}

/// One scanout in OK_DISPLAY_INFO.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DisplayOne {
    /// Preferred position and size.
    pub rect: Rect,
    /// Whether a display is connected.
    pub enabled: bool,
}

/// A response body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// OK_NODATA.
    OkNoData,
    /// OK_DISPLAY_INFO: one entry per scanout (up to 16).
    OkDisplayInfo(Vec<DisplayOne>),
    /// OK_EDID: the EDID bytes (at most 1024).
    OkEdid(Vec<u8>),
    /// An error.
    Err(ErrorCode),
}

impl Response {
    /// The wire response type.
    pub fn wire_type(&self) -> u32 {
        match self {
            Response::OkNoData => ctrl::RESP_OK_NODATA,
            Response::OkDisplayInfo(_) => ctrl::RESP_OK_DISPLAY_INFO,
            Response::OkEdid(_) => ctrl::RESP_OK_EDID,
            Response::Err(e) => e.wire(),
        }
    }

    /// Encodes the response after a header that echoes `req`'s fence fields when fenced.
    pub fn encode(&self, req: Option<&CtrlHeader>) -> Vec<u8> {
        let mut hdr = CtrlHeader {
            type_: self.wire_type(),
            ..Default::default()
        };
        if let Some(r) = req {
            if r.is_fenced() {
                hdr.flags = VIRTIO_GPU_FLAG_FENCE;
                hdr.fence_id = r.fence_id;
                hdr.ctx_id = r.ctx_id;
            }
        }
        let mut out = Vec::with_capacity(HDR_SIZE);
        hdr.encode(&mut out);
        match self {
            Response::OkNoData | Response::Err(_) => {}
            Response::OkDisplayInfo(modes) => {
                for i in 0..VIRTIO_GPU_MAX_SCANOUTS {
                    let m = modes.get(i).copied().unwrap_or_default();
                    for v in [
                        m.rect.x,
                        m.rect.y,
                        m.rect.width,
                        m.rect.height,
                        m.enabled as u32,
                        0,
                    ] {
                        out.extend_from_slice(&v.to_le_bytes());
                    }
                }
            }
            Response::OkEdid(edid) => {
                let n = edid.len().min(EDID_BLOB_SIZE);
                out.extend_from_slice(&(n as u32).to_le_bytes());
                out.extend_from_slice(&0u32.to_le_bytes());
                out.extend_from_slice(&edid[..n]);
                out.resize(EDID_RESP_SIZE, 0);
            }
        }
        out
    }

    /// The size of the encoded response for a command type (what a driver allocates).
    pub fn size_for(cmd_type: u32) -> usize {
        match cmd_type {
            ctrl::GET_DISPLAY_INFO => DISPLAY_INFO_RESP_SIZE,
            ctrl::GET_EDID => EDID_RESP_SIZE,
            _ => HDR_SIZE,
        }
    }
}

/// A bounds-checked little-endian reader.
struct Cursor<'a> {
    b: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn new(b: &'a [u8]) -> Self {
        Cursor { b }
    }
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (h, t) = self.b.split_at_checked(N)?;
        self.b = t;
        h.try_into().ok()
    }
    fn skip(&mut self, n: usize) -> Option<()> {
        self.b = self.b.get(n..)?;
        Some(())
    }
    fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|a| a[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_le_bytes)
    }
    fn rect(&mut self) -> Option<Rect> {
        Some(Rect::new(
            self.u32()?,
            self.u32()?,
            self.u32()?,
            self.u32()?,
        ))
    }
}
