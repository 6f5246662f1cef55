//! The 3D command set of the wgpu rung's virtio-gpu, carrying WebGPU (`webgpu-wire`) instead
//! of virgl: the transport between the guest library (`webgpu-guest`, on the guest's DRM
//! render node) and the executor (`webgpu-host`) on the rung's adapter.
//!
//! Offered only when [`super::VirtioGpuConfig::webgpu`] is on: the device then sets
//! `VIRTIO_GPU_F_VIRGL` (QEMU's `vhost-user-gpu-pci` passes it to the guest when the backend
//! offers it, which makes the guest kernel send 3D commands) and one capset,
//! [`WEBGPU_CAPSET_ID`], whose payload is the protocol version and the limits and feature
//! words the executor offers on this adapter. No virgl command stream is ever interpreted.
//!
//! What each 3D command does here:
//! - `CTX_CREATE`: a fresh executor context ([`webgpu_host::Context`]) with its own objects
//!   and its share of the VM's budget; `CTX_DESTROY` drops it and everything it holds.
//! - `RESOURCE_CREATE_3D`: only buffers (`target` 0, `height = depth = array_size = 1`);
//!   their storage *is* the guest pages attached with `RESOURCE_ATTACH_BACKING`, read and
//!   written in place, so `TRANSFER_TO_HOST_3D` / `TRANSFER_FROM_HOST_3D` are validated and
//!   have nothing to copy. `CTX_ATTACH_RESOURCE` makes a resource usable by one context.
//! - `SUBMIT_3D`: a frame of [`SUBMIT_HEADER`] bytes, then request bytes. `OP_APPEND` parts
//!   are gathered (at most one wire message), `OP_CALL` ends the request: the executor runs
//!   it and the reply goes into the *reply resource* named in the frame, a buffer attached
//!   to the same context: [`REPLY_HEADER`] bytes (magic, status, the frame's sequence
//!   number, length) then the reply. A reply larger than the resource is held and the header
//!   says so ([`STATUS_TOO_LARGE`]); `OP_FETCH` with a larger resource delivers it. The
//!   guest waits for the submission's fence (DRM `WAIT` on the reply resource) and reads
//!   the reply through its mapping.
//!
//! Every field is guest-controlled and checked: lengths, ids (a resource must be attached
//! to the submitting context, so a context never reaches another's), counts (contexts,
//! resources) and the pending request bytes (one wire message per context,
//! [`MAX_PENDING_VM`] for the VM).

use std::collections::{HashMap, HashSet};

use vm_memory::{Bytes, GuestAddress, GuestMemory};

use super::protocol::{CtrlHeader, ErrorCode, HDR_SIZE, VIRTIO_GPU_FLAG_FENCE};
use super::resources::Backing;

/// The capset id of the WebGPU protocol. Outside the ids Linux knows (1 virgl, 2 virgl2,
/// 3 gfxstream, 4 venus, 5 cross-domain, 6 DRM native context) and below the kernel's
/// limit of 63.
pub const WEBGPU_CAPSET_ID: u32 = 48;

/// 3D and capset command types (`enum virtio_gpu_ctrl_type`).
pub mod cmd {
    /// GET_CAPSET_INFO.
    pub const GET_CAPSET_INFO: u32 = 0x108;
    /// GET_CAPSET.
    pub const GET_CAPSET: u32 = 0x109;
    /// CTX_CREATE.
    pub const CTX_CREATE: u32 = 0x200;
    /// CTX_DESTROY.
    pub const CTX_DESTROY: u32 = 0x201;
    /// CTX_ATTACH_RESOURCE.
    pub const CTX_ATTACH_RESOURCE: u32 = 0x202;
    /// CTX_DETACH_RESOURCE.
    pub const CTX_DETACH_RESOURCE: u32 = 0x203;
    /// RESOURCE_CREATE_3D.
    pub const RESOURCE_CREATE_3D: u32 = 0x204;
    /// TRANSFER_TO_HOST_3D.
    pub const TRANSFER_TO_HOST_3D: u32 = 0x205;
    /// TRANSFER_FROM_HOST_3D.
    pub const TRANSFER_FROM_HOST_3D: u32 = 0x206;
    /// SUBMIT_3D.
    pub const SUBMIT_3D: u32 = 0x207;
    /// OK_CAPSET_INFO.
    pub const RESP_OK_CAPSET_INFO: u32 = 0x1102;
    /// OK_CAPSET.
    pub const RESP_OK_CAPSET: u32 = 0x1103;

    /// Whether `t` is a command this module handles.
    pub fn is_3d(t: u32) -> bool {
        matches!(t, GET_CAPSET_INFO | GET_CAPSET) || (CTX_CREATE..=SUBMIT_3D).contains(&t)
    }
}

/// Magic of a SUBMIT_3D frame (`WGVG`).
pub const SUBMIT_MAGIC: [u8; 4] = *b"WGVG";
/// Magic of a reply area (`WGVR`).
pub const REPLY_MAGIC: [u8; 4] = *b"WGVR";
/// SUBMIT_3D frame header: magic, op, reply resource, sequence number (4 × u32).
pub const SUBMIT_HEADER: usize = 16;
/// Reply area header: magic, status, sequence number, reserved (4 × u32), length (u64).
pub const REPLY_HEADER: usize = 24;
/// Frame op: part of a request; more follows.
pub const OP_APPEND: u32 = 1;
/// Frame op: the last part of a request: run it, write the reply.
pub const OP_CALL: u32 = 2;
/// Frame op: write the held reply into a (larger) reply resource.
pub const OP_FETCH: u32 = 3;
/// Reply status: the reply follows the header.
pub const STATUS_OK: u32 = 0;
/// Reply status: the reply (`length` bytes) does not fit; it is held for `OP_FETCH`.
pub const STATUS_TOO_LARGE: u32 = 1;
/// Reply status: the frame was refused (bad op, no request, request too large); the
/// reply is a UTF-8 message.
pub const STATUS_REFUSED: u32 = 2;

/// Contexts one VM may hold at once; each gets this share of the VM's budget.
pub const MAX_CONTEXTS: usize = 8;
/// 3D resources one VM may hold at once.
pub const MAX_RESOURCES: usize = 4096;
/// Largest request (wire header + body) gathered from `OP_APPEND` parts in one context.
pub const MAX_PENDING: usize = webgpu_wire::HEADER_LEN + webgpu_wire::MAX_MESSAGE;
/// Request bytes gathered from `OP_APPEND` parts in all of a VM's contexts together.
pub const MAX_PENDING_VM: usize = 96 << 20;

/// Size of the virtio GET_CAPSET_INFO response.
pub const CAPSET_INFO_RESP_SIZE: usize = HDR_SIZE + 16;

/// The capset payload: the protocol version (u32), then the limits the executor grants on
/// this adapter ([`webgpu_wire::encode_limits`]), then the two feature words it offers.
pub fn capset_payload(adapter: &wgpu::Adapter) -> Vec<u8> {
    let mut w = webgpu_wire::Writer::new();
    w.u32(webgpu_wire::PROTOCOL_VERSION as u32);
    webgpu_wire::encode_limits(&mut w, &adapter.limits());
    // This protocol version offers no optional features.
    w.u64(0);
    w.u64(0);
    w.into_bytes()
}

/// A 3D buffer resource: its size and the guest pages that hold it.
#[derive(Debug)]
struct Buffer3d {
    size: u64,
    backing: Option<Backing>,
}

/// One guest context.
struct GuestContext {
    exec: webgpu_host::Context,
    attached: HashSet<u32>,
    /// Request bytes gathered from `OP_APPEND` frames.
    pending: Vec<u8>,
    /// A reply too large for the reply resource it was meant for.
    held: Option<Vec<u8>>,
}

impl std::fmt::Debug for GuestContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestContext")
            .field("attached", &self.attached)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

/// The 3D side of one VM's device.
#[derive(Debug)]
pub struct WebGpu3d {
    host: webgpu_host::Host,
    budget: webgpu_host::Budget,
    capset: Vec<u8>,
    contexts: HashMap<u32, GuestContext>,
    resources: HashMap<u32, Buffer3d>,
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn header(req: &CtrlHeader, type_: u32) -> Vec<u8> {
    let mut h = CtrlHeader {
        type_,
        ..Default::default()
    };
    if req.is_fenced() {
        h.flags = VIRTIO_GPU_FLAG_FENCE;
        h.fence_id = req.fence_id;
        h.ctx_id = req.ctx_id;
    }
    let mut out = Vec::with_capacity(HDR_SIZE);
    h.encode(&mut out);
    out
}

/// Writes `data` at byte `off` of `backing`, segment by segment.
fn write_backing<M: GuestMemory>(
    backing: &Backing,
    off: u64,
    data: &[u8],
    mem: &M,
) -> Result<(), ErrorCode> {
    let end = off
        .checked_add(data.len() as u64)
        .ok_or(ErrorCode::InvalidParameter)?;
    if end > backing.len() {
        return Err(ErrorCode::InvalidParameter);
    }
    let mut pos = 0u64; // offset of the current segment
    let mut done = 0usize;
    for &(addr, len) in backing.segments() {
        if done == data.len() {
            break;
        }
        let seg_end = pos + len;
        let at = off + done as u64;
        if at < seg_end {
            let inner = at - pos;
            let n = ((len - inner) as usize).min(data.len() - done);
            mem.write_slice(&data[done..done + n], GuestAddress(addr + inner))
                .map_err(|_| ErrorCode::Unspec)?;
            done += n;
        }
        pos = seg_end;
    }
    Ok(())
}

impl WebGpu3d {
    /// The 3D side on `adapter`; the VM's contexts share `budget` ([`MAX_CONTEXTS`] equal
    /// parts).
    pub fn new(adapter: wgpu::Adapter, budget: webgpu_host::Budget) -> Self {
        WebGpu3d {
            capset: capset_payload(&adapter),
            host: webgpu_host::Host::new(adapter),
            budget,
            contexts: HashMap::new(),
            resources: HashMap::new(),
        }
    }

    /// The capset payload offered to the guest.
    pub fn capset(&self) -> &[u8] {
        &self.capset
    }

    /// Contexts alive.
    pub fn context_count(&self) -> usize {
        self.contexts.len()
    }

    /// 3D resources alive.
    pub fn resource_count(&self) -> usize {
        self.resources.len()
    }

    /// Whether context `ctx_id` exists.
    pub fn has_context(&self, ctx_id: u32) -> bool {
        self.contexts.contains_key(&ctx_id)
    }

    /// Whether `id` names a 3D resource.
    pub fn has_resource(&self, id: u32) -> bool {
        self.resources.contains_key(&id)
    }

    /// Drops every context and resource (device reset).
    pub fn reset(&mut self) {
        self.contexts.clear();
        self.resources.clear();
    }

    fn context_budget(&self) -> webgpu_host::Budget {
        let b = self.budget;
        let n = MAX_CONTEXTS as u64;
        webgpu_host::Budget {
            max_objects: (b.max_objects / MAX_CONTEXTS).max(1),
            max_bytes: (b.max_bytes / n).max(1),
            max_in_flight: b.max_in_flight,
            max_error_scopes: b.max_error_scopes,
            max_uncaptured: b.max_uncaptured,
        }
    }

    /// Handles a 3D or capset command (`hdr` decoded, `request` the whole request) and
    /// returns the response bytes (header echoing the fence, and payload).
    pub fn handle<M: GuestMemory>(&mut self, hdr: &CtrlHeader, request: &[u8], mem: &M) -> Vec<u8> {
        match self.execute(hdr, request, mem) {
            Ok(resp) => resp,
            Err(e) => header(hdr, e.wire()),
        }
    }

    fn execute<M: GuestMemory>(
        &mut self,
        hdr: &CtrlHeader,
        request: &[u8],
        mem: &M,
    ) -> Result<Vec<u8>, ErrorCode> {
        let body = request.get(HDR_SIZE..).unwrap_or_default();
        // Each command's fixed body size, checked before any field is read.
        let need = match hdr.type_ {
            cmd::GET_CAPSET_INFO | cmd::GET_CAPSET => 8,
            cmd::CTX_CREATE => 72,
            cmd::CTX_DESTROY => 0,
            cmd::CTX_ATTACH_RESOURCE | cmd::CTX_DETACH_RESOURCE => 8,
            cmd::RESOURCE_CREATE_3D => 48,
            cmd::TRANSFER_TO_HOST_3D | cmd::TRANSFER_FROM_HOST_3D => 48,
            cmd::SUBMIT_3D => 8,
            _ => return Err(ErrorCode::Unspec),
        };
        if body.len() < need {
            return Err(ErrorCode::Unspec);
        }
        let u = |i: usize| le32(body, i * 4).unwrap_or(0);
        let ok = || header(hdr, super::protocol::ctrl::RESP_OK_NODATA);
        match hdr.type_ {
            cmd::GET_CAPSET_INFO => {
                if u(0) != 0 {
                    return Err(ErrorCode::InvalidParameter);
                }
                let mut r = header(hdr, cmd::RESP_OK_CAPSET_INFO);
                for v in [
                    WEBGPU_CAPSET_ID,
                    webgpu_wire::PROTOCOL_VERSION as u32,
                    self.capset.len() as u32,
                    0,
                ] {
                    r.extend_from_slice(&v.to_le_bytes());
                }
                Ok(r)
            }
            cmd::GET_CAPSET => {
                if u(0) != WEBGPU_CAPSET_ID || u(1) > webgpu_wire::PROTOCOL_VERSION as u32 {
                    return Err(ErrorCode::InvalidParameter);
                }
                let mut r = header(hdr, cmd::RESP_OK_CAPSET);
                r.extend_from_slice(&self.capset);
                Ok(r)
            }
            cmd::CTX_CREATE => {
                let (nlen, context_init) = (u(0), u(1));
                if hdr.ctx_id == 0 || self.contexts.contains_key(&hdr.ctx_id) {
                    return Err(ErrorCode::InvalidContextId);
                }
                let capset = context_init & 0xff;
                if nlen > 64 || (capset != 0 && capset != WEBGPU_CAPSET_ID) {
                    return Err(ErrorCode::InvalidParameter);
                }
                if self.contexts.len() >= MAX_CONTEXTS {
                    return Err(ErrorCode::OutOfMemory);
                }
                let exec = self.host.context(self.context_budget());
                self.contexts.insert(
                    hdr.ctx_id,
                    GuestContext {
                        exec,
                        attached: HashSet::new(),
                        pending: Vec::new(),
                        held: None,
                    },
                );
                Ok(ok())
            }
            cmd::CTX_DESTROY => self
                .contexts
                .remove(&hdr.ctx_id)
                .map(|_| ok())
                .ok_or(ErrorCode::InvalidContextId),
            cmd::CTX_ATTACH_RESOURCE | cmd::CTX_DETACH_RESOURCE => {
                let rid = u(0);
                let ctx = self
                    .contexts
                    .get_mut(&hdr.ctx_id)
                    .ok_or(ErrorCode::InvalidContextId)?;
                if hdr.type_ == cmd::CTX_ATTACH_RESOURCE {
                    if !self.resources.contains_key(&rid) {
                        return Err(ErrorCode::InvalidResourceId);
                    }
                    ctx.attached.insert(rid);
                } else if !ctx.attached.remove(&rid) {
                    return Err(ErrorCode::InvalidResourceId);
                }
                Ok(ok())
            }
            cmd::RESOURCE_CREATE_3D => Err(ErrorCode::Unspec), // routed by the device
            cmd::TRANSFER_TO_HOST_3D | cmd::TRANSFER_FROM_HOST_3D => {
                // box: x y z w h d, offset u64, resource, level, stride, layer_stride
                let (x, w) = (u(0) as u64, u(3) as u64);
                let (y, z, h, d) = (u(1), u(2), u(4), u(5));
                let rid = u(8);
                let level = u(9);
                let ctx = self
                    .contexts
                    .get(&hdr.ctx_id)
                    .ok_or(ErrorCode::InvalidContextId)?;
                if !ctx.attached.contains(&rid) {
                    return Err(ErrorCode::InvalidResourceId);
                }
                let res = self
                    .resources
                    .get(&rid)
                    .ok_or(ErrorCode::InvalidResourceId)?;
                if level != 0 || y != 0 || z != 0 || h > 1 || d > 1 || x + w > res.size {
                    return Err(ErrorCode::InvalidParameter);
                }
                // The guest pages are the resource's storage: nothing to copy.
                res.backing.as_ref().map(|_| ok()).ok_or(ErrorCode::Unspec)
            }
            cmd::SUBMIT_3D => {
                let size = u(0) as usize;
                let data = body.get(8..8 + size).ok_or(ErrorCode::InvalidParameter)?;
                self.submit(hdr.ctx_id, data, mem)?;
                Ok(ok())
            }
            _ => Err(ErrorCode::Unspec),
        }
    }

    /// RESOURCE_CREATE_3D, after the device checked that `id` is free among its 2D
    /// resources.
    pub fn create_resource(&mut self, request: &[u8]) -> Result<(), ErrorCode> {
        let body = request.get(HDR_SIZE..).unwrap_or_default();
        if body.len() < 48 {
            return Err(ErrorCode::Unspec);
        }
        let u = |i: usize| le32(body, i * 4).unwrap_or(0);
        // resource_id target format bind width height depth array_size last_level nr_samples flags
        let (id, target, width) = (u(0), u(1), u(4));
        let (height, depth, array_size, last_level, nr_samples) = (u(5), u(6), u(7), u(8), u(9));
        if id == 0 || self.resources.contains_key(&id) {
            return Err(ErrorCode::InvalidResourceId);
        }
        if target != 0
            || width == 0
            || height != 1
            || depth != 1
            || array_size != 1
            || last_level != 0
            || nr_samples > 1
        {
            return Err(ErrorCode::InvalidParameter);
        }
        if self.resources.len() >= MAX_RESOURCES {
            return Err(ErrorCode::OutOfMemory);
        }
        self.resources.insert(
            id,
            Buffer3d {
                size: width as u64,
                backing: None,
            },
        );
        Ok(())
    }

    /// RESOURCE_UNREF of a 3D resource: gone from every context too.
    pub fn unref(&mut self, id: u32) -> Result<(), ErrorCode> {
        self.resources
            .remove(&id)
            .ok_or(ErrorCode::InvalidResourceId)?;
        for c in self.contexts.values_mut() {
            c.attached.remove(&id);
        }
        Ok(())
    }

    /// RESOURCE_ATTACH_BACKING of a 3D resource: the backing must cover the buffer.
    pub fn attach_backing(&mut self, id: u32, backing: Backing) -> Result<(), ErrorCode> {
        let r = self
            .resources
            .get_mut(&id)
            .ok_or(ErrorCode::InvalidResourceId)?;
        if r.backing.is_some() {
            return Err(ErrorCode::Unspec);
        }
        if backing.len() < r.size {
            return Err(ErrorCode::InvalidParameter);
        }
        r.backing = Some(backing);
        Ok(())
    }

    /// RESOURCE_DETACH_BACKING of a 3D resource.
    pub fn detach_backing(&mut self, id: u32) -> Result<(), ErrorCode> {
        let r = self
            .resources
            .get_mut(&id)
            .ok_or(ErrorCode::InvalidResourceId)?;
        r.backing.take().map(|_| ()).ok_or(ErrorCode::Unspec)
    }

    /// SUBMIT_3D: one frame of the WebGPU transport.
    fn submit<M: GuestMemory>(
        &mut self,
        ctx_id: u32,
        data: &[u8],
        mem: &M,
    ) -> Result<(), ErrorCode> {
        let pending_vm: usize = self.contexts.values().map(|c| c.pending.len()).sum();
        let ctx = self
            .contexts
            .get_mut(&ctx_id)
            .ok_or(ErrorCode::InvalidContextId)?;
        if data.len() < SUBMIT_HEADER || data[..4] != SUBMIT_MAGIC {
            return Err(ErrorCode::InvalidParameter);
        }
        let (op, rid, seq) = (
            le32(data, 4).unwrap_or(0),
            le32(data, 8).unwrap_or(0),
            le32(data, 12).unwrap_or(0),
        );
        let part = &data[SUBMIT_HEADER..];
        // The reply resource must belong to this context and have guest pages.
        let reply_area = |resources: &HashMap<u32, Buffer3d>,
                          attached: &HashSet<u32>|
         -> Result<Backing, ErrorCode> {
            if !attached.contains(&rid) {
                return Err(ErrorCode::InvalidResourceId);
            }
            let r = resources.get(&rid).ok_or(ErrorCode::InvalidResourceId)?;
            let b = r.backing.clone().ok_or(ErrorCode::Unspec)?;
            if r.size < REPLY_HEADER as u64 {
                return Err(ErrorCode::InvalidParameter);
            }
            Ok(b)
        };
        match op {
            OP_APPEND => {
                if ctx.pending.len() + part.len() > MAX_PENDING
                    || pending_vm + part.len() > MAX_PENDING_VM
                {
                    // The request can never complete: drop what was gathered.
                    ctx.pending = Vec::new();
                    return Err(ErrorCode::OutOfMemory);
                }
                ctx.pending.extend_from_slice(part);
                Ok(())
            }
            OP_CALL => {
                let area = reply_area(&self.resources, &ctx.attached)?;
                let size = self.resources.get(&rid).map_or(0, |r| r.size);
                let mut request = std::mem::take(&mut ctx.pending);
                let (status, reply) = if request.len() + part.len() > MAX_PENDING {
                    (
                        STATUS_REFUSED,
                        format!("request over {MAX_PENDING} bytes").into_bytes(),
                    )
                } else {
                    request.extend_from_slice(part);
                    (STATUS_OK, ctx.exec.handle(&request))
                };
                Self::deliver(ctx, &area, size, seq, status, reply, mem)
            }
            OP_FETCH => {
                let area = reply_area(&self.resources, &ctx.attached)?;
                let size = self.resources.get(&rid).map_or(0, |r| r.size);
                match ctx.held.take() {
                    Some(reply) => Self::deliver(ctx, &area, size, seq, STATUS_OK, reply, mem),
                    None => Self::deliver(
                        ctx,
                        &area,
                        size,
                        seq,
                        STATUS_REFUSED,
                        b"no reply is held".to_vec(),
                        mem,
                    ),
                }
            }
            _ => Err(ErrorCode::InvalidParameter),
        }
    }

    /// Writes a reply (or, if it does not fit, its length, holding it) into the reply area.
    fn deliver<M: GuestMemory>(
        ctx: &mut GuestContext,
        area: &Backing,
        size: u64,
        seq: u32,
        status: u32,
        reply: Vec<u8>,
        mem: &M,
    ) -> Result<(), ErrorCode> {
        let room = size.min(area.len());
        let fits = (REPLY_HEADER + reply.len()) as u64 <= room;
        let status = if fits { status } else { STATUS_TOO_LARGE };
        let mut head = Vec::with_capacity(REPLY_HEADER);
        head.extend_from_slice(&REPLY_MAGIC);
        head.extend_from_slice(&status.to_le_bytes());
        head.extend_from_slice(&seq.to_le_bytes());
        head.extend_from_slice(&0u32.to_le_bytes());
        head.extend_from_slice(&(reply.len() as u64).to_le_bytes());
        if fits {
            write_backing(area, REPLY_HEADER as u64, &reply, mem)?;
        } else {
            ctx.held = Some(reply);
        }
        // The header last: a guest polling it never sees a header before its reply.
        write_backing(area, 0, &head, mem)
    }
}
