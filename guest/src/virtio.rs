//! The transport inside a Linux guest: the virtio-gpu DRM render node of the wgpu rung's
//! device (`vm-cli gpu serve-wgpu`), through the kernel's own virtio-gpu ioctls.
//!
//! Opening: `GETPARAM 3D_FEATURES` (the device offers 3D), `GET_CAPS` of the WebGPU capset
//! ([`WEBGPU_CAPSET_ID`]; its version must be this library's protocol version),
//! `CONTEXT_INIT` with that capset where the kernel and device offer it (QEMU's
//! `vhost-user-gpu-pci` does not, so the kernel's default context is used), then one
//! 3D buffer resource (`RESOURCE_CREATE`, guest pages the kernel attaches as its backing)
//! mapped (`MAP` + `mmap`) as the reply area.
//!
//! A call: the request goes in `EXECBUFFER` command streams (the kernel's `SUBMIT_3D`), in
//! parts of at most [`PART`] bytes, each behind a 16-byte frame (`WGVG`, op, reply
//! resource, sequence number); the host runs it when the last part (op CALL) arrives and
//! writes the reply into the reply resource's pages; `WAIT` on the resource returns once
//! the submission's fence has signalled, and the reply is read from the mapping. A reply
//! larger than the area makes the host hold it: a larger resource is created and fetched
//! (op FETCH). The wire format is `vm_device::rungs::wgpu::virtio_gpu::webgpu`'s (`src/rungs/wgpu/virtio_gpu/webgpu.rs`).

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Mutex;

use webgpu_wire::{Transport, TransportError};

/// The capset id of the WebGPU protocol (the host's `WEBGPU_CAPSET_ID`).
pub const WEBGPU_CAPSET_ID: u32 = 48;
/// The render node opened by [`VirtioGpu::open`] (override: `WEBGPU_GUEST_DRM`).
pub const DEFAULT_NODE: &str = "/dev/dri/renderD128";
/// Largest request part per EXECBUFFER (the device reads up to 2 MiB per request).
pub const PART: usize = 1 << 20;
/// Initial size of the reply area.
const REPLY_AREA: usize = 1 << 20;
const SUBMIT_MAGIC: [u8; 4] = *b"WGVG";
const REPLY_MAGIC: [u8; 4] = *b"WGVR";
const REPLY_HEADER: usize = 24;
const OP_APPEND: u32 = 1;
const OP_CALL: u32 = 2;
const OP_FETCH: u32 = 3;
const STATUS_OK: u32 = 0;
const STATUS_TOO_LARGE: u32 = 1;

mod sys {
    //! `include/uapi/drm/virtgpu_drm.h` and `drm.h`.
    #[repr(C)]
    #[derive(Default)]
    pub struct GetParam {
        pub param: u64,
        pub value: u64,
    }
    #[repr(C)]
    #[derive(Default)]
    pub struct GetCaps {
        pub cap_set_id: u32,
        pub cap_set_ver: u32,
        pub addr: u64,
        pub size: u32,
        pub pad: u32,
    }
    #[repr(C)]
    #[derive(Default)]
    pub struct ResourceCreate {
        pub target: u32,
        pub format: u32,
        pub bind: u32,
        pub width: u32,
        pub height: u32,
        pub depth: u32,
        pub array_size: u32,
        pub last_level: u32,
        pub nr_samples: u32,
        pub flags: u32,
        pub bo_handle: u32,
        pub res_handle: u32,
        pub size: u32,
        pub stride: u32,
    }
    #[repr(C)]
    #[derive(Default)]
    pub struct Execbuffer {
        pub flags: u32,
        pub size: u32,
        pub command: u64,
        pub bo_handles: u64,
        pub num_bo_handles: u32,
        pub fence_fd: i32,
        pub ring_idx: u32,
        pub pad: u32,
    }
    #[repr(C)]
    #[derive(Default)]
    pub struct Wait {
        pub handle: u32,
        pub flags: u32,
    }
    #[repr(C)]
    #[derive(Default)]
    pub struct Map {
        pub offset: u64,
        pub handle: u32,
        pub pad: u32,
    }
    #[repr(C)]
    #[derive(Default)]
    pub struct ContextSetParam {
        pub param: u64,
        pub value: u64,
    }
    #[repr(C)]
    #[derive(Default)]
    pub struct ContextInit {
        pub num_params: u32,
        pub pad: u32,
        pub ctx_set_params: u64,
    }
    #[repr(C)]
    #[derive(Default)]
    pub struct Transfer {
        pub bo_handle: u32,
        pub x: u32,
        pub y: u32,
        pub z: u32,
        pub w: u32,
        pub h: u32,
        pub d: u32,
        pub level: u32,
        pub offset: u32,
        pub stride: u32,
        pub layer_stride: u32,
    }
    #[repr(C)]
    #[derive(Default)]
    pub struct GemClose {
        pub handle: u32,
        pub pad: u32,
    }
    pub const PARAM_3D_FEATURES: u64 = 1;
    pub const PARAM_CAPSET_QUERY_FIX: u64 = 2;
    pub const PARAM_CONTEXT_INIT: u64 = 6;
    pub const CONTEXT_PARAM_CAPSET_ID: u64 = 1;
    nix::ioctl_readwrite!(map, b'd', 0x41, Map);
    nix::ioctl_readwrite!(execbuffer, b'd', 0x42, Execbuffer);
    nix::ioctl_readwrite!(getparam, b'd', 0x43, GetParam);
    nix::ioctl_readwrite!(resource_create, b'd', 0x44, ResourceCreate);
    nix::ioctl_readwrite!(transfer_from_host, b'd', 0x46, Transfer);
    nix::ioctl_readwrite!(transfer_to_host, b'd', 0x47, Transfer);
    nix::ioctl_readwrite!(wait, b'd', 0x48, Wait);
    nix::ioctl_readwrite!(get_caps, b'd', 0x49, GetCaps);
    nix::ioctl_readwrite!(context_init, b'd', 0x4b, ContextInit);
    nix::ioctl_write_ptr!(gem_close, b'd', 0x09, GemClose);
}

/// Why the device cannot serve WebGPU.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The render node could not be opened.
    #[error("cannot open {node}: {source} (is virtio_gpu loaded and the device the wgpu rung's?)")]
    Node {
        /// The path.
        node: String,
        /// The error.
        source: std::io::Error,
    },
    /// An ioctl failed.
    #[error("{what} on {node} failed: {errno}")]
    Ioctl {
        /// The ioctl.
        what: &'static str,
        /// The path.
        node: String,
        /// The error.
        errno: nix::errno::Errno,
    },
    /// The device offers no 3D.
    #[error("{0}: the virtio-gpu offers no 3D (VIRTIO_GPU_F_VIRGL); start the VM with `--gpu-mode wgpu` and a backend serving WebGPU")]
    No3d(String),
    /// The WebGPU capset is missing or speaks another version.
    #[error("{node}: the WebGPU capset {WEBGPU_CAPSET_ID}: {why}")]
    Capset {
        /// The path.
        node: String,
        /// What is wrong.
        why: String,
    },
}

/// A 3D buffer resource mapped into this process.
struct Bo {
    handle: u32,
    res: u32,
    size: usize,
    map: *mut u8,
}

struct Inner {
    reply: Bo,
    seq: u32,
}

// SAFETY: the mapping is only touched while the Mutex around `Inner` is held.
unsafe impl Send for Inner {}

/// The WebGPU transport over the guest's virtio-gpu render node.
pub struct VirtioGpu {
    file: File,
    node: String,
    capset: Vec<u8>,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for VirtioGpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtioGpu")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl VirtioGpu {
    /// Opens [`DEFAULT_NODE`] (or `$WEBGPU_GUEST_DRM`) and checks that it serves WebGPU.
    pub fn open() -> Result<Self, OpenError> {
        let node = std::env::var("WEBGPU_GUEST_DRM").unwrap_or_else(|_| DEFAULT_NODE.into());
        Self::open_node(Path::new(&node))
    }

    /// Opens `node` and checks that it serves WebGPU.
    pub fn open_node(node: &Path) -> Result<Self, OpenError> {
        let name = node.display().to_string();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(node)
            .map_err(|source| OpenError::Node {
                node: name.clone(),
                source,
            })?;
        let fd = file.as_raw_fd();
        let io = |what: &'static str| {
            let node = name.clone();
            move |errno| OpenError::Ioctl { what, node, errno }
        };
        let param = |p: u64| -> Result<i32, OpenError> {
            let mut v: i32 = 0;
            let mut g = sys::GetParam {
                param: p,
                value: &mut v as *mut i32 as u64,
            };
            // SAFETY: `g` points at a live i32 for the kernel to fill.
            unsafe { sys::getparam(fd, &mut g) }.map_err(io("GETPARAM"))?;
            Ok(v)
        };
        if param(sys::PARAM_3D_FEATURES).unwrap_or(0) != 1 {
            return Err(OpenError::No3d(name));
        }
        let _ = param(sys::PARAM_CAPSET_QUERY_FIX);
        let mut capset = vec![0u8; 4096];
        let mut caps = sys::GetCaps {
            cap_set_id: WEBGPU_CAPSET_ID,
            cap_set_ver: webgpu_wire::PROTOCOL_VERSION as u32,
            addr: capset.as_mut_ptr() as u64,
            size: capset.len() as u32,
            pad: 0,
        };
        // SAFETY: `capset` has `size` writable bytes.
        unsafe { sys::get_caps(fd, &mut caps) }.map_err(|e| OpenError::Capset {
            node: name.clone(),
            why: format!("GET_CAPS failed: {e} (the device serves no WebGPU, or another version)"),
        })?;
        let version = u32::from_le_bytes([capset[0], capset[1], capset[2], capset[3]]);
        if version != webgpu_wire::PROTOCOL_VERSION as u32 {
            return Err(OpenError::Capset {
                node: name,
                why: format!(
                    "the host speaks protocol version {version}, this library {}",
                    webgpu_wire::PROTOCOL_VERSION
                ),
            });
        }
        if param(sys::PARAM_CONTEXT_INIT).unwrap_or(0) == 1 {
            let p = sys::ContextSetParam {
                param: sys::CONTEXT_PARAM_CAPSET_ID,
                value: WEBGPU_CAPSET_ID as u64,
            };
            let mut init = sys::ContextInit {
                num_params: 1,
                pad: 0,
                ctx_set_params: &p as *const _ as u64,
            };
            // SAFETY: `init` points at one live parameter.
            unsafe { sys::context_init(fd, &mut init) }.map_err(io("CONTEXT_INIT"))?;
        }
        let reply = create_bo(fd, REPLY_AREA).map_err(io("RESOURCE_CREATE/MAP"))?;
        let gpu = VirtioGpu {
            file,
            node: name.clone(),
            capset,
            inner: Mutex::new(Inner { reply, seq: 0 }),
        };
        gpu.sync_reply_area().map_err(io("TRANSFER_TO/FROM_HOST"))?;
        Ok(gpu)
    }

    /// TRANSFER_TO_HOST and TRANSFER_FROM_HOST of the whole reply area, then WAIT: the
    /// kernel's coherence protocol for 3D resources. The host keeps no copy of its buffers
    /// (the guest pages are their storage), so this only checks, once, that the device
    /// takes the transfers of this context's resource.
    fn sync_reply_area(&self) -> Result<(), nix::errno::Errno> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let fd = self.file.as_raw_fd();
        let mut t = sys::Transfer {
            bo_handle: inner.reply.handle,
            w: inner.reply.size as u32,
            h: 1,
            d: 1,
            ..Default::default()
        };
        // SAFETY: plain struct arguments.
        unsafe {
            sys::transfer_to_host(fd, &mut t)?;
            sys::transfer_from_host(fd, &mut t)?;
        }
        self.wait(&inner.reply).map_err(|_| nix::errno::Errno::EIO)
    }

    /// The capset payload the host offered (protocol version, limits, feature words).
    pub fn capset(&self) -> &[u8] {
        &self.capset
    }

    fn submit(&self, op: u32, reply: &Bo, seq: u32, part: &[u8]) -> Result<(), TransportError> {
        let mut cmd = Vec::with_capacity(16 + part.len());
        cmd.extend_from_slice(&SUBMIT_MAGIC);
        cmd.extend_from_slice(&op.to_le_bytes());
        cmd.extend_from_slice(&reply.res.to_le_bytes());
        cmd.extend_from_slice(&seq.to_le_bytes());
        cmd.extend_from_slice(part);
        let handles = [reply.handle];
        let mut eb = sys::Execbuffer {
            size: cmd.len() as u32,
            command: cmd.as_ptr() as u64,
            bo_handles: handles.as_ptr() as u64,
            num_bo_handles: 1,
            fence_fd: -1,
            ..Default::default()
        };
        // SAFETY: the command and handle arrays outlive the call.
        unsafe { sys::execbuffer(self.file.as_raw_fd(), &mut eb) }
            .map_err(|e| io_err("EXECBUFFER", e))?;
        Ok(())
    }

    fn wait(&self, bo: &Bo) -> Result<(), TransportError> {
        loop {
            let mut w = sys::Wait {
                handle: bo.handle,
                flags: 0,
            };
            // SAFETY: plain struct argument.
            match unsafe { sys::wait(self.file.as_raw_fd(), &mut w) } {
                Ok(_) => return Ok(()),
                // The kernel waits 15 s at a time: long GPU work just waits again.
                Err(nix::errno::Errno::EBUSY) | Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(io_err("WAIT", e)),
            }
        }
    }

    /// Reads the reply area of `bo` after a submission with sequence number `seq`:
    /// (status, length, bytes when they are there).
    fn read_reply(bo: &Bo, seq: u32) -> Result<(u32, usize, Option<Vec<u8>>), TransportError> {
        // SAFETY: the mapping is `bo.size` bytes long and stays mapped while `bo` lives;
        // the host has finished writing (the fence signalled).
        let area = unsafe { std::slice::from_raw_parts(bo.map, bo.size) };
        let head = &area[..REPLY_HEADER];
        let u = |i: usize| u32::from_le_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
        if head[..4] != REPLY_MAGIC || u(8) != seq {
            return Err(TransportError::Frame(format!(
                "the host wrote no reply for submission {seq} (it refused the submission: see the host's log)"
            )));
        }
        let len = u64::from_le_bytes(head[16..24].try_into().unwrap_or([0; 8]));
        let len = usize::try_from(len)
            .ok()
            .filter(|l| *l <= webgpu_wire::HEADER_LEN + webgpu_wire::MAX_MESSAGE)
            .ok_or_else(|| TransportError::Frame(format!("reply length {len} is too large")))?;
        let status = u(4);
        let body = area
            .get(REPLY_HEADER..REPLY_HEADER + len)
            .filter(|_| status != STATUS_TOO_LARGE)
            .map(<[u8]>::to_vec);
        Ok((status, len, body))
    }
}

fn io_err(what: &str, e: nix::errno::Errno) -> TransportError {
    TransportError::Io(std::io::Error::other(format!("{what}: {e}")))
}

fn create_bo(fd: i32, size: usize) -> Result<Bo, nix::errno::Errno> {
    let mut rc = sys::ResourceCreate {
        target: 0,    // PIPE_BUFFER
        format: 64,   // R8_UNORM
        bind: 1 << 4, // VIRGL_BIND_CONSTANT_BUFFER-ish: a plain buffer
        width: size as u32,
        height: 1,
        depth: 1,
        array_size: 1,
        size: size as u32,
        ..Default::default()
    };
    // SAFETY: plain struct argument.
    unsafe { sys::resource_create(fd, &mut rc) }?;
    let mut m = sys::Map {
        handle: rc.bo_handle,
        ..Default::default()
    };
    let close = |h: u32| {
        // SAFETY: plain struct argument.
        let _ = unsafe { sys::gem_close(fd, &sys::GemClose { handle: h, pad: 0 }) };
    };
    // SAFETY: plain struct argument.
    if let Err(e) = unsafe { sys::map(fd, &mut m) } {
        close(rc.bo_handle);
        return Err(e);
    }
    // SAFETY: mapping the object the kernel just gave an mmap offset for.
    let p = unsafe {
        nix::libc::mmap(
            std::ptr::null_mut(),
            size,
            nix::libc::PROT_READ | nix::libc::PROT_WRITE,
            nix::libc::MAP_SHARED,
            fd,
            m.offset as nix::libc::off_t,
        )
    };
    if p == nix::libc::MAP_FAILED {
        close(rc.bo_handle);
        return Err(nix::errno::Errno::last());
    }
    Ok(Bo {
        handle: rc.bo_handle,
        res: rc.res_handle,
        size,
        map: p as *mut u8,
    })
}

fn free_bo(fd: i32, bo: &Bo) {
    // SAFETY: unmapping our own mapping, closing our own handle.
    unsafe {
        nix::libc::munmap(bo.map as *mut _, bo.size);
        let _ = sys::gem_close(
            fd,
            &sys::GemClose {
                handle: bo.handle,
                pad: 0,
            },
        );
    }
}

impl Drop for VirtioGpu {
    fn drop(&mut self) {
        let inner = self.inner.get_mut().unwrap_or_else(|p| p.into_inner());
        free_bo(self.file.as_raw_fd(), &inner.reply);
    }
}

impl Transport for VirtioGpu {
    fn call(&self, request: Vec<u8>) -> Result<Vec<u8>, TransportError> {
        let mut inner = self
            .inner
            .lock()
            .map_err(|_| TransportError::Disconnected("a previous call panicked".into()))?;
        inner.seq = inner.seq.wrapping_add(1);
        let seq = inner.seq;
        // SAFETY: the header is inside the mapping; clearing it makes a missing reply visible.
        unsafe { std::ptr::write_bytes(inner.reply.map, 0, REPLY_HEADER) };
        let mut parts = request.chunks(PART).peekable();
        if parts.peek().is_none() {
            self.submit(OP_CALL, &inner.reply, seq, &[])?;
        }
        while let Some(p) = parts.next() {
            let op = if parts.peek().is_some() {
                OP_APPEND
            } else {
                OP_CALL
            };
            self.submit(op, &inner.reply, seq, p)?;
        }
        self.wait(&inner.reply)?;
        let (status, len, body) = Self::read_reply(&inner.reply, seq)?;
        match (status, body) {
            (STATUS_OK, Some(b)) => Ok(b),
            (STATUS_TOO_LARGE, _) => {
                // A larger reply area, kept for the calls that follow.
                let size = (REPLY_HEADER + len).next_power_of_two();
                let fd = self.file.as_raw_fd();
                let bo = create_bo(fd, size).map_err(|e| io_err("RESOURCE_CREATE", e))?;
                let old = std::mem::replace(&mut inner.reply, bo);
                free_bo(fd, &old);
                // SAFETY: as above.
                unsafe { std::ptr::write_bytes(inner.reply.map, 0, REPLY_HEADER) };
                self.submit(OP_FETCH, &inner.reply, seq, &[])?;
                self.wait(&inner.reply)?;
                match Self::read_reply(&inner.reply, seq)? {
                    (STATUS_OK, _, Some(b)) => Ok(b),
                    (s, _, b) => Err(TransportError::Frame(format!(
                        "fetching a held reply: status {s}: {}",
                        String::from_utf8_lossy(&b.unwrap_or_default())
                    ))),
                }
            }
            (s, b) => Err(TransportError::Frame(format!(
                "the host refused the request (status {s}): {}",
                String::from_utf8_lossy(&b.unwrap_or_default())
            ))),
        }
    }
}
