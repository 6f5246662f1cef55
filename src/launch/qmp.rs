//! A minimal QMP client: the thread id of each vCPU of a running QEMU (`query-cpus-fast`),
//! for pinning them. QMP is one JSON object per line: a greeting, then a reply (`return` or
//! `error`) per command, with asynchronous `event`s in between.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

/// A vCPU and the host thread that runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VcpuThread {
    /// `cpu-index`.
    pub cpu_index: u32,
    /// `thread-id`: the host thread id.
    pub thread_id: u32,
}

/// Parses `query-cpus-fast`'s `return`.
pub fn parse_cpus(ret: &Value) -> Result<Vec<VcpuThread>, String> {
    let list = ret
        .as_array()
        .ok_or_else(|| format!("query-cpus-fast returned {ret}, not a list"))?;
    let mut out = Vec::new();
    for c in list {
        let field = |k: &str| {
            c.get(k)
                .and_then(Value::as_u64)
                .and_then(|v| u32::try_from(v).ok())
                .ok_or_else(|| format!("query-cpus-fast: an entry without a valid `{k}`: {c}"))
        };
        let thread_id = field("thread-id")?;
        if thread_id == 0 {
            return Err(format!("query-cpus-fast: thread-id 0 in {c}"));
        }
        out.push(VcpuThread {
            cpu_index: field("cpu-index")?,
            thread_id,
        });
    }
    if out.is_empty() {
        return Err("query-cpus-fast returned no vCPU".into());
    }
    out.sort_by_key(|v| v.cpu_index);
    Ok(out)
}

struct Conn {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    deadline: Instant,
}

impl Conn {
    fn line(&mut self) -> Result<Value, String> {
        let left = self
            .deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or("QMP did not answer in time")?;
        self.reader
            .get_ref()
            .set_read_timeout(Some(left))
            .map_err(|e| e.to_string())?;
        let mut l = String::new();
        // A line longer than 1 MiB is no QMP reply vm-cli asked for.
        let n = Read::take(&mut self.reader, 1 << 20)
            .read_line(&mut l)
            .map_err(|e| format!("reading QMP: {e}"))?;
        if n == 0 {
            return Err("QMP closed the connection".into());
        }
        serde_json::from_str(&l).map_err(|e| format!("QMP sent something that is not JSON ({e})"))
    }

    fn execute(&mut self, cmd: &str) -> Result<Value, String> {
        self.writer
            .write_all(format!("{{\"execute\":\"{cmd}\"}}\n").as_bytes())
            .map_err(|e| format!("writing QMP: {e}"))?;
        loop {
            let v = self.line()?;
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                return Err(format!("QMP {cmd}: {e}"));
            }
            // An event: wait for the reply.
        }
    }
}

/// Connects to QEMU's QMP socket (retrying while it is not there yet and `alive()` says QEMU
/// runs), and returns the vCPU threads; gives up after `timeout`.
pub fn vcpu_threads(
    socket: &Path,
    timeout: Duration,
    mut alive: impl FnMut() -> bool,
) -> Result<Vec<VcpuThread>, String> {
    let deadline = Instant::now() + timeout;
    let stream = loop {
        match UnixStream::connect(socket) {
            Ok(s) => break s,
            Err(e) => {
                if !alive() {
                    return Err("QEMU ended before its QMP socket answered".into());
                }
                if Instant::now() >= deadline {
                    return Err(format!(
                        "no QMP socket at {} after {} s: {e}",
                        socket.display(),
                        timeout.as_secs()
                    ));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    let writer = stream.try_clone().map_err(|e| e.to_string())?;
    let mut c = Conn {
        reader: BufReader::new(stream),
        writer,
        deadline,
    };
    let greeting = c.line()?;
    if greeting.get("QMP").is_none() {
        return Err(format!("not a QMP greeting: {greeting}"));
    }
    c.execute("qmp_capabilities")?;
    let ret = c.execute("query-cpus-fast")?;
    parse_cpus(&ret)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn cpus_parse_and_bad_replies_say_why() {
        let ok = serde_json::json!([
            {"cpu-index": 1, "thread-id": 4242, "qom-path": "/machine/unattached/device[1]"},
            {"cpu-index": 0, "thread-id": 4241}
        ]);
        assert_eq!(
            parse_cpus(&ok).unwrap(),
            vec![
                VcpuThread {
                    cpu_index: 0,
                    thread_id: 4241
                },
                VcpuThread {
                    cpu_index: 1,
                    thread_id: 4242
                }
            ]
        );
        for bad in [
            serde_json::json!({}),
            serde_json::json!([]),
            serde_json::json!([{"cpu-index": 0}]),
            serde_json::json!([{"cpu-index": 0, "thread-id": -1}]),
            serde_json::json!([{"cpu-index": 0, "thread-id": 0}]),
        ] {
            assert!(parse_cpus(&bad).is_err(), "{bad}");
        }
    }

    /// A QMP server that greets, sends an event before each reply, and answers.
    #[test]
    fn a_qmp_conversation_gives_the_threads() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("qmp.sock");
        let l = UnixListener::bind(&sock).unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            s.write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\n")
                .unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            for reply in [
                "{\"return\": {}}",
                "{\"return\": [{\"cpu-index\": 0, \"thread-id\": 77}]}",
            ] {
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                assert!(line.contains("execute"), "{line}");
                s.write_all(b"{\"event\": \"RESUME\", \"timestamp\": {}}\n")
                    .unwrap();
                s.write_all(format!("{reply}\n").as_bytes()).unwrap();
            }
            let mut rest = Vec::new();
            let _ = r.read_to_end(&mut rest);
        });
        let t = vcpu_threads(&sock, Duration::from_secs(5), || true).unwrap();
        assert_eq!(
            t,
            vec![VcpuThread {
                cpu_index: 0,
                thread_id: 77
            }]
        );
        server.join().unwrap();
    }

    #[test]
    fn a_dead_qemu_or_a_silent_socket_ends_the_wait() {
        let dir = tempfile::tempdir().unwrap();
        let e =
            vcpu_threads(&dir.path().join("none"), Duration::from_secs(5), || false).unwrap_err();
        assert!(e.contains("ended"), "{e}");
        let sock = dir.path().join("mute.sock");
        let _l = UnixListener::bind(&sock).unwrap();
        let e = vcpu_threads(&sock, Duration::from_millis(300), || true).unwrap_err();
        assert!(e.contains("in time") || e.contains("reading QMP"), "{e}");
    }
}
