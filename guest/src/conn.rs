//! The connection to the host: batching, ids, and uncaptured errors.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use webgpu_wire::{decode_reply, encode_request, Command, GpuError, Id, Reply, Transport};

/// Bytes of batched commands after which the batch is sent without waiting for a sync point.
const FLUSH_BYTES: usize = 8 << 20;

/// Run once when the connection is lost, with the reason (a device's lost callback).
pub(crate) type LostHook = Box<dyn FnOnce(&str) + Send>;

pub(crate) struct Conn {
    transport: Box<dyn Transport>,
    pending: Mutex<(Vec<Command>, usize)>,
    next_id: AtomicU64,
    pub(crate) handlers: Mutex<HashMap<Id, Arc<dyn wgpu::UncapturedErrorHandler>>>,
    /// Why the host is gone (it dropped the context, or the transport broke); from then on no
    /// request travels.
    lost: Mutex<Option<String>>,
    /// Per device: what to run when the connection is lost.
    pub(crate) lost_hooks: Mutex<HashMap<Id, LostHook>>,
    /// Command encoders recording now, and the releases held back until none is: an
    /// encoder's commands travel at `finish`, and they may name objects the program has
    /// dropped since (natively the encoder keeps them alive).
    recording: Mutex<(usize, Vec<Id>)>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("transport", &self.transport)
            .finish()
    }
}

pub(crate) fn to_wgpu(e: GpuError) -> wgpu::Error {
    #[derive(Debug)]
    struct Remote(String);
    impl std::fmt::Display for Remote {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.0)
        }
    }
    impl std::error::Error for Remote {}
    let source = Box::new(Remote(e.message.clone()));
    match e.kind {
        webgpu_wire::ErrorKind::Validation => wgpu::Error::Validation {
            source,
            description: e.message,
        },
        webgpu_wire::ErrorKind::OutOfMemory => wgpu::Error::OutOfMemory { source },
        webgpu_wire::ErrorKind::Internal => wgpu::Error::Internal {
            source,
            description: e.message,
        },
    }
}

fn size_hint(c: &Command) -> usize {
    match c {
        Command::WriteBuffer { data, .. } => data.len() + 32,
        Command::UnmapBuffer { writes, .. } => writes.iter().map(|w| w.1.len() + 12).sum(),
        Command::CreateShaderModule { wgsl, .. } => wgsl.len() + 32,
        Command::WriteTexture { data, .. } => data.len() + 64,
        Command::FinishEncoder { commands, .. } => commands.len() * 32 + 64,
        _ => 64,
    }
}

impl Conn {
    pub(crate) fn new(transport: Box<dyn Transport>) -> Self {
        Conn {
            transport,
            pending: Mutex::new((Vec::new(), 0)),
            next_id: AtomicU64::new(1),
            handlers: Mutex::new(HashMap::new()),
            recording: Mutex::new((0, Vec::new())),
            lost: Mutex::new(None),
            lost_hooks: Mutex::new(HashMap::new()),
        }
    }

    /// Why the connection is lost, if it is.
    pub(crate) fn lost(&self) -> Option<String> {
        self.lost.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Marks the connection lost (once) and runs every device's lost hook.
    fn mark_lost(&self, why: String) {
        {
            let mut l = self.lost.lock().unwrap_or_else(|p| p.into_inner());
            if l.is_some() {
                return;
            }
            *l = Some(why.clone());
        }
        let hooks: Vec<LostHook> = {
            let mut h = self.lost_hooks.lock().unwrap_or_else(|p| p.into_inner());
            h.drain().map(|(_, f)| f).collect()
        };
        for hook in hooks {
            hook(&why);
        }
    }

    /// A fresh id for a new object.
    pub(crate) fn id(&self) -> Id {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Queues a command that needs no answer.
    pub(crate) fn push(&self, c: Command) {
        let full = {
            let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            p.1 += size_hint(&c);
            p.0.push(c);
            p.1 >= FLUSH_BYTES
        };
        if full {
            self.flush();
        }
    }

    /// Releases the host object `id`, or holds the release back while an encoder records.
    pub(crate) fn release(&self, id: Id) {
        {
            let mut r = self.recording.lock().unwrap_or_else(|p| p.into_inner());
            if r.0 > 0 {
                r.1.push(id);
                return;
            }
        }
        self.push(Command::Release { id });
    }

    /// An encoder started recording.
    pub(crate) fn encoder_opened(&self) {
        self.recording.lock().unwrap_or_else(|p| p.into_inner()).0 += 1;
    }

    /// An encoder finished (its commands are queued) or was dropped: when it was the last
    /// one recording, the releases held back are queued after its commands.
    pub(crate) fn encoder_closed(&self) {
        let held = {
            let mut r = self.recording.lock().unwrap_or_else(|p| p.into_inner());
            r.0 = r.0.saturating_sub(1);
            if r.0 > 0 {
                return;
            }
            std::mem::take(&mut r.1)
        };
        for id in held {
            self.push(Command::Release { id });
        }
    }

    /// Sends what is queued.
    pub(crate) fn flush(&self) {
        let batch = {
            let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            p.1 = 0;
            std::mem::take(&mut p.0)
        };
        if !batch.is_empty() {
            self.send(batch);
        }
    }

    /// Sends what is queued and `c`, and returns the answer to `c`.
    pub(crate) fn call(&self, c: Command) -> Reply {
        let batch = {
            let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            p.1 = 0;
            let mut b = std::mem::take(&mut p.0);
            b.push(c);
            b
        };
        self.send(batch)
    }

    fn send(&self, batch: Vec<Command>) -> Reply {
        if let Some(why) = self.lost() {
            return Reply::Lost(why);
        }
        let msg = encode_request(&batch);
        let bytes = match self.transport.call(msg) {
            Ok(b) => b,
            Err(e) => {
                // A transport that fails mid-call cannot be trusted to be in step any more:
                // the host is gone for this guest.
                let why = format!("the connection to the WebGPU host broke: {e}");
                self.mark_lost(why.clone());
                return Reply::Lost(why);
            }
        };
        match decode_reply(&bytes) {
            Ok((reply, uncaptured)) => {
                for (dev, e) in uncaptured {
                    self.uncaptured(dev, e);
                }
                if let Reply::Refused(why) = &reply {
                    self.uncaptured(
                        0,
                        GpuError {
                            kind: webgpu_wire::ErrorKind::Internal,
                            message: format!("the host refused a request: {why}"),
                        },
                    );
                }
                if let Reply::Lost(why) = &reply {
                    self.mark_lost(format!("the WebGPU host dropped this context: {why}"));
                }
                reply
            }
            Err(e) => Reply::Failed(format!("the host's reply is malformed: {e}")),
        }
    }

    /// Hands an error nobody captured to the device's handler (or stderr, where wgpu's
    /// default handler would panic).
    pub(crate) fn uncaptured(&self, dev: Id, e: GpuError) {
        let h = {
            let hs = self.handlers.lock().unwrap_or_else(|p| p.into_inner());
            hs.get(&dev).cloned().or_else(|| {
                if hs.len() == 1 {
                    hs.values().next().cloned()
                } else {
                    None
                }
            })
        };
        match h {
            Some(h) => h(to_wgpu(e)),
            None => eprintln!("wgpu (remote) uncaptured error: {}", e.message),
        }
    }

    /// Reports an operation the protocol does not carry.
    pub(crate) fn unsupported(&self, dev: Id, what: &str) {
        self.uncaptured(
            dev,
            GpuError {
                kind: webgpu_wire::ErrorKind::Validation,
                message: format!(
                    "{what} is not supported by the WebGPU guest protocol v{}",
                    webgpu_wire::PROTOCOL_VERSION
                ),
            },
        );
    }
}
