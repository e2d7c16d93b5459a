//! A real frontend drives the daemon's virtqueue: data round-trips, the ledger records it, and
//! GET_VRING_BASE / SET_VRING_BASE hand a ring over between connections.

mod common;

use common::*;
use cprkit_device::{Answer, EntryKind, OwnerChange, Policy};
use vhost::VhostBackend;
use vhost::vhost_user::VhostUserFrontend;
use vhost::vhost_user::message::VhostUserConfigFlags;

#[test]
fn out_then_in_round_trips_and_ledger_records_it() {
    let fx = Fixture::new(Policy::Exclusive);
    let mut front = Front::up(&fx.socket, true, 0);

    let (status, boot) = front.read(0, 512);
    assert_eq!(status, 0);
    assert_eq!(&boot[510..512], &[0x55, 0xAA]);
    assert_eq!(&boot[16..16 + 18], b"cprkit boot sector");
    assert_eq!(&boot[..16], &cprkit_device::boot::counting_loop());

    let data: Vec<u8> = (0..1024u32).map(|i| (i * 7 % 251) as u8).collect();
    assert_eq!(front.write(8, &data), 0);
    let (status, back) = front.read(8, 1024);
    assert_eq!(status, 0);
    assert_eq!(back, data);

    assert_eq!(front.request(T_FLUSH, 0, &[], 0).1, 0);
    let (slot, status) = front.request(T_GET_ID, 0, &[], 20);
    assert_eq!(status, 0);
    assert_eq!(&front.guest.data(slot, 11), b"cprkit-disk");
    // Beyond the end of the 1 MiB disk: an I/O error, not a crash.
    assert_eq!(front.read(4096, 512).0, 1);
    // An unknown request type.
    assert_eq!(front.request(99, 0, &[], 0).1, 2);

    let entries = fx.ledger();
    let pid = Some(me());
    assert!(
        entries
            .iter()
            .all(|e| e.kind == EntryKind::Connect || e.seq > 0)
    );
    assert!(
        entries
            .windows(2)
            .all(|w| w[0].seq < w[1].seq && w[0].t_ns <= w[1].t_ns)
    );
    let connect = entries
        .iter()
        .find(|e| e.kind == EntryKind::Connect)
        .unwrap();
    assert_eq!((connect.conn, connect.pid), (Some(1), pid));
    let owner = message(&entries, "SET_OWNER");
    assert_eq!(owner.len(), 1);
    assert!(matches!(
        &owner[0].kind,
        EntryKind::Message {
            answer: Answer::Ok,
            ..
        }
    ));
    assert!(entries.iter().any(|e| e.kind
        == EntryKind::Owner {
            change: OwnerChange::Take
        }
        && e.pid == pid));
    assert!(entries.iter().any(|e| e.kind
        == EntryKind::Owner {
            change: OwnerChange::RingStart { ring: 0, base: 0 }
        }));
    let io: Vec<_> = entries
        .iter()
        .filter_map(|e| match &e.kind {
            EntryKind::Io {
                op,
                sector,
                len,
                status,
                ..
            } => {
                assert_eq!((e.conn, e.pid), (Some(1), pid));
                Some((op.as_str(), *sector, *len, *status))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        io,
        vec![
            ("in", 0, 512, 0),
            ("out", 8, 1024, 0),
            ("in", 8, 1024, 0),
            ("flush", 0, 0, 0),
            ("get-id", 0, 20, 0),
            ("in", 4096, 0, 1),
            ("unknown", 0, 0, 2),
        ]
    );
    let state = fx.client().state().unwrap();
    assert_eq!(state.conns.len(), 1);
    let c = &state.conns[0];
    assert!(c.open && c.owner);
    assert_eq!(c.io, 7);
    assert_eq!(c.rings.len(), 1);
    assert!(c.rings[0].running);
}

#[test]
fn config_space_and_queue_num() {
    let fx = Fixture::new(Policy::Exclusive);
    let mut front = Front::connect(&fx.socket);
    front.negotiate(false);
    assert_eq!(front.fe.get_queue_num().unwrap(), 1);
    let (_, cfg) = front
        .fe
        .get_config(0, 57, VhostUserConfigFlags::WRITABLE, &[0u8; 57])
        .unwrap();
    assert_eq!(cfg.len(), 57);
    assert_eq!(u64::from_le_bytes(cfg[0..8].try_into().unwrap()), 2048);
    assert_eq!(u32::from_le_bytes(cfg[20..24].try_into().unwrap()), 512);
    assert_eq!(front.fe.get_features().unwrap(), cprkit_device::FEATURES);
}

#[test]
fn vring_base_hands_the_ring_over_to_another_connection() {
    let fx = Fixture::new(Policy::Shared);
    let mut old = Front::up(&fx.socket, true, 0);
    for i in 0..5u64 {
        assert_eq!(old.write(i, &[i as u8; 512]), 0);
    }
    old.fe.set_vring_enable(0, false).unwrap();
    let base = old.fe.get_vring_base(0).unwrap();
    assert_eq!(base, 5);

    // The new frontend maps the same guest memory (the same memfd) and carries on at 5.
    let mut new = Front::connect(&fx.socket);
    new.guest = Guest {
        file: old.guest.file.try_clone().unwrap(),
        mem: old.guest.mem.clone(),
        avail_idx: old.guest.avail_idx,
        used_seen: old.guest.used_seen,
    };
    let features = new.negotiate(true);
    new.fe.set_owner().unwrap();
    new.start_ring(features, base as u16);
    for i in 0..3u64 {
        let (status, data) = new.read(i, 512);
        assert_eq!(status, 0);
        assert_eq!(data, vec![i as u8; 512]);
    }
    assert_eq!(new.guest.used_idx(), 8);
    assert_eq!(new.fe.get_vring_base(0).unwrap(), 8);

    let entries = fx.ledger();
    let stops: Vec<_> = entries
        .iter()
        .filter_map(|e| match &e.kind {
            EntryKind::Owner {
                change: OwnerChange::RingStop { base, how, .. },
            } => Some((e.conn, *base, how.as_str())),
            _ => None,
        })
        .collect();
    assert_eq!(
        stops,
        vec![
            (Some(1), 5, "SET_VRING_ENABLE 0"),
            (Some(2), 8, "GET_VRING_BASE")
        ]
    );
    assert!(entries.iter().any(|e| e.conn == Some(2)
        && e.kind
            == EntryKind::Owner {
                change: OwnerChange::RingStart { ring: 0, base: 5 }
            }));
    let get_base = message(&entries, "GET_VRING_BASE");
    assert!(
        matches!(&get_base[0].kind, EntryKind::Message { detail, .. } if detail == "ring 0 base 5")
    );
}
