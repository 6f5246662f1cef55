//! A virtio-gpu 2D device (virtio spec "GPU Device") whose resources are wgpu textures and
//! whose scanouts are composited on the GPU, or, for tests, held by nobody: the device keeps
//! the protocol state and hands the pixels to a [`Renderer`] ([`WgpuRenderer`],
//! [`NullRenderer`]).
//!
//! The core ([`VirtioGpuDevice::process_request`]) takes the request bytes and the guest
//! memory and returns the response bytes; [`VirtioGpuDevice::process_queue`] is a split
//! virtqueue front end over `virtio-queue`, so the same core can serve a vhost-user backend.
//! `VIRTIO_GPU_F_EDID` is offered, and `VIRTIO_GPU_F_VIRGL` with the WebGPU capset when
//! [`VirtioGpuConfig::webgpu`] is on ([`webgpu`]: 3D commands carry WebGPU, never virgl);
//! never RESOURCE_BLOB.

pub mod device;
pub mod edid;
pub mod gpu_gather;
pub mod protocol;
pub mod renderer;
pub mod resources;
pub mod scanout;
pub mod stats;
pub mod transfer;
pub mod webgpu;
pub mod wgpu_renderer;

pub use device::{
    is_ok, response_type, DeviceError, DisplayEvent, QueueKind, QueueRun, VirtioGpuConfig,
    VirtioGpuDevice, DEFAULT_MAX_HOSTMEM,
};
pub use protocol::{Command, CtrlHeader, CursorPos, ErrorCode, Format, MemEntry, Rect, Response};
pub use renderer::{NullRenderer, ReadbackError, Renderer};
pub use scanout::RgbaImage;
pub use stats::{DeviceStats, NamedCount};
pub use wgpu_renderer::{GpuGather, WgpuRenderer};
