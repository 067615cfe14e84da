//! Recognizing content by its first bytes: the compressions and tar headers
//! an `extract` step reads, the executables a `binary` step installs, Debian
//! packages, and, for messages, what anything else looks like (an HTML error
//! page, JSON, text...).
//!
//! Recognition only names things. Whether an archive is readable is decided
//! by reading it whole with [`crate::extract`], which both `bundler` and
//! `install-bundle` do.

use std::fmt;

/// Bytes of a file's start that [`describe`] and [`Compression::detect`] look at.
pub const DETECT_BYTES: usize = 512;

/// Size of a tar block (one header).
pub const TAR_BLOCK: usize = 512;

/// The compressions an `extract` artifact may have (besides none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// gzip (`.tar.gz`, `.tgz`): one or more members, as `gzip -d` reads them.
    Gzip,
    /// xz (`.tar.xz`): one or more streams with stream padding.
    Xz,
    /// zstd (`.tar.zst`): one or more frames, skippable frames included.
    Zstd,
}

impl Compression {
    /// The compression a file starting with `head` has, from its magic
    /// number: gzip `1f 8b`, xz `fd 37 7a 58 5a 00`, a zstd frame
    /// `28 b5 2f fd` or a zstd skippable frame (`5?  2a 4d 18`), which `zstd -d`
    /// skips.
    pub fn detect(head: &[u8]) -> Option<Compression> {
        if head.starts_with(&[0x1f, 0x8b]) {
            Some(Compression::Gzip)
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
            Some(Compression::Xz)
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) || is_zstd_skippable(head) {
            Some(Compression::Zstd)
        } else {
            None
        }
    }

    /// Its name (`gzip`).
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Xz => "xz",
            Compression::Zstd => "zstd",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn is_zstd_skippable(head: &[u8]) -> bool {
    head.len() >= 4 && head[0] & 0xf0 == 0x50 && head[1..4] == [0x2a, 0x4d, 0x18]
}

/// What a 512-byte block at the start of a tar stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TarBlock {
    /// A header whose checksum is right: any format (V7, old GNU, GNU,
    /// ustar, POSIX/pax); V7 headers have no magic, so the checksum is the
    /// only evidence, as it is for GNU tar.
    Header,
    /// All zero bytes: the end-of-archive marker (an empty archive).
    Zero,
    /// A header with the `ustar` magic whose checksum is wrong: a damaged
    /// tar archive.
    BadChecksum,
    /// Anything else, or fewer than 512 bytes.
    NotTar,
}

/// Classifies the first block of a (decompressed) tar stream. The checksum
/// is the sum of the header's bytes with its checksum field (bytes 148..156)
/// counted as spaces, written in octal in that field; this is what the
/// reader ([`crate::extract`], the `tar` crate) checks.
pub fn tar_block(block: &[u8]) -> TarBlock {
    let Some(block) = block.get(..TAR_BLOCK) else {
        return TarBlock::NotTar;
    };
    if block.iter().all(|&b| b == 0) {
        return TarBlock::Zero;
    }
    let sum: u64 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u64::from(b)
            }
        })
        .sum();
    let ustar = &block[257..262] == b"ustar";
    match parse_octal(&block[148..156]) {
        Some(stored) if stored == sum => TarBlock::Header,
        _ if ustar => TarBlock::BadChecksum,
        _ => TarBlock::NotTar,
    }
}

/// An octal number field: optional leading spaces, digits, then NULs or
/// spaces to the end.
fn parse_octal(field: &[u8]) -> Option<u64> {
    let field = match field.iter().position(|&b| b != b' ') {
        Some(start) => &field[start..],
        None => return None,
    };
    let end = field
        .iter()
        .position(|&b| !(b'0'..=b'7').contains(&b))
        .unwrap_or(field.len());
    if end == 0 || field[end..].iter().any(|&b| b != 0 && b != b' ') {
        return None;
    }
    field[..end].iter().try_fold(0u64, |n, &d| {
        n.checked_mul(8)?.checked_add(u64::from(d - b'0'))
    })
}

/// Whether a file starts like a Debian package (an `ar` archive whose first
/// member is `debian-binary`).
pub fn is_deb(head: &[u8]) -> bool {
    head.starts_with(b"!<arch>\ndebian-binary")
}

/// The kinds of ELF file a `binary` step may install as an executable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Elf {
    /// `ET_EXEC`: a (static or non-PIE) executable.
    Executable,
    /// `ET_DYN`: a position-independent executable or a shared library.
    SharedObject,
    /// `ET_REL`, `ET_CORE` or another type: not something to run.
    Other(u16),
}

/// The ELF type of a file starting with `head`, or `None` when it is not a
/// well-formed ELF identification (magic, class 32/64-bit, byte order,
/// version 1).
pub fn elf(head: &[u8]) -> Option<Elf> {
    if head.len() < 18 || !head.starts_with(b"\x7fELF") {
        return None;
    }
    if !matches!(head[4], 1 | 2) || !matches!(head[5], 1 | 2) || head[6] != 1 {
        return None;
    }
    let bytes = [head[16], head[17]];
    let e_type = if head[5] == 1 {
        u16::from_le_bytes(bytes)
    } else {
        u16::from_be_bytes(bytes)
    };
    Some(match e_type {
        2 => Elf::Executable,
        3 => Elf::SharedObject,
        other => Elf::Other(other),
    })
}

/// Whether a file starts with `#!`, as a script the kernel runs does.
pub fn is_script(head: &[u8]) -> bool {
    head.starts_with(b"#!")
}

/// What content starting with `head` looks like, for messages: `"an HTML
/// page"`, `"a JSON document"`, `"an ELF executable"`, `"empty (0 bytes)"`,
/// `"text"`, `"binary data of no format recognized"`...
pub fn describe(head: &[u8]) -> String {
    if head.is_empty() {
        return "empty (0 bytes)".into();
    }
    if let Some(kind) = elf(head) {
        return match kind {
            Elf::Executable => "an ELF executable".into(),
            Elf::SharedObject => "an ELF executable or shared library".into(),
            Elf::Other(1) => "an ELF relocatable object (.o)".into(),
            Elf::Other(4) => "an ELF core dump".into(),
            Elf::Other(t) => format!("an ELF file of type {t}"),
        };
    }
    if let Some(c) = Compression::detect(head) {
        return format!("{c}-compressed data");
    }
    let magic: &[(&[u8], &str)] = &[
        (b"#!", "a script (#!)"),
        (b"!<arch>\ndebian-binary", "a Debian package (.deb)"),
        (b"!<arch>\n", "an ar archive (not a Debian package)"),
        (b"PK\x03\x04", "a zip archive"),
        (b"PK\x05\x06", "an empty zip archive"),
        (b"BZh", "bzip2-compressed data"),
        (b"\x04\x22\x4d\x18", "lz4-compressed data"),
        (b"LZIP", "lzip-compressed data"),
        (
            b"\x5d\x00\x00",
            "lzma-compressed data (the old .lzma format)",
        ),
        (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
        (b"Rar!", "a RAR archive"),
        (b"\xed\xab\xee\xdb", "an RPM package"),
        (b"\x89PNG", "a PNG image"),
        (b"GIF8", "a GIF image"),
        (b"\xff\xd8\xff", "a JPEG image"),
        (b"%PDF", "a PDF document"),
        (b"MZ", "a Windows (PE) executable"),
        (b"\xcf\xfa\xed\xfe", "a Mach-O (macOS) executable"),
        (b"\xce\xfa\xed\xfe", "a Mach-O (macOS) executable"),
        (
            b"\xca\xfe\xba\xbe",
            "a Mach-O universal (macOS) executable or a Java class",
        ),
        (b"\0asm", "a WebAssembly module"),
        (b"-----BEGIN PGP", "an OpenPGP armored text"),
    ];
    if let Some((_, what)) = magic.iter().find(|(m, _)| head.starts_with(m)) {
        return (*what).into();
    }
    match tar_block(head) {
        TarBlock::Header => return "a tar archive".into(),
        TarBlock::BadChecksum => {
            return "a damaged tar archive (its first header's checksum is wrong)".into();
        }
        TarBlock::Zero if head.len() >= TAR_BLOCK => return "zero bytes".into(),
        _ => {}
    }
    if head.iter().all(|&b| b == 0) {
        return "zero bytes".into();
    }
    let text = head.strip_prefix(b"\xef\xbb\xbf").unwrap_or(head);
    let start = text
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(text.len());
    let text = &text[start..];
    let lower: Vec<u8> = text.iter().take(64).map(u8::to_ascii_lowercase).collect();
    let starts = |p: &[u8]| lower.starts_with(p);
    if starts(b"<!doctype html")
        || starts(b"<html")
        || starts(b"<head")
        || starts(b"<body")
        || starts(b"<!-- ") && lower.windows(5).any(|w| w == b"<html")
    {
        return "an HTML page".into();
    }
    if starts(b"<?xml") {
        return if lower.windows(4).any(|w| w == b"<svg") {
            "an SVG image".into()
        } else {
            "an XML document".into()
        };
    }
    if starts(b"{") || starts(b"[") {
        return "a JSON document".into();
    }
    if is_text(head) {
        return "text".into();
    }
    "binary data of no format recognized".into()
}

/// Whether `bytes` read as UTF-8 text without control characters other
/// than white space (a character cut at the end is allowed).
fn is_text(bytes: &[u8]) -> bool {
    let valid = match std::str::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) if e.error_len().is_none() => {
            std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default()
        }
        Err(_) => return false,
    };
    valid
        .chars()
        .all(|c| !c.is_control() || matches!(c, '\n' | '\r' | '\t' | '\x0c'))
}

/// The first `max` bytes of `head`, escaped for a message (`\n`, `\xNN`),
/// with `...` when there is more.
pub fn preview(head: &[u8], max: usize) -> String {
    let shown = &head[..head.len().min(max)];
    let mut out = shown.escape_ascii().to_string();
    if head.len() > max {
        out.push_str("...");
    }
    out
}

/// [`describe`] and [`preview`] together: `an HTML page (starts with
/// "<html>...")`.
pub fn describe_with_preview(head: &[u8]) -> String {
    if head.is_empty() {
        return describe(head);
    }
    format!(
        "{} (starts with \"{}\")",
        describe(head),
        preview(head, PREVIEW_BYTES)
    )
}

/// Bytes shown by [`describe_with_preview`].
pub const PREVIEW_BYTES: usize = 48;

/// A short description of a tar entry type, for messages (`"hard link"`).
pub fn describe_entry_type(t: tar::EntryType) -> &'static str {
    use tar::EntryType as T;
    match t {
        T::Regular | T::Continuous => "regular file",
        T::Link => "hard link",
        T::Symlink => "symbolic link",
        T::Char => "character device",
        T::Block => "block device",
        T::Directory => "directory",
        T::Fifo => "FIFO",
        T::GNULongName | T::GNULongLink => "GNU long-name extension",
        T::XHeader | T::XGlobalHeader => "PAX extended header",
        T::GNUSparse => "GNU sparse file",
        _ => "unknown entry type",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &str) -> Vec<u8> {
        let mut h = tar::Header::new_old();
        h.set_path(name).unwrap();
        h.set_size(0);
        h.set_mode(0o644);
        h.set_cksum();
        h.as_bytes().to_vec()
    }

    #[test]
    fn v7_header_is_recognized_by_its_checksum_alone() {
        let mut h = header("authservice/bin/authservice");
        assert_eq!(&h[257..262], &[0; 5], "no magic in a V7 header");
        assert_eq!(tar_block(&h), TarBlock::Header);
        h[0] ^= 1;
        assert_eq!(tar_block(&h), TarBlock::NotTar);
        assert_eq!(tar_block(&[0u8; 512]), TarBlock::Zero);
        assert_eq!(tar_block(&[0u8; 100]), TarBlock::NotTar);
        let mut u = tar::Header::new_ustar();
        u.set_path("x").unwrap();
        u.set_cksum();
        let mut u = u.as_bytes().to_vec();
        assert_eq!(tar_block(&u), TarBlock::Header);
        u[0] ^= 1;
        assert_eq!(tar_block(&u), TarBlock::BadChecksum);
    }

    #[test]
    fn text_that_passes_no_checksum_is_not_a_tar() {
        let page = b"<html>".repeat(100);
        assert_eq!(tar_block(&page), TarBlock::NotTar);
        assert_eq!(describe(&page), "an HTML page");
    }

    #[test]
    fn content_is_described_by_what_it_looks_like() {
        assert_eq!(describe(b""), "empty (0 bytes)");
        assert_eq!(
            describe(b"\xef\xbb\xbf  <!DOCTYPE html><html>"),
            "an HTML page"
        );
        assert_eq!(describe(b"\n<HTML><HEAD>"), "an HTML page");
        assert_eq!(describe(b"{\"message\": \"Not Found\"}"), "a JSON document");
        assert_eq!(
            describe(b"<?xml version=\"1.0\"?><Error>"),
            "an XML document"
        );
        assert_eq!(describe(b"Access denied\n"), "text");
        assert_eq!(describe(b"#!/bin/sh\n"), "a script (#!)");
        assert_eq!(describe(b"\x1f\x8b\x08\0"), "gzip-compressed data");
        assert_eq!(
            describe(b"\x50\x2a\x4d\x18\0\0\0\0"),
            "zstd-compressed data"
        );
        assert_eq!(describe(b"BZh91AY&SY"), "bzip2-compressed data");
        assert_eq!(describe(b"PK\x03\x04"), "a zip archive");
        assert_eq!(describe(&[0u8; 600]), "zero bytes");
        assert_eq!(
            describe(b"\x01\x02\x03\xff"),
            "binary data of no format recognized"
        );
        let mut elf64 = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0".to_vec();
        elf64.extend_from_slice(&2u16.to_le_bytes());
        assert_eq!(elf(&elf64), Some(Elf::Executable));
        assert_eq!(describe(&elf64), "an ELF executable");
        elf64[16] = 3;
        assert_eq!(elf(&elf64), Some(Elf::SharedObject));
        elf64[6] = 0;
        assert_eq!(elf(&elf64), None);
    }

    #[test]
    fn previews_are_escaped_and_short() {
        assert_eq!(preview(b"<a>\n\x00\xff\"", 100), "<a>\\n\\x00\\xff\\\"");
        assert_eq!(preview(b"abcdef", 3), "abc...");
        assert_eq!(
            describe_with_preview(b"denied\n"),
            "text (starts with \"denied\\n\")"
        );
    }
}
