//! Machine-readable `debian/copyright` files (DEP-5): the licenses a package
//! states.
//!
//! Source: the Debian copyright format 1.0,
//! <https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/>.

use crate::control::parse_stanzas;

/// The licenses a DEP-5 copyright file states, in the order first seen,
/// without duplicates: the first line of every `License` field of its
/// `Files` and stand-alone paragraphs (e.g. `GPL-2+`, `BSD-3-clause or
/// Expat`). `None` when `text` is not in the machine-readable format (no
/// `Format` field naming copyright-format 1.0 in its first paragraph) or
/// cannot be parsed.
pub fn dep5_licenses(text: &str) -> Option<Vec<String>> {
    let stanzas = parse_stanzas(text).ok()?;
    let header = stanzas.first()?;
    let format = header.get("Format")?;
    if !format.contains("copyright-format/1.0") {
        return None;
    }
    let mut out: Vec<String> = Vec::new();
    for stanza in &stanzas[1..] {
        if let Some(license) = stanza.get("License") {
            let first = license.lines().next().unwrap_or("").trim();
            if !first.is_empty() && !out.iter().any(|l| l == first) {
                out.push(first.to_owned());
            }
        }
    }
    (!out.is_empty()).then_some(out)
}

/// The SPDX expression for a Debian license short name or expression
/// (`GPL-2+` → `GPL-2.0-or-later`, `BSD-3-clause or Expat` →
/// `BSD-3-Clause OR MIT`); `None` when a name has no SPDX equivalent
/// (`public-domain`, a custom name). Source: the short names of DEP-5
/// section "License specification" and the SPDX license list.
pub fn spdx_expression(debian: &str) -> Option<String> {
    let mut out = Vec::new();
    for word in debian.split_whitespace() {
        match word.to_ascii_lowercase().as_str() {
            "or" => out.push("OR".to_owned()),
            "and" => out.push("AND".to_owned()),
            _ => out.push(spdx_id(word.trim_end_matches(','))?.to_owned()),
        }
    }
    let valid = !out.is_empty()
        && out
            .iter()
            .enumerate()
            .all(|(i, w)| (i % 2 == 1) == (w == "OR" || w == "AND"))
        && out.len() % 2 == 1;
    valid.then(|| out.join(" "))
}

fn spdx_id(name: &str) -> Option<&'static str> {
    let (base, plus) = match name.strip_suffix('+') {
        Some(b) => (b, true),
        None => (name, false),
    };
    let id = match (base.to_ascii_lowercase().as_str(), plus) {
        ("gpl-1", false) => "GPL-1.0-only",
        ("gpl-1", true) => "GPL-1.0-or-later",
        ("gpl-2" | "gpl-2.0", false) => "GPL-2.0-only",
        ("gpl-2" | "gpl-2.0", true) => "GPL-2.0-or-later",
        ("gpl-3" | "gpl-3.0", false) => "GPL-3.0-only",
        ("gpl-3" | "gpl-3.0", true) => "GPL-3.0-or-later",
        ("lgpl-2" | "lgpl-2.0", false) => "LGPL-2.0-only",
        ("lgpl-2" | "lgpl-2.0", true) => "LGPL-2.0-or-later",
        ("lgpl-2.1", false) => "LGPL-2.1-only",
        ("lgpl-2.1", true) => "LGPL-2.1-or-later",
        ("lgpl-3" | "lgpl-3.0", false) => "LGPL-3.0-only",
        ("lgpl-3" | "lgpl-3.0", true) => "LGPL-3.0-or-later",
        ("agpl-3" | "agpl-3.0", false) => "AGPL-3.0-only",
        ("agpl-3" | "agpl-3.0", true) => "AGPL-3.0-or-later",
        ("apache-2.0", false) => "Apache-2.0",
        ("apache-1.1", false) => "Apache-1.1",
        ("artistic" | "artistic-1.0", false) => "Artistic-1.0",
        ("artistic-2.0", false) => "Artistic-2.0",
        ("bsd-2-clause", false) => "BSD-2-Clause",
        ("bsd-3-clause", false) => "BSD-3-Clause",
        ("bsd-4-clause", false) => "BSD-4-Clause",
        ("expat" | "mit", false) => "MIT",
        ("isc", false) => "ISC",
        ("zlib", false) => "Zlib",
        ("mpl-1.1", false) => "MPL-1.1",
        ("mpl-2.0", false) => "MPL-2.0",
        ("cc0-1.0" | "cc0", false) => "CC0-1.0",
        ("bsl-1.0", false) => "BSL-1.0",
        ("psf-2", false) => "PSF-2.0",
        ("python-2.0", false) => "Python-2.0",
        ("openssl", false) => "OpenSSL",
        ("curl", false) => "curl",
        ("unicode-dfs-2016", false) => "Unicode-DFS-2016",
        _ => return None,
    };
    Some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP5: &str = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
Upstream-Name: socat\n\n\
Files: *\nCopyright: 2001-2010 Gerhard Rieger\nLicense: GPL-2\n\n\
Files: debian/*\nCopyright: 2008 someone\nLicense: GPL-2+\n\n\
Files: compat/*\nCopyright: x\nLicense: BSD-3-clause or Expat\n\n\
License: GPL-2\n On Debian systems, the complete text is in /usr/share/common-licenses/GPL-2.\n";

    #[test]
    fn dep5_files_licenses_are_listed_once_in_order() {
        assert_eq!(
            dep5_licenses(DEP5).unwrap(),
            ["GPL-2", "GPL-2+", "BSD-3-clause or Expat"]
        );
    }

    #[test]
    fn free_form_copyright_files_state_no_machine_readable_license() {
        assert_eq!(
            dep5_licenses("This package was debianized by X.\n\nIt is GPL.\n"),
            None
        );
    }

    #[test]
    fn debian_short_names_map_to_spdx_expressions() {
        assert_eq!(spdx_expression("GPL-2+").unwrap(), "GPL-2.0-or-later");
        assert_eq!(
            spdx_expression("BSD-3-clause or Expat").unwrap(),
            "BSD-3-Clause OR MIT"
        );
        assert_eq!(spdx_expression("public-domain"), None);
        assert_eq!(spdx_expression("GPL-2 or"), None);
    }
}
