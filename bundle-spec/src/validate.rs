//! Parsing and validation of specs and manifests.
//!
//! Every problem is reported at once, each with the JSON path of the field
//! it concerns (`artifacts.runc.sha256: expected 64 hex characters, got 63`).
//! Parsing happens unit by unit (each top-level field, each artifact, each
//! variable, each step), so one bad step does not hide another; within one
//! unit, the first structural error is reported.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::format::{ARTIFACT_PREFIX, FORMAT, SPEC_API_VERSION};
use crate::limits::Limits;
use crate::names::{ArtifactName, TargetPath, VarName};
use crate::spec::{AptSection, ArtifactSource, ImageSource, Manifest, Spec, Step, Variable};
use crate::template;

/// One problem, at one JSON path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    /// JSON path (`steps[3].dest`); empty for the document itself.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// All problems found in one document (never empty).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ValidationErrors(pub Vec<ValidationError>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

#[derive(Default)]
struct Collector(Vec<ValidationError>);

impl Collector {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ValidationError {
            path: path.into(),
            message: message.into(),
        });
    }

    /// Deserializes `value` as `T`, recording the first error under `prefix`.
    fn de<T: DeserializeOwned>(&mut self, prefix: &str, value: Value) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(v) => Some(v),
            Err(e) => {
                let inner = e.path().to_string();
                let path = join(prefix, if inner == "." { "" } else { &inner });
                self.push(path, e.into_inner().to_string());
                None
            }
        }
    }

    fn finish<T>(self, value: T) -> Result<T, ValidationErrors> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(ValidationErrors(self.0))
        }
    }
}

fn join(prefix: &str, inner: &str) -> String {
    match (prefix.is_empty(), inner.is_empty()) {
        (_, true) => prefix.to_owned(),
        (true, false) => inner.to_owned(),
        (false, false) if inner.starts_with('[') => format!("{prefix}{inner}"),
        (false, false) => format!("{prefix}.{inner}"),
    }
}

/// Refuses JSON nested deeper than `max` before handing it to serde.
fn check_depth(bytes: &[u8], max: usize) -> Result<(), String> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return Err(format!("JSON nested deeper than {max} levels"));
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

fn parse_object(bytes: &[u8], limits: &Limits, c: &mut Collector) -> Option<Map<String, Value>> {
    if let Err(e) = check_depth(bytes, limits.max_json_depth) {
        c.push("", e);
        return None;
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Some(map),
        Ok(_) => {
            c.push("", "expected a JSON object");
            None
        }
        Err(e) => {
            c.push("", format!("not valid JSON: {e}"));
            None
        }
    }
}

/// Takes the known fields out of `map`, reporting every unknown one.
fn take_fields(
    map: &mut Map<String, Value>,
    known: &[&str],
    prefix: &str,
    c: &mut Collector,
) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for (key, value) in std::mem::take(map) {
        if known.contains(&key.as_str()) {
            out.insert(key, value);
        } else {
            let shown: String = key.chars().take(64).collect();
            c.push(
                join(prefix, &shown),
                format!("unknown field; expected one of {}", known.join(", ")),
            );
        }
    }
    out
}

fn de_map<K, V>(c: &mut Collector, prefix: &str, value: Option<Value>) -> Option<BTreeMap<K, V>>
where
    K: Ord + std::str::FromStr,
    K::Err: fmt::Display,
    V: DeserializeOwned,
{
    let Some(value) = value else {
        return Some(BTreeMap::new());
    };
    let Value::Object(map) = value else {
        c.push(prefix, "expected an object");
        return None;
    };
    let mut out = BTreeMap::new();
    let mut ok = true;
    for (key, value) in map {
        let path = format!("{prefix}.{}", key.chars().take(64).collect::<String>());
        let name = match key.parse::<K>() {
            Ok(n) => Some(n),
            Err(e) => {
                c.push(path.clone(), e.to_string());
                None
            }
        };
        let v = c.de::<V>(&path, value);
        match (name, v) {
            (Some(n), Some(v)) => {
                out.insert(n, v);
            }
            _ => ok = false,
        }
    }
    ok.then_some(out)
}

fn de_steps(c: &mut Collector, value: Option<Value>) -> Option<Vec<Step>> {
    let Some(value) = value else {
        return Some(Vec::new());
    };
    let Value::Array(items) = value else {
        c.push("steps", "expected an array");
        return None;
    };
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for (i, item) in items.into_iter().enumerate() {
        match Step::from_value(item) {
            Ok(s) => out.push(s),
            Err(e) => {
                ok = false;
                c.push(join(&format!("steps[{i}]"), &e.path), e.message);
            }
        }
    }
    ok.then_some(out)
}

const SPEC_FIELDS: &[&str] = &[
    "apiVersion",
    "name",
    "version",
    "serial",
    "expires",
    "target",
    "variables",
    "artifacts",
    "images",
    "steps",
    "apt",
];

/// Parses and validates a spec, reporting every problem found.
pub fn parse_spec(bytes: &[u8], limits: &Limits) -> Result<Spec, ValidationErrors> {
    let mut c = Collector::default();
    let Some(mut map) = parse_object(bytes, limits, &mut c) else {
        return Err(ValidationErrors(c.0));
    };
    let mut f = take_fields(&mut map, SPEC_FIELDS, "", &mut c);
    let mut required = |c: &mut Collector, key: &str| {
        let v = f.remove(key);
        if v.is_none() {
            c.push(key, "missing required field");
        }
        v
    };
    let api_version = required(&mut c, "apiVersion").and_then(|v| c.de::<String>("apiVersion", v));
    let name = required(&mut c, "name").and_then(|v| c.de("name", v));
    let version = required(&mut c, "version").and_then(|v| c.de("version", v));
    let serial = required(&mut c, "serial").and_then(|v| c.de("serial", v));
    let target = required(&mut c, "target").and_then(|v| c.de("target", v));
    let expires = match f.remove("expires") {
        None | Some(Value::Null) => Some(None),
        Some(v) => c.de("expires", v).map(Some),
    };
    let variables = de_map::<VarName, Variable>(&mut c, "variables", f.remove("variables"));
    let artifacts =
        de_map::<ArtifactName, ArtifactSource>(&mut c, "artifacts", f.remove("artifacts"));
    let images = de_map::<ArtifactName, ImageSource>(&mut c, "images", f.remove("images"));
    let steps = de_steps(&mut c, f.remove("steps"));
    let apt = match f.remove("apt") {
        None | Some(Value::Null) => Some(None),
        Some(v) => c.de::<AptSection>("apt", v).map(Some),
    };

    let (
        Some(api_version),
        Some(name),
        Some(version),
        Some(serial),
        Some(target),
        Some(expires),
        Some(variables),
        Some(artifacts),
        Some(images),
        Some(steps),
        Some(apt),
    ) = (
        api_version,
        name,
        version,
        serial,
        target,
        expires,
        variables,
        artifacts,
        images,
        steps,
        apt,
    )
    else {
        return Err(ValidationErrors(c.0));
    };
    let spec = Spec {
        api_version,
        name,
        version,
        serial,
        expires,
        target,
        variables,
        artifacts,
        images,
        steps,
        apt,
    };
    validate_spec_into(&spec, limits, &mut c);
    c.finish(spec)
}

/// Checks the rules a parsed spec must follow beyond its types.
pub fn validate_spec(spec: &Spec, limits: &Limits) -> Result<(), ValidationErrors> {
    let mut c = Collector::default();
    validate_spec_into(spec, limits, &mut c);
    c.finish(())
}

fn validate_spec_into(spec: &Spec, limits: &Limits, c: &mut Collector) {
    if spec.api_version != SPEC_API_VERSION {
        c.push(
            "apiVersion",
            format!("expected {SPEC_API_VERSION:?}, got {:?}", spec.api_version),
        );
    }
    if spec.artifacts.len() > limits.max_artifacts {
        c.push(
            "artifacts",
            format!("more than {} artifacts", limits.max_artifacts),
        );
    }
    for (name, a) in &spec.artifacts {
        let path = format!("artifacts.{name}");
        check_url(c, &format!("{path}.url"), &a.url);
        for (i, m) in a.mirrors.iter().enumerate() {
            check_url(c, &format!("{path}.mirrors[{i}]"), m);
        }
        if let Some(size) = a.size
            && size > limits.max_artifact_bytes
        {
            c.push(
                format!("{path}.size"),
                format!(
                    "{size} bytes is more than the limit of {}",
                    limits.max_artifact_bytes
                ),
            );
        }
    }
    if let Some(apt) = &spec.apt {
        validate_apt(c, apt, spec.target.arch);
    }
    for (name, image) in &spec.images {
        let path = format!("images.{name}");
        if spec.artifacts.contains_key(name) {
            c.push(
                path.clone(),
                format!("\"{name}\" is also an artifact's name; an image travels as the artifact of its name, so names must differ"),
            );
        }
        for (i, m) in image.mirrors.iter().enumerate() {
            if let Err(e) = image.reference.with_name(m) {
                c.push(format!("{path}.mirrors[{i}]"), e);
            }
        }
    }
    let names: BTreeSet<&ArtifactName> = spec.artifacts.keys().collect();
    let images: BTreeSet<&ArtifactName> = spec.images.keys().collect();
    validate_common(c, &spec.variables, &names, &images, &spec.steps, limits);
    for name in &images {
        if !spec
            .steps
            .iter()
            .any(|s| matches!(s, Step::Images(i) if i.images.contains(name)))
        {
            c.push(format!("images.{name}"), "not used by any images step");
        }
    }
}

/// Whether `name` is a Debian package name as policy §5.6.1 spells them:
/// lowercase letters, digits, `+`, `-` and `.`, at least two characters,
/// starting with a letter or digit.
pub fn is_debian_package_name(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() >= 2
        && b.len() <= 128
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|&ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || b"+-.".contains(&ch))
}

/// Whether `s` is a suite, component or built-in baseline name: ASCII
/// letters, digits, `.`, `_` and `-`, starting with a letter or digit, at
/// most 64 characters.
fn is_apt_word(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|&ch| ch.is_ascii_alphanumeric() || b"._-".contains(&ch))
}

fn validate_apt(c: &mut Collector, apt: &AptSection, target_arch: crate::spec::Arch) {
    if apt.sources.is_empty() {
        c.push("apt.sources", "must list at least one repository");
    }
    for (i, s) in apt.sources.iter().enumerate() {
        let p = format!("apt.sources[{i}]");
        let rest = s
            .url
            .strip_prefix("https://")
            .or_else(|| s.url.strip_prefix("http://"));
        if rest.is_none_or(str::is_empty) {
            c.push(format!("{p}.url"), "expected an https:// or http:// URL");
        } else if s
            .url
            .chars()
            .any(|ch| ch.is_control() || ch.is_whitespace())
        {
            c.push(
                format!("{p}.url"),
                "must not contain white space or control characters",
            );
        } else if s.url.len() > 4096 {
            c.push(format!("{p}.url"), "longer than 4096 characters");
        }
        if !is_apt_word(&s.suite) {
            c.push(
                format!("{p}.suite"),
                format!(
                    "invalid suite {:?}: expected letters, digits, `.`, `_` and `-`",
                    s.suite
                ),
            );
        }
        if s.components.is_empty() {
            c.push(
                format!("{p}.components"),
                "must list at least one component",
            );
        }
        for (j, comp) in s.components.iter().enumerate() {
            if !is_apt_word(comp) {
                c.push(
                    format!("{p}.components[{j}]"),
                    format!(
                        "invalid component {comp:?}: expected letters, digits, `.`, `_` and `-`"
                    ),
                );
            }
        }
        if s.keyring.is_empty() || s.keyring.chars().any(char::is_control) {
            c.push(
                format!("{p}.keyring"),
                "must name a keyring file (no control characters)",
            );
        }
    }
    if let Some(arch) = apt.arch
        && arch != target_arch
    {
        c.push(
            "apt.arch",
            format!(
                "{} differs from target.arch {}; packages must be for the target",
                arch.as_str(),
                target_arch.as_str()
            ),
        );
    }
    if apt.packages.is_empty() {
        c.push("apt.packages", "must list at least one package");
    }
    let mut seen = BTreeSet::new();
    for (i, name) in apt.packages.iter().enumerate() {
        if !is_debian_package_name(name) {
            c.push(
                format!("apt.packages[{i}]"),
                format!(
                    "invalid package name {:?}: expected lowercase letters, digits, `+`, `-` and `.`",
                    name.chars().take(64).collect::<String>()
                ),
            );
        } else if !seen.insert(name.as_str()) {
            c.push(
                format!("apt.packages[{i}]"),
                format!("{name} is listed twice"),
            );
        }
    }
    if let Some(b) = &apt.baseline {
        let ok = if b.contains('/') {
            !b.chars().any(char::is_control)
        } else {
            is_apt_word(b)
        };
        if !ok {
            c.push(
                "apt.baseline",
                "expected a built-in baseline name (debian-12-minbase) or a path to a dpkg status file containing a /",
            );
        }
    }
}

fn check_url(c: &mut Collector, path: &str, url: &str) {
    let ok_scheme = ["https://", "http://", "file:"]
        .iter()
        .any(|s| url.starts_with(s));
    if !ok_scheme {
        c.push(path, "expected an https://, http:// or file: URL");
    } else if url.chars().any(|ch| ch.is_control() || ch.is_whitespace()) {
        c.push(path, "must not contain white space or control characters");
    } else if url.len() > 4096 {
        c.push(path, "longer than 4096 characters");
    } else if url == "file:" || url.ends_with('/') {
        c.push(path, "must name a file");
    }
}

/// Rules shared by specs and manifests: variables, step references, modes,
/// templates, duplicate destinations, unused artifacts.
fn validate_common(
    c: &mut Collector,
    variables: &BTreeMap<VarName, Variable>,
    artifacts: &BTreeSet<&ArtifactName>,
    images: &BTreeSet<&ArtifactName>,
    steps: &[Step],
    limits: &Limits,
) {
    for (name, v) in variables {
        let path = format!("variables.{name}");
        let re = match &v.pattern {
            Some(p) => match compile_pattern(p) {
                Ok(re) => Some(re),
                Err(e) => {
                    c.push(format!("{path}.pattern"), e);
                    None
                }
            },
            None => None,
        };
        if let (Some(re), Some(d)) = (&re, &v.default)
            && !re.is_match(d)
        {
            c.push(
                format!("{path}.default"),
                format!(
                    "{d:?} does not match the pattern {:?}",
                    v.pattern.as_deref().unwrap_or("")
                ),
            );
        }
    }
    if steps.len() > limits.max_steps {
        c.push("steps", format!("more than {} steps", limits.max_steps));
    }
    let mut used: BTreeSet<&ArtifactName> = BTreeSet::new();
    let mut dests: BTreeMap<String, String> = BTreeMap::new();
    let mut claim = |c: &mut Collector, path: String, dest: String| {
        if let Some(first) = dests.get(&dest) {
            c.push(path, format!("{dest} is already written by {first}"));
        } else {
            dests.insert(dest, path);
        }
    };
    for (i, step) in steps.iter().enumerate() {
        let p = format!("steps[{i}]");
        for (j, a) in step.artifacts().into_iter().enumerate() {
            used.insert(a);
            let field = match step {
                Step::Debs(_) => format!("{p}.artifacts[{j}]"),
                Step::Images(_) => format!("{p}.images[{j}]"),
                _ => format!("{p}.artifact"),
            };
            if matches!(step, Step::Images(_)) {
                if !images.contains(a) {
                    c.push(field, format!("no image named \"{a}\" in images"));
                }
            } else if images.contains(a) {
                c.push(
                    field,
                    format!("\"{a}\" is an image; only an images step installs it"),
                );
            } else if !artifacts.contains(a) {
                c.push(field, format!("no artifact named \"{a}\" in artifacts"));
            }
        }
        let setid = |c: &mut Collector, mode: crate::names::Mode, allow: bool| {
            if mode.is_setid() && !allow {
                c.push(
                    format!("{p}.mode"),
                    format!("{mode} sets setuid/setgid bits; add \"allow_setuid\": true to permit"),
                );
            }
        };
        let templ = |c: &mut Collector, content: &str| match template::variables(content) {
            Ok(vars) => {
                for v in vars {
                    if !variables.keys().any(|k| k.as_str() == v) {
                        c.push(
                            format!("{p}.content"),
                            format!("template uses undeclared variable {v}; declare it under \"variables\""),
                        );
                    }
                }
            }
            Err(e) => c.push(format!("{p}.content"), e.to_string()),
        };
        match step {
            Step::Debs(s) => {
                if s.artifacts.is_empty() {
                    c.push(
                        format!("{p}.artifacts"),
                        "must list at least one .deb artifact",
                    );
                }
            }
            Step::SwapOff(_) | Step::KernelModule(_) => {}
            Step::Binary(s) => {
                setid(c, s.mode, s.allow_setuid);
                claim(c, format!("{p}.dest"), s.dest.to_string());
            }
            Step::Extract(s) => {
                if let Some(include) = &s.include {
                    if include.is_empty() {
                        c.push(
                            format!("{p}.include"),
                            "must not be empty (omit it to extract everything)",
                        );
                    }
                    for (j, g) in include.iter().enumerate() {
                        if let Err(e) = compile_include(std::slice::from_ref(g)) {
                            c.push(format!("{p}.include[{j}]"), e);
                        }
                    }
                }
                if s.strip_components > 64 {
                    c.push(format!("{p}.strip_components"), "must be at most 64");
                }
            }
            Step::Directory(s) => {
                setid(c, s.mode, s.allow_setuid);
                if s.paths.is_empty() {
                    c.push(format!("{p}.paths"), "must list at least one directory");
                }
            }
            Step::File(s) => {
                setid(c, s.mode, s.allow_setuid);
                if s.template {
                    templ(c, &s.content);
                }
                claim(c, format!("{p}.dest"), s.dest.to_string());
            }
            Step::Images(s) => {
                if s.images.is_empty() {
                    c.push(format!("{p}.images"), "must list at least one image");
                }
                if !valid_namespace(&s.namespace) {
                    c.push(
                        format!("{p}.namespace"),
                        "is not a containerd namespace (letters and digits, with . _ - between them, at most 76)",
                    );
                }
                if let Some(a) = &s.address
                    && (!a.starts_with('/') || a.contains('\0'))
                {
                    c.push(
                        format!("{p}.address"),
                        "must be the absolute path of containerd's socket",
                    );
                }
            }
            Step::SystemdUnit(s) => {
                if s.template {
                    templ(c, &s.content);
                }
                claim(c, format!("{p}.name"), unit_path(&s.name).to_string());
                systemd_unit(c, &p, s);
            }
            Step::Command(s) => {
                if s.argv.is_empty() || s.argv[0].is_empty() {
                    c.push(
                        format!("{p}.argv"),
                        "must name a program (a non-empty first element)",
                    );
                }
                if let Some(u) = &s.unless
                    && (u.is_empty() || u[0].is_empty())
                {
                    c.push(
                        format!("{p}.unless"),
                        "must name a program (a non-empty first element)",
                    );
                }
                for (j, a) in s.argv.iter().chain(s.unless.iter().flatten()).enumerate() {
                    if a.contains('\0') {
                        c.push(format!("{p}.argv[{j}]"), "must not contain a NUL character");
                    }
                }
            }
        }
    }
    for a in artifacts {
        if !used.contains(a) {
            c.push(format!("artifacts.{a}"), "not used by any step");
        }
    }
}

/// Whether `ns` is a containerd namespace name (`identifiers.Validate`).
fn valid_namespace(ns: &str) -> bool {
    let b = ns.as_bytes();
    !b.is_empty()
        && b.len() <= 76
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|&ch| ch.is_ascii_alphanumeric() || matches!(ch, b'.' | b'_' | b'-'))
        && !ns.contains("..")
        && !ns.contains("--")
        && !ns.contains("__")
}

/// What `systemctl enable` would refuse, and instances that make no sense,
/// as far as the spec shows it (a templated `[Install]` section is checked
/// by the installer once rendered).
fn systemd_unit(c: &mut Collector, p: &str, s: &crate::spec::SystemdUnitStep) {
    use crate::unit;
    let template = unit::is_template(s.name.as_str());
    for (j, i) in s.instances.iter().enumerate() {
        if !template {
            c.push(
                format!("{p}.instances[{j}]"),
                format!(
                    "{} is not a template unit (NAME@.TYPE), so it has no instances",
                    s.name
                ),
            );
        } else if i.is_empty() || i.contains('@') || i.contains('/') {
            c.push(
                format!("{p}.instances[{j}]"),
                "is not a valid instance name",
            );
        }
    }
    let install = unit::InstallSection::parse(&s.content);
    if template
        && s.start
        && s.instances.is_empty()
        && install.default_instance.is_none()
        && !(s.template && s.content.contains("${"))
    {
        c.push(
            format!("{p}.start"),
            format!(
                "{} is a template: starting it needs an instance (list \"instances\" or set DefaultInstance= in [Install])",
                s.name
            ),
        );
    }
    if !s.enable || (s.template && s.content.contains("${")) {
        return;
    }
    for i in s.instance_choices() {
        if let Err(e) = unit::enable(s.name.as_str(), unit_path(&s.name).as_str(), &s.content, i) {
            c.push(format!("{p}.content"), format!("cannot enable: {e}"));
        }
    }
}

/// Where a systemd unit named `name` is written.
pub fn unit_path(name: &crate::names::UnitName) -> TargetPath {
    format!("/etc/systemd/system/{name}")
        .parse()
        .expect("unit names hold no /")
}

/// Compiles a variable's `pattern`, anchored so it must match the whole value.
pub fn compile_pattern(pattern: &str) -> Result<regex::Regex, String> {
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(1 << 20)
        .build()
        .map_err(|e| format!("not a valid regular expression: {e}"))
}

/// Compiles an `extract` step's `include` globs: `*` and `?` do not match `/`,
/// `**` matches across directories, `{a,b}` and `[..]` work as in a shell.
/// A glob's leading `./` is dropped. The extract reader selects a member when
/// the set matches its name as stored (as `tar -t` lists it, without a
/// trailing `/`) or that name without its leading `./`, so `./bin/x`,
/// `bin/x` and `*/x` all select a stored `./bin/x`.
pub fn compile_include(globs: &[String]) -> Result<globset::GlobSet, String> {
    let mut set = globset::GlobSetBuilder::new();
    for g in globs {
        let glob = globset::GlobBuilder::new(g.trim_start_matches("./"))
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map_err(|e| format!("not a valid glob: {e}"))?;
        set.add(glob);
    }
    set.build().map_err(|e| format!("not a valid glob: {e}"))
}

/// Refuses a JSON document in which an object holds the same key twice,
/// returning the JSON path of the object and the key. serde_json keeps the
/// last of duplicate map keys without a word, while another reader of the
/// same signed bytes (jq, a person) may take the first: a signed manifest
/// must mean one thing. The nesting depth is bounded by [`check_depth`] first.
fn check_duplicate_keys(bytes: &[u8]) -> Result<(), (String, String)> {
    use serde::de::{Deserialize, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};

    struct Unique;
    impl<'de> Deserialize<'de> for Unique {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(Unique)
        }
    }
    impl<'de> Visitor<'de> for Unique {
        type Value = Unique;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON value")
        }
        fn visit_bool<E>(self, _: bool) -> Result<Unique, E> {
            Ok(Unique)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Unique, E> {
            Ok(Unique)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Unique, E> {
            Ok(Unique)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Unique, E> {
            Ok(Unique)
        }
        fn visit_str<E>(self, _: &str) -> Result<Unique, E> {
            Ok(Unique)
        }
        fn visit_unit<E>(self) -> Result<Unique, E> {
            Ok(Unique)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Unique, A::Error> {
            while seq.next_element::<Unique>()?.is_some() {}
            Ok(Unique)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Unique, A::Error> {
            let mut seen = BTreeSet::new();
            while let Some(key) = map.next_key::<String>()? {
                if !seen.insert(key.clone()) {
                    return Err(A::Error::custom(format!("duplicate key {key:?}")));
                }
                map.next_value::<Unique>()?;
            }
            Ok(Unique)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize::<_, Unique>(&mut de) {
        Ok(Unique) => Ok(()),
        Err(e) => {
            let path = e.path().to_string();
            let path = if path == "." { String::new() } else { path };
            Err((path, e.into_inner().to_string()))
        }
    }
}

/// Parses and validates a manifest (`BUNDLE.json`).
pub fn parse_manifest(bytes: &[u8], limits: &Limits) -> Result<Manifest, ValidationErrors> {
    let mut c = Collector::default();
    if let Err(e) = check_depth(bytes, limits.max_json_depth) {
        c.push("", e);
        return Err(ValidationErrors(c.0));
    }
    if let Err((path, e)) = check_duplicate_keys(bytes) {
        c.push(path, e);
        return Err(ValidationErrors(c.0));
    }
    let manifest: Manifest =
        match serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(bytes)) {
            Ok(m) => m,
            Err(e) => {
                let path = e.path().to_string();
                c.push(
                    if path == "." { String::new() } else { path },
                    e.into_inner().to_string(),
                );
                return Err(ValidationErrors(c.0));
            }
        };
    validate_manifest_into(&manifest, limits, &mut c);
    c.finish(manifest)
}

fn validate_manifest_into(m: &Manifest, limits: &Limits, c: &mut Collector) {
    if m.format != FORMAT {
        c.push("format", format!("expected {FORMAT:?}, got {:?}", m.format));
    }
    if m.artifacts.len() > limits.max_artifacts {
        c.push(
            "artifacts",
            format!("more than {} artifacts", limits.max_artifacts),
        );
    }
    if let Some(sbom) = &m.sbom {
        if sbom.path != crate::format::SBOM_ENTRY {
            c.push(
                "sbom.path",
                format!(
                    "expected {:?}, got {:?}",
                    crate::format::SBOM_ENTRY,
                    sbom.path
                ),
            );
        }
        if sbom.format != crate::format::SBOM_FORMAT {
            c.push(
                "sbom.format",
                format!(
                    "expected {:?}, got {:?}",
                    crate::format::SBOM_FORMAT,
                    sbom.format
                ),
            );
        }
        if sbom.size > limits.max_sbom_bytes {
            c.push(
                "sbom.size",
                format!(
                    "{} bytes is more than the limit of {}",
                    sbom.size, limits.max_sbom_bytes
                ),
            );
        }
    }
    if let Some(base) = &m.base {
        if base.name != m.name {
            c.push(
                "base.name",
                format!(
                    "a differential bundle of {} cannot apply to {}",
                    m.name, base.name
                ),
            );
        }
        if base.serial >= m.serial {
            c.push(
                "base.serial",
                format!(
                    "the base's serial {} is not lower than the bundle's {}",
                    base.serial, m.serial
                ),
            );
        }
        for name in base.omitted.keys() {
            if !m.artifacts.contains_key(name) {
                c.push(
                    format!("base.omitted.{name}"),
                    "not an artifact of the manifest",
                );
            }
        }
    }
    let mut total: u64 = 0;
    for (name, a) in &m.artifacts {
        let path = format!("artifacts.{name}");
        let expected = format!("{ARTIFACT_PREFIX}{name}");
        if a.path != expected {
            c.push(
                format!("{path}.path"),
                format!("expected {expected:?}, got {:?}", a.path),
            );
        }
        if a.size > limits.max_artifact_bytes {
            c.push(
                format!("{path}.size"),
                format!(
                    "{} bytes is more than the limit of {}",
                    a.size, limits.max_artifact_bytes
                ),
            );
        }
        total = total.saturating_add(a.size);
    }
    if total > limits.max_total_bytes {
        c.push(
            "artifacts",
            format!(
                "{total} bytes in all is more than the limit of {}",
                limits.max_total_bytes
            ),
        );
    }
    let target_platform = format!("{}/{}", m.target.os.as_str(), m.target.arch.as_str());
    for (name, image) in &m.images {
        let path = format!("images.{name}");
        if !m.artifacts.contains_key(name) {
            c.push(
                path.clone(),
                format!("no artifact named \"{name}\" carries the image"),
            );
        }
        if image.platform != target_platform {
            c.push(
                format!("{path}.platform"),
                format!(
                    "expected the target's {target_platform:?}, got {:?}",
                    image.platform
                ),
            );
        }
    }
    let names: BTreeSet<&ArtifactName> = m.artifacts.keys().collect();
    let images: BTreeSet<&ArtifactName> = m.images.keys().collect();
    validate_common(c, &m.variables, &names, &images, &m.steps, limits);
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{
      "apiVersion": "bundle/v1", "name": "k8s-worker", "version": "1.21.0-1", "serial": 1,
      "expires": "2027-12-31T00:00:00Z",
      "target": { "os": "linux", "arch": "amd64" },
      "variables": {
        "POD_CIDR": { "description": "pod subnet", "required": true, "pattern": "^[0-9.]+/[0-9]+$" },
        "CLUSTER_DNS": { "default": "10.32.0.10" }
      },
      "artifacts": {
        "runc": { "url": "https://example.com/runc.amd64",
                  "sha256": "9feaa82be15cb190cf0ed76fcb6d22841abd18088d275a47e894cd1e3a0ee4b6", "size": 14753696,
                  "mirrors": ["https://mirror.example/runc.amd64"] },
        "crictl": { "url": "file:files/crictl.tar.gz" }
      },
      "steps": [
        { "kind": "swap-off" },
        { "kind": "kernel-module", "name": "overlay" },
        { "kind": "binary", "artifact": "runc", "dest": "/usr/local/bin/runc", "mode": "0755" },
        { "kind": "extract", "artifact": "crictl", "dest": "/usr/local/bin", "include": ["crictl"] },
        { "kind": "directory", "paths": ["/var/lib/kubelet"], "mode": "0755" },
        { "kind": "file", "dest": "/etc/cni/net.d/10-bridge.conf", "template": true,
          "content": "{ \"subnet\": \"${POD_CIDR}\" }" },
        { "kind": "systemd-unit", "name": "containerd.service", "content": "[Unit]\n[Install]\nWantedBy=multi-user.target\n", "enable": true, "start": true },
        { "kind": "command", "argv": ["sysctl", "--system"], "unless": ["test", "-e", "/run/marker"] }
      ]
    }"#;

    fn errors(json: &str) -> Vec<String> {
        match parse_spec(json.as_bytes(), &Limits::default()) {
            Ok(_) => Vec::new(),
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn good_spec_parses() {
        let spec = parse_spec(GOOD.as_bytes(), &Limits::default()).unwrap();
        assert_eq!(spec.steps.len(), 8);
        assert_eq!(spec.artifacts.len(), 2);
    }

    #[test]
    fn short_sha256_names_the_json_path() {
        let bad = GOOD.replace("ee4b6\"", "ee4b\"");
        assert_eq!(
            errors(&bad),
            vec!["artifacts.runc.sha256: expected 64 hex characters, got 63"]
        );
    }

    #[test]
    fn all_problems_are_reported_at_once() {
        let bad = GOOD
            .replace("\"serial\": 1", "\"serial\": 0")
            .replace("/usr/local/bin/runc", "/usr/local/../bin/runc")
            .replace("\"name\": \"overlay\"", "\"name\": \"over lay\"")
            .replace(
                "\"mode\": \"0755\" },\n        { \"kind\": \"extract\"",
                "\"mode\": \"4755\" },\n        { \"kind\": \"extract\"",
            )
            .replace("${POD_CIDR}", "${NODE_IP}")
            .replace("\"kind\": \"swap-off\"", "\"kind\": \"swapoff\"");
        let errs = errors(&bad);
        let joined = errs.join("\n");
        assert!(
            joined.contains("serial: serial must be an integer from 1"),
            "{joined}"
        );
        assert!(
            joined.contains("steps[0].kind: unknown step kind \"swapoff\""),
            "{joined}"
        );
        assert!(
            joined.contains("steps[1].name: invalid kernel module name"),
            "{joined}"
        );
        assert!(joined.contains("steps[2].dest: invalid path"), "{joined}");
        // Structural errors stop before semantic checks; fix them and the rest appear.
        let bad2 = GOOD
            .replace(
                "\"mode\": \"0755\" },\n        { \"kind\": \"extract\"",
                "\"mode\": \"4755\" },\n        { \"kind\": \"extract\"",
            )
            .replace("${POD_CIDR}", "${NODE_IP}")
            .replace("\"artifact\": \"crictl\"", "\"artifact\": \"crictl2\"");
        let joined = errors(&bad2).join("\n");
        assert!(
            joined.contains("steps[2].mode: 4755 sets setuid/setgid bits"),
            "{joined}"
        );
        assert!(
            joined.contains("steps[5].content: template uses undeclared variable NODE_IP"),
            "{joined}"
        );
        assert!(
            joined.contains("steps[3].artifact: no artifact named \"crictl2\""),
            "{joined}"
        );
        assert!(
            joined.contains("artifacts.crictl: not used by any step"),
            "{joined}"
        );
    }

    #[test]
    fn unknown_fields_are_refused_everywhere() {
        let bad = GOOD
            .replace("\"serial\": 1,", "\"serial\": 1, \"seriall\": 2,")
            .replace(
                "\"dest\": \"/usr/local/bin/runc\"",
                "\"dset\": \"/x\", \"dest\": \"/usr/local/bin/runc\"",
            )
            .replace(
                "\"size\": 14753696,",
                "\"size\": 14753696, \"sha512\": \"x\",",
            );
        let joined = errors(&bad).join("\n");
        assert!(joined.contains("seriall: unknown field"), "{joined}");
        assert!(
            joined.contains("steps[2].dset: unknown field `dset`"),
            "{joined}"
        );
        assert!(
            joined.contains("artifacts.runc.sha512: unknown field `sha512`"),
            "{joined}"
        );
    }

    #[test]
    fn duplicate_destinations_and_bad_patterns() {
        let bad = GOOD
            .replace("/etc/cni/net.d/10-bridge.conf", "/usr/local/bin/runc")
            .replace("^[0-9.]+/[0-9]+$", "([0-9")
            .replace(
                "\"default\": \"10.32.0.10\"",
                "\"default\": \"x\", \"pattern\": \"[0-9.]+\"",
            );
        let joined = errors(&bad).join("\n");
        assert!(
            joined
                .contains("steps[5].dest: /usr/local/bin/runc is already written by steps[2].dest"),
            "{joined}"
        );
        assert!(
            joined.contains("variables.POD_CIDR.pattern: not a valid regular expression"),
            "{joined}"
        );
        assert!(
            joined.contains("variables.CLUSTER_DNS.default: \"x\" does not match"),
            "{joined}"
        );
    }

    #[test]
    fn deep_json_and_non_objects_are_refused() {
        let deep = format!("{}{}", "[".repeat(1000), "]".repeat(1000));
        assert!(errors(&deep)[0].contains("nested deeper"));
        assert!(errors("[]")[0].contains("expected a JSON object"));
        assert!(errors("{")[0].contains("not valid JSON"));
    }

    #[test]
    fn include_globs_do_not_cross_directories() {
        let set = compile_include(&["crictl".into(), "bin/*".into()]).unwrap();
        assert!(set.is_match("crictl"));
        assert!(!set.is_match("sub/crictl"));
        assert!(set.is_match("bin/containerd"));
        assert!(!set.is_match("bin/x/y"));
        assert!(compile_include(&["[".into()]).is_err());
    }

    #[test]
    fn apt_section_problems_name_their_paths() {
        let with =
            |apt: &str| GOOD.replacen("\"steps\": [", &format!("\"apt\": {apt},\n\"steps\": ["), 1);
        let good = r#"{ "sources": [ { "url": "http://deb.debian.org/debian", "suite": "bookworm",
            "components": ["main"], "keyring": "keys/debian.gpg" } ],
            "packages": ["socat", "conntrack", "ipset"], "baseline": "debian-12-minbase" }"#;
        let spec = parse_spec(with(good).as_bytes(), &Limits::default()).unwrap();
        let apt = spec.apt.unwrap();
        assert_eq!(apt.packages, ["socat", "conntrack", "ipset"]);
        assert_eq!(apt.arch, None);
        let bad = r#"{ "sources": [ { "url": "ftp://x/debian", "suite": "book worm",
            "components": [], "keyring": "" } ], "arch": "arm64",
            "packages": ["socat", "Socat", "socat"], "baseline": "no such" }"#;
        let joined = errors(&with(bad)).join("\n");
        for want in [
            "apt.sources[0].url: expected an https:// or http:// URL",
            "apt.sources[0].suite: invalid suite \"book worm\"",
            "apt.sources[0].components: must list at least one component",
            "apt.sources[0].keyring: must name a keyring file",
            "apt.arch: arm64 differs from target.arch amd64",
            "apt.packages[1]: invalid package name \"Socat\"",
            "apt.packages[2]: socat is listed twice",
            "apt.baseline: expected a built-in baseline name",
        ] {
            assert!(joined.contains(want), "{want}\n{joined}");
        }
        let joined = errors(&with(
            r#"{ "sources": [], "packages": [], "recommends": true }"#,
        ))
        .join("\n");
        assert!(joined.contains("apt.recommends: unknown field"), "{joined}");
        assert!(
            is_debian_package_name("libstdc++6")
                && !is_debian_package_name("a")
                && !is_debian_package_name("-x")
        );
    }

    #[test]
    fn patterns_match_the_whole_value() {
        let re = compile_pattern("[0-9]+").unwrap();
        assert!(re.is_match("123"));
        assert!(!re.is_match("123x"));
    }
}
