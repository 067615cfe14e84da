//! Enabling systemd units as `systemctl enable` does: the symlinks the
//! `[Install]` section of a unit file asks for.
//!
//! The behaviour follows `systemctl --root=R enable` of systemd 252 (Debian
//! 12), which the tests use as the oracle (`systemd.unit(5)`, "[Install]
//! Section Options"; `src/shared/install.c`):
//!
//! * `WantedBy=T` links `/etc/systemd/system/T.wants/N`, `RequiredBy=T`
//!   links `T.requires/N`, and `Alias=A` links `/etc/systemd/system/A`; each
//!   link points to the unit file (`/etc/systemd/system/F`). An empty
//!   assignment (`WantedBy=`) resets the list; lines may continue with `\`.
//! * `N` is the unit's name, or, for a template `foo@.service`, the
//!   instance being enabled: the one asked for (`foo@x.service`), else
//!   `DefaultInstance=`. A template enabled with no instance can only be
//!   wanted by template units (`getty@.target.wants/foo@.service`); a
//!   non-template target is refused ("destination unit T is a non-template
//!   unit").
//! * An alias must have the unit's type suffix and be a template exactly
//!   when the unit is; a template's alias is instantiated only when an
//!   instance is enabled explicitly.
//! * `Also=` names other units enabled with this one.
//! * Specifiers `%n %N %p %i %j %%` are expanded in these values; others
//!   (`%H`, `%m`, ...) depend on the machine and are refused.
//! * A unit with nothing to enable it by (no `WantedBy=`, `RequiredBy=`,
//!   `Alias=` or `Also=`) is refused: `systemctl` would do nothing and say
//!   so, while the spec asked for it to be enabled.
//!
//! `UpheldBy=` is ignored, as systemd 252 ignores it.

use std::fmt;

/// Where units are enabled: the administrator's unit directory.
pub const UNIT_DIR: &str = "/etc/systemd/system";

/// Directories searched for a unit named by `Also=` that the bundle does not
/// carry (below the root), in systemd's order of precedence.
pub const UNIT_SEARCH_PATH: &[&str] = &[
    "/etc/systemd/system",
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
];

/// The `[Install]` section of a unit file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstallSection {
    /// `WantedBy=` values.
    pub wanted_by: Vec<String>,
    /// `RequiredBy=` values.
    pub required_by: Vec<String>,
    /// `Alias=` values.
    pub alias: Vec<String>,
    /// `Also=` values.
    pub also: Vec<String>,
    /// `DefaultInstance=`.
    pub default_instance: Option<String>,
}

impl InstallSection {
    /// Parses the `[Install]` section(s) of `content` (systemd's unit file
    /// syntax: `#`/`;` comments, `\` continuations, lists separated by white
    /// space, an empty assignment resets a list).
    pub fn parse(content: &str) -> Self {
        let mut out = Self::default();
        let mut section = String::new();
        let mut logical = String::new();
        let mut lines = content.lines().peekable();
        while let Some(raw) = lines.next() {
            let line = raw.trim();
            if logical.is_empty() && (line.starts_with('#') || line.starts_with(';')) {
                continue;
            }
            if let Some(cont) = line.strip_suffix('\\') {
                logical.push_str(cont);
                logical.push(' ');
                if lines.peek().is_some() {
                    continue;
                }
            } else {
                logical.push_str(line);
            }
            let l = std::mem::take(&mut logical);
            let l = l.trim();
            if l.starts_with('[') && l.ends_with(']') {
                section = l[1..l.len() - 1].to_owned();
                continue;
            }
            if section != "Install" {
                continue;
            }
            let Some((key, value)) = l.split_once('=') else {
                continue;
            };
            let values: Vec<String> = value.split_whitespace().map(str::to_owned).collect();
            let list = match key.trim() {
                "WantedBy" => &mut out.wanted_by,
                "RequiredBy" => &mut out.required_by,
                "Alias" => &mut out.alias,
                "Also" => &mut out.also,
                "DefaultInstance" => {
                    let v = value.trim();
                    out.default_instance = (!v.is_empty()).then(|| v.to_owned());
                    continue;
                }
                _ => continue,
            };
            if values.is_empty() {
                list.clear();
            } else {
                list.extend(values);
            }
        }
        out
    }

    /// Whether there is anything to enable the unit by.
    pub fn is_empty(&self) -> bool {
        self.wanted_by.is_empty()
            && self.required_by.is_empty()
            && self.alias.is_empty()
            && self.also.is_empty()
    }
}

/// One symlink `systemctl enable` makes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct EnableLink {
    /// The link's path (`/etc/systemd/system/multi-user.target.wants/x.service`).
    pub path: String,
    /// What it points to (the unit file).
    pub to: String,
}

/// What enabling one unit makes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Enablement {
    /// The name enabled (an instance for a template with an instance).
    pub name: String,
    /// The links, in `[Install]` order (aliases first, as systemctl).
    pub links: Vec<EnableLink>,
    /// Units named by `Also=`, to enable as well.
    pub also: Vec<String>,
}

/// Why a unit cannot be enabled (what `systemctl enable` refuses).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnableError {
    /// Nothing in `[Install]` to enable it by.
    #[error(
        "{unit} has no installation config ([Install] WantedBy=, RequiredBy=, Alias= or Also=); systemctl enable would do nothing"
    )]
    NoInstallInfo {
        /// The unit.
        unit: String,
    },
    /// A template enabled without an instance, wanted by a non-template unit.
    #[error(
        "{unit} is a template enabled without an instance, and its destination unit {destination} is a non-template unit; add DefaultInstance= to its [Install] section or list \"instances\" in the step"
    )]
    TemplateWithoutInstance {
        /// The unit.
        unit: String,
        /// The `WantedBy=`/`RequiredBy=` value.
        destination: String,
    },
    /// An alias of another type, or template-ness.
    #[error("cannot alias {unit} as {alias}: {why}")]
    BadAlias {
        /// The unit.
        unit: String,
        /// The alias.
        alias: String,
        /// Why.
        why: &'static str,
    },
    /// A value that is not a unit name.
    #[error("{unit}: {key}={value:?} is not a valid unit name")]
    InvalidName {
        /// The unit.
        unit: String,
        /// The key.
        key: &'static str,
        /// The value.
        value: String,
    },
    /// A specifier whose value depends on the machine.
    #[error(
        "{unit}: {key}={value:?} uses the specifier %{specifier}, which depends on the machine it is enabled on; only %n %N %p %i %j %% are supported"
    )]
    Specifier {
        /// The unit.
        unit: String,
        /// The key.
        key: &'static str,
        /// The value.
        value: String,
        /// The specifier letter.
        specifier: char,
    },
    /// An instance asked for a unit that is not a template.
    #[error(
        "{unit} is not a template unit (NAME@.TYPE), so it has no instances; instance {instance:?} asked"
    )]
    NotATemplate {
        /// The unit.
        unit: String,
        /// The instance.
        instance: String,
    },
    /// An instance string systemd would not accept.
    #[error("{unit}: instance {instance:?} is not valid (characters A-Z a-z 0-9 : _ . - \\ only)")]
    InvalidInstance {
        /// The unit.
        unit: String,
        /// The instance.
        instance: String,
    },
}

/// A unit name split into its parts: `prefix@instance.type`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Parts<'a> {
    prefix: &'a str,
    /// `None`: no `@`; `Some("")`: a template.
    instance: Option<&'a str>,
    suffix: &'a str,
}

fn parts(name: &str) -> Option<Parts<'_>> {
    let dot = name.rfind('.')?;
    let (stem, suffix) = (&name[..dot], &name[dot + 1..]);
    if stem.is_empty() || suffix.is_empty() {
        return None;
    }
    Some(match stem.split_once('@') {
        Some((prefix, instance)) if !prefix.is_empty() => Parts {
            prefix,
            instance: Some(instance),
            suffix,
        },
        Some(_) => return None,
        None => Parts {
            prefix: stem,
            instance: None,
            suffix,
        },
    })
}

fn valid_instance(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '.' | '-' | '\\'))
}

/// Whether `name` is a unit name systemd accepts (`x.service`,
/// `getty@.target`, `getty@tty1.service`).
pub fn valid_unit_name(name: &str) -> bool {
    name.len() <= 255
        && !name.contains('/')
        && parts(name).is_some_and(|p| {
            UNIT_TYPES.contains(&p.suffix)
                && valid_instance(p.prefix)
                && !p.prefix.contains('@')
                && p.instance
                    .is_none_or(|i| valid_instance(i) && !i.contains('@'))
        })
}

/// The unit types systemd knows.
pub const UNIT_TYPES: &[&str] = &[
    "service",
    "socket",
    "target",
    "device",
    "mount",
    "automount",
    "swap",
    "timer",
    "path",
    "slice",
    "scope",
];

/// Whether `name` is a template (`foo@.service`).
pub fn is_template(name: &str) -> bool {
    parts(name).is_some_and(|p| p.instance == Some(""))
}

fn instantiate(template: &str, instance: &str) -> String {
    match parts(template) {
        Some(p) => format!("{}@{instance}.{}", p.prefix, p.suffix),
        None => template.to_owned(),
    }
}

/// Expands the specifiers of `value` for the unit `name` (an instance name
/// for an enabled template).
fn expand(unit: &str, name: &str, key: &'static str, value: &str) -> Result<String, EnableError> {
    let p = parts(name);
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let Some(s) = chars.next() else {
            out.push('%');
            break;
        };
        let prefix = p.as_ref().map_or(name, |p| p.prefix);
        match s {
            '%' => out.push('%'),
            'n' => out.push_str(name),
            'N' => out.push_str(name.rsplit_once('.').map_or(name, |(n, _)| n)),
            'p' => out.push_str(prefix),
            'i' => out.push_str(p.as_ref().and_then(|p| p.instance).unwrap_or("")),
            'j' => out.push_str(prefix.rsplit('-').next().unwrap_or(prefix)),
            other => {
                return Err(EnableError::Specifier {
                    unit: unit.to_owned(),
                    key,
                    value: value.to_owned(),
                    specifier: other,
                });
            }
        }
    }
    Ok(out)
}

/// The links `systemctl enable` makes for the unit file `file_name` (at
/// `unit_path`, its absolute path in the root) with `content`, enabling
/// `instance` of a template (`None`: the template itself, i.e. its
/// `DefaultInstance=` if it has one).
pub fn enable(
    file_name: &str,
    unit_path: &str,
    content: &str,
    instance: Option<&str>,
) -> Result<Enablement, EnableError> {
    let unit = file_name.to_owned();
    let install = InstallSection::parse(content);
    let template = is_template(file_name);
    if let Some(i) = instance {
        if !template {
            return Err(EnableError::NotATemplate {
                unit,
                instance: i.to_owned(),
            });
        }
        if i.is_empty() || !valid_instance(i) {
            return Err(EnableError::InvalidInstance {
                unit,
                instance: i.to_owned(),
            });
        }
    }
    if install.is_empty() {
        return Err(EnableError::NoInstallInfo { unit });
    }
    let chosen = if template {
        instance.or(install.default_instance.as_deref())
    } else {
        None
    };
    let name = match chosen {
        Some(i) => instantiate(file_name, i),
        None => file_name.to_owned(),
    };
    let suffix = parts(file_name).map_or("", |p| p.suffix);
    let mut links = Vec::new();
    let link = |path: String| EnableLink {
        path,
        to: unit_path.to_owned(),
    };
    for a in &install.alias {
        let a = expand(&unit, &name, "Alias", a)?;
        if !valid_unit_name(&a) {
            return Err(EnableError::InvalidName {
                unit,
                key: "Alias",
                value: a,
            });
        }
        let why = if parts(&a).map(|p| p.suffix) != Some(suffix) {
            Some("an alias must have the unit's type suffix")
        } else if template && parts(&a).is_some_and(|p| p.instance.is_none()) {
            Some("a template's alias must be a template (NAME@.TYPE)")
        } else if !template && is_template(&a) {
            Some("the alias of a unit that is not a template cannot be a template")
        } else {
            None
        };
        if let Some(why) = why {
            return Err(EnableError::BadAlias {
                unit,
                alias: a,
                why,
            });
        }
        let a = match instance {
            Some(i) if is_template(&a) => instantiate(&a, i),
            _ => a,
        };
        links.push(link(format!("{UNIT_DIR}/{a}")));
    }
    for (key, list, dir) in [
        ("WantedBy", &install.wanted_by, "wants"),
        ("RequiredBy", &install.required_by, "requires"),
    ] {
        for t in list {
            let t = expand(&unit, &name, key, t)?;
            if !valid_unit_name(&t) {
                return Err(EnableError::InvalidName {
                    unit,
                    key,
                    value: t,
                });
            }
            if template && chosen.is_none() && !is_template(&t) {
                return Err(EnableError::TemplateWithoutInstance {
                    unit,
                    destination: t,
                });
            }
            links.push(link(format!("{UNIT_DIR}/{t}.{dir}/{name}")));
        }
    }
    let mut also = Vec::new();
    for a in &install.also {
        let a = expand(&unit, &name, "Also", a)?;
        if !valid_unit_name(&a) {
            return Err(EnableError::InvalidName {
                unit,
                key: "Also",
                value: a,
            });
        }
        also.push(a);
    }
    Ok(Enablement { name, links, also })
}

impl fmt::Display for EnableLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {}", self.path, self.to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links(name: &str, content: &str, instance: Option<&str>) -> Vec<String> {
        enable(name, &format!("{UNIT_DIR}/{name}"), content, instance)
            .unwrap()
            .links
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn install_section_parsing_follows_systemd_syntax() {
        let s = InstallSection::parse(
            "[Unit]\nWantedBy=not-here.target\n[Install]\n# c\n; c\nWantedBy=a.target \\\n  b.target\nWantedBy=\nWantedBy=c.target\nRequiredBy=d.target\nDefaultInstance=x\n",
        );
        assert_eq!(s.wanted_by, vec!["c.target"]);
        assert_eq!(s.required_by, vec!["d.target"]);
        assert_eq!(s.default_instance.as_deref(), Some("x"));
    }

    #[test]
    fn templates_use_the_default_instance_or_the_one_asked() {
        let c = "[Install]\nWantedBy=multi-user.target\nDefaultInstance=eth0\nAlias=ali@.service\n";
        assert_eq!(
            links("echo@.service", c, None),
            vec![
                "/etc/systemd/system/ali@.service -> /etc/systemd/system/echo@.service",
                "/etc/systemd/system/multi-user.target.wants/echo@eth0.service -> /etc/systemd/system/echo@.service",
            ]
        );
        assert_eq!(
            links("echo@.service", c, Some("x")),
            vec![
                "/etc/systemd/system/ali@x.service -> /etc/systemd/system/echo@.service",
                "/etc/systemd/system/multi-user.target.wants/echo@x.service -> /etc/systemd/system/echo@.service",
            ]
        );
    }

    #[test]
    fn a_template_without_an_instance_is_refused_for_a_non_template_target() {
        let e = enable(
            "echo@.service",
            "/etc/systemd/system/echo@.service",
            "[Install]\nWantedBy=multi-user.target\n",
            None,
        )
        .unwrap_err();
        assert!(
            matches!(e, EnableError::TemplateWithoutInstance { .. }),
            "{e}"
        );
        assert!(e.to_string().contains("non-template unit"));
        assert_eq!(
            links("w@.service", "[Install]\nWantedBy=tpl@.target\n", None),
            vec![
                "/etc/systemd/system/tpl@.target.wants/w@.service -> /etc/systemd/system/w@.service"
            ]
        );
    }

    #[test]
    fn aliases_must_match_type_and_template_ness() {
        for (name, c) in [
            (
                "t1@.service",
                "[Install]\nAlias=plain.service\nDefaultInstance=d\n",
            ),
            ("p1.service", "[Install]\nAlias=tt@.service\n"),
            ("b.service", "[Install]\nAlias=x.socket\n"),
        ] {
            let e = enable(name, "/x", c, None).unwrap_err();
            assert!(matches!(e, EnableError::BadAlias { .. }), "{name}: {e}");
        }
    }

    #[test]
    fn specifiers_expand_and_machine_ones_are_refused() {
        assert_eq!(
            links(
                "sp-ec@.service",
                "[Install]\nWantedBy=multi-user.target\nAlias=%i-%j-%N.service\nDefaultInstance=a-b\n",
                None
            )[0],
            "/etc/systemd/system/a-b-ec-sp-ec@a-b.service -> /etc/systemd/system/sp-ec@.service"
        );
        let e = enable("h.service", "/x", "[Install]\nAlias=%H.service\n", None).unwrap_err();
        assert!(
            matches!(e, EnableError::Specifier { specifier: 'H', .. }),
            "{e}"
        );
    }

    #[test]
    fn nothing_to_enable_by_is_refused() {
        let e = enable("x.service", "/x", "[Service]\nExecStart=/bin/true\n", None).unwrap_err();
        assert!(matches!(e, EnableError::NoInstallInfo { .. }));
    }
}
