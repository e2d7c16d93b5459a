//! The monitor's one writer: replies and events go through one lock, so the
//! order of lines on the wire is the order things happened.
//!
//! Events reach a client only after it negotiated capabilities (as in QEMU);
//! with no client attached they are dropped. A client that stops reading is
//! dropped after a bounded write timeout rather than wedging the VMM.

use std::io::Write;
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use cprkit_qmp::wire::{ErrorBody, Event, ServerMessage, Timestamp};
use serde_json::Value;

/// The attached client, if any.
#[derive(Debug, Default)]
struct Client {
    stream: Option<UnixStream>,
    /// Counts attachments, so a finished session cannot detach a newer one.
    generation: u64,
    negotiated: bool,
}

/// The single writer of the QMP monitor.
#[derive(Debug, Default)]
pub struct Outbox {
    client: Mutex<Client>,
}

/// Identifies one client session.
pub type Session = u64;

impl Outbox {
    fn lock(&self) -> MutexGuard<'_, Client> {
        self.client.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Attaches a new client and sends it the greeting.
    pub fn attach(&self, stream: UnixStream, greeting: &str) -> Session {
        let mut c = self.lock();
        c.generation += 1;
        c.negotiated = false;
        c.stream = Some(stream);
        write_line(&mut c, greeting);
        c.generation
    }

    /// Detaches the client of `session` if it is still the attached one.
    pub fn detach(&self, session: Session) {
        let mut c = self.lock();
        if c.generation == session {
            c.stream = None;
            c.negotiated = false;
        }
    }

    /// Whether the session has negotiated capabilities.
    pub fn negotiated(&self, session: Session) -> bool {
        let c = self.lock();
        c.generation == session && c.negotiated
    }

    /// Marks the session as past capabilities negotiation.
    pub fn set_negotiated(&self, session: Session) {
        let mut c = self.lock();
        if c.generation == session {
            c.negotiated = true;
        }
    }

    /// Writes a reply (`Ok` → `return`, `Err` → `error`) to the session.
    pub fn reply(&self, session: Session, id: Option<Value>, result: Result<Value, ErrorBody>) {
        let msg = match result {
            Ok(value) => ServerMessage::Return { value, id },
            Err(error) => ServerMessage::Error { error, id },
        };
        let mut c = self.lock();
        if c.generation == session {
            write_line(&mut c, &msg.to_line());
        }
    }

    /// Sends an event to the attached client, if it negotiated capabilities.
    pub fn event(&self, name: &str, data: Value) {
        let msg = ServerMessage::Event(Event {
            event: name.into(),
            data,
            timestamp: now(),
        });
        let mut c = self.lock();
        if c.negotiated {
            write_line(&mut c, &msg.to_line());
        }
    }
}

fn write_line(c: &mut Client, line: &str) {
    let Some(stream) = c.stream.as_mut() else {
        return;
    };
    let mut buf = String::with_capacity(line.len() + 1);
    buf.push_str(line);
    buf.push('\n');
    if let Err(e) = stream.write_all(buf.as_bytes()) {
        crate::log!("monitor: dropping the client: write failed: {e}");
        let _ = stream.shutdown(Shutdown::Both);
        c.stream = None;
        c.negotiated = false;
    }
}

fn now() -> Timestamp {
    let d = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp {
        seconds: d.as_secs() as i64,
        microseconds: i64::from(d.subsec_micros()),
    }
}
