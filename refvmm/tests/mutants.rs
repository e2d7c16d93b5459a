//! Each mutant of refvmm, next to the correct behaviour it breaks, with real
//! processes; where a fault must be placed exactly, one peer is a scripted
//! one (`support::peers`) speaking the migration wire over real sockets.

mod support;

use std::time::Duration;

use nix::sys::signal::Signal;
use rstest::rstest;
use serde_json::json;
use support::peers::{DroppingTarget, ScriptedSource, SilentTarget, state_line};
use support::{
    Qmp, Vmm, mapped_ram_inodes, migrate_args, ram_fd_inode, read_counter, wait_counter_above,
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
#[case::frozen_after_refusal(Some("frozen-after-refusal"), false, "finish-migrate", &["MIGRATION:setup", "STOP", "MIGRATION:failed"])]
#[case::frozen_after_refusal_paused(Some("frozen-after-refusal"), true, "finish-migrate", &["MIGRATION:setup", "MIGRATION:failed"])]
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

/// target-ignores-paused: a source that is not running (here one that never
/// ran, `-S`) gives a running target; a correct one ends `prelaunch`, as the
/// source was (QEMU's target takes the source's runstate).
#[rstest]
#[case::correct(None, "prelaunch")]
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

/// A `migrate` request with a non-unix cpr address (refused by every refvmm).
fn bad_migrate_args(main: &std::path::Path) -> serde_json::Value {
    json!({"channels": [
        {"channel-type": "main", "addr": {"transport": "socket", "type": "unix", "path": main}},
        {"channel-type": "cpr", "addr": {"transport": "socket", "type": "inet", "host": "h", "port": "1"}},
    ]})
}

/// Sends `migrate` without waiting for its reply.
fn send_migrate(q: &mut Qmp, args: serde_json::Value) {
    q.send_line(&json!({"execute": "migrate", "arguments": args, "id": "m"}).to_string());
}

/// Asserts the guest's counter moves: the VM runs.
fn assert_guest_runs(pid: i32) {
    let c = read_counter(pid);
    wait_counter_above(pid, c, T);
}

/// Asserts the guest's counter stays still for a while: the VM is stopped.
fn assert_guest_stopped(pid: i32) {
    let c = read_counter(pid);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(read_counter(pid), c, "the guest runs");
}

/// A refused request: the correct source (and no-resume-on-failure, whose
/// bug is on the transfer's failure path only) stays as it was;
/// frozen-after-refusal stops the VM and stays stopped.
#[rstest]
#[case::correct(None, false, false, "running", &[])]
#[case::correct_paused(None, false, true, "paused", &[])]
#[case::no_resume_on_failure(Some("no-resume-on-failure"), false, false, "running", &[])]
#[case::frozen_after_refusal(Some("frozen-after-refusal"), false, false, "finish-migrate", &["STOP"])]
#[case::frozen_after_refusal_paused(Some("frozen-after-refusal"), false, true, "finish-migrate", &[])]
#[case::frozen_after_refusal_private_ram(Some("frozen-after-refusal"), true, false, "finish-migrate", &["STOP"])]
fn refused_request(
    #[case] mutant: Option<&'static str>,
    #[case] private_ram: bool,
    #[case] paused: bool,
    #[case] end: &str,
    #[case] events: &[&str],
) {
    let dir = tempfile::tempdir().unwrap();
    let target = SilentTarget::listen(dir.path());
    let mut args = mutant_args(mutant);
    if private_ram {
        args.push("--private-ram");
    }
    let src = Vmm::spawn(dir.path(), "source", &args);
    let mut sq = src.qmp();
    sq.prepare_cpr();
    if paused {
        sq.execute("stop", json!({})).unwrap();
        sq.events.clear();
    }
    let (request, desc) = if private_ram {
        (
            migrate_args(&target.main, &target.cpr),
            "Memory region ram0 is not compatible with CPR",
        )
    } else {
        (
            bad_migrate_args(&target.main),
            "bad cpr channel address; must be unix",
        )
    };
    let err = sq.execute("migrate", request).unwrap_err();
    assert!(err.desc.starts_with(desc), "{}", err.desc);
    sq.drain_events(Duration::from_millis(20));
    assert_eq!(sq.status(), end);
    assert_eq!(sq.event_names(), events);
    assert_eq!(sq.execute("query-migrate", json!({})).unwrap(), json!({}));
    assert!(target.nobody_connected());
}

/// A cancel while the source waits for the target's readiness (a target
/// that never accepts): the correct source resumes, frozen-after-refusal
/// stays stopped.
#[rstest]
#[case::correct(None, "running", &["MIGRATION:setup", "STOP", "MIGRATION:cancelling", "RESUME", "MIGRATION:cancelled"])]
#[case::frozen_after_refusal(Some("frozen-after-refusal"), "finish-migrate", &["MIGRATION:setup", "STOP", "MIGRATION:cancelling", "MIGRATION:cancelled"])]
fn cancel_cleanup(
    #[case] mutant: Option<&'static str>,
    #[case] end: &str,
    #[case] events: &[&str],
) {
    let dir = tempfile::tempdir().unwrap();
    let target = SilentTarget::listen(dir.path());
    let src = Vmm::spawn(dir.path(), "source", &mutant_args(mutant));
    let mut sq = src.qmp();
    sq.prepare_cpr();
    sq.execute("migrate", migrate_args(&target.main, &target.cpr))
        .unwrap();
    sq.execute("migrate_cancel", json!({})).unwrap();
    assert_eq!(sq.wait_migration_end(T), "cancelled");
    sq.drain_events(Duration::from_millis(20));
    assert_eq!(sq.status(), end);
    assert_eq!(sq.event_names(), events);
}

/// refuse-migrate: a valid migrate gets an error and changes nothing; a
/// malformed one is refused as by the correct source.
#[test]
fn refuse_migrate_refuses_and_does_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let target = SilentTarget::listen(dir.path());
    let src = Vmm::spawn(dir.path(), "source", &["--mutant", "refuse-migrate"]);
    let mut sq = src.qmp();
    sq.prepare_cpr();
    let err = sq
        .execute("migrate", bad_migrate_args(&target.main))
        .unwrap_err();
    assert_eq!(err.desc, "bad cpr channel address; must be unix");
    let err = sq
        .execute("migrate", migrate_args(&target.main, &target.cpr))
        .unwrap_err();
    assert_eq!(err.class, "GenericError");
    assert_eq!(err.desc, "cpr-transfer is not supported");
    sq.drain_events(Duration::from_millis(20));
    assert_eq!(sq.event_names(), Vec::<String>::new());
    assert_eq!(sq.status(), "running");
    assert_guest_runs(src.pid());
    assert_eq!(sq.execute("query-migrate", json!({})).unwrap(), json!({}));
    assert!(target.nobody_connected());
}

/// crash-on-migrate: a malformed migrate is refused, a valid one kills the
/// source by SIGABRT before it connects anywhere.
#[test]
fn crash_on_migrate_dies_by_sigabrt() {
    use std::os::unix::process::ExitStatusExt;

    let dir = tempfile::tempdir().unwrap();
    let target = SilentTarget::listen(dir.path());
    let mut src = Vmm::spawn(dir.path(), "source", &["--mutant", "crash-on-migrate"]);
    let mut sq = src.qmp();
    sq.prepare_cpr();
    let err = sq
        .execute("migrate", bad_migrate_args(&target.main))
        .unwrap_err();
    assert_eq!(err.desc, "bad cpr channel address; must be unix");
    assert_eq!(sq.status(), "running");
    send_migrate(&mut sq, migrate_args(&target.main, &target.cpr));
    let status = src.wait_exit(T).expect("the source died");
    assert_eq!(status.signal(), Some(Signal::SIGABRT as i32), "{status:?}");
    assert!(target.nobody_connected());
}

/// hang-on-migrate: no reply to the migrate, nor to a later command, nor a
/// greeting to a new client; the guest runs on and nothing is connected.
#[test]
fn hang_on_migrate_answers_nothing_more() {
    const SILENCE: Duration = Duration::from_millis(500);
    let dir = tempfile::tempdir().unwrap();
    let target = SilentTarget::listen(dir.path());
    let mut src = Vmm::spawn(dir.path(), "source", &["--mutant", "hang-on-migrate"]);
    let mut sq = src.qmp();
    sq.prepare_cpr();
    send_migrate(&mut sq, migrate_args(&target.main, &target.cpr));
    assert_eq!(sq.read_line(SILENCE), None, "a reply to migrate");
    sq.send_line(r#"{"execute": "query-status", "id": "s"}"#);
    assert_eq!(sq.read_line(SILENCE), None, "a reply to query-status");
    let mut other = Qmp::connect_raw(&src.qmp, T);
    assert_eq!(other.read_line(SILENCE), None, "a greeting");
    assert_guest_runs(src.pid());
    assert_eq!(src.wait_exit(Duration::ZERO), None, "the source exited");
    assert!(target.nobody_connected());
}

/// stall-in-setup: migrate is accepted and the VM stopped, then the source
/// stays in `setup` and connects nothing; a cancel brings it back to its
/// prior runstate.
#[rstest]
#[case::running(false, "running", &["MIGRATION:setup", "STOP", "MIGRATION:cancelling", "RESUME", "MIGRATION:cancelled"])]
#[case::paused(true, "paused", &["MIGRATION:setup", "MIGRATION:cancelling", "MIGRATION:cancelled"])]
fn stall_in_setup_until_cancel(#[case] paused: bool, #[case] end: &str, #[case] events: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let target = SilentTarget::listen(dir.path());
    let src = Vmm::spawn(dir.path(), "source", &["--mutant", "stall-in-setup"]);
    let mut sq = src.qmp();
    sq.prepare_cpr();
    if paused {
        sq.execute("stop", json!({})).unwrap();
        sq.events.clear();
    }
    sq.execute("migrate", migrate_args(&target.main, &target.cpr))
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        sq.execute("query-migrate", json!({})).unwrap(),
        json!({"status": "setup"})
    );
    assert_eq!(sq.status(), "finish-migrate");
    assert_guest_stopped(src.pid());
    assert!(target.nobody_connected());
    sq.execute("migrate_cancel", json!({})).unwrap();
    assert_eq!(sq.wait_migration_end(T), "cancelled");
    sq.drain_events(Duration::from_millis(20));
    assert_eq!(sq.status(), end);
    assert_eq!(sq.event_names(), events);
    if !paused {
        assert_guest_runs(src.pid());
    }
}

/// exit-after-cut-over: the source exits 0 once the memfd is sent; the
/// target receives it, gets no main stream, never loads and exits 1.
#[test]
fn exit_after_cut_over_exits_0_and_the_target_never_loads() {
    let dir = tempfile::tempdir().unwrap();
    let (main, cpr) = (dir.path().join("main.sock"), dir.path().join("cpr.sock"));
    let mut tgt = Vmm::spawn(
        dir.path(),
        "target",
        &[
            "--incoming-cpr",
            cpr.to_str().unwrap(),
            "--incoming-main",
            main.to_str().unwrap(),
        ],
    );
    wait_listening(&cpr, T);
    let mut src = Vmm::spawn(dir.path(), "source", &["--mutant", "exit-after-cut-over"]);
    let mut sq = src.qmp();
    sq.prepare_cpr();
    sq.execute("migrate", migrate_args(&main, &cpr)).unwrap();
    assert_eq!(src.wait_exit(T).expect("the source exited").code(), Some(0));
    assert_eq!(tgt.wait_exit(T).expect("the target exited").code(), Some(1));
    let log = std::fs::read_to_string(&tgt.log).unwrap();
    assert!(log.contains("CPR state received with 1 fd(s)"), "{log}");
    assert!(!log.contains("device state loaded"), "{log}");
}

/// complete-without-transfer: `completed` and `postmigrate`, with nothing
/// ever connected to the target.
#[test]
fn complete_without_transfer_completes_having_sent_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let target = SilentTarget::listen(dir.path());
    let src = Vmm::spawn(
        dir.path(),
        "source",
        &["--mutant", "complete-without-transfer"],
    );
    let mut sq = src.qmp();
    sq.prepare_cpr();
    sq.execute("migrate", migrate_args(&target.main, &target.cpr))
        .unwrap();
    assert_eq!(sq.wait_migration_end(T), "completed");
    sq.drain_events(Duration::from_millis(20));
    assert_eq!(sq.status(), "postmigrate");
    assert_eq!(
        sq.event_names(),
        ["MIGRATION:setup", "STOP", "MIGRATION:completed"]
    );
    assert!(target.nobody_connected());
}
