//! Each mutant of refvmm, next to the correct behaviour it breaks, with real
//! processes; where a fault must be placed exactly, one peer is a scripted
//! one (`support::peers`) speaking the migration wire over real sockets.

mod support;

use std::time::Duration;

use nix::sys::signal::Signal;
use rstest::rstest;
use serde_json::json;
use support::peers::{DroppingTarget, ScriptedSource, state_line};
use support::{
    Vmm, mapped_ram_inodes, migrate_args, ram_fd_inode, read_counter, wait_counter_above,
    wait_listening,
};

const T: Duration = Duration::from_secs(10);
const RAM: u64 = refvmm::DEFAULT_RAM_SIZE;

/// Not a test: the entry point of re-executed refvmm children.
#[test]
fn refvmm_child() {
    support::child_main();
}

fn mutant_args(m: Option<&'static str>) -> Vec<&'static str> {
    m.map(|m| vec!["--mutant", m]).unwrap_or_default()
}

/// A failed transfer (nothing listens on the cpr path): how the source comes back.
#[rstest]
#[case::correct_running(None, false, "running", &["MIGRATION:setup", "STOP", "RESUME", "MIGRATION:failed"])]
#[case::correct_paused(None, true, "paused", &["MIGRATION:setup", "MIGRATION:failed"])]
#[case::no_resume_on_failure(Some("no-resume-on-failure"), false, "finish-migrate", &["MIGRATION:setup", "STOP", "MIGRATION:failed"])]
#[case::double_resume(Some("double-resume"), false, "running", &["MIGRATION:setup", "STOP", "RESUME", "RESUME", "MIGRATION:failed"])]
#[case::resume_when_paused(Some("resume-when-paused"), true, "running", &["MIGRATION:setup", "RESUME", "MIGRATION:failed"])]
#[case::legacy_stop_order(Some("legacy-stop-order"), false, "running", &["MIGRATION:setup", "MIGRATION:failed"])]
fn failure_cleanup(
    #[case] mutant: Option<&'static str>,
    #[case] paused: bool,
    #[case] end: &str,
    #[case] events: &[&str],
) {
    let dir = tempfile::tempdir().unwrap();
    let src = Vmm::spawn(dir.path(), "source", &mutant_args(mutant));
    let mut sq = src.qmp();
    sq.prepare_cpr();
    if paused {
        sq.execute("stop", json!({})).unwrap();
        sq.events.clear();
    }
    let args = migrate_args(&dir.path().join("main.sock"), &dir.path().join("cpr.sock"));
    sq.execute("migrate", args).unwrap();
    assert_eq!(sq.wait_migration_end(T), "failed");
    sq.drain_events(Duration::from_millis(20));
    assert_eq!(sq.status(), end);
    assert_eq!(sq.event_names(), events);
}

/// legacy-stop-order: the fds leave while the VM still runs.
#[test]
fn legacy_stop_order_sends_the_fds_while_running() {
    let dir = tempfile::tempdir().unwrap();
    let (main, cpr) = (dir.path().join("main.sock"), dir.path().join("cpr.sock"));
    let cpr_s = cpr.to_str().unwrap();
    let main_s = main.to_str().unwrap();
    let mut tgt = Vmm::spawn(
        dir.path(),
        "target",
        &["--incoming-cpr", cpr_s, "--incoming-main", main_s],
    );
    wait_listening(&cpr, T);
    tgt.signal(Signal::SIGSTOP);
    let src = Vmm::spawn(dir.path(), "source", &["--mutant", "legacy-stop-order"]);
    let mut sq = src.qmp();
    sq.prepare_cpr();
    sq.execute("migrate", migrate_args(&main, &cpr)).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    // The CPR state and the memfd sit in the target's socket; the source runs on.
    assert_eq!(sq.status(), "running");
    let c = read_counter(src.pid());
    wait_counter_above(src.pid(), c, T);
    sq.execute("migrate_cancel", json!({})).unwrap();
    assert_eq!(sq.wait_migration_end(T), "cancelled");
    assert_eq!(
        sq.event_names(),
        [
            "MIGRATION:setup",
            "MIGRATION:cancelling",
            "MIGRATION:cancelled"
        ]
    );
    tgt.signal(Signal::SIGCONT);
    assert_eq!(tgt.wait_exit(T).unwrap().code(), Some(1));
}

/// The target dies while loading: only false-completion says completed.
#[rstest]
#[case::correct(None, "failed", "running")]
#[case::false_completion(Some("false-completion"), "completed", "postmigrate")]
fn target_dropping_before_loaded(
    #[case] mutant: Option<&'static str>,
    #[case] result: &str,
    #[case] end: &str,
) {
    let dir = tempfile::tempdir().unwrap();
    let mut fake = DroppingTarget::listen(dir.path());
    let src = Vmm::spawn(dir.path(), "source", &mutant_args(mutant));
    let mut sq = src.qmp();
    sq.prepare_cpr();
    sq.execute("migrate", migrate_args(&fake.main, &fake.cpr))
        .unwrap();
    assert_eq!(sq.wait_migration_end(T), result);
    assert_eq!(sq.status(), end);
    let (nfds, state) = fake.join();
    assert_eq!(nfds, 1);
    assert!(state.starts_with("{\"type\":\"state\""), "{state}");
}

/// A target facing a scripted source that stops after a given point.
#[rstest]
#[case::no_go_correct(None, None, false)]
#[case::no_go_split_brain(Some("split-brain-after-cancel"), None, true)]
#[case::corrupt_state(None, Some(b"{\"type\":\"stAte\"".as_slice()), false)]
#[case::state_not_matching_ram(None, Some(state_line(true, 5, RAM).leak() as &[u8]), false)]
fn target_without_go(
    #[case] mutant: Option<&'static str>,
    #[case] state: Option<&[u8]>,
    #[case] runs: bool,
) {
    let dir = tempfile::tempdir().unwrap();
    let (main, cpr) = (dir.path().join("main.sock"), dir.path().join("cpr.sock"));
    let mut args = vec![
        "--incoming-cpr",
        cpr.to_str().unwrap(),
        "--incoming-main",
        main.to_str().unwrap(),
    ];
    args.extend(mutant_args(mutant));
    let mut tgt = Vmm::spawn(dir.path(), "target", &args);
    wait_listening(&cpr, T);
    let r = 1000;
    let mut src = ScriptedSource::cpr_save(&cpr, RAM, r);
    let line = state
        .map(<[u8]>::to_vec)
        .unwrap_or(state_line(true, r, RAM));
    src.send_state(&main, &line);
    if state.is_none() {
        assert_eq!(src.read_line().as_deref(), Some("{\"type\":\"loaded\"}\n"));
    } else {
        assert_eq!(src.read_line(), None, "no loaded for a bad state");
    }
    // The source goes away without go.
    drop(src.main.take());
    src.cpr.shutdown(std::net::Shutdown::Both).unwrap();
    if runs {
        wait_counter_above(tgt.pid(), r, T);
        let c = src.counter();
        std::thread::sleep(Duration::from_millis(20));
        assert!(src.counter() > c, "the target runs on the source's RAM");
        assert_eq!(tgt.qmp().status(), "running");
    } else {
        assert_eq!(tgt.wait_exit(T).unwrap().code(), Some(1));
        assert_eq!(src.counter(), r, "the target never ran");
    }
}

/// copy-ram: the target runs on a memfd of its own.
#[test]
fn copy_ram_maps_another_memfd() {
    let dir = tempfile::tempdir().unwrap();
    let (main, cpr) = (dir.path().join("main.sock"), dir.path().join("cpr.sock"));
    let tgt = Vmm::spawn(
        dir.path(),
        "target",
        &[
            "--incoming-cpr",
            cpr.to_str().unwrap(),
            "--incoming-main",
            main.to_str().unwrap(),
            "--mutant",
            "copy-ram",
        ],
    );
    wait_listening(&cpr, T);
    let src = Vmm::spawn(dir.path(), "source", &[]);
    let mut sq = src.qmp();
    sq.prepare_cpr();
    sq.execute("migrate", migrate_args(&main, &cpr)).unwrap();
    assert_eq!(sq.wait_migration_end(T), "completed");
    tgt.qmp().wait_status("running", T);
    let (s, t) = (ram_fd_inode(src.pid()), ram_fd_inode(tgt.pid()));
    assert_ne!(s, t);
    assert_eq!(mapped_ram_inodes(tgt.pid()), vec![t]);
    let frozen = read_counter(src.pid());
    wait_counter_above(tgt.pid(), frozen, T);
    assert_eq!(read_counter(src.pid()), frozen, "writes go to the copy");
}

/// target-ignores-paused: a paused source gives a running target.
#[rstest]
#[case::correct(None, "paused")]
#[case::target_ignores_paused(Some("target-ignores-paused"), "running")]
fn paused_source_handover(#[case] mutant: Option<&'static str>, #[case] end: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (main, cpr) = (dir.path().join("main.sock"), dir.path().join("cpr.sock"));
    let mut args = vec![
        "--incoming-cpr",
        cpr.to_str().unwrap(),
        "--incoming-main",
        main.to_str().unwrap(),
    ];
    args.extend(mutant_args(mutant));
    let tgt = Vmm::spawn(dir.path(), "target", &args);
    wait_listening(&cpr, T);
    let src = Vmm::spawn(dir.path(), "source", &["-S"]);
    let mut sq = src.qmp();
    sq.prepare_cpr();
    sq.execute("migrate", migrate_args(&main, &cpr)).unwrap();
    assert_eq!(sq.wait_migration_end(T), "completed");
    let mut tq = tgt.qmp();
    tq.wait_status(end, T);
}
