//! The guest library: the ordinary `wgpu` API, executed on the host's adapter through the
//! WebGPU wire protocol (`webgpu-wire`).
//!
//! ```no_run
//! # fn demo(transport: Box<dyn webgpu_wire::Transport>) {
//! let instance = webgpu_guest::instance(transport);
//! let adapter = pollster::block_on(instance.request_adapter(&Default::default())).unwrap();
//! // ...then wgpu as usual.
//! # }
//! ```
//!
//! Objects get guest-allocated ids; calls that return nothing are batched and sent at the
//! next call that needs the host's answer (mapping, polling, popping an error scope) or at
//! `queue.submit`; `write_buffer` and `write_texture` larger than 16 MiB travel in parts.
//! Operations outside the protocol's scope (queries, render bundles, surfaces, compressed
//! and planar texture formats, optional features...) report a WebGPU validation error
//! through the device's uncaptured error handler and return invalid objects; they never
//! panic. When the host drops the context (or the transport breaks), every device runs its
//! lost callback and every pending callback runs, so nothing waits forever.
#![deny(missing_docs)]
#![deny(clippy::undocumented_unsafe_blocks)]

mod conn;
pub mod kit;
mod objects;
#[cfg(target_os = "linux")]
pub mod virtio;

use std::sync::Arc;

use conn::Conn;
#[cfg(target_os = "linux")]
pub use virtio::VirtioGpu;
pub use webgpu_wire::{StreamTransport, Transport};

/// A `wgpu::Instance` whose adapter is the host's, reached through `transport`.
pub fn instance(transport: Box<dyn Transport>) -> wgpu::Instance {
    wgpu::Instance::from_custom(objects::RemoteInstance {
        conn: Some(Arc::new(Conn::new(transport))),
    })
}
