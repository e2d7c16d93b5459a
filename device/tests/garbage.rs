//! Garbage on one connection: the daemon logs, records a protocol error, drops only that
//! connection, and keeps serving another frontend's I/O.

mod common;

use std::io::Write;
use std::net::Shutdown;
use std::os::unix::net::UnixStream;

use common::*;
use cprkit_device::{EntryKind, Policy};

/// Deterministic pseudo-random bytes (xorshift).
fn noise(n: usize, mut seed: u64) -> Vec<u8> {
    (0..n)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

fn header(code: u32, flags: u32, size: u32) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(&code.to_le_bytes());
    h.extend_from_slice(&flags.to_le_bytes());
    h.extend_from_slice(&size.to_le_bytes());
    h
}

#[test]
fn garbage_drops_only_that_connection() {
    let fx = Fixture::new(Policy::Shared);
    let mut good = Front::up(&fx.socket, true, 0);
    assert_eq!(good.write(2, &[7u8; 512]), 0);

    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("random bytes", noise(300, 0x9e37_79b9_7f4a_7c15)),
        ("truncated header", header(1, 1, 0)[..5].to_vec()),
        // GET_FEATURES announcing 100 payload bytes, 10 sent, then the close.
        ("short payload", {
            let mut m = header(1, 1, 100);
            m.extend_from_slice(&[0u8; 10]);
            m
        }),
        // A valid header of an unknown request code.
        ("unknown code", header(0xdead, 1, 0)),
    ];
    for (i, (what, bytes)) in cases.into_iter().enumerate() {
        let conn = Some(i as u32 + 2);
        let mut bad = UnixStream::connect(&fx.socket).unwrap();
        bad.write_all(&bytes).unwrap();
        bad.shutdown(Shutdown::Write).unwrap();
        assert!(
            closed_by_peer(&mut bad),
            "{what}: daemon kept the connection"
        );
        let err =
            fx.wait_entry(|e| e.conn == conn && matches!(e.kind, EntryKind::ProtocolError { .. }));
        assert_eq!(err.pid, Some(me()), "{what}");
        fx.wait_entry(|e| e.conn == conn && e.kind == EntryKind::Disconnect);
        // The other frontend still completes requests.
        let (status, data) = good.read(2, 512);
        assert_eq!((status, data), (0, vec![7u8; 512]), "after {what}");
    }

    // A frontend that vanishes mid-handshake, without a word.
    drop(UnixStream::connect(&fx.socket).unwrap());
    fx.wait_entry(|e| e.conn == Some(6) && e.kind == EntryKind::Disconnect);

    let state = fx.client().state().unwrap();
    let open: Vec<u32> = state
        .conns
        .iter()
        .filter(|c| c.open)
        .map(|c| c.conn)
        .collect();
    assert_eq!(open, vec![1]);
    assert_eq!(good.write(3, &[8u8; 512]), 0);
}
