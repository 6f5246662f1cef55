//! A test driver for the virtio-gpu device: guest memory, split virtqueues written the way a
//! guest driver writes them, scattered backings and request helpers.
#![allow(dead_code)]

pub mod webgpu;

use virtio_queue::{Queue, QueueT};
use vm_device::gpu_virt::virtio_gpu::protocol::{ctrl, Response, HDR_SIZE};
use vm_device::gpu_virt::virtio_gpu::{
    Command, CtrlHeader, CursorPos, Format, MemEntry, QueueKind, Rect, VirtioGpuConfig,
    VirtioGpuDevice,
};
use vm_device::gpu_virt::WgpuBackend;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Low guest RAM: queues, requests and backing pages.
pub const LOW_SIZE: u64 = 96 << 20;
/// A second RAM region above 4 GiB (backings there use 64-bit addresses).
pub const HIGH_BASE: u64 = 0x1_0000_0000;
/// Its size.
pub const HIGH_SIZE: u64 = 16 << 20;
const QSIZE: u16 = 256;
const REQ_AREA: u64 = 0x10_0000;
const RESP_AREA: u64 = 0x30_0000;
const POOL_START: u64 = 0x40_0000;
pub const PAGE: u64 = 4096;

/// Opens a backend on exactly `backends`, failing (never skipping) with the NoAdapter text.
pub fn backend(backends: wgpu::Backends) -> WgpuBackend {
    let mut b = WgpuBackend::with_backends(backends);
    if let Err(e) = b.init() {
        panic!("{e}");
    }
    let info = b.adapter_info().expect("adapter after init");
    assert!(
        backends.contains(info.backend.into()),
        "asked for {backends:?}, got {:?}",
        info.backend
    );
    eprintln!(
        "adapter: {} ({:?}, {:?})",
        info.name, info.backend, info.device_type
    );
    b
}

/// A deterministic xorshift generator.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
}

struct Ring {
    desc: u64,
    avail: u64,
    used: u64,
    next_desc: u16,
    avail_idx: u16,
    used_seen: u16,
    queue: Queue,
}

impl Ring {
    fn new(base: u64) -> Ring {
        let desc = base;
        let avail = base + 16 * QSIZE as u64;
        let used = (avail + 4 + 2 * QSIZE as u64 + 2).next_multiple_of(4);
        let mut queue = Queue::new(QSIZE).expect("queue");
        queue.set_size(QSIZE);
        queue.set_desc_table_address(Some(desc as u32), Some((desc >> 32) as u32));
        queue.set_avail_ring_address(Some(avail as u32), Some((avail >> 32) as u32));
        queue.set_used_ring_address(Some(used as u32), Some((used >> 32) as u32));
        queue.set_ready(true);
        Ring {
            desc,
            avail,
            used,
            next_desc: 0,
            avail_idx: 0,
            used_seen: 0,
            queue,
        }
    }
}

/// A guest with a virtio-gpu device.
pub struct Guest {
    // Dropped before the memory it may have imported.
    pub dev: VirtioGpuDevice,
    pub mem: GuestMemoryMmap,
    ctrl: Ring,
    cursor: Ring,
    next_page: u64,
    pub rng: Rng,
    next_fence: u64,
}

/// A resource's backing as the guest sees it: logical offset → physical page.
pub struct GuestBuffer {
    pub pages: Vec<u64>,
    pub len: u64,
}

impl Guest {
    pub fn new(backend: &WgpuBackend, config: VirtioGpuConfig) -> Guest {
        let mem = GuestMemoryMmap::from_ranges(&[
            (GuestAddress(0), LOW_SIZE as usize),
            (GuestAddress(HIGH_BASE), HIGH_SIZE as usize),
        ])
        .expect("guest memory");
        let dev = backend.create_device(config).expect("create device");
        Guest {
            mem,
            dev,
            ctrl: Ring::new(0x1000),
            cursor: Ring::new(0x8000),
            next_page: POOL_START,
            rng: Rng(0x9e37_79b9_7f4a_7c15),
            next_fence: 1,
        }
    }

    /// Sends raw request bytes through the queue as a driver would (the request split over
    /// two readable descriptors when longer than 64 bytes) and returns the response.
    pub fn raw(&mut self, kind: QueueKind, req: &[u8], resp_len: usize) -> Vec<u8> {
        self.batch(kind, &[(req.to_vec(), resp_len)]).remove(0)
    }

    /// Places several requests on a queue, then lets the device process them in one run (as
    /// after one guest kick); returns the responses in order.
    pub fn batch(&mut self, kind: QueueKind, reqs: &[(Vec<u8>, usize)]) -> Vec<Vec<u8>> {
        let mem = &self.mem;
        let ring = match kind {
            QueueKind::Control => &mut self.ctrl,
            QueueKind::Cursor => &mut self.cursor,
        };
        let mut req_at = REQ_AREA;
        let mut resp_at = RESP_AREA;
        let mut heads = Vec::new();
        for (req, resp_len) in reqs {
            let resp_len = *resp_len;
            mem.write_slice(req, GuestAddress(req_at)).unwrap();
            mem.write_slice(&vec![0xee; resp_len], GuestAddress(resp_at))
                .unwrap();
            let mut descs: Vec<(u64, u32, u16)> = Vec::new();
            if req.len() > 64 {
                descs.push((req_at, 64, 0));
                descs.push((req_at + 64, (req.len() - 64) as u32, 0));
            } else {
                descs.push((req_at, req.len() as u32, 0));
            }
            if resp_len > 0 {
                descs.push((resp_at, resp_len as u32, 2));
            }
            let head = ring.next_desc;
            for (i, (addr, len, flags)) in descs.iter().enumerate() {
                let idx = (head + i as u16) % QSIZE;
                let last = i + 1 == descs.len();
                let next = (idx + 1) % QSIZE;
                let a = ring.desc + 16 * idx as u64;
                mem.write_obj(*addr, GuestAddress(a)).unwrap();
                mem.write_obj(*len, GuestAddress(a + 8)).unwrap();
                mem.write_obj(if last { *flags } else { *flags | 1 }, GuestAddress(a + 12))
                    .unwrap();
                mem.write_obj(if last { 0u16 } else { next }, GuestAddress(a + 14))
                    .unwrap();
            }
            ring.next_desc = (head + descs.len() as u16) % QSIZE;
            let slot = ring.avail + 4 + 2 * (ring.avail_idx % QSIZE) as u64;
            mem.write_obj(head, GuestAddress(slot)).unwrap();
            ring.avail_idx = ring.avail_idx.wrapping_add(1);
            heads.push((head, resp_at));
            req_at = (req_at + req.len() as u64).next_multiple_of(64);
            resp_at = (resp_at + resp_len as u64).next_multiple_of(64);
        }
        assert!(
            req_at <= RESP_AREA && resp_at <= POOL_START,
            "batch too large"
        );
        mem.write_obj(ring.avail_idx, GuestAddress(ring.avail + 2))
            .unwrap();
        let run = self
            .dev
            .process_queue(kind, &mut ring.queue, mem)
            .expect("process_queue");
        assert_eq!(run.chains, reqs.len(), "every chain completed");
        let used_idx: u16 = mem.read_obj(GuestAddress(ring.used + 2)).unwrap();
        assert_eq!(
            used_idx,
            ring.used_seen.wrapping_add(reqs.len() as u16),
            "used ring advanced"
        );
        let mut out = Vec::new();
        for (head, resp_at) in heads {
            let e = ring.used + 4 + 8 * (ring.used_seen % QSIZE) as u64;
            let id: u32 = mem.read_obj(GuestAddress(e)).unwrap();
            let len: u32 = mem.read_obj(GuestAddress(e + 4)).unwrap();
            assert_eq!(id, head as u32, "used entries in order, id = chain head");
            ring.used_seen = ring.used_seen.wrapping_add(1);
            let mut r = vec![0u8; len as usize];
            mem.read_slice(&mut r, GuestAddress(resp_at)).unwrap();
            out.push(r);
        }
        out
    }

    /// Sends a command with header `hdr` and returns the response.
    pub fn cmd_hdr(&mut self, cmd: &Command, hdr: CtrlHeader) -> Vec<u8> {
        let kind = match cmd {
            Command::UpdateCursor { .. } | Command::MoveCursor { .. } => QueueKind::Cursor,
            _ => QueueKind::Control,
        };
        let req = cmd.encode(hdr);
        self.raw(kind, &req, Response::size_for(cmd.wire_type()))
    }

    /// Sends a command and returns the response type.
    pub fn cmd(&mut self, cmd: &Command) -> u32 {
        let r = self.cmd_hdr(cmd, CtrlHeader::default());
        assert!(r.len() >= HDR_SIZE, "short response {r:?} to {cmd:?}");
        u32::from_le_bytes(r[0..4].try_into().unwrap())
    }

    /// Sends a command and asserts OK_NODATA.
    pub fn ok(&mut self, cmd: &Command) {
        let t = self.cmd(cmd);
        assert_eq!(t, ctrl::RESP_OK_NODATA, "{cmd:?} answered {t:#x}");
    }

    /// Sends a fenced command and checks the fence echo; returns the response type.
    pub fn fenced(&mut self, cmd: &Command) -> u32 {
        let fence = self.next_fence;
        self.next_fence += 1;
        let r = self.cmd_hdr(
            cmd,
            CtrlHeader {
                flags: 1,
                fence_id: fence,
                ctx_id: 7,
                ..Default::default()
            },
        );
        let h = CtrlHeader::decode(&r).expect("response header");
        assert_eq!(h.flags & 1, 1, "fence flag echoed");
        assert_eq!(h.fence_id, fence, "fence id echoed");
        assert_eq!(h.ctx_id, 7, "ctx id echoed");
        h.type_
    }

    /// Allocates `len` bytes of 4 KiB guest pages in shuffled physical order.
    pub fn alloc_buffer(&mut self, len: u64) -> GuestBuffer {
        let n = len.div_ceil(PAGE);
        let mut pages: Vec<u64> = (0..n).map(|i| self.next_page + i * PAGE).collect();
        self.next_page += n * PAGE;
        assert!(self.next_page <= LOW_SIZE, "test guest out of pages");
        self.rng.shuffle(&mut pages);
        GuestBuffer { pages, len }
    }

    /// The scatter list of a buffer (one entry per page).
    pub fn entries(&self, b: &GuestBuffer) -> Vec<MemEntry> {
        b.pages
            .iter()
            .enumerate()
            .map(|(i, p)| MemEntry {
                addr: *p,
                length: (b.len - i as u64 * PAGE).min(PAGE) as u32,
            })
            .collect()
    }

    /// Writes bytes at a logical offset of a buffer.
    pub fn write(&self, b: &GuestBuffer, off: u64, data: &[u8]) {
        let mut done = 0usize;
        while done < data.len() {
            let o = off + done as u64;
            let page = b.pages[(o / PAGE) as usize];
            let within = o % PAGE;
            let n = ((PAGE - within) as usize).min(data.len() - done);
            self.mem
                .write_slice(&data[done..done + n], GuestAddress(page + within))
                .unwrap();
            done += n;
        }
    }

    /// Creates a resource with a backing and returns the backing.
    pub fn resource(&mut self, id: u32, format: Format, w: u32, h: u32) -> GuestBuffer {
        self.ok(&Command::ResourceCreate2d {
            resource_id: id,
            format: format.wire(),
            width: w,
            height: h,
        });
        let buf = self.alloc_buffer(w as u64 * h as u64 * 4);
        let entries = self.entries(&buf);
        self.ok(&Command::ResourceAttachBacking {
            resource_id: id,
            entries,
        });
        buf
    }

    /// Fills a resource's backing with `pixel(x, y)` (memory byte order) and transfers the
    /// whole resource.
    pub fn paint(
        &mut self,
        id: u32,
        buf: &GuestBuffer,
        w: u32,
        h: u32,
        pixel: impl Fn(u32, u32) -> [u8; 4],
    ) {
        let mut data = Vec::with_capacity((w * h * 4) as usize);
        for y in 0..h {
            for x in 0..w {
                data.extend_from_slice(&pixel(x, y));
            }
        }
        self.write(buf, 0, &data);
        self.ok(&Command::TransferToHost2d {
            rect: Rect::new(0, 0, w, h),
            offset: 0,
            resource_id: id,
        });
    }

    pub fn cursor_pos(scanout_id: u32, x: u32, y: u32) -> CursorPos {
        CursorPos { scanout_id, x, y }
    }
}
