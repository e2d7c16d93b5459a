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
    /// number and check word. Returns the first record lost.
    ///
    /// The guest may still run while the kit reads: it then overwrites the
    /// oldest slots (a later record, `entries` on) as the kit reads them, even
    /// halfway through a slot. A slot that holds a later record was
    /// overwritten, not lost; one that looks wrong is read once more before it
    /// counts, as the guest may have been writing it.
    pub fn check_ring(&self, counter: u64) -> io::Result<Result<(), String>> {
        let Some(RecordRing {
            offset,
            entries,
            check,
        }) = self.probe.ring
        else {
            return Ok(Ok(()));
        };
        let read = |seq: u64| -> io::Result<Slot> {
            let mut rec = [0u8; 16];
            self.file
                .read_exact_at(&mut rec, offset + (seq % entries) * 16)?;
            let got = u64::from_le_bytes(rec[..8].try_into().expect("8 bytes"));
            let chk = u64::from_le_bytes(rec[8..].try_into().expect("8 bytes"));
            Ok(match got {
                _ if got > seq => Slot::Overwritten,
                _ if got == seq && chk == got ^ check => Slot::Holds,
                _ => Slot::Missing(got),
            })
        };
        let first = counter.saturating_sub(entries - 1).max(1);
        for seq in first..=counter {
            if let Slot::Missing(_) = read(seq)?
                && let Slot::Missing(got) = read(seq)?
            {
                return Ok(Err(format!("record {seq} missing (slot holds {got})")));
            }
        }
        Ok(Ok(()))
    }
}

/// What a record ring's slot says of the record it is read for.
enum Slot {
    /// That record, whole.
    Holds,
    /// A later record (the ring wrapped): that one is past checking.
    Overwritten,
    /// An earlier record, or a broken one: that one was lost.
    Missing(u64),
}

/// The inodes of the memfds named `name` that process `pid` holds in its fd table.
pub fn held_memfd_inodes(pid: i32, name: &str) -> io::Result<BTreeSet<u64>> {
    let want = memfd_link(name);
    let mut out = BTreeSet::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fd"))?.flatten() {
        if std::fs::read_link(e.path()).is_ok_and(|t| t.as_os_str() == want.as_str())
            && let Ok(m) = std::fs::metadata(e.path())
        {
            out.insert(m.ino());
        }
    }
    Ok(out)
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
    use std::num::NonZeroUsize;
    use std::os::fd::AsFd;
    use std::ptr::NonNull;

    use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap};

    const RAM_SIZE: usize = 0x3000;

    fn pid() -> i32 {
        std::process::id() as i32
    }

    /// A memfd of `RAM_SIZE` bytes, named uniquely for this process and test.
    fn ram_memfd(name: &str) -> memfd::Memfd {
        let mfd = memfd::MemfdOptions::default().create(name).unwrap();
        mfd.as_file().set_len(RAM_SIZE as u64).unwrap();
        mfd
    }

    /// A shared mapping of a whole memfd, as a VMM maps its guest RAM.
    struct Mapping(NonNull<std::ffi::c_void>);

    impl Mapping {
        fn new(fd: impl AsFd) -> Self {
            let len = NonZeroUsize::new(RAM_SIZE).unwrap();
            // SAFETY: a fresh shared mapping of a file; nothing else uses this range.
            let p = unsafe {
                mmap(
                    None,
                    len,
                    ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                    MapFlags::MAP_SHARED,
                    fd,
                    0,
                )
            };
            Mapping(p.expect("mmap"))
        }

        /// Writes through the mapping (the guest writing its RAM).
        fn write(&self, offset: usize, bytes: &[u8]) {
            assert!(offset + bytes.len() <= RAM_SIZE);
            // SAFETY: within the mapping, which is readable and writable.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    bytes.as_ptr(),
                    self.0.as_ptr().cast::<u8>().add(offset),
                    bytes.len(),
                )
            }
        }
    }

    impl Drop for Mapping {
        fn drop(&mut self) {
            // SAFETY: the mapping made in `new`, unmapped once.
            unsafe { munmap(self.0, RAM_SIZE) }.expect("munmap");
        }
    }

    fn probe(name: &str, check: u64) -> GuestProbe {
        GuestProbe {
            ram_memfd_name: name.into(),
            counter_offset: 0x1000,
            counter_width: 8,
            ring: Some(RecordRing {
                offset: 0x2000,
                entries: 4,
                check,
            }),
            device_io: false,
        }
    }

    #[test]
    fn reads_a_counter_and_ring_from_our_own_memfd() {
        let name = format!("cprkit-test-{}", std::process::id());
        let mfd = ram_memfd(&name);
        let map = Mapping::new(mfd.as_file());
        let inode = mfd.as_file().metadata().unwrap().ino();
        let check = 0x5a5a;
        // The "guest" writes through its mapping; the kit reads the memfd.
        map.write(0x1000, &7u64.to_le_bytes());
        for seq in 1..=7u64 {
            let mut rec = seq.to_le_bytes().to_vec();
            rec.extend((seq ^ check).to_le_bytes());
            map.write(0x2000 + (seq as usize % 4) * 16, &rec);
        }
        assert_eq!(
            mapped_memfd_inodes(pid(), &name).unwrap(),
            BTreeSet::from([inode])
        );
        let ram = GuestRam::open(pid(), &probe(&name, check)).unwrap();
        assert_eq!(ram.inode(), inode);
        assert_eq!(ram.counter().unwrap(), 7);
        assert_eq!(ram.check_ring(7).unwrap(), Ok(()));
        assert!(
            ram.check_ring(9).unwrap().is_err(),
            "records 8 and 9 were never written"
        );
        // A guest still running overwrites the oldest slot as the kit reads
        // it: record 11's sequence number is in, its check word not yet.
        map.write(0x2000 + 3 * 16, &11u64.to_le_bytes());
        assert_eq!(ram.check_ring(7).unwrap(), Ok(()), "overwritten, not lost");
        // A slot holding its record with a broken check word is lost.
        let mut broken = 6u64.to_le_bytes().to_vec();
        broken.extend(0u64.to_le_bytes());
        map.write(0x2000 + 2 * 16, &broken);
        assert_eq!(
            ram.check_ring(7).unwrap(),
            Err("record 6 missing (slot holds 6)".into())
        );
        // A write after the open is seen: the kit reads the live memfd.
        map.write(0x1000, &8u64.to_le_bytes());
        assert_eq!(ram.counter().unwrap(), 8);
        // A 4-byte counter reads only its 4 bytes.
        map.write(0x1000, &0x1_0000_0009u64.to_le_bytes());
        let narrow = GuestProbe {
            counter_width: 4,
            ..probe(&name, check)
        };
        assert_eq!(
            GuestRam::open(pid(), &narrow).unwrap().counter().unwrap(),
            9
        );
        drop(map);
        assert!(
            mapped_memfd_inodes(pid(), &name).unwrap().is_empty(),
            "unmapped"
        );
    }

    #[test]
    fn an_unmapped_memfd_of_the_same_name_is_not_guest_ram() {
        let name = format!("cprkit-test-unmapped-{}", std::process::id());
        // Held, not mapped (e.g. a copy the VMM made, or an fd passed and never used).
        let held = ram_memfd(&name);
        held.as_file()
            .write_all_at(&1u64.to_le_bytes(), 0x1000)
            .unwrap();
        let err = GuestRam::open(pid(), &probe(&name, 0)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
        assert!(err.to_string().contains(&name), "{err}");

        // The one that is mapped, under the same name, is the guest RAM.
        let ram_fd = ram_memfd(&name);
        let map = Mapping::new(ram_fd.as_file());
        map.write(0x1000, &2u64.to_le_bytes());
        let want = ram_fd.as_file().metadata().unwrap().ino();
        assert_ne!(want, held.as_file().metadata().unwrap().ino());
        let ram = GuestRam::open(pid(), &probe(&name, 0)).unwrap();
        assert_eq!((ram.inode(), ram.counter().unwrap()), (want, 2));

        // Mapped but no longer held: no fd to read it by.
        drop(ram);
        drop(ram_fd);
        assert_eq!(
            mapped_memfd_inodes(pid(), &name).unwrap(),
            BTreeSet::from([want])
        );
        assert_eq!(
            GuestRam::open(pid(), &probe(&name, 0)).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        drop(map);
        drop(held);
    }

    #[test]
    fn the_maps_of_a_process_that_is_gone_cannot_be_read() {
        assert!(mapped_memfd_inodes(i32::MAX, "anything").is_err());
        assert!(GuestRam::open(i32::MAX, &probe("anything", 0)).is_err());
    }
}
