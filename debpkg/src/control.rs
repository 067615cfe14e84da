//! RFC 822-style control data (deb822): `DEBIAN/control`, apt `Packages`
//! indexes and dpkg's `status` database.
//!
//! A file is a sequence of stanzas separated by blank lines (lines that are
//! empty or contain only spaces/tabs). Each stanza is a sequence of
//! `Name: value` fields; a line starting with a space or tab continues the
//! previous field. Rules applied here:
//!
//! * Field names are matched case-insensitively and keep their order and
//!   original spelling. A field appearing twice in one stanza is an error.
//! * The value of the first line is trimmed; continuation lines are kept
//!   verbatim (including their leading whitespace) except for trailing
//!   whitespace, and joined with `"\n"`. So `Conffiles:` followed by two
//!   lines has the value `"\n /etc/a 123\n /etc/b 456"`.
//! * Trailing whitespace and `\r` line endings are tolerated everywhere.
//! * There is no comment syntax (binary control files, `status` and
//!   `Packages` have none); a line starting with `#` is an error, as is any
//!   other line that is neither a field, a continuation, nor blank.
//! * Bytes that are not UTF-8 are replaced by U+FFFD rather than failing the
//!   whole file (old `status` files sometimes carry Latin-1 descriptions).
//!
//! [`StanzaReader`] streams stanzas from any [`BufRead`], holding one stanza
//! in memory at a time, so multi-hundred-megabyte `Packages` files are fine.

use std::fmt;
use std::io::{self, BufRead};

use crate::relation::{self, Provide, Relation, RelationError};
use crate::version::{Version, VersionError};

/// One paragraph of control data: an ordered map of fields with
/// case-insensitive names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stanza {
    fields: Vec<(String, String)>,
}

impl Stanza {
    /// An empty stanza.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses text that must contain exactly one stanza (e.g. a
    /// `DEBIAN/control` file). Leading and trailing blank lines are allowed.
    pub fn parse(text: &str) -> Result<Self, ControlError> {
        Self::parse_named(text, "<control>")
    }

    /// Like [`Stanza::parse`], naming `origin` (a file name) in errors.
    pub fn parse_named(text: &str, origin: &str) -> Result<Self, ControlError> {
        let mut stanzas = StanzaReader::with_origin(text.as_bytes(), origin);
        let first = stanzas.next().transpose()?;
        let second = stanzas.next().transpose()?;
        match (first, second) {
            (Some(s), None) => Ok(s),
            (None, _) => Err(ControlError::StanzaCount {
                origin: origin.to_owned(),
                found: 0,
            }),
            (Some(_), Some(_)) => Err(ControlError::StanzaCount {
                origin: origin.to_owned(),
                found: 2 + stanzas.count(),
            }),
        }
    }

    /// The value of field `name` (case-insensitive), if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.position(name).map(|i| self.fields[i].1.as_str())
    }

    /// Whether field `name` (case-insensitive) is present.
    pub fn contains(&self, name: &str) -> bool {
        self.position(name).is_some()
    }

    /// Sets field `name`. An existing field with the same name (in any case)
    /// keeps its position and spelling and has its value replaced; the old
    /// value is returned. Otherwise the field is appended.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) -> Option<String> {
        let name = name.into();
        let value = value.into();
        match self.position(&name) {
            Some(i) => Some(std::mem::replace(&mut self.fields[i].1, value)),
            None => {
                self.fields.push((name, value));
                None
            }
        }
    }

    /// Removes field `name` (case-insensitive), returning its value.
    pub fn remove(&mut self, name: &str) -> Option<String> {
        self.position(name).map(|i| self.fields.remove(i).1)
    }

    /// The fields in file order, as `(name, value)`.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.fields.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether the stanza has no fields.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    fn position(&self, name: &str) -> Option<usize> {
        self.fields
            .iter()
            .position(|(n, _)| n.eq_ignore_ascii_case(name))
    }
}

/// Writes the stanza back in control-file syntax (one trailing newline, no
/// blank separator line). Continuation lines that do not start with
/// whitespace get a leading space, and empty ones are written as ` .`, so the
/// output always parses back.
impl fmt::Display for Stanza {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, value) in &self.fields {
            let mut lines = value.split('\n');
            let first = lines.next().unwrap_or("");
            if first.is_empty() {
                write!(f, "{name}:")?;
            } else {
                write!(f, "{name}: {first}")?;
            }
            for line in lines {
                if line.trim().is_empty() {
                    f.write_str("\n .")?;
                } else if line.starts_with([' ', '\t']) {
                    write!(f, "\n{line}")?;
                } else {
                    write!(f, "\n {line}")?;
                }
            }
            f.write_str("\n")?;
        }
        Ok(())
    }
}

/// A syntax or I/O error while reading control data.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Reading the underlying input failed.
    #[error("{origin}: read error: {source}")]
    Io {
        /// The file (or `<input>`) being read.
        origin: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A line that is not a field, a continuation or blank.
    #[error("{origin}:{line}: {message}")]
    Syntax {
        /// The file (or `<input>`) being read.
        origin: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong with the line.
        message: String,
    },
    /// The same field twice in one stanza.
    #[error("{origin}:{line}: duplicate field {field:?} in stanza")]
    DuplicateField {
        /// The file (or `<input>`) being read.
        origin: String,
        /// 1-based line number of the second occurrence.
        line: usize,
        /// The field name as written the second time.
        field: String,
    },
    /// [`Stanza::parse`] found zero or several stanzas.
    #[error("{origin}: expected exactly one stanza, found {found}")]
    StanzaCount {
        /// The file (or `<control>`) being parsed.
        origin: String,
        /// How many stanzas were found.
        found: usize,
    },
}

/// Streaming iterator over the stanzas of a control file.
///
/// After the first error the iterator is exhausted.
#[derive(Debug)]
pub struct StanzaReader<R> {
    reader: R,
    origin: String,
    line: usize,
    buf: Vec<u8>,
    done: bool,
}

impl<R: BufRead> StanzaReader<R> {
    /// Reads stanzas from `reader`; errors name the input `<input>`.
    pub fn new(reader: R) -> Self {
        Self::with_origin(reader, "<input>")
    }

    /// Reads stanzas from `reader`; errors name the input `origin`
    /// (typically its path).
    pub fn with_origin(reader: R, origin: impl Into<String>) -> Self {
        StanzaReader {
            reader,
            origin: origin.into(),
            line: 0,
            buf: Vec::new(),
            done: false,
        }
    }

    /// The name used for this input in errors.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    fn syntax(&self, message: impl Into<String>) -> ControlError {
        ControlError::Syntax {
            origin: self.origin.clone(),
            line: self.line,
            message: message.into(),
        }
    }

    fn next_stanza(&mut self) -> Result<Option<Stanza>, ControlError> {
        let mut stanza = Stanza::new();
        loop {
            self.buf.clear();
            let n = self
                .reader
                .read_until(b'\n', &mut self.buf)
                .map_err(|source| ControlError::Io {
                    origin: self.origin.clone(),
                    source,
                })?;
            if n == 0 {
                return Ok((!stanza.is_empty()).then_some(stanza));
            }
            self.line += 1;
            let decoded = String::from_utf8_lossy(&self.buf);
            let text = decoded.trim_end();
            if text.is_empty() {
                if stanza.is_empty() {
                    continue;
                }
                return Ok(Some(stanza));
            }
            if text.starts_with([' ', '\t']) {
                let Some((_, value)) = stanza.fields.last_mut() else {
                    return Err(self.syntax("continuation line before the first field of a stanza"));
                };
                value.push('\n');
                value.push_str(text);
                continue;
            }
            let Some((name, value)) = text.split_once(':') else {
                return Err(self.syntax(format!("expected \"Field: value\", found {text:?}")));
            };
            if !valid_field_name(name) {
                return Err(self.syntax(format!("invalid field name {name:?}")));
            }
            if stanza.contains(name) {
                return Err(ControlError::DuplicateField {
                    origin: self.origin.clone(),
                    line: self.line,
                    field: name.to_owned(),
                });
            }
            stanza
                .fields
                .push((name.to_owned(), value.trim().to_owned()));
        }
    }
}

/// Policy §5.1: printable US-ASCII except space and colon, not starting with
/// `#` or `-`.
fn valid_field_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(['#', '-'])
        && name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
}

impl<R: BufRead> Iterator for StanzaReader<R> {
    type Item = Result<Stanza, ControlError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.next_stanza() {
            Ok(Some(s)) => Some(Ok(s)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// Parses every stanza of `text` (errors name the input `<input>`).
pub fn parse_stanzas(text: &str) -> Result<Vec<Stanza>, ControlError> {
    StanzaReader::new(text.as_bytes()).collect()
}

/// A field of a stanza is missing or cannot be interpreted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    /// A required field is absent (or empty).
    #[error("package {package}: missing required field {field}")]
    Missing {
        /// The package (`<unknown>` if the Package field itself is missing).
        package: String,
        /// The field name.
        field: String,
    },
    /// A version field does not parse.
    #[error("package {package}: field {field}: {source}")]
    Version {
        /// The package.
        package: String,
        /// The field name.
        field: String,
        /// Why the version was rejected.
        #[source]
        source: VersionError,
    },
    /// A relationship field (`Depends`, `Provides`, ...) does not parse.
    #[error("package {package}: field {field}: {source}")]
    Relation {
        /// The package.
        package: String,
        /// The field name.
        field: String,
        /// Why the relationship was rejected.
        #[source]
        source: RelationError,
    },
    /// Any other invalid value.
    #[error("package {package}: field {field} has invalid value {value:?}: {reason}")]
    Invalid {
        /// The package.
        package: String,
        /// The field name.
        field: String,
        /// The value as written.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Typed field accessors shared by [`crate::deb`] and [`crate::status`].
pub(crate) struct Fields<'a> {
    pub(crate) stanza: &'a Stanza,
    pub(crate) package: &'a str,
}

impl<'a> Fields<'a> {
    /// Reads the `Package` field (required, must be a valid package name).
    pub(crate) fn package(stanza: &'a Stanza) -> Result<&'a str, FieldError> {
        let name = stanza
            .get("Package")
            .filter(|v| !v.is_empty())
            .ok_or_else(|| FieldError::Missing {
                package: "<unknown>".to_owned(),
                field: "Package".to_owned(),
            })?;
        if !relation::valid_package_name(name) {
            return Err(FieldError::Invalid {
                package: name.to_owned(),
                field: "Package".to_owned(),
                value: name.to_owned(),
                reason: "not a valid package name".to_owned(),
            });
        }
        Ok(name)
    }

    pub(crate) fn required(&self, field: &str) -> Result<&'a str, FieldError> {
        self.stanza
            .get(field)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| FieldError::Missing {
                package: self.package.to_owned(),
                field: field.to_owned(),
            })
    }

    pub(crate) fn version(&self, field: &str) -> Result<Version, FieldError> {
        self.required(field)?
            .parse()
            .map_err(|source| FieldError::Version {
                package: self.package.to_owned(),
                field: field.to_owned(),
                source,
            })
    }

    pub(crate) fn relations(&self, field: &str) -> Result<Vec<Vec<Relation>>, FieldError> {
        match self.stanza.get(field) {
            None => Ok(Vec::new()),
            Some(v) => relation::parse_relations(v).map_err(|source| FieldError::Relation {
                package: self.package.to_owned(),
                field: field.to_owned(),
                source,
            }),
        }
    }

    pub(crate) fn provides(&self) -> Result<Vec<Provide>, FieldError> {
        match self.stanza.get("Provides") {
            None => Ok(Vec::new()),
            Some(v) => relation::parse_provides(v).map_err(|source| FieldError::Relation {
                package: self.package.to_owned(),
                field: "Provides".to_owned(),
                source,
            }),
        }
    }

    pub(crate) fn invalid(&self, field: &str, value: &str, reason: &str) -> FieldError {
        FieldError::Invalid {
            package: self.package.to_owned(),
            field: field.to_owned(),
            value: value.to_owned(),
            reason: reason.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "\
Package: adduser
Status: install ok installed
Priority: important
Architecture: all
Multi-Arch: foreign
Version: 3.134
Depends: passwd
Conffiles:
 /etc/adduser.conf cc3493ecd2d09837ffdcc3e25fdfff18
 /etc/deluser.conf 11a06baf8245fd8d690b99024d228c1f
Description: add and remove users and groups
 This package includes the 'adduser' and 'deluser' commands.
 .
  - 'adduser' creates new users

Package: apt
Status: install ok installed
Version: 2.6.1
";

    #[test]
    fn stanzas_are_split_on_blank_lines_and_keep_field_order() {
        let stanzas = parse_stanzas(STATUS).unwrap();
        assert_eq!(stanzas.len(), 2);
        let names: Vec<_> = stanzas[0].iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "Package",
                "Status",
                "Priority",
                "Architecture",
                "Multi-Arch",
                "Version",
                "Depends",
                "Conffiles",
                "Description"
            ]
        );
        assert_eq!(stanzas[1].get("Version"), Some("2.6.1"));
    }

    #[test]
    fn field_names_are_case_insensitive() {
        let s = &parse_stanzas(STATUS).unwrap()[0];
        assert_eq!(s.get("package"), Some("adduser"));
        assert_eq!(s.get("MULTI-ARCH"), Some("foreign"));
        assert!(s.contains("conffiles"));
        assert_eq!(s.get("Pre-Depends"), None);
    }

    #[test]
    fn continuation_lines_are_joined_with_newlines() {
        let s = &parse_stanzas(STATUS).unwrap()[0];
        assert_eq!(
            s.get("Conffiles"),
            Some(
                "\n /etc/adduser.conf cc3493ecd2d09837ffdcc3e25fdfff18\n /etc/deluser.conf 11a06baf8245fd8d690b99024d228c1f"
            )
        );
        assert_eq!(
            s.get("Description"),
            Some(
                "add and remove users and groups\n This package includes the 'adduser' and 'deluser' commands.\n .\n  - 'adduser' creates new users"
            )
        );
    }

    #[test]
    fn trailing_whitespace_crlf_and_extra_blank_lines_are_tolerated() {
        let text = "\n\r\n  \nPackage: a  \r\nVersion:1.0\t\r\n \t\r\n\n\nPackage: b\r\nDepends: x,\r\n  y  \r\n\n \n";
        let stanzas = parse_stanzas(text).unwrap();
        assert_eq!(stanzas.len(), 2);
        assert_eq!(stanzas[0].get("Package"), Some("a"));
        assert_eq!(stanzas[0].get("Version"), Some("1.0"));
        assert_eq!(stanzas[1].get("Depends"), Some("x,\n  y"));
    }

    #[test]
    fn file_without_final_newline_yields_last_stanza() {
        let stanzas = parse_stanzas("Package: a\n\nPackage: b").unwrap();
        assert_eq!(stanzas.len(), 2);
        assert_eq!(stanzas[1].get("Package"), Some("b"));
        assert!(parse_stanzas("").unwrap().is_empty());
        assert!(parse_stanzas("\n\n  \n").unwrap().is_empty());
    }

    #[test]
    fn malformed_lines_are_errors_naming_origin_and_line() {
        let err = |text: &str| {
            StanzaReader::with_origin(text.as_bytes(), "Packages")
                .collect::<Result<Vec<_>, _>>()
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err("Package: a\nno colon here\n"),
            "Packages:2: expected \"Field: value\", found \"no colon here\""
        );
        assert_eq!(
            err("Package: a\n\n continued\n"),
            "Packages:3: continuation line before the first field of a stanza"
        );
        assert_eq!(
            err("#Package: a\n"),
            "Packages:1: invalid field name \"#Package\"" // no comment syntax
        );
        assert_eq!(
            err("Package: a\nVersion: 1\npackage: b\n"),
            "Packages:3: duplicate field \"package\" in stanza"
        );
        assert!(err("Bad Name: x\n").contains("invalid field name"));
    }

    #[test]
    fn reader_stops_after_first_error() {
        let mut r = StanzaReader::new("Package: a\n\nbroken\n\nPackage: c\n".as_bytes());
        assert!(r.next().unwrap().is_ok());
        assert!(r.next().unwrap().is_err());
        assert!(r.next().is_none());
    }

    #[test]
    fn invalid_utf8_is_replaced_not_fatal() {
        let bytes = b"Package: a\nDescription: caf\xe9\n";
        let stanzas: Vec<_> = StanzaReader::new(&bytes[..])
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(stanzas[0].get("Description"), Some("caf\u{fffd}"));
    }

    #[test]
    fn reader_streams_a_large_input() {
        let mut text = String::new();
        for i in 0..20_000 {
            text.push_str(&format!(
                "Package: p{i}\nVersion: 1.{i}\nDescription: x\n y\n\n"
            ));
        }
        let reader = io::BufReader::with_capacity(64, text.as_bytes());
        let mut count = 0;
        for s in StanzaReader::new(reader) {
            let s = s.unwrap();
            assert_eq!(s.get("Package").unwrap(), format!("p{count}"));
            count += 1;
        }
        assert_eq!(count, 20_000);
    }

    #[test]
    fn single_stanza_parse_requires_exactly_one() {
        let s = Stanza::parse("\nPackage: a\nVersion: 1\n\n").unwrap();
        assert_eq!(s.len(), 2);
        assert!(matches!(
            Stanza::parse("\n \n"),
            Err(ControlError::StanzaCount { found: 0, .. })
        ));
        assert!(matches!(
            Stanza::parse("Package: a\n\nPackage: b\n\nPackage: c\n"),
            Err(ControlError::StanzaCount { found: 3, .. })
        ));
    }

    #[test]
    fn display_round_trips_through_parse() {
        for s in parse_stanzas(STATUS).unwrap() {
            assert_eq!(Stanza::parse(&s.to_string()).unwrap(), s);
        }
        let mut s = Stanza::new();
        s.insert("Package", "x");
        s.insert("Description", "short\nlong line\n\n indented");
        assert_eq!(
            s.to_string(),
            "Package: x\nDescription: short\n long line\n .\n indented\n"
        );
    }

    #[test]
    fn insert_replaces_in_place_and_remove_deletes() {
        let mut s = Stanza::parse("Package: a\nVersion: 1\nArchitecture: all\n").unwrap();
        assert_eq!(s.insert("version", "2"), Some("1".to_owned()));
        assert_eq!(s.insert("Depends", "b"), None);
        let fields: Vec<_> = s.iter().collect();
        assert_eq!(
            fields,
            [
                ("Package", "a"),
                ("Version", "2"),
                ("Architecture", "all"),
                ("Depends", "b")
            ]
        );
        assert_eq!(s.remove("ARCHITECTURE"), Some("all".to_owned()));
        assert_eq!(s.len(), 3);
        assert!(!s.is_empty());
    }
}
