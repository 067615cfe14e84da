//! Does an artifact's content fit the step that uses it? Checked by `bundler
//! pin` before anything is written into the spec, and by `bundler build`
//! before anything is packed, so that a server's or proxy's error page
//! answered with `200 OK` is never pinned as `kubectl`.
//!
//! * `binary` with an executable mode (any `x` bit; the default `0755`): an
//!   ELF executable or shared object, or a script: starting with `#!`, or
//!   plain text (a shell script without `#!`, which shells run with `sh`).
//!   HTML, XML and JSON pages, archives, compressed data, images, empty
//!   files and other binary formats are refused. A
//!   `binary` step with a mode without `x` bits installs a data file, whose
//!   content is not checked.
//! * `extract`: an archive that [`bundle_spec::extract::scan`] reads whole
//!   with the step's `include` and `strip_components`: the very code the
//!   installer runs, so nothing built can fail on the host for being
//!   unreadable or for selecting nothing.
//! * `debs`: a Debian package whose control data `debpkg` reads, as the
//!   installer does.
//!
//! A refusal names the artifact, the step, what the content looks like with
//! its first bytes (escaped), and where it came from: the URL with the
//! `Content-Type` (and any `Content-Encoding`) the server sent.

use std::fmt;
use std::fs::File;
use std::io::Read as _;
use std::path::Path;

use bundle_spec::archive::{DETECT_BYTES, Elf, describe_with_preview, elf, is_deb, is_script};
use bundle_spec::extract::{ExtractError, scan};
use bundle_spec::names::ArtifactName;
use bundle_spec::spec::{Spec, Step};

use crate::fetch::Fetched;

/// Which command checks, for the advice given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// `bundler pin`: nothing is written into the spec.
    Pin,
    /// `bundler build`: nothing is packed.
    Build,
}

/// One artifact that does not fit one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unfit {
    /// The artifact.
    pub name: ArtifactName,
    /// The step, described (`the binary step installing /usr/local/bin/kubectl`).
    pub step: String,
    /// What is wrong with the content.
    pub reason: String,
    /// Where the content came from: the URL and what the server said about it.
    pub origin: String,
    /// Whether the content is not of the kind the step needs at all (an
    /// error page), rather than an archive the step's options do not fit.
    pub wrong_kind: bool,
    /// What to do.
    pub hint: String,
}

impl fmt::Display for Unfit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "artifact {} does not fit {}: {}\n  {}\n  {}",
            self.name, self.step, self.reason, self.origin, self.hint
        )
    }
}

/// Every artifact that does not fit its step, one per paragraph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnfitErrors(pub Vec<Unfit>);

impl fmt::Display for UnfitErrors {
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

impl std::error::Error for UnfitErrors {}

/// Checks every artifact of `fetched` against every step of `spec` that uses
/// it; all problems are reported at once.
pub fn check(spec: &Spec, fetched: &[Fetched], purpose: Purpose) -> Result<(), UnfitErrors> {
    let mut errors = Vec::new();
    for step in &spec.steps {
        let uses: Vec<&ArtifactName> = match step {
            Step::Binary(s) => vec![&s.artifact],
            Step::Extract(s) => vec![&s.artifact],
            Step::Debs(s) => s.artifacts.iter().collect(),
            _ => Vec::new(),
        };
        for name in uses {
            let Some(f) = fetched.iter().find(|f| &f.name == name) else {
                continue;
            };
            if let Some((step_text, reason, wrong_kind)) = check_one(step, name, &f.path) {
                let source_url = spec.artifacts.get(name).map(|a| a.url.as_str());
                errors.push(Unfit {
                    name: name.clone(),
                    step: step_text,
                    reason,
                    origin: origin(f, source_url),
                    wrong_kind,
                    hint: hint(purpose, wrong_kind),
                });
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(UnfitErrors(errors))
    }
}

/// `(step, reason, wrong_kind)` when `path` does not fit `step`.
fn check_one(step: &Step, name: &ArtifactName, path: &Path) -> Option<(String, String, bool)> {
    let head = match read_head(path) {
        Ok(h) => h,
        Err(e) => {
            return Some((
                format!("its {} step", step.kind()),
                format!("cannot read {}: {e}", path.display()),
                false,
            ));
        }
    };
    match step {
        Step::Binary(s) => {
            let step_text = format!("the binary step installing {}", s.dest);
            if s.mode.bits() & 0o111 == 0 {
                return None;
            }
            let ok = is_script(&head)
                || matches!(elf(&head), Some(Elf::Executable | Elf::SharedObject))
                || bundle_spec::archive::describe(&head) == "text";
            (!ok).then(|| {
                (
                    step_text,
                    format!(
                        "with mode {} it must be an ELF executable or a script (#! or plain \
                         text), but the content is {}",
                        s.mode,
                        describe_with_preview(&head)
                    ),
                    true,
                )
            })
        }
        Step::Extract(s) => {
            let step_text = format!("the extract step into {}", s.dest);
            match scan(path, name.as_str(), s) {
                Ok(_) => None,
                Err(ExtractError::NotAnArchive { found, .. }) => Some((
                    step_text,
                    format!(
                        "it must be a tar, tar.gz, tar.xz or tar.zst archive, but the content is \
                         {found}"
                    ),
                    true,
                )),
                Err(e) => {
                    let wrong_kind = matches!(e, ExtractError::Io { .. });
                    Some((step_text, e.to_string(), wrong_kind))
                }
            }
        }
        Step::Debs(_) => {
            let step_text = "the debs step".to_owned();
            if !is_deb(&head) {
                return Some((
                    step_text,
                    format!(
                        "it must be a Debian package (.deb), but the content is {}",
                        describe_with_preview(&head)
                    ),
                    true,
                ));
            }
            match debpkg::deb::read_info(path) {
                Ok(_) => None,
                Err(e) => Some((
                    step_text,
                    format!("it starts like a Debian package but cannot be read as one: {e}"),
                    true,
                )),
            }
        }
        _ => None,
    }
}

fn read_head(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(DETECT_BYTES);
    File::open(path)?
        .take(DETECT_BYTES as u64)
        .read_to_end(&mut head)?;
    Ok(head)
}

/// Where the content came from, with what the server said about it.
fn origin(f: &Fetched, spec_url: Option<&str>) -> String {
    if f.from_cache {
        return format!(
            "the content is the cached copy of {} (sha256 {})",
            spec_url.unwrap_or("its URL"),
            f.sha256
        );
    }
    if f.source.starts_with("file:") {
        return format!("the content was read from {}", f.source);
    }
    let mut s = format!(
        "the content was received from {} with {}",
        f.source,
        match &f.content_type {
            Some(t) => format!("Content-Type: {t}"),
            None => "no Content-Type".to_owned(),
        }
    );
    if let Some(e) = &f.content_encoding {
        s.push_str(&format!(
            " and Content-Encoding: {e} (bundler does not decode it: these are the encoded bytes)"
        ));
    }
    s
}

fn hint(purpose: Purpose, wrong_kind: bool) -> String {
    match (purpose, wrong_kind) {
        (Purpose::Pin, true) => "nothing was pinned and the spec is unchanged: a server or proxy \
            probably answered with an error or login page instead of the file; check the URL \
            (open it, or look at what the proxy returns), then run `bundler pin` again"
            .into(),
        (Purpose::Pin, false) => "nothing was pinned and the spec is unchanged: fix the step \
            (include, strip_components) or the URL, then run `bundler pin` again"
            .into(),
        (Purpose::Build, true) => "nothing was built: the pinned sha256 is the sha256 of this \
            content, so the pin itself is wrong; correct the URL, remove the artifact's sha256 \
            and size from the spec and run `bundler pin`"
            .into(),
        (Purpose::Build, false) => "nothing was built: fix the step (include, \
            strip_components) or pin another artifact"
            .into(),
    }
}
