//! A writer for the `newc` cpio format (what the Linux kernel unpacks as an
//! initramfs). Pure: it writes to any [`Write`], never touches the host's files.
//!
//! Each entry is a 110-byte ASCII header (`070701` + 13 eight-digit hex
//! fields), the NUL-terminated name padded to a multiple of 4, then the data
//! padded to a multiple of 4. The archive ends with an entry named
//! `TRAILER!!!`. Parent directories that were not added explicitly are added
//! automatically (mode 0755) before their first child, because the kernel's
//! unpacker does not create them.

use std::collections::BTreeSet;
use std::io::{self, Write};

const MAGIC: &[u8; 6] = b"070701";
const TRAILER: &str = "TRAILER!!!";

pub const S_IFDIR: u32 = 0o040000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFLNK: u32 = 0o120000;
pub const S_IFCHR: u32 = 0o020000;

/// Writes a newc archive entry by entry; call [`CpioWriter::finish`] at the end.
pub struct CpioWriter<W: Write> {
    out: W,
    next_ino: u32,
    dirs: BTreeSet<String>,
    written: u64,
}

struct Header<'a> {
    name: &'a str,
    mode: u32,
    nlink: u32,
    rdev: (u32, u32),
    data: &'a [u8],
}

impl<W: Write> CpioWriter<W> {
    pub fn new(out: W) -> Self {
        Self {
            out,
            next_ino: 1,
            dirs: BTreeSet::new(),
            written: 0,
        }
    }

    /// A directory (`perm` like 0o755).
    pub fn dir(&mut self, path: &str, perm: u32) -> io::Result<()> {
        let name = normalize(path)?;
        if self.dirs.contains(&name) {
            return Ok(());
        }
        self.parents(&name)?;
        self.dirs.insert(name.clone());
        self.entry(Header {
            name: &name,
            mode: S_IFDIR | (perm & 0o7777),
            nlink: 2,
            rdev: (0, 0),
            data: &[],
        })
    }

    /// A regular file with its contents.
    pub fn file(&mut self, path: &str, perm: u32, data: &[u8]) -> io::Result<()> {
        let name = normalize(path)?;
        self.parents(&name)?;
        self.entry(Header {
            name: &name,
            mode: S_IFREG | (perm & 0o7777),
            nlink: 1,
            rdev: (0, 0),
            data,
        })
    }

    /// A symbolic link `path -> target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> io::Result<()> {
        let name = normalize(path)?;
        self.parents(&name)?;
        self.entry(Header {
            name: &name,
            mode: S_IFLNK | 0o777,
            nlink: 1,
            rdev: (0, 0),
            data: target.as_bytes(),
        })
    }

    /// A character device node (e.g. `dev/console`, 5:1).
    pub fn char_dev(&mut self, path: &str, perm: u32, major: u32, minor: u32) -> io::Result<()> {
        let name = normalize(path)?;
        self.parents(&name)?;
        self.entry(Header {
            name: &name,
            mode: S_IFCHR | (perm & 0o7777),
            nlink: 1,
            rdev: (major, minor),
            data: &[],
        })
    }

    /// Writes the trailer and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.next_ino = 0;
        self.entry(Header {
            name: TRAILER,
            mode: 0,
            nlink: 1,
            rdev: (0, 0),
            data: &[],
        })?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn parents(&mut self, name: &str) -> io::Result<()> {
        let mut missing = Vec::new();
        let mut cur = name;
        while let Some((parent, _)) = cur.rsplit_once('/') {
            if self.dirs.contains(parent) {
                break;
            }
            missing.push(parent.to_string());
            cur = parent;
        }
        for dir in missing.into_iter().rev() {
            self.dir(&dir, 0o755)?;
        }
        Ok(())
    }

    fn entry(&mut self, h: Header<'_>) -> io::Result<()> {
        let ino = self.next_ino;
        if ino != 0 {
            self.next_ino += 1;
        }
        let size = u32::try_from(h.data.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "cpio entry over 4 GiB"))?;
        let fields = [
            ino,
            h.mode,
            0, // uid
            0, // gid
            h.nlink,
            0, // mtime: 0 keeps the archive reproducible
            size,
            0, // devmajor
            0, // devminor
            h.rdev.0,
            h.rdev.1,
            h.name.len() as u32 + 1,
            0, // check
        ];
        let mut header = Vec::with_capacity(110 + h.name.len() + 4);
        header.extend_from_slice(MAGIC);
        for f in fields {
            header.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        header.extend_from_slice(h.name.as_bytes());
        header.push(0);
        header.resize(header.len() + pad4(header.len()), 0);
        self.out.write_all(&header)?;
        self.out.write_all(h.data)?;
        let pad = pad4(h.data.len());
        self.out.write_all(&[0u8; 3][..pad])?;
        self.written += (header.len() + h.data.len() + pad) as u64;
        Ok(())
    }
}

fn pad4(len: usize) -> usize {
    (4 - len % 4) % 4
}

/// Archive names are relative (`bin/busybox`), without `.`/`..` components.
fn normalize(path: &str) -> io::Result<String> {
    let name = path.trim_start_matches('/').trim_end_matches('/');
    let bad = name.is_empty()
        || name == TRAILER
        || name.contains('\0')
        || name
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..");
    if bad {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid cpio entry name `{}`", path.escape_debug()),
        ));
    }
    Ok(name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (name, mode, nlink, rdev, data)
    type Entry = (String, u32, u32, (u32, u32), Vec<u8>);

    /// Parses the archive back, checking alignment and padding.
    fn parse(mut buf: &[u8]) -> Vec<Entry> {
        let total = buf.len();
        let mut out = Vec::new();
        loop {
            let offset = total - buf.len();
            assert_eq!(offset % 4, 0, "entry not 4-aligned");
            assert_eq!(&buf[..6], MAGIC);
            let field = |i: usize| {
                let s = std::str::from_utf8(&buf[6 + i * 8..6 + i * 8 + 8]).unwrap();
                u32::from_str_radix(s, 16).unwrap()
            };
            let (mode, nlink, size, rmaj, rmin, namesize, check) = (
                field(1),
                field(4),
                field(6) as usize,
                field(9),
                field(10),
                field(11) as usize,
                field(12),
            );
            assert_eq!(check, 0);
            let name = std::str::from_utf8(&buf[110..110 + namesize - 1])
                .unwrap()
                .to_string();
            assert_eq!(buf[110 + namesize - 1], 0, "name not NUL-terminated");
            let data_start = 110 + namesize + pad4(110 + namesize);
            assert!(buf[110 + namesize..data_start].iter().all(|&b| b == 0));
            let data = buf[data_start..data_start + size].to_vec();
            let next = data_start + size + pad4(size);
            assert!(buf[data_start + size..next].iter().all(|&b| b == 0));
            buf = &buf[next..];
            if name == TRAILER {
                assert!(buf.is_empty(), "bytes after the trailer");
                return out;
            }
            out.push((name, mode, nlink, (rmaj, rmin), data));
        }
    }

    #[test]
    fn header_layout_is_exact() {
        let mut w = CpioWriter::new(Vec::new());
        w.file("init", 0o755, b"hello").unwrap();
        let buf = w.finish().unwrap();
        let expected_header = concat!(
            "070701", "00000001", "000081ed", "00000000", "00000000", "00000001", "00000000",
            "00000005", "00000000", "00000000", "00000000", "00000000", "00000005", "00000000",
        );
        assert_eq!(&buf[..110], expected_header.as_bytes());
        // name "init\0" (5 bytes) after the 110-byte header: 115 -> padded to 116.
        assert_eq!(&buf[110..116], b"init\0\0");
        // data "hello" padded to 8.
        assert_eq!(&buf[116..124], b"hello\0\0\0");
        assert_eq!(&buf[124..130], MAGIC);
        assert_eq!(buf.len() % 4, 0);
    }

    #[test]
    fn trailer_ends_the_archive() {
        let buf = CpioWriter::new(Vec::new()).finish().unwrap();
        // header + "TRAILER!!!\0" = 121 bytes, padded to 124.
        assert_eq!(buf.len(), 124);
        assert_eq!(&buf[110..121], b"TRAILER!!!\0");
        assert_eq!(&buf[94..102], b"0000000b"); // namesize 11
        assert!(parse(&buf).is_empty());
    }

    #[test]
    fn padding_for_every_name_and_data_length() {
        let mut w = CpioWriter::new(Vec::new());
        let names = ["a", "ab", "abc", "abcd", "abcde"];
        for (i, n) in names.iter().enumerate() {
            w.file(n, 0o644, &vec![b'x'; i]).unwrap();
        }
        let entries = parse(&w.finish().unwrap());
        assert_eq!(entries.len(), names.len());
        for (i, (name, mode, _, _, data)) in entries.iter().enumerate() {
            assert_eq!(name, names[i]);
            assert_eq!(*mode, S_IFREG | 0o644);
            assert_eq!(data.len(), i);
        }
    }

    #[test]
    fn parents_are_created_once_and_first() {
        let mut w = CpioWriter::new(Vec::new());
        w.file("/lib/modules/virtio.ko", 0o644, b"m").unwrap();
        w.file("lib/modules/virtio_ring.ko", 0o644, b"r").unwrap();
        w.dir("lib", 0o700).unwrap(); // already there: ignored
        w.symlink("bin/sh", "busybox").unwrap();
        w.char_dev("dev/console", 0o600, 5, 1).unwrap();
        let entries = parse(&w.finish().unwrap());
        let names: Vec<_> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "lib",
                "lib/modules",
                "lib/modules/virtio.ko",
                "lib/modules/virtio_ring.ko",
                "bin",
                "bin/sh",
                "dev",
                "dev/console"
            ]
        );
        assert_eq!(entries[0].1, S_IFDIR | 0o755);
        assert_eq!(entries[0].2, 2);
        assert_eq!(entries[5].1, S_IFLNK | 0o777);
        assert_eq!(entries[5].4, b"busybox");
        assert_eq!(entries[7].1, S_IFCHR | 0o600);
        assert_eq!(entries[7].3, (5, 1));
    }

    #[test]
    fn inode_numbers_are_unique() {
        let mut w = CpioWriter::new(Vec::new());
        w.file("a/b", 0o644, b"").unwrap();
        w.file("a/c", 0o644, b"").unwrap();
        let buf = w.finish().unwrap();
        let text = String::from_utf8_lossy(&buf);
        let inos: Vec<&str> = text
            .match_indices("070701")
            .map(|(i, _)| &text[i + 6..i + 14])
            .collect();
        // a, a/b, a/c, then the trailer with inode 0.
        assert_eq!(inos, ["00000001", "00000002", "00000003", "00000000"]);
    }

    #[test]
    fn bad_names_are_refused() {
        let mut w = CpioWriter::new(Vec::new());
        for bad in ["", "/", "a/../b", "./a", "a//b", "TRAILER!!!"] {
            assert!(w.file(bad, 0o644, b"").is_err(), "{bad:?} accepted");
        }
    }
}
