//! WebGPU over the 3D commands: request helpers and [`DeviceTransport`], the guest
//! library's transport through the virtqueue harness (what `webgpu_guest::VirtioGpu` does
//! through the kernel in a VM).

use std::sync::Mutex;

use super::{backend, Guest, GuestBuffer, PAGE};
use vm_device::gpu_virt::virtio_gpu::protocol::{ctrl, HDR_SIZE};
use vm_device::gpu_virt::virtio_gpu::webgpu::{
    cmd, OP_APPEND, OP_CALL, OP_FETCH, REPLY_HEADER, REPLY_MAGIC, STATUS_OK, STATUS_TOO_LARGE,
    SUBMIT_MAGIC,
};
use vm_device::gpu_virt::virtio_gpu::{Command, CtrlHeader, QueueKind, VirtioGpuConfig};
use vm_device::gpu_virt::WgpuBackend;
use vm_memory::{Bytes, GuestAddress};
use webgpu_wire::{Transport, TransportError};

pub fn config(webgpu: bool) -> VirtioGpuConfig {
    VirtioGpuConfig {
        scanouts: vec![(64, 64)],
        webgpu: webgpu.then(webgpu_host::Budget::default),
        ..Default::default()
    }
}

pub fn be() -> WgpuBackend {
    backend(wgpu::Backends::VULKAN)
}

/// A request: header (type, ctx, fenced) and body words / bytes.
pub fn req(type_: u32, ctx_id: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    CtrlHeader {
        type_,
        flags: 1,
        fence_id: 99,
        ctx_id,
        ring_idx: 0,
    }
    .encode(&mut out);
    out.extend_from_slice(body);
    out
}

pub fn words(w: &[u32]) -> Vec<u8> {
    w.iter().flat_map(|v| v.to_le_bytes()).collect()
}

pub fn send(g: &mut Guest, r: &[u8], resp_len: usize) -> (u32, Vec<u8>) {
    let resp = g.raw(QueueKind::Control, r, resp_len);
    let h = CtrlHeader::decode(&resp).expect("a response header");
    assert_eq!(h.fence_id, 99, "the fence is echoed");
    (h.type_, resp)
}

pub fn status(g: &mut Guest, r: &[u8]) -> u32 {
    send(g, r, HDR_SIZE).0
}

pub fn ctx_create(g: &mut Guest, ctx: u32, context_init: u32) -> u32 {
    let mut body = words(&[4, context_init]);
    body.extend_from_slice(&[b't'; 64]);
    status(g, &req(cmd::CTX_CREATE, ctx, &body))
}

pub fn create_3d(g: &mut Guest, id: u32, size: u32) -> u32 {
    status(
        g,
        &req(
            cmd::RESOURCE_CREATE_3D,
            0,
            &words(&[id, 0, 64, 16, size, 1, 1, 1, 0, 0, 0, 0]),
        ),
    )
}

/// A 3D buffer with guest pages, attached to `ctx`.
pub fn buffer(g: &mut Guest, ctx: u32, id: u32, size: u32) -> GuestBuffer {
    assert_eq!(create_3d(g, id, size), ctrl::RESP_OK_NODATA);
    let buf = g.alloc_buffer(size as u64);
    let entries = g.entries(&buf);
    g.ok(&Command::ResourceAttachBacking {
        resource_id: id,
        entries,
    });
    assert_eq!(
        status(g, &req(cmd::CTX_ATTACH_RESOURCE, ctx, &words(&[id, 0]))),
        ctrl::RESP_OK_NODATA
    );
    buf
}

pub fn submit(g: &mut Guest, ctx: u32, op: u32, reply: u32, seq: u32, part: &[u8]) -> u32 {
    let mut data = SUBMIT_MAGIC.to_vec();
    data.extend_from_slice(&words(&[op, reply, seq]));
    data.extend_from_slice(part);
    let mut body = words(&[data.len() as u32, 0]);
    body.extend_from_slice(&data);
    status(g, &req(cmd::SUBMIT_3D, ctx, &body))
}

pub fn read(g: &Guest, b: &GuestBuffer, off: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let mut done = 0;
    while done < len {
        let o = off + done as u64;
        let page = b.pages[(o / PAGE) as usize];
        let n = ((PAGE - o % PAGE) as usize).min(len - done);
        g.mem
            .read_slice(&mut out[done..done + n], GuestAddress(page + o % PAGE))
            .unwrap();
        done += n;
    }
    out
}

/// (status, seq, length) of a reply area.
pub fn reply_header(g: &Guest, b: &GuestBuffer) -> (u32, u32, u64) {
    let h = read(g, b, 0, REPLY_HEADER);
    assert_eq!(h[..4], REPLY_MAGIC, "reply magic");
    let u = |i: usize| u32::from_le_bytes(h[i..i + 4].try_into().unwrap());
    (
        u(4),
        u(8),
        u64::from_le_bytes(h[16..24].try_into().unwrap()),
    )
}

/// The guest library's view of the device: a `Transport` that speaks the 3D command set
/// through the virtqueue harness, like `webgpu_guest::VirtioGpu` does through the kernel.
pub struct DeviceTransport {
    pub inner: Mutex<State>,
    part: usize,
}

pub struct State {
    /// The guest.
    pub g: Guest,
    ctx: u32,
    reply: (u32, GuestBuffer, u32),
    next_res: u32,
    seq: u32,
    pub fetches: u32,
}

impl std::fmt::Debug for DeviceTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeviceTransport")
    }
}

impl DeviceTransport {
    pub fn new(mut g: Guest, reply_size: u32, part: usize) -> Self {
        assert_eq!(ctx_create(&mut g, 1, 0), ctrl::RESP_OK_NODATA);
        let b = buffer(&mut g, 1, 100, reply_size);
        DeviceTransport {
            inner: Mutex::new(State {
                g,
                ctx: 1,
                reply: (100, b, reply_size),
                next_res: 101,
                seq: 0,
                fetches: 0,
            }),
            part,
        }
    }
}

impl Transport for DeviceTransport {
    fn call(&self, request: Vec<u8>) -> Result<Vec<u8>, TransportError> {
        let mut s = self.inner.lock().unwrap();
        let s = &mut *s;
        s.seq += 1;
        let chunks: Vec<&[u8]> = request.chunks(self.part).collect();
        for (i, c) in chunks.iter().enumerate() {
            let op = if i + 1 == chunks.len() {
                OP_CALL
            } else {
                OP_APPEND
            };
            assert_eq!(
                submit(&mut s.g, s.ctx, op, s.reply.0, s.seq, c),
                ctrl::RESP_OK_NODATA
            );
        }
        let (st, seq, len) = reply_header(&s.g, &s.reply.1);
        assert_eq!(seq, s.seq, "the reply answers this call");
        if st == STATUS_TOO_LARGE {
            let size = ((REPLY_HEADER as u64 + len).next_power_of_two()) as u32;
            let id = s.next_res;
            s.next_res += 1;
            let b = buffer(&mut s.g, s.ctx, id, size);
            s.reply = (id, b, size);
            s.fetches += 1;
            assert_eq!(
                submit(&mut s.g, s.ctx, OP_FETCH, id, s.seq, &[]),
                ctrl::RESP_OK_NODATA
            );
            let (st, _, len2) = reply_header(&s.g, &s.reply.1);
            assert_eq!((st, len2), (STATUS_OK, len));
        } else {
            assert_eq!(st, STATUS_OK);
        }
        Ok(read(&s.g, &s.reply.1, REPLY_HEADER as u64, len as usize))
    }
}
