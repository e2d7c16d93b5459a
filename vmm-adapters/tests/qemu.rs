//! The QEMU adapter against the real QEMU, where one is installed (10.0 or
//! newer): the firmware boots under TCG and its counter rises in the RAM memfd;
//! a bare cpr-transfer handover reaches a running target; private RAM is
//! refused for CPR. Each test is skipped, with the reason printed, when
//! `qemu-system-x86_64` is missing or too old; under CI (`CI=true`) that is a
//! failure instead.

use std::fs::File;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use cprkit_adapters::{Qemu, VmmError};
use cprkit_harness::adapter::{Adapter, AdapterError, Incoming, LaunchSpec, MigrateRequest, Role};
use cprkit_harness::guestmem::GuestRam;
use cprkit_harness::unixnet;

/// The installed QEMU, or `None` (with the reason printed) to skip. Under CI
/// (`CI=true`) QEMU is required: its absence fails the test.
fn qemu(test: &str) -> Option<Qemu> {
    match Qemu::new(None) {
        Ok(q) => Some(q),
        Err(VmmError::Environment(why)) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{test}: QEMU is required under CI: {why}")
        }
        Err(VmmError::Environment(why)) => {
            eprintln!("SKIPPED {test}: {why}");
            None
        }
        Err(e) => panic!("{e}"),
    }
}

/// A QEMU process, killed and reaped when dropped.
struct Vm(Child);

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Vm {
    fn pid(&self) -> i32 {
        self.0.id() as i32
    }
}

fn spawn(q: &Qemu, spec: &LaunchSpec) -> Vm {
    let log = File::create(spec.dir.join(format!("{}.log", spec.role.name()))).unwrap();
    let child = q
        .command(spec)
        .unwrap()
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    Vm(child)
}

fn spec(dir: &Path, role: Role, shared_ram: bool) -> LaunchSpec {
    LaunchSpec {
        role,
        dir: dir.to_path_buf(),
        monitor: dir.join(match role {
            Role::Source => "s-qmp.sock",
            Role::Target => "t-qmp.sock",
        }),
        incoming: (role == Role::Target).then(|| Incoming {
            main: dir.join("t-main.sock"),
            cpr: dir.join("t-cpr.sock"),
        }),
        shared_ram,
        vhost_user_blk: None,
        setup: Default::default(),
    }
}

fn log(dir: &Path, role: Role) -> String {
    std::fs::read_to_string(dir.join(format!("{}.log", role.name()))).unwrap_or_default()
}

fn open_ram(q: &Qemu, vm: &Vm) -> GuestRam {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match GuestRam::open(vm.pid(), &q.guest_probe()) {
            Ok(r) => return r,
            Err(e) if Instant::now() >= deadline => panic!("guest RAM: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

#[test]
fn the_firmware_counts_in_the_ram_memfd() {
    let Some(q) = qemu("the_firmware_counts_in_the_ram_memfd") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let s = spec(dir.path(), Role::Source, true);
    let vm = spawn(&q, &s);
    let ram = open_ram(&q, &vm);
    let deadline = Instant::now() + Duration::from_secs(10);
    let first = loop {
        let c = ram.counter().unwrap();
        if c != 0 {
            break c;
        }
        assert!(
            Instant::now() < deadline,
            "the counter never moved; log: {}",
            log(dir.path(), Role::Source)
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    std::thread::sleep(Duration::from_millis(100));
    let later = ram.counter().unwrap();
    assert!(later > first, "{first} then {later}");
    assert!(later < u64::from(u32::MAX), "a 32-bit counter");
    eprintln!(
        "counter {first} -> {later} in 100 ms ({} a second)",
        (later - first) * 10
    );
}

#[test]
fn a_bare_handover_reaches_a_running_target() {
    let Some(q) = qemu("a_bare_handover_reaches_a_running_target") else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let t = cprkit_harness::bare::handover(&q, root.path()).unwrap();
    eprintln!(
        "whole {:?}, migrate to target running {:?}",
        t.whole, t.handover
    );
    assert!(t.handover < Duration::from_secs(5));
}

#[test]
fn private_ram_is_refused_for_cpr() {
    let Some(q) = qemu("private_ram_is_refused_for_cpr") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ts = spec(dir.path(), Role::Target, true);
    let target = spawn(&q, &ts);
    let inc = ts.incoming.clone().unwrap();
    assert!(
        unixnet::wait_listening(&inc.cpr, Instant::now() + Duration::from_secs(10), || {
            false
        }),
        "target log: {}",
        log(dir.path(), Role::Target)
    );
    let ss = spec(dir.path(), Role::Source, false);
    let mut source = spawn(&q, &ss);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut mon = q.connect(&ss, deadline, Box::new(|_| {})).unwrap();
    mon.prepare_cpr(&[]).unwrap();
    let err = mon
        .migrate(&MigrateRequest {
            main: inc.main.clone(),
            cpr: inc.cpr.clone(),
            malformed: None,
        })
        .unwrap_err();
    match err {
        AdapterError::Refused { command, desc } => {
            assert_eq!(command, "migrate");
            assert!(
                desc.starts_with("Memory region ram0 is not compatible with CPR"),
                "{desc}"
            );
        }
        e => panic!("not a refusal: {e}"),
    }
    assert_eq!(mon.runstate().unwrap(), "running");
    assert!(source.0.try_wait().unwrap().is_none(), "the source lives");
    drop(target);
}
