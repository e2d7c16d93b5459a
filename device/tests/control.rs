//! The control protocol over a real socket: mark, wait-io, ledger since, malformed lines,
//! several clients; and `run` with bad arguments.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::*;
use cprkit_device::{DeviceClient, DeviceError, EntryKind, Policy, run};

#[test]
fn mark_wait_io_and_ledger_since() {
    let fx = Fixture::new(Policy::Exclusive);
    let mut ctl = fx.client();
    let mut other = fx.client();
    let mut front = Front::up(&fx.socket, true, 0);

    let seq = ctl.mark("cut-over").unwrap();
    let since = ctl.ledger(seq).unwrap();
    assert_eq!(since[0].seq, seq);
    assert_eq!(
        since[0].kind,
        EntryKind::Mark {
            label: "cut-over".into()
        }
    );
    assert_eq!((since[0].conn, since[0].pid), (None, None));

    // Nothing after the mark yet: null on timeout.
    let start = Instant::now();
    assert_eq!(
        ctl.wait_io(me(), seq, Duration::from_millis(50)).unwrap(),
        None
    );
    assert!(start.elapsed() >= Duration::from_millis(50));

    // A waiter blocked in the daemon wakes on the Io entry.
    let control = fx.control.clone();
    let waiter = std::thread::spawn(move || {
        let mut c = DeviceClient::connect(&control, WAIT).unwrap();
        c.wait_io(me(), seq, WAIT).unwrap()
    });
    assert_eq!(front.write(5, &[3u8; 512]), 0);
    let entry = waiter.join().unwrap().expect("io entry");
    assert!(entry.seq > seq);
    assert!(matches!(entry.kind, EntryKind::Io { ref op, sector: 5, .. } if op == "out"));
    // Other pids' I/O does not count.
    assert_eq!(
        other
            .wait_io(me() + 100_000, 0, Duration::from_millis(10))
            .unwrap(),
        None
    );

    let all = other.ledger(0).unwrap();
    assert_eq!(all[0].seq, 1);
    assert!(other.ledger(all.len() as u64 + 1).unwrap().is_empty());
    assert_eq!(other.state().unwrap().last_seq, all.last().unwrap().seq);
}

#[test]
fn malformed_lines_get_errors_and_the_connection_still_answers() {
    let fx = Fixture::new(Policy::Shared);
    let stream = UnixStream::connect(&fx.control).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let mut ask = |line: &str| -> serde_json::Value {
        writer.write_all(line.as_bytes()).unwrap();
        writer.write_all(b"\n").unwrap();
        let mut reply = String::new();
        reader.read_line(&mut reply).unwrap();
        serde_json::from_str(&reply).unwrap()
    };
    for bad in [
        "not json",
        "{\"cmd\":\"nope\"}",
        "{\"cmd\":\"arm\",\"fault\":{\"kind\":\"x\"}}",
        "",
        "[1,2]",
    ] {
        let reply = ask(bad);
        assert_eq!(reply["ok"], false, "{bad}");
        assert!(
            reply["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{bad}"
        );
    }
    let state = ask("{\"cmd\":\"state\"}");
    assert_eq!(state["ok"], true);
    assert_eq!(state["state"]["policy"], "shared");
    let mark = ask("{\"cmd\":\"mark\",\"label\":\"x\"}");
    assert_eq!(mark["ok"], true);
    assert!(mark["seq"].as_u64().is_some());
    let wait = ask("{\"cmd\":\"wait-io\",\"pid\":1,\"after\":0,\"timeout_ms\":1}");
    assert_eq!(wait["ok"], true);
    assert!(wait["entry"].is_null());
    let arm = ask(
        "{\"cmd\":\"arm\",\"fault\":{\"kind\":\"delay\",\"pid\":1,\"on\":\"take\",\"delay_ms\":5}}",
    );
    assert_eq!(arm["ok"], true);
}

#[test]
fn client_errors_carry_context() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("none.sock");
    let err = DeviceClient::connect(&missing, Duration::from_millis(30)).unwrap_err();
    assert!(matches!(err, DeviceError::Connect { .. }));
    assert!(err.to_string().contains("none.sock"), "{err}");
}

#[test]
fn run_with_bad_args_returns_2() {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(run(s(&[])), 2);
    assert_eq!(run(s(&["--socket", "/tmp/x"])), 2);
    assert_eq!(
        run(s(&[
            "--socket",
            "/tmp/x",
            "--control",
            "/tmp/y",
            "--policy",
            "both"
        ])),
        2
    );
    assert_eq!(run(s(&["--frobnicate"])), 2);
}

#[test]
fn ledger_entries_round_trip_through_json() {
    let fx = Fixture::new(Policy::Exclusive);
    let mut front = Front::up(&fx.socket, true, 0);
    assert_eq!(front.write(0, &[0u8; 512]), 0);
    let entries = fx.ledger();
    for e in &entries {
        let json = serde_json::to_string(e).unwrap();
        let back: cprkit_device::LedgerEntry = serde_json::from_str(&json).unwrap();
        assert_eq!(&back, e, "{json}");
    }
    let state = fx.client().state().unwrap();
    let json = serde_json::to_string(&state).unwrap();
    assert_eq!(
        serde_json::from_str::<cprkit_device::DeviceState>(&json).unwrap(),
        state
    );
}

#[test]
fn wait_change_answers_each_change_down_to_a_connection_seen_closed() {
    let fx = Fixture::new(Policy::Shared);
    let mut ctl = fx.client();
    let quiet = ctl.state().unwrap();

    // Nothing changes: the state comes back at the timeout, same version.
    let start = Instant::now();
    let same = ctl
        .wait_change(quiet.version, Duration::from_millis(40))
        .unwrap();
    assert!(start.elapsed() >= Duration::from_millis(40));
    assert_eq!(same.version, quiet.version);

    // A waiter blocked in the daemon wakes on the frontend's connection.
    let control = fx.control.clone();
    let since = quiet.version;
    let waiter = std::thread::spawn(move || {
        let mut c = DeviceClient::connect(&control, WAIT).unwrap();
        c.wait_change(since, WAIT).unwrap()
    });
    let front = Front::up(&fx.socket, true, 0);
    let woke = waiter.join().unwrap();
    assert!(woke.version > since);
    assert_eq!(woke.conns.len(), 1);

    // Following changes one at a time, the closed connection is seen without
    // a timeout: its last change (open turning false) comes after its
    // disconnect entry and counts too.
    let mut st = ctl.state().unwrap();
    assert!(st.conns[0].open && st.conns[0].owner);
    drop(front);
    while st.conns[0].open {
        let start = Instant::now();
        let next = ctl.wait_change(st.version, WAIT).unwrap();
        assert!(next.version > st.version, "no change within {WAIT:?}");
        assert!(start.elapsed() < WAIT);
        st = next;
    }
    assert!(!st.conns[0].owner);
    assert!(
        ctl.ledger(0)
            .unwrap()
            .iter()
            .any(|e| e.conn == Some(1) && e.kind == EntryKind::Disconnect)
    );
}
