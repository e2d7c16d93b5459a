//! Accepting on the daemon's listening sockets: binding (a stale socket file
//! replaced) and an accept that returns every poll period, so an accept loop
//! sees its stop flag.

use std::io;
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

/// How long an accept loop waits before looking at its stop flag again.
pub(crate) const ACCEPT_POLL_MS: u16 = 100;

/// Binds `path`, replacing a stale socket file (one nobody accepts on).
pub(crate) fn bind(path: &Path) -> io::Result<UnixListener> {
    match UnixListener::bind(path) {
        Ok(l) => Ok(l),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            if UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{}: another daemon is listening", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
            UnixListener::bind(path)
        }
        Err(e) => Err(e),
    }
    .map_err(|e| io::Error::new(e.kind(), format!("bind {}: {e}", path.display())))
}

/// Waits up to one poll period for a connection; `None` on timeout.
pub(crate) fn accept_timed(listener: &UnixListener) -> io::Result<Option<UnixStream>> {
    let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
    match poll(&mut fds, PollTimeout::from(ACCEPT_POLL_MS)) {
        Ok(0) | Err(nix::errno::Errno::EINTR) => return Ok(None),
        Ok(_) => {}
        Err(e) => return Err(io::Error::from(e)),
    }
    match listener.accept() {
        Ok((stream, _)) => {
            stream.set_nonblocking(false)?;
            Ok(Some(stream))
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e),
    }
}
