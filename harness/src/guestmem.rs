//! The guest's memory as the kit sees it from outside: the VMM's RAM memfd,
//! found and opened through /proc/PID/fd, and the memfd inodes the VMM maps,
//! read from /proc/PID/maps. The kit reads the guest counter and the record ring
//! straight from the memfd, whatever state the VMM process is in.

use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};

use crate::adapter::{GuestProbe, RecordRing};

/// An open handle on a VMM's guest RAM memfd.
#[derive(Debug)]
pub struct GuestRam {
    file: File,
    inode: u64,
    probe: GuestProbe,
}

fn memfd_link(name: &str) -> String {
    format!("/memfd:{name} (deleted)")
}

impl GuestRam {
    /// Opens the RAM memfd that process `pid` holds and maps, found by its
    /// memfd name (a held fd of that name that is not mapped is not its RAM).
    pub fn open(pid: i32, probe: &GuestProbe) -> io::Result<Self> {
        let want = memfd_link(&probe.ram_memfd_name);
        let mapped = mapped_memfd_inodes(pid, &probe.ram_memfd_name)?;
        for e in std::fs::read_dir(format!("/proc/{pid}/fd"))?.flatten() {
            if std::fs::read_link(e.path()).is_ok_and(|t| t.as_os_str() == want.as_str()) {
                let file = File::open(e.path())?;
                let inode = file.metadata()?.ino();
                if mapped.contains(&inode) {
                    return Ok(GuestRam {
                        file,
                        inode,
                        probe: probe.clone(),
                    });
                }
            }
        }
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("pid {pid} holds no memfd named {}", probe.ram_memfd_name),
        ))
    }

    pub fn inode(&self) -> u64 {
        self.inode
    }

    /// The guest counter now.
    pub fn counter(&self) -> io::Result<u64> {
        let mut buf = [0u8; 8];
        let w = usize::from(self.probe.counter_width).min(8);
        self.file
            .read_exact_at(&mut buf[..w], self.probe.counter_offset)?;
        Ok(u64::from_le_bytes(buf))
    }

    /// Checks the last records up to `counter`: each slot holds its own sequence
    /// number and check word. Returns the first inconsistency.
    pub fn check_ring(&self, counter: u64) -> io::Result<Result<(), String>> {
        let Some(RecordRing {
            offset,
            entries,
            check,
        }) = self.probe.ring
        else {
            return Ok(Ok(()));
        };
        let first = counter.saturating_sub(entries - 1).max(1);
        for seq in first..=counter {
            let mut rec = [0u8; 16];
            self.file
                .read_exact_at(&mut rec, offset + (seq % entries) * 16)?;
            let got = u64::from_le_bytes(rec[..8].try_into().expect("8 bytes"));
            let chk = u64::from_le_bytes(rec[8..].try_into().expect("8 bytes"));
            if got < seq || chk != got ^ check {
                return Ok(Err(format!("record {seq} missing (slot holds {got})")));
            }
        }
        Ok(Ok(()))
    }
}

/// The inodes of the memfds named `name` that process `pid` maps.
pub fn mapped_memfd_inodes(pid: i32, name: &str) -> io::Result<BTreeSet<u64>> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))?;
    let prefix = format!("/memfd:{name}");
    Ok(maps
        .lines()
        .filter_map(|line| {
            // address perms offset dev inode pathname
            let mut f = line.split_whitespace();
            let inode = f.nth(4)?.parse::<u64>().ok()?;
            let path: String = f.collect::<Vec<_>>().join(" ");
            path.starts_with(&prefix).then_some(inode)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn reads_a_counter_and_ring_from_our_own_memfd() {
        let name = format!("cprkit-test-{}", std::process::id());
        let mfd = memfd::MemfdOptions::default().create(&name).unwrap();
        let f = mfd.as_file();
        f.set_len(0x3000).unwrap();
        let check = 0x5a5a;
        f.write_all_at(&7u64.to_le_bytes(), 0x1000).unwrap();
        for seq in 1..=7u64 {
            let mut rec = seq.to_le_bytes().to_vec();
            rec.extend((seq ^ check).to_le_bytes());
            f.write_all_at(&rec, 0x2000 + (seq % 4) * 16).unwrap();
        }
        let probe = GuestProbe {
            ram_memfd_name: name.clone(),
            counter_offset: 0x1000,
            counter_width: 8,
            ring: Some(RecordRing {
                offset: 0x2000,
                entries: 4,
                check,
            }),
        };
        let ram = GuestRam::open(std::process::id() as i32, &probe).unwrap();
        assert_eq!(ram.counter().unwrap(), 7);
        assert_eq!(ram.check_ring(7).unwrap(), Ok(()));
        assert!(
            ram.check_ring(9).unwrap().is_err(),
            "records 8 and 9 were never written"
        );
        let _ = f.as_raw_fd();
        assert!(
            mapped_memfd_inodes(std::process::id() as i32, &name)
                .unwrap()
                .is_empty(),
            "not mapped"
        );
    }
}
