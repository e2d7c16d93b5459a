//! The control client: one connection to a daemon's control socket, every read and write
//! with a timeout.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::fault::DeviceFault;
use crate::ledger::LedgerEntry;
use crate::protocol::{Reply, Request};
use crate::state::DeviceState;

/// The timeout of every control read and write.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// A control request that failed.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error(
        "connect to the device daemon's control socket {path}: gave up after {waited:?}: {source}"
    )]
    Connect {
        path: PathBuf,
        waited: Duration,
        source: std::io::Error,
    },
    #[error("device control {cmd}: {source}")]
    Io { cmd: String, source: std::io::Error },
    #[error("device control {cmd}: the daemon closed the connection")]
    Closed { cmd: String },
    #[error("device control {cmd}: bad reply {line:?}: {source}")]
    BadReply {
        cmd: String,
        line: String,
        source: serde_json::Error,
    },
    #[error("device control {cmd}: refused: {error}")]
    Refused { cmd: String, error: String },
    #[error("device control {cmd}: reply lacks {field}")]
    Missing { cmd: String, field: &'static str },
    #[error("device control {cmd}: cannot encode the request: {source}")]
    Encode {
        cmd: String,
        source: serde_json::Error,
    },
}

/// One control connection.
#[derive(Debug)]
pub struct DeviceClient {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    timeout: Duration,
}

impl DeviceClient {
    /// Connects to `path`, retrying until the socket accepts or `timeout` passes.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Self, DeviceError> {
        let start = Instant::now();
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(source) => {
                    if start.elapsed() >= timeout {
                        return Err(DeviceError::Connect {
                            path: path.to_path_buf(),
                            waited: start.elapsed(),
                            source,
                        });
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        };
        let io = |source| DeviceError::Io {
            cmd: "connect".into(),
            source,
        };
        let writer = stream.try_clone().map_err(io)?;
        let client = DeviceClient {
            reader: BufReader::new(stream),
            writer,
            timeout: DEFAULT_TIMEOUT,
        };
        client.set_timeouts(DEFAULT_TIMEOUT).map_err(io)?;
        Ok(client)
    }

    fn set_timeouts(&self, read: Duration) -> std::io::Result<()> {
        self.reader.get_ref().set_read_timeout(Some(read))?;
        self.writer.set_write_timeout(Some(self.timeout))
    }

    fn call(&mut self, request: &Request, read_timeout: Duration) -> Result<Reply, DeviceError> {
        let cmd = match serde_json::to_value(request) {
            Ok(v) => v["cmd"].as_str().unwrap_or("?").to_string(),
            Err(source) => {
                return Err(DeviceError::Encode {
                    cmd: "?".into(),
                    source,
                });
            }
        };
        let io = |source| DeviceError::Io {
            cmd: cmd.clone(),
            source,
        };
        let mut line = serde_json::to_string(request).map_err(|source| DeviceError::Encode {
            cmd: cmd.clone(),
            source,
        })?;
        line.push('\n');
        self.set_timeouts(read_timeout).map_err(io)?;
        self.writer.write_all(line.as_bytes()).map_err(io)?;
        let mut reply = String::new();
        let n = self.reader.read_line(&mut reply).map_err(io)?;
        if n == 0 {
            return Err(DeviceError::Closed { cmd });
        }
        let reply: Reply =
            serde_json::from_str(reply.trim()).map_err(|source| DeviceError::BadReply {
                cmd: cmd.clone(),
                line: reply.clone(),
                source,
            })?;
        if !reply.ok {
            return Err(DeviceError::Refused {
                cmd,
                error: reply.error.unwrap_or_default(),
            });
        }
        Ok(reply)
    }

    /// The daemon's state.
    pub fn state(&mut self) -> Result<DeviceState, DeviceError> {
        let reply = self.call(&Request::State, self.timeout)?;
        reply.state.ok_or(DeviceError::Missing {
            cmd: "state".into(),
            field: "state",
        })
    }

    /// Waits (in the daemon) until its state changed past `version` (a
    /// [`DeviceState::version`]), or `timeout` passed; the state then.
    pub fn wait_change(
        &mut self,
        version: u64,
        timeout: Duration,
    ) -> Result<DeviceState, DeviceError> {
        let request = Request::WaitChange {
            since: version,
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        };
        let reply = self.call(&request, timeout + self.timeout)?;
        reply.state.ok_or(DeviceError::Missing {
            cmd: "wait-change".into(),
            field: "state",
        })
    }

    /// The ledger entries with `seq >= since`.
    pub fn ledger(&mut self, since: u64) -> Result<Vec<LedgerEntry>, DeviceError> {
        let reply = self.call(&Request::Ledger { since }, self.timeout)?;
        reply.entries.ok_or(DeviceError::Missing {
            cmd: "ledger".into(),
            field: "entries",
        })
    }

    /// Arms a device fault.
    pub fn arm(&mut self, fault: &DeviceFault) -> Result<(), DeviceError> {
        self.call(
            &Request::Arm {
                fault: fault.clone(),
            },
            self.timeout,
        )
        .map(|_| ())
    }

    /// Appends a Mark entry; returns its seq.
    pub fn mark(&mut self, label: &str) -> Result<u64, DeviceError> {
        let reply = self.call(
            &Request::Mark {
                label: label.to_string(),
            },
            self.timeout,
        )?;
        reply.seq.ok_or(DeviceError::Missing {
            cmd: "mark".into(),
            field: "seq",
        })
    }

    /// Waits (in the daemon) for an Io entry from `pid` with seq > `after`; `None` on timeout.
    pub fn wait_io(
        &mut self,
        pid: i32,
        after: u64,
        timeout: Duration,
    ) -> Result<Option<LedgerEntry>, DeviceError> {
        let request = Request::WaitIo {
            pid,
            after,
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        };
        let reply = self.call(&request, timeout + self.timeout)?;
        Ok(reply.entry.flatten())
    }
}
