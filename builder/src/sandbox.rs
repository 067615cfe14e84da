//! The sandbox ("pause") image check of `bundler build`: every pod needs
//! the sandbox image, and an air-gapped node cannot pull it, so a bundle
//! whose files or units name one must carry it.
//!
//! Where a sandbox image is named, in the `content` of `file` and
//! `systemd-unit` steps (lines starting with `#` or `;` are comments and
//! skipped):
//!
//! * containerd's CRI configuration: `sandbox_image = "REF"` (versions 1.x),
//!   and `sandbox = "REF"` in a `[...pinned_images]` table (2.x);
//! * kubelet's flag: `--pod-infra-container-image=REF` or
//!   `--pod-infra-container-image REF` (quoted or not).
//!
//! Each REF is normalized as containerd does and must equal the `ref` of
//! one of the bundle's images (with a digest in REF, that image's pinned
//! digest must be it too).
//!
//! Templates (`"template": true`) are checked as they render with each
//! variable's `default`. A REF that still holds a `${VAR}` after that (a
//! variable without a default: known only at install time) is not checked.

use bundle_spec::image::ImageRef;
use bundle_spec::spec::{Spec, Step};
use regex::Regex;

/// One sandbox image named by a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxRef {
    /// JSON path of the content (`steps[3].content`).
    pub path: String,
    /// What names it (`containerd sandbox_image`).
    pub setting: &'static str,
    /// The reference as written (after rendering).
    pub reference: String,
    /// Whether it came from a rendered template.
    pub templated: bool,
}

/// Content as a template renders with the variables' defaults; a variable
/// without a default stays `${VAR}`. Not a template, or not parseable: as is.
fn rendered(spec: &Spec, content: &str, template: bool) -> String {
    if !template {
        return content.to_owned();
    }
    let Ok(segments) = bundle_spec::template::parse(content) else {
        return content.to_owned();
    };
    let mut out = String::with_capacity(content.len());
    for s in segments {
        match s {
            bundle_spec::template::Segment::Literal(t) => out.push_str(t),
            bundle_spec::template::Segment::Var(v) => {
                match v
                    .parse()
                    .ok()
                    .and_then(|name| spec.variables.get(&name))
                    .and_then(|var| var.default.as_deref())
                {
                    Some(d) => out.push_str(d),
                    None => {
                        out.push_str("${");
                        out.push_str(v);
                        out.push('}');
                    }
                }
            }
        }
    }
    out
}

/// The sandbox images named in `text` (one step's content), with the
/// setting naming each.
pub fn find_in(text: &str) -> Vec<(&'static str, String)> {
    let containerd1 =
        Regex::new(r#"^\s*sandbox_image\s*=\s*(?:"([^"]*)"|'([^']*)')"#).expect("valid regex");
    let containerd2 =
        Regex::new(r#"^\s*sandbox\s*=\s*(?:"([^"]*)"|'([^']*)')"#).expect("valid regex");
    let kubelet = Regex::new(
        r#"--pod-infra-container-image(?:=|[ \t]+)(?:"([^"]*)"|'([^']*)'|([^\s"'\\;]+))"#,
    )
    .expect("valid regex");
    let first = |c: regex::Captures<'_>| {
        (1..=3)
            .find_map(|i| c.get(i))
            .map(|m| m.as_str().to_owned())
    };
    let mut out = Vec::new();
    let mut table = String::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        if trimmed.starts_with('[') {
            table = trimmed.trim_end().to_owned();
        }
        if let Some(r) = containerd1.captures(line).and_then(first) {
            out.push(("containerd sandbox_image", r));
        }
        if table.ends_with("pinned_images]")
            && let Some(r) = containerd2.captures(line).and_then(first)
        {
            out.push(("containerd pinned_images sandbox", r));
        }
        for c in kubelet.captures_iter(line) {
            if let Some(r) = first(c) {
                out.push(("kubelet --pod-infra-container-image", r));
            }
        }
    }
    out
}

/// Every sandbox image the spec's `file` and `systemd-unit` steps name.
pub fn sandbox_refs(spec: &Spec) -> Vec<SandboxRef> {
    let mut out = Vec::new();
    for (i, step) in spec.steps.iter().enumerate() {
        let (content, template) = match step {
            Step::File(f) => (&f.content, f.template),
            Step::SystemdUnit(u) => (&u.content, u.template),
            _ => continue,
        };
        let text = rendered(spec, content, template);
        for (setting, reference) in find_in(&text) {
            out.push(SandboxRef {
                path: format!("steps[{i}].content"),
                setting,
                reference,
                templated: template,
            });
        }
    }
    out
}

/// The problems: sandbox images named but not carried (or not valid refs),
/// one line each, naming the JSON path and the ref.
pub fn check(spec: &Spec) -> Vec<String> {
    let carried: Vec<String> = spec
        .images
        .values()
        .map(|i| i.reference.to_string())
        .collect();
    let mut problems = Vec::new();
    for found in sandbox_refs(spec) {
        if found.reference.contains("${") {
            continue;
        }
        let how = if found.templated {
            " (rendered with the variables' defaults)"
        } else {
            ""
        };
        let r: ImageRef = match found.reference.parse() {
            Ok(r) => r,
            Err(e) => {
                problems.push(format!(
                    "{}: the sandbox image {:?} ({}){how} is not a valid image reference: it {e}",
                    found.path, found.reference, found.setting
                ));
                continue;
            }
        };
        let is_carried = spec.images.values().any(|i| {
            let same_name = i.reference.name() == r.name();
            let tag_ok = r.tag().is_none() || r.tag() == i.reference.tag();
            let digest_ok = r.digest().is_none() || r.digest() == i.digest;
            i.reference == r || (same_name && tag_ok && digest_ok && r.digest().is_some())
        });
        if !is_carried {
            problems.push(format!(
                "{}: names the sandbox image {r} ({}){how}, which the bundle does not carry; \
                 every pod needs it and an air-gapped node cannot pull it: add it to \"images\" \
                 (and to an images step), or name {}",
                found.path,
                found.setting,
                if carried.is_empty() {
                    "an image the bundle carries".to_owned()
                } else {
                    format!("one the bundle carries ({})", carried.join(", "))
                }
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_images_are_found_in_containerd_and_kubelet_settings() {
        let text = r#"
version = 2
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.9"
# sandbox_image = "commented.example/pause:1"
[plugins.'io.containerd.cri.v1.images'.pinned_images]
  sandbox = 'registry.k8s.io/pause:3.10'
[Service]
ExecStart=/usr/local/bin/kubelet --config=/var/lib/kubelet/kubelet-config.yaml \
  --pod-infra-container-image=k8s.gcr.io/pause:3.2 --v=2
KUBELET_ARGS="--pod-infra-container-image registry.example:5000/pause:1 --x"
; --pod-infra-container-image=ignored.example/pause:1
other = "sandbox = 'not in a pinned_images table'"
"#;
        assert_eq!(
            find_in(text),
            [
                (
                    "containerd sandbox_image",
                    "registry.k8s.io/pause:3.9".to_owned()
                ),
                (
                    "containerd pinned_images sandbox",
                    "registry.k8s.io/pause:3.10".to_owned()
                ),
                (
                    "kubelet --pod-infra-container-image",
                    "k8s.gcr.io/pause:3.2".to_owned()
                ),
                (
                    "kubelet --pod-infra-container-image",
                    "registry.example:5000/pause:1".to_owned()
                ),
            ]
        );
        assert!(find_in("sandbox = \"x\"\n").is_empty());
    }
}
