//! Recognizing the archives an `extract` step accepts, by content.

/// The container of an `extract` artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveKind {
    /// An uncompressed tar.
    Tar,
    /// gzip-compressed tar (`.tar.gz`, `.tgz`).
    TarGz,
    /// xz-compressed tar.
    TarXz,
    /// zstd-compressed tar.
    TarZst,
}

/// Bytes of a file's start needed by [`ArchiveKind::detect`].
pub const DETECT_BYTES: usize = 512;

impl ArchiveKind {
    /// Recognizes an archive from its first bytes (at least
    /// [`DETECT_BYTES`] when the file is that long). For compressed files
    /// this only recognizes the compression; whether a tar is inside shows
    /// when it is read.
    pub fn detect(head: &[u8]) -> Option<ArchiveKind> {
        if head.starts_with(&[0x1f, 0x8b]) {
            Some(ArchiveKind::TarGz)
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
            Some(ArchiveKind::TarXz)
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Some(ArchiveKind::TarZst)
        } else if head.len() >= 263 && &head[257..262] == b"ustar" {
            Some(ArchiveKind::Tar)
        } else {
            None
        }
    }

    /// A short name (`tar.gz`).
    pub fn as_str(self) -> &'static str {
        match self {
            ArchiveKind::Tar => "tar",
            ArchiveKind::TarGz => "tar.gz",
            ArchiveKind::TarXz => "tar.xz",
            ArchiveKind::TarZst => "tar.zst",
        }
    }
}

/// Whether a file starts like a Debian package (an `ar` archive whose first
/// member is `debian-binary`).
pub fn is_deb(head: &[u8]) -> bool {
    head.starts_with(b"!<arch>\ndebian-binary")
}

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
