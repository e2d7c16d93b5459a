//! `Qemu::new` against stand-in binaries (shell scripts): what a missing, an
//! old, a foreign and a good enough `qemu-system-x86_64` give. A test binary of
//! its own, so that its forks never meet another test's script half written
//! (ETXTBSY) in the unit tests' process.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cprkit_adapters::qemu_adapter::NOT_FOUND;
use cprkit_adapters::{Qemu, VmmError, firmware};
use cprkit_harness::adapter::{Adapter, GuestProbe, LaunchSpec, Role};

fn spec(dir: &Path) -> LaunchSpec {
    LaunchSpec {
        role: Role::Source,
        dir: dir.to_path_buf(),
        monitor: dir.join("s-qmp.sock"),
        incoming: None,
        shared_ram: true,
        vhost_user_blk: None,
        setup: Default::default(),
    }
}

fn fake_qemu(dir: &Path, script: &str) -> PathBuf {
    let p = dir.join("qemu-system-x86_64");
    std::fs::write(&p, format!("#!/bin/sh\n{script}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// `Qemu::new` on a script just written: a fork elsewhere in the test
/// process may briefly hold it open for writing (ETXTBSY).
fn new_qemu(p: &Path) -> Result<Qemu, VmmError> {
    for _ in 0..100 {
        match Qemu::new(Some(p)) {
            Err(VmmError::Environment(m)) if m.contains("Text file busy") => {
                std::thread::sleep(Duration::from_millis(10));
            }
            r => return r,
        }
    }
    Qemu::new(Some(p))
}

fn env_error(r: Result<Qemu, VmmError>) -> String {
    match r {
        Err(VmmError::Environment(m)) => m,
        Err(e) => panic!("not an environment error: {e}"),
        Ok(_) => panic!("accepted"),
    }
}

#[test]
fn a_missing_binary_says_how_to_install() {
    let m = env_error(Qemu::new(Some(Path::new(
        "/nonexistent/qemu-system-x86_64",
    ))));
    assert!(m.starts_with(NOT_FOUND), "{m}");
}

#[test]
fn an_old_binary_is_refused_with_its_version() {
    let dir = tempfile::tempdir().unwrap();
    let q = fake_qemu(
        dir.path(),
        "echo 'QEMU emulator version 9.2.0 (Debian 1:9.2.0)'",
    );
    let m = env_error(new_qemu(&q));
    assert!(m.contains("QEMU 9.2.0 is too old"), "{m}");
}

#[test]
fn a_binary_that_is_not_qemu_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let q = fake_qemu(dir.path(), "echo hello");
    let m = env_error(new_qemu(&q));
    assert!(m.contains("`hello`"), "{m}");
    let q = fake_qemu(dir.path(), "exit 3");
    let m = env_error(new_qemu(&q));
    assert!(m.contains("failed"), "{m}");
}

#[test]
fn a_new_enough_binary_is_taken() {
    let dir = tempfile::tempdir().unwrap();
    let q = fake_qemu(
        dir.path(),
        "echo 'QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2)'",
    );
    let a = new_qemu(&q).unwrap();
    assert_eq!(a.name(), format!("qemu:{}", q.display()));
    assert_eq!(a.snapshot_dir(), "qemu");
    assert_eq!(a.version(), "QEMU 10.0.2 (Debian 1:10.0.2+ds-2)");
    assert_eq!(a.binary(), q);
    assert_eq!(
        a.guest_probe(),
        GuestProbe {
            ram_memfd_name: "memory-backend-memfd".into(),
            counter_offset: 0x1000,
            counter_width: 4,
            ring: None,
            device_io: false,
        }
    );
    // The command writes the firmware into the trial directory.
    let cmd = a.command(&spec(dir.path())).unwrap();
    assert_eq!(cmd.get_program(), q.as_os_str());
    assert_eq!(
        std::fs::read(dir.path().join(firmware::FILE_NAME)).unwrap(),
        firmware::image()
    );
}

#[test]
fn vmm_names_parse() {
    let err = |spec: &str| match cprkit_adapters::adapter_for(spec) {
        Err(e) => e,
        Ok(a) => panic!("{spec} accepted as {}", a.name()),
    };
    assert!(matches!(err("qemu:"), VmmError::Unknown(_)));
    assert!(matches!(err("qemux"), VmmError::Unknown(_)));
    match err("qemu:/nonexistent/qemu-system-x86_64") {
        VmmError::Environment(m) => assert!(m.starts_with(NOT_FOUND), "{m}"),
        e => panic!("{e}"),
    }
    let dir = tempfile::tempdir().unwrap();
    let q = fake_qemu(dir.path(), "echo 'QEMU emulator version 10.1.0'");
    new_qemu(&q).unwrap();
    let a = cprkit_adapters::adapter_for(&format!("qemu:{}", q.display()))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(a.name(), format!("qemu:{}", q.display()));
}
