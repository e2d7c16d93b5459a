use super::*;
use cprkit_harness::adapter::VmEvent;
use cprkit_test_support::write_script;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// A scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "cprkit-exec-unit-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }

    /// A `sh` adapter program; requests are numbered from 1 (`hello`).
    fn program(&self, name: &str, body: &str) -> ExecAdapter {
        let p = self.0.join(name);
        write_script(&p, &format!("#!/bin/sh\n{body}\n"));
        ExecAdapter::new(p.to_str().unwrap())
            .unwrap()
            .with_request_timeout(Duration::from_secs(2))
    }

    fn spec(&self) -> LaunchSpec {
        LaunchSpec {
            role: Role::Source,
            dir: self.0.clone(),
            monitor: self.0.join("qmp.sock"),
            incoming: None,
            shared_ram: true,
            vhost_user_blk: None,
            setup: Default::default(),
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const HELLO: &str = r#"read l; echo '{"id":1,"ok":true,"protocol":"cprkit-exec/1"}'"#;

fn connect(a: &ExecAdapter, s: &Scratch) -> (Box<dyn Monitor>, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    let m = a
        .connect(
            &s.spec(),
            Instant::now() + Duration::from_secs(2),
            Box::new(move |ev: VmEvent| sink.lock().unwrap().push(ev.label())),
        )
        .unwrap();
    (m, seen)
}

#[test]
fn replies_events_and_refusals() {
    let s = Scratch::new();
    let a = s.program(
        "good",
        &format!(
            r#"{HELLO}
read l; echo '{{"id":2,"ok":true}}'
read l; echo '{{"event":"STOP"}}'; echo '{{"event":"MIGRATION","status":"setup"}}'
echo '{{"id":3,"ok":true,"runstate":"paused"}}'
read l; echo '{{"id":4,"ok":false,"error":{{"kind":"refused","message":"no way","command":"migrate"}}}}'
read l; echo '{{"id":5,"ok":true,"status":"failed","error":"it broke"}}'
read l; echo '{{"id":6,"ok":false,"error":{{"kind":"monitor","message":"lost it"}}}}'
cat >/dev/null"#
        ),
    );
    assert_eq!(a.name(), format!("exec:{}", a.program().display()));
    assert_eq!(a.snapshot_dir(), "exec-good");
    let (mut m, seen) = connect(&a, &s);
    assert_eq!(m.runstate().unwrap(), "paused");
    assert_eq!(*seen.lock().unwrap(), ["STOP", "MIGRATION setup"]);
    let req = MigrateRequest {
        main: "/m".into(),
        cpr: "/c".into(),
        malformed: None,
    };
    match m.migrate(&req) {
        Err(AdapterError::Refused { command, desc }) => {
            assert_eq!((command.as_str(), desc.as_str()), ("migrate", "no way"));
        }
        other => panic!("{other:?}"),
    }
    let info = m.migration().unwrap();
    assert_eq!(
        (info.status.as_str(), info.error.as_deref()),
        ("failed", Some("it broke"))
    );
    match m.stop() {
        Err(AdapterError::Monitor(e)) => assert!(e.contains("lost it"), "{e}"),
        other => panic!("{other:?}"),
    }
    assert!(std::fs::read_dir(&s.0).unwrap().count() >= 1);
}

#[test]
fn an_exit_mid_session_fails_at_once_naming_the_program() {
    let s = Scratch::new();
    let a = s.program(
        "quitter",
        &format!(
            r#"{HELLO}
read l; echo '{{"id":2,"ok":true}}'
read l; echo 'bye now' >&2; exit 7"#
        ),
    );
    let (mut m, _) = connect(&a, &s);
    let t = Instant::now();
    let e = m.runstate().unwrap_err().to_string();
    assert!(e.starts_with("monitor: exec adapter"), "{e}");
    assert!(
        e.contains("/quitter (monitor session for the source"),
        "{e}"
    );
    assert!(
        e.contains("exited (status 7) before replying to runstate"),
        "{e}"
    );
    assert!(e.contains("its stderr ends with: bye now"), "{e}");
    let e2 = m.cont().unwrap_err().to_string();
    assert!(
        e2.contains("exited (status 7)") && e2.contains("cont not sent"),
        "{e2}"
    );
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}

#[test]
fn garbage_and_silence_end_the_session() {
    let s = Scratch::new();
    let a = s.program(
        "garbage",
        &format!(
            r#"{HELLO}
read l; echo '{{"id":2,"ok":true}}'
read l; echo 'Traceback (most recent call last):'; sleep 30"#
        ),
    );
    let (mut m, _) = connect(&a, &s);
    let e = m.stop().unwrap_err().to_string();
    assert!(e.contains("printed a line that is not JSON"), "{e}");
    assert!(e.contains("`Traceback (most recent call last):`"), "{e}");

    let a = s.program(
        "silent",
        &format!(
            r#"{HELLO}
read l; echo '{{"id":2,"ok":true}}'
sleep 30"#
        ),
    );
    let (mut m, _) = connect(&a, &s);
    let t = Instant::now();
    let e = m.runstate().unwrap_err().to_string();
    assert!(e.contains("did not reply to runstate within 2 s"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(3));
    // Later calls fail at once.
    let t = Instant::now();
    assert!(m.runstate().is_err());
    assert!(t.elapsed() < Duration::from_millis(100));
}

#[test]
fn hello_checks_the_version_and_launch_errors_are_environment_errors() {
    let s = Scratch::new();
    let a = s.program(
        "v3",
        r#"read l; echo '{"id":1,"ok":true,"protocol":"cprkit-exec/3"}'; cat >/dev/null"#,
    );
    match a.command(&s.spec()) {
        Err(AdapterError::Environment(e)) => {
            assert!(
                e.contains(
                    "speaks protocol cprkit-exec/3; this kit accepts cprkit-exec/1, cprkit-exec/2"
                ),
                "{e}"
            );
        }
        other => panic!("{other:?}"),
    }
    let a = s.program(
        "nocmd",
        &format!(
            r#"{HELLO}
read l; echo '{{"id":2,"ok":false,"error":{{"kind":"environment","message":"no VMM here"}}}}'"#
        ),
    );
    match a.command(&s.spec()) {
        Err(AdapterError::Environment(e)) => {
            assert!(e.ends_with("command: no VMM here"), "{e}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn command_and_probe() {
    let s = Scratch::new();
    let a = s.program(
        "launcher",
        &format!(
            r#"{HELLO}
read l; echo '{{"id":2,"ok":true,"argv":["/bin/echo","a b"],"env":{{"X":"1"}}}}'
read l; echo '{{"id":3,"ok":true,"ram_memfd_name":"ram","counter_offset":4096,"counter_width":4,"ring":{{"offset":8192,"entries":256,"check":6510615555426900570}}}}'"#
        ),
    );
    let cmd = a.command(&s.spec()).unwrap();
    assert_eq!(cmd.get_program(), "/bin/echo");
    assert_eq!(cmd.get_args().collect::<Vec<_>>(), ["a b"]);
    assert_eq!(a.guest_probe().counter_width, 4);
    assert_eq!(a.guest_probe().ring.unwrap().check, 0x5A5A_5A5A_5A5A_5A5A);
}

#[test]
fn programs_are_found_or_named() {
    assert!(ExecAdapter::new("sh").unwrap().program().is_absolute());
    let e = ExecAdapter::new("./no/such/adapter")
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("exec adapter `./no/such/adapter`"), "{e}");
    let e = ExecAdapter::new("no-such-adapter-anywhere")
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("no executable of that name on PATH"), "{e}");
}

/// Every (fault, step) point `shape` plans, as `fault@step`.
fn planned(a: &ExecAdapter) -> Vec<String> {
    use cprkit_harness::faults::Fault;
    let shape = a.handover_shape();
    Fault::all()
        .into_iter()
        .flat_map(|f| f.steps().iter().map(move |s| (f, *s)))
        .filter(|(f, s)| a.has_step(*s, &[]) && shape.plans(*f, *s))
        .map(|(f, s)| format!("{f}@{s}"))
        .collect()
}

#[test]
fn a_v1_program_is_offered_both_versions_and_keeps_qemus_shape() {
    let s = Scratch::new();
    let a = s.program(
        "v1",
        r#"read l; echo "$l" >>"$(dirname "$0")/seen"
echo '{"id":1,"ok":true,"protocol":"cprkit-exec/1"}'
read l; echo '{"id":2,"ok":true}'
cat >/dev/null"#,
    );
    assert_eq!(a.handover_shape(), HandoverShape::CPR_TRANSFER);
    assert!(Step::ALL.iter().all(|st| a.has_step(*st, &[])));
    assert!(planned(&a).iter().any(|p| p.starts_with("cancel@")));
    let (mut m, _) = connect(&a, &s);
    let incoming = Incoming {
        main: "/m".into(),
        cpr: "/c".into(),
    };
    // The kit refuses it itself: the program is never sent a request it does not know.
    match m.receive(&incoming) {
        Err(AdapterError::Refused { command, .. }) => assert_eq!(command, "receive"),
        other => panic!("{other:?}"),
    }
    let seen = std::fs::read_to_string(s.0.join("seen")).unwrap();
    assert!(
        seen.contains(r#""protocol":"cprkit-exec/1""#)
            && seen.contains(r#""accepts":["cprkit-exec/1","cprkit-exec/2"]"#),
        "{seen}"
    );
    assert!(!seen.contains("receive"), "{seen}");
}

#[test]
fn a_v2_programs_shape_and_steps_are_read() {
    let s = Scratch::new();
    let a = s.program(
        "v2",
        r#"read l; echo '{"id":1,"ok":true,"protocol":"cprkit-exec/2","version":"v9","shape":{"channels":"one","cancel":false,"source_end":"exit-0","outcome":"events"},"steps":["target-listen","source-stop","cpr-save","target-init","source-finish","cleanup"]}'
cat >/dev/null"#,
    );
    // Asked before any trial ran (as the planner does), in a session of its own.
    let shape = a.handover_shape();
    assert_eq!(
        shape,
        HandoverShape {
            channels: Channels::One,
            receive: Receive::Listening,
            cancel: false,
            source_end: SourceEnd::Exit0,
            outcome: Outcome::Events,
        }
    );
    assert_eq!(a.version(), "v9");
    assert!(!a.has_step(Step::ReleaseOwner, &[]));
    assert!(a.has_step(Step::CprSave, &[]));
    let planned = planned(&a);
    assert!(!planned.is_empty());
    for p in &planned {
        assert!(
            !p.starts_with("cancel@")
                && !p.starts_with("hang-target@")
                && !p.ends_with("@main-stream")
                && !p.ends_with("@target-resume")
                && !p.ends_with("@release-owner"),
            "{p} is planned: {planned:?}"
        );
    }
}

#[test]
fn a_bad_shape_value_is_an_error_naming_the_field() {
    let s = Scratch::new();
    let a = s.program(
        "badshape",
        r#"read l; echo '{"id":1,"ok":true,"protocol":"cprkit-exec/2","shape":{"channels":"three"}}'
cat >/dev/null"#,
    );
    match a.command(&s.spec()) {
        Err(AdapterError::Environment(e)) => assert!(
            e.contains(
                r#"bad reply to hello: `shape.channels` is "three", not one of "cpr-and-main", "one""#
            ),
            "{e}"
        ),
        other => panic!("{other:?}"),
    }
    // The planner still gets a shape (QEMU's), and each trial fails on the hello.
    assert_eq!(a.handover_shape(), HandoverShape::CPR_TRANSFER);
    let a = s.program(
        "badstep",
        r#"read l; echo '{"id":1,"ok":true,"protocol":"cprkit-exec/2","shape":{"cancel":"no"},"steps":["warp"]}'
cat >/dev/null"#,
    );
    let e = a.command(&s.spec()).unwrap_err().to_string();
    assert!(
        e.contains("`shape.cancel` is \"no\", not true or false"),
        "{e}"
    );
}

#[test]
fn a_v2_target_receiving_on_request_is_sent_receive() {
    let s = Scratch::new();
    let a = s.program(
        "receiver",
        r#"read l; echo '{"id":1,"ok":true,"protocol":"cprkit-exec/2","shape":{"channels":"one","receive":"monitor-request"}}'
read l; echo '{"id":2,"ok":true}'
read l; echo "$l" >>"$(dirname "$0")/seen"; echo '{"id":3,"ok":true}'
cat >/dev/null"#,
    );
    let (mut m, _) = connect(&a, &s);
    assert_eq!(a.handover_shape().receive, Receive::MonitorRequest);
    let incoming = Incoming {
        main: s.0.join("main.sock"),
        cpr: s.0.join("cpr.sock"),
    };
    m.receive(&incoming).unwrap();
    let seen = std::fs::read_to_string(s.0.join("seen")).unwrap();
    let req: Value = serde_json::from_str(seen.trim()).unwrap();
    assert_eq!(req["request"], "receive");
    assert_eq!(req["id"], 3);
    assert_eq!(req["cpr"], s.0.join("cpr.sock").to_str().unwrap());
    assert_eq!(req["main"], s.0.join("main.sock").to_str().unwrap());
}
