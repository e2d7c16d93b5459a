//! Unit tests of the client against a scripted fake QMP server thread.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rstest::rstest;
use serde_json::{Value, json};

use super::*;
use crate::wire::{Command, Event, Timestamp};

/// Bound on every blocking read of the fake server, so no test hangs.
const PEER_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The server end of one connection.
struct Peer {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Peer {
    fn new(stream: UnixStream) -> Self {
        stream.set_read_timeout(Some(PEER_TIMEOUT)).unwrap();
        Peer {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        }
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).unwrap();
        self.writer.flush().unwrap();
    }

    fn send(&mut self, line: &str) {
        self.send_raw(format!("{line}\n").as_bytes());
    }

    fn greet(&mut self) {
        self.send(r#"{"QMP": {"version": {"qemu": {"major": 10, "minor": 1, "micro": 0}, "package": "fake"}, "capabilities": ["oob"]}}"#);
    }

    /// The next command, or None if the client hung up.
    fn recv(&mut self) -> Option<Command> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => None,
            Ok(_) => Some(serde_json::from_str(&line).expect("client sent a valid command")),
            Err(e) => panic!("fake server read failed: {e}"),
        }
    }

    fn expect(&mut self, name: &str) -> Command {
        let cmd = self.recv().expect("client hung up");
        assert_eq!(cmd.execute, name);
        assert!(cmd.id.as_ref().and_then(Value::as_u64).is_some(), "{cmd:?}");
        cmd
    }

    fn reply(&mut self, cmd: &Command, value: Value) {
        let msg = ServerMessage::Return {
            value,
            id: cmd.id.clone(),
        };
        self.send(&msg.to_line());
    }

    fn error(&mut self, cmd: &Command, class: &str, desc: &str) {
        let msg = ServerMessage::Error {
            error: ErrorBody {
                class: class.into(),
                desc: desc.into(),
            },
            id: cmd.id.clone(),
        };
        self.send(&msg.to_line());
    }

    fn event(&mut self, name: &str, n: i64) {
        let msg = ServerMessage::Event(Event {
            event: name.into(),
            data: json!({ "n": n }),
            timestamp: Timestamp {
                seconds: n,
                microseconds: 0,
            },
        });
        self.send(&msg.to_line());
    }

    fn handshake(&mut self) {
        self.greet();
        let caps = self.expect("qmp_capabilities");
        self.reply(&caps, json!({}));
    }

    /// Waits until the client hangs up.
    fn wait_for_hangup(&mut self) {
        while self.recv().is_some() {}
    }
}

/// A fake server running `script` on the first connection it accepts.
struct Server {
    _dir: tempfile::TempDir,
    path: PathBuf,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(script: impl FnOnce(Peer) + Send + 'static) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let thread = thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            script(Peer::new(stream));
        });
        Server {
            _dir: dir,
            path,
            thread: Some(thread),
        }
    }

    /// Joins the script, re-raising its panic (a failed server-side assert).
    fn finish(mut self) {
        if let Err(p) = self.thread.take().unwrap().join() {
            std::panic::resume_unwind(p);
        }
    }
}

fn no_events() -> EventHandler {
    Box::new(|_| {})
}

/// An event handler recording what it got.
fn recorder() -> (EventHandler, Arc<Mutex<Vec<ReceivedEvent>>>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&events);
    (Box::new(move |ev| sink.lock().unwrap().push(ev)), events)
}

fn names(events: &Mutex<Vec<ReceivedEvent>>) -> Vec<String> {
    events
        .lock()
        .unwrap()
        .iter()
        .map(|e| e.event.event.clone())
        .collect()
}

#[test]
fn client_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Client>();
}

#[test]
fn handshake_reads_greeting_and_negotiates_capabilities() {
    let server = Server::start(|mut peer| {
        peer.greet();
        let caps = peer.expect("qmp_capabilities");
        assert_eq!(caps.arguments, None);
        peer.reply(&caps, json!({}));
        peer.wait_for_hangup();
    });
    let client = Client::connect(&server.path, CONNECT_TIMEOUT, no_events()).unwrap();
    assert_eq!(client.greeting().qmp.version["qemu"]["major"], 10);
    assert_eq!(client.greeting().qmp.capabilities, vec![json!("oob")]);
    assert_eq!(client.path(), server.path);
    assert!(!client.is_closed());
    drop(client);
    server.finish();
}

#[test]
fn command_gets_its_reply() {
    let server = Server::start(|mut peer| {
        peer.handshake();
        let cmd = peer.expect("query-status");
        assert_eq!(cmd.arguments, None);
        peer.reply(&cmd, json!({"status": "running", "running": true}));
        let cmd = peer.expect("migrate-set-parameters");
        assert_eq!(cmd.arguments, Some(json!({"mode": "cpr-transfer"})));
        peer.reply(&cmd, json!({}));
        peer.wait_for_hangup();
    });
    let client = Client::connect(&server.path, CONNECT_TIMEOUT, no_events()).unwrap();
    let status = client.execute("query-status", None).unwrap();
    assert_eq!(status["status"], "running");
    let ok = client
        .execute(
            "migrate-set-parameters",
            Some(json!({"mode": "cpr-transfer"})),
        )
        .unwrap();
    assert_eq!(ok, json!({}));
    drop(client);
    server.finish();
}

#[test]
fn error_reply_becomes_command_error() {
    let server = Server::start(|mut peer| {
        peer.handshake();
        let cmd = peer.expect("migrate-incoming");
        peer.error(&cmd, "GenericError", "no incoming migration expected");
        // The connection stays usable.
        let cmd = peer.expect("query-status");
        peer.reply(&cmd, json!({"status": "inmigrate"}));
        peer.wait_for_hangup();
    });
    let client = Client::connect(&server.path, CONNECT_TIMEOUT, no_events()).unwrap();
    let err = client
        .execute("migrate-incoming", Some(json!({"uri": "unix:/x"})))
        .unwrap_err();
    match &err {
        QmpError::Command {
            command,
            class,
            desc,
        } => {
            assert_eq!(command, "migrate-incoming");
            assert_eq!(class, "GenericError");
            assert_eq!(desc, "no incoming migration expected");
        }
        other => panic!("expected a command error, got {other:?}"),
    }
    assert!(
        err.to_string().contains("no incoming migration expected"),
        "{err}"
    );
    assert_eq!(
        client.execute("query-status", None).unwrap()["status"],
        "inmigrate"
    );
    drop(client);
    server.finish();
}

#[test]
fn events_arrive_in_order_and_before_the_reply_that_follows_them() {
    let server = Server::start(|mut peer| {
        peer.greet();
        let caps = peer.expect("qmp_capabilities");
        // Events may come before the capabilities reply.
        peer.event("EARLY", 0);
        peer.reply(&caps, json!({}));
        for round in 0..20 {
            let cmd = peer.expect("stop");
            for i in 0..5 {
                peer.event("STOP", round * 5 + i + 1);
            }
            peer.reply(&cmd, json!({}));
        }
        peer.wait_for_hangup();
    });
    let (handler, events) = recorder();
    let before = Instant::now();
    let client = Client::connect(&server.path, CONNECT_TIMEOUT, handler).unwrap();
    assert_eq!(names(&events), ["EARLY"]);
    for round in 0..20 {
        client.execute("stop", None).unwrap();
        // Everything the server sent before this reply has been delivered.
        let got = events.lock().unwrap();
        assert_eq!(got.len(), 1 + (round + 1) * 5);
    }
    let got = events.lock().unwrap().clone();
    let seconds: Vec<i64> = got.iter().map(|e| e.event.timestamp.seconds).collect();
    assert_eq!(seconds, (0..=100).collect::<Vec<_>>());
    assert_eq!(got[1].event.data, json!({"n": 1}));
    assert!(got.windows(2).all(|w| w[0].received <= w[1].received));
    assert!(got[0].received >= before && got[100].received <= Instant::now());
    drop(client);
    server.finish();
}

#[test]
fn connect_retries_until_the_socket_appears() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("late.sock");
    let server_path = path.clone();
    let server = thread::spawn(move || {
        thread::sleep(Duration::from_millis(50));
        let listener = UnixListener::bind(&server_path).unwrap();
        let (stream, _) = listener.accept().unwrap();
        let mut peer = Peer::new(stream);
        peer.handshake();
        peer.wait_for_hangup();
    });
    let start = Instant::now();
    let client = Client::connect(&path, CONNECT_TIMEOUT, no_events()).unwrap();
    assert!(start.elapsed() >= Duration::from_millis(50));
    drop(client);
    server.join().unwrap();
}

#[test]
fn connect_retries_a_stale_socket_until_someone_listens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stale.sock");
    // Bound and closed: the file exists, connecting is refused.
    drop(UnixListener::bind(&path).unwrap());
    let server_path = path.clone();
    let server = thread::spawn(move || {
        thread::sleep(Duration::from_millis(50));
        std::fs::remove_file(&server_path).unwrap();
        let listener = UnixListener::bind(&server_path).unwrap();
        let (stream, _) = listener.accept().unwrap();
        let mut peer = Peer::new(stream);
        peer.handshake();
        peer.wait_for_hangup();
    });
    let client = Client::connect(&path, CONNECT_TIMEOUT, no_events()).unwrap();
    drop(client);
    server.join().unwrap();
}

#[rstest]
#[case::missing_socket(false)]
#[case::stale_socket(true)]
fn connect_gives_up_after_the_timeout(#[case] stale: bool) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nobody.sock");
    if stale {
        drop(UnixListener::bind(&path).unwrap());
    }
    let timeout = Duration::from_millis(100);
    let start = Instant::now();
    let err = Client::connect(&path, timeout, no_events()).unwrap_err();
    let elapsed = start.elapsed();
    assert!(elapsed >= timeout, "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    match &err {
        QmpError::Connect { path: p, source } => {
            assert_eq!(p, &path);
            let kind = if stale {
                std::io::ErrorKind::ConnectionRefused
            } else {
                std::io::ErrorKind::NotFound
            };
            assert_eq!(source.kind(), kind);
        }
        other => panic!("expected a connect error, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("100ms"), "{msg}");
}

#[test]
fn connect_does_not_retry_what_cannot_get_better() {
    // A path below a regular file (ENOTDIR) will not start to work.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, b"").unwrap();
    let path = file.join("qmp.sock");
    let start = Instant::now();
    let err = Client::connect(&path, Duration::from_secs(5), no_events()).unwrap_err();
    assert!(matches!(err, QmpError::Connect { .. }), "{err:?}");
    assert!(start.elapsed() < Duration::from_secs(1));
}

fn assert_prompt(start: Instant) {
    let elapsed = start.elapsed();
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
}

#[test]
fn server_closing_mid_command_gives_closed_promptly() {
    let server = Server::start(|mut peer| {
        peer.handshake();
        peer.expect("cont");
        // Dies without answering: the client's reading end sees EOF.
        drop(peer);
    });
    let client = Client::connect(&server.path, CONNECT_TIMEOUT, no_events()).unwrap();
    let start = Instant::now();
    let err = client.execute("cont", None).unwrap_err();
    assert_prompt(start);
    assert!(matches!(err, QmpError::Closed { .. }), "{err:?}");
    assert!(err.to_string().contains("cont"), "{err}");
    assert!(client.is_closed());
    // Later commands fail at once too.
    let start = Instant::now();
    let err = client.execute("query-status", None).unwrap_err();
    assert_prompt(start);
    assert!(matches!(err, QmpError::Closed { .. }), "{err:?}");
    drop(client);
    server.finish();
}

#[test]
fn server_dying_before_the_greeting_gives_closed() {
    let server = Server::start(drop);
    let err = Client::connect(&server.path, CONNECT_TIMEOUT, no_events()).unwrap_err();
    assert!(matches!(err, QmpError::Closed { .. }), "{err:?}");
    server.finish();
}

#[test]
fn no_greeting_gives_timeout() {
    let (release, wait) = mpsc::channel::<()>();
    let server = Server::start(move |_peer| {
        let _ = wait.recv_timeout(PEER_TIMEOUT);
    });
    let reply_timeout = Duration::from_millis(100);
    let start = Instant::now();
    let err = Client::connect_with(&server.path, CONNECT_TIMEOUT, reply_timeout, no_events())
        .unwrap_err();
    assert_prompt(start);
    match &err {
        QmpError::Timeout { what, after } => {
            assert!(what.contains("greeting"), "{what}");
            assert_eq!(*after, reply_timeout);
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    release.send(()).unwrap();
    server.finish();
}

#[test]
fn reply_timeout_gives_timeout_and_a_late_reply_is_dropped() {
    let (late, wait_late) = mpsc::channel::<()>();
    let server = Server::start(move |mut peer| {
        peer.handshake();
        let slow = peer.expect("query-migrate");
        wait_late.recv_timeout(PEER_TIMEOUT).unwrap();
        // Too late: nobody waits for this id any more.
        peer.reply(&slow, json!({"status": "late"}));
        let cmd = peer.expect("query-status");
        peer.reply(&cmd, json!({"status": "running"}));
        let cmd = peer.expect("query-name");
        peer.reply(&cmd, json!({}));
        peer.wait_for_hangup();
    });
    let mut client = Client::connect(&server.path, CONNECT_TIMEOUT, no_events()).unwrap();
    let timeout = Duration::from_millis(100);
    let start = Instant::now();
    let err = client
        .execute_with_timeout("query-migrate", None, timeout)
        .unwrap_err();
    assert!(start.elapsed() >= timeout);
    assert_prompt(start);
    match &err {
        QmpError::Timeout { what, after } => {
            assert!(what.contains("query-migrate"), "{what}");
            assert_eq!(*after, timeout);
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(!client.is_closed());
    late.send(()).unwrap();
    assert_eq!(
        client.execute("query-status", None).unwrap()["status"],
        "running"
    );
    client.set_reply_timeout(Duration::from_secs(3));
    assert_eq!(client.execute("query-name", None).unwrap(), json!({}));
    drop(client);
    server.finish();
}

#[rstest]
#[case::not_json("garbage")]
#[case::json_but_not_qmp(r#"{"hello": "world"}"#)]
#[case::bad_error_body(r#"{"error": 42, "id": 2}"#)]
fn garbage_line_gives_protocol_error(#[case] line: &'static str) {
    let server = Server::start(move |mut peer| {
        peer.handshake();
        peer.expect("query-status");
        peer.send(line);
        // The client hangs up on a peer that does not speak QMP.
        peer.wait_for_hangup();
    });
    let client = Client::connect(&server.path, CONNECT_TIMEOUT, no_events()).unwrap();
    let start = Instant::now();
    let err = client.execute("query-status", None).unwrap_err();
    assert_prompt(start);
    match &err {
        QmpError::Protocol(msg) => assert!(msg.contains(line), "{msg}"),
        other => panic!("expected a protocol error, got {other:?}"),
    }
    assert!(client.is_closed());
    assert!(matches!(
        client.execute("query-status", None),
        Err(QmpError::Protocol(_))
    ));
    drop(client);
    server.finish();
}

#[test]
fn garbage_instead_of_greeting_gives_protocol_error() {
    let server = Server::start(|mut peer| {
        peer.send("this is not QMP");
        peer.wait_for_hangup();
    });
    let err = Client::connect(&server.path, CONNECT_TIMEOUT, no_events()).unwrap_err();
    assert!(matches!(err, QmpError::Protocol(_)), "{err:?}");
    server.finish();
}

#[test]
fn long_lines_in_dribbled_pieces_are_reassembled() {
    let big = "x".repeat(1 << 20);
    let expected = big.clone();
    let server = Server::start(move |mut peer| {
        peer.handshake();
        let cmd = peer.expect("human-monitor-command");
        let line = ServerMessage::Return {
            value: json!({ "out": big }),
            id: cmd.id.clone(),
        }
        .to_line();
        // An event and the reply, split at awkward places.
        let mut bytes = br#"{"event": "RESU"#.to_vec();
        peer.send_raw(&bytes);
        thread::sleep(Duration::from_millis(5));
        bytes = br#"ME", "timestamp": {"seconds": 1, "microseconds": 2}}"#.to_vec();
        bytes.push(b'\n');
        bytes.extend_from_slice(&line.as_bytes()[..10]);
        peer.send_raw(&bytes);
        for chunk in line.as_bytes()[10..].chunks(300_000) {
            thread::sleep(Duration::from_millis(5));
            peer.send_raw(chunk);
        }
        peer.send_raw(b"\r\n");
        peer.wait_for_hangup();
    });
    let (handler, events) = recorder();
    let client = Client::connect(&server.path, CONNECT_TIMEOUT, handler).unwrap();
    let out = client
        .execute(
            "human-monitor-command",
            Some(json!({"command-line": "info"})),
        )
        .unwrap();
    assert_eq!(out["out"].as_str().unwrap(), expected);
    assert_eq!(names(&events), ["RESUME"]);
    drop(client);
    server.finish();
}

#[test]
fn concurrent_commands_get_their_own_replies() {
    const N: usize = 8;
    let server = Server::start(|mut peer| {
        peer.handshake();
        let cmds: Vec<Command> = (0..N).map(|_| peer.expect("echo")).collect();
        // Answer in reverse order: replies are matched by id, not by order.
        for cmd in cmds.iter().rev() {
            peer.reply(cmd, cmd.arguments.clone().unwrap());
        }
        peer.wait_for_hangup();
    });
    let client = Client::connect(&server.path, CONNECT_TIMEOUT, no_events()).unwrap();
    thread::scope(|s| {
        let handles: Vec<_> = (0..N)
            .map(|i| {
                let client = &client;
                s.spawn(move || client.execute("echo", Some(json!({ "i": i }))).unwrap())
            })
            .collect();
        for (i, h) in handles.into_iter().enumerate() {
            assert_eq!(h.join().unwrap(), json!({ "i": i }));
        }
    });
    drop(client);
    server.finish();
}

#[test]
fn drop_returns_promptly_while_the_server_stays_silent() {
    let (release, wait) = mpsc::channel::<()>();
    let server = Server::start(move |mut peer| {
        peer.handshake();
        // Keep the connection open and say nothing until told.
        let _ = wait.recv_timeout(PEER_TIMEOUT);
    });
    let client = Client::connect(&server.path, CONNECT_TIMEOUT, no_events()).unwrap();
    let start = Instant::now();
    drop(client);
    assert_prompt(start);
    release.send(()).unwrap();
    server.finish();
}

#[test]
fn drop_does_not_hang_on_a_blocked_event_handler() {
    let (release, wait) = mpsc::channel::<()>();
    let wait = Mutex::new(wait);
    let (entered_tx, entered) = mpsc::channel::<()>();
    let entered_tx = Mutex::new(entered_tx);
    let handler: EventHandler = Box::new(move |_| {
        let _ = entered_tx.lock().unwrap().send(());
        let _ = wait.lock().unwrap().recv_timeout(PEER_TIMEOUT);
    });
    let server = Server::start(|mut peer| {
        peer.handshake();
        peer.event("BLOCK", 1);
        peer.wait_for_hangup();
    });
    let client = Client::connect(&server.path, CONNECT_TIMEOUT, handler).unwrap();
    entered.recv_timeout(PEER_TIMEOUT).unwrap();
    let start = Instant::now();
    drop(client);
    let elapsed = start.elapsed();
    assert!(elapsed >= DROP_JOIN_TIMEOUT, "{elapsed:?}");
    assert!(
        elapsed < DROP_JOIN_TIMEOUT + Duration::from_secs(1),
        "{elapsed:?}"
    );
    release.send(()).unwrap();
    server.finish();
}

#[test]
fn a_panicking_event_handler_closes_the_connection() {
    let server = Server::start(|mut peer| {
        peer.handshake();
        let cmd = peer.expect("stop");
        peer.event("STOP", 1);
        peer.reply(&cmd, json!({}));
        peer.wait_for_hangup();
    });
    let handler: EventHandler = Box::new(|_| panic!("handler bug (expected by this test)"));
    let client = Client::connect(&server.path, CONNECT_TIMEOUT, handler).unwrap();
    let start = Instant::now();
    let err = client.execute("stop", None).unwrap_err();
    assert_prompt(start);
    assert!(matches!(err, QmpError::Closed { .. }), "{err:?}");
    assert!(err.to_string().contains("panicked"), "{err}");
    drop(client);
    server.finish();
}
