//! The control socket server: JSON lines, one thread per control client.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::accept::{ACCEPT_POLL_MS, accept_timed};
use crate::ledger::EntryKind;
use crate::protocol::{MAX_WAIT_MS, Reply, Request};
use crate::registry::Registry;

/// The longest request line accepted.
const MAX_LINE: usize = 1 << 20;

/// Accepts control clients until `stop`.
pub fn accept_loop(listener: &UnixListener, registry: &Arc<Registry>, stop: &Arc<AtomicBool>) {
    let mut clients: Vec<JoinHandle<()>> = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        match accept_timed(listener) {
            Ok(Some(stream)) => {
                let registry = Arc::clone(registry);
                let stop = Arc::clone(stop);
                match std::thread::Builder::new()
                    .name("cprkit-device-control-client".into())
                    .spawn(move || serve_client(stream, &registry, &stop))
                {
                    Ok(h) => clients.push(h),
                    Err(e) => eprintln!("cprkit-device: control client thread: {e}"),
                }
            }
            Ok(None) => {}
            Err(e) => {
                eprintln!("cprkit-device: control accept: {e}");
                std::thread::sleep(Duration::from_millis(u64::from(ACCEPT_POLL_MS)));
            }
        }
        clients.retain(|h| !h.is_finished());
    }
    for h in clients {
        let _ = h.join();
    }
}

/// Serves one control client: a reply line per request line, until it leaves or `stop`.
fn serve_client(stream: UnixStream, registry: &Registry, stop: &AtomicBool) {
    let poll = Duration::from_millis(u64::from(ACCEPT_POLL_MS));
    if let Err(e) = stream.set_read_timeout(Some(poll)) {
        eprintln!("cprkit-device: control client: {e}");
        return;
    }
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(e) => {
            eprintln!("cprkit-device: control client: {e}");
            return;
        }
    };
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => return,
            Ok(_) if line.last() != Some(&b'\n') => return, // closed mid-line
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) =>
            {
                if line.len() > MAX_LINE {
                    let _ = writeln!(writer, "{}", encode(&Reply::error("request line too long")));
                    return;
                }
                continue;
            }
            Err(_) => return,
        }
        let reply = answer(registry, &line);
        line.clear();
        if writeln!(writer, "{}", encode(&reply)).is_err() {
            return;
        }
    }
}

fn encode(reply: &Reply) -> String {
    serde_json::to_string(reply)
        .unwrap_or_else(|e| format!("{{\"ok\":false,\"error\":\"cannot encode the reply: {e}\"}}"))
}

/// Answers one request line.
pub fn answer(registry: &Registry, line: &[u8]) -> Reply {
    let device = &registry.device;
    let text = String::from_utf8_lossy(line);
    let text = text.trim();
    if text.is_empty() {
        return Reply::error("empty request");
    }
    let request: Request = match serde_json::from_str(text) {
        Ok(r) => r,
        Err(e) => return Reply::error(format!("bad request {text:?}: {e}")),
    };
    match request {
        Request::State => Reply {
            state: Some(registry.state()),
            ..Reply::ok()
        },
        Request::Ledger { since } => Reply {
            entries: Some(device.ledger.since(since)),
            ..Reply::ok()
        },
        Request::Arm { fault } => {
            eprintln!("cprkit-device: armed {fault:?}");
            device.faults.arm(fault);
            Reply::ok()
        }
        Request::Mark { label } => Reply {
            seq: Some(device.ledger.push(None, None, EntryKind::Mark { label })),
            ..Reply::ok()
        },
        Request::WaitIo {
            pid,
            after,
            timeout_ms,
        } => {
            let timeout = Duration::from_millis(timeout_ms.min(MAX_WAIT_MS));
            Reply {
                entry: Some(device.ledger.wait_io(pid, after, timeout)),
                ..Reply::ok()
            }
        }
        Request::WaitChange { since, timeout_ms } => {
            let timeout = Duration::from_millis(timeout_ms.min(MAX_WAIT_MS));
            device.ledger.wait_change(since, timeout);
            Reply {
                state: Some(registry.state()),
                ..Reply::ok()
            }
        }
    }
}
