//! Reading the control information of a binary package (`.deb`).
//!
//! A `.deb` is an `ar` archive (`!<arch>\n`) whose first member is
//! `debian-binary` (format `2.x`), followed by `control.tar[.gz|.xz|.zst]` and
//! `data.tar[...]`; members whose names start with `_` may appear in between
//! and are skipped, as dpkg does. Only the archive up to the end of the
//! control member is read, and the control tarball is decompressed as a
//! stream; the `data.tar` member is never touched.

use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use crate::control::{ControlError, FieldError, Fields, Stanza};
use crate::relation::{Provide, Relation};
use crate::version::Version;

/// Upper bound on the size of the `control` file we are willing to read.
const MAX_CONTROL_SIZE: u64 = 16 << 20;
/// Upper bound on the size of the `debian-binary` member.
const MAX_DEBIAN_BINARY_SIZE: u64 = 64;

/// The `Multi-Arch` field of a package.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MultiArch {
    /// Absent or `no`.
    #[default]
    No,
    /// `same`: co-installable with itself for other architectures.
    Same,
    /// `foreign`: satisfies dependencies from any architecture.
    Foreign,
    /// `allowed`: satisfies `:any` dependencies from any architecture.
    Allowed,
}

impl MultiArch {
    /// The field value: `no`, `same`, `foreign` or `allowed`.
    pub fn as_str(self) -> &'static str {
        match self {
            MultiArch::No => "no",
            MultiArch::Same => "same",
            MultiArch::Foreign => "foreign",
            MultiArch::Allowed => "allowed",
        }
    }

    /// Parses a field value (case-sensitive, as dpkg).
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "no" => Some(MultiArch::No),
            "same" => Some(MultiArch::Same),
            "foreign" => Some(MultiArch::Foreign),
            "allowed" => Some(MultiArch::Allowed),
            _ => None,
        }
    }

    /// Reads the optional `Multi-Arch` field of a stanza.
    pub(crate) fn from_fields(f: &Fields<'_>) -> Result<Self, FieldError> {
        match f.stanza.get("Multi-Arch") {
            None => Ok(MultiArch::No),
            Some(v) => MultiArch::parse(v)
                .ok_or_else(|| f.invalid("Multi-Arch", v, "expected no, same, foreign or allowed")),
        }
    }
}

impl fmt::Display for MultiArch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Checks the `Architecture` field of a binary package: one architecture
/// name (`amd64`, `all`, `linux-any` is not allowed in binaries).
pub(crate) fn architecture_field<'a>(f: &Fields<'a>) -> Result<&'a str, FieldError> {
    let arch = f.required("Architecture")?;
    if arch.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        Ok(arch)
    } else {
        Err(f.invalid("Architecture", arch, "expected a single architecture name"))
    }
}

/// The dependency-relevant metadata of a binary package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebInfo {
    /// `Package`.
    pub package: String,
    /// `Version`.
    pub version: Version,
    /// `Architecture` (`amd64`, `all`, ...).
    pub architecture: String,
    /// `Depends`, as an AND of OR-groups (empty when absent).
    pub depends: Vec<Vec<Relation>>,
    /// `Pre-Depends`, as an AND of OR-groups (empty when absent).
    pub pre_depends: Vec<Vec<Relation>>,
    /// `Provides` (empty when absent).
    pub provides: Vec<Provide>,
    /// `Multi-Arch` ([`MultiArch::No`] when absent).
    pub multi_arch: MultiArch,
    /// `Installed-Size`, in KiB (policy §5.6.20), when present.
    pub installed_size_kib: Option<u64>,
}

impl DebInfo {
    /// Interprets a binary package stanza (a `.deb`'s control file or a
    /// `Packages` entry). `Package`, `Version` and `Architecture` are
    /// required.
    pub fn from_stanza(stanza: &Stanza) -> Result<Self, FieldError> {
        let package = Fields::package(stanza)?;
        let f = Fields { stanza, package };
        Ok(DebInfo {
            package: package.to_owned(),
            version: f.version("Version")?,
            architecture: architecture_field(&f)?.to_owned(),
            depends: f.relations("Depends")?,
            pre_depends: f.relations("Pre-Depends")?,
            provides: f.provides()?,
            multi_arch: MultiArch::from_fields(&f)?,
            installed_size_kib: match stanza.get("Installed-Size") {
                None => None,
                Some(v) => Some(
                    v.parse()
                        .map_err(|_| f.invalid("Installed-Size", v, "expected a size in KiB"))?,
                ),
            },
        })
    }
}

/// `package version (architecture)`, e.g. `socat 1.7.4.4-2 (amd64)`.
impl fmt::Display for DebInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} ({})",
            self.package, self.version, self.architecture
        )
    }
}

/// Why a `.deb` could not be read. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum DebError {
    /// Opening or reading the file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The package file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The file is not a (well-formed) Debian binary package.
    #[error("{}: not a valid Debian package: {reason}", path.display())]
    NotDeb {
        /// The package file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The control member uses a compression we do not support.
    #[error("{}: member {member:?} uses an unsupported compression", path.display())]
    UnsupportedCompression {
        /// The package file.
        path: PathBuf,
        /// The member name.
        member: String,
    },
    /// Decompressing or untarring the control member failed.
    #[error("{}: member {member:?} is damaged: {source}", path.display())]
    ControlArchive {
        /// The package file.
        path: PathBuf,
        /// The member name.
        member: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The control tarball has no `./control` file.
    #[error("{}: member {member:?} contains no ./control file", path.display())]
    MissingControl {
        /// The package file.
        path: PathBuf,
        /// The member name.
        member: String,
    },
    /// The `control` file is not valid control syntax.
    #[error("{}: {source}", path.display())]
    Control {
        /// The package file.
        path: PathBuf,
        /// The syntax error (its origin is `control`).
        #[source]
        source: ControlError,
    },
    /// A field of the control file is missing or invalid.
    #[error("{}: {source}", path.display())]
    Field {
        /// The package file.
        path: PathBuf,
        /// The field error (names package and field).
        #[source]
        source: Box<FieldError>,
    },
}

/// Reads the `control` file of the `.deb` at `path`.
pub fn read_control(path: impl AsRef<Path>) -> Result<Stanza, DebError> {
    let path = path.as_ref();
    let file = File::open(path).map_err(|source| DebError::Io {
        path: path.to_owned(),
        source,
    })?;
    read_control_from(BufReader::new(file), path)
}

/// Reads the control file of the `.deb` at `path` and interprets it.
pub fn read_info(path: impl AsRef<Path>) -> Result<DebInfo, DebError> {
    let path = path.as_ref();
    let stanza = read_control(path)?;
    DebInfo::from_stanza(&stanza).map_err(|source| DebError::Field {
        path: path.to_owned(),
        source: Box::new(source),
    })
}

/// Reads `/usr/share/doc/PACKAGE/copyright` from the data member of the
/// `.deb` at `path` (at most 1 MiB): `None` when the package has none, or
/// has a symlink there (packages that share a doc directory).
pub fn read_copyright(path: impl AsRef<Path>, package: &str) -> Result<Option<String>, DebError> {
    let path = path.as_ref();
    let file = File::open(path).map_err(|source| DebError::Io {
        path: path.to_owned(),
        source,
    })?;
    let bytes = DebReader {
        reader: BufReader::new(file),
        path,
    }
    .data_file(&format!("usr/share/doc/{package}/copyright"), 1 << 20)?;
    Ok(bytes.map(|b| String::from_utf8_lossy(&b).into_owned()))
}

/// One regular file a package installs ([`package_files`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageFile {
    /// Absolute path (`/usr/bin/socat`).
    pub path: String,
    /// SHA-256 of its bytes.
    pub sha256: [u8; 32],
}

/// The regular files of a `.deb`'s data member with their SHA-256, but its
/// conffiles (listed in the control member's `conffiles`, which dpkg lets the
/// administrator change): what must be on a host, byte for byte, while the
/// package is installed. Streams the data member once.
pub fn package_files(path: impl AsRef<Path>) -> Result<Vec<PackageFile>, DebError> {
    let path = path.as_ref();
    let file = File::open(path).map_err(|source| DebError::Io {
        path: path.to_owned(),
        source,
    })?;
    let mut reader = DebReader {
        reader: BufReader::new(file),
        path,
    };
    reader.start()?;
    let mut conffiles: Vec<String> = Vec::new();
    loop {
        let member = reader
            .member_header()?
            .ok_or_else(|| reader.not_deb("no data.tar member"))?;
        if member.name.starts_with("control.tar") {
            let bytes = reader.member_file(&member, "conffiles", MAX_CONTROL_SIZE)?;
            if let Some(b) = bytes {
                conffiles = String::from_utf8_lossy(&b)
                    .lines()
                    .map(|l| l.trim().to_owned())
                    .filter(|l| !l.is_empty())
                    // `remove-on-upgrade /etc/x` (dpkg 1.20.1): the path is the last word.
                    .map(|l| l.rsplit(' ').next().unwrap_or_default().to_owned())
                    .collect();
            }
            if member.size % 2 == 1 {
                reader.skip_bytes(1, &member.name)?;
            }
            continue;
        }
        if !member.name.starts_with("data.tar") {
            reader.skip(&member)?;
            continue;
        }
        let mut out = Vec::new();
        reader.for_each_tar_entry(&member, "data.tar", &mut |entry| {
            if !entry.header().entry_type().is_file() {
                return Ok(false);
            }
            let entry_path = entry.path()?.into_owned();
            let rel = entry_path.strip_prefix(".").unwrap_or(&entry_path);
            let abs = format!("/{}", rel.to_string_lossy().trim_start_matches('/'));
            if conffiles.contains(&abs) {
                return Ok(false);
            }
            let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
            io::copy(entry, &mut hasher)?;
            out.push(PackageFile {
                path: abs,
                sha256: sha2::Digest::finalize(hasher).into(),
            });
            Ok(false)
        })?;
        return Ok(out);
    }
}

/// Reads the `control` file of a `.deb` from `reader`; `path` is only used
/// to name the package in errors.
pub fn read_control_from(reader: impl Read, path: impl AsRef<Path>) -> Result<Stanza, DebError> {
    DebReader {
        reader,
        path: path.as_ref(),
    }
    .control()
}

struct DebReader<'p, R> {
    reader: R,
    path: &'p Path,
}

/// Called with each entry of a tar member; `Ok(true)` stops the walk.
type EntryVisitor<'a> = dyn FnMut(&mut tar::Entry<'_, Box<dyn Read + '_>>) -> io::Result<bool> + 'a;

struct MemberHeader {
    name: String,
    size: u64,
}

impl<R: Read> DebReader<'_, R> {
    fn not_deb(&self, reason: impl Into<String>) -> DebError {
        DebError::NotDeb {
            path: self.path.to_owned(),
            reason: reason.into(),
        }
    }

    fn io(&self, source: io::Error, what: &str) -> DebError {
        if source.kind() == io::ErrorKind::UnexpectedEof {
            self.not_deb(format!("truncated while reading {what}"))
        } else {
            DebError::Io {
                path: self.path.to_owned(),
                source,
            }
        }
    }

    /// Fills `buf`; `Ok(false)` on a clean end of file before the first byte.
    fn fill(&mut self, buf: &mut [u8], what: &str) -> Result<bool, DebError> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.reader.read(&mut buf[filled..]) {
                Ok(0) if filled == 0 => return Ok(false),
                Ok(0) => return Err(self.not_deb(format!("truncated while reading {what}"))),
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io(e, what)),
            }
        }
        Ok(true)
    }

    fn member_header(&mut self) -> Result<Option<MemberHeader>, DebError> {
        let mut h = [0u8; 60];
        if !self.fill(&mut h, "an ar member header")? {
            return Ok(None);
        }
        if &h[58..60] != b"`\n" {
            return Err(self.not_deb("bad ar member header"));
        }
        let field =
            |r: std::ops::Range<usize>| String::from_utf8_lossy(&h[r]).trim_end().to_owned();
        let raw_name = field(0..16);
        let name = raw_name.strip_suffix('/').unwrap_or(&raw_name).to_owned();
        let size_text = field(48..58);
        let size = size_text
            .parse::<u64>()
            .map_err(|_| self.not_deb(format!("bad size {size_text:?} for ar member {name:?}")))?;
        Ok(Some(MemberHeader { name, size }))
    }

    /// Skips a member's data and its padding byte.
    fn skip(&mut self, member: &MemberHeader) -> Result<(), DebError> {
        let len = member.size + member.size % 2;
        let copied = io::copy(&mut (&mut self.reader).take(len), &mut io::sink())
            .map_err(|e| self.io(e, &format!("ar member {:?}", member.name)))?;
        if copied != len {
            return Err(self.not_deb(format!("truncated inside ar member {:?}", member.name)));
        }
        Ok(())
    }

    /// Checks the ar magic and the `debian-binary` member.
    fn start(&mut self) -> Result<(), DebError> {
        let mut magic = [0u8; 8];
        let complete = match self.fill(&mut magic, "the ar header") {
            Ok(complete) => complete,
            Err(e @ DebError::Io { .. }) => return Err(e),
            Err(_) => false,
        };
        if !complete || &magic != b"!<arch>\n" {
            return Err(self.not_deb("not an ar archive (missing \"!<arch>\" magic)"));
        }

        let first = self
            .member_header()?
            .ok_or_else(|| self.not_deb("empty ar archive"))?;
        if first.name != "debian-binary" {
            return Err(self.not_deb(format!(
                "first member is {:?}, expected \"debian-binary\"",
                first.name
            )));
        }
        if first.size > MAX_DEBIAN_BINARY_SIZE {
            return Err(self.not_deb("debian-binary member is too large"));
        }
        let mut format = vec![0u8; first.size as usize + (first.size % 2) as usize];
        self.fill(&mut format, "debian-binary")?;
        let format = String::from_utf8_lossy(&format[..first.size as usize]).into_owned();
        let format = format.trim_end();
        if !format.starts_with("2.") {
            return Err(self.not_deb(format!(
                "unsupported package format {format:?} in debian-binary (expected 2.x)"
            )));
        }
        Ok(())
    }

    fn control(mut self) -> Result<Stanza, DebError> {
        self.start()?;
        loop {
            let member = self
                .member_header()?
                .ok_or_else(|| self.not_deb("no control.tar member"))?;
            if member.name.starts_with('_') {
                self.skip(&member)?;
                continue;
            }
            if member.name.starts_with("control.tar") {
                return self.control_member(member);
            }
            return Err(self.not_deb(format!(
                "unexpected member {:?} before the control member",
                member.name
            )));
        }
    }

    /// The bytes of the regular file `wanted` (a path without leading `./`)
    /// in the data member, at most `limit` bytes; `None` when absent or not
    /// a regular file.
    fn data_file(mut self, wanted: &str, limit: u64) -> Result<Option<Vec<u8>>, DebError> {
        self.start()?;
        let member = loop {
            let member = self
                .member_header()?
                .ok_or_else(|| self.not_deb("no data.tar member"))?;
            if member.name.starts_with("data.tar") {
                break member;
            }
            self.skip(&member)?;
        };
        let path = self.path;
        let data = self.reader.take(member.size);
        let damaged = |source: io::Error| DebError::ControlArchive {
            path: path.to_owned(),
            member: member.name.clone(),
            source,
        };
        let decoder: Box<dyn Read + '_> = match &member.name["data.tar".len()..] {
            "" => Box::new(data),
            ".gz" => Box::new(flate2::read::MultiGzDecoder::new(data)),
            ".xz" => Box::new(liblzma::read::XzDecoder::new(data)),
            ".zst" => Box::new(zstd::stream::read::Decoder::new(data).map_err(damaged)?),
            _ => {
                return Err(DebError::UnsupportedCompression {
                    path: path.to_owned(),
                    member: member.name,
                });
            }
        };
        let mut archive = tar::Archive::new(decoder);
        for entry in archive.entries().map_err(damaged)? {
            let entry = entry.map_err(damaged)?;
            let entry_path = entry.path().map_err(damaged)?;
            if entry_path.strip_prefix(".").unwrap_or(&entry_path) != Path::new(wanted) {
                continue;
            }
            if !entry.header().entry_type().is_file() {
                return Ok(None);
            }
            let mut bytes = Vec::new();
            entry
                .take(limit + 1)
                .read_to_end(&mut bytes)
                .map_err(damaged)?;
            if bytes.len() as u64 > limit {
                return Ok(None);
            }
            return Ok(Some(bytes));
        }
        Ok(None)
    }

    /// Skips `n` bytes (a member's padding).
    fn skip_bytes(&mut self, n: u64, what: &str) -> Result<(), DebError> {
        let copied = io::copy(&mut (&mut self.reader).take(n), &mut io::sink())
            .map_err(|e| self.io(e, what))?;
        if copied != n {
            return Err(self.not_deb(format!("truncated inside ar member {what:?}")));
        }
        Ok(())
    }

    /// Calls `each` with every entry of the tar member `member` (whose name
    /// starts with `prefix`, then the compression's extension) until it
    /// returns `true`; consumes exactly the member's bytes, without padding.
    fn for_each_tar_entry(
        &mut self,
        member: &MemberHeader,
        prefix: &str,
        each: &mut EntryVisitor<'_>,
    ) -> Result<(), DebError> {
        let path = self.path;
        let mut data = (&mut self.reader).take(member.size);
        let damaged = |source: io::Error| DebError::ControlArchive {
            path: path.to_owned(),
            member: member.name.clone(),
            source,
        };
        {
            let decoder: Box<dyn Read + '_> = match &member.name[prefix.len()..] {
                "" => Box::new(&mut data),
                ".gz" => Box::new(flate2::read::MultiGzDecoder::new(&mut data)),
                ".xz" => Box::new(liblzma::read::XzDecoder::new(&mut data)),
                ".zst" => Box::new(zstd::stream::read::Decoder::new(&mut data).map_err(damaged)?),
                _ => {
                    return Err(DebError::UnsupportedCompression {
                        path: path.to_owned(),
                        member: member.name.clone(),
                    });
                }
            };
            let mut archive = tar::Archive::new(decoder);
            for entry in archive.entries().map_err(damaged)? {
                let mut entry = entry.map_err(damaged)?;
                if each(&mut entry).map_err(damaged)? {
                    break;
                }
            }
        }
        // Whatever the tar reader left of the member (its end blocks).
        io::copy(&mut data, &mut io::sink()).map_err(damaged)?;
        Ok(())
    }

    /// The bytes of the regular file `wanted` in the tar member `member`, at
    /// most `limit` bytes.
    fn member_file(
        &mut self,
        member: &MemberHeader,
        wanted: &str,
        limit: u64,
    ) -> Result<Option<Vec<u8>>, DebError> {
        let prefix = if member.name.starts_with("control.tar") {
            "control.tar"
        } else {
            "data.tar"
        };
        let mut found = None;
        self.for_each_tar_entry(member, prefix, &mut |entry| {
            let entry_path = entry.path()?.into_owned();
            if entry_path.strip_prefix(".").unwrap_or(&entry_path) != Path::new(wanted)
                || !entry.header().entry_type().is_file()
            {
                return Ok(false);
            }
            let mut bytes = Vec::new();
            entry.take(limit + 1).read_to_end(&mut bytes)?;
            found = (bytes.len() as u64 <= limit).then_some(bytes);
            Ok(true)
        })?;
        Ok(found)
    }

    fn control_member(self, member: MemberHeader) -> Result<Stanza, DebError> {
        let path = self.path;
        let data = self.reader.take(member.size);
        let decoder: Box<dyn Read + '_> = match &member.name["control.tar".len()..] {
            "" => Box::new(data),
            ".gz" => Box::new(flate2::read::MultiGzDecoder::new(data)),
            ".xz" => Box::new(liblzma::read::XzDecoder::new(data)),
            ".zst" => Box::new(zstd::stream::read::Decoder::new(data).map_err(|source| {
                DebError::ControlArchive {
                    path: path.to_owned(),
                    member: member.name.clone(),
                    source,
                }
            })?),
            _ => {
                return Err(DebError::UnsupportedCompression {
                    path: path.to_owned(),
                    member: member.name,
                });
            }
        };
        let damaged = |source: io::Error| DebError::ControlArchive {
            path: path.to_owned(),
            member: member.name.clone(),
            source,
        };
        let mut archive = tar::Archive::new(decoder);
        for entry in archive.entries().map_err(damaged)? {
            let entry = entry.map_err(damaged)?;
            let entry_path = entry.path().map_err(damaged)?;
            let is_control = entry_path
                .strip_prefix(".")
                .unwrap_or(&entry_path)
                .as_os_str()
                == "control";
            if !is_control || !entry.header().entry_type().is_file() {
                continue;
            }
            let mut bytes = Vec::new();
            entry
                .take(MAX_CONTROL_SIZE + 1)
                .read_to_end(&mut bytes)
                .map_err(damaged)?;
            if bytes.len() as u64 > MAX_CONTROL_SIZE {
                return Err(DebError::NotDeb {
                    path: path.to_owned(),
                    reason: format!("control file is larger than {MAX_CONTROL_SIZE} bytes"),
                });
            }
            let text = String::from_utf8_lossy(&bytes);
            return Stanza::parse_named(&text, "control").map_err(|source| DebError::Control {
                path: path.to_owned(),
                source,
            });
        }
        Err(DebError::MissingControl {
            path: path.to_owned(),
            member: member.name,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    const CONTROL: &str = "Package: hello\nVersion: 1:2.10-3\nArchitecture: amd64\nInstalled-Size: 280\nMulti-Arch: foreign\nPre-Depends: dpkg (>= 1.19)\nDepends: libc6 (>= 2.34), foo | bar:any\nProvides: hello-world (= 2.10), greeter\nDescription: hi\n there\n";

    fn ar_member(out: &mut Vec<u8>, name: &str, data: &[u8]) {
        writeln!(
            out,
            "{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`",
            format!("{name}/"),
            0,
            0,
            0,
            100644,
            data.len()
        )
        .unwrap();
        out.extend_from_slice(data);
        if data.len() % 2 == 1 {
            out.push(b'\n');
        }
    }

    fn control_tar(files: &[(&str, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, content) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(content.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, content.as_bytes()).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn compress(ext: &str, tar: &[u8]) -> Vec<u8> {
        match ext {
            "" => tar.to_vec(),
            ".gz" => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(tar).unwrap();
                e.finish().unwrap()
            }
            ".xz" => {
                let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
                e.write_all(tar).unwrap();
                e.finish().unwrap()
            }
            ".zst" => zstd::encode_all(tar, 1).unwrap(),
            _ => unreachable!(),
        }
    }

    /// A synthetic `.deb` with the given control tarball member.
    pub(crate) fn build_deb(ext: &str, files: &[(&str, &str)]) -> Vec<u8> {
        let mut out = b"!<arch>\n".to_vec();
        ar_member(&mut out, "debian-binary", b"2.0\n");
        ar_member(
            &mut out,
            &format!("control.tar{ext}"),
            &compress(ext, &control_tar(files)),
        );
        ar_member(&mut out, "data.tar.xz", &compress(".xz", &control_tar(&[])));
        out
    }

    #[test]
    fn package_files_hash_every_regular_data_file_but_the_conffiles() {
        for ext in ["", ".gz", ".xz", ".zst"] {
            let mut out = b"!<arch>\n".to_vec();
            ar_member(&mut out, "debian-binary", b"2.0\n");
            ar_member(
                &mut out,
                &format!("control.tar{ext}"),
                &compress(
                    ext,
                    &control_tar(&[("./control", CONTROL), ("./conffiles", "/etc/hello.conf\n")]),
                ),
            );
            // An odd-sized member: its padding byte must be skipped.
            let data = control_tar(&[
                ("./usr/bin/hello", "hi"),
                ("./etc/hello.conf", "x=1\n"),
                ("usr/share/doc/hello/copyright", "c"),
            ]);
            ar_member(&mut out, &format!("data.tar{ext}"), &compress(ext, &data));
            let dir = tempfile::tempdir().unwrap();
            let deb = dir.path().join("hello.deb");
            std::fs::write(&deb, &out).unwrap();
            let files = package_files(&deb).unwrap();
            let sha = |b: &[u8]| -> [u8; 32] {
                sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(b)).into()
            };
            assert_eq!(
                files,
                vec![
                    PackageFile {
                        path: "/usr/bin/hello".into(),
                        sha256: sha(b"hi")
                    },
                    PackageFile {
                        path: "/usr/share/doc/hello/copyright".into(),
                        sha256: sha(b"c")
                    },
                ],
                "{ext}"
            );
        }
    }

    #[test]
    fn control_is_read_from_every_supported_compression() {
        for ext in ["", ".gz", ".xz", ".zst"] {
            let deb = build_deb(ext, &[("./md5sums", "x\n"), ("./control", CONTROL)]);
            let stanza = read_control_from(&deb[..], "hello.deb").unwrap();
            assert_eq!(stanza.get("Package"), Some("hello"), "{ext}");
            assert_eq!(stanza.get("Description"), Some("hi\n there"));
        }
    }

    #[test]
    fn control_without_dot_slash_prefix_is_found() {
        let deb = build_deb(".gz", &[("control", CONTROL)]);
        assert!(read_control_from(&deb[..], "x.deb").is_ok());
    }

    #[test]
    fn deb_info_interprets_dependency_fields() {
        let deb = build_deb(".xz", &[("./control", CONTROL)]);
        let info = DebInfo::from_stanza(&read_control_from(&deb[..], "x.deb").unwrap()).unwrap();
        assert_eq!(info.package, "hello");
        assert_eq!(info.version, "1:2.10-3".parse().unwrap());
        assert_eq!(info.architecture, "amd64");
        assert_eq!(info.multi_arch, MultiArch::Foreign);
        assert_eq!(info.installed_size_kib, Some(280));
        assert_eq!(
            crate::relation::format_relations(&info.pre_depends),
            "dpkg (>= 1.19)"
        );
        assert_eq!(
            crate::relation::format_relations(&info.depends),
            "libc6 (>= 2.34), foo | bar:any"
        );
        assert_eq!(info.provides.len(), 2);
        assert_eq!(info.to_string(), "hello 1:2.10-3 (amd64)");
    }

    #[test]
    fn skippable_underscore_members_are_ignored() {
        let mut out = b"!<arch>\n".to_vec();
        ar_member(&mut out, "debian-binary", b"2.0\n");
        ar_member(&mut out, "_gpgorigin", b"signature");
        ar_member(
            &mut out,
            "control.tar.gz",
            &compress(".gz", &control_tar(&[("./control", CONTROL)])),
        );
        assert!(read_control_from(&out[..], "signed.deb").is_ok());
    }

    #[test]
    fn garbage_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("garbage.deb");
        std::fs::write(&path, b"this is not an ar archive at all").unwrap();
        let err = read_control(&path).unwrap_err();
        assert!(matches!(err, DebError::NotDeb { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("garbage.deb"), "{msg}");
        assert!(msg.contains("not an ar archive"), "{msg}");

        let empty = dir.path().join("empty.deb");
        std::fs::write(&empty, b"").unwrap();
        assert!(
            read_control(&empty)
                .unwrap_err()
                .to_string()
                .contains("empty.deb")
        );

        let missing = dir.path().join("missing.deb");
        let err = read_control(&missing).unwrap_err();
        assert!(matches!(err, DebError::Io { .. }));
        assert!(err.to_string().contains("missing.deb"));
    }

    #[test]
    fn malformed_archives_are_refused_with_a_reason() {
        let reason = |bytes: &[u8]| read_control_from(bytes, "bad.deb").unwrap_err().to_string();

        let good = build_deb(".gz", &[("./control", CONTROL)]);
        assert!(reason(&good[..good.len() / 3]).contains("bad.deb: "));

        let mut out = b"!<arch>\n".to_vec();
        ar_member(&mut out, "data.tar.gz", b"xx");
        assert!(reason(&out).contains("expected \"debian-binary\""));

        let mut out = b"!<arch>\n".to_vec();
        ar_member(&mut out, "debian-binary", b"3.0\n");
        assert!(reason(&out).contains("unsupported package format"));

        let mut out = b"!<arch>\n".to_vec();
        ar_member(&mut out, "debian-binary", b"2.0\n");
        ar_member(&mut out, "data.tar.gz", b"xx");
        assert!(reason(&out).contains("unexpected member \"data.tar.gz\""));

        let mut out = b"!<arch>\n".to_vec();
        ar_member(&mut out, "debian-binary", b"2.0\n");
        assert!(reason(&out).contains("no control.tar member"));

        let mut out = b"!<arch>\n".to_vec();
        ar_member(&mut out, "debian-binary", b"2.0\n");
        ar_member(&mut out, "control.tar.bz2", b"xx");
        assert!(reason(&out).contains("unsupported compression"));

        let mut out = b"!<arch>\n".to_vec();
        ar_member(&mut out, "debian-binary", b"2.0\n");
        ar_member(&mut out, "control.tar.xz", b"definitely not xz");
        assert!(reason(&out).contains("is damaged"));

        let deb = build_deb(".zst", &[("./md5sums", "x\n")]);
        assert!(reason(&deb).contains("contains no ./control file"));

        let deb = build_deb(".zst", &[("./control", "Package: a\nbroken line\n")]);
        assert_eq!(
            reason(&deb),
            "bad.deb: control:2: expected \"Field: value\", found \"broken line\""
        );
    }

    #[test]
    fn missing_or_invalid_fields_name_package_and_field() {
        let err = |control: &str| {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("pkg.deb");
            std::fs::write(&path, build_deb(".gz", &[("./control", control)])).unwrap();
            read_info(&path).unwrap_err().to_string()
        };
        let msg = err("Package: foo\nArchitecture: all\n");
        assert!(
            msg.contains("pkg.deb") && msg.contains("package foo: missing required field Version"),
            "{msg}"
        );
        let msg = err("Version: 1\nArchitecture: all\n");
        assert!(msg.contains("missing required field Package"), "{msg}");
        let msg = err("Package: foo\nVersion: 1\nArchitecture: all\nDepends: bar (>= x_y)\n");
        assert!(
            msg.contains("package foo: field Depends: invalid version"),
            "{msg}"
        );
        let msg = err("Package: foo\nVersion: 1\nArchitecture: all\nMulti-Arch: maybe\n");
        assert!(
            msg.contains("field Multi-Arch has invalid value \"maybe\""),
            "{msg}"
        );
        let msg = err("Package: foo\nVersion: 1\nArchitecture: all\nInstalled-Size: 12k\n");
        assert!(
            msg.contains("field Installed-Size has invalid value \"12k\""),
            "{msg}"
        );
        let msg = err("Package: foo\nVersion: 1\nArchitecture: amd64 i386\n");
        assert!(msg.contains("field Architecture"), "{msg}");
    }
}
