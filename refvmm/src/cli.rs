//! The command line: parses refvmm's arguments into a [`Config`].

use std::path::PathBuf;
use std::time::Duration;

use crate::mutant::Mutant;
use crate::vcpu::STEP_PAUSE;
use crate::{DEFAULT_RAM_SIZE, MIN_RAM_SIZE, MIN_RAM_SIZE_BLK};

/// Usage text printed with a usage error.
pub const USAGE: &str = "usage: refvmm --qmp PATH [--incoming-cpr PATH (--incoming-main PATH | --incoming-defer) \
[--stay-on-failed-load]] [--ram-size BYTES] [--private-ram] [-S] [--mutant NAME] [--vhost-user-blk PATH] \
[--vhost-kernel PATH] [--extra-device rng]... [--guest-step-us N]\n       refvmm --list-mutants";

/// The extra devices refvmm can have (`--extra-device`): devices that carry
/// state in the main stream and do nothing else.
pub const EXTRA_DEVICES: [&str; 1] = ["rng"];

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// `--list-mutants`.
    ListMutants,
    /// Run a VMM.
    Run(Config),
}

/// A VMM's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Path of the QMP server socket.
    pub qmp: PathBuf,
    /// Set for a target (started with `--incoming-cpr` and `--incoming-main`).
    pub incoming: Option<Incoming>,
    /// Guest RAM size in bytes.
    pub ram_size: u64,
    /// Guest RAM in an anonymous private mapping instead of a memfd.
    pub private_ram: bool,
    /// `-S`: do not start the vCPU (source: `prelaunch`; target: end `paused`).
    pub no_autostart: bool,
    /// The bug to have, if any.
    pub mutant: Option<Mutant>,
    /// The vhost-user socket of a vhost-user-blk device, if any.
    pub vhost_user_blk: Option<PathBuf>,
    /// A kernel vhost device (/dev/vhost-net, /dev/vhost-vsock), if any.
    pub vhost_kernel: Option<PathBuf>,
    /// The guest's pause between two of its writes (`--guest-step-us`): a
    /// slower guest, for the kit's tests of its rate-derived watches.
    pub guest_step: Duration,
    /// Extra devices (`--extra-device`), in the device state's `devices`.
    pub extra_devices: Vec<String>,
    /// A target that stays alive when its incoming migration fails after
    /// target-init (QEMU `exit-on-error=false`), instead of exiting.
    pub stay_on_failed_load: bool,
}

/// The listening paths of a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    pub cpr: PathBuf,
    /// `None` with `--incoming-defer`: the main channel comes by
    /// `migrate-incoming` on the monitor, once the CPR state is loaded.
    pub main: Option<PathBuf>,
}

/// Parses the arguments (without the program name).
pub fn parse(args: &[String]) -> Result<Parsed, String> {
    let mut qmp = None;
    let mut cpr = None;
    let mut main = None;
    let mut ram_size = DEFAULT_RAM_SIZE;
    let mut private_ram = false;
    let mut no_autostart = false;
    let mut mutant = None;
    let mut vhost_user_blk = None;
    let mut vhost_kernel = None;
    let mut guest_step = STEP_PAUSE;
    let mut extra_devices = Vec::new();
    let mut defer = false;
    let mut stay_on_failed_load = false;
    let mut list = false;

    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = |name: &str| -> Result<String, String> {
            match &inline {
                Some(v) => Ok(v.clone()),
                None => it
                    .next()
                    .cloned()
                    .ok_or_else(|| format!("{name} needs a value")),
            }
        };
        match flag {
            "--qmp" => qmp = Some(PathBuf::from(value(flag)?)),
            "--incoming-cpr" => cpr = Some(PathBuf::from(value(flag)?)),
            "--incoming-main" => main = Some(PathBuf::from(value(flag)?)),
            "--vhost-user-blk" => vhost_user_blk = Some(PathBuf::from(value(flag)?)),
            "--vhost-kernel" => vhost_kernel = Some(PathBuf::from(value(flag)?)),
            "--ram-size" => ram_size = parse_size(&value(flag)?)?,
            "--guest-step-us" => {
                let v = value(flag)?;
                let us: u64 = v
                    .parse()
                    .map_err(|_| format!("bad --guest-step-us '{v}' (microseconds)"))?;
                guest_step = Duration::from_micros(us);
            }
            "--mutant" => {
                let name = value(flag)?;
                mutant = Some(Mutant::from_name(&name).ok_or_else(|| {
                    format!("unknown mutant '{name}'; known: {}", Mutant::known_names())
                })?);
            }
            "--extra-device" => {
                let name = value(flag)?;
                if !EXTRA_DEVICES.contains(&name.as_str()) {
                    return Err(format!(
                        "unknown extra device '{name}'; known: {}",
                        EXTRA_DEVICES.join(", ")
                    ));
                }
                extra_devices.push(name);
            }
            "--incoming-defer" if inline.is_none() => defer = true,
            "--stay-on-failed-load" if inline.is_none() => stay_on_failed_load = true,
            "--private-ram" if inline.is_none() => private_ram = true,
            "-S" => no_autostart = true,
            "--list-mutants" if inline.is_none() => list = true,
            _ => return Err(format!("unknown argument '{arg}'")),
        }
    }
    if list {
        return Ok(Parsed::ListMutants);
    }
    let qmp = qmp.ok_or("--qmp PATH is required")?;
    let incoming = match (cpr, main, defer) {
        (Some(cpr), Some(main), false) => Some(Incoming {
            cpr,
            main: Some(main),
        }),
        (Some(cpr), None, true) => Some(Incoming { cpr, main: None }),
        (None, None, false) => None,
        (_, Some(_), true) => {
            return Err("--incoming-main and --incoming-defer exclude each other".into());
        }
        _ => {
            return Err("--incoming-cpr goes with --incoming-main or --incoming-defer".into());
        }
    };
    if stay_on_failed_load && incoming.is_none() {
        return Err("--stay-on-failed-load is for a target (--incoming-cpr)".into());
    }
    if ram_size < MIN_RAM_SIZE {
        return Err(format!("--ram-size must be at least {MIN_RAM_SIZE} bytes"));
    }
    if private_ram && incoming.is_some() {
        return Err("--private-ram cannot receive a cpr-transfer (--incoming-*)".into());
    }
    if vhost_user_blk.is_some() {
        if ram_size < MIN_RAM_SIZE_BLK {
            return Err(format!(
                "--ram-size must be at least {MIN_RAM_SIZE_BLK} bytes with --vhost-user-blk"
            ));
        }
        if private_ram {
            return Err("--vhost-user-blk needs memfd RAM (not --private-ram)".into());
        }
    }
    Ok(Parsed::Run(Config {
        qmp,
        incoming,
        ram_size,
        private_ram,
        no_autostart,
        mutant,
        vhost_user_blk,
        vhost_kernel,
        guest_step,
        extra_devices,
        stay_on_failed_load,
    }))
}

fn parse_size(s: &str) -> Result<u64, String> {
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    let size = parsed.map_err(|_| format!("bad --ram-size '{s}'"))?;
    if usize::try_from(size).is_err() {
        return Err(format!("--ram-size '{s}' is too large"));
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn parses_a_target() {
        let Parsed::Run(cfg) = parse(&args(
            "--qmp q --incoming-cpr c --incoming-main=m --ram-size 0x10000 -S --mutant copy-ram",
        ))
        .unwrap() else {
            panic!("not a run")
        };
        assert_eq!(cfg.qmp, PathBuf::from("q"));
        assert_eq!(
            cfg.incoming,
            Some(Incoming {
                cpr: "c".into(),
                main: Some("m".into())
            })
        );
        assert_eq!(cfg.ram_size, 0x10000);
        assert!(cfg.no_autostart);
        assert_eq!(cfg.mutant, Some(Mutant::CopyRam));
        assert_eq!(cfg.vhost_user_blk, None);
        assert_eq!(cfg.vhost_kernel, None);
    }

    #[test]
    fn parses_a_slower_guest_step() {
        let Parsed::Run(cfg) = parse(&args("--qmp q --guest-step-us 5000")).unwrap() else {
            panic!("not a run")
        };
        assert_eq!(cfg.guest_step, Duration::from_millis(5));
        let Parsed::Run(cfg) = parse(&args("--qmp q")).unwrap() else {
            panic!("not a run")
        };
        assert_eq!(cfg.guest_step, STEP_PAUSE);
        assert!(
            parse(&args("--qmp q --guest-step-us 5ms"))
                .unwrap_err()
                .contains("--guest-step-us")
        );
    }

    #[test]
    fn parses_the_vhost_devices() {
        let Parsed::Run(cfg) = parse(&args(
            "--qmp q --vhost-user-blk /tmp/vu.sock --vhost-kernel=/dev/vhost-net",
        ))
        .unwrap() else {
            panic!("not a run")
        };
        assert_eq!(cfg.vhost_user_blk, Some(PathBuf::from("/tmp/vu.sock")));
        assert_eq!(cfg.vhost_kernel, Some(PathBuf::from("/dev/vhost-net")));
        assert!(USAGE.contains("[--vhost-user-blk PATH]"));
        // The blk ring needs more RAM than the memory profile's minimum.
        let small = format!("--qmp q --ram-size {MIN_RAM_SIZE} --vhost-user-blk v");
        assert!(
            parse(&args(&small))
                .unwrap_err()
                .contains("--vhost-user-blk")
        );
        assert!(parse(&args(&format!("--qmp q --ram-size {MIN_RAM_SIZE}"))).is_ok());
    }

    #[test]
    fn parses_a_deferred_target_that_stays() {
        let Parsed::Run(cfg) = parse(&args(
            "--qmp q --incoming-cpr c --incoming-defer --stay-on-failed-load --extra-device rng",
        ))
        .unwrap() else {
            panic!("not a run")
        };
        assert_eq!(
            cfg.incoming,
            Some(Incoming {
                cpr: "c".into(),
                main: None
            })
        );
        assert!(cfg.stay_on_failed_load);
        assert_eq!(cfg.extra_devices, ["rng"]);
    }

    #[test]
    fn refuses_bad_usage() {
        for bad in [
            "",
            "--qmp",
            "--qmp q --incoming-cpr c",
            "--qmp q --ram-size 12",
            "--qmp q --ram-size x",
            "--qmp q --mutant nope",
            "--qmp q --bogus",
            "--qmp q --private-ram --incoming-cpr c --incoming-main m",
            "--qmp q --vhost-user-blk",
            "--qmp q --private-ram --vhost-user-blk v",
            "--qmp q --vhost-kernel",
        ] {
            assert!(parse(&args(bad)).is_err(), "{bad}");
        }
        for bad in [
            "--qmp q --incoming-cpr c --incoming-main m --incoming-defer",
            "--qmp q --incoming-defer",
            "--qmp q --stay-on-failed-load",
            "--qmp q --extra-device gpu",
        ] {
            assert!(parse(&args(bad)).is_err(), "{bad}");
        }
        assert_eq!(parse(&args("--list-mutants")), Ok(Parsed::ListMutants));
    }
}
