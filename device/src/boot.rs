//! The program in the disk's boot sector: the kit's counting guest, a
//! real-mode loop that increments a 32-bit counter at guest physical
//! [`COUNTER_ADDR`]. A firmware that boots from the device (QEMU's SeaBIOS)
//! reads it over vhost-user, which is real device I/O, and runs it; the kit
//! then reads the counter straight from the guest's RAM memfd. The same loop
//! is the body of the kit's `-bios` image for QEMU without a device.
//!
//! | offset | bytes            | instruction                                  |
//! |--------|------------------|----------------------------------------------|
//! | 0      | `31 C0`          | `xor ax, ax`                                 |
//! | 2      | `8E D8`          | `mov ds, ax` (`[0x1000]` is guest physical)  |
//! | 4      | `66 FF 06 00 10` | `inc dword [0x1000]` (the counter)           |
//! | 9      | `B9 00 10`       | `mov cx, 0x1000` ([`DELAY`])                 |
//! | 12     | `E2 FE`          | `loop $` (spin CX times)                     |
//! | 14     | `EB F4`          | `jmp short 4` (back to the `inc`)            |
//!
//! Only short jumps: the code runs wherever it is loaded (0000:7C00 from a
//! boot sector, the top of the BIOS segment from a `-bios` image).

/// Guest physical address of the counter.
pub const COUNTER_ADDR: u16 = 0x1000;
/// `loop` iterations between two increments (without it TCG would wrap a
/// 32-bit counter in seconds).
pub const DELAY: u16 = 0x1000;

/// The loop's machine code.
pub fn counting_loop() -> [u8; 16] {
    let [a_lo, a_hi] = COUNTER_ADDR.to_le_bytes();
    let [d_lo, d_hi] = DELAY.to_le_bytes();
    [
        0x31, 0xC0, // xor ax, ax
        0x8E, 0xD8, // mov ds, ax
        0x66, 0xFF, 0x06, a_lo, a_hi, // inc dword [COUNTER_ADDR]
        0xB9, d_lo, d_hi, // mov cx, DELAY
        0xE2, 0xFE, // loop $
        0xEB, 0xF4, // jmp short (the inc)
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loop_jumps_back_to_its_increment() {
        let code = counting_loop();
        assert_eq!(&code[4..9], &[0x66, 0xFF, 0x06, 0x00, 0x10]);
        let rel = code[15] as i8 as isize;
        assert_eq!(16 + rel, 4, "jmp short lands on the inc");
        assert_eq!(14 + code[13] as i8 as isize, 12, "loop $ spins on itself");
    }
}
