//! The wire protocol between the WebGPU guest library (`webgpu-guest`) and the host executor
//! (`webgpu-host`).
//!
//! # Shape
//! The guest speaks WebGPU at the API level: every object it creates gets an [`Id`] that the
//! *guest* allocates (non-zero, unique within its context), so creating an object never needs
//! a round trip. Calls that return nothing are batched; a call whose answer the guest needs
//! (adapter and device requests, mapping, popping an error scope, polling) ends a batch, and
//! the host answers that last command with one [`Reply`]. Errors of the batched commands go
//! where WebGPU sends them: to the device's error scopes, or to its uncaptured-error list,
//! which every reply carries back.
//!
//! # Framing
//! A message is a header and a body:
//!
//! | bytes | field                                              |
//! |-------|----------------------------------------------------|
//! | 4     | magic `WGPW`                                       |
//! | 2     | protocol version ([`PROTOCOL_VERSION`])            |
//! | 2     | kind: 1 request (guest → host), 2 reply             |
//! | 4     | body length; at most [`MAX_MESSAGE`]                |
//! | n     | body                                               |
//!
//! A request body is a list of [`Command`]s; a reply body is one [`Reply`] and the list of
//! uncaptured errors. Integers are little-endian; byte strings, strings and lists carry a u32
//! length; options a presence byte. Bulk data (buffer contents) travels length-prefixed in the
//! body: the transport decides whether the body itself lives in guest pages or a socket.
//!
//! # Trust
//! The host decodes every message as hostile input: each length is checked against the bytes
//! left before anything is allocated, every enum tag and flag word is checked, trailing bytes
//! are an error, and a decoder never panics (a property test drives random bytes into it).
//! Decoding says nothing about whether the ids exist or the values make sense to WebGPU:
//! that is the executor's and wgpu-core's job.
#![deny(missing_docs)]

pub mod codec;
pub mod gfx;
mod message;
mod transport;

pub use codec::{Reader, Writer};
pub use message::*;
pub use transport::{read_frame, write_frame, StreamTransport, Transport, TransportError};

/// The protocol version this crate speaks; a peer with another version is refused.
pub const PROTOCOL_VERSION: u16 = 1;
/// The magic that starts every message.
pub const MAGIC: [u8; 4] = *b"WGPW";
/// The largest body either side accepts (64 MiB): larger writes are split by the guest.
pub const MAX_MESSAGE: usize = 64 << 20;
/// Length of the message header.
pub const HEADER_LEN: usize = 12;

/// A guest-allocated object id: non-zero, unique within one context.
pub type Id = u64;

/// A message that cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The message ended before a value did.
    #[error("message truncated: {wanted} bytes wanted at offset {at}")]
    Truncated {
        /// Offset of the value.
        at: usize,
        /// Bytes the value needs.
        wanted: usize,
    },
    /// Bytes were left after the last value.
    #[error("{0} trailing bytes after the message")]
    TrailingBytes(usize),
    /// A tag or flag word that this version does not know.
    #[error("bad {what}: {value}")]
    BadValue {
        /// What was being read.
        what: &'static str,
        /// The value read.
        value: u64,
    },
    /// A string that is not UTF-8.
    #[error("string is not UTF-8")]
    BadUtf8,
    /// The header's magic is wrong.
    #[error("not a WebGPU wire message (bad magic)")]
    BadMagic,
    /// The peer speaks another protocol version.
    #[error("protocol version {got} is not supported (this side speaks {PROTOCOL_VERSION})")]
    Version {
        /// The version in the header.
        got: u16,
    },
    /// The body is larger than [`MAX_MESSAGE`] or than its header says.
    #[error("message body of {len} bytes is over the limit of {limit} bytes or its header")]
    TooLarge {
        /// Claimed or actual length.
        len: usize,
        /// The limit.
        limit: usize,
    },
}

/// Message kind in the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// Guest → host: a list of commands.
    Request = 1,
    /// Host → guest: one reply.
    Reply = 2,
}

/// Wraps `body` in a header.
pub fn frame(kind: MessageKind, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    out.extend_from_slice(&(kind as u16).to_le_bytes());
    out.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// Checks a message's header against `kind` and returns its body.
pub fn unframe(kind: MessageKind, msg: &[u8]) -> Result<&[u8], WireError> {
    let mut r = Reader::new(msg);
    let magic = [r.u8()?, r.u8()?, r.u8()?, r.u8()?];
    if magic != MAGIC {
        return Err(WireError::BadMagic);
    }
    let version = r.u16()?;
    if version != PROTOCOL_VERSION {
        return Err(WireError::Version { got: version });
    }
    let k = r.u16()?;
    if k != kind as u16 {
        return Err(WireError::BadValue {
            what: "message kind",
            value: k as u64,
        });
    }
    let len = r.u32()? as usize;
    if len > MAX_MESSAGE || len != r.remaining() {
        return Err(WireError::TooLarge {
            len,
            limit: MAX_MESSAGE.min(r.remaining()),
        });
    }
    Ok(&msg[HEADER_LEN..])
}

/// Encodes a request (a batch of commands) as a framed message.
pub fn encode_request(commands: &[Command]) -> Vec<u8> {
    let mut w = Writer::new();
    w.list(commands, |w, c| c.encode(w));
    frame(MessageKind::Request, &w.into_bytes())
}

/// Decodes a framed request without trusting it.
pub fn decode_request(msg: &[u8]) -> Result<Vec<Command>, WireError> {
    let body = unframe(MessageKind::Request, msg)?;
    let mut r = Reader::new(body);
    let cmds = r.list(2, Command::decode)?;
    r.finish()?;
    Ok(cmds)
}

/// Encodes a reply and the uncaptured errors since the last reply.
pub fn encode_reply(reply: &Reply, uncaptured: &[(Id, GpuError)]) -> Vec<u8> {
    let mut w = Writer::new();
    reply.encode(&mut w);
    w.list(uncaptured, |w, (d, e)| {
        w.u64(*d);
        e.encode(w);
    });
    frame(MessageKind::Reply, &w.into_bytes())
}

/// Decodes a framed reply.
pub fn decode_reply(msg: &[u8]) -> Result<(Reply, Vec<(Id, GpuError)>), WireError> {
    let body = unframe(MessageKind::Reply, msg)?;
    let mut r = Reader::new(body);
    let reply = Reply::decode(&mut r)?;
    let unc = r.list(10, |r| Ok((r.u64()?, GpuError::decode(r)?)))?;
    r.finish()?;
    Ok((reply, unc))
}
