//! Newtypes for every untrusted name, path and number that enters through a
//! spec or manifest.
//!
//! Each type can only be built through its validating constructor
//! (`TryFrom<String>` / `FromStr`, also used by serde), so code holding an
//! [`ArtifactName`] or a [`TargetPath`] never needs to re-check it: an
//! artifact name cannot contain a `/`, a target path cannot contain `..`, a
//! control character, or be relative.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::format::{MAX_ARTIFACT_NAME_LEN, MAX_COMPONENT_LEN, MAX_PATH_LEN};

/// Why a string was refused as one of this module's types.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: {reason}")]
pub struct NameError {
    /// What was being parsed (`"artifact name"`, `"path"`, ...).
    pub what: &'static str,
    /// The refused value (control characters escaped by `Debug`).
    pub value: String,
    /// Why it was refused.
    pub reason: String,
}

impl NameError {
    fn new(what: &'static str, value: &str, reason: impl Into<String>) -> Self {
        // Keep error messages bounded even for a hostile megabyte-long value.
        let value: String = value.chars().take(200).collect();
        Self {
            what,
            value,
            reason: reason.into(),
        }
    }
}

/// Defines a string newtype whose only constructor is `$check`.
macro_rules! string_newtype {
    ($(#[$doc:meta])* $name:ident, $what:literal, $check:path) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The validated string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = NameError;
            fn try_from(value: String) -> Result<Self, NameError> {
                match $check(&value) {
                    Ok(()) => Ok(Self(value)),
                    Err(reason) => Err(NameError::new($what, &value, reason)),
                }
            }
        }

        impl FromStr for $name {
            type Err = NameError;
            fn from_str(value: &str) -> Result<Self, NameError> {
                Self::try_from(value.to_owned())
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

fn check_slug(value: &str, max: usize) -> Result<(), String> {
    let mut chars = value.chars();
    match chars.next() {
        None => return Err("must not be empty".into()),
        Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit() => {}
        Some(_) => return Err("must start with a-z or 0-9 (pattern [a-z0-9][a-z0-9._-]*)".into()),
    }
    if let Some(bad) = chars
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "character {bad:?} is not allowed (pattern [a-z0-9][a-z0-9._-]*)"
        ));
    }
    if value.len() > max {
        return Err(format!("longer than {max} characters"));
    }
    Ok(())
}

fn check_artifact_name(value: &str) -> Result<(), String> {
    check_slug(value, MAX_ARTIFACT_NAME_LEN)
}

string_newtype!(
    /// The name of an artifact: `[a-z0-9][a-z0-9._-]*`, at most 64 characters.
    /// It becomes the tar entry `artifacts/NAME`, so it can never hold a `/`.
    ArtifactName,
    "artifact name",
    check_artifact_name
);

string_newtype!(
    /// The name of a bundle (`[a-z0-9][a-z0-9._-]*`, at most 64 characters):
    /// it names the receipt file and the default output file.
    BundleName,
    "bundle name",
    check_artifact_name
);

fn check_no_control(value: &str) -> Result<(), String> {
    match value.chars().find(|c| c.is_control()) {
        Some(c) => Err(format!("control character {c:?} is not allowed")),
        None => Ok(()),
    }
}

fn check_version(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".into());
    }
    if value.len() > 128 {
        return Err("longer than 128 characters".into());
    }
    check_no_control(value)?;
    if value.chars().any(char::is_whitespace) {
        return Err("must not contain white space".into());
    }
    Ok(())
}

string_newtype!(
    /// A bundle's free-form version label (`1.21.0-1`): printable, no white space.
    /// Ordering between releases is carried by the serial, not by this label.
    Version,
    "version",
    check_version
);

fn check_target_path(value: &str) -> Result<(), String> {
    check_no_control(value)?;
    if !value.starts_with('/') {
        return Err("must be an absolute path (start with /)".into());
    }
    if value == "/" {
        return Err("must not be the root directory itself".into());
    }
    if value.len() > MAX_PATH_LEN {
        return Err(format!("longer than {MAX_PATH_LEN} bytes"));
    }
    for component in value[1..].split('/') {
        match component {
            "" => return Err("must be normalized: no empty component (// or trailing /)".into()),
            "." | ".." => {
                return Err(format!("must be normalized: no {component:?} component"));
            }
            c if c.len() > MAX_COMPONENT_LEN => {
                return Err(format!(
                    "a component is longer than {MAX_COMPONENT_LEN} bytes"
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

string_newtype!(
    /// An absolute, normalized path on the target host (`/usr/local/bin/runc`):
    /// no `.` or `..` component, no empty component, no control character,
    /// not `/` itself. Under `--root R` it is joined below `R`.
    TargetPath,
    "path",
    check_target_path
);

impl TargetPath {
    /// The path's components, without the leading `/`.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0[1..].split('/')
    }

    /// The path relative to `/` (`usr/local/bin/runc`), for joining below a root.
    pub fn relative(&self) -> &str {
        &self.0[1..]
    }

    /// The parent directory, `None` for a path directly below `/`.
    pub fn parent(&self) -> Option<TargetPath> {
        let (parent, _) = self.0.rsplit_once('/')?;
        (!parent.is_empty()).then(|| TargetPath(parent.to_owned()))
    }

    /// This path with one more component; `None` when `name` is not a single
    /// valid component.
    pub fn join(&self, name: &str) -> Option<TargetPath> {
        TargetPath::try_from(format!("{}/{}", self.0, name)).ok()
    }

    /// Whether `self` is `other` or lies below it.
    pub fn starts_with(&self, other: &TargetPath) -> bool {
        self.0 == other.0
            || (self.0.starts_with(&other.0) && self.0.as_bytes().get(other.0.len()) == Some(&b'/'))
    }
}

fn check_member_path(value: &str) -> Result<(), String> {
    check_no_control(value)?;
    if value.is_empty() {
        return Err("must not be empty".into());
    }
    if value.starts_with('/') {
        return Err("must be relative (not start with /)".into());
    }
    if value.len() > MAX_PATH_LEN {
        return Err(format!("longer than {MAX_PATH_LEN} bytes"));
    }
    for component in value.split('/') {
        match component {
            ".." => return Err("must not contain a \"..\" component".into()),
            "" | "." => return Err("must be normalized: no empty or \".\" component".into()),
            c if c.len() > MAX_COMPONENT_LEN => {
                return Err(format!(
                    "a component is longer than {MAX_COMPONENT_LEN} bytes"
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

string_newtype!(
    /// A relative, normalized path inside an archive or below a directory
    /// (`bin/containerd`): no `..`, no `.`, no empty component, not absolute,
    /// no control character. Names of archive members enter through
    /// [`MemberPath::from_archive`], which first drops a leading `./`.
    MemberPath,
    "member path",
    check_member_path
);

impl MemberPath {
    /// Parses a name as stored in a tar archive: a leading `./` and one
    /// trailing `/` (directories) are dropped, then the rules of
    /// [`MemberPath`] apply. `Ok(None)` is the archive's root (`./`).
    pub fn from_archive(raw: &str) -> Result<Option<MemberPath>, NameError> {
        let mut name = raw;
        while let Some(rest) = name.strip_prefix("./") {
            name = rest;
        }
        let name = name.strip_suffix('/').unwrap_or(name);
        if name.is_empty() || name == "." {
            return Ok(None);
        }
        MemberPath::from_str(name).map(Some)
    }

    /// The path's components.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

fn check_var_name(value: &str) -> Result<(), String> {
    let mut chars = value.chars();
    match chars.next() {
        Some(c) if c.is_ascii_uppercase() || c == '_' => {}
        _ => return Err("must match [A-Z_][A-Z0-9_]*".into()),
    }
    if chars.any(|c| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')) {
        return Err("must match [A-Z_][A-Z0-9_]*".into());
    }
    if value.len() > 64 {
        return Err("longer than 64 characters".into());
    }
    Ok(())
}

string_newtype!(
    /// A template variable's name: `[A-Z_][A-Z0-9_]*`, at most 64 characters.
    VarName,
    "variable name",
    check_var_name
);

/// Unit suffixes systemd knows.
pub const UNIT_SUFFIXES: &[&str] = &[
    ".service",
    ".socket",
    ".timer",
    ".mount",
    ".automount",
    ".path",
    ".target",
    ".slice",
    ".swap",
];

fn check_unit_name(value: &str) -> Result<(), String> {
    let Some(suffix) = UNIT_SUFFIXES.iter().find(|s| value.ends_with(*s)) else {
        return Err(format!("must end with one of {}", UNIT_SUFFIXES.join(" ")));
    };
    let stem = &value[..value.len() - suffix.len()];
    if stem.is_empty() || stem.starts_with('.') || stem.starts_with('-') {
        return Err("must have a name before the suffix, not starting with . or -".into());
    }
    if let Some(bad) = stem
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '.' | '@' | '-' | '\\')))
    {
        return Err(format!("character {bad:?} is not allowed in a unit name"));
    }
    if value.len() > 255 {
        return Err("longer than 255 characters".into());
    }
    Ok(())
}

string_newtype!(
    /// A systemd unit file name (`containerd.service`); never holds a `/`.
    UnitName,
    "systemd unit name",
    check_unit_name
);

fn check_module_name(value: &str) -> Result<(), String> {
    if value.is_empty() || value.len() > 64 {
        return Err("must be 1 to 64 characters".into());
    }
    if value.starts_with('-') {
        return Err("must not start with -".into());
    }
    match value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-')))
    {
        Some(bad) => Err(format!(
            "character {bad:?} is not allowed (pattern [A-Za-z0-9_-]+)"
        )),
        None => Ok(()),
    }
}

string_newtype!(
    /// A kernel module name (`overlay`, `br_netfilter`).
    ModuleName,
    "kernel module name",
    check_module_name
);

/// Permission bits, written in JSON as an octal string (`"0755"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Mode(u32);

impl Mode {
    /// Set-user-id and set-group-id bits.
    pub const SETID_BITS: u32 = 0o6000;

    /// Builds a mode from bits; `None` above `0o7777`.
    pub fn new(bits: u32) -> Option<Self> {
        (bits <= 0o7777).then_some(Self(bits))
    }

    /// The permission bits (at most `0o7777`).
    pub fn bits(self) -> u32 {
        self.0
    }

    /// Whether the set-user-id or set-group-id bit is set.
    pub fn is_setid(self) -> bool {
        self.0 & Self::SETID_BITS != 0
    }
}

impl TryFrom<String> for Mode {
    type Error = NameError;
    fn try_from(value: String) -> Result<Self, NameError> {
        value.parse()
    }
}

impl FromStr for Mode {
    type Err = NameError;
    fn from_str(value: &str) -> Result<Self, NameError> {
        let err = |reason: &str| NameError::new("mode", value, reason);
        if !(3..=4).contains(&value.len()) || !value.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
            return Err(err(
                "must be an octal string of 3 or 4 digits, such as \"0755\"",
            ));
        }
        let bits = u32::from_str_radix(value, 8).map_err(|_| err("not an octal number"))?;
        Ok(Self(bits))
    }
}

impl From<Mode> for String {
    fn from(mode: Mode) -> String {
        mode.to_string()
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_names_refuse_slashes_dots_and_uppercase() {
        for ok in ["runc", "cni-plugins", "a.b_c-1", "0"] {
            ArtifactName::from_str(ok).unwrap();
        }
        for bad in [
            "",
            "..",
            ".hidden",
            "a/b",
            "Runc",
            "-x",
            "a b",
            "a\0b",
            &"x".repeat(65),
        ] {
            assert!(ArtifactName::from_str(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn target_paths_must_be_absolute_and_normalized() {
        for ok in ["/usr/local/bin/runc", "/etc", "/a b/c"] {
            TargetPath::from_str(ok).unwrap();
        }
        for bad in [
            "",
            "/",
            "usr/bin",
            "/usr/../etc/shadow",
            "/usr/./bin",
            "/usr//bin",
            "/usr/bin/",
            "/etc/\nx",
            "/a\u{7f}",
        ] {
            assert!(TargetPath::from_str(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn target_path_helpers() {
        let p = TargetPath::from_str("/usr/local/bin").unwrap();
        assert_eq!(p.relative(), "usr/local/bin");
        assert_eq!(p.parent().unwrap().as_str(), "/usr/local");
        assert_eq!(TargetPath::from_str("/usr").unwrap().parent(), None);
        assert_eq!(p.join("runc").unwrap().as_str(), "/usr/local/bin/runc");
        assert!(p.join("..").is_none());
        assert!(
            p.join("a/b")
                .is_some_and(|j| j.as_str() == "/usr/local/bin/a/b")
        );
        let below = TargetPath::from_str("/usr/local/bin/x").unwrap();
        assert!(below.starts_with(&p));
        assert!(
            !TargetPath::from_str("/usr/local/binx")
                .unwrap()
                .starts_with(&p)
        );
    }

    #[test]
    fn member_paths_refuse_escapes() {
        assert_eq!(MemberPath::from_archive("./").unwrap(), None);
        assert_eq!(
            MemberPath::from_archive("./bin/x")
                .unwrap()
                .unwrap()
                .as_str(),
            "bin/x"
        );
        assert_eq!(
            MemberPath::from_archive("bin/").unwrap().unwrap().as_str(),
            "bin"
        );
        for bad in ["../x", "/etc/passwd", "a/../../b", "a//b", "a/./b", "a\nb"] {
            assert!(MemberPath::from_archive(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn modes_parse_octal_strings_only() {
        assert_eq!(Mode::from_str("0755").unwrap().bits(), 0o755);
        assert_eq!(Mode::from_str("644").unwrap().bits(), 0o644);
        assert!(Mode::from_str("4755").unwrap().is_setid());
        assert!(Mode::from_str("2755").unwrap().is_setid());
        assert!(!Mode::from_str("1777").unwrap().is_setid());
        assert_eq!(Mode::from_str("0644").unwrap().to_string(), "0644");
        for bad in ["", "8", "0x755", "07555", "rwx", "99"] {
            assert!(Mode::from_str(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn unit_and_module_names() {
        UnitName::from_str("containerd.service").unwrap();
        UnitName::from_str("getty@tty1.service").unwrap();
        for bad in [
            "containerd",
            "../x.service",
            "a/b.service",
            ".service",
            "x y.service",
        ] {
            assert!(UnitName::from_str(bad).is_err(), "{bad:?} accepted");
        }
        ModuleName::from_str("br_netfilter").unwrap();
        assert!(ModuleName::from_str("-r").is_err());
        assert!(ModuleName::from_str("a/b").is_err());
        VarName::from_str("POD_CIDR").unwrap();
        assert!(VarName::from_str("pod").is_err());
        assert!(VarName::from_str("1A").is_err());
    }
}
