//! `${VAR}` templates in file and unit content.
//!
//! Syntax: `${NAME}` is replaced by the value of variable `NAME`
//! (`[A-Z_][A-Z0-9_]*`); `$${` writes a literal `${`; any other `$` is
//! literal. An unterminated `${` or an invalid name is an error, so a typo
//! never silently reaches a host.

use std::collections::{BTreeMap, BTreeSet};

/// Why a template cannot be parsed or rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `${` without a closing `}`.
    #[error("unterminated \"${{\" at byte {0} (write \"$${{\" for a literal \"${{\")")]
    Unterminated(usize),
    /// `${...}` whose content is not a variable name.
    #[error("invalid variable name {name:?} at byte {offset}")]
    BadName {
        /// Byte offset of the `$`.
        offset: usize,
        /// The text between the braces.
        name: String,
    },
    /// A variable without a value at render time.
    #[error("variable {0} has no value")]
    Missing(String),
}

/// A piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment<'a> {
    /// Text copied as is.
    Literal(&'a str),
    /// A variable reference.
    Var(&'a str),
}

fn is_var_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_uppercase() || c == '_')
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// Splits a template into literal text and variable references.
pub fn parse(content: &str) -> Result<Vec<Segment<'_>>, TemplateError> {
    let mut out = Vec::new();
    let mut rest = content;
    let mut offset = 0;
    while let Some(i) = rest.find('$') {
        let after = &rest[i..];
        if after.starts_with("$${") {
            // `$${` → literal `${`.
            out.push(Segment::Literal(&rest[..i]));
            out.push(Segment::Literal("${"));
            rest = &rest[i + 3..];
            offset += i + 3;
        } else if let Some(body) = after.strip_prefix("${") {
            let end = body
                .find('}')
                .ok_or(TemplateError::Unterminated(offset + i))?;
            let name = &body[..end];
            if !is_var_name(name) {
                return Err(TemplateError::BadName {
                    offset: offset + i,
                    name: name.chars().take(64).collect(),
                });
            }
            out.push(Segment::Literal(&rest[..i]));
            out.push(Segment::Var(name));
            let consumed = i + 2 + end + 1;
            rest = &rest[consumed..];
            offset += consumed;
        } else {
            out.push(Segment::Literal(&rest[..=i]));
            rest = &rest[i + 1..];
            offset += i + 1;
        }
    }
    out.push(Segment::Literal(rest));
    out.retain(|s| !matches!(s, Segment::Literal("")));
    Ok(out)
}

/// The variable names a template uses.
pub fn variables(content: &str) -> Result<BTreeSet<&str>, TemplateError> {
    Ok(parse(content)?
        .into_iter()
        .filter_map(|s| match s {
            Segment::Var(v) => Some(v),
            Segment::Literal(_) => None,
        })
        .collect())
}

/// Renders a template with the given values.
pub fn render<K>(content: &str, values: &BTreeMap<K, String>) -> Result<String, TemplateError>
where
    K: Ord + std::borrow::Borrow<str>,
{
    let mut out = String::with_capacity(content.len());
    for segment in parse(content)? {
        match segment {
            Segment::Literal(text) => out.push_str(text),
            Segment::Var(name) => match values.get(name) {
                Some(v) => out.push_str(v),
                None => return Err(TemplateError::Missing(name.to_owned())),
            },
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> BTreeMap<String, String> {
        BTreeMap::from([("POD_CIDR".to_owned(), "10.0.0.0/24".to_owned())])
    }

    #[test]
    fn substitutes_and_escapes() {
        let t = r#"{"subnet": "${POD_CIDR}", "lit": "$${POD_CIDR}", "cost": "$5", "end": "$"}"#;
        assert_eq!(
            render(t, &values()).unwrap(),
            r#"{"subnet": "10.0.0.0/24", "lit": "${POD_CIDR}", "cost": "$5", "end": "$"}"#
        );
        assert_eq!(variables(t).unwrap(), BTreeSet::from(["POD_CIDR"]));
    }

    #[test]
    fn refuses_unterminated_and_bad_names() {
        assert_eq!(
            parse("a ${POD").unwrap_err(),
            TemplateError::Unterminated(2)
        );
        assert!(matches!(
            parse("${pod}"),
            Err(TemplateError::BadName { .. })
        ));
        assert!(matches!(parse("${}"), Err(TemplateError::BadName { .. })));
        assert_eq!(
            render("${X}", &values()).unwrap_err(),
            TemplateError::Missing("X".into())
        );
    }
}
