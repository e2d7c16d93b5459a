//! refvmm's migration wire: the CPR message (sent with the RAM memfd over the
//! cpr channel), the device state line, the target's `loaded` and the
//! source's `go` (main channel), each one JSON object on one line, and a
//! bounded line reader for them.
//!
//! Parsing is strict (unknown or missing members are errors), since the kit
//! may flip bytes on a channel.

use std::io::{self, BufRead, ErrorKind};

use serde::{Deserialize, Serialize};

/// Magic of the CPR message.
pub const CPR_MAGIC: &str = "cprkit-cpr-1";
/// Magic of the device state.
pub const STATE_MAGIC: &str = "cprkit-refvmm-1";
/// Longest line accepted on a migration channel.
pub const MAX_LINE: usize = 64 * 1024;

/// The CPR state: `{"type":"cpr-state","magic":"cprkit-cpr-1","ram_size":N}`,
/// sent with the RAM memfd attached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CprState {
    #[serde(rename = "type")]
    pub kind: String,
    pub magic: String,
    pub ram_size: u64,
}

/// The vCPU part of the device state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VcpuState {
    pub r: u64,
}

/// The vhost-user-blk part of the device state: what the target's ring 0
/// starts from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlkState {
    /// The ring base: the source's GET_VRING_BASE answer (the device's next
    /// available index).
    pub base: u16,
}

/// The device state:
/// `{"type":"state","magic":"cprkit-refvmm-1","running":B,"vcpu":{"r":R},"ram_size":N}`,
/// with `"blk":{"base":B}` at the end when the VM has a vhost-user-blk
/// device (absent otherwise, so the wire without a device is unchanged).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceState {
    #[serde(rename = "type")]
    pub kind: String,
    pub magic: String,
    /// Whether the source was running when `migrate` came.
    pub running: bool,
    pub vcpu: VcpuState,
    pub ram_size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blk: Option<BlkState>,
    /// Whether the source had never run (`prelaunch`, started with `-S`):
    /// the target then ends `prelaunch` too (absent when false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub prelaunch: bool,
    /// The VM's extra devices (`--extra-device`), each a section the target
    /// must have (absent when there are none: the wire is unchanged).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
}

/// A bare `{"type":...}` message (`loaded`, `go`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Bare {
    #[serde(rename = "type")]
    kind: String,
}

impl CprState {
    pub fn new(ram_size: u64) -> Self {
        Self {
            kind: "cpr-state".into(),
            magic: CPR_MAGIC.into(),
            ram_size,
        }
    }

    /// Parses and checks a CPR message line (without its newline).
    pub fn parse(line: &[u8]) -> Result<Self, String> {
        let s: Self = serde_json::from_slice(line).map_err(|e| format!("bad CPR message: {e}"))?;
        if s.kind != "cpr-state" || s.magic != CPR_MAGIC {
            return Err(format!(
                "not a CPR state (type '{}', magic '{}')",
                s.kind, s.magic
            ));
        }
        Ok(s)
    }
}

impl DeviceState {
    pub fn new(running: bool, r: u64, ram_size: u64) -> Self {
        Self {
            kind: "state".into(),
            magic: STATE_MAGIC.into(),
            running,
            vcpu: VcpuState { r },
            ram_size,
            blk: None,
            prelaunch: false,
            devices: Vec::new(),
        }
    }

    /// Parses and checks a device state line (without its newline).
    pub fn parse(line: &[u8]) -> Result<Self, String> {
        let s: Self = serde_json::from_slice(line).map_err(|e| format!("bad device state: {e}"))?;
        if s.kind != "state" || s.magic != STATE_MAGIC {
            return Err(format!(
                "not a refvmm device state (type '{}', magic '{}')",
                s.kind, s.magic
            ));
        }
        Ok(s)
    }
}

/// Serialises a message as one line, with its newline.
pub fn line<T: Serialize>(msg: &T) -> Vec<u8> {
    let mut v = serde_json::to_vec(msg).expect("migration messages serialise");
    v.push(b'\n');
    v
}

/// The target's `{"type":"loaded"}` line.
pub fn loaded_line() -> Vec<u8> {
    line(&Bare {
        kind: "loaded".into(),
    })
}

/// The source's `{"type":"go"}` line.
pub fn go_line() -> Vec<u8> {
    line(&Bare { kind: "go".into() })
}

/// Checks that `line` is exactly the bare message `{"type":kind}`.
pub fn expect_bare(line: &[u8], kind: &str) -> Result<(), String> {
    match serde_json::from_slice::<Bare>(line) {
        Ok(b) if b.kind == kind => Ok(()),
        Ok(b) => Err(format!("expected '{kind}', got '{}'", b.kind)),
        Err(e) => Err(format!("expected '{kind}': bad line: {e}")),
    }
}

/// Reads one line (without its newline) of at most [`MAX_LINE`] bytes.
/// `Ok(None)` is a clean end of stream before any byte; an end of stream in
/// the middle of a line is an error. Every message is a JSON object in
/// printable ASCII, so a line is refused at its first byte that cannot belong
/// to one (as QEMU checks a stream's magic first): damaged framing fails at
/// once instead of waiting for a newline that will never come.
pub fn read_line<R: BufRead>(r: &mut R) -> io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::new();
    loop {
        let avail = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if avail.is_empty() {
            if buf.is_empty() {
                return Ok(None);
            }
            return Err(io::Error::new(
                ErrorKind::UnexpectedEof,
                "end of stream in the middle of a line",
            ));
        }
        let (take, done) = match avail.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (avail.len(), false),
        };
        let body = &avail[..if done { take - 1 } else { take }];
        if buf.is_empty() && body.first().is_some_and(|&b| b != b'{') {
            return Err(io::Error::new(
                ErrorKind::InvalidData,
                format!("not a message: first byte {:#04x}", body[0]),
            ));
        }
        if let Some(&bad) = body.iter().find(|&&b| !(b' '..=b'~').contains(&b)) {
            return Err(io::Error::new(
                ErrorKind::InvalidData,
                format!("not a message: byte {bad:#04x}"),
            ));
        }
        buf.extend_from_slice(&avail[..take]);
        r.consume(take);
        if buf.len() > MAX_LINE + 1 {
            return Err(io::Error::new(ErrorKind::InvalidData, "line too long"));
        }
        if done {
            buf.pop();
            return Ok(Some(buf));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_have_the_contract_shape() {
        assert_eq!(
            line(&CprState::new(4096)),
            b"{\"type\":\"cpr-state\",\"magic\":\"cprkit-cpr-1\",\"ram_size\":4096}\n"
        );
        assert_eq!(
            line(&DeviceState::new(true, 9, 4096)),
            b"{\"type\":\"state\",\"magic\":\"cprkit-refvmm-1\",\"running\":true,\"vcpu\":{\"r\":9},\"ram_size\":4096}\n"
        );
        assert_eq!(loaded_line(), b"{\"type\":\"loaded\"}\n");
        assert_eq!(go_line(), b"{\"type\":\"go\"}\n");
    }

    #[test]
    fn strict_parsing_rejects_flipped_bytes() {
        let good = line(&DeviceState::new(false, 12, 8192));
        let good = &good[..good.len() - 1];
        assert_eq!(
            DeviceState::parse(good).unwrap(),
            DeviceState::new(false, 12, 8192)
        );
        for i in 0..good.len() {
            let mut bad = good.to_vec();
            bad[i] ^= 0xff;
            assert!(DeviceState::parse(&bad).is_err(), "flip at {i}");
        }
        let mut with_blk = DeviceState::new(true, 12, 8192);
        with_blk.blk = Some(BlkState { base: 300 });
        let good = line(&with_blk);
        let good = &good[..good.len() - 1];
        assert!(good.ends_with(b",\"blk\":{\"base\":300}}"));
        assert_eq!(DeviceState::parse(good).unwrap(), with_blk);
        for i in 0..good.len() {
            let mut bad = good.to_vec();
            bad[i] ^= 0xff;
            assert!(DeviceState::parse(&bad).is_err(), "flip at {i}");
        }
        let extra = br#"{"type":"state","magic":"cprkit-refvmm-1","running":true,"vcpu":{"r":1},"ram_size":8,"blk":{"base":1,"x":2}}"#;
        assert!(DeviceState::parse(extra).is_err());
        let big = br#"{"type":"state","magic":"cprkit-refvmm-1","running":true,"vcpu":{"r":1},"ram_size":8,"blk":{"base":65536}}"#;
        assert!(DeviceState::parse(big).is_err());
        assert!(expect_bare(b"{\"type\":\"go\"}", "go").is_ok());
        assert!(expect_bare(b"{\"type\":\"go\",\"x\":1}", "go").is_err());
        assert!(expect_bare(b"{\"type\":\"loaded\"}", "go").is_err());
    }

    #[test]
    fn read_line_refuses_damaged_framing_without_waiting_for_a_newline() {
        let flipped: Vec<u8> = b"{\"type\":\"go\"}".iter().map(|b| b ^ 0xff).collect();
        let mut r = io::BufReader::new(&flipped[..]);
        assert_eq!(
            read_line(&mut r).unwrap_err().kind(),
            ErrorKind::InvalidData
        );
        let mut r = io::BufReader::new(&b"{\"a\":\x01"[..]);
        assert_eq!(
            read_line(&mut r).unwrap_err().kind(),
            ErrorKind::InvalidData
        );
    }

    #[test]
    fn read_line_distinguishes_eof_and_truncation() {
        let mut r = io::Cursor::new(b"{}\n{".to_vec());
        assert_eq!(read_line(&mut r).unwrap(), Some(b"{}".to_vec()));
        assert_eq!(
            read_line(&mut r).unwrap_err().kind(),
            ErrorKind::UnexpectedEof
        );
        let mut r = io::Cursor::new(Vec::new());
        assert_eq!(read_line(&mut r).unwrap(), None);
    }
}
