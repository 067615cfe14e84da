//! apt repository metadata: a suite's `Release` file (and the clearsigned
//! `InRelease` around it) and its `Packages` indexes.
//!
//! Signature checking is not done here (this crate runs no programs): the
//! caller verifies `InRelease` with `gpgv`, as apt does, and then reads the
//! signed text with [`split_clearsigned`], which refuses anything but exactly
//! one signed message, so that no unsigned text can be smuggled in beside it.
//!
//! ```
//! use debpkg::index::{Release, read_packages};
//!
//! let release = Release::parse(
//!     "Suite: stable\nCodename: bookworm\nArchitectures: amd64\nComponents: main\n\
//!      Date: Sat, 10 Aug 2024 09:33:16 UTC\nSHA256:\n \
//!      9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 4 main/binary-amd64/Packages\n",
//! )?;
//! let entry = release.file("main/binary-amd64/Packages").unwrap();
//! assert_eq!(entry.size, 4);
//!
//! let packages = read_packages(
//!     &b"Package: socat\nVersion: 1.7.4.4-2\nArchitecture: amd64\n\
//!        Depends: libc6 (>= 2.34)\nFilename: pool/main/s/socat/socat_1.7.4.4-2_amd64.deb\n\
//!        Size: 375188\nSHA256: 2bf3094e16ce0aab245193eb6b7cb6b6e086f68d321b757e2090901b4cd7f826\n"[..],
//!     "Packages",
//! )?;
//! assert_eq!(packages[0].info.package, "socat");
//! assert_eq!(packages[0].size, 375188);
//! # Ok::<(), debpkg::index::IndexError>(())
//! ```

use std::io::{self, BufRead, BufReader, Read};

use crate::control::{ControlError, FieldError, Stanza, StanzaReader};
use crate::deb::DebInfo;

/// Why repository metadata was refused.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// `InRelease` is not exactly one clearsigned message.
    #[error("{origin}: not a single clearsigned message: {reason}")]
    Clearsigned {
        /// The file.
        origin: String,
        /// What is wrong.
        reason: String,
    },
    /// A `Release` field is missing or malformed.
    #[error("{origin}: {reason}")]
    Release {
        /// The file.
        origin: String,
        /// What is wrong.
        reason: String,
    },
    /// Control syntax or read error (names file and line).
    #[error(transparent)]
    Control(#[from] ControlError),
    /// A `Packages` entry has an invalid field.
    #[error("{origin}: {source}")]
    Field {
        /// The index file.
        origin: String,
        /// The field error (names the package).
        #[source]
        source: Box<FieldError>,
    },
    /// A `Packages` entry lacks what a download needs, or has it malformed.
    #[error("{origin}: package {package}: {reason}")]
    Entry {
        /// The index file.
        origin: String,
        /// The package.
        package: String,
        /// What is wrong.
        reason: String,
    },
    /// Decompressing or reading failed.
    #[error("{origin}: {source}")]
    Io {
        /// The file.
        origin: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

const BEGIN_MESSAGE: &str = "-----BEGIN PGP SIGNED MESSAGE-----";
const BEGIN_SIGNATURE: &str = "-----BEGIN PGP SIGNATURE-----";
const END_SIGNATURE: &str = "-----END PGP SIGNATURE-----";

/// The signed text of a clearsigned file (`InRelease`), dash-escaping
/// undone, without the line break that precedes the signature.
///
/// The file must be exactly one clearsigned message: the `BEGIN PGP SIGNED
/// MESSAGE` line first, `Hash:` armor headers, a blank line, the text, one
/// signature block, and nothing after it but blank lines. Everything else —
/// text before the message or after the signature, a second message, an
/// unescaped line starting with `-` inside the text — is refused, as apt
/// does, because `gpgv` would verify the signed part and ignore the rest.
pub fn split_clearsigned(text: &str, origin: &str) -> Result<String, IndexError> {
    let err = |reason: &str| IndexError::Clearsigned {
        origin: origin.to_owned(),
        reason: reason.to_owned(),
    };
    let mut lines = text
        .split('\n')
        .map(|l| l.trim_end_matches([' ', '\t', '\r']));
    if lines.next() != Some(BEGIN_MESSAGE) {
        return Err(err(
            "it does not start with \"-----BEGIN PGP SIGNED MESSAGE-----\"",
        ));
    }
    loop {
        match lines.next() {
            None => return Err(err("it ends inside the armor headers")),
            Some("") => break,
            Some(h) if h.starts_with("Hash: ") => {}
            Some(_) => return Err(err("unexpected armor header (only Hash: is allowed)")),
        }
    }
    let mut message: Vec<String> = Vec::new();
    loop {
        match lines.next() {
            None => return Err(err("no signature follows the message")),
            Some(BEGIN_SIGNATURE) => break,
            Some(l) if l.starts_with("- ") => message.push(l[2..].to_owned()),
            Some(l) if l.starts_with('-') => {
                return Err(err("a line inside the message starts with an unescaped -"));
            }
            Some(l) => message.push(l.to_owned()),
        }
    }
    let mut ended = false;
    for l in lines.by_ref() {
        if l == END_SIGNATURE {
            ended = true;
            break;
        }
        if l.starts_with("-----") {
            return Err(err("unexpected armor line inside the signature"));
        }
    }
    if !ended {
        return Err(err("the signature block is not terminated"));
    }
    if lines.any(|l| !l.is_empty()) {
        return Err(err("text follows the signature"));
    }
    Ok(message.join("\n"))
}

/// One file listed in a `Release` file's `SHA256` field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseFile {
    /// Path below `dists/SUITE/` (`main/binary-amd64/Packages.xz`).
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256, 64 lowercase hex digits.
    pub sha256: String,
}

/// A suite's `Release` file (the signed text of `InRelease`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// Every field, as written.
    pub stanza: Stanza,
    /// `Suite` (`stable`), if present.
    pub suite: Option<String>,
    /// `Codename` (`bookworm`), if present.
    pub codename: Option<String>,
    /// `Architectures`.
    pub architectures: Vec<String>,
    /// `Components`.
    pub components: Vec<String>,
    /// `Date`, in seconds since the Unix epoch, if present.
    pub date: Option<i64>,
    /// `Valid-Until`, in seconds since the Unix epoch, if present.
    pub valid_until: Option<i64>,
    /// The `SHA256` list.
    pub sha256: Vec<ReleaseFile>,
}

impl Release {
    /// Parses the text of a `Release` file (one stanza). Its `SHA256` field
    /// is required: MD5 and SHA-1 lists are never used.
    pub fn parse(text: &str) -> Result<Release, IndexError> {
        Self::parse_named(text, "Release")
    }

    /// Like [`Release::parse`], naming `origin` in errors.
    pub fn parse_named(text: &str, origin: &str) -> Result<Release, IndexError> {
        let err = |reason: String| IndexError::Release {
            origin: origin.to_owned(),
            reason,
        };
        let stanza = Stanza::parse_named(text, origin)?;
        let words = |field: &str| -> Vec<String> {
            stanza
                .get(field)
                .map(|v| v.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default()
        };
        let date = |field: &str| -> Result<Option<i64>, IndexError> {
            match stanza.get(field) {
                None => Ok(None),
                Some(v) => parse_date(v)
                    .map(Some)
                    .ok_or_else(|| err(format!("field {field}: cannot read the date {v:?}"))),
            }
        };
        let list = stanza
            .get("SHA256")
            .ok_or_else(|| err("no SHA256 field".into()))?;
        let mut sha256 = Vec::new();
        for line in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let parts: Vec<&str> = line.split_whitespace().collect();
            let [hash, size, path] = parts[..] else {
                return Err(err(format!(
                    "SHA256 line {line:?}: expected \"HASH SIZE PATH\""
                )));
            };
            if !is_sha256_hex(hash) {
                return Err(err(format!("SHA256 line {line:?}: expected 64 hex digits")));
            }
            let size = size
                .parse()
                .map_err(|_| err(format!("SHA256 line {line:?}: bad size")))?;
            sha256.push(ReleaseFile {
                path: path.to_owned(),
                size,
                sha256: hash.to_ascii_lowercase(),
            });
        }
        Ok(Release {
            suite: stanza.get("Suite").map(str::to_owned),
            codename: stanza.get("Codename").map(str::to_owned),
            architectures: words("Architectures"),
            components: words("Components"),
            date: date("Date")?,
            valid_until: date("Valid-Until")?,
            sha256,
            stanza,
        })
    }

    /// The `SHA256` entry for `path` (relative to `dists/SUITE/`).
    pub fn file(&self, path: &str) -> Option<&ReleaseFile> {
        self.sha256.iter().find(|f| f.path == path)
    }

    /// The best listed `Packages` index of `component` for `arch`: `.xz`,
    /// else `.gz`, else uncompressed.
    pub fn packages_index(&self, component: &str, arch: &str) -> Option<&ReleaseFile> {
        ["xz", "gz", ""].iter().find_map(|ext| {
            let base = format!("{component}/binary-{arch}/Packages");
            self.file(&if ext.is_empty() {
                base
            } else {
                format!("{base}.{ext}")
            })
        })
    }
}

/// Whether `s` is 64 hex digits.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Parses a `Release` date: `Sat, 10 Aug 2024 09:33:16 UTC` (RFC 2822 as apt
/// writes and reads it; the weekday is optional, the zone is `UTC`, `GMT`,
/// `Z` or `±hhmm`). Returns seconds since the Unix epoch.
pub fn parse_date(s: &str) -> Option<i64> {
    let s = s.trim();
    let s = match s.split_once(',') {
        Some((_, rest)) => rest.trim(),
        None => s,
    };
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [day, month, year, time, zone] = parts[..] else {
        return None;
    };
    let day: i64 = day.parse().ok().filter(|d| (1..=31).contains(d))?;
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| m.eq_ignore_ascii_case(month))? as i64 + 1;
    let year: i64 = year.parse().ok().filter(|y| (1970..=9999).contains(y))?;
    let hms: Vec<i64> = time
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let [h, m, sec] = hms[..] else { return None };
    if !(0..24).contains(&h) || !(0..60).contains(&m) || !(0..=60).contains(&sec) {
        return None;
    }
    let offset = match zone {
        "UTC" | "GMT" | "Z" | "UT" => 0,
        z if z.len() == 5 && (z.starts_with('+') || z.starts_with('-')) => {
            let hh: i64 = z[1..3].parse().ok()?;
            let mm: i64 = z[3..5].parse().ok()?;
            let v = hh * 3600 + mm * 60;
            if z.starts_with('-') { -v } else { v }
        }
        _ => return None,
    };
    Some(days_from_civil(year, month, day) * 86400 + h * 3600 + m * 60 + sec - offset)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// One entry of a `Packages` index: what dependency resolution needs, and
/// where and how to fetch the `.deb`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexPackage {
    /// Name, version, architecture, relations, `Provides`, `Multi-Arch`.
    pub info: DebInfo,
    /// `Filename`: the `.deb`'s path below the archive root
    /// (`pool/main/s/socat/socat_1.7.4.4-2_amd64.deb`).
    pub filename: String,
    /// `Size` in bytes.
    pub size: u64,
    /// `SHA256`, 64 lowercase hex digits.
    pub sha256: String,
    /// `Priority` (`required`, `important`, `optional`, ...), if present.
    pub priority: Option<String>,
}

/// Whether `f` is a safe relative path for a `Filename`: no leading `/`, no
/// empty, `.` or `..` component, no white space or control character.
fn safe_filename(f: &str) -> bool {
    !f.is_empty()
        && !f.starts_with('/')
        && !f.chars().any(|c| c.is_control() || c.is_whitespace())
        && f.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

impl IndexPackage {
    /// Interprets one `Packages` stanza. `Filename`, `Size` and `SHA256`
    /// are required (an index without SHA256 sums cannot pin anything).
    pub fn from_stanza(stanza: &Stanza, origin: &str) -> Result<Self, IndexError> {
        let info = DebInfo::from_stanza(stanza).map_err(|source| IndexError::Field {
            origin: origin.to_owned(),
            source: Box::new(source),
        })?;
        let err = |reason: String| IndexError::Entry {
            origin: origin.to_owned(),
            package: format!("{} {}", info.package, info.version),
            reason,
        };
        let filename = stanza
            .get("Filename")
            .ok_or_else(|| err("no Filename field".into()))?;
        if !safe_filename(filename) {
            return Err(err(format!(
                "Filename {filename:?} is not a plain relative path"
            )));
        }
        let size = stanza
            .get("Size")
            .ok_or_else(|| err("no Size field".into()))?;
        let size = size
            .parse()
            .map_err(|_| err(format!("Size {size:?} is not a number")))?;
        let sha256 = stanza
            .get("SHA256")
            .ok_or_else(|| err("no SHA256 field".into()))?;
        if !is_sha256_hex(sha256) {
            return Err(err(format!("SHA256 {sha256:?} is not 64 hex digits")));
        }
        Ok(IndexPackage {
            filename: filename.to_owned(),
            size,
            sha256: sha256.to_ascii_lowercase(),
            priority: stanza.get("Priority").map(str::to_owned),
            info,
        })
    }
}

/// Reads every entry of an (uncompressed) `Packages` index.
pub fn read_packages(reader: impl BufRead, origin: &str) -> Result<Vec<IndexPackage>, IndexError> {
    let mut out = Vec::new();
    for stanza in StanzaReader::with_origin(reader, origin) {
        out.push(IndexPackage::from_stanza(&stanza?, origin)?);
    }
    Ok(out)
}

/// Reads a `Packages` index compressed with xz or gzip, or not compressed
/// (told apart by content, not by name).
pub fn read_packages_file(
    mut reader: impl Read,
    origin: &str,
) -> Result<Vec<IndexPackage>, IndexError> {
    let io_err = |source| IndexError::Io {
        origin: origin.to_owned(),
        source,
    };
    let mut head = [0u8; 6];
    let mut n = 0;
    while n < head.len() {
        match reader.read(&mut head[n..]).map_err(io_err)? {
            0 => break,
            k => n += k,
        }
    }
    let whole = (&head[..n]).chain(reader);
    let decoded: Box<dyn Read> = if head[..n].starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Box::new(liblzma::read::XzDecoder::new_multi_decoder(whole))
    } else if head[..n].starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(whole))
    } else {
        Box::new(whole)
    };
    read_packages(BufReader::with_capacity(1 << 16, decoded), origin).map_err(|e| match e {
        IndexError::Control(ControlError::Io { source, .. }) => io_err(source),
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIGNED: &str = "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\nOrigin: Test\n- -dash\nSHA256:\n x\n-----BEGIN PGP SIGNATURE-----\n\niQ\n=abc\n-----END PGP SIGNATURE-----\n";

    #[test]
    fn clearsigned_text_is_extracted() {
        assert_eq!(
            split_clearsigned(SIGNED, "InRelease").unwrap(),
            "Origin: Test\n-dash\nSHA256:\n x"
        );
        assert_eq!(
            split_clearsigned(&SIGNED.replace('\n', "\r\n"), "InRelease").unwrap(),
            "Origin: Test\n-dash\nSHA256:\n x"
        );
    }

    #[test]
    fn anything_outside_the_one_message_is_refused() {
        for (name, bad) in [
            ("text before", format!("Origin: Evil\n{SIGNED}")),
            ("text after", format!("{SIGNED}Origin: Evil\n")),
            ("second message", format!("{SIGNED}{SIGNED}")),
            (
                "unescaped dash line",
                SIGNED.replace("- -dash", "-----BEGIN PGP SIGNED MESSAGE-----"),
            ),
            (
                "other armor header",
                SIGNED.replace("Hash: SHA512", "Comment: x"),
            ),
            (
                "no signature",
                SIGNED[..SIGNED.find("-----BEGIN PGP SIGNATURE").unwrap()].to_owned(),
            ),
            (
                "unterminated signature",
                SIGNED.replace("-----END PGP SIGNATURE-----\n", ""),
            ),
            ("not clearsigned", "Origin: Test\n".to_owned()),
        ] {
            assert!(
                split_clearsigned(&bad, "InRelease").is_err(),
                "{name} was accepted"
            );
        }
    }

    #[test]
    fn dates_as_apt_writes_them() {
        assert_eq!(parse_date("Thu, 01 Jan 1970 00:00:00 UTC"), Some(0));
        assert_eq!(
            parse_date("Sat, 10 Aug 2024 09:33:16 UTC"),
            Some(1_723_282_396)
        );
        assert_eq!(
            parse_date("10 Aug 2024 11:33:16 +0200"),
            Some(1_723_282_396)
        );
        assert_eq!(
            parse_date("Sat, 29 Feb 2020 00:00:00 GMT"),
            Some(1_582_934_400)
        );
        assert_eq!(parse_date("Sat, 10 Aug 2024 09:33 UTC"), None);
        assert_eq!(parse_date("Sat, 10 Foo 2024 09:33:16 UTC"), None);
        assert_eq!(parse_date("Sat, 10 Aug 2024 09:33:16 CEST"), None);
    }

    #[test]
    fn release_fields_and_index_choice() {
        let r = Release::parse(
            "Suite: stable\nCodename: bookworm\nDate: Sat, 10 Aug 2024 09:33:16 UTC\n\
             Valid-Until: Sat, 17 Aug 2024 09:33:16 UTC\nArchitectures: amd64 arm64\nComponents: main contrib\n\
             MD5Sum:\n 0123 1 main/binary-amd64/Packages\nSHA256:\n \
             9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 10 main/binary-amd64/Packages\n \
             9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08 5 main/binary-amd64/Packages.gz\n",
        )
        .unwrap();
        assert_eq!(r.codename.as_deref(), Some("bookworm"));
        assert_eq!(r.architectures, ["amd64", "arm64"]);
        assert_eq!(r.components, ["main", "contrib"]);
        assert_eq!(r.valid_until, Some(1_723_282_396 + 7 * 86400));
        let idx = r.packages_index("main", "amd64").unwrap();
        assert_eq!(idx.path, "main/binary-amd64/Packages.gz");
        assert_eq!(
            idx.sha256,
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
        assert!(r.packages_index("contrib", "amd64").is_none());
        assert!(Release::parse("Suite: x\nMD5Sum:\n 0 1 a\n").is_err());
        assert!(Release::parse("SHA256:\n abc 1 a\n").is_err());
    }

    #[test]
    fn packages_entries_need_safe_download_fields() {
        let good = "Package: a\nVersion: 1\nArchitecture: all\nFilename: pool/a_1_all.deb\nSize: 3\nSHA256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\n";
        assert_eq!(read_packages(good.as_bytes(), "P").unwrap().len(), 1);
        for (what, bad) in [
            (
                "no Filename",
                good.replace("Filename: pool/a_1_all.deb\n", ""),
            ),
            ("no SHA256", good.replace("SHA256: ", "MD5sum: ")),
            ("absolute", good.replace("pool/a_1", "/pool/a_1")),
            ("dot-dot", good.replace("pool/a_1", "pool/../../a_1")),
            ("bad size", good.replace("Size: 3", "Size: x")),
            ("bad version", good.replace("Version: 1", "Version: a:b")),
        ] {
            let e = read_packages(bad.as_bytes(), "P").unwrap_err();
            assert!(e.to_string().starts_with("P: "), "{what}: {e}");
        }
    }

    #[test]
    fn compressed_indexes_are_detected_by_content() {
        use std::io::Write as _;
        let text = b"Package: a\nVersion: 1\nArchitecture: all\nFilename: pool/a.deb\nSize: 3\nSHA256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\n\nPackage: b\nVersion: 2\nArchitecture: all\nFilename: pool/b.deb\nSize: 3\nSHA256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\n";
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(text).unwrap();
        let gz = gz.finish().unwrap();
        let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 6);
        xz.write_all(text).unwrap();
        let xz = xz.finish().unwrap();
        for data in [&text[..], &gz[..], &xz[..]] {
            let p = read_packages_file(data, "P").unwrap();
            assert_eq!(p.len(), 2);
            assert_eq!(p[1].info.package, "b");
        }
        assert!(read_packages_file(&xz[..xz.len() - 8], "P").is_err());
    }
}
