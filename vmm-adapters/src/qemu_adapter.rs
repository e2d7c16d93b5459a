//! The adapter for QEMU (10.0 or newer): `--vmm qemu` (the
//! `qemu-system-x86_64` found on PATH) or `--vmm qemu:/path/to/qemu-system-x86_64`.
//!
//! The guest is the kit's own counting firmware ([`crate::firmware`]), run
//! under TCG on a q35 machine whose 64 MiB of RAM is a memfd memory backend
//! (`ram0`, with `aux-ram-share=on` so that QEMU's ROMs are memfds too, as
//! cpr-transfer requires). The command lines:
//!
//! ```text
//! qemu-system-x86_64 -nodefaults -nographic -accel tcg
//!   -machine q35,memory-backend=ram0,aux-ram-share=on
//!   -object memory-backend-memfd,id=ram0,size=64M,share=on -m 64M
//!   -bios DIR/cprkit-counter-bios.bin
//!   -qmp unix:MONITOR,server=on,wait=off -serial none -monitor none
//! ```
//!
//! and, for a target, the two channels it listens on and the target-side
//! MIGRATION events:
//!
//! ```text
//!   -incoming '{"channel-type":"main","addr":{"transport":"socket","type":"unix","path":MAIN}}'
//!   -incoming '{"channel-type":"cpr","addr":{"transport":"socket","type":"unix","path":CPR}}'
//!   -global migration.x-events=on
//! ```
//!
//! A case's scenario keys ([`LaunchSpec::setup`]): `-S` for a guest that
//! never ran (`prelaunch`), twice the RAM for `other-ram`, `-device
//! virtio-rng-pci` for an extra `rng` device, and for a deferred target
//! `-incoming defer` with the cpr channel still on the command line (its main
//! channel comes by `migrate-incoming`, `exit-on-error` false for a target
//! that stays alive on a failed load).
//!
//! Private RAM (the ERR-1 case `bad-request:private-ram`) is
//! `-object memory-backend-ram,id=ram0,size=64M`: anonymous memory, not
//! shared, in no memfd. QEMU 10.0.2 registers a CPR blocker for it at start-up
//! and refuses the `migrate` with "Memory region ram0 is not compatible with
//! CPR. share=on is required for memory-backend objects, and aux-ram-share=on
//! is required." (the source keeps running).
//!
//! QEMU names the RAM memfd after the backend's type, whatever the object id:
//! `/memfd:memory-backend-memfd (deleted)` in /proc/PID/fd ([`RAM_MEMFD_NAME`]).

use std::ffi::OsString;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::qmp_monitor::connect_qmp;
use cprkit_harness::adapter::{Adapter, AdapterError, EventSink, GuestProbe, LaunchSpec, Monitor};
use cprkit_harness::plan::Step;
use cprkit_harness::scenario::{ExtraDevice, OnFailedLoad, Scenario, TargetStart};
use serde_json::json;

use crate::VmmError;
use crate::firmware;

/// The binary looked up on PATH when no path is given.
pub const DEFAULT_BINARY: &str = "qemu-system-x86_64";
/// The oldest QEMU with cpr-transfer.
pub const MIN_VERSION: QemuVersion = QemuVersion {
    major: 10,
    minor: 0,
    micro: 0,
};
/// The name QEMU gives the memfd of a `memory-backend-memfd` (its type name).
pub const RAM_MEMFD_NAME: &str = "memory-backend-memfd";
/// Guest RAM, in MiB.
pub const RAM_MIB: u32 = 64;
/// The id of the RAM backend object.
const RAM_ID: &str = "ram0";
/// How long `qemu --version` may take.
const VERSION_TIMEOUT: Duration = Duration::from_secs(10);
/// What to do when QEMU is missing.
pub const NOT_FOUND: &str =
    "QEMU not found: install QEMU 10.0 or newer (Debian 12: bookworm-backports, see README)";

/// A QEMU version, `major.minor.micro`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct QemuVersion {
    pub major: u32,
    pub minor: u32,
    pub micro: u32,
}

impl fmt::Display for QemuVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.micro)
    }
}

/// Why the output of `qemu --version` does not name a usable QEMU.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    #[error(
        "QEMU {found} is too old: cpr-transfer needs QEMU 10.0 or newer (Debian 12: bookworm-backports, see README)"
    )]
    TooOld { found: QemuVersion },
    #[error("not a QEMU version: `{0}`")]
    Unreadable(String),
}

/// Reads the version from the output of `qemu-system-* --version`
/// (`QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)`).
/// Returns the version and the rest of its line (the package, if any).
pub fn parse_version(output: &str) -> Option<(QemuVersion, String)> {
    const PREFIX: &str = "QEMU emulator version ";
    let line = output.lines().find_map(|l| l.trim().strip_prefix(PREFIX))?;
    let end = line
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(line.len());
    let (number, rest) = line.split_at(end);
    let mut parts = number.split('.');
    let mut next = |required: bool| -> Option<u32> {
        match parts.next() {
            Some(p) => p.parse().ok(),
            None if required => None,
            None => Some(0),
        }
    };
    let version = QemuVersion {
        major: next(true)?,
        minor: next(true)?,
        micro: next(false)?,
    };
    if parts.next().is_some() {
        return None;
    }
    Some((version, rest.trim().to_string()))
}

/// The version in `output`, if it is one the kit can use (≥ [`MIN_VERSION`]).
pub fn check_version(output: &str) -> Result<QemuVersion, VersionError> {
    let (v, _) = parse_version(output).ok_or_else(|| {
        let first = output.lines().next().unwrap_or("").trim();
        VersionError::Unreadable(first.chars().take(120).collect())
    })?;
    if v < MIN_VERSION {
        return Err(VersionError::TooOld { found: v });
    }
    Ok(v)
}

/// Runs `binary --version` (bounded) and returns its standard output.
fn run_version(binary: &Path, given: bool) -> Result<String, VmmError> {
    let shown = binary.display();
    let mut child = Command::new(binary)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| {
            VmmError::Environment(match (e.kind(), given) {
                (std::io::ErrorKind::NotFound, false) => {
                    format!("{NOT_FOUND} (no `{DEFAULT_BINARY}` on PATH)")
                }
                _ => format!("{NOT_FOUND} (cannot run `{shown}`: {e})"),
            })
        })?;
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stdout.by_ref().take(64 * 1024).read_to_end(&mut out);
        out
    });
    let deadline = Instant::now() + VERSION_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(VmmError::Environment(format!(
                    "`{shown} --version` did not answer within {VERSION_TIMEOUT:?}"
                )));
            }
            Err(e) => {
                return Err(VmmError::Environment(format!("`{shown} --version`: {e}")));
            }
        }
    };
    let out = String::from_utf8_lossy(&reader.join().unwrap_or_default()).into_owned();
    if !status.success() {
        return Err(VmmError::Environment(format!(
            "`{shown} --version` failed ({status}): is it QEMU? {NOT_FOUND}"
        )));
    }
    Ok(out)
}

/// Escapes a value for QEMU's `key=value,...` option syntax (a comma is doubled).
pub fn opt_escape(s: &str) -> String {
    s.replace(',', ",,")
}

/// QEMU, checked to be 10.0 or newer.
pub struct Qemu {
    name: String,
    binary: PathBuf,
    version: QemuVersion,
    /// The rest of the version line (`(Debian 1:10.0.2+ds-...)`), maybe empty.
    package: String,
    /// Why QEMU is not here, for [`Qemu::absent`].
    absent: Option<String>,
}

impl Qemu {
    /// The QEMU at `binary`, or `qemu-system-x86_64` on PATH; fails (an
    /// environment error, exit status 2) when it is missing or older than 10.0.
    pub fn new(binary: Option<&Path>) -> Result<Self, VmmError> {
        let (name, path) = match binary {
            Some(p) => (format!("qemu:{}", p.display()), p.to_path_buf()),
            None => ("qemu".to_string(), PathBuf::from(DEFAULT_BINARY)),
        };
        let out = run_version(&path, binary.is_some())?;
        let version = check_version(&out).map_err(|e| {
            VmmError::Environment(match e {
                VersionError::TooOld { .. } => format!("{e} (found at `{}`)", path.display()),
                VersionError::Unreadable(_) => format!(
                    "`{} --version` does not print a QEMU version ({e}): {NOT_FOUND}",
                    path.display()
                ),
            })
        })?;
        let package = parse_version(&out).map(|(_, p)| p).unwrap_or_default();
        Ok(Qemu {
            name,
            binary: path,
            version,
            package,
            absent: None,
        })
    }

    /// QEMU where it is not installed (`why`): plans QEMU's trials (its
    /// steps, its snapshot directory) and runs none of them, each "not run"
    /// with `why` (see [`crate::requirements`]).
    pub fn absent(why: String) -> Self {
        Qemu {
            name: "qemu".into(),
            binary: PathBuf::from(DEFAULT_BINARY),
            version: QemuVersion {
                major: 0,
                minor: 0,
                micro: 0,
            },
            package: String::new(),
            absent: Some(why),
        }
    }

    /// The binary the kit starts.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    pub fn qemu_version(&self) -> QemuVersion {
        self.version
    }

    /// The arguments of a source or a target, with the firmware image at `bios`.
    pub fn args(spec: &LaunchSpec, bios: &Path) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        let mut push = |s: String| a.push(s.into());
        for s in ["-nodefaults", "-nographic", "-accel", "tcg", "-machine"] {
            push(s.into());
        }
        push(format!("q35,memory-backend={RAM_ID},aux-ram-share=on"));
        push("-object".into());
        // Another RAM size (a scenario's `other-ram`): twice the usual.
        let mib = if spec.setup.other_ram {
            2 * RAM_MIB
        } else {
            RAM_MIB
        };
        push(if spec.shared_ram {
            format!("memory-backend-memfd,id={RAM_ID},size={mib}M,share=on")
        } else {
            // Anonymous private memory: QEMU refuses it for CPR (ERR-1).
            format!("memory-backend-ram,id={RAM_ID},size={mib}M")
        });
        push("-m".into());
        push(format!("{mib}M"));
        if spec.setup.start_stopped {
            push("-S".into());
        }
        // With the kit's disk, SeaBIOS (QEMU's default firmware) starts the
        // device and boots the counting loop from its boot sector: real
        // device I/O, and a started device whose rings the kit can watch.
        if spec.vhost_user_blk.is_none() {
            push("-bios".into());
            a.push(bios.as_os_str().to_owned());
        }
        let mut push = |s: String| a.push(s.into());
        push("-qmp".into());
        push(format!(
            "unix:{},server=on,wait=off",
            opt_escape(&spec.monitor.to_string_lossy())
        ));
        for s in ["-serial", "none", "-monitor", "none"] {
            push(s.into());
        }
        if let Some(sock) = &spec.vhost_user_blk {
            // QEMU's own vhost-user-blk frontend on the kit's device.
            push("-chardev".into());
            push(format!(
                "socket,id=vublk0,path={}",
                opt_escape(&sock.to_string_lossy())
            ));
            push("-device".into());
            push("vhost-user-blk-pci,chardev=vublk0,id=vublk0,num-queues=1,bootindex=0".into());
        }
        for dev in &spec.setup.devices {
            push("-device".into());
            push(
                match dev {
                    ExtraDevice::Rng => "virtio-rng-pci",
                }
                .into(),
            );
        }
        if let Some(inc) = &spec.incoming {
            // A deferred target gets its main channel by `migrate-incoming`.
            let deferred = spec.setup.target_start == TargetStart::Deferred;
            if deferred {
                push("-incoming".into());
                push("defer".into());
            }
            let channels = [("main", &inc.main), ("cpr", &inc.cpr)];
            for (kind, path) in channels.into_iter().skip(usize::from(deferred)) {
                push("-incoming".into());
                push(
                    json!({
                        "channel-type": kind,
                        "addr": {
                            "transport": "socket",
                            "type": "unix",
                            "path": path.to_string_lossy(),
                        }
                    })
                    .to_string(),
                );
            }
            push("-global".into());
            push("migration.x-events=on".into());
        }
        a
    }
}

impl Adapter for Qemu {
    fn name(&self) -> &str {
        &self.name
    }

    /// QEMU's target reports `MIGRATION active` from its own main loop when
    /// it accepts the main channel, racing the kit's hold of the first bytes;
    /// its steps are left out of snapshots (see the trait).
    fn snapshot_steps(&self) -> bool {
        false
    }

    fn version(&self) -> String {
        if self.absent.is_some() {
            "QEMU (not installed)".into()
        } else if self.package.is_empty() {
            format!("QEMU {}", self.version)
        } else {
            format!("QEMU {} {}", self.version, self.package)
        }
    }

    /// Without the `return-path` capability QEMU's target never writes to
    /// the main channel: there is no target-resume message to hold.
    fn has_step(&self, step: Step, capabilities: &[String]) -> bool {
        step != Step::TargetResume || capabilities.iter().any(|c| c == "return-path")
    }

    /// Every scenario key maps (`-S`, the RAM size, `-device
    /// virtio-rng-pci`, `-incoming defer` and `migrate-incoming`), but one:
    /// a target listening from its start always exits on a failed load
    /// (`exit-on-error` is an argument of `migrate-incoming` only).
    fn scenario_unsupported(&self, scenario: &Scenario, _prelaunch: bool) -> Option<String> {
        (scenario.on_failed_load == OnFailedLoad::Stay
            && scenario.target_start == TargetStart::Listening)
            .then(|| {
                "QEMU's target listening from its start (`-incoming` on the command line) always exits on a failed load: `exit-on-error` is an argument of `migrate-incoming` only (write target-start = \"deferred\")".into()
            })
    }

    /// Every QEMU's trials share `snapshots/qemu/` (a path in the name would
    /// make a directory tree of it).
    fn snapshot_dir(&self) -> String {
        "qemu".into()
    }

    fn not_runnable(&self, device: bool, capabilities: &[String]) -> Option<String> {
        let _ = (device, capabilities);
        self.absent.clone()
    }

    fn command(&self, spec: &LaunchSpec) -> Result<Command, AdapterError> {
        if let Some(why) = &self.absent {
            return Err(AdapterError::Environment(why.clone()));
        }
        let bios = firmware::write_into(&spec.dir).map_err(|e| {
            AdapterError::Environment(format!(
                "cannot write the guest firmware into {}: {e}",
                spec.dir.display()
            ))
        })?;
        let mut cmd = Command::new(&self.binary);
        cmd.args(Self::args(spec, &bios));
        Ok(cmd)
    }

    fn guest_probe(&self) -> GuestProbe {
        GuestProbe {
            ram_memfd_name: RAM_MEMFD_NAME.to_string(),
            counter_offset: firmware::COUNTER_ADDR,
            counter_width: firmware::COUNTER_WIDTH,
            ring: None,
            device_io: false,
        }
    }

    fn connect(
        &self,
        spec: &LaunchSpec,
        deadline: Instant,
        events: EventSink,
    ) -> Result<Box<dyn Monitor>, AdapterError> {
        connect_qmp(spec, deadline, events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cprkit_harness::adapter::{Incoming, Role};
    use rstest::rstest;

    fn v(major: u32, minor: u32, micro: u32) -> QemuVersion {
        QemuVersion {
            major,
            minor,
            micro,
        }
    }

    #[rstest]
    #[case::debian_backports(
        "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)\nCopyright (c) 2003-2025 Fabrice Bellard and the QEMU Project developers\n",
        Ok(v(10, 0, 2))
    )]
    #[case::upstream("QEMU emulator version 10.1.0\n", Ok(v(10, 1, 0)))]
    #[case::dev_tree("QEMU emulator version 10.0.90 (v10.1.0-rc0)\n", Ok(v(10, 0, 90)))]
    #[case::two_parts("QEMU emulator version 11.0\n", Ok(v(11, 0, 0)))]
    #[case::exactly_ten("QEMU emulator version 10.0.0", Ok(v(10, 0, 0)))]
    #[case::too_old(
        "QEMU emulator version 9.2.0\n",
        Err(VersionError::TooOld { found: v(9, 2, 0) })
    )]
    #[case::bookworm(
        "QEMU emulator version 7.2.15 (Debian 1:7.2+dfsg-7+deb12u13)\n",
        Err(VersionError::TooOld { found: v(7, 2, 15) })
    )]
    #[case::bare_number("9.2.0", Err(VersionError::Unreadable("9.2.0".into())))]
    #[case::garbage(
        "garbage\nmore",
        Err(VersionError::Unreadable("garbage".into()))
    )]
    #[case::empty("", Err(VersionError::Unreadable("".into())))]
    #[case::no_number(
        "QEMU emulator version x.y",
        Err(VersionError::Unreadable("QEMU emulator version x.y".into()))
    )]
    #[case::too_many_parts(
        "QEMU emulator version 10.0.2.1",
        Err(VersionError::Unreadable("QEMU emulator version 10.0.2.1".into()))
    )]
    fn version_check(#[case] output: &str, #[case] want: Result<QemuVersion, VersionError>) {
        assert_eq!(check_version(output), want);
    }

    #[test]
    fn too_old_names_the_version_found() {
        let e = check_version("QEMU emulator version 9.2.0").unwrap_err();
        assert!(e.to_string().contains("QEMU 9.2.0 is too old"), "{e}");
        assert!(e.to_string().contains("QEMU 10.0 or newer"), "{e}");
    }

    #[test]
    fn package_is_kept_for_reports() {
        let (_, pkg) =
            parse_version("QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2)").unwrap();
        assert_eq!(pkg, "(Debian 1:10.0.2+ds-2)");
    }

    fn spec(role: Role, shared_ram: bool) -> LaunchSpec {
        let dir = PathBuf::from("/run/t1");
        LaunchSpec {
            role,
            monitor: dir.join(if role == Role::Source {
                "s-qmp.sock"
            } else {
                "t-qmp.sock"
            }),
            incoming: (role == Role::Target).then(|| Incoming {
                main: dir.join("t-main.sock"),
                cpr: dir.join("t-cpr.sock"),
            }),
            dir,
            shared_ram,
            vhost_user_blk: None,
            setup: Default::default(),
        }
    }

    fn args(spec: &LaunchSpec) -> Vec<String> {
        Qemu::args(spec, &spec.dir.join(firmware::FILE_NAME))
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect()
    }

    const COMMON: &[&str] = &[
        "-nodefaults",
        "-nographic",
        "-accel",
        "tcg",
        "-machine",
        "q35,memory-backend=ram0,aux-ram-share=on",
        "-object",
        "memory-backend-memfd,id=ram0,size=64M,share=on",
        "-m",
        "64M",
        "-bios",
        "/run/t1/cprkit-counter-bios.bin",
    ];

    #[test]
    fn source_command_line() {
        let mut want: Vec<&str> = COMMON.to_vec();
        want.extend([
            "-qmp",
            "unix:/run/t1/s-qmp.sock,server=on,wait=off",
            "-serial",
            "none",
            "-monitor",
            "none",
        ]);
        assert_eq!(args(&spec(Role::Source, true)), want);
    }

    #[test]
    fn target_command_line() {
        let mut want: Vec<&str> = COMMON.to_vec();
        want.extend([
            "-qmp",
            "unix:/run/t1/t-qmp.sock,server=on,wait=off",
            "-serial",
            "none",
            "-monitor",
            "none",
            "-incoming",
            r#"{"addr":{"path":"/run/t1/t-main.sock","transport":"socket","type":"unix"},"channel-type":"main"}"#,
            "-incoming",
            r#"{"addr":{"path":"/run/t1/t-cpr.sock","transport":"socket","type":"unix"},"channel-type":"cpr"}"#,
            "-global",
            "migration.x-events=on",
        ]);
        assert_eq!(args(&spec(Role::Target, true)), want);
    }

    #[test]
    fn the_scenario_keys_map_to_qemu_options() {
        let mut t = spec(Role::Target, true);
        t.setup = cprkit_harness::adapter::SideSetup {
            other_ram: true,
            devices: vec![ExtraDevice::Rng],
            target_start: TargetStart::Deferred,
            ..Default::default()
        };
        let a = args(&t);
        assert!(a.contains(&"memory-backend-memfd,id=ram0,size=128M,share=on".to_string()));
        let dev = a.iter().position(|s| s == "virtio-rng-pci").unwrap();
        assert_eq!(a[dev - 1], "-device");
        let inc: Vec<&String> = a
            .iter()
            .enumerate()
            .filter(|(i, _)| *i > 0 && a[i - 1] == "-incoming")
            .map(|(_, s)| s)
            .collect();
        assert_eq!(inc.len(), 2, "{a:?}");
        assert_eq!(inc[0], "defer");
        assert!(inc[1].contains(r#""channel-type":"cpr""#), "{a:?}");
        let mut s = spec(Role::Source, true);
        s.setup.start_stopped = true;
        assert!(args(&s).contains(&"-S".to_string()));
        assert!(!args(&spec(Role::Source, true)).contains(&"-S".to_string()));
    }

    #[test]
    fn a_listening_target_cannot_stay_alive_on_a_failed_load() {
        let q = Qemu {
            name: "qemu".into(),
            binary: PathBuf::from("qemu-system-x86_64"),
            version: v(10, 0, 2),
            package: String::new(),
            absent: None,
        };
        let mut sc = Scenario {
            on_failed_load: OnFailedLoad::Stay,
            ..Scenario::default()
        };
        let why = q.scenario_unsupported(&sc, false).unwrap();
        assert!(why.contains("migrate-incoming"), "{why}");
        sc.target_start = TargetStart::Deferred;
        assert_eq!(q.scenario_unsupported(&sc, true), None);
    }

    #[test]
    fn private_ram_is_anonymous_memory() {
        let a = args(&spec(Role::Source, false));
        let obj = a.iter().position(|s| s == "-object").unwrap();
        assert_eq!(a[obj + 1], "memory-backend-ram,id=ram0,size=64M");
        assert!(!a.iter().any(|s| s.contains("memfd")), "{a:?}");
        // Only ram0 is private: the machine still shares its ROMs.
        assert!(a.contains(&"q35,memory-backend=ram0,aux-ram-share=on".to_string()));
    }

    #[test]
    fn odd_paths_are_escaped() {
        let mut s = spec(Role::Target, true);
        s.monitor = PathBuf::from("/tmp/a,b/q.sock");
        s.incoming.as_mut().unwrap().cpr = PathBuf::from("/tmp/a\"b/c.sock");
        let a = args(&s);
        assert!(a.contains(&"unix:/tmp/a,,b/q.sock,server=on,wait=off".to_string()));
        let cpr: serde_json::Value = serde_json::from_str(&a[a.len() - 3]).unwrap();
        assert_eq!(cpr["addr"]["path"], "/tmp/a\"b/c.sock");
    }
}
