//! A small, synchronous, thread-based QMP client.
//!
//! This module owns one QMP connection over a UNIX socket: connecting (with
//! retries while the socket does not exist yet or is stale), the greeting and
//! `qmp_capabilities` handshake, sending commands with fresh numeric ids and
//! matching their replies, and handing asynchronous events to a callback.
//!
//! Each [`Client`] runs one reader thread that reads the server's lines in
//! order. Events are passed to the `on_event` callback *on that thread*, before
//! any later line is looked at, so when [`Client::execute`] returns, every
//! event the server sent before that reply has already been passed to the
//! callback. A slow callback therefore delays replies; keep it short.
//!
//! Every wait is bounded: connecting by the caller's timeout, the greeting and
//! replies by the reply timeout, writes by [`WRITE_TIMEOUT`], and dropping the
//! client by [`DROP_JOIN_TIMEOUT`]. When the connection ends (the server closed
//! it, died, or sent a line that is not QMP), pending and later commands fail
//! at once with [`QmpError::Closed`] (or [`QmpError::Protocol`]) rather than
//! waiting for a timeout.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, BufRead, BufReader, Read};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::wire::{self, ErrorBody, Greeting, ServerMessage};

/// How long [`Client::execute`] waits for a reply unless told otherwise; also
/// how long [`Client::connect`] waits for the greeting and for the reply to
/// `qmp_capabilities`.
pub const DEFAULT_REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long sending one command may block (the server is not reading).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long dropping a [`Client`] waits for its reader thread to finish
/// (it only takes longer if the event callback blocks); after that the
/// thread is detached.
pub const DROP_JOIN_TIMEOUT: Duration = Duration::from_secs(1);

/// Lines longer than this are a protocol error (guards against a runaway peer).
pub const MAX_LINE: usize = 64 * 1024 * 1024;

/// How often [`Client::connect`] retries while the socket is missing or stale.
const CONNECT_RETRY: Duration = Duration::from_millis(2);

/// An event, stamped with the time the reader thread received it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedEvent {
    pub event: wire::Event,
    /// `Instant::now()` right after the line carrying the event was read.
    pub received: Instant,
}

/// The callback that receives events; called on the client's reader thread.
pub type EventHandler = Box<dyn Fn(ReceivedEvent) + Send + Sync>;

/// Why a QMP operation failed.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    /// Gave up connecting; `source` says why and for how long it was retried.
    #[error("cannot connect to QMP socket {}: {source}", path.display())]
    Connect { path: PathBuf, source: io::Error },
    /// No greeting or reply arrived in time (or a write blocked too long).
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout { what: String, after: Duration },
    /// The connection is gone (the server closed it, e.g. because it died).
    #[error("QMP connection closed {what}")]
    Closed { what: String },
    #[error("QMP I/O error: {0}")]
    Io(#[from] io::Error),
    /// The server sent something that is not QMP, or not what was expected.
    #[error("QMP protocol error: {0}")]
    Protocol(String),
    /// The server answered the command with `{"error": ...}`.
    #[error("QMP command {command} failed: {class}: {desc}")]
    Command {
        command: String,
        class: String,
        desc: String,
    },
}

/// A connected QMP client. See the module documentation.
pub struct Client {
    path: PathBuf,
    greeting: Greeting,
    /// Serialises writes so concurrent commands never interleave on the wire.
    writer: Mutex<UnixStream>,
    shared: Arc<Shared>,
    next_id: AtomicU64,
    reply_timeout: Duration,
    reader: Option<JoinHandle<()>>,
}

/// State shared between the callers and the reader thread.
struct Shared {
    state: Mutex<State>,
    /// Signalled when the reader thread has finished.
    exited: Condvar,
}

#[derive(Default)]
struct State {
    /// Callers waiting for a reply, by command id. Dropping the sender wakes
    /// the caller with "disconnected".
    pending: HashMap<u64, SyncSender<Reply>>,
    /// Set once the connection is unusable; never cleared.
    closed: Option<CloseReason>,
    reader_exited: bool,
}

enum Reply {
    Return(Value),
    Error(ErrorBody),
}

/// Why the connection ended.
#[derive(Debug, Clone)]
enum CloseReason {
    Eof,
    EofMidLine,
    ReadFailed(String),
    WriteFailed(String),
    Protocol(String),
    ReaderPanicked,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Eof => f.write_str("the server closed the connection"),
            Self::EofMidLine => {
                f.write_str("the server closed the connection in the middle of a line")
            }
            Self::ReadFailed(e) => write!(f, "reading from the server failed: {e}"),
            Self::WriteFailed(e) => write!(f, "writing to the server failed: {e}"),
            Self::Protocol(e) => write!(f, "protocol error: {e}"),
            Self::ReaderPanicked => f.write_str("the event callback panicked"),
        }
    }
}

impl CloseReason {
    /// The error a caller gets for `context` (e.g. "while waiting for the reply to stop").
    fn to_error(&self, context: &str) -> QmpError {
        match self {
            Self::Protocol(msg) => QmpError::Protocol(format!("{msg} ({context})")),
            other => QmpError::Closed {
                what: format!("{context}: {other}"),
            },
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks the connection unusable (the first reason wins) and wakes every
    /// waiting caller.
    fn close(&self, reason: CloseReason) {
        let mut st = self.lock();
        st.closed.get_or_insert(reason);
        st.pending.clear();
    }
}

impl Client {
    /// Connects to a UNIX socket QMP server, retrying on ENOENT / ECONNREFUSED
    /// (the socket may not exist yet, or be stale) every ~2 ms until `timeout`
    /// has passed; reads the greeting; sends `qmp_capabilities`.
    ///
    /// The greeting and the reply to `qmp_capabilities` are each waited for
    /// up to [`DEFAULT_REPLY_TIMEOUT`].
    ///
    /// Events go to `on_event`, called from the reader thread, in the order
    /// the server sent them, each stamped with `Instant::now()` at receipt,
    /// and always before the reply to any command the server sent after them
    /// is handed to the caller: after `execute()` returns, every event sent
    /// before that reply has been passed to `on_event`.
    pub fn connect(
        path: &Path,
        timeout: Duration,
        on_event: EventHandler,
    ) -> Result<Client, QmpError> {
        Self::connect_with(path, timeout, DEFAULT_REPLY_TIMEOUT, on_event)
    }

    fn connect_with(
        path: &Path,
        timeout: Duration,
        reply_timeout: Duration,
        on_event: EventHandler,
    ) -> Result<Client, QmpError> {
        let stream = connect_retrying(path, timeout)?;
        stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
        let mut reader = BufReader::new(stream.try_clone()?);

        // The greeting is read here, before the reader thread exists; whatever
        // follows it in the buffer (early events) goes on to the thread.
        let greeting_what = || format!("the QMP greeting from {}", path.display());
        stream.set_read_timeout(Some(reply_timeout.max(Duration::from_millis(1))))?;
        let mut line = Vec::new();
        let greeting = match read_line(&mut reader, &mut line) {
            Ok(LineRead::Line) => {
                let text = String::from_utf8_lossy(&line);
                serde_json::from_str::<Greeting>(text.trim()).map_err(|e| {
                    QmpError::Protocol(format!(
                        "expected the QMP greeting from {} ({e}), got: {}",
                        path.display(),
                        truncate(text.trim())
                    ))
                })?
            }
            Ok(LineRead::Eof) | Ok(LineRead::EofMidLine) => {
                return Err(QmpError::Closed {
                    what: format!("before {} arrived", greeting_what()),
                });
            }
            Ok(LineRead::TooLong) => {
                return Err(QmpError::Protocol(format!(
                    "{} is longer than {MAX_LINE} bytes",
                    greeting_what()
                )));
            }
            Err(e) if is_timeout(&e) => {
                return Err(QmpError::Timeout {
                    what: greeting_what(),
                    after: reply_timeout,
                });
            }
            Err(e) => return Err(QmpError::Io(e)),
        };
        // SO_RCVTIMEO is per socket, shared by the clones: the reader thread
        // blocks without a timeout and is woken by shutdown() in Drop.
        stream.set_read_timeout(None)?;

        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            exited: Condvar::new(),
        });
        let thread_shared = Arc::clone(&shared);
        let reader = thread::Builder::new()
            .name("qmp-reader".into())
            .spawn(move || reader_thread(reader, thread_shared, on_event))?;

        let client = Client {
            path: path.to_owned(),
            greeting,
            writer: Mutex::new(stream),
            shared,
            next_id: AtomicU64::new(1),
            reply_timeout,
            reader: Some(reader),
        };
        client.execute_with_timeout("qmp_capabilities", None, reply_timeout)?;
        Ok(client)
    }

    /// The greeting the server sent.
    pub fn greeting(&self) -> &Greeting {
        &self.greeting
    }

    /// The socket path this client connected to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sends a command with a fresh numeric id and waits for its reply, up to
    /// the reply timeout ([`DEFAULT_REPLY_TIMEOUT`] unless changed with
    /// [`Client::set_reply_timeout`]).
    pub fn execute(&self, command: &str, arguments: Option<Value>) -> Result<Value, QmpError> {
        self.execute_with_timeout(command, arguments, self.reply_timeout)
    }

    /// Like [`Client::execute`], waiting up to `timeout` for the reply.
    ///
    /// If the reply arrives later it is dropped. If the connection ends while
    /// waiting, this fails at once with [`QmpError::Closed`] (or
    /// [`QmpError::Protocol`] if the server sent a line that is not QMP).
    pub fn execute_with_timeout(
        &self,
        command: &str,
        arguments: Option<Value>,
        timeout: Duration,
    ) -> Result<Value, QmpError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::sync_channel(1);
        {
            let mut st = self.shared.lock();
            if let Some(reason) = &st.closed {
                return Err(reason.to_error(&format!("before sending {command}")));
            }
            st.pending.insert(id, tx);
        }

        let mut line = serde_json::to_string(&wire::Command {
            execute: command.to_owned(),
            arguments,
            id: Some(id.into()),
        })
        .map_err(|e| QmpError::Protocol(format!("cannot serialise {command}: {e}")))?;
        line.push('\n');
        if let Err(e) = self.send(line.as_bytes()) {
            self.shared.lock().pending.remove(&id);
            // Part of the command may have gone out: the stream is unusable.
            self.shared.close(CloseReason::WriteFailed(e.to_string()));
            let _ = self.writer_lock().shutdown(Shutdown::Both);
            return Err(if is_timeout(&e) {
                QmpError::Timeout {
                    what: format!("the server to accept {command}"),
                    after: WRITE_TIMEOUT,
                }
            } else if is_disconnect(&e) {
                QmpError::Closed {
                    what: format!("while sending {command}: {e}"),
                }
            } else {
                QmpError::Io(e)
            });
        }

        let reply = match rx.recv_timeout(timeout) {
            Ok(reply) => reply,
            Err(RecvTimeoutError::Timeout) => {
                self.shared.lock().pending.remove(&id);
                // The reply may have slipped in between; take it if so.
                match rx.try_recv() {
                    Ok(reply) => reply,
                    Err(_) => {
                        return Err(QmpError::Timeout {
                            what: format!("the reply to {command}"),
                            after: timeout,
                        });
                    }
                }
            }
            Err(RecvTimeoutError::Disconnected) => {
                let context = format!("while waiting for the reply to {command}");
                return Err(match &self.shared.lock().closed {
                    Some(reason) => reason.to_error(&context),
                    None => QmpError::Closed { what: context },
                });
            }
        };
        match reply {
            Reply::Return(value) => Ok(value),
            Reply::Error(ErrorBody { class, desc }) => Err(QmpError::Command {
                command: command.to_owned(),
                class,
                desc,
            }),
        }
    }

    /// Sets the timeout [`Client::execute`] uses.
    pub fn set_reply_timeout(&mut self, t: Duration) {
        self.reply_timeout = t;
    }

    /// Whether the connection has ended (closed by the server, broken, or
    /// poisoned by a protocol error).
    pub fn is_closed(&self) -> bool {
        self.shared.lock().closed.is_some()
    }

    fn writer_lock(&self) -> MutexGuard<'_, UnixStream> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes all of `buf`, with MSG_NOSIGNAL so a dead peer gives EPIPE
    /// rather than SIGPIPE whatever the process's signal disposition is.
    fn send(&self, mut buf: &[u8]) -> io::Result<()> {
        use nix::sys::socket::{MsgFlags, send};
        let stream = self.writer_lock();
        while !buf.is_empty() {
            match send(stream.as_raw_fd(), buf, MsgFlags::MSG_NOSIGNAL) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => buf = &buf[n..],
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("path", &self.path)
            .field("greeting", &self.greeting)
            .field("reply_timeout", &self.reply_timeout)
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

impl Drop for Client {
    /// Shuts the socket down and joins the reader thread, waiting at most
    /// [`DROP_JOIN_TIMEOUT`] (only a blocked event callback can make it take
    /// that long; the thread is then detached).
    fn drop(&mut self) {
        let _ = self.writer_lock().shutdown(Shutdown::Both);
        let Some(handle) = self.reader.take() else {
            return;
        };
        let st = self.shared.lock();
        let (st, _) = self
            .shared
            .exited
            .wait_timeout_while(st, DROP_JOIN_TIMEOUT, |st| !st.reader_exited)
            .unwrap_or_else(|e| e.into_inner());
        let exited = st.reader_exited;
        drop(st);
        if exited {
            let _ = handle.join();
        }
    }
}

/// Connects, retrying while the socket is missing or nobody listens on it.
fn connect_retrying(path: &Path, timeout: Duration) -> Result<UnixStream, QmpError> {
    let start = Instant::now();
    loop {
        let err = match UnixStream::connect(path) {
            Ok(stream) => return Ok(stream),
            Err(e) => e,
        };
        let retriable = matches!(
            err.kind(),
            io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
        ) || err.raw_os_error() == Some(nix::libc::EINTR);
        let elapsed = start.elapsed();
        if !retriable || elapsed >= timeout {
            let how = if retriable {
                format!("gave up after retrying for {elapsed:?} (timeout {timeout:?})")
            } else {
                format!("not retried, after {elapsed:?}")
            };
            return Err(QmpError::Connect {
                path: path.to_owned(),
                source: io::Error::new(err.kind(), format!("{err}; {how}")),
            });
        }
        thread::sleep(CONNECT_RETRY.min(timeout - elapsed));
    }
}

enum LineRead {
    /// A whole line (with its newline) is in the buffer.
    Line,
    Eof,
    EofMidLine,
    TooLong,
}

/// Reads one line of at most [`MAX_LINE`] bytes into `buf` (cleared first).
fn read_line(reader: &mut BufReader<UnixStream>, buf: &mut Vec<u8>) -> io::Result<LineRead> {
    buf.clear();
    let n = Read::take(&mut *reader, MAX_LINE as u64 + 1).read_until(b'\n', buf)?;
    Ok(if n == 0 {
        LineRead::Eof
    } else if buf.last() == Some(&b'\n') {
        LineRead::Line
    } else if n > MAX_LINE {
        LineRead::TooLong
    } else {
        LineRead::EofMidLine
    })
}

/// Marks the connection closed and the thread finished when the reader
/// thread ends, however it ends (including a panicking callback).
struct ExitGuard {
    shared: Arc<Shared>,
    reason: Option<CloseReason>,
}

impl Drop for ExitGuard {
    fn drop(&mut self) {
        let reason = self.reason.take().unwrap_or(CloseReason::ReaderPanicked);
        self.shared.close(reason);
        self.shared.lock().reader_exited = true;
        self.shared.exited.notify_all();
    }
}

fn reader_thread(mut reader: BufReader<UnixStream>, shared: Arc<Shared>, on_event: EventHandler) {
    let mut guard = ExitGuard {
        shared: Arc::clone(&shared),
        reason: None,
    };
    let reason = read_loop(&mut reader, &shared, &on_event);
    if matches!(reason, CloseReason::Protocol(_)) {
        // Let the server see that we hung up on it.
        let _ = reader.get_ref().shutdown(Shutdown::Both);
    }
    guard.reason = Some(reason);
}

/// Reads and dispatches lines until the connection ends; returns why.
fn read_loop(
    reader: &mut BufReader<UnixStream>,
    shared: &Shared,
    on_event: &EventHandler,
) -> CloseReason {
    let mut buf = Vec::new();
    loop {
        match read_line(reader, &mut buf) {
            Ok(LineRead::Line) => {}
            Ok(LineRead::Eof) => return CloseReason::Eof,
            Ok(LineRead::EofMidLine) => return CloseReason::EofMidLine,
            Ok(LineRead::TooLong) => {
                return CloseReason::Protocol(format!(
                    "the server sent a line longer than {MAX_LINE} bytes"
                ));
            }
            Err(e) if is_disconnect(&e) => return CloseReason::Eof,
            Err(e) => return CloseReason::ReadFailed(e.to_string()),
        }
        let received = Instant::now();
        let Ok(line) = std::str::from_utf8(&buf) else {
            return CloseReason::Protocol(format!(
                "the server sent a line that is not UTF-8: {}",
                truncate(&String::from_utf8_lossy(&buf))
            ));
        };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let (reply, id) = match ServerMessage::parse(line) {
            Ok(ServerMessage::Event(event)) => {
                on_event(ReceivedEvent { event, received });
                continue;
            }
            Ok(ServerMessage::Return { value, id }) => (Reply::Return(value), id),
            Ok(ServerMessage::Error { error, id }) => (Reply::Error(error), id),
            Err(e) => {
                return CloseReason::Protocol(format!(
                    "the server sent a line that is not a QMP message ({e}): {}",
                    truncate(line)
                ));
            }
        };
        // A reply without a numeric id, or whose caller gave up, is dropped.
        let waiter = id
            .as_ref()
            .and_then(Value::as_u64)
            .and_then(|id| shared.lock().pending.remove(&id));
        if let Some(tx) = waiter {
            let _ = tx.try_send(reply);
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn is_disconnect(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::NotConnected
    )
}

fn truncate(s: &str) -> String {
    const MAX: usize = 200;
    if s.chars().count() <= MAX {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(MAX).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests;
