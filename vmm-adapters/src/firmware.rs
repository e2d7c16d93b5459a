//! The kit's own counting guest for QEMU: a 64 KiB `-bios` image whose only
//! code is a real-mode loop that increments a 32-bit counter at guest physical
//! [`COUNTER_ADDR`] (the loop of `cprkit_device::boot`, which the kit's
//! vhost-user disk also carries in its boot sector). The kit reads that counter straight from the RAM memfd
//! (offset = guest physical address, since the counter is in low RAM).
//!
//! # Layout
//!
//! QEMU maps a `-bios` image so that its last byte is at 0xFFFF_FFFF; the CPU
//! starts at F000:FFF0 with the CS base at 0xFFFF_0000, that is at image offset
//! 0xFFF0 (the reset vector). Everything the guest runs is in the last 32
//! bytes of the image; every other byte is 0xF4 (`hlt`: with interrupts off,
//! as they are at reset, a stray jump stops the CPU instead of running junk).
//!
//! | offset | bytes            | instruction                                          |
//! |--------|------------------|------------------------------------------------------|
//! | FFE0   | `31 C0`          | `xor ax, ax`                                         |
//! | FFE2   | `8E D8`          | `mov ds, ax` (DS = 0: `[0x1000]` is guest physical 0x1000) |
//! | FFE4   | `66 FF 06 00 10` | `inc dword [0x1000]` (the counter)                   |
//! | FFE9   | `B9 00 10`       | `mov cx, 0x1000` (the delay)                         |
//! | FFEC   | `E2 FE`          | `loop $` (spin CX times)                             |
//! | FFEE   | `EB F4`          | `jmp short FFE4` (back to the `inc`)                 |
//! | FFF0   | `EB EE`          | reset vector: `jmp short FFE0`                       |
//!
//! Near and short jumps keep the CS base of reset (0xFFFF_0000), so the loop
//! runs from the image mapped under 4 GiB and never relies on the ISA BIOS
//! alias below 1 MiB. No jump crosses the end of the 64 KiB segment.
//!
//! # Why the delay loop
//!
//! Without it, TCG runs `inc; jmp` at about 300 million iterations a second on
//! this kind of machine: a 32-bit counter wraps every 13 seconds, and a wrap
//! between two readings looks like memory going back (MEM-1). With a delay of
//! 4096 `loop` iterations the counter rises by roughly 250,000 a second (some
//! 5,000 in the kit's 20 ms cut-over watch, plenty to see the guest move) and
//! wraps after hours, far beyond any trial.

use std::io;
use std::path::{Path, PathBuf};

/// The size of the image (QEMU maps it just under 4 GiB).
pub const IMAGE_SIZE: usize = 0x1_0000;
/// Where the CPU starts, as an offset in the image (F000:FFF0).
pub const RESET_VECTOR: usize = 0xFFF0;
/// Where the guest code starts in the image.
pub const CODE_OFFSET: usize = 0xFFE0;
/// Guest physical address of the counter (and its offset in the RAM memfd).
pub const COUNTER_ADDR: u64 = cprkit_device::boot::COUNTER_ADDR as u64;
/// The counter's width in bytes (little-endian).
pub const COUNTER_WIDTH: u8 = 4;
/// The image's file name in a trial directory.
pub const FILE_NAME: &str = "cprkit-counter-bios.bin";

/// The byte every unused place of the image holds: `hlt`.
const FILL: u8 = 0xF4;

/// The guest code at [`CODE_OFFSET`] (see the module documentation): the
/// kit's counting loop, then the reset vector's jump to it.
pub fn code() -> [u8; 18] {
    let mut code = [0u8; 18];
    code[..16].copy_from_slice(&cprkit_device::boot::counting_loop());
    code[16..].copy_from_slice(&[0xEB, 0xEE]); // FFF0 (reset vector) jmp short FFE0
    code
}

/// The whole 64 KiB image.
pub fn image() -> Vec<u8> {
    let mut img = vec![FILL; IMAGE_SIZE];
    let code = code();
    img[CODE_OFFSET..CODE_OFFSET + code.len()].copy_from_slice(&code);
    img
}

/// Writes the image into `dir` (once: an image already there with the right
/// content is reused) and returns its path. The file appears whole or not at
/// all (written aside, then renamed).
pub fn write_into(dir: &Path) -> io::Result<PathBuf> {
    // Built once per run: every trial's image is the same.
    static IMAGE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    crate::guest_file::write_image(dir, FILE_NAME, IMAGE.get_or_init(image))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The target of a short jump whose opcode is at image offset `at`.
    fn short_jump_target(img: &[u8], at: usize) -> usize {
        assert_eq!(img[at], 0xEB, "a short jmp at {at:#x}");
        let rel = img[at + 1] as i8 as isize;
        (at as isize + 2 + rel) as usize
    }

    #[test]
    fn layout() {
        let img = image();
        assert_eq!(img.len(), 64 * 1024);
        // The documented bytes, at their documented offsets.
        assert_eq!(&img[0xFFE0..0xFFE4], &[0x31, 0xC0, 0x8E, 0xD8]);
        assert_eq!(&img[0xFFE4..0xFFE9], &[0x66, 0xFF, 0x06, 0x00, 0x10]);
        assert_eq!(&img[0xFFE9..0xFFEC], &[0xB9, 0x00, 0x10]);
        assert_eq!(&img[0xFFEC..0xFFEE], &[0xE2, 0xFE]);
        assert_eq!(&img[0xFFEE..0xFFF0], &[0xEB, 0xF4]);
        assert_eq!(&img[0xFFF0..0xFFF2], &[0xEB, 0xEE]);
        // The control flow: reset -> FFE0, the loop's jmp -> the inc, loop $ -> itself.
        assert_eq!(short_jump_target(&img, RESET_VECTOR), CODE_OFFSET);
        assert_eq!(short_jump_target(&img, 0xFFEE), 0xFFE4);
        assert_eq!(0xFFEE_isize + img[0xFFED] as i8 as isize, 0xFFEC);
        // The counter's address in the inc's operand.
        assert_eq!(
            u16::from_le_bytes([img[0xFFE7], img[0xFFE8]]) as u64,
            COUNTER_ADDR
        );
        // Everything else is hlt.
        let code_end = CODE_OFFSET + code().len();
        assert!(img[..CODE_OFFSET].iter().all(|&b| b == 0xF4));
        assert!(img[code_end..].iter().all(|&b| b == 0xF4));
        assert_eq!(
            code_end, 0xFFF2,
            "the code ends right after the reset vector"
        );
    }

    #[test]
    fn written_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let p = write_into(dir.path()).unwrap();
        assert_eq!(p, dir.path().join(FILE_NAME));
        assert_eq!(std::fs::read(&p).unwrap(), image());
        let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&p).unwrap());
        assert_eq!(write_into(dir.path()).unwrap(), p);
        let again = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&p).unwrap());
        assert_eq!(ino, again, "a good image is not rewritten");
        // A damaged image is replaced.
        std::fs::write(&p, b"junk").unwrap();
        write_into(dir.path()).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), image());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }
}
