//! Finding the kit's own helper programs (refvmm, the device daemon), in this
//! order:
//!
//! 1. the helper's own environment variable (`CPRKIT_REFVMM`, `CPRKIT_DEVICE`);
//! 2. `$CPRKIT_HOST`, a program that hosts every helper behind a hidden first
//!    argument (the `cprkit` binary does): tests point it at the `cprkit` cargo
//!    built for them, so they never run a stale helper binary;
//! 3. a binary of the helper's name beside the running program
//!    (target/<profile>/) or one level up (a test binary in
//!    target/<profile>/deps/);
//! 4. the running program itself when it declared that it hosts the helpers
//!    ([`set_host`]: `cprkit` does, so `cprkit run` needs nothing else built).

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

static HOST: OnceLock<PathBuf> = OnceLock::new();

/// The environment variable naming a program that hosts every helper.
pub const HOST_ENV: &str = "CPRKIT_HOST";

/// The program that hosts the helpers, if any: `$CPRKIT_HOST`, else the
/// running program when it declared itself host.
pub fn host() -> Option<PathBuf> {
    match std::env::var_os(HOST_ENV) {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => HOST.get().cloned(),
    }
}

/// Declares that the running program hosts the kit's helpers: called with a
/// helper's `hosted_arg` first, it runs that helper instead of its own main.
pub fn set_host(exe: PathBuf) {
    let _ = HOST.set(exe);
}

/// One of the kit's helper programs.
#[derive(Debug, Clone, Copy)]
pub struct Helper {
    /// What people call it, for messages.
    pub what: &'static str,
    /// The environment variable that names its binary.
    pub env: &'static str,
    /// The name of its own binary.
    pub bin: &'static str,
    /// The first argument with which a hosting program runs it.
    pub hosted_arg: &'static str,
}

/// How to start a helper: a program and the arguments before the helper's own.
#[derive(Debug, Clone)]
pub struct Launcher {
    pub program: PathBuf,
    pub args: Vec<String>,
}

impl Launcher {
    /// A command for the helper, its own arguments still to add.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args);
        cmd
    }
}

/// The helper could not be found.
#[derive(Debug, thiserror::Error)]
#[error(
    "{what} not found beside this program: build it (`cargo build --bins`, with --release for a release run), or set {env} (or CPRKIT_HOST to a `cprkit` binary)"
)]
pub struct NotFound {
    pub what: &'static str,
    pub env: &'static str,
}

impl Helper {
    /// Where the helper is (see the module's doc for the order).
    pub fn locate(&self) -> Result<Launcher, NotFound> {
        let plain = |program: PathBuf| Launcher {
            program,
            args: Vec::new(),
        };
        let hosted = |program: PathBuf| Launcher {
            program,
            args: vec![self.hosted_arg.into()],
        };
        if let Some(p) = std::env::var_os(self.env) {
            return Ok(plain(PathBuf::from(p)));
        }
        if let Some(p) = std::env::var_os(HOST_ENV).filter(|p| !p.is_empty()) {
            return Ok(hosted(PathBuf::from(p)));
        }
        if let Ok(exe) = std::env::current_exe() {
            let mut dir = exe.parent().map(PathBuf::from);
            for _ in 0..2 {
                let Some(d) = dir else { break };
                let cand = d.join(self.bin);
                if cand.is_file() {
                    return Ok(plain(cand));
                }
                dir = d.parent().map(PathBuf::from);
            }
        }
        if let Some(host) = HOST.get() {
            return Ok(hosted(host.clone()));
        }
        Err(NotFound {
            what: self.what,
            env: self.env,
        })
    }
}
