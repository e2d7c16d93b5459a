//! The daemon process's main: argument parsing, then serve until killed.

use std::path::PathBuf;

use crate::server::serve;
use crate::state::Policy;

/// The command line.
pub const USAGE: &str =
    "usage: cprkit-device --socket PATH --control PATH [--policy shared|exclusive]";

/// Parsed arguments.
#[derive(Debug, PartialEq, Eq)]
struct Args {
    socket: PathBuf,
    control: PathBuf,
    policy: Policy,
}

fn parse(args: Vec<String>) -> Result<Args, String> {
    let mut socket = None;
    let mut control = None;
    let mut policy = Policy::default();
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg, None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--socket" => socket = Some(PathBuf::from(value()?)),
            "--control" => control = Some(PathBuf::from(value()?)),
            "--policy" => policy = value()?.parse().map_err(|e| format!("--policy: {e}"))?,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Args {
        socket: socket.ok_or("--socket is required")?,
        control: control.ok_or("--control is required")?,
        policy,
    })
}

/// The daemon's main (args without the program name): serves until killed. A usage error
/// prints the message and [`USAGE`] on stderr and returns 2; a failure to listen returns 1.
pub fn run(args: Vec<String>) -> i32 {
    let args = match parse(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("cprkit-device: {e}\n{USAGE}");
            return 2;
        }
    };
    let _daemon = match serve(&args.socket, &args.control, args.policy) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("cprkit-device: {e}");
            return 1;
        }
    };
    loop {
        std::thread::park();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_flags_in_both_spellings() {
        let args = parse(strings(&[
            "--socket",
            "/a",
            "--control=/b",
            "--policy",
            "shared",
        ]));
        assert_eq!(
            args,
            Ok(Args {
                socket: "/a".into(),
                control: "/b".into(),
                policy: Policy::Shared
            })
        );
        let args = parse(strings(&["--socket", "/a", "--control", "/b"]));
        assert_eq!(args.map(|a| a.policy), Ok(Policy::Exclusive));
    }

    #[test]
    fn rejects_missing_and_unknown() {
        assert!(parse(strings(&["--socket", "/a"])).is_err());
        assert!(parse(strings(&["--socket"])).is_err());
        assert!(
            parse(strings(&[
                "--socket",
                "/a",
                "--control",
                "/b",
                "--policy",
                "x"
            ]))
            .is_err()
        );
        assert!(parse(strings(&["--bogus"])).is_err());
    }
}
