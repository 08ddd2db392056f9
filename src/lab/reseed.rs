//! `reseed`: a 183-byte static x86-64 program that makes the guest kernel
//! reseed its random number generator now (`ioctl(RNDRESEEDCRNG)`).
//!
//! Every clone wakes up with the template's RNG state, so two clones would
//! draw the same random bytes (seen here: the same
//! `/proc/sys/kernel/random/uuid` values). Writing the host's bytes to
//! `/dev/urandom` only mixes them into the input pool, used at the next
//! scheduled reseed; the guest kernel (Debian's cloud kernel) has no vmgenid
//! driver that would reseed on a restore; busybox has no tool for the ioctl.
//! So vmlab carries this program and puts it into every template. The ioctl
//! also mixes in RDRAND (the template's CPU model requires it), which differs
//! per clone even without the host's bytes.
//!
//! Exit status: 0, or the errno of `open` or `ioctl` (1 is EPERM: not root).

/// The machine code (`as --64`, Intel syntax), position independent:
///
/// ```text
///  0: 48 8d 3d 2b 00 00 00   lea  rdi, [rip + path]
///  7: be 01 00 00 00         mov  esi, 1          ; O_WRONLY
///  c: b8 02 00 00 00         mov  eax, 2          ; open(path, O_WRONLY)
/// 11: 0f 05                  syscall
/// 13: 85 c0                  test eax, eax
/// 15: 78 10                  js   27              ; open failed: exit with its errno
/// 17: 89 c7                  mov  edi, eax
/// 19: be 07 52 00 00         mov  esi, 0x5207     ; RNDRESEEDCRNG
/// 1e: 31 d2                  xor  edx, edx
/// 20: b8 10 00 00 00         mov  eax, 16         ; ioctl(fd, RNDRESEEDCRNG, 0)
/// 25: 0f 05                  syscall
/// 27: f7 d8                  neg  eax             ; 0, or the errno
/// 29: 89 c7                  mov  edi, eax
/// 2b: b8 3c 00 00 00         mov  eax, 60         ; exit(status)
/// 30: 0f 05                  syscall
/// 32: "/dev/urandom\0"
/// ```
const CODE: [u8; 63] = [
    0x48, 0x8d, 0x3d, 0x2b, 0x00, 0x00, 0x00, //
    0xbe, 0x01, 0x00, 0x00, 0x00, //
    0xb8, 0x02, 0x00, 0x00, 0x00, //
    0x0f, 0x05, //
    0x85, 0xc0, //
    0x78, 0x10, //
    0x89, 0xc7, //
    0xbe, 0x07, 0x52, 0x00, 0x00, //
    0x31, 0xd2, //
    0xb8, 0x10, 0x00, 0x00, 0x00, //
    0x0f, 0x05, //
    0xf7, 0xd8, //
    0x89, 0xc7, //
    0xb8, 0x3c, 0x00, 0x00, 0x00, //
    0x0f, 0x05, //
    b'/', b'd', b'e', b'v', b'/', b'u', b'r', b'a', b'n', b'd', b'o', b'm', 0,
];

/// Where the one segment (the whole file) is loaded.
const LOAD_ADDR: u64 = 0x40_0000;
const ELF_HEADER_LEN: usize = 64;
const PROGRAM_HEADER_LEN: usize = 56;
const LEN: usize = ELF_HEADER_LEN + PROGRAM_HEADER_LEN + CODE.len();

/// The program: an ELF header, one read+execute `PT_LOAD` segment, the code.
pub static PROGRAM: [u8; LEN] = program();

const fn program() -> [u8; LEN] {
    let mut out = [0u8; LEN];
    // e_ident: magic, 64-bit, little-endian, version 1, System V ABI.
    out = put(out, 0, &[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
    out = put(out, 16, &2u16.to_le_bytes()); // e_type: executable
    out = put(out, 18, &0x3eu16.to_le_bytes()); // e_machine: x86-64
    out = put(out, 20, &1u32.to_le_bytes()); // e_version
    let entry = LOAD_ADDR + (ELF_HEADER_LEN + PROGRAM_HEADER_LEN) as u64;
    out = put(out, 24, &entry.to_le_bytes()); // e_entry
    out = put(out, 32, &(ELF_HEADER_LEN as u64).to_le_bytes()); // e_phoff
    out = put(out, 52, &(ELF_HEADER_LEN as u16).to_le_bytes()); // e_ehsize
    out = put(out, 54, &(PROGRAM_HEADER_LEN as u16).to_le_bytes()); // e_phentsize
    out = put(out, 56, &1u16.to_le_bytes()); // e_phnum
    let ph = ELF_HEADER_LEN;
    out = put(out, ph, &1u32.to_le_bytes()); // p_type: PT_LOAD
    out = put(out, ph + 4, &5u32.to_le_bytes()); // p_flags: read + execute
    out = put(out, ph + 16, &LOAD_ADDR.to_le_bytes()); // p_vaddr
    out = put(out, ph + 24, &LOAD_ADDR.to_le_bytes()); // p_paddr
    out = put(out, ph + 32, &(LEN as u64).to_le_bytes()); // p_filesz
    out = put(out, ph + 40, &(LEN as u64).to_le_bytes()); // p_memsz
    out = put(out, ph + 48, &0x1000u64.to_le_bytes()); // p_align
    put(out, ELF_HEADER_LEN + PROGRAM_HEADER_LEN, &CODE)
}

const fn put(mut out: [u8; LEN], at: usize, bytes: &[u8]) -> [u8; LEN] {
    let mut i = 0;
    while i < bytes.len() {
        out[at + i] = bytes[i];
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_program_runs_and_asks_the_kernel() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reseed");
        std::fs::write(&path, PROGRAM).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        // Another test thread forking while the file was open for writing
        // holds it open in its child for a moment: exec then says ETXTBSY.
        let status = loop {
            match std::process::Command::new(&path).status() {
                Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => break other.unwrap(),
            }
        };
        // As root the host's RNG is reseeded (harmless: what seedrng does at
        // boot); as anyone else the kernel answers EPERM, which proves the
        // program loaded, opened /dev/urandom and made the ioctl.
        let expected = if crate::host::uid_gid().0 == 0 { 0 } else { 1 };
        assert_eq!(status.code(), Some(expected));
    }
}
