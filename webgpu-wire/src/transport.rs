//! How messages travel: a small trait the guest library calls, and one implementation over a
//! byte stream (a Unix socketpair in tests). The virtio-gpu transport (EXECBUFFER on the DRM
//! render node) is another implementation of the same trait.

use std::io::{Read, Write};
use std::sync::Mutex;

use crate::{HEADER_LEN, MAX_MESSAGE};

/// A message could not travel.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Reading or writing the channel failed.
    #[error("WebGPU transport I/O failed: {0}")]
    Io(#[from] std::io::Error),
    /// The peer sent a frame that is not one.
    #[error("WebGPU transport received a malformed frame: {0}")]
    Frame(String),
    /// The transport is not connected to a host.
    #[error("WebGPU transport is not connected: {0}")]
    Disconnected(String),
}

/// Carries one request to the host and brings its reply back.
pub trait Transport: Send + Sync + std::fmt::Debug {
    /// Sends a framed request and returns the framed reply.
    fn call(&self, request: Vec<u8>) -> Result<Vec<u8>, TransportError>;
}

/// Writes one framed message.
pub fn write_frame(w: &mut impl Write, msg: &[u8]) -> Result<(), TransportError> {
    w.write_all(msg)?;
    w.flush()?;
    Ok(())
}

/// Reads one framed message (header and body); `Ok(None)` at a clean end of stream. The
/// body length is checked against [`MAX_MESSAGE`] before anything is allocated.
pub fn read_frame(r: &mut impl Read) -> Result<Option<Vec<u8>>, TransportError> {
    let mut header = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        match r.read(&mut header[got..])? {
            0 if got == 0 => return Ok(None),
            0 => return Err(TransportError::Frame("stream ended inside a header".into())),
            n => got += n,
        }
    }
    let len = u32::from_le_bytes([header[8], header[9], header[10], header[11]]) as usize;
    if len > MAX_MESSAGE {
        return Err(TransportError::Frame(format!(
            "frame body of {len} bytes is over the limit of {MAX_MESSAGE}"
        )));
    }
    let mut msg = vec![0u8; HEADER_LEN + len];
    msg[..HEADER_LEN].copy_from_slice(&header);
    r.read_exact(&mut msg[HEADER_LEN..])?;
    Ok(Some(msg))
}

/// A transport over a bidirectional byte stream (a `UnixStream` of a socketpair, a vsock).
#[derive(Debug)]
pub struct StreamTransport<S> {
    stream: Mutex<S>,
}

impl<S: Read + Write + Send + std::fmt::Debug> StreamTransport<S> {
    /// Talks to the host at the other end of `stream`.
    pub fn new(stream: S) -> Self {
        StreamTransport {
            stream: Mutex::new(stream),
        }
    }
}

impl<S: Read + Write + Send + std::fmt::Debug> Transport for StreamTransport<S> {
    fn call(&self, request: Vec<u8>) -> Result<Vec<u8>, TransportError> {
        let mut s = self
            .stream
            .lock()
            .map_err(|_| TransportError::Disconnected("a previous call panicked".into()))?;
        write_frame(&mut *s, &request)?;
        read_frame(&mut *s)?
            .ok_or_else(|| TransportError::Disconnected("the host closed the stream".into()))
    }
}
