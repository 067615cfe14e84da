//! `bundler pin`: download unpinned artifacts and write their sha256 and
//! size back into the spec, keeping it readable.

use std::io::Write as _;
use std::path::Path;

use bundle_spec::Reporter;
use serde_json::Value;

use crate::build::{BuildError, load_spec, read_capped, requests};
use crate::cache::Cache;
use crate::fetch::{FetchOptions, Fetched, fetch_all};
use crate::images::PinnedImage;
use crate::registry::{Registries, RegistryOptions};

/// What `bundler pin` wrote into the spec.
#[derive(Debug, Default)]
pub struct Pinned {
    /// Artifacts given a sha256 and size.
    pub artifacts: Vec<Fetched>,
    /// Images given a digest.
    pub images: Vec<PinnedImage>,
}

impl Pinned {
    /// Whether nothing needed pinning.
    pub fn is_empty(&self) -> bool {
        self.artifacts.is_empty() && self.images.is_empty()
    }
}

/// Pins every artifact of the spec at `spec_path` that has no sha256, and
/// every image without a digest (to the digest its registry serves for the
/// ref); returns what was pinned (empty when everything already was). The
/// spec is rewritten only when everything could be pinned.
pub fn pin(
    spec_path: &Path,
    cache: Option<&Path>,
    fetch: &FetchOptions,
    registry: &RegistryOptions,
    reporter: &dyn Reporter,
) -> Result<Pinned, BuildError> {
    let (spec, spec_dir) = load_spec(spec_path)?;
    let reqs = requests(&spec, spec_path, &spec_dir, true)?;
    let unpinned_images: Vec<_> = spec
        .images
        .iter()
        .filter(|(_, i)| i.digest.is_none())
        .collect();
    if reqs.is_empty() && unpinned_images.is_empty() {
        return Ok(Pinned::default());
    }
    let cache = Cache::open(cache).map_err(|e| BuildError::Cache(e.to_string()))?;
    reporter.on_phase("fetch");
    let mut images = Vec::new();
    if !unpinned_images.is_empty() {
        let registries = std::sync::Arc::new(Registries::new(registry.clone(), fetch)?);
        let resolver = crate::images::Resolver {
            registries: &registries,
            cache: &cache,
            offline: fetch.offline,
            target: &spec.target,
        };
        let mut errors = Vec::new();
        for (name, source) in unpinned_images {
            match crate::images::pin(&resolver, name, source) {
                Ok(p) => images.push(p),
                Err(e) => errors.push(*e),
            }
        }
        if !errors.is_empty() {
            return Err(BuildError::Images {
                artifacts: None,
                images: crate::images::ImageErrors(errors),
            });
        }
    }
    let fetched = if reqs.is_empty() {
        Vec::new()
    } else {
        fetch_all(reqs, &cache, fetch, reporter)?
    };
    // Before the spec is touched: does each download fit the steps using it?
    crate::content::check(&spec, &fetched, crate::content::Purpose::Pin)?;

    let io_err = |source| BuildError::ReadSpec {
        path: spec_path.to_owned(),
        source,
    };
    let bytes = read_capped(spec_path).map_err(io_err)?;
    let mut doc: Value =
        serde_json::from_slice(&bytes).map_err(|e| io_err(std::io::Error::other(e)))?;
    for f in &fetched {
        let entry = doc
            .get_mut("artifacts")
            .and_then(|a| a.get_mut(f.name.as_str()))
            .and_then(Value::as_object_mut)
            .expect("validated spec has this artifact");
        entry.insert("sha256".into(), Value::String(f.sha256.to_hex()));
        entry.insert("size".into(), Value::from(f.size));
    }
    for p in &images {
        let entry = doc
            .get_mut("images")
            .and_then(|a| a.get_mut(p.name.as_str()))
            .and_then(Value::as_object_mut)
            .expect("validated spec has this image");
        entry.insert("digest".into(), Value::String(p.digest.to_string()));
    }
    let mut text = String::new();
    write_pretty(&mut text, &doc, 0);
    text.push('\n');

    let dir = spec_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".spec.")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(io_err)?;
    tmp.write_all(text.as_bytes())
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(io_err)?;
    if let Ok(meta) = std::fs::metadata(spec_path) {
        let _ = std::fs::set_permissions(tmp.path(), meta.permissions());
    }
    tmp.persist(spec_path).map_err(|e| io_err(e.error))?;
    Ok(Pinned {
        artifacts: fetched,
        images,
    })
}

/// Pretty JSON with two-space indentation, where short arrays of scalars
/// (`"argv": ["sysctl", "--system"]`) stay on one line.
pub fn write_pretty(out: &mut String, v: &Value, indent: usize) {
    let pad = |n: usize| "  ".repeat(n);
    match v {
        Value::Object(map) if !map.is_empty() => {
            out.push_str("{\n");
            for (i, (k, val)) in map.iter().enumerate() {
                out.push_str(&pad(indent + 1));
                out.push_str(&serde_json::to_string(k).expect("string serializes"));
                out.push_str(": ");
                write_pretty(out, val, indent + 1);
                if i + 1 < map.len() {
                    out.push(',');
                }
                out.push('\n');
            }
            out.push_str(&pad(indent));
            out.push('}');
        }
        Value::Array(items) if !items.is_empty() => {
            let scalars = items.iter().all(|i| !i.is_object() && !i.is_array());
            let one_line = serde_json::to_string(v)
                .expect("value serializes")
                .replace("\",\"", "\", \"");
            if scalars && one_line.len() + indent * 2 <= 100 {
                let parts: Vec<String> = items
                    .iter()
                    .map(|i| serde_json::to_string(i).expect("value serializes"))
                    .collect();
                out.push('[');
                out.push_str(&parts.join(", "));
                out.push(']');
            } else {
                out.push_str("[\n");
                for (i, item) in items.iter().enumerate() {
                    out.push_str(&pad(indent + 1));
                    write_pretty(out, item, indent + 1);
                    if i + 1 < items.len() {
                        out.push(',');
                    }
                    out.push('\n');
                }
                out.push_str(&pad(indent));
                out.push(']');
            }
        }
        other => out.push_str(&serde_json::to_string(other).expect("value serializes")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_scalar_arrays_stay_on_one_line() {
        let v: Value = serde_json::from_str(
            r#"{"argv":["sysctl","--system"],"o":{"a":1},"e":[],"n":[{"x":true}]}"#,
        )
        .unwrap();
        let mut s = String::new();
        write_pretty(&mut s, &v, 0);
        assert_eq!(
            s,
            "{\n  \"argv\": [\"sysctl\", \"--system\"],\n  \"o\": {\n    \"a\": 1\n  },\n  \"e\": [],\n  \"n\": [\n    {\n      \"x\": true\n    }\n  ]\n}"
        );
        assert_eq!(serde_json::from_str::<Value>(&s).unwrap(), v);
    }
}
