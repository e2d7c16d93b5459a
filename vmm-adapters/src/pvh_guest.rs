//! The kit's own counting guest for Cloud Hypervisor: a tiny 64-bit ELF
//! "kernel" with a Xen PVH note, given to `--kernel`. Cloud Hypervisor's
//! loader (rust-vmm's linux-loader) reads the note and starts the vCPU at its
//! 32-bit entry in protected mode, paging off, flat segments, interrupts off.
//! The code there increments the 32-bit word at guest physical
//! [`COUNTER_ADDR`] for ever, a short delay between two increments; guest
//! physical addresses below the first hole are offsets in the RAM memfd, so
//! the kit reads the counter at that offset of `/memfd:ch_ram`.
//!
//! # Layout
//!
//! | file offset | what                                                     |
//! |-------------|----------------------------------------------------------|
//! | 0x00        | ELF64 header: x86-64, executable, entry [`ENTRY`]         |
//! | 0x40        | program header 0: `PT_LOAD` of the code at [`ENTRY`]      |
//! | 0x78        | program header 1: `PT_NOTE`                               |
//! | 0xB0        | the note: name `Xen`, type 18 (`XEN_ELFNOTE_PHYS32_ENTRY`), desc = [`ENTRY`] as a u32 |
//! | 0x100       | the code                                                 |
//!
//! The code (32-bit protected mode):
//!
//! | offset | bytes               | instruction                        |
//! |--------|---------------------|------------------------------------|
//! | 0x0    | `FF 05 00 10 00 00` | `inc dword [0x1000]` (the counter) |
//! | 0x6    | `B9 10 00 00 00`    | `mov ecx, 16` (the delay)          |
//! | 0xB    | `E2 FE`             | `loop $` (spin ECX times)          |
//! | 0xD    | `EB F1`             | `jmp short 0x0` (back to the `inc`) |
//!
//! Under KVM a bare `inc; jmp` can run a billion times a second, and a 32-bit
//! counter that wraps between two readings looks like memory going back
//! (MEM-1); the delay keeps it far from wrapping within a trial.

use std::io;
use std::path::{Path, PathBuf};

/// Guest physical address of the counter (and its offset in the RAM memfd).
pub const COUNTER_ADDR: u64 = 0x1000;
/// The counter's width in bytes (little-endian).
pub const COUNTER_WIDTH: u8 = 4;
/// Where the code is loaded and starts (1 MiB, above Cloud Hypervisor's
/// low-memory structures).
pub const ENTRY: u32 = 0x10_0000;
/// The image's file name in a trial directory.
pub const FILE_NAME: &str = "cprkit-counter-pvh.elf";

const EHDR_SIZE: u16 = 64;
const PHDR_SIZE: u16 = 56;
const NOTE_OFFSET: usize = 0xB0;
const CODE_OFFSET: usize = 0x100;
/// `PT_LOAD`, `PT_NOTE`.
const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
/// The PVH note's type.
pub const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

/// The guest code (see the module documentation).
pub const fn code() -> [u8; 15] {
    [
        0xFF, 0x05, 0x00, 0x10, 0x00, 0x00, // inc dword [0x1000]
        0xB9, 0x10, 0x00, 0x00, 0x00, // mov ecx, 16
        0xE2, 0xFE, // loop $
        0xEB, 0xF1, // jmp short back to the inc
    ]
}

/// The PVH note: namesz, descsz, type, "Xen\0", the entry.
fn note() -> Vec<u8> {
    let mut n = Vec::new();
    n.extend_from_slice(&4u32.to_le_bytes());
    n.extend_from_slice(&4u32.to_le_bytes());
    n.extend_from_slice(&XEN_ELFNOTE_PHYS32_ENTRY.to_le_bytes());
    n.extend_from_slice(b"Xen\0");
    n.extend_from_slice(&ENTRY.to_le_bytes());
    n
}

#[allow(clippy::too_many_arguments)]
fn phdr(kind: u32, flags: u32, offset: u64, addr: u64, size: u64, align: u64) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&kind.to_le_bytes());
    p.extend_from_slice(&flags.to_le_bytes());
    p.extend_from_slice(&offset.to_le_bytes());
    p.extend_from_slice(&addr.to_le_bytes()); // p_vaddr
    p.extend_from_slice(&addr.to_le_bytes()); // p_paddr
    p.extend_from_slice(&size.to_le_bytes()); // p_filesz
    p.extend_from_slice(&size.to_le_bytes()); // p_memsz
    p.extend_from_slice(&align.to_le_bytes());
    p
}

/// The whole ELF image.
pub fn image() -> Vec<u8> {
    let code = code();
    let note = note();
    let mut img = Vec::with_capacity(CODE_OFFSET + code.len());
    // e_ident: magic, ELFCLASS64, ELFDATA2LSB, EV_CURRENT, System V ABI.
    img.extend_from_slice(b"\x7fELF");
    img.extend_from_slice(&[2, 1, 1, 0]);
    img.extend_from_slice(&[0; 8]);
    img.extend_from_slice(&2u16.to_le_bytes()); // e_type: ET_EXEC
    img.extend_from_slice(&62u16.to_le_bytes()); // e_machine: EM_X86_64
    img.extend_from_slice(&1u32.to_le_bytes()); // e_version
    img.extend_from_slice(&u64::from(ENTRY).to_le_bytes()); // e_entry
    img.extend_from_slice(&u64::from(EHDR_SIZE).to_le_bytes()); // e_phoff
    img.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    img.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    img.extend_from_slice(&EHDR_SIZE.to_le_bytes()); // e_ehsize
    img.extend_from_slice(&PHDR_SIZE.to_le_bytes()); // e_phentsize
    img.extend_from_slice(&2u16.to_le_bytes()); // e_phnum
    img.extend_from_slice(&64u16.to_le_bytes()); // e_shentsize
    img.extend_from_slice(&0u16.to_le_bytes()); // e_shnum
    img.extend_from_slice(&0u16.to_le_bytes()); // e_shstrndx
    debug_assert_eq!(img.len(), usize::from(EHDR_SIZE));
    // PF_R | PF_X for the code, PF_R for the note.
    img.extend(phdr(
        PT_LOAD,
        5,
        CODE_OFFSET as u64,
        u64::from(ENTRY),
        code.len() as u64,
        0x1000,
    ));
    img.extend(phdr(
        PT_NOTE,
        4,
        NOTE_OFFSET as u64,
        0,
        note.len() as u64,
        4,
    ));
    img.resize(NOTE_OFFSET, 0);
    img.extend_from_slice(&note);
    img.resize(CODE_OFFSET, 0);
    img.extend_from_slice(&code);
    img
}

/// Writes the image into `dir` (reused when already there with the right
/// content) and returns its path; it appears whole or not at all.
pub fn write_into(dir: &Path) -> io::Result<PathBuf> {
    // Built once per run: every trial's image is the same.
    static IMAGE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    crate::guest_file::write_image(dir, FILE_NAME, IMAGE.get_or_init(image))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u16_at(b: &[u8], at: usize) -> u16 {
        u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
    }
    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }
    fn u64_at(b: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
    }

    #[test]
    fn the_header_names_a_64_bit_x86_executable_entered_at_the_code() {
        let img = image();
        assert_eq!(&img[..4], b"\x7fELF");
        assert_eq!((img[4], img[5]), (2, 1), "ELFCLASS64, little-endian");
        assert_eq!(u16_at(&img, 16), 2, "ET_EXEC");
        assert_eq!(u16_at(&img, 18), 62, "EM_X86_64");
        assert_eq!(u64_at(&img, 24), u64::from(ENTRY));
        assert_eq!(u64_at(&img, 32), 64, "program headers right after");
        assert_eq!(u16_at(&img, 54), 56, "Elf64_Phdr size");
        assert_eq!(u16_at(&img, 56), 2);
    }

    #[test]
    fn the_load_segment_puts_the_code_at_the_entry() {
        let img = image();
        let ph = 64;
        assert_eq!(u32_at(&img, ph), PT_LOAD);
        let off = u64_at(&img, ph + 8) as usize;
        assert_eq!(u64_at(&img, ph + 24), u64::from(ENTRY), "p_paddr");
        let size = u64_at(&img, ph + 32) as usize;
        assert_eq!(&img[off..off + size], &code());
    }

    #[test]
    fn the_note_is_xens_phys32_entry() {
        let img = image();
        let ph = 64 + 56;
        assert_eq!(u32_at(&img, ph), PT_NOTE);
        let off = u64_at(&img, ph + 8) as usize;
        assert_eq!(off % 4, 0);
        assert_eq!(u32_at(&img, off), 4, "namesz");
        assert_eq!(u32_at(&img, off + 4), 4, "descsz");
        assert_eq!(u32_at(&img, off + 8), XEN_ELFNOTE_PHYS32_ENTRY);
        assert_eq!(&img[off + 12..off + 16], b"Xen\0");
        assert_eq!(u32_at(&img, off + 16), ENTRY);
        assert_eq!(u64_at(&img, ph + 32), 20, "the note is the segment");
    }

    #[test]
    fn the_loop_jumps_back_to_its_increment() {
        let c = code();
        // inc dword [COUNTER_ADDR]: FF /0 with a disp32 (ModRM 05).
        assert_eq!(&c[..2], &[0xFF, 0x05]);
        assert_eq!(u32_at(&c, 2), COUNTER_ADDR as u32);
        // The short jump's target: the end of the jump plus its signed displacement.
        let jmp_end = c.len() as i64;
        assert_eq!(c[c.len() - 2], 0xEB);
        assert_eq!(jmp_end + i64::from(c[c.len() - 1] as i8), 0);
        // loop $ spins on itself.
        assert_eq!(&c[11..13], &[0xE2, 0xFE]);
    }

    #[test]
    fn write_into_writes_once_and_reuses() {
        let dir = tempfile::tempdir().unwrap();
        let p = write_into(dir.path()).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), image());
        assert_eq!(write_into(dir.path()).unwrap(), p);
    }
}
