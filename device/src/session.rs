//! The loop serving one frontend connection: peek each header (for NEED_REPLY and a clean
//! end of stream), let the vhost crate's BackendReqHandler dispatch it, and decide whether a
//! failed message keeps or ends the connection.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use vhost::vhost_user::BackendReqHandler;
use vhost::vhost_user::message::VhostUserHeaderFlag;

use crate::conn::{Connection, Outcome};
use crate::ledger::EntryKind;

/// What the next bytes on the socket are.
enum Peek {
    /// The frontend closed the connection at a message boundary.
    End,
    /// A message (or garbage) starts; `need_reply` from its flags, if the flags arrived;
    /// `header` a description of the bytes seen, for error messages.
    Message { need_reply: bool, header: String },
    /// The socket failed.
    Failed(std::io::Error),
}

/// Looks at the next header without consuming it.
fn peek(stream: &UnixStream) -> Peek {
    let mut hdr = [0u8; 12];
    loop {
        // SAFETY: recv into a buffer we own, of its length.
        let n = unsafe {
            libc::recv(
                stream.as_raw_fd(),
                hdr.as_mut_ptr().cast(),
                hdr.len(),
                libc::MSG_PEEK,
            )
        };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Peek::Failed(err);
        }
        if n == 0 {
            return Peek::End;
        }
        let need_reply = n >= 8 && {
            let flags = u32::from_le_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]);
            flags & VhostUserHeaderFlag::NEED_REPLY.bits() != 0
        };
        let word = |i: usize| u32::from_le_bytes([hdr[i], hdr[i + 1], hdr[i + 2], hdr[i + 3]]);
        let header = if n >= 12 {
            format!(
                "header code {} flags 0x{:x} size {}",
                word(0),
                word(4),
                word(8)
            )
        } else {
            format!("{n}-byte header")
        };
        return Peek::Message { need_reply, header };
    }
}

/// Serves `conn` on `stream` until the frontend leaves, a message fails, or the daemon stops.
pub fn serve(conn: Arc<Connection>, stream: UnixStream) {
    let peek_stream = match stream.try_clone() {
        Ok(s) => s,
        Err(e) => {
            protocol_error(&conn, &format!("cannot clone the socket: {e}"));
            conn.closed();
            return;
        }
    };
    let mut handler = BackendReqHandler::from_stream(stream, Arc::clone(&conn));
    let mut header;
    loop {
        if !conn.is_open() {
            break;
        }
        match peek(&peek_stream) {
            Peek::End => break,
            Peek::Failed(e) => {
                if conn.is_open() {
                    protocol_error(&conn, &format!("socket read failed: {e}"));
                }
                break;
            }
            Peek::Message {
                need_reply,
                header: seen,
            } => {
                header = seen;
                conn.begin_message(need_reply);
            }
        }
        match handler.handle_request() {
            Ok(()) => {}
            Err(e) => match conn.take_outcome() {
                Some(Outcome::Kept) => {}
                Some(Outcome::Close) => break,
                None => {
                    protocol_error(&conn, &format!("{e} ({header})"));
                    break;
                }
            },
        }
    }
    conn.closed();
}

fn protocol_error(conn: &Connection, what: &str) {
    eprintln!(
        "cprkit-device: conn {} (pid {}): protocol error: {what}; dropping the connection",
        conn.id,
        crate::conn::show_pid(conn.pid)
    );
    conn.ledger_push(EntryKind::ProtocolError {
        what: what.to_string(),
    });
}
