//! Listening UNIX sockets: bound after removing a stale file at the path (as
//! QEMU does), remembered for unlinking at exit, and unlinked once accepted.

use std::io;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// A listening socket and the path it is bound to.
#[derive(Debug)]
pub struct Listener {
    pub listener: UnixListener,
    pub path: PathBuf,
}

impl Listener {
    /// Removes a stale file at `path`, binds and listens there.
    pub fn bind(path: &Path) -> io::Result<Self> {
        match std::fs::remove_file(path) {
            Ok(()) => crate::log!("removed a stale file at {}", path.display()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let listener = UnixListener::bind(path)?;
        crate::log::unlink_at_exit(path.to_path_buf());
        Ok(Self {
            listener,
            path: path.to_path_buf(),
        })
    }

    /// Accepts one connection, then closes the listener and unlinks its path.
    pub fn accept_once(self) -> io::Result<UnixStream> {
        let (stream, _) = loop {
            match self.listener.accept() {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        let _ = std::fs::remove_file(&self.path);
        crate::log::forget_unlink(&self.path);
        Ok(stream)
    }
}
