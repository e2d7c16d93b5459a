//! refvmm end to end, with real processes and no kit: a source and a target
//! in a temporary directory, driven over plain QMP lines, migrating directly
//! (no interposer); observed through QMP and /proc.

mod support;

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use rstest::rstest;
use serde_json::{Value, json};
use support::{
    Qmp, Vmm, mapped_ram_inodes, migrate_args, ram_fd_inode, read_counter, wait_counter_above,
    wait_listening,
};

const T: Duration = Duration::from_secs(10);

/// Not a test: the entry point of re-executed refvmm children (see
/// `support`). Does nothing in a normal run.
#[test]
fn refvmm_child() {
    support::child_main();
}

/// A source and a target in a fresh directory; the target listening.
struct Pair {
    dir: tempfile::TempDir,
    src: Vmm,
    tgt: Vmm,
    main: std::path::PathBuf,
    cpr: std::path::PathBuf,
}

impl Pair {
    fn start(src_extra: &[&str], tgt_extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("main.sock");
        let cpr = dir.path().join("cpr.sock");
        let src = Vmm::spawn(dir.path(), "source", src_extra);
        let mut args = vec![
            "--incoming-cpr",
            cpr.to_str().unwrap(),
            "--incoming-main",
            main.to_str().unwrap(),
        ];
        args.extend_from_slice(tgt_extra);
        let tgt = Vmm::spawn(dir.path(), "target", &args);
        wait_listening(&cpr, T);
        Self {
            dir,
            src,
            tgt,
            main,
            cpr,
        }
    }

    fn migrate_args(&self) -> Value {
        migrate_args(&self.main, &self.cpr)
    }
}

/// The events of a completed, correctly ordered source: the VM stops after
/// `setup` and before the fds leave (`active` comes after the cpr-save).
fn assert_source_events(q: &Qmp, stop: bool) {
    let mut want = vec!["MIGRATION:setup"];
    if stop {
        want.push("STOP");
    }
    want.extend([
        "MIGRATION:active",
        "MIGRATION:device",
        "MIGRATION:completed",
    ]);
    assert_eq!(q.event_names(), want);
}

#[test]
fn running_source_hands_over_in_place() {
    let mut p = Pair::start(&[], &[]);
    let mut sq = p.src.qmp();
    assert_eq!(sq.status(), "running");
    wait_counter_above(p.src.pid(), 10, T);
    sq.prepare_cpr();

    let t0 = Instant::now();
    assert_eq!(sq.execute("migrate", p.migrate_args()), Ok(json!({})));
    assert_eq!(sq.wait_migration_end(T), "completed");
    let source_done = t0.elapsed();
    let mut tq = p.tgt.qmp();
    tq.wait_status("running", T);
    eprintln!(
        "handover: migrate to completed {source_done:?}, to target running {:?}",
        t0.elapsed()
    );

    assert_eq!(sq.status(), "postmigrate");
    assert_source_events(&sq, true);
    let info = sq.execute("query-migrate", json!({})).unwrap();
    assert_eq!(info["status"], "completed");
    assert!(
        info["total-time"].is_u64() && info["downtime"].is_u64(),
        "{info}"
    );
    // RESUME reaches the target's client only if it came while inmigrate.
    let tev = tq.event_names();
    assert!(tev.is_empty() || tev == ["RESUME"], "{tev:?}");

    // MEM-1: the same memfd, mapped in place.
    let inode = ram_fd_inode(p.src.pid());
    assert_eq!(mapped_ram_inodes(p.src.pid()), vec![inode]);
    assert_eq!(mapped_ram_inodes(p.tgt.pid()), vec![inode]);
    assert_eq!(ram_fd_inode(p.tgt.pid()), inode);

    // The source is stopped: its last value; the target carries on from it.
    let at_stop = read_counter(p.src.pid());
    let first = read_counter(p.tgt.pid());
    assert!(first >= at_stop, "{first} < {at_stop}");
    let later = wait_counter_above(p.tgt.pid(), first, T);
    assert!(later > at_stop);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(sq.status(), "postmigrate");

    // The listening paths are gone once accepted.
    assert!(!p.cpr.exists() && !p.main.exists());
    assert_eq!(tq.execute("quit", json!({})), Ok(json!({})));
    assert!(p.tgt.wait_exit(T).unwrap().success());
    assert_eq!(sq.execute("quit", json!({})), Ok(json!({})));
    assert!(p.src.wait_exit(T).unwrap().success());
    assert!(!p.dir.path().join("source-qmp.sock").exists());
}

#[test]
fn paused_source_ends_with_a_paused_target() {
    let p = Pair::start(&[], &[]);
    let mut sq = p.src.qmp();
    sq.prepare_cpr();
    wait_counter_above(p.src.pid(), 0, T);
    assert_eq!(sq.execute("stop", json!({})), Ok(json!({})));
    assert_eq!(sq.status(), "paused");
    assert_eq!(sq.event_names(), vec!["STOP"]);
    sq.events.clear();

    sq.execute("migrate", p.migrate_args()).unwrap();
    assert_eq!(sq.wait_migration_end(T), "completed");
    assert_eq!(sq.status(), "postmigrate");
    assert_source_events(&sq, false);

    let mut tq = p.tgt.qmp();
    tq.wait_status("paused", T);
    let c = read_counter(p.tgt.pid());
    assert_eq!(c, read_counter(p.src.pid()));
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(
        read_counter(p.tgt.pid()),
        c,
        "a paused target writes nothing"
    );
    assert_eq!(tq.status(), "paused");

    // And it runs on cont, from where the source stopped.
    assert_eq!(tq.execute("cont", json!({})), Ok(json!({})));
    wait_counter_above(p.tgt.pid(), c, T);
    tq.drain_events(Duration::from_millis(20));
    assert_eq!(tq.event_names(), vec!["RESUME"]);
}

/// Three hops in a row: each target becomes the next source, on the same
/// memfd, and the guest counter never goes back.
#[test]
fn chained_handovers_keep_the_same_ram() {
    let dir = tempfile::tempdir().unwrap();
    let mut current = Vmm::spawn(dir.path(), "vmm0", &[]);
    drop(current.qmp()); // booted: the RAM exists
    let inode = ram_fd_inode(current.pid());
    let mut last = wait_counter_above(current.pid(), 0, T);
    for hop in 1..=3 {
        let main = dir.path().join(format!("main{hop}.sock"));
        let cpr = dir.path().join(format!("cpr{hop}.sock"));
        let next = Vmm::spawn(
            dir.path(),
            &format!("vmm{hop}"),
            &[
                "--incoming-cpr",
                cpr.to_str().unwrap(),
                "--incoming-main",
                main.to_str().unwrap(),
            ],
        );
        wait_listening(&cpr, T);
        let mut q = current.qmp();
        q.prepare_cpr();
        q.execute("migrate", migrate_args(&main, &cpr)).unwrap();
        assert_eq!(q.wait_migration_end(T), "completed", "hop {hop}");
        let at_stop = read_counter(current.pid());
        assert!(at_stop >= last);
        q.execute("quit", json!({})).unwrap();
        assert!(current.wait_exit(T).unwrap().success());
        next.qmp().wait_status("running", T);
        assert_eq!(mapped_ram_inodes(next.pid()), vec![inode], "hop {hop}");
        last = wait_counter_above(next.pid(), at_stop, T);
        current = next;
    }
}

#[rstest]
#[case::no_main(&[], json!({"channels": [
    {"channel-type": "cpr", "addr": {"transport": "socket", "type": "unix", "path": "/nonexistent/cpr"}}]}),
    "missing 'main' migration channel")]
#[case::cpr_not_unix(&[], json!({"channels": [
    {"channel-type": "main", "addr": {"transport": "socket", "type": "unix", "path": "/nonexistent/main"}},
    {"channel-type": "cpr", "addr": {"transport": "socket", "type": "inet", "host": "127.0.0.1", "port": "4444"}}]}),
    "bad cpr channel address; must be unix")]
#[case::private_ram(&["--private-ram"], support::migrate_args("/nonexistent/main".as_ref(), "/nonexistent/cpr".as_ref()),
    "Memory region ram0 is not compatible with CPR. share=on is required for memory-backend objects, and aux-ram-share=on is required.")]
#[case::uri(&[], json!({"uri": "unix:/nonexistent/main"}), "refvmm needs the channels argument")]
fn malformed_migrate_is_refused_and_the_vm_runs_on(
    #[case] extra: &[&str],
    #[case] args: Value,
    #[case] desc: &str,
) {
    let dir = tempfile::tempdir().unwrap();
    let src = Vmm::spawn(dir.path(), "source", extra);
    let mut sq = src.qmp();
    sq.prepare_cpr();
    let err = sq.execute("migrate", args).unwrap_err();
    assert_eq!(
        (err.class.as_str(), err.desc.as_str()),
        ("GenericError", desc)
    );
    assert_eq!(sq.status(), "running");
    assert_eq!(sq.execute("query-migrate", json!({})), Ok(json!({})));
    sq.drain_events(Duration::from_millis(20));
    assert!(sq.events.is_empty(), "{:?}", sq.event_names());
    if extra.is_empty() {
        let c = read_counter(src.pid());
        wait_counter_above(src.pid(), c, T);
    }
}

#[test]
fn normal_mode_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let src = Vmm::spawn(dir.path(), "source", &[]);
    let mut sq = src.qmp();
    let err = sq
        .execute("migrate", migrate_args("/x/m".as_ref(), "/x/c".as_ref()))
        .unwrap_err();
    assert_eq!(err.desc, "refvmm supports only mode cpr-transfer");
    assert_eq!(sq.status(), "running");
}

#[test]
fn nobody_on_the_cpr_path_fails_and_resumes_once() {
    let dir = tempfile::tempdir().unwrap();
    let src = Vmm::spawn(dir.path(), "source", &[]);
    let mut sq = src.qmp();
    sq.prepare_cpr();
    let args = migrate_args(&dir.path().join("main.sock"), &dir.path().join("cpr.sock"));
    assert_eq!(sq.execute("migrate", args), Ok(json!({})));
    assert_eq!(sq.wait_migration_end(T), "failed");
    assert_eq!(sq.status(), "running");
    sq.drain_events(Duration::from_millis(20));
    assert_eq!(
        sq.event_names(),
        vec!["MIGRATION:setup", "STOP", "RESUME", "MIGRATION:failed"]
    );
    let info = sq.execute("query-migrate", json!({})).unwrap();
    assert_eq!(info["status"], "failed");
    assert!(
        info["error-desc"]
            .as_str()
            .unwrap()
            .contains("Failed to connect"),
        "{info}"
    );
    let c = read_counter(src.pid());
    wait_counter_above(src.pid(), c, T);
}

#[test]
fn cancel_with_a_stopped_target_resumes_the_source() {
    let mut p = Pair::start(&[], &[]);
    let mut sq = p.src.qmp();
    sq.prepare_cpr();
    p.tgt.signal(Signal::SIGSTOP);
    assert_eq!(sq.execute("migrate", p.migrate_args()), Ok(json!({})));
    // The source is now stopped, waiting for the target's HUP for ever.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(sq.status(), "finish-migrate");
    let c = read_counter(p.src.pid());
    assert_eq!(
        sq.execute("query-migrate", json!({})).unwrap()["status"],
        "setup"
    );

    let t0 = Instant::now();
    assert_eq!(sq.execute("migrate_cancel", json!({})), Ok(json!({})));
    assert_eq!(sq.wait_migration_end(T), "cancelled");
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    assert_eq!(sq.status(), "running");
    assert_eq!(
        sq.event_names(),
        vec![
            "MIGRATION:setup",
            "STOP",
            "MIGRATION:cancelling",
            "RESUME",
            "MIGRATION:cancelled"
        ]
    );
    wait_counter_above(p.src.pid(), c, T);
    assert_eq!(sq.execute("migrate_cancel", json!({})), Ok(json!({})));

    // The target, let go, finds the source gone and exits without running.
    p.tgt.signal(Signal::SIGCONT);
    let status = p.tgt.wait_exit(T).expect("the target exits");
    assert_eq!(status.code(), Some(1));
    assert_eq!(sq.status(), "running");
}

#[test]
fn monitor_negotiates_and_survives_its_clients() {
    let dir = tempfile::tempdir().unwrap();
    let src = Vmm::spawn(dir.path(), "source", &["-S"]);
    let mut raw = Qmp::connect_raw(&src.qmp, T);
    raw.read_line(T).expect("greeting");
    raw.send_line(r#"{"execute":"query-status","id":1}"#);
    let line = raw.read_line(T).unwrap();
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["error"]["class"], "CommandNotFound", "{line}");
    assert_eq!(v["id"], 1);
    drop(raw);

    let mut q = src.qmp();
    assert_eq!(q.status(), "prelaunch");
    let err = q.execute("no-such-command", json!({})).unwrap_err();
    assert_eq!(err.class, "CommandNotFound");
    assert_eq!(q.execute("stop", json!({})), Ok(json!({})));
    assert_eq!(q.status(), "prelaunch");
    assert_eq!(q.execute("cont", json!({})), Ok(json!({})));
    assert_eq!(q.status(), "running");
    drop(q);
    let mut q = src.qmp();
    assert_eq!(q.execute("stop", json!({})), Ok(json!({})));
    assert_eq!(q.status(), "paused");
    assert_eq!(q.event_names(), vec!["STOP"]);
}

#[test]
fn usage_errors_exit_2_and_mutants_are_listed() {
    let out = support::refvmm_command(&["--list-mutants".into()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    for (name, desc) in refvmm::MUTANTS {
        assert!(stdout.contains(&format!("{name}\t{desc}\n")), "{stdout}");
    }
    let out = support::refvmm_command(&[
        "--qmp".into(),
        "/x".into(),
        "--mutant".into(),
        "nope".into(),
    ])
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("legacy-stop-order"), "{stderr}");
    let out = support::refvmm_command(&["--bogus".into()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
