//! The host a report was made on: kernel (uname), distribution
//! (/etc/os-release), cores.

use std::ffi::CStr;

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Host {
    /// `uname -srm`: `Linux 6.1.0-37-amd64 x86_64`.
    pub kernel: String,
    /// PRETTY_NAME of /etc/os-release: `Debian GNU/Linux 12 (bookworm)`.
    pub os: String,
    /// The CPUs this process may run on.
    pub cores: usize,
}

impl Host {
    /// This host.
    pub fn this() -> Host {
        Host {
            kernel: uname().unwrap_or_else(|| "unknown".into()),
            os: std::fs::read_to_string("/etc/os-release")
                .ok()
                .and_then(|t| pretty_name(&t))
                .unwrap_or_else(|| "unknown".into()),
            cores: std::thread::available_parallelism()
                .map(usize::from)
                .unwrap_or(1),
        }
    }
}

fn uname() -> Option<String> {
    // SAFETY: uname fills the zeroed struct it is given; each field is then a
    // NUL-terminated string inside its array (zeroed, so terminated even if
    // the kernel filled the whole field).
    let u = unsafe {
        let mut u: libc::utsname = std::mem::zeroed();
        if libc::uname(&mut u) != 0 {
            return None;
        }
        u
    };
    let field = |f: &[libc::c_char]| {
        // SAFETY: see above; the array is NUL-terminated within its length.
        unsafe { CStr::from_ptr(f.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    };
    Some(format!(
        "{} {} {}",
        field(&u.sysname),
        field(&u.release),
        field(&u.machine)
    ))
}

/// PRETTY_NAME from the text of an os-release file.
pub fn pretty_name(text: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let v = l.trim().strip_prefix("PRETTY_NAME=")?;
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(v);
        Some(v.replace("\\\"", "\"").replace("\\\\", "\\"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pretty_name_and_uname() {
        let t = "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n";
        assert_eq!(
            pretty_name(t).as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
        assert_eq!(pretty_name("PRETTY_NAME=Plain\n").as_deref(), Some("Plain"));
        assert_eq!(pretty_name("ID=x\n"), None);
        let h = Host::this();
        assert!(h.kernel.starts_with("Linux "), "{h:?}");
        assert!(h.cores >= 1);
    }
}
