//! Readiness of a UNIX socket, read from /proc/net/unix: a path is ready when a
//! socket bound to it is listening. Never by connecting: a probe connection to a
//! cpr socket is taken by QEMU as a migration stream and kills the target.

use std::path::Path;
use std::time::{Duration, Instant};

/// `__SO_ACCEPTCON`, the flag /proc/net/unix shows for a listening socket.
const SO_ACCEPTCON: u32 = 0x0001_0000;

/// Whether some socket bound to `path` is listening now.
pub fn is_listening(path: &Path) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/unix") else {
        return false;
    };
    let want = path.to_string_lossy();
    table.lines().skip(1).any(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        // Num RefCount Protocol Flags Type St Inode Path
        f.len() >= 8
            && f[7] == want
            && u32::from_str_radix(f[3], 16).is_ok_and(|flags| flags & SO_ACCEPTCON != 0)
    })
}

/// Waits until `path` is listening, `give_up` returns true, or the deadline passes.
pub fn wait_listening(path: &Path, deadline: Instant, mut give_up: impl FnMut() -> bool) -> bool {
    loop {
        if is_listening(path) {
            return true;
        }
        if give_up() || Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::{UnixListener, UnixStream};

    #[test]
    fn listening_then_not() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.sock");
        assert!(!is_listening(&p));
        let l = UnixListener::bind(&p).unwrap();
        assert!(is_listening(&p));
        let _c = UnixStream::connect(&p).unwrap();
        drop(l);
        assert!(!is_listening(&p), "a stale socket file is not readiness");
    }
}
