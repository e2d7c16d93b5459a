//! Ownership policies with two real frontends: exclusive refuses a second SET_OWNER as busy
//! (closing the connection, or an error reply when one was asked for), shared lets both in.

mod common;

use common::*;
use cprkit_device::{Answer, EntryKind, OwnerChange, Policy};
use vhost::VhostBackend;

fn refused_busy(entries: &[cprkit_device::LedgerEntry]) -> Vec<(Option<u32>, Option<u32>, bool)> {
    entries
        .iter()
        .filter_map(|e| match &e.kind {
            EntryKind::Owner {
                change:
                    OwnerChange::RefusedBusy {
                        owner_conn,
                        injected,
                        ..
                    },
            } => Some((e.conn, *owner_conn, *injected)),
            _ => None,
        })
        .collect()
}

#[test]
fn exclusive_second_owner_without_reply_is_closed_then_takes_after_reset_owner() {
    let fx = Fixture::new(Policy::Exclusive);
    let first = Front::up(&fx.socket, false, 0);

    let mut second = Front::connect(&fx.socket);
    second.negotiate(false);
    // No NEED_REPLY: the frontend does not wait; the refusal is the closed connection.
    second.fe.set_owner().expect("send");
    assert!(
        second.fe.get_features().is_err(),
        "connection should be closed"
    );
    let closed = fx.wait_entry(|e| e.conn == Some(2) && e.kind == EntryKind::Disconnect);
    assert_eq!(closed.pid, Some(me()));
    let entries = fx.ledger();
    assert_eq!(refused_busy(&entries), vec![(Some(2), Some(1), false)]);
    let set_owner = message(&entries, "SET_OWNER");
    assert!(
        matches!(&set_owner[1].kind, EntryKind::Message { answer: Answer::Closed { why }, .. } if why.contains("busy"))
    );

    // The first releases (RESET_OWNER has no reply: the daemon's ledger says
    // when it was handled, on the first's own thread); a third connection
    // then takes it.
    first.fe.reset_owner().unwrap();
    fx.wait_entry(|e| {
        e.conn == Some(1)
            && matches!(
                e.kind,
                EntryKind::Owner {
                    change: OwnerChange::Release { .. }
                }
            )
    });
    let mut third = Front::connect(&fx.socket);
    third.negotiate(true);
    third.fe.set_owner().expect("take after RESET_OWNER");
    let state = fx.client().state().unwrap();
    let owners: Vec<u32> = state
        .conns
        .iter()
        .filter(|c| c.owner)
        .map(|c| c.conn)
        .collect();
    assert_eq!(owners, vec![3]);
    let entries = fx.ledger();
    assert!(entries.iter().any(|e| e.conn == Some(1)
        && e.kind
            == EntryKind::Owner {
                change: OwnerChange::Release {
                    how: "RESET_OWNER".into()
                }
            }));
    assert!(entries.iter().any(|e| e.conn == Some(1)
        && e.kind
            == EntryKind::Owner {
                change: OwnerChange::RingStop {
                    ring: 0,
                    base: 0,
                    how: "RESET_OWNER".into()
                }
            }));

    // The same connection may take it again after its own RESET_OWNER.
    first.fe.set_owner().unwrap();
    assert!(first.fe.get_features().is_err(), "busy: conn 3 owns it");
    third.fe.reset_owner().unwrap();
    let mut again = Front::connect(&fx.socket);
    again.negotiate(true);
    again.fe.set_owner().unwrap();
    again.fe.reset_owner().unwrap();
    again
        .fe
        .set_owner()
        .expect("same connection, after its RESET_OWNER");
}

#[test]
fn exclusive_second_owner_with_need_reply_gets_an_error_and_keeps_the_connection() {
    let fx = Fixture::new(Policy::Exclusive);
    let first = Front::up(&fx.socket, true, 0);
    let mut second = Front::connect(&fx.socket);
    second.negotiate(true);
    assert!(second.fe.set_owner().is_err(), "error reply");
    // Still connected and answering.
    assert_eq!(second.fe.get_features().unwrap(), cprkit_device::FEATURES);
    let entries = fx.ledger();
    let set_owner = message(&entries, "SET_OWNER");
    assert!(matches!(
        &set_owner[1].kind,
        EntryKind::Message {
            answer: Answer::Error { .. },
            ..
        }
    ));

    // The owner disconnects: that releases; the second takes it on the same connection.
    drop(first);
    fx.wait_entry(|e| {
        e.conn == Some(1)
            && e.kind
                == EntryKind::Owner {
                    change: OwnerChange::Release {
                        how: "disconnect".into(),
                    },
                }
    });
    second.fe.set_owner().expect("take after the owner left");
    let state = fx.client().state().unwrap();
    assert!(!state.conns[0].open && !state.conns[0].owner);
    assert!(state.conns[1].open && state.conns[1].owner);
}

#[test]
fn shared_lets_both_in_and_records_the_overlap() {
    let fx = Fixture::new(Policy::Shared);
    let mut first = Front::up(&fx.socket, true, 0);
    let mut second = Front::connect(&fx.socket);
    second.negotiate(true);
    second.fe.set_owner().expect("shared: let in");
    let entries = fx.ledger();
    assert!(entries.iter().any(|e| e.conn == Some(2)
        && e.kind
            == EntryKind::Owner {
                change: OwnerChange::Overlap {
                    with_conn: 1,
                    with_pid: Some(me())
                }
            }));
    assert!(refused_busy(&entries).is_empty());
    let state = fx.client().state().unwrap();
    assert!(state.conns.iter().all(|c| c.owner));
    // The first still does I/O.
    assert_eq!(first.write(1, &[9u8; 512]), 0);
}
