//! The committed JSON Schemas of every `--json` output (and of the manifest),
//! compiled with the `jsonschema` crate (draft 2020-12, formats checked), so
//! that each test validates the documents the real programs print.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// The workspace root.
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Resolves a schema's relative `$ref` to a sibling file (the manifest's
/// schema refers to `spec.schema.json#/...`), and nothing else.
struct Sibling(PathBuf);

impl jsonschema::Retrieve for Sibling {
    fn retrieve(
        &self,
        uri: &jsonschema::Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        let name = uri.path().as_str().rsplit('/').next().unwrap_or_default();
        Ok(serde_json::from_slice(&std::fs::read(self.0.join(name))?)?)
    }
}

/// The validator of the schema at `rel` (relative to the workspace root).
pub fn validator(rel: &str) -> jsonschema::Validator {
    let path = workspace().join(rel);
    let schema: Value = serde_json::from_slice(
        &std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .with_retriever(Sibling(path.parent().unwrap().to_owned()))
        .build(&schema)
        .unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Panics, naming `what`, each error and the document, unless `doc` is
/// valid against the schema at `rel`.
pub fn assert_valid(rel: &str, what: &str, doc: &Value) {
    let errors: Vec<String> = validator(rel)
        .iter_errors(doc)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{what}: not valid against {rel}:\n{}\n{doc:#}",
        errors.join("\n")
    );
}

/// Parses `stdout` as one JSON document and checks it against `rel`.
pub fn assert_valid_output(rel: &str, what: &str, stdout: &str) -> Value {
    let doc: Value = serde_json::from_str(stdout)
        .unwrap_or_else(|e| panic!("{what}: stdout is not one JSON document ({e}):\n{stdout}"));
    assert_valid(rel, what, &doc);
    doc
}
