//! libvirt's QEMU save image (`virsh save`, `virDomainSaveFlags`): a header,
//! the domain's XML, then QEMU's migration stream. vmlab reads the header
//! and edits the XML of a per-clone copy; the stream is copied untouched.
//!
//! ```text
//! 0    16 bytes  magic `LibvirtQemudSave`
//! 16   u32 LE    version (2)
//! 20   u32 LE    data_len: bytes of XML, cookie and zero padding after the header
//! 24   u32 LE    was_running
//! 28   u32 LE    compressed: 0 is QEMU's raw stream
//! 32   u32 LE    cookie offset inside the data (just after the XML's NUL)
//! 36   14 u32    unused
//! 92   data_len  domain XML, NUL, cookie XML, NUL, zeros
//! …              QEMU's migration stream
//! ```
//!
//! The XML is edited in place at the same length: the cookie and the stream
//! keep their offsets, so nothing else in the file needs to change.

use std::fs::File;
use std::io::{Read, Write};
use std::ops::Range;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{Context, Result, bail};

pub const MAGIC: &[u8; 16] = b"LibvirtQemudSave";
/// What libvirt writes while a save is still under way.
const MAGIC_PARTIAL: &[u8; 16] = b"LibvirtQemudPart";
/// The one header version vmlab knows (libvirt's `QEMU_SAVE_VERSION`).
pub const VERSION: u32 = 2;
pub const HEADER_LEN: usize = 92;

/// The fields of the header vmlab uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub data_len: u32,
    pub was_running: bool,
    pub cookie_offset: u32,
}

/// Checks magic, version and compression: vmlab only edits the format it knows.
pub fn parse_header(bytes: &[u8]) -> Result<Header> {
    if bytes.len() < HEADER_LEN {
        bail!(
            "not a libvirt save image: {} bytes, shorter than its header",
            bytes.len()
        );
    }
    let magic = &bytes[..16];
    if magic == MAGIC_PARTIAL {
        bail!("an unfinished libvirt save image (its save was interrupted)");
    }
    if magic != MAGIC {
        bail!(
            "not a libvirt QEMU save image (magic {:?})",
            String::from_utf8_lossy(magic)
        );
    }
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    let version = u32_at(16);
    if version != VERSION {
        bail!("a libvirt save image of version {version}; vmlab knows version {VERSION}");
    }
    let compressed = u32_at(28);
    if compressed != 0 {
        bail!("a compressed libvirt save image (format {compressed}); vmlab edits raw ones only");
    }
    Ok(Header {
        data_len: u32_at(20),
        was_running: u32_at(24) != 0,
        cookie_offset: u32_at(32),
    })
}

/// Where the domain XML sits in `data` (the `data_len` bytes after the
/// header): up to its NUL, which must come before the cookie.
pub fn xml_range(header: &Header, data: &[u8]) -> Result<Range<usize>> {
    let data = &data[..data.len().min(header.data_len as usize)];
    let Some(end) = data.iter().position(|&b| b == 0) else {
        bail!("the save image's domain XML has no end within its header's data");
    };
    if header.cookie_offset != 0 && end >= header.cookie_offset as usize {
        bail!("the save image's domain XML runs into its cookie");
    }
    Ok(0..end)
}

/// One replacement in the XML: the bytes of `span` become `text`, padded
/// with spaces (whitespace between elements means nothing to libvirt).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    pub span: Range<usize>,
    pub text: String,
    /// What it changes, for the error when `text` does not fit.
    pub what: String,
}

/// Applies `edits` without changing the XML's length; refuses an edit that
/// would make it longer, and edits that overlap.
pub fn edit_same_length(xml: &str, mut edits: Vec<Edit>) -> Result<String> {
    edits.sort_by_key(|e| e.span.start);
    let mut out = String::with_capacity(xml.len());
    let mut at = 0;
    for edit in &edits {
        if edit.span.start < at || edit.span.end > xml.len() {
            bail!("the edits of the save image's XML overlap at {}", edit.what);
        }
        let room = edit.span.len();
        if edit.text.len() > room {
            bail!(
                "{} does not fit in the saved XML: {} bytes where the template has {room}, and the XML must keep its length",
                edit.what,
                edit.text.len()
            );
        }
        out.push_str(&xml[at..edit.span.start]);
        out.push_str(&edit.text);
        out.push_str(&" ".repeat(room - edit.text.len()));
        at = edit.span.end;
    }
    out.push_str(&xml[at..]);
    assert_eq!(out.len(), xml.len(), "same-length edits keep the length");
    Ok(out)
}

/// An open save image, read up to the end of its header's data.
struct Opened {
    file: File,
    head: [u8; HEADER_LEN],
    header: Header,
    data: Vec<u8>,
    /// The domain XML's place in `data`.
    xml: Range<usize>,
}

fn open(path: &Path) -> Result<Opened> {
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut head = [0u8; HEADER_LEN];
    file.read_exact(&mut head)
        .map_err(|_| anyhow::anyhow!("{}: shorter than a save image header", path.display()))?;
    let header = parse_header(&head).with_context(|| path.display().to_string())?;
    let mut data = vec![0u8; header.data_len as usize];
    file.read_exact(&mut data)
        .with_context(|| format!("{} ends inside its header's data", path.display()))?;
    let xml = xml_range(&header, &data)?;
    std::str::from_utf8(&data[xml.clone()])
        .with_context(|| format!("the domain XML in {} is not UTF-8", path.display()))?;
    Ok(Opened {
        file,
        head,
        header,
        data,
        xml,
    })
}

impl Opened {
    fn xml(&self) -> &str {
        std::str::from_utf8(&self.data[self.xml.clone()]).expect("checked when opened")
    }
}

/// The header and domain XML of a save image.
pub fn read_xml(path: &Path) -> Result<(Header, String)> {
    let opened = open(path)?;
    Ok((opened.header, opened.xml().to_string()))
}

/// Writes a copy of the save image `template` to `out` (mode 0600: it holds
/// the guest's memory) whose domain XML is `edit`'s answer, at the same length.
pub fn write_edited_copy(
    template: &Path,
    out: &Path,
    edit: impl FnOnce(&str) -> Result<String>,
) -> Result<()> {
    let mut src = open(template)?;
    let edited = edit(src.xml())?;
    if edited.len() != src.xml.len() {
        bail!(
            "the edited XML is {} bytes, the saved one {}: a save image is edited at the same length",
            edited.len(),
            src.xml.len()
        );
    }
    let range = src.xml.clone();
    src.data[range].copy_from_slice(edited.as_bytes());
    let mut write = || -> std::io::Result<()> {
        let mut dst = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(out)?;
        dst.write_all(&src.head)?;
        dst.write_all(&src.data)?;
        std::io::copy(&mut src.file, &mut dst)?;
        dst.flush()
    };
    write().with_context(|| format!("writing {}", out.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A save image as libvirt lays it out: header, XML, NUL, cookie, NUL,
    /// padding, then a stand-in for QEMU's stream.
    fn image(magic: &[u8; 16], version: u32, compressed: u32, xml: &str) -> Vec<u8> {
        let cookie = "<cookie/>";
        let data_len = xml.len() + 1 + cookie.len() + 1 + 64;
        let mut out = magic.to_vec();
        for field in [
            version,
            data_len as u32,
            1,
            compressed,
            xml.len() as u32 + 1,
        ] {
            out.extend(field.to_le_bytes());
        }
        out.resize(HEADER_LEN, 0);
        out.extend(xml.as_bytes());
        out.push(0);
        out.extend(cookie.as_bytes());
        out.push(0);
        out.resize(HEADER_LEN + data_len, 0);
        out.extend(b"QEVM-stream-bytes");
        out
    }

    const XML: &str = "<domain><name>vmlab-template-x</name><uuid>u</uuid></domain>";

    #[test]
    fn the_header_gives_the_xml() {
        let bytes = image(MAGIC, VERSION, 0, XML);
        let header = parse_header(&bytes).unwrap();
        assert!(header.was_running);
        assert_eq!(header.cookie_offset as usize, XML.len() + 1);
        let data = &bytes[HEADER_LEN..];
        assert_eq!(&data[xml_range(&header, data).unwrap()], XML.as_bytes());
    }

    #[test]
    fn unknown_magic_version_and_compression_are_refused() {
        let cases = [
            (
                image(b"SomethingElse!!!", 2, 0, XML),
                "not a libvirt QEMU save image",
            ),
            (
                image(MAGIC_PARTIAL, 2, 0, XML),
                "an unfinished libvirt save image",
            ),
            (image(MAGIC, 3, 0, XML), "version 3; vmlab knows version 2"),
            (image(MAGIC, 2, 1, XML), "a compressed libvirt save image"),
            (b"LibvirtQemudSave".to_vec(), "shorter than its header"),
        ];
        for (bytes, expected) in cases {
            let err = parse_header(&bytes).unwrap_err().to_string();
            assert!(err.contains(expected), "{err} lacks {expected}");
        }
    }

    #[test]
    fn xml_must_end_before_the_cookie() {
        let mut bytes = image(MAGIC, VERSION, 0, XML);
        // The XML's NUL overwritten: the XML would run into the cookie.
        bytes[HEADER_LEN + XML.len()] = b' ';
        let header = parse_header(&bytes).unwrap();
        let err = xml_range(&header, &bytes[HEADER_LEN..]).unwrap_err();
        assert!(err.to_string().contains("runs into its cookie"), "{err}");
    }

    fn span_of(xml: &str, part: &str) -> Range<usize> {
        let start = xml.find(part).unwrap();
        start..start + part.len()
    }

    #[test]
    fn edits_keep_the_length_and_pad_with_spaces() {
        let edits = vec![
            Edit {
                span: span_of(XML, "<uuid>u</uuid>"),
                text: "<uuid>v</uuid>".into(),
                what: "the UUID".into(),
            },
            Edit {
                span: span_of(XML, "<name>vmlab-template-x</name>"),
                text: "<name>vm-1</name>".into(),
                what: "the name".into(),
            },
        ];
        let out = edit_same_length(XML, edits).unwrap();
        assert_eq!(
            out,
            "<domain><name>vm-1</name>            <uuid>v</uuid></domain>"
        );
        assert_eq!(out.len(), XML.len());
        let doc = roxmltree::Document::parse(&out).unwrap();
        let name = doc.descendants().find(|n| n.has_tag_name("name")).unwrap();
        assert_eq!(name.text(), Some("vm-1"));
    }

    #[test]
    fn an_edit_that_would_change_the_length_is_refused() {
        let longer = Edit {
            span: span_of(XML, "<uuid>u</uuid>"),
            text: "<uuid>longer</uuid>".into(),
            what: "the UUID".into(),
        };
        let err = edit_same_length(XML, vec![longer]).unwrap_err().to_string();
        assert!(
            err.starts_with(
                "the UUID does not fit in the saved XML: 19 bytes where the template has 14"
            ),
            "{err}"
        );
        let a = span_of(XML, "<name>vmlab-template-x</name>");
        let overlapping = vec![
            Edit {
                span: a.clone(),
                text: String::new(),
                what: "a".into(),
            },
            Edit {
                span: a.start + 1..a.end,
                text: String::new(),
                what: "b".into(),
            },
        ];
        assert!(edit_same_length(XML, overlapping).is_err());
    }

    #[test]
    fn a_copy_changes_only_the_xml() {
        let dir = tempfile::tempdir().unwrap();
        let template = dir.path().join("memory.save");
        let original = image(MAGIC, VERSION, 0, XML);
        std::fs::write(&template, &original).unwrap();
        let copy = dir.path().join("clone.save");
        write_edited_copy(&template, &copy, |xml| {
            Ok(xml.replace("<uuid>u<", "<uuid>w<"))
        })
        .unwrap();
        let copied = std::fs::read(&copy).unwrap();
        assert_eq!(copied.len(), original.len());
        let differ: Vec<usize> = (0..copied.len())
            .filter(|&i| copied[i] != original[i])
            .collect();
        assert_eq!(differ, [HEADER_LEN + XML.find("<uuid>u").unwrap() + 6]);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&copy).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (_, xml) = read_xml(&copy).unwrap();
        assert!(xml.contains("<uuid>w</uuid>"));

        let err = write_edited_copy(&template, &copy, |xml| Ok(format!("{xml} ")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("edited at the same length"), "{err}");
        std::fs::write(&template, image(b"LibvirtQemudPart", 2, 0, XML)).unwrap();
        let err = write_edited_copy(&template, &copy, |xml| Ok(xml.to_string())).unwrap_err();
        assert!(format!("{err:#}").contains("unfinished"), "{err:#}");
    }
}
