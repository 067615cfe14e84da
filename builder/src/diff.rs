//! `bundler diff OLD NEW`: what changes between two releases, for a change
//! request and its second pair of eyes.
//!
//! Each side is a bundle (its manifest verified against trusted keys, every
//! artifact byte read; the `.deb`s' control data read from the artifacts) or
//! a spec (with its `SPEC.lock.json` merged when it has an `apt` section, as
//! `bundler build` does; package versions then come from the lock). The
//! report lists the bundle's identity (name, version, serial, expiry,
//! target), variables, artifacts (sha256, size, URL), Debian packages by name
//! with versions, images by ref with digests, and steps — matched by what
//! they act on (a file step by its `dest`, a unit by its name, an extract by
//! artifact and destination...) — with a unified diff of file and unit
//! content.
//!
//! The JSON form ([`Report`], `--json`) is described by
//! `builder/schema/diff.schema.json`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, Read as _, Write};
use std::path::{Path, PathBuf};

use bundle_spec::Limits;
use bundle_spec::names::ArtifactName;
use bundle_spec::read::{ArtifactSink, BundleReader};
use bundle_spec::sign::TrustedKeys;
use bundle_spec::spec::{ManifestArtifact, Step};
use serde::Serialize;
use serde_json::{Value, json};

/// Why a side could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A bundle failed verification.
    #[error("{path}: verification failed: {source}")]
    Verify {
        /// The bundle.
        path: PathBuf,
        /// Why.
        source: bundle_spec::read::ReadError,
    },
    /// A bundle was given without keys to verify it.
    #[error("{path} is a bundle: pass --key with the public key(s) it must be signed by")]
    NoKeys {
        /// The bundle.
        path: PathBuf,
    },
    /// A spec or its lock is invalid.
    #[error("{path}: {reason}")]
    Spec {
        /// The spec.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// One side, reduced to what the report compares.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Side {
    /// The file given.
    pub path: String,
    /// `bundle` or `spec`.
    pub kind: &'static str,
    /// Identity: name, version, serial, expires, target (JSON values).
    pub identity: BTreeMap<String, Value>,
    /// Variables (JSON).
    pub variables: BTreeMap<String, Value>,
    /// Artifacts: name → {sha256, size, url}.
    pub artifacts: BTreeMap<String, Value>,
    /// Debian packages: name → version.
    pub packages: BTreeMap<String, String>,
    /// Images: ref → digest.
    pub images: BTreeMap<String, String>,
    /// Steps, in order.
    #[serde(skip)]
    pub steps: Vec<Step>,
}

/// What a step acts on: steps with the same key are the same step.
fn step_key(step: &Step) -> String {
    match step {
        Step::Debs(_) => "debs".into(),
        Step::SwapOff(_) => "swap-off".into(),
        Step::KernelModule(s) => format!("kernel-module {}", s.name),
        Step::Binary(s) => format!("binary {}", s.dest),
        Step::Extract(s) => format!("extract {} -> {}", s.artifact, s.dest),
        Step::Directory(s) => format!(
            "directory {}",
            s.paths
                .iter()
                .map(|p| p.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        ),
        Step::File(s) => format!("file {}", s.dest),
        Step::SystemdUnit(s) => format!("systemd-unit {}", s.name),
        Step::Command(s) => format!("command {}", s.argv.join(" ")),
        Step::Images(s) => format!(
            "images {}",
            s.images
                .iter()
                .map(|p| p.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        ),
    }
}

fn step_content(step: &Step) -> Option<&str> {
    match step {
        Step::File(s) => Some(&s.content),
        Step::SystemdUnit(s) => Some(&s.content),
        _ => None,
    }
}

/// Whether `path` is a bundle (a zstd frame) rather than a spec (JSON).
fn is_bundle(path: &Path) -> Result<bool, DiffError> {
    let mut head = [0u8; 4];
    let n = File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .map_err(|source| DiffError::Io {
            path: path.to_owned(),
            source,
        })?;
    Ok(n == 4 && head == [0x28, 0xb5, 0x2f, 0xfd])
}

/// Keeps the `.deb` artifacts (to temporary files) and discards the rest.
struct DebSink {
    debs: BTreeSet<String>,
    dir: tempfile::TempDir,
    kept: Vec<PathBuf>,
}

enum DebWriter {
    Keep(io::BufWriter<File>, PathBuf),
    Discard(io::Sink),
}

impl Write for DebWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            DebWriter::Keep(w, _) => w.write(buf),
            DebWriter::Discard(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            DebWriter::Keep(w, _) => w.flush(),
            DebWriter::Discard(s) => s.flush(),
        }
    }
}

impl ArtifactSink for DebSink {
    type Writer = DebWriter;
    fn create(&mut self, name: &ArtifactName, _: &ManifestArtifact) -> io::Result<DebWriter> {
        if self.debs.contains(name.as_str()) {
            let p = self.dir.path().join(name.as_str());
            Ok(DebWriter::Keep(io::BufWriter::new(File::create(&p)?), p))
        } else {
            Ok(DebWriter::Discard(io::sink()))
        }
    }
    fn commit(&mut self, _: &ArtifactName, w: DebWriter) -> io::Result<()> {
        if let DebWriter::Keep(mut w, p) = w {
            w.flush()?;
            self.kept.push(p);
        }
        Ok(())
    }
}

/// Reads one side. `trusted` is needed for a bundle.
pub fn load(path: &Path, trusted: Option<&TrustedKeys>) -> Result<Side, DiffError> {
    let limits = Limits::default();
    let mut side = Side {
        path: path.display().to_string(),
        ..Side::default()
    };
    let id = |m: &mut BTreeMap<String, Value>, k: &str, v: Value| {
        m.insert(k.to_owned(), v);
    };
    if is_bundle(path)? {
        side.kind = "bundle";
        let trusted = trusted.ok_or_else(|| DiffError::NoKeys {
            path: path.to_owned(),
        })?;
        let file = File::open(path).map_err(|source| DiffError::Io {
            path: path.to_owned(),
            source,
        })?;
        let verify = |source| DiffError::Verify {
            path: path.to_owned(),
            source,
        };
        let reader = BundleReader::open(file, trusted, &limits).map_err(verify)?;
        let m = reader.manifest().clone();
        let debs: BTreeSet<String> = m
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::Debs(d) => Some(d.artifacts.iter().map(|a| a.to_string())),
                _ => None,
            })
            .flatten()
            .collect();
        let mut sink = DebSink {
            debs,
            dir: tempfile::tempdir().map_err(|source| DiffError::Io {
                path: path.to_owned(),
                source,
            })?,
            kept: Vec::new(),
        };
        reader
            .read_artifacts(&mut sink, &bundle_spec::report::NoReporter)
            .map_err(verify)?;
        for p in &sink.kept {
            if let Ok(info) = debpkg::deb::read_info(p) {
                side.packages.insert(info.package, info.version.to_string());
            }
        }
        // A differential bundle records the packages it leaves out.
        for o in m.base.iter().flat_map(|b| b.omitted.values()) {
            if let Some(p) = &o.package {
                side.packages.insert(p.name.clone(), p.version.clone());
            }
        }
        id(&mut side.identity, "name", json!(m.name));
        id(&mut side.identity, "version", json!(m.version));
        id(&mut side.identity, "serial", json!(m.serial));
        id(&mut side.identity, "expires", json!(m.expires));
        id(&mut side.identity, "target", json!(m.target));
        side.variables = m
            .variables
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        side.artifacts = m
            .artifacts
            .iter()
            .filter(|(n, _)| !m.images.contains_key(*n))
            .map(|(n, a)| {
                (
                    n.to_string(),
                    json!({"sha256": a.sha256, "size": a.size, "url": a.url}),
                )
            })
            .collect();
        side.images = m
            .images
            .values()
            .map(|i| (i.reference.to_string(), i.digest.to_string()))
            .collect();
        side.steps = m.steps;
    } else {
        side.kind = "spec";
        let bytes = std::fs::read(path).map_err(|source| DiffError::Io {
            path: path.to_owned(),
            source,
        })?;
        let spec =
            bundle_spec::validate::parse_spec(&bytes, &limits).map_err(|e| DiffError::Spec {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
        let lock = crate::lock::lock_path(path);
        if spec.apt.is_some()
            && let Ok(text) = std::fs::read(&lock)
            && let Ok(l) = serde_json::from_slice::<crate::lock::LockFile>(&text)
        {
            for p in &l.packages {
                side.packages.insert(p.package.clone(), p.version.clone());
            }
        }
        let spec = crate::lock::merge_lock(spec, path).map_err(|e| DiffError::Spec {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        id(&mut side.identity, "name", json!(spec.name));
        id(&mut side.identity, "version", json!(spec.version));
        id(&mut side.identity, "serial", json!(spec.serial));
        id(&mut side.identity, "expires", json!(spec.expires));
        id(&mut side.identity, "target", json!(spec.target));
        side.variables = spec
            .variables
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        side.artifacts = spec
            .artifacts
            .iter()
            .map(|(n, a)| {
                (
                    n.to_string(),
                    json!({"sha256": a.sha256, "size": a.size, "url": a.url}),
                )
            })
            .collect();
        side.images = spec
            .images
            .values()
            .map(|i| {
                (
                    i.reference.to_string(),
                    i.digest.map(|d| d.to_string()).unwrap_or_default(),
                )
            })
            .collect();
        side.steps = spec.steps;
    }
    Ok(side)
}

/// A change of one keyed thing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    /// The key (an artifact, package, image, step, field or variable).
    pub key: String,
    /// Before (`null`: added).
    pub old: Value,
    /// After (`null`: removed).
    pub new: Value,
}

/// A changed step, with a unified diff of its content when it has one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepChange {
    /// What the step acts on.
    pub key: String,
    /// `added`, `removed` or `changed`.
    pub change: &'static str,
    /// The step before and after (`null` when absent).
    pub old: Value,
    /// After.
    pub new: Value,
    /// Unified diff of a file's or unit's content, when it changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_diff: Option<String>,
}

/// The report (`--json`).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `bundler-diff/v1`.
    pub format: &'static str,
    /// Whether the two sides are the same in everything compared.
    pub equal: bool,
    /// The OLD side's path and kind.
    pub old: Value,
    /// The NEW side's.
    pub new: Value,
    /// name, version, serial, expires, target.
    pub identity: Vec<Change>,
    /// Variables.
    pub variables: Vec<Change>,
    /// Artifacts (not images).
    pub artifacts: Vec<Change>,
    /// Debian packages by name (versions).
    pub packages: Vec<Change>,
    /// Images by ref (digests).
    pub images: Vec<Change>,
    /// Steps.
    pub steps: Vec<StepChange>,
}

fn changes<V: Serialize + PartialEq>(
    old: &BTreeMap<String, V>,
    new: &BTreeMap<String, V>,
) -> Vec<Change> {
    let keys: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    keys.into_iter()
        .filter(|k| old.get(*k) != new.get(*k))
        .map(|k| Change {
            key: k.clone(),
            old: old.get(k).map_or(Value::Null, |v| json!(v)),
            new: new.get(k).map_or(Value::Null, |v| json!(v)),
        })
        .collect()
}

fn unified(key: &str, old: &str, new: &str) -> String {
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(&format!("a/{key}"), &format!("b/{key}"))
        .to_string()
}

/// Compares two sides.
pub fn diff(old: &Side, new: &Side) -> Report {
    fn keyed(s: &Side) -> BTreeMap<String, &Step> {
        s.steps.iter().map(|st| (step_key(st), st)).collect()
    }
    let (ko, kn) = (keyed(old), keyed(new));
    let mut steps = Vec::new();
    let keys: BTreeSet<&String> = ko.keys().chain(kn.keys()).collect();
    for k in keys {
        let (o, n) = (ko.get(k), kn.get(k));
        let change = match (o, n) {
            (Some(a), Some(b)) if a == b => continue,
            (Some(_), Some(_)) => "changed",
            (None, Some(_)) => "added",
            (Some(_), None) => "removed",
            (None, None) => continue,
        };
        let content_diff = match (
            o.and_then(|s| step_content(s)),
            n.and_then(|s| step_content(s)),
        ) {
            (Some(a), Some(b)) if a != b => Some(unified(k, a, b)),
            (None, Some(b)) => Some(unified(k, "", b)),
            (Some(a), None) => Some(unified(k, a, "")),
            _ => None,
        };
        steps.push(StepChange {
            key: k.clone(),
            change,
            old: o.map_or(Value::Null, |s| json!(s)),
            new: n.map_or(Value::Null, |s| json!(s)),
            content_diff,
        });
    }
    // Steps in another order with the same content are a change too.
    let order = |s: &Side| s.steps.iter().map(step_key).collect::<Vec<_>>();
    if steps.is_empty() && order(old) != order(new) {
        steps.push(StepChange {
            key: "order of steps".into(),
            change: "changed",
            old: json!(order(old)),
            new: json!(order(new)),
            content_diff: None,
        });
    }
    let report = Report {
        format: "bundler-diff/v1",
        equal: false,
        old: json!({"path": old.path, "kind": old.kind}),
        new: json!({"path": new.path, "kind": new.kind}),
        identity: changes(&old.identity, &new.identity),
        variables: changes(&old.variables, &new.variables),
        artifacts: changes(&old.artifacts, &new.artifacts),
        packages: changes(&old.packages, &new.packages),
        images: changes(&old.images, &new.images),
        steps,
    };
    let equal = report.identity.is_empty()
        && report.variables.is_empty()
        && report.artifacts.is_empty()
        && report.packages.is_empty()
        && report.images.is_empty()
        && report.steps.is_empty();
    Report { equal, ..report }
}

fn short(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Object(o) if o.contains_key("sha256") => format!(
            "{} ({} bytes) {}",
            o["sha256"].as_str().unwrap_or("unpinned"),
            o["size"],
            o["url"].as_str().unwrap_or("")
        ),
        other => other.to_string(),
    }
}

/// The report as text.
pub fn text(r: &Report) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "--- {} ({})\n+++ {} ({})\n",
        r.old["path"].as_str().unwrap_or(""),
        r.old["kind"].as_str().unwrap_or(""),
        r.new["path"].as_str().unwrap_or(""),
        r.new["kind"].as_str().unwrap_or("")
    ));
    if r.equal {
        out.push_str("no differences\n");
        return out;
    }
    for (title, list) in [
        ("bundle", &r.identity),
        ("variables", &r.variables),
        ("artifacts", &r.artifacts),
        ("packages", &r.packages),
        ("images", &r.images),
    ] {
        if list.is_empty() {
            continue;
        }
        out.push_str(&format!("\n{title}:\n"));
        for c in list {
            let mark = match (&c.old, &c.new) {
                (Value::Null, _) => "+",
                (_, Value::Null) => "-",
                _ => "~",
            };
            out.push_str(&format!(
                "  {mark} {}: {} -> {}\n",
                c.key,
                short(&c.old),
                short(&c.new)
            ));
        }
    }
    if !r.steps.is_empty() {
        out.push_str("\nsteps:\n");
        for s in &r.steps {
            let mark = match s.change {
                "added" => "+",
                "removed" => "-",
                _ => "~",
            };
            out.push_str(&format!("  {mark} {}\n", s.key));
            if let Some(d) = &s.content_diff {
                for line in d.lines() {
                    out.push_str(&format!("      {line}\n"));
                }
            } else if s.change == "changed" {
                out.push_str(&format!("      was: {}\n      now: {}\n", s.old, s.new));
            }
        }
    }
    out
}
