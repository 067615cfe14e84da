//! Debian package versions (`[epoch:]upstream_version[-debian_revision]`) and
//! dpkg's exact ordering.
//!
//! Parsing follows Debian policy §5.6.12 and dpkg's `parseversion`: the epoch
//! is a non-negative integer, the revision is everything after the *last*
//! hyphen, the upstream version may contain alphanumerics and `. + - ~ :`
//! (a hyphen only when there is a revision, a colon only when there is an
//! epoch — both follow automatically from how the string is split), and the
//! revision may contain alphanumerics and `. + ~`.
//!
//! Like dpkg, an upstream version that does not start with a digit is
//! accepted (policy says it *should* start with one, dpkg only warns).
//!
//! Comparison is dpkg's `verrevcmp`: epochs numerically, then upstream, then
//! revision; within each part, alternating non-digit runs (compared character
//! by character, `~` before everything including the end of the string,
//! letters before non-letters) and digit runs (compared numerically). A
//! missing revision compares equal to `0`, so `1.2.3 == 1.2.3-0`; `Eq` and
//! `Hash` agree with that ordering.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

/// A parsed Debian version.
///
/// Equality is dpkg equality (`1.0 == 1.00 == 0:1.0 == 1.0-0`), not string
/// equality. [`Display`](fmt::Display) prints the canonical form: the epoch
/// only when it is non-zero.
#[derive(Debug, Clone)]
pub struct Version {
    epoch: u32,
    upstream: String,
    revision: Option<String>,
}

/// Why a version string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    /// The string is empty (or only whitespace).
    #[error("version string is empty")]
    Empty,
    /// Whitespace inside the version.
    #[error("version {version:?} contains whitespace")]
    Whitespace {
        /// The offending version string.
        version: String,
    },
    /// The part before the first `:` is not a number in `0..=2147483647`.
    #[error("version {version:?} has an invalid epoch (must be an integer from 0 to 2147483647)")]
    BadEpoch {
        /// The offending version string.
        version: String,
    },
    /// Nothing between the epoch and the revision.
    #[error("version {version:?} has an empty upstream version")]
    EmptyUpstream {
        /// The offending version string.
        version: String,
    },
    /// A trailing `-` with nothing after it.
    #[error("version {version:?} has an empty revision after '-'")]
    EmptyRevision {
        /// The offending version string.
        version: String,
    },
    /// A character policy does not allow in the upstream version.
    #[error("version {version:?} has invalid character {ch:?} in its upstream part")]
    BadUpstreamChar {
        /// The offending version string.
        version: String,
        /// The first invalid character.
        ch: char,
    },
    /// A character policy does not allow in the revision.
    #[error("version {version:?} has invalid character {ch:?} in its revision")]
    BadRevisionChar {
        /// The offending version string.
        version: String,
        /// The first invalid character.
        ch: char,
    },
}

impl Version {
    /// Parses a version string; same as [`str::parse`].
    pub fn parse(s: &str) -> Result<Self, VersionError> {
        s.parse()
    }

    /// The epoch (`0` when absent).
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// The upstream version (between the epoch and the last hyphen).
    pub fn upstream(&self) -> &str {
        &self.upstream
    }

    /// The Debian revision (after the last hyphen), if any.
    pub fn revision(&self) -> Option<&str> {
        self.revision.as_deref()
    }
}

impl FromStr for Version {
    type Err = VersionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let trimmed = s.trim();
        if trimmed.is_empty() {
            return Err(VersionError::Empty);
        }
        let version = || trimmed.to_owned();
        if trimmed.chars().any(char::is_whitespace) {
            return Err(VersionError::Whitespace { version: version() });
        }
        let (epoch, rest) = match trimmed.split_once(':') {
            Some((e, rest)) => {
                if e.is_empty() || !e.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(VersionError::BadEpoch { version: version() });
                }
                let epoch: u32 = e
                    .parse()
                    .ok()
                    .filter(|&n: &u32| n <= i32::MAX as u32)
                    .ok_or_else(|| VersionError::BadEpoch { version: version() })?;
                (epoch, rest)
            }
            None => (0, trimmed),
        };
        let (upstream, revision) = match rest.rsplit_once('-') {
            Some((u, r)) => {
                if r.is_empty() {
                    return Err(VersionError::EmptyRevision { version: version() });
                }
                (u, Some(r))
            }
            None => (rest, None),
        };
        if upstream.is_empty() {
            return Err(VersionError::EmptyUpstream { version: version() });
        }
        if let Some(ch) = upstream
            .chars()
            .find(|&c| !(c.is_ascii_alphanumeric() || ".+-~:".contains(c)))
        {
            return Err(VersionError::BadUpstreamChar {
                version: version(),
                ch,
            });
        }
        if let Some(ch) = revision
            .unwrap_or("")
            .chars()
            .find(|&c| !(c.is_ascii_alphanumeric() || ".+~".contains(c)))
        {
            return Err(VersionError::BadRevisionChar {
                version: version(),
                ch,
            });
        }
        Ok(Version {
            epoch,
            upstream: upstream.to_owned(),
            revision: revision.map(str::to_owned),
        })
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.epoch != 0 {
            write!(f, "{}:", self.epoch)?;
        }
        f.write_str(&self.upstream)?;
        if let Some(r) = &self.revision {
            write!(f, "-{r}")?;
        }
        Ok(())
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.epoch
            .cmp(&other.epoch)
            .then_with(|| verrevcmp(&self.upstream, &other.upstream))
            .then_with(|| {
                verrevcmp(
                    self.revision.as_deref().unwrap_or(""),
                    other.revision.as_deref().unwrap_or(""),
                )
            })
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Version {}

impl Hash for Version {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.epoch.hash(state);
        hash_fragment(&self.upstream, state);
        hash_fragment(self.revision.as_deref().unwrap_or(""), state);
    }
}

/// dpkg's character weight: `~` < end of string / digit < letters < others.
fn order(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(b'~') => -1,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(c) => i32::from(c) + 256,
    }
}

/// A transcription of dpkg's `verrevcmp` (lib/dpkg/version.c).
fn verrevcmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    let digit_at = |s: &[u8], k: usize| s.get(k).is_some_and(u8::is_ascii_digit);
    let nondigit_at = |s: &[u8], k: usize| s.get(k).is_some_and(|c| !c.is_ascii_digit());
    while i < a.len() || j < b.len() {
        let mut first_diff = Ordering::Equal;
        while nondigit_at(a, i) || nondigit_at(b, j) {
            let (ac, bc) = (order(a.get(i).copied()), order(b.get(j).copied()));
            if ac != bc {
                return ac.cmp(&bc);
            }
            i += 1;
            j += 1;
        }
        while a.get(i) == Some(&b'0') {
            i += 1;
        }
        while b.get(j) == Some(&b'0') {
            j += 1;
        }
        while digit_at(a, i) && digit_at(b, j) {
            if first_diff == Ordering::Equal {
                first_diff = a[i].cmp(&b[j]);
            }
            i += 1;
            j += 1;
        }
        if digit_at(a, i) {
            return Ordering::Greater;
        }
        if digit_at(b, j) {
            return Ordering::Less;
        }
        if first_diff != Ordering::Equal {
            return first_diff;
        }
    }
    Ordering::Equal
}

/// Hashes the canonical form of a version fragment: the sequence of
/// (non-digit run, digit run without leading zeros) pairs, with `""` and
/// `"0"` identified — exactly the strings `verrevcmp` considers equal hash
/// the same.
fn hash_fragment<H: Hasher>(s: &str, state: &mut H) {
    let b = s.as_bytes();
    let mut k = 0;
    let mut pairs: Vec<(&[u8], &[u8])> = Vec::new();
    while k < b.len() {
        let start = k;
        while k < b.len() && !b[k].is_ascii_digit() {
            k += 1;
        }
        let nondigits = &b[start..k];
        while k < b.len() && b[k] == b'0' {
            k += 1;
        }
        let dstart = k;
        while k < b.len() && b[k].is_ascii_digit() {
            k += 1;
        }
        pairs.push((nondigits, &b[dstart..k]));
    }
    if let [(n, d)] = pairs.as_slice()
        && n.is_empty()
        && d.is_empty()
    {
        pairs.clear();
    }
    pairs.len().hash(state);
    for (n, d) in pairs {
        n.hash(state);
        d.hash(state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::hash_map::DefaultHasher;

    fn v(s: &str) -> Version {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn hash_of(x: &Version) -> u64 {
        let mut h = DefaultHasher::new();
        x.hash(&mut h);
        h.finish()
    }

    /// (a, expected ordering of a relative to b, b); every row was checked
    /// against `dpkg --compare-versions` by
    /// `comparison_table_agrees_with_dpkg_compare_versions`.
    const TABLE: &[(&str, Ordering, &str)] = &[
        ("1.0~rc1", Ordering::Less, "1.0"),
        ("1:0.9", Ordering::Greater, "2.0"),
        ("1.0-1", Ordering::Less, "1.0-1+b1"),
        ("2.30-0ubuntu1", Ordering::Less, "2.30-1"),
        ("2.30-0ubuntu1", Ordering::Greater, "2.30-0"),
        ("2.30-0ubuntu1", Ordering::Less, "2.30-0ubuntu2"),
        ("2.30-0ubuntu10", Ordering::Greater, "2.30-0ubuntu9"),
        ("1.2.3", Ordering::Equal, "1.2.3-0"),
        ("1.2.3", Ordering::Less, "1.2.3-1"),
        ("1.0", Ordering::Equal, "0:1.0"),
        ("1.0", Ordering::Equal, "1.00"),
        ("1.0", Ordering::Equal, "1.0-0"),
        ("1.0", Ordering::Less, "1.0.0"),
        ("1.0", Ordering::Less, "1.0a"),
        ("1.0a", Ordering::Less, "1.0+"),
        ("1.0a", Ordering::Less, "1.0."),
        ("1.0~", Ordering::Less, "1.0"),
        ("1.0~~", Ordering::Less, "1.0~"),
        ("1.0~~a", Ordering::Less, "1.0~"),
        ("1.0~rc1", Ordering::Less, "1.0~rc2"),
        ("1.0~rc1", Ordering::Greater, "1.0~beta1"),
        ("1.0~rc1-1", Ordering::Less, "1.0-1"),
        ("7.6-4~", Ordering::Less, "7.6-4"),
        ("7.6-4~", Ordering::Greater, "7.6-3"),
        ("7.6.q-31", Ordering::Greater, "7.6-4~"),
        ("1.9", Ordering::Less, "1.10"),
        ("1.09", Ordering::Equal, "1.9"),
        ("10", Ordering::Greater, "9"),
        ("2:1.0", Ordering::Greater, "1:9.9"),
        ("0:1.0", Ordering::Less, "1:0.1"),
        ("1.0-1", Ordering::Less, "1.0-2"),
        ("1.0-10", Ordering::Greater, "1.0-9"),
        ("1.0-1~bpo1", Ordering::Less, "1.0-1"),
        ("1.0-1+deb12u1", Ordering::Greater, "1.0-1"),
        ("1.0-1+deb12u1", Ordering::Less, "1.0-1+deb12u2"),
        ("1.0-1+deb12u10", Ordering::Greater, "1.0-1+deb12u9"),
        ("2.36-9+deb12u14", Ordering::Greater, "2.34"),
        ("3.0.19-1~deb12u2", Ordering::Greater, "3.0.0"),
        ("1:1.4.7-1+b2", Ordering::Greater, "1.4.7-1+b2"),
        ("1a", Ordering::Equal, "1a0"),
        ("1.2a", Ordering::Less, "1.2b"),
        ("1.2Z", Ordering::Less, "1.2a"),
        ("1.2-a.b", Ordering::Greater, "1.2-a+b"),
        ("1.0+dfsg", Ordering::Greater, "1.0"),
        ("1.0+dfsg", Ordering::Less, "1.0.1"),
        ("1:2.0-1", Ordering::Equal, "1:2.0-1"),
        ("4.19.0-25", Ordering::Less, "4.19.0-100"),
        ("1.2.3-4-5", Ordering::Greater, "1.2.3-4"),
    ];

    #[test]
    fn comparison_table_matches_dpkg_semantics() {
        assert!(TABLE.len() >= 30);
        for &(a, ord, b) in TABLE {
            let (va, vb) = (v(a), v(b));
            assert_eq!(va.cmp(&vb), ord, "{a} vs {b}");
            assert_eq!(vb.cmp(&va), ord.reverse(), "{b} vs {a}");
            assert_eq!(va == vb, ord == Ordering::Equal, "{a} == {b}");
        }
    }

    /// Asks dpkg for the ordering of `a` relative to `b`; `None` if dpkg
    /// cannot be run.
    fn dpkg_order(a: &str, b: &str) -> Option<Ordering> {
        let holds = |op: &str| {
            std::process::Command::new("dpkg")
                .args(["--compare-versions", a, op, b])
                .status()
                .ok()
                .map(|s| s.success())
        };
        Some(if holds("lt")? {
            Ordering::Less
        } else if holds("eq")? {
            Ordering::Equal
        } else {
            Ordering::Greater
        })
    }

    #[test]
    fn comparison_table_agrees_with_dpkg_compare_versions() {
        if dpkg_order("1", "1").is_none() {
            eprintln!("skipping: dpkg is not available");
            return;
        }
        for &(a, ord, b) in TABLE {
            assert_eq!(
                dpkg_order(a, b),
                Some(ord),
                "dpkg disagrees with table row {a} vs {b}"
            );
        }
    }

    #[test]
    fn equal_versions_hash_equally() {
        for &(a, ord, b) in TABLE {
            if ord == Ordering::Equal {
                assert_eq!(hash_of(&v(a)), hash_of(&v(b)), "{a} / {b}");
            }
        }
        assert_ne!(hash_of(&v("1.0")), hash_of(&v("1.0.0")));
        assert_ne!(hash_of(&v("1.0")), hash_of(&v("1.0-1")));
    }

    #[test]
    fn parse_splits_epoch_upstream_and_revision() {
        let x = v("1:2.30-0ubuntu1");
        assert_eq!(
            (x.epoch(), x.upstream(), x.revision()),
            (1, "2.30", Some("0ubuntu1"))
        );
        let x = v("1.2.3-4-5");
        assert_eq!((x.upstream(), x.revision()), ("1.2.3-4", Some("5")));
        let x = v("2:1.0:3");
        assert_eq!((x.epoch(), x.upstream(), x.revision()), (2, "1.0:3", None));
        let x = v("  7.17  ");
        assert_eq!((x.epoch(), x.upstream(), x.revision()), (0, "7.17", None));
    }

    #[test]
    fn display_is_canonical_and_reparses() {
        assert_eq!(v("0:1.0-1").to_string(), "1.0-1");
        assert_eq!(v("3:1.0~rc1-1+b1").to_string(), "3:1.0~rc1-1+b1");
        for &(a, _, b) in TABLE {
            for s in [a, b] {
                assert_eq!(v(&v(s).to_string()), v(s));
            }
        }
    }

    #[test]
    fn invalid_versions_are_rejected_with_a_reason() {
        use VersionError::*;
        let err = |s: &str| s.parse::<Version>().unwrap_err();
        assert_eq!(err(""), Empty);
        assert_eq!(err("   "), Empty);
        assert!(matches!(err("1.0 1"), Whitespace { .. }));
        assert!(matches!(err(":1.0"), BadEpoch { .. }));
        assert!(matches!(err("a:1.0"), BadEpoch { .. }));
        assert!(matches!(err("-1:1.0"), BadEpoch { .. }));
        assert!(matches!(err("2147483648:1.0"), BadEpoch { .. }));
        assert!(matches!(err("1:"), EmptyUpstream { .. }));
        assert!(matches!(err("-1"), EmptyUpstream { .. }));
        assert!(matches!(err("1:-1"), EmptyUpstream { .. }));
        assert!(matches!(err("1.0-"), EmptyRevision { .. }));
        assert!(matches!(err("1.0_1"), BadUpstreamChar { ch: '_', .. }));
        assert!(matches!(err("1:1.0-1:2"), BadRevisionChar { ch: ':', .. }));
        assert!(matches!(err("1.0-1:2"), BadEpoch { .. }));
        assert!(matches!(err("1.0-1-b_1"), BadRevisionChar { ch: '_', .. }));
        assert!(err("1.0_1").to_string().contains("\"1.0_1\""));
        assert_eq!(v("2147483647:1").epoch(), 2147483647);
    }

    #[test]
    fn upstream_not_starting_with_a_digit_is_accepted_like_dpkg() {
        assert_eq!(v("a1.0").upstream(), "a1.0");
    }
}
