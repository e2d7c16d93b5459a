//! refvmm as a vhost-user-blk frontend, against the kit's device daemon
//! (cprkit-device, in process, `exclusive` policy), with real refvmm
//! processes: the guest's I/O while the VM runs, the release and the
//! take-over in a handover, and the source taking the device back after a
//! failed one. Everything is observed through the daemon's ledger and QMP.

mod support;

use std::io::Read;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cprkit_device::{Daemon, DeviceClient, EntryKind, LedgerEntry, OwnerChange, Policy};
use nix::sys::signal::Signal;
use serde_json::json;
use support::{Qmp, Vmm, migrate_args, wait_listening};

const T: Duration = Duration::from_secs(10);

/// Not a test: the entry point of re-executed refvmm children.
#[test]
fn refvmm_child() {
    support::child_main();
}

/// The device daemon in this process and its control client.
struct Device {
    _daemon: Daemon,
    sock: PathBuf,
    client: DeviceClient,
}

impl Device {
    fn serve(dir: &Path) -> Self {
        let sock = dir.join("vu.sock");
        let control = dir.join("vu-control.sock");
        let daemon = cprkit_device::serve(&sock, &control, Policy::Exclusive).expect("serve");
        let client = DeviceClient::connect(&control, T).expect("control client");
        Self {
            _daemon: daemon,
            sock,
            client,
        }
    }

    fn sock(&self) -> &str {
        self.sock.to_str().unwrap()
    }

    /// Waits for an I/O completion from `pid` after ledger entry `after`.
    fn wait_io(&mut self, pid: i32, after: u64, timeout: Duration) -> Option<LedgerEntry> {
        self.client.wait_io(pid, after, timeout).expect("wait_io")
    }

    fn last_seq(&mut self) -> u64 {
        self.client.state().expect("state").last_seq
    }

    fn ledger(&mut self) -> Vec<LedgerEntry> {
        self.client.ledger(1).expect("ledger")
    }

    /// Polls the state until `pid` owns the device.
    fn wait_owner(&mut self, pid: i32, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let st = self.client.state().expect("state");
            if st
                .conns
                .iter()
                .any(|c| c.open && c.owner && c.pid == Some(pid))
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{pid} does not own the device: {st:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// The first entry of `pid` after `after` matching `pred`.
fn find(
    ledger: &[LedgerEntry],
    pid: i32,
    after: u64,
    pred: impl Fn(&EntryKind) -> bool,
) -> Option<&LedgerEntry> {
    ledger
        .iter()
        .find(|e| e.seq > after && e.pid == Some(pid) && pred(&e.kind))
}

fn owner(e: &EntryKind) -> Option<&OwnerChange> {
    match e {
        EntryKind::Owner { change } => Some(change),
        _ => None,
    }
}

fn is_take(e: &EntryKind) -> bool {
    matches!(owner(e), Some(OwnerChange::Take))
}

fn ring_start_base(e: &EntryKind) -> Option<u16> {
    match owner(e) {
        Some(OwnerChange::RingStart { ring: 0, base }) => Some(*base),
        _ => None,
    }
}

fn ring_stop_base(e: &EntryKind) -> Option<u16> {
    match owner(e) {
        Some(OwnerChange::RingStop { ring: 0, base, .. }) => Some(*base),
        _ => None,
    }
}

fn is_reset_owner(e: &EntryKind) -> bool {
    matches!(owner(e), Some(OwnerChange::Release { how }) if how == "RESET_OWNER")
}

fn blk_args(dev: &Device) -> Vec<&str> {
    vec!["--vhost-user-blk", dev.sock()]
}

/// A source (with `mutant`, if any) and a target on the device, the target
/// listening on `cpr` and `main`, the source ready for cpr-transfer and its
/// guest's I/O under way: (source, its QMP, target).
fn handover_pair(
    dir: &Path,
    dev: &mut Device,
    mutant: Option<&str>,
    cpr: &Path,
    main: &Path,
) -> (Vmm, Qmp, Vmm) {
    let mut sargs = blk_args(dev);
    if let Some(m) = mutant {
        sargs.extend(["--mutant", m]);
    }
    let src = Vmm::spawn(dir, "source", &sargs);
    let mut targs = vec![
        "--incoming-cpr",
        cpr.to_str().unwrap(),
        "--incoming-main",
        main.to_str().unwrap(),
    ];
    targs.extend(blk_args(dev));
    let tgt = Vmm::spawn(dir, "target", &targs);
    wait_listening(cpr, T);
    let mut sq = src.qmp();
    sq.prepare_cpr();
    dev.wait_io(src.pid(), 0, T).expect("source I/O");
    (src, sq, tgt)
}

#[test]
fn source_io_runs_while_the_vm_runs_and_ceases_on_stop() {
    let dir = tempfile::tempdir().unwrap();
    let mut dev = Device::serve(dir.path());
    let src = Vmm::spawn(dir.path(), "source", &blk_args(&dev));
    let mut q = src.qmp();
    assert_eq!(q.status(), "running");
    let first = dev.wait_io(src.pid(), 0, T).expect("I/O while running");
    assert!(
        matches!(first.kind, EntryKind::Io { status: 0, .. }),
        "{first:?}"
    );

    assert_eq!(q.execute("stop", json!({})), Ok(json!({})));
    // `stop` returns with no request in flight: nothing from the source after.
    let stopped = dev.last_seq();
    assert_eq!(
        dev.wait_io(src.pid(), stopped, Duration::from_millis(300)),
        None
    );

    assert_eq!(q.execute("cont", json!({})), Ok(json!({})));
    let again = dev.wait_io(src.pid(), stopped, T).expect("I/O after cont");
    assert!(matches!(again.kind, EntryKind::Io { status: 0, .. }));
    // Reads of sector 0 (boot signature) and writes both come through.
    // Each next request waited for on the daemon, no polling.
    let mut ops = std::collections::BTreeSet::new();
    let mut last = again.seq;
    for _ in 0..64 {
        let Some(e) = dev.wait_io(src.pid(), last, T) else {
            break;
        };
        if let EntryKind::Io { op, .. } = &e.kind {
            ops.insert(op.clone());
        }
        last = e.seq;
        if ops.len() == 2 {
            break;
        }
    }
    assert_eq!(ops.len(), 2, "{ops:?}");
}

#[test]
fn handover_releases_before_the_target_takes_and_io_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut dev = Device::serve(dir.path());
    let main = dir.path().join("main.sock");
    let cpr = dir.path().join("cpr.sock");
    let (src, mut sq, tgt) = handover_pair(dir.path(), &mut dev, None, &cpr, &main);

    assert_eq!(
        sq.execute("migrate", migrate_args(&main, &cpr)),
        Ok(json!({}))
    );
    assert_eq!(sq.wait_migration_end(T), "completed");
    let mut tq = tgt.qmp();
    tq.wait_status("running", T);
    let after = dev.last_seq();
    dev.wait_io(tgt.pid(), after, T)
        .expect("target I/O after the handover");

    let ledger = dev.ledger();
    let (s, t) = (src.pid(), tgt.pid());
    let take = find(&ledger, t, 0, is_take).expect("target Take");
    let reset = find(&ledger, s, 0, is_reset_owner).expect("source RESET_OWNER");
    let stop = ledger
        .iter()
        .filter(|e| e.pid == Some(s) && e.seq < reset.seq)
        .filter_map(|e| ring_stop_base(&e.kind).map(|b| (e.seq, b)))
        .next_back()
        .expect("source RingStop");
    assert!(stop.0 < reset.seq && reset.seq < take.seq, "{ledger:#?}");
    let start =
        find(&ledger, t, take.seq, |k| ring_start_base(k).is_some()).expect("target RingStart");
    assert_eq!(
        ring_start_base(&start.kind),
        Some(stop.1),
        "base carried over"
    );
    assert!(
        find(&ledger, s, reset.seq, |k| matches!(k, EntryKind::Io { .. })).is_none(),
        "source I/O after its release"
    );
    assert_eq!(sq.status(), "postmigrate");
}

#[test]
fn failed_handover_gives_the_device_back_to_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let mut dev = Device::serve(dir.path());
    let cpr = dir.path().join("cpr.sock");
    let tmain = dir.path().join("main.sock");
    // The source's main channel goes to the test, which holds it while it
    // kills the target (that has taken the device by then), then drops it.
    let fake_main = dir.path().join("fake-main.sock");
    let listener = UnixListener::bind(&fake_main).unwrap();
    let (src, mut sq, mut tgt) = handover_pair(dir.path(), &mut dev, None, &cpr, &tmain);

    assert_eq!(
        sq.execute("migrate", migrate_args(&fake_main, &cpr)),
        Ok(json!({}))
    );
    let (mut conn, _) = listener.accept().unwrap();
    let mut b = [0u8; 1];
    let _ = conn.read(&mut b); // the device state has come: the source waits for loaded
    dev.wait_owner(tgt.pid(), T);
    tgt.signal(Signal::SIGKILL);
    assert!(tgt.wait_exit(T).is_some());
    let killed = dev.last_seq();
    drop(conn);

    assert_eq!(sq.wait_migration_end(T), "failed");
    assert_eq!(sq.status(), "running");
    dev.wait_io(src.pid(), killed, T)
        .expect("source I/O after taking the device back");

    let ledger = dev.ledger();
    let s = src.pid();
    let reset = find(&ledger, s, 0, is_reset_owner).expect("source RESET_OWNER");
    let stop_base = ledger
        .iter()
        .filter(|e| e.pid == Some(s) && e.seq < reset.seq)
        .filter_map(|e| ring_stop_base(&e.kind))
        .next_back()
        .expect("source RingStop");
    let retake = find(&ledger, s, killed, is_take).expect("source Take again");
    let restart = find(&ledger, s, retake.seq, |k| ring_start_base(k).is_some())
        .expect("source RingStart again");
    assert_eq!(ring_start_base(&restart.kind), Some(stop_base));
}

#[test]
fn never_release_owner_makes_the_target_refused_as_busy() {
    let dir = tempfile::tempdir().unwrap();
    let mut dev = Device::serve(dir.path());
    let main = dir.path().join("main.sock");
    let cpr = dir.path().join("cpr.sock");
    let (src, mut sq, mut tgt) = handover_pair(
        dir.path(),
        &mut dev,
        Some("never-release-owner"),
        &cpr,
        &main,
    );

    assert_eq!(
        sq.execute("migrate", migrate_args(&main, &cpr)),
        Ok(json!({}))
    );
    let status = tgt.wait_exit(T).expect("the target exits");
    assert_eq!(status.code(), Some(1));
    let log = std::fs::read_to_string(&tgt.log).unwrap();
    assert!(log.contains("vhost-user-blk: SET_OWNER refused"), "{log}");
    assert_eq!(sq.wait_migration_end(T), "failed");
    assert_eq!(sq.status(), "running");
    let ledger = dev.ledger();
    assert!(find(&ledger, src.pid(), 0, is_reset_owner).is_none());
    assert!(
        ledger.iter().any(|e| e.pid == Some(tgt.pid())
            && matches!(owner(&e.kind), Some(OwnerChange::RefusedBusy { .. }))),
        "{ledger:#?}"
    );
    let after = dev.last_seq();
    dev.wait_io(src.pid(), after, T)
        .expect("source I/O goes on");
}

#[test]
fn io_after_cutover_releases_only_after_the_target_was_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut dev = Device::serve(dir.path());
    let main = dir.path().join("main.sock");
    let cpr = dir.path().join("cpr.sock");
    let (src, mut sq, mut tgt) =
        handover_pair(dir.path(), &mut dev, Some("io-after-cutover"), &cpr, &main);

    assert_eq!(
        sq.execute("migrate", migrate_args(&main, &cpr)),
        Ok(json!({}))
    );
    assert_eq!(tgt.wait_exit(T).expect("the target exits").code(), Some(1));
    assert_eq!(sq.wait_migration_end(T), "failed");
    assert_eq!(sq.status(), "running");
    let ledger = dev.ledger();
    let refused = ledger
        .iter()
        .find(|e| {
            e.pid == Some(tgt.pid())
                && matches!(owner(&e.kind), Some(OwnerChange::RefusedBusy { .. }))
        })
        .expect("the target refused as busy");
    let reset = find(&ledger, src.pid(), 0, is_reset_owner).expect("source RESET_OWNER");
    assert!(refused.seq < reset.seq, "{ledger:#?}");
    // The failure path took the device back: the source's I/O goes on.
    let after = dev.last_seq();
    dev.wait_io(src.pid(), after, T)
        .expect("source I/O goes on");
}
