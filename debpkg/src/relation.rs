//! Package relationship fields (`Depends`, `Pre-Depends`, `Recommends`, ...)
//! and `Provides`, per Debian policy §7.1.
//!
//! A relationship field is an AND (comma-separated) of OR-groups
//! (`|`-separated) of alternatives:
//!
//! ```text
//! name[:archqual] [(op version)] [[arch ...]] [<profile ...>]...
//! ```
//!
//! Whitespace (including the newlines of folded fields) is allowed between
//! all tokens, and inside the parentheses (`(>=2.34)` is accepted). Empty
//! groups, such as those left by a trailing comma, are skipped; an empty
//! alternative (`a | | b`) is an error.

use std::fmt;

use crate::version::{Version, VersionError};

/// A version comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// `<<`: strictly earlier.
    Earlier,
    /// `<=` (also the obsolete `<`): earlier or equal.
    EarlierOrEqual,
    /// `=`: exactly equal.
    Equal,
    /// `>=` (also the obsolete `>`): later or equal.
    LaterOrEqual,
    /// `>>`: strictly later.
    Later,
}

impl Op {
    /// The canonical spelling: `<<`, `<=`, `=`, `>=` or `>>`.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Earlier => "<<",
            Op::EarlierOrEqual => "<=",
            Op::Equal => "=",
            Op::LaterOrEqual => ">=",
            Op::Later => ">>",
        }
    }

    /// Whether `candidate op reference` holds, e.g.
    /// `Op::LaterOrEqual.matches(installed, required)`.
    pub fn matches(self, candidate: &Version, reference: &Version) -> bool {
        let ord = candidate.cmp(reference);
        match self {
            Op::Earlier => ord.is_lt(),
            Op::EarlierOrEqual => ord.is_le(),
            Op::Equal => ord.is_eq(),
            Op::LaterOrEqual => ord.is_ge(),
            Op::Later => ord.is_gt(),
        }
    }

    /// Splits a leading operator off `s` (the text inside the parentheses).
    fn split(s: &str) -> Option<(Op, &str)> {
        const OPS: [(&str, Op); 7] = [
            ("<<", Op::Earlier),
            ("<=", Op::EarlierOrEqual),
            (">=", Op::LaterOrEqual),
            (">>", Op::Later),
            ("=", Op::Equal),
            ("<", Op::EarlierOrEqual),
            (">", Op::LaterOrEqual),
        ];
        OPS.iter()
            .find_map(|&(text, op)| s.strip_prefix(text).map(|rest| (op, rest)))
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One alternative of a relationship field, e.g. `libc6 (>= 2.34)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    /// The package (or virtual package) name.
    pub name: String,
    /// The architecture qualifier *without* the colon: `any`, `native`,
    /// `amd64`, ...
    pub arch_qualifier: Option<String>,
    /// The version constraint, if any. Obsolete `<` / `>` are stored as
    /// [`Op::EarlierOrEqual`] / [`Op::LaterOrEqual`].
    pub constraint: Option<(Op, Version)>,
    /// The architecture restriction list (`[amd64 !i386]`), as written.
    /// Only meaningful in source packages; ignored for binary dependencies.
    pub arch_restrictions: Vec<String>,
    /// Build profile restriction formulas (`<!nocheck> <stage1 cross>`), one
    /// inner list per `<...>` group. Ignored for binary dependencies.
    pub build_profiles: Vec<Vec<String>>,
}

impl Relation {
    /// A relation on `name` with no qualifier, constraint or restrictions.
    pub fn new(name: impl Into<String>) -> Self {
        Relation {
            name: name.into(),
            arch_qualifier: None,
            constraint: None,
            arch_restrictions: Vec::new(),
            build_profiles: Vec::new(),
        }
    }

    /// Whether `version` satisfies the version constraint (always true when
    /// there is none).
    pub fn version_matches(&self, version: &Version) -> bool {
        self.constraint
            .as_ref()
            .is_none_or(|(op, reference)| op.matches(version, reference))
    }

    /// Parses a single alternative (no `,` or `|`).
    pub fn parse(text: &str) -> Result<Self, RelationError> {
        parse_alternative(text.trim(), text)
    }
}

impl std::str::FromStr for Relation {
    type Err = RelationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Relation::parse(s)
    }
}

impl fmt::Display for Relation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if let Some(q) = &self.arch_qualifier {
            write!(f, ":{q}")?;
        }
        if let Some((op, v)) = &self.constraint {
            write!(f, " ({op} {v})")?;
        }
        if !self.arch_restrictions.is_empty() {
            write!(f, " [{}]", self.arch_restrictions.join(" "))?;
        }
        for p in &self.build_profiles {
            write!(f, " <{}>", p.join(" "))?;
        }
        Ok(())
    }
}

/// One entry of a `Provides` field: a (virtual) package name with an
/// optional exact version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provide {
    /// The provided name.
    pub name: String,
    /// The provided version (`Provides: foo (= 1.0)`), if any.
    pub version: Option<Version>,
}

impl fmt::Display for Provide {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if let Some(v) = &self.version {
            write!(f, " (= {v})")?;
        }
        Ok(())
    }
}

/// Why a relationship field was rejected. Each variant carries the offending
/// entry (`relation`) as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelationError {
    /// `a | | b`, or a leading/trailing `|`.
    #[error("empty alternative in {relation:?}")]
    EmptyAlternative {
        /// The OR-group as written.
        relation: String,
    },
    /// The package name is empty or has characters policy does not allow.
    #[error("invalid package name {name:?} in {relation:?}")]
    InvalidName {
        /// The rejected name.
        name: String,
        /// The entry as written.
        relation: String,
    },
    /// `name:` followed by nothing valid.
    #[error("invalid architecture qualifier {qualifier:?} in {relation:?}")]
    InvalidArchQualifier {
        /// The rejected qualifier.
        qualifier: String,
        /// The entry as written.
        relation: String,
    },
    /// `(`, `[` or `<` without its closing counterpart.
    #[error("unterminated {open:?} in {relation:?}")]
    Unterminated {
        /// The opening character.
        open: char,
        /// The entry as written.
        relation: String,
    },
    /// The parenthesised constraint does not start with an operator.
    #[error("missing or invalid version operator in {relation:?}")]
    BadOperator {
        /// The entry as written.
        relation: String,
    },
    /// The version in the constraint does not parse.
    #[error("invalid version in {relation:?}: {source}")]
    BadVersion {
        /// The entry as written.
        relation: String,
        /// Why the version was rejected.
        #[source]
        source: VersionError,
    },
    /// An empty `[]` or `<>` list.
    #[error("empty {open}...{close} list in {relation:?}")]
    EmptyList {
        /// The opening character.
        open: char,
        /// The closing character.
        close: char,
        /// The entry as written.
        relation: String,
    },
    /// Text after the last recognised token.
    #[error("unexpected {text:?} in {relation:?}")]
    Trailing {
        /// The unexpected text.
        text: String,
        /// The entry as written.
        relation: String,
    },
    /// A `Provides` entry with something other than `(= version)`, an
    /// architecture qualifier, restrictions or alternatives.
    #[error("invalid Provides entry {relation:?}: {reason}")]
    InvalidProvide {
        /// The entry as written.
        relation: String,
        /// What is not allowed.
        reason: &'static str,
    },
}

/// Whether `name` is a valid package name as dpkg accepts it: starts with an
/// ASCII alphanumeric, continues with alphanumerics or `+ - . _`. (Policy is
/// stricter — lowercase, no `_`, at least two characters — but dpkg's
/// databases may contain such names.)
pub fn valid_package_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "+-._".contains(c))
}

fn valid_arch_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// Parses a relationship field into an AND of OR-groups.
pub fn parse_relations(field: &str) -> Result<Vec<Vec<Relation>>, RelationError> {
    let mut groups = Vec::new();
    for group in field.split(',') {
        if group.trim().is_empty() {
            continue;
        }
        let alternatives = group
            .split('|')
            .map(|alt| {
                let trimmed = alt.trim();
                if trimmed.is_empty() {
                    Err(RelationError::EmptyAlternative {
                        relation: normalize_ws(group),
                    })
                } else {
                    parse_alternative(trimmed, alt)
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        groups.push(alternatives);
    }
    Ok(groups)
}

/// Parses a `Provides` field: comma-separated names, each with an optional
/// `(= version)`. Other operators, alternatives, architecture qualifiers and
/// restriction lists are rejected, as dpkg does.
pub fn parse_provides(field: &str) -> Result<Vec<Provide>, RelationError> {
    let mut provides = Vec::new();
    for entry in field.split(',') {
        let trimmed = entry.trim();
        if trimmed.is_empty() {
            continue;
        }
        let invalid = |reason| RelationError::InvalidProvide {
            relation: normalize_ws(entry),
            reason,
        };
        if trimmed.contains('|') {
            return Err(invalid("alternatives are not allowed"));
        }
        let rel = parse_alternative(trimmed, entry)?;
        if rel.arch_qualifier.is_some() {
            return Err(invalid("architecture qualifiers are not allowed"));
        }
        if !rel.arch_restrictions.is_empty() || !rel.build_profiles.is_empty() {
            return Err(invalid("restriction lists are not allowed"));
        }
        let version = match rel.constraint {
            None => None,
            Some((Op::Equal, v)) => Some(v),
            Some(_) => return Err(invalid("only exact versions (=) may be provided")),
        };
        provides.push(Provide {
            name: rel.name,
            version,
        });
    }
    Ok(provides)
}

/// Formats an OR-group as `a (>= 1) | b`.
pub fn format_group(group: &[Relation]) -> String {
    group
        .iter()
        .map(Relation::to_string)
        .collect::<Vec<_>>()
        .join(" | ")
}

/// Formats a whole relationship field as `a (>= 1) | b, c`.
pub fn format_relations(groups: &[Vec<Relation>]) -> String {
    groups
        .iter()
        .map(|g| format_group(g))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Collapses runs of whitespace (folded fields) for error messages.
fn normalize_ws(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Parses one alternative; `s` is trimmed and non-empty, `raw` is the text
/// as written (for errors).
fn parse_alternative(s: &str, raw: &str) -> Result<Relation, RelationError> {
    let relation = || normalize_ws(raw);
    let is_delim = |c: char| c.is_whitespace() || "([<:".contains(c);

    let name_end = s.find(is_delim).unwrap_or(s.len());
    let name = &s[..name_end];
    if !valid_package_name(name) {
        return Err(RelationError::InvalidName {
            name: name.to_owned(),
            relation: relation(),
        });
    }
    let mut rest = &s[name_end..];
    let mut rel = Relation::new(name);

    if let Some(after) = rest.strip_prefix(':') {
        let end = after
            .find(|c: char| c.is_whitespace() || "([<".contains(c))
            .unwrap_or(after.len());
        let qualifier = &after[..end];
        if !valid_arch_name(qualifier) {
            return Err(RelationError::InvalidArchQualifier {
                qualifier: qualifier.to_owned(),
                relation: relation(),
            });
        }
        rel.arch_qualifier = Some(qualifier.to_owned());
        rest = &after[end..];
    }

    rest = rest.trim_start();
    if let Some(after) = rest.strip_prefix('(') {
        let end = after.find(')').ok_or(RelationError::Unterminated {
            open: '(',
            relation: relation(),
        })?;
        let inner = after[..end].trim();
        let (op, version) = Op::split(inner).ok_or_else(|| RelationError::BadOperator {
            relation: relation(),
        })?;
        let version = version
            .parse::<Version>()
            .map_err(|source| RelationError::BadVersion {
                relation: relation(),
                source,
            })?;
        rel.constraint = Some((op, version));
        rest = after[end + 1..].trim_start();
    }

    if let Some(after) = rest.strip_prefix('[') {
        let (list, after) = bracketed(after, '[', ']', &relation)?;
        rel.arch_restrictions = list;
        rest = after;
    }

    while let Some(after) = rest.strip_prefix('<') {
        let (list, after) = bracketed(after, '<', '>', &relation)?;
        rel.build_profiles.push(list);
        rest = after;
    }

    if !rest.is_empty() {
        return Err(RelationError::Trailing {
            text: rest.to_owned(),
            relation: relation(),
        });
    }
    Ok(rel)
}

/// Reads a whitespace-separated list up to `close`; returns it and the
/// (left-trimmed) remainder.
fn bracketed<'a>(
    after_open: &'a str,
    open: char,
    close: char,
    relation: &dyn Fn() -> String,
) -> Result<(Vec<String>, &'a str), RelationError> {
    let end = after_open
        .find(close)
        .ok_or_else(|| RelationError::Unterminated {
            open,
            relation: relation(),
        })?;
    let list: Vec<String> = after_open[..end]
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    if list.is_empty() {
        return Err(RelationError::EmptyList {
            open,
            close,
            relation: relation(),
        });
    }
    Ok((list, after_open[end + 1..].trim_start()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        s.parse().unwrap()
    }

    #[test]
    fn depends_field_parses_into_and_of_or_groups() {
        let rels =
            parse_relations("libc6 (>= 2.34), libssl3 (>= 3.0.0), libwrap0 (>= 7.6-4~) | foo")
                .unwrap();
        assert_eq!(rels.len(), 3);
        assert_eq!(rels[0].len(), 1);
        assert_eq!(rels[0][0].name, "libc6");
        assert_eq!(rels[0][0].constraint, Some((Op::LaterOrEqual, v("2.34"))));
        assert_eq!(rels[2].len(), 2);
        assert_eq!(rels[2][1], Relation::new("foo"));
    }

    #[test]
    fn all_operators_parse_and_legacy_ones_mean_or_equal() {
        let op = |s: &str| Relation::parse(s).unwrap().constraint.unwrap().0;
        assert_eq!(op("a (<< 1)"), Op::Earlier);
        assert_eq!(op("a (<= 1)"), Op::EarlierOrEqual);
        assert_eq!(op("a (= 1)"), Op::Equal);
        assert_eq!(op("a (>= 1)"), Op::LaterOrEqual);
        assert_eq!(op("a (>> 1)"), Op::Later);
        assert_eq!(op("a (< 1)"), Op::EarlierOrEqual);
        assert_eq!(op("a (> 1)"), Op::LaterOrEqual);
        assert_eq!(op("a(>=1)"), Op::LaterOrEqual);
        assert_eq!(op("a (  >>  1:2.0-3  )"), Op::Later);
    }

    #[test]
    fn operators_compare_like_dpkg() {
        let (one, two) = (v("1.0"), v("2.0"));
        assert!(Op::Earlier.matches(&one, &two));
        assert!(!Op::Earlier.matches(&two, &two));
        assert!(Op::EarlierOrEqual.matches(&two, &two));
        assert!(Op::Equal.matches(&v("1.0-0"), &one));
        assert!(Op::LaterOrEqual.matches(&two, &one));
        assert!(!Op::Later.matches(&one, &one));
        assert!(
            Relation::parse("x (>= 7.6-4~)")
                .unwrap()
                .version_matches(&v("7.6-4"))
        );
        assert!(
            !Relation::parse("x (>= 7.6-4~)")
                .unwrap()
                .version_matches(&v("7.6-3"))
        );
        assert!(Relation::new("x").version_matches(&v("0")));
    }

    #[test]
    fn arch_qualifiers_are_stored_without_colon() {
        for q in ["any", "native", "amd64"] {
            let r = Relation::parse(&format!("python3:{q} (>= 3.11)")).unwrap();
            assert_eq!(r.arch_qualifier.as_deref(), Some(q));
            assert_eq!(r.to_string(), format!("python3:{q} (>= 3.11)"));
        }
        assert!(matches!(
            Relation::parse("python3: (>= 3)"),
            Err(RelationError::InvalidArchQualifier { .. })
        ));
    }

    #[test]
    fn arch_restrictions_and_build_profiles_are_parsed() {
        let r =
            Relation::parse("libfoo-dev:native (>= 1.0) [amd64 !i386] <!nocheck> <stage1 cross>")
                .unwrap();
        assert_eq!(r.arch_restrictions, ["amd64", "!i386"]);
        assert_eq!(
            r.build_profiles,
            vec![
                vec!["!nocheck".to_owned()],
                vec!["stage1".to_owned(), "cross".to_owned()]
            ]
        );
        assert_eq!(
            r.to_string(),
            "libfoo-dev:native (>= 1.0) [amd64 !i386] <!nocheck> <stage1 cross>"
        );
        let r = Relation::parse("foo [linux-any]").unwrap();
        assert_eq!(r.arch_restrictions, ["linux-any"]);
    }

    #[test]
    fn folded_fields_trailing_commas_and_odd_spacing_are_tolerated() {
        let rels = parse_relations("\n a,\n  b (>=\n 1.0) |\n c ,, \n").unwrap();
        assert_eq!(format_relations(&rels), "a, b (>= 1.0) | c");
        assert!(parse_relations("").unwrap().is_empty());
        assert!(parse_relations("  ").unwrap().is_empty());
    }

    #[test]
    fn display_round_trips_readably() {
        for text in [
            "libc6 (>= 2.34)",
            "libwrap0 (>= 7.6-4~)",
            "debconf (>= 0.5) | debconf-2.0",
            "perl:any",
            "libc6 (<< 2.37), libc6 (>= 2.36)",
            "a (= 1:2.0-1+b1)",
        ] {
            let rels = parse_relations(text).unwrap();
            assert_eq!(format_relations(&rels), text);
            assert_eq!(parse_relations(&format_relations(&rels)).unwrap(), rels);
        }
        assert_eq!(
            format_relations(&parse_relations("a(<1),b (>1)").unwrap()),
            "a (<= 1), b (>= 1)"
        );
    }

    #[test]
    fn malformed_relations_are_rejected_naming_the_entry() {
        let err = |s: &str| parse_relations(s).unwrap_err();
        assert!(matches!(
            err("a | | b"),
            RelationError::EmptyAlternative { .. }
        ));
        assert!(matches!(err("a |"), RelationError::EmptyAlternative { .. }));
        assert!(matches!(err("-a"), RelationError::InvalidName { .. }));
        assert!(matches!(
            err("a (>= 1"),
            RelationError::Unterminated { open: '(', .. }
        ));
        assert!(matches!(
            err("a [amd64"),
            RelationError::Unterminated { open: '[', .. }
        ));
        assert!(matches!(
            err("a <x"),
            RelationError::Unterminated { open: '<', .. }
        ));
        assert!(matches!(err("a (1.0)"), RelationError::BadOperator { .. }));
        assert!(matches!(
            err("a (~> 1.0)"),
            RelationError::BadOperator { .. }
        ));
        assert!(matches!(
            err("a (>= 1.0 beta)"),
            RelationError::BadVersion { .. }
        ));
        assert!(matches!(err("a (>= )"), RelationError::BadVersion { .. }));
        assert!(matches!(err("a []"), RelationError::EmptyList { .. }));
        assert!(matches!(err("a b"), RelationError::Trailing { .. }));
        assert!(matches!(
            err("a (>= 1) (<< 2)"),
            RelationError::Trailing { .. }
        ));
        assert_eq!(
            err("libc6, libfoo (>= 1_0)").to_string(),
            "invalid version in \"libfoo (>= 1_0)\": version \"1_0\" has invalid character '_' in its upstream part"
        );
    }

    #[test]
    fn provides_accept_only_exact_versions() {
        let p = parse_provides("ipset-7.17, libfoo (= 1.2-3), mail-transport-agent,").unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(
            p[0],
            Provide {
                name: "ipset-7.17".into(),
                version: None
            }
        );
        assert_eq!(p[1].version, Some(v("1.2-3")));
        assert_eq!(p[1].to_string(), "libfoo (= 1.2-3)");
        for bad in ["a (>= 1)", "a | b", "a:any", "a [amd64]"] {
            assert!(
                matches!(
                    parse_provides(bad),
                    Err(RelationError::InvalidProvide { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn package_names_follow_dpkg_rules() {
        for ok in [
            "libc6",
            "g++",
            "libstdc++6",
            "x",
            "0ad",
            "lib.foo-bar+1",
            "Foo_bar",
        ] {
            assert!(valid_package_name(ok), "{ok}");
        }
        for bad in ["", "-a", "+a", ".a", "a b", "a:b", "a,b", "ä"] {
            assert!(!valid_package_name(bad), "{bad}");
        }
    }
}
