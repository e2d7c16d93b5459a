//! The QEMU adapter against the real QEMU, where one is installed (10.0 or
//! newer): the firmware boots under TCG and its counter rises in the RAM memfd;
//! a bare cpr-transfer handover reaches a running target; private RAM is
//! refused for CPR. Where `qemu-system-x86_64` is missing or too old, each
//! test is ignored with the reason, or fails naming QEMU where it is required
//! (`CPRKIT_REQUIRE=qemu`, or `CI=true`: `cprkit_adapters::requirements`).

use std::fs::File;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use cprkit_adapters::Qemu;
use cprkit_adapters::requirements::{Availability, Part, Policy};
use cprkit_harness::adapter::{Adapter, AdapterError, Incoming, LaunchSpec, MigrateRequest, Role};
use cprkit_harness::guestmem::GuestRam;
use cprkit_harness::unixnet;
use cprkit_test_support::{Absent, trial};

/// The installed QEMU: [`main`] runs a test only where it is here.
fn qemu() -> Qemu {
    Qemu::new(None).expect("QEMU, found when the tests were planned")
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

fn the_firmware_counts_in_the_ram_memfd() {
    let q = qemu();
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

fn a_bare_handover_reaches_a_running_target() {
    let q = qemu();
    let root = tempfile::tempdir().unwrap();
    let t = cprkit_harness::bare::handover(&q, root.path()).unwrap();
    eprintln!(
        "whole {:?}, migrate to target running {:?}",
        t.whole, t.handover
    );
    assert!(t.handover < Duration::from_secs(5));
}

fn private_ram_is_refused_for_cpr() {
    let q = qemu();
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

fn main() -> std::process::ExitCode {
    let args = libtest_mimic::Arguments::from_args();
    let policy = Policy::for_tests().unwrap_or_else(|e| panic!("{e}"));
    let absent = match policy.availability(Part::Qemu) {
        Availability::Present => None,
        Availability::Optional(why) => Some(Absent::Ignored(why)),
        Availability::Missing(e) => Some(Absent::Required(e)),
    };
    let tests: [(&str, fn()); 3] = [
        (
            "the_firmware_counts_in_the_ram_memfd",
            the_firmware_counts_in_the_ram_memfd,
        ),
        (
            "a_bare_handover_reaches_a_running_target",
            a_bare_handover_reaches_a_running_target,
        ),
        (
            "private_ram_is_refused_for_cpr",
            private_ram_is_refused_for_cpr,
        ),
    ];
    let trials = tests
        .into_iter()
        .map(|(name, test)| trial(name, absent.as_ref(), test))
        .collect();
    libtest_mimic::run(&args, trials).exit_code()
}
