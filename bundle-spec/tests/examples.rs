//! The JSON Schema (`schema/spec.schema.json`) and the Rust validator
//! (`bundle_spec::validate::parse_spec`) must agree: every example is accepted
//! by both, and every invalid variant below is refused by both. A change to
//! the spec types that is not mirrored in the schema (or the other way round)
//! fails here.

use std::path::{Path, PathBuf};

use bundle_spec::Limits;
use bundle_spec::spec::STEP_KINDS;
use bundle_spec::validate::parse_spec;
use serde_json::{Value, json};

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read_json(path: &Path) -> Value {
    let bytes =
        std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", path.display()))
}

fn schema() -> Value {
    read_json(&manifest_dir().join("schema/spec.schema.json"))
}

/// The schema compiled as draft 2020-12, with `format` checked too (as strict
/// editors do).
fn validator() -> jsonschema::Validator {
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&schema())
        .unwrap_or_else(|e| panic!("the schema does not compile: {e}"))
}

/// Every schema error, as `instance path: message`.
fn schema_errors(validator: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    validator
        .iter_errors(instance)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

/// Every Rust validator error, as `path: message`.
fn rust_errors(bytes: &[u8]) -> Vec<String> {
    match parse_spec(bytes, &Limits::default()) {
        Ok(_) => Vec::new(),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

/// Every `*.json` in `bundle-spec/examples/`, plus the workspace demo spec
/// when it exists.
fn example_files() -> Vec<PathBuf> {
    let dir = manifest_dir().join("examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        // `bundler lock` output (SPEC.lock.json) is not a spec.
        .filter(|p| !p.to_string_lossy().ends_with(".lock.json"))
        .collect();
    files.sort();
    let demo = manifest_dir().join("../examples/demo/spec.json");
    if demo.is_file() {
        files.push(demo);
    }
    files
}

#[test]
fn schema_itself_is_valid() {
    let schema = schema();
    assert_eq!(
        schema["$schema"], "https://json-schema.org/draft/2020-12/schema",
        "the schema must declare draft 2020-12"
    );
    if let Err(e) = jsonschema::draft202012::meta::validate(&schema) {
        panic!("the schema is not a valid draft 2020-12 schema: {e}");
    }
    jsonschema::draft202012::new(&schema)
        .unwrap_or_else(|e| panic!("the schema does not compile: {e}"));
    validator();

    // The schema is user documentation: every property it defines says what it is.
    fn undocumented(node: &Value, path: &str, out: &mut Vec<String>) {
        match node {
            Value::Object(map) => {
                for (key, value) in map {
                    let here = format!("{path}/{key}");
                    if matches!(key.as_str(), "properties" | "$defs")
                        && let Value::Object(children) = value
                    {
                        for (name, child) in children {
                            if child.get("description").is_none() {
                                out.push(format!("{here}/{name}"));
                            }
                        }
                    }
                    undocumented(value, &here, out);
                }
            }
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    undocumented(item, &format!("{path}/{i}"), out);
                }
            }
            _ => {}
        }
    }
    let mut missing = Vec::new();
    undocumented(&schema, "#", &mut missing);
    // `if` clauses select by `kind`/`allow_setuid`; they describe nothing.
    missing.retain(|p| !p.contains("/if/") && !p.contains("/then/properties/mode"));
    assert!(
        missing.is_empty(),
        "properties without a description:\n{}",
        missing.join("\n")
    );

    // Every step kind the Rust types know has a branch in the schema, and no other.
    let kinds: Vec<&str> = schema["$defs"]["step"]["properties"]["kind"]["enum"]
        .as_array()
        .expect("step kind enum")
        .iter()
        .map(|k| k.as_str().expect("kind is a string"))
        .collect();
    assert_eq!(kinds, STEP_KINDS);
}

#[test]
fn every_example_validates_against_schema_and_rust_validator() {
    let validator = validator();
    let files = example_files();
    let names: Vec<String> = files
        .iter()
        .filter_map(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .collect();
    for expected in ["minimal.json", "full.json"] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from bundle-spec/examples (found {names:?})"
        );
    }

    let mut failures = Vec::new();
    for path in &files {
        let bytes = std::fs::read(path).expect("readable example");
        let value = read_json(path);
        for e in schema_errors(&validator, &value) {
            failures.push(format!("{} (schema): {e}", path.display()));
        }
        for e in rust_errors(&bytes) {
            failures.push(format!("{} (rust): {e}", path.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} problem(s) in the examples:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn full_example_uses_every_step_kind() {
    let full = read_json(&manifest_dir().join("examples/full.json"));
    let used: Vec<&str> = full["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s["kind"].as_str().expect("kind"))
        .collect();
    let missing: Vec<&&str> = STEP_KINDS.iter().filter(|k| !used.contains(k)).collect();
    assert!(missing.is_empty(), "full.json lacks step kinds {missing:?}");
}

/// The base every variant starts from: small, valid, and touching variables,
/// artifacts and steps.
fn base() -> Value {
    json!({
        "apiVersion": "bundle/v1",
        "name": "runc",
        "version": "1.0.0-rc93",
        "serial": 1,
        "expires": "2027-12-31T00:00:00Z",
        "target": { "os": "linux", "arch": "amd64" },
        "variables": { "POD_CIDR": { "required": true } },
        "artifacts": {
            "runc": {
                "url": "https://github.com/opencontainers/runc/releases/download/v1.0.0-rc93/runc.amd64",
                "sha256": "9feaa82be15cb190cf0ed76fcb6d22841abd18088d275a47e894cd1e3a0ee4b6",
                "size": 14753696
            }
        },
        "steps": [
            { "kind": "binary", "artifact": "runc", "dest": "/usr/local/bin/runc", "mode": "0755" }
        ]
    })
}

/// A valid `apt` section.
fn apt() -> Value {
    json!({
        "sources": [ { "url": "http://deb.debian.org/debian", "suite": "bookworm", "components": ["main"],
                       "keyring": "keys/debian-archive-bookworm.gpg" } ],
        "packages": ["socat", "conntrack", "ipset"]
    })
}

type Edit = fn(&mut Value);

fn step0(v: &mut Value) -> &mut Value {
    &mut v["steps"][0]
}

fn push_step(v: &mut Value, step: Value) {
    v["steps"].as_array_mut().expect("steps").push(step);
}

fn obj(v: &mut Value) -> &mut serde_json::Map<String, Value> {
    v.as_object_mut().expect("object")
}

/// The base with one edit applied.
fn edited(edit: Edit) -> Value {
    let mut doc = base();
    edit(&mut doc);
    doc
}

/// Checks one document against both validators; `Some(problem)` when either
/// outcome differs from the expected one (`true`: accepted).
fn disagreement(
    validator: &jsonschema::Validator,
    name: &str,
    doc: &Value,
    schema_accepts: bool,
    rust_accepts: bool,
) -> Option<String> {
    let bytes = serde_json::to_vec(doc).expect("serializes");
    let mut problems = Vec::new();
    for (who, errors, accepts) in [
        ("schema", schema_errors(validator, doc), schema_accepts),
        ("rust", rust_errors(&bytes), rust_accepts),
    ] {
        if errors.is_empty() != accepts {
            let verdict = if accepts { "refused" } else { "accepted" };
            problems.push(format!("{who} {verdict}: {}", errors.join("; ")));
        }
    }
    (!problems.is_empty()).then(|| format!("{name}:\n  {}", problems.join("\n  ")))
}

#[test]
fn invalid_specs_are_rejected_by_both() {
    let cases: &[(&str, Edit)] = &[
        ("bad sha256 length", |v| {
            v["artifacts"]["runc"]["sha256"] =
                json!("9feaa82be15cb190cf0ed76fcb6d22841abd18088d275a47e894cd1e3a0ee4b");
        }),
        ("sha256 not hex", |v| {
            v["artifacts"]["runc"]["sha256"] = json!("g".repeat(64));
        }),
        ("unknown top-level field", |v| {
            obj(v).insert("seriall".into(), json!(2));
        }),
        ("$schema key (unknown field)", |v| {
            obj(v).insert("$schema".into(), json!("schema/spec.schema.json"));
        }),
        ("unknown step field", |v| {
            obj(step0(v)).insert("dset".into(), json!("/x"));
        }),
        ("field of another step kind", |v| {
            obj(step0(v)).insert("template".into(), json!(true));
        }),
        ("unknown artifact field", |v| {
            obj(&mut v["artifacts"]["runc"]).insert("sha512".into(), json!("x"));
        }),
        ("unknown target field", |v| {
            obj(&mut v["target"]).insert("distro".into(), json!("debian"));
        }),
        ("unknown variable field", |v| {
            obj(&mut v["variables"]["POD_CIDR"]).insert("type".into(), json!("string"));
        }),
        ("unknown step kind", |v| step0(v)["kind"] = json!("binaryy")),
        ("step kind not a string", |v| step0(v)["kind"] = json!(1)),
        ("step without kind", |v| {
            obj(step0(v)).remove("kind");
        }),
        ("relative dest", |v| {
            step0(v)["dest"] = json!("usr/local/bin/runc")
        }),
        ("`..` in dest", |v| {
            step0(v)["dest"] = json!("/usr/local/../bin/runc");
        }),
        ("`.` in dest", |v| {
            step0(v)["dest"] = json!("/usr/./bin/runc")
        }),
        ("`//` in dest", |v| {
            step0(v)["dest"] = json!("/usr//bin/runc")
        }),
        ("trailing / in dest", |v| {
            step0(v)["dest"] = json!("/usr/local/bin/")
        }),
        ("dest is /", |v| step0(v)["dest"] = json!("/")),
        ("control character in dest", |v| {
            step0(v)["dest"] = json!("/usr/local/bin/run\nc");
        }),
        ("component longer than 255 bytes", |v| {
            step0(v)["dest"] = json!(format!("/usr/{}", "x".repeat(256)));
        }),
        ("mode 999", |v| step0(v)["mode"] = json!("999")),
        ("mode 07555", |v| step0(v)["mode"] = json!("07555")),
        ("mode as a number", |v| step0(v)["mode"] = json!(755)),
        ("setuid mode without allow_setuid", |v| {
            step0(v)["mode"] = json!("4755");
        }),
        ("setgid mode with allow_setuid false", |v| {
            step0(v)["mode"] = json!("2755");
            step0(v)["allow_setuid"] = json!(false);
        }),
        ("bad artifact name Runc", |v| {
            let a = obj(&mut v["artifacts"]).remove("runc").expect("runc");
            obj(&mut v["artifacts"]).insert("Runc".into(), a);
            step0(v)["artifact"] = json!("Runc");
        }),
        ("artifact name with /", |v| {
            let a = obj(&mut v["artifacts"]).remove("runc").expect("runc");
            obj(&mut v["artifacts"]).insert("a/runc".into(), a);
            step0(v)["artifact"] = json!("a/runc");
        }),
        ("bad bundle name", |v| v["name"] = json!("K8s worker")),
        ("bundle name longer than 64", |v| {
            v["name"] = json!("a".repeat(65))
        }),
        ("serial 0", |v| v["serial"] = json!(0)),
        ("serial above 2^53", |v| {
            v["serial"] = json!(9_007_199_254_740_993_u64)
        }),
        ("serial negative", |v| v["serial"] = json!(-1)),
        ("serial as a string", |v| v["serial"] = json!("1")),
        ("bad arch", |v| v["target"]["arch"] = json!("x86_64")),
        ("bad os", |v| v["target"]["os"] = json!("windows")),
        ("os_release value not a string", |v| {
            v["target"]["os_release"] = json!({ "VERSION_ID": 12 });
        }),
        ("missing required field version", |v| {
            obj(v).remove("version");
        }),
        ("missing required field target", |v| {
            obj(v).remove("target");
        }),
        ("missing dest", |v| {
            obj(step0(v)).remove("dest");
        }),
        ("bad apiVersion", |v| v["apiVersion"] = json!("bundle/v2")),
        ("empty version", |v| v["version"] = json!("")),
        ("white space in version", |v| {
            v["version"] = json!("1.0 beta")
        }),
        ("version longer than 128", |v| {
            v["version"] = json!("1".repeat(129))
        }),
        ("date-only expires", |v| v["expires"] = json!("2027-12-31")),
        ("expires without time zone", |v| {
            v["expires"] = json!("2027-12-31T00:00:00");
        }),
        ("bad var name", |v| {
            v["variables"] = json!({ "pod_cidr": { "required": true } });
        }),
        ("var name starting with a digit", |v| {
            v["variables"] = json!({ "1CIDR": {} });
        }),
        ("variable required as a string", |v| {
            v["variables"]["POD_CIDR"]["required"] = json!("yes");
        }),
        ("variables as an array", |v| v["variables"] = json!([])),
        ("ftp url", |v| {
            v["artifacts"]["runc"]["url"] = json!("ftp://example.com/runc");
        }),
        ("url naming a directory", |v| {
            v["artifacts"]["runc"]["url"] = json!("https://example.com/runc/");
        }),
        ("url with a space", |v| {
            v["artifacts"]["runc"]["url"] = json!("https://example.com/my runc");
        }),
        ("bare file: url", |v| {
            v["artifacts"]["runc"]["url"] = json!("file:")
        }),
        ("bad mirror url", |v| {
            v["artifacts"]["runc"]["mirrors"] = json!(["mirror.example/runc"]);
        }),
        ("negative size", |v| {
            v["artifacts"]["runc"]["size"] = json!(-1)
        }),
        ("size above the 64 GiB limit", |v| {
            v["artifacts"]["runc"]["size"] = json!(68_719_476_737_u64);
        }),
        ("missing url", |v| {
            obj(&mut v["artifacts"]["runc"]).remove("url");
        }),
        ("steps not an array", |v| v["steps"] = json!({})),
        ("bad kernel module name", |v| {
            push_step(v, json!({ "kind": "kernel-module", "name": "-r" }));
        }),
        ("swap-off with a field", |v| {
            push_step(v, json!({ "kind": "swap-off", "all": true }));
        }),
        ("unit name without suffix", |v| {
            push_step(
                v,
                json!({ "kind": "systemd-unit", "name": "containerd", "content": "" }),
            );
        }),
        ("unit name with /", |v| {
            push_step(
                v,
                json!({ "kind": "systemd-unit", "name": "a/b.service", "content": "" }),
            );
        }),
        ("unit without content", |v| {
            push_step(v, json!({ "kind": "systemd-unit", "name": "x.service" }));
        }),
        ("empty debs list", |v| {
            push_step(v, json!({ "kind": "debs", "artifacts": [] }));
        }),
        ("empty directory list", |v| {
            push_step(v, json!({ "kind": "directory", "paths": [] }));
        }),
        ("relative directory", |v| {
            push_step(
                v,
                json!({ "kind": "directory", "paths": ["var/lib/kubelet"] }),
            );
        }),
        ("empty include list", |v| {
            step0(v)["kind"] = json!("extract");
            obj(step0(v)).remove("mode");
            step0(v)["include"] = json!([]);
        }),
        ("strip_components above 64", |v| {
            step0(v)["kind"] = json!("extract");
            obj(step0(v)).remove("mode");
            step0(v)["strip_components"] = json!(65);
        }),
        ("file without content", |v| {
            push_step(v, json!({ "kind": "file", "dest": "/etc/x" }));
        }),
        ("empty argv", |v| {
            push_step(v, json!({ "kind": "command", "argv": [] }));
        }),
        ("empty program name", |v| {
            push_step(v, json!({ "kind": "command", "argv": ["", "-x"] }));
        }),
        ("empty unless", |v| {
            push_step(
                v,
                json!({ "kind": "command", "argv": ["true"], "unless": [] }),
            );
        }),
        ("NUL in an argument", |v| {
            push_step(v, json!({ "kind": "command", "argv": ["echo", "a\u{0}b"] }));
        }),
        ("argv as a string", |v| {
            push_step(v, json!({ "kind": "command", "argv": "sysctl --system" }));
        }),
        ("apt without sources", |v| {
            v["apt"] = json!({ "packages": ["socat"] });
        }),
        ("apt with no sources", |v| {
            v["apt"] = apt();
            v["apt"]["sources"] = json!([]);
        }),
        ("apt with no packages", |v| {
            v["apt"] = apt();
            v["apt"]["packages"] = json!([]);
        }),
        ("apt package listed twice", |v| {
            v["apt"] = apt();
            v["apt"]["packages"] = json!(["socat", "socat"]);
        }),
        ("apt package name with uppercase", |v| {
            v["apt"] = apt();
            v["apt"]["packages"] = json!(["Socat"]);
        }),
        ("apt package name of one character", |v| {
            v["apt"] = apt();
            v["apt"]["packages"] = json!(["s"]);
        }),
        ("apt package with a version", |v| {
            v["apt"] = apt();
            v["apt"]["packages"] = json!(["socat (= 1.7.4.4-2)"]);
        }),
        ("apt unknown field", |v| {
            v["apt"] = apt();
            v["apt"]["recommends"] = json!(true);
        }),
        ("apt source unknown field", |v| {
            v["apt"] = apt();
            v["apt"]["sources"][0]["trusted"] = json!(true);
        }),
        ("apt source without keyring", |v| {
            v["apt"] = apt();
            obj(&mut v["apt"]["sources"][0]).remove("keyring");
        }),
        ("apt source with an empty keyring", |v| {
            v["apt"] = apt();
            v["apt"]["sources"][0]["keyring"] = json!("");
        }),
        ("apt source file: url", |v| {
            v["apt"] = apt();
            v["apt"]["sources"][0]["url"] = json!("file:/srv/debian");
        }),
        ("apt source url with a space", |v| {
            v["apt"] = apt();
            v["apt"]["sources"][0]["url"] = json!("http://deb.debian.org/de bian");
        }),
        ("apt source bare http://", |v| {
            v["apt"] = apt();
            v["apt"]["sources"][0]["url"] = json!("http://");
        }),
        ("apt suite with /", |v| {
            v["apt"] = apt();
            v["apt"]["sources"][0]["suite"] = json!("bookworm/updates");
        }),
        ("apt no components", |v| {
            v["apt"] = apt();
            v["apt"]["sources"][0]["components"] = json!([]);
        }),
        ("apt component with a space", |v| {
            v["apt"] = apt();
            v["apt"]["sources"][0]["components"] = json!(["non free"]);
        }),
        ("apt bad arch", |v| {
            v["apt"] = apt();
            v["apt"]["arch"] = json!("x86_64");
        }),
        ("apt baseline empty", |v| {
            v["apt"] = apt();
            v["apt"]["baseline"] = json!("");
        }),
        ("apt baseline name with a space", |v| {
            v["apt"] = apt();
            v["apt"]["baseline"] = json!("debian 12");
        }),
        ("apt as an array", |v| v["apt"] = json!([])),
    ];
    assert!(cases.len() >= 12);

    let validator = validator();
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|(name, edit)| disagreement(&validator, name, &edited(*edit), false, false))
        .collect();
    assert!(
        failures.is_empty(),
        "{} invalid variant(s) not refused by both validators:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn edge_cases_are_accepted_by_both() {
    let cases: &[(&str, Edit)] = &[
        ("the base itself", |_| {}),
        ("setuid mode with allow_setuid", |v| {
            step0(v)["mode"] = json!("4755");
            step0(v)["allow_setuid"] = json!(true);
        }),
        ("sticky 4-digit mode", |v| step0(v)["mode"] = json!("1755")),
        ("3-digit mode", |v| step0(v)["mode"] = json!("700")),
        ("mode omitted", |v| {
            obj(step0(v)).remove("mode");
        }),
        ("uppercase sha256", |v| {
            v["artifacts"]["runc"]["sha256"] =
                json!("9FEAA82BE15CB190CF0ED76FCB6D22841ABD18088D275A47E894CD1E3A0EE4B6");
        }),
        ("unpinned artifact (sha256 and size null)", |v| {
            v["artifacts"]["runc"]["sha256"] = Value::Null;
            v["artifacts"]["runc"]["size"] = Value::Null;
        }),
        ("unpinned artifact (no sha256)", |v| {
            obj(&mut v["artifacts"]["runc"]).remove("sha256");
        }),
        ("file: url and mirrors", |v| {
            v["artifacts"]["runc"]["url"] = json!("file:files/runc.amd64");
            v["artifacts"]["runc"]["mirrors"] =
                json!(["http://mirror.example/runc.amd64", "file:/srv/runc"]);
        }),
        ("size 0", |v| v["artifacts"]["runc"]["size"] = json!(0)),
        ("serial 2^53", |v| {
            v["serial"] = json!(9_007_199_254_740_992_u64)
        }),
        ("expires with an offset and fraction", |v| {
            v["expires"] = json!("2027-12-31T01:00:00.5+01:00");
        }),
        ("expires null", |v| v["expires"] = Value::Null),
        ("no expires, variables, artifacts or steps", |v| {
            for k in ["expires", "variables", "artifacts", "steps"] {
                obj(v).remove(k);
            }
        }),
        ("os_release", |v| {
            v["target"]["os_release"] = json!({ "ID": "debian", "VERSION_ID": "12" });
        }),
        ("os_release null", |v| {
            v["target"]["os_release"] = Value::Null
        }),
        ("every arch", |v| v["target"]["arch"] = json!("riscv64")),
        ("64-character names", |v| {
            v["name"] = json!("a".repeat(64));
            v["variables"] =
                json!({ "A234567890123456789012345678901234567890123456789012345678901234": {} });
        }),
        ("dots in names", |v| v["name"] = json!("0.a_b-c")),
        ("odd but normalized paths", |v| {
            step0(v)["dest"] = json!("/opt/a b/.hidden/.../..x/x..");
        }),
        ("variable with everything", |v| {
            v["variables"]["CLUSTER_DNS"] = json!({
                "description": "DNS", "required": false, "pattern": "[0-9.]+", "default": "10.32.0.10"
            });
        }),
        ("variable fields null", |v| {
            v["variables"]["X"] = json!({ "description": null, "pattern": null, "default": null });
        }),
        ("every other step kind", |v| {
            for s in [
                json!({ "kind": "swap-off" }),
                json!({ "kind": "kernel-module", "name": "br_netfilter" }),
                json!({ "kind": "directory", "paths": ["/var/lib/kubelet", "/tmp/x"], "mode": "1777" }),
                json!({ "kind": "file", "dest": "/etc/x.conf", "content": "cidr=${POD_CIDR} $${LITERAL}", "template": true }),
                json!({ "kind": "systemd-unit", "name": "getty@tty1.service", "content": "[Unit]\n", "enable": false, "start": false }),
                json!({ "kind": "systemd-unit", "name": "a.b.timer", "content": "", "template": false }),
                json!({ "kind": "command", "argv": ["true"], "unless": null, "in_root": true }),
                json!({ "kind": "command", "argv": ["sysctl", "--system"], "unless": ["test", "-e", "/x"] }),
            ] {
                push_step(v, s);
            }
        }),
        ("apt section", |v| v["apt"] = apt()),
        ("apt section null", |v| v["apt"] = Value::Null),
        ("apt with every field", |v| {
            v["apt"] = apt();
            v["apt"]["arch"] = json!("amd64");
            v["apt"]["baseline"] = json!("debian-12-minbase");
            v["apt"]["packages"] = json!(["socat", "libstdc++6", "g++-12", "0ad"]);
            v["apt"]["sources"] = json!([
                { "url": "https://deb.debian.org/debian/", "suite": "bookworm-updates",
                  "components": ["main", "non-free-firmware"], "keyring": "/usr/share/keyrings/debian-archive-keyring.gpg" },
                { "url": "http://security.debian.org/debian-security", "suite": "bookworm-security",
                  "components": ["main"], "keyring": "keys/debian-archive-bookworm.asc" }
            ]);
        }),
        ("apt arch and baseline null", |v| {
            v["apt"] = apt();
            v["apt"]["arch"] = Value::Null;
            v["apt"]["baseline"] = Value::Null;
        }),
        ("apt baseline as a status file path", |v| {
            v["apt"] = apt();
            v["apt"]["baseline"] = json!("./images/worker/var/lib/dpkg/status");
        }),
        ("extract with include null and strip_components 64", |v| {
            step0(v)["kind"] = json!("extract");
            obj(step0(v)).remove("mode");
            step0(v)["include"] = Value::Null;
            step0(v)["strip_components"] = json!(64);
            step0(v)["allow_setuid"] = json!(true);
        }),
    ];

    let validator = validator();
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|(name, edit)| disagreement(&validator, name, &edited(*edit), true, true))
        .collect();
    assert!(
        failures.is_empty(),
        "{} valid variant(s) not accepted by both validators:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// One valid step of every kind, for [`base`] (whose `runc` artifact stays
/// used by its first step).
fn one_step_of_each_kind() -> Vec<Value> {
    vec![
        json!({ "kind": "debs", "artifacts": ["runc"] }),
        json!({ "kind": "swap-off" }),
        json!({ "kind": "kernel-module", "name": "overlay" }),
        json!({ "kind": "binary", "artifact": "runc", "dest": "/usr/bin/runc2" }),
        json!({ "kind": "extract", "artifact": "runc", "dest": "/opt/runc" }),
        json!({ "kind": "directory", "paths": ["/etc/x"] }),
        json!({ "kind": "file", "dest": "/etc/x.conf", "content": "x\n" }),
        json!({ "kind": "systemd-unit", "name": "x.service", "content": "[Unit]\n" }),
        json!({ "kind": "command", "argv": ["true"] }),
        json!({ "kind": "images", "images": ["pause"], "pin": true }),
    ]
}

#[test]
fn every_step_kind_agrees_on_fields_and_setuid() {
    let validator = validator();
    let steps = one_step_of_each_kind();
    let kinds: Vec<&str> = steps.iter().map(|s| s["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, STEP_KINDS);

    let with_step = |step: Value| {
        let mut doc = base();
        if step["kind"] == "images" {
            doc["images"] = json!({ "pause": {
                "ref": "registry.k8s.io/pause:3.9",
                "digest": "sha256:7031c1b283388d2c2e09b57badb803c05ebed362dc88d84b480cc47f72a21097"
            }});
        }
        push_step(&mut doc, step);
        doc
    };
    let mut failures = Vec::new();
    for step in steps {
        let kind = step["kind"].as_str().unwrap().to_owned();
        let check = |name: String, step: Value, ok: bool| {
            disagreement(&validator, &name, &with_step(step), ok, ok)
        };
        failures.extend(check(format!("{kind} step"), step.clone(), true));

        let mut unknown = step.clone();
        obj(&mut unknown).insert("bogus".into(), json!(1));
        failures.extend(check(
            format!("{kind} step with an unknown field"),
            unknown,
            false,
        ));

        if ["binary", "directory", "file"].contains(&kind.as_str()) {
            let mut setid = step.clone();
            setid["mode"] = json!("6755");
            failures.extend(check(
                format!("{kind} step with mode 6755"),
                setid.clone(),
                false,
            ));
            setid["allow_setuid"] = json!(true);
            failures.extend(check(
                format!("{kind} step with mode 6755 and allow_setuid"),
                setid,
                true,
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} step variant(s) where the validators disagree with the expectation:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Rules only the Rust validator checks (listed in the schema's top-level
/// description), and the one place where the schema is stricter. If one of
/// these starts to agree, move it to the tests above and update the schema's
/// description.
#[test]
fn documented_differences_between_schema_and_rust_validator() {
    let rust_only: &[(&str, Edit)] = &[
        ("step names a missing artifact", |v| {
            step0(v)["artifact"] = json!("crun");
        }),
        ("unused artifact", |v| {
            v["artifacts"]["crun"] = json!({ "url": "https://example.com/crun" });
        }),
        ("template uses an undeclared variable", |v| {
            push_step(
                v,
                json!({ "kind": "file", "dest": "/etc/x", "content": "${NODE_IP}", "template": true }),
            );
        }),
        ("unterminated template", |v| {
            push_step(
                v,
                json!({ "kind": "file", "dest": "/etc/x", "content": "${POD_CIDR", "template": true }),
            );
        }),
        ("two steps write one path", |v| {
            push_step(
                v,
                json!({ "kind": "file", "dest": "/usr/local/bin/runc", "content": "" }),
            );
        }),
        ("a file where a unit goes", |v| {
            push_step(
                v,
                json!({ "kind": "file", "dest": "/etc/systemd/system/x.service", "content": "" }),
            );
            push_step(
                v,
                json!({ "kind": "systemd-unit", "name": "x.service", "content": "" }),
            );
        }),
        ("invalid variable pattern", |v| {
            v["variables"]["POD_CIDR"]["pattern"] = json!("([0-9");
        }),
        ("default not matching the pattern", |v| {
            v["variables"]["POD_CIDR"]["pattern"] = json!("[0-9.]+/[0-9]+");
            v["variables"]["POD_CIDR"]["default"] = json!("x");
        }),
        ("invalid include glob", |v| {
            step0(v)["kind"] = json!("extract");
            obj(step0(v)).remove("mode");
            step0(v)["include"] = json!(["["]);
        }),
        ("serial written as 1.0", |v| v["serial"] = json!(1.0)),
        ("apt.arch differs from target.arch", |v| {
            v["apt"] = apt();
            v["apt"]["arch"] = json!("arm64");
        }),
        ("version of 65 two-byte characters (130 bytes)", |v| {
            v["version"] = json!("é".repeat(65));
        }),
        (
            "path component of 200 two-byte characters (400 bytes)",
            |v| {
                step0(v)["dest"] = json!(format!("/opt/{}", "é".repeat(200)));
            },
        ),
    ];
    let schema_only: &[(&str, Edit)] = &[
        // RFC 3339 allows another separator than T; the time crate takes any byte.
        ("expires with a space separator", |v| {
            v["expires"] = json!("2027-12-31 00:00:00Z");
        }),
    ];

    let validator = validator();
    let mut failures: Vec<String> = rust_only
        .iter()
        .filter_map(|(name, edit)| disagreement(&validator, name, &edited(*edit), true, false))
        .collect();
    failures.extend(
        schema_only
            .iter()
            .filter_map(|(name, edit)| disagreement(&validator, name, &edited(*edit), false, true)),
    );
    assert!(
        failures.is_empty(),
        "documented differences that no longer hold:\n{}",
        failures.join("\n")
    );
}

/// `containerd.service` exactly as the seed procedure (the manual worker
/// bootstrap these examples replace) writes it with `cat <<EOF | tee`.
const SEED_CONTAINERD_UNIT: &str = "[Unit]\nDescription=containerd container runtime\nDocumentation=https://containerd.io\nAfter=network.target\n\n[Service]\nExecStartPre=/sbin/modprobe overlay\nExecStart=/bin/containerd\nRestart=always\nRestartSec=5\nDelegate=yes\nKillMode=process\nOOMScoreAdjust=-999\nLimitNOFILE=1048576\nLimitNPROC=infinity\nLimitCORE=infinity\n\n[Install]\nWantedBy=multi-user.target\n";

/// `/etc/containerd/config.toml` exactly as the seed writes it (containerd 1.4).
const SEED_CONTAINERD_CONFIG: &str = "[plugins]\n  [plugins.cri.containerd]\n    snapshotter = \"overlayfs\"\n    [plugins.cri.containerd.default_runtime]\n      runtime_type = \"io.containerd.runtime.v1.linux\"\n      runtime_engine = \"/usr/local/bin/runc\"\n      runtime_root = \"\"\n";

/// The directories the seed creates.
const SEED_DIRECTORIES: &[&str] = &[
    "/var/lib/kubelet",
    "/var/lib/kube-proxy",
    "/etc/cni/net.d",
    "/opt/cni/bin",
    "/var/lib/kubernetes",
    "/var/run/kubernetes",
];

fn step_with<'a>(steps: &'a [Value], what: &str, pred: impl Fn(&Value) -> bool) -> &'a Value {
    steps
        .iter()
        .find(|s| pred(s))
        .unwrap_or_else(|| panic!("no step {what}"))
}

#[test]
fn k8s_worker_examples_do_what_the_seed_does_and_are_pinned() {
    for (file, version_tag, unpinned) in [
        ("k8s-worker.json", "v1.30", &[][..]),
        ("k8s-worker-v1.21.json", "v1.21", &["kube-proxy"][..]),
    ] {
        let path = manifest_dir().join("examples").join(file);
        let bytes = std::fs::read(&path).unwrap();
        let spec = parse_spec(&bytes, &Limits::default()).unwrap_or_else(|e| panic!("{file}: {e}"));
        let v = read_json(&path);

        // OS packages by name, from the signed Debian archive, minus minbase.
        let apt = spec
            .apt
            .as_ref()
            .unwrap_or_else(|| panic!("{file}: no apt"));
        assert_eq!(apt.packages, ["socat", "conntrack", "ipset"], "{file}");
        assert_eq!(apt.baseline.as_deref(), Some("debian-12-minbase"), "{file}");
        for s in &apt.sources {
            let keyring = path.parent().unwrap().join(&s.keyring);
            assert!(
                std::fs::metadata(&keyring).is_ok_and(|m| m.len() > 0),
                "{file}: keyring {} missing",
                keyring.display()
            );
        }

        // Every artifact pinned to a real upstream URL, but kube-proxy v1.21
        // (no published sha256: `bundler pin` on a connected machine).
        let names: Vec<&str> = spec.artifacts.keys().map(|n| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "cni-plugins",
                "containerd",
                "crictl",
                "kube-proxy",
                "kubectl",
                "kubelet",
                "runc"
            ],
            "{file}"
        );
        for (name, a) in &spec.artifacts {
            assert!(a.url.starts_with("https://"), "{file}: {name}: {}", a.url);
            assert!(
                !name.as_str().starts_with("kube") || a.url.contains(&format!("/{version_tag}.")),
                "{file}: {name}: {}",
                a.url
            );
            assert_eq!(
                a.sha256.is_none(),
                unpinned.contains(&name.as_str()),
                "{file}: artifact {name} pinned: {:?}",
                a.sha256
            );
        }

        let steps = v["steps"].as_array().unwrap();
        step_with(steps, "swap-off", |s| s["kind"] == "swap-off");
        for (artifact, dest) in [
            ("runc", "/usr/local/bin/runc"),
            ("kubectl", "/usr/local/bin/kubectl"),
            ("kube-proxy", "/usr/local/bin/kube-proxy"),
            ("kubelet", "/usr/local/bin/kubelet"),
        ] {
            let s = step_with(steps, artifact, |s| s["artifact"] == artifact);
            assert_eq!(
                (&s["kind"], &s["dest"], &s["mode"]),
                (&json!("binary"), &json!(dest), &json!("0755")),
                "{file}"
            );
        }
        let crictl = step_with(steps, "crictl", |s| s["artifact"] == "crictl");
        assert_eq!(
            (&crictl["kind"], &crictl["dest"]),
            (&json!("extract"), &json!("/usr/local/bin"))
        );
        let containerd = step_with(steps, "containerd", |s| s["artifact"] == "containerd");
        assert_eq!(
            (
                &containerd["dest"],
                &containerd["include"],
                &containerd["strip_components"]
            ),
            (&json!("/bin"), &json!(["bin/*"]), &json!(1)),
            "{file}: containerd bin/* -> /bin"
        );
        let cni = step_with(steps, "cni-plugins", |s| s["artifact"] == "cni-plugins");
        assert_eq!(
            (&cni["kind"], &cni["dest"]),
            (&json!("extract"), &json!("/opt/cni/bin"))
        );
        let dirs: Vec<&Value> = steps
            .iter()
            .filter(|s| s["kind"] == "directory")
            .flat_map(|s| s["paths"].as_array().unwrap())
            .collect();
        for d in SEED_DIRECTORIES.iter().chain(&["/etc/containerd"]) {
            assert!(dirs.contains(&&json!(d)), "{file}: directory {d} missing");
        }

        let unit = step_with(steps, "containerd.service", |s| {
            s["name"] == "containerd.service"
        });
        assert_eq!(
            unit["content"], SEED_CONTAINERD_UNIT,
            "{file}: containerd.service differs from the seed's"
        );
        let config = step_with(steps, "config.toml", |s| {
            s["dest"] == "/etc/containerd/config.toml"
        });
        if version_tag == "v1.21" {
            assert_eq!(
                config["content"], SEED_CONTAINERD_CONFIG,
                "{file}: config.toml differs from the seed's"
            );
        } else {
            // containerd 1.7 wants a version 2 config and the runc v2 shim.
            let c = config["content"].as_str().unwrap();
            for want in [
                "version = 2\n",
                "snapshotter = \"overlayfs\"",
                "runtime_type = \"io.containerd.runc.v2\"",
                "BinaryName = \"/usr/local/bin/runc\"",
            ] {
                assert!(c.contains(want), "{file}: config.toml lacks {want:?}");
            }
        }

        // POD_CIDR: required, a CIDR, used by the CNI bridge and the kubelet.
        let pod = &spec.variables[&"POD_CIDR".parse().unwrap()];
        assert!(pod.required && pod.default.is_none(), "{file}");
        let re = bundle_spec::validate::compile_pattern(pod.pattern.as_deref().unwrap()).unwrap();
        for ok in ["172.16.1.0/24", "10.200.0.0/16", "0.0.0.0/0"] {
            assert!(re.is_match(ok), "{file}: POD_CIDR refuses {ok}");
        }
        for bad in [
            "172.16.1.0",
            "172.16.1.0/33",
            "256.16.1.0/24",
            "172.16.1/24",
            "x",
        ] {
            assert!(!re.is_match(bad), "{file}: POD_CIDR accepts {bad}");
        }
        for (dest, needle) in [
            (
                "/etc/cni/net.d/10-bridge.conf",
                "\"subnet\": \"${POD_CIDR}\"",
            ),
            ("/etc/cni/net.d/99-loopback.conf", "\"type\": \"loopback\""),
            (
                "/var/lib/kubelet/kubelet-config.yaml",
                "podCIDR: \"${POD_CIDR}\"",
            ),
            (
                "/var/lib/kube-proxy/kube-proxy-config.yaml",
                "clusterCIDR: \"${CLUSTER_CIDR}\"",
            ),
        ] {
            let s = step_with(steps, dest, |s| s["dest"] == dest);
            assert!(
                s["content"].as_str().unwrap().contains(needle),
                "{file}: {dest} lacks {needle}"
            );
        }
        for name in [
            "containerd.service",
            "kubelet.service",
            "kube-proxy.service",
        ] {
            let s = step_with(steps, name, |s| s["name"] == name);
            assert_eq!(
                (&s["enable"], &s["start"]),
                (&json!(true), &json!(true)),
                "{file}: {name}"
            );
        }
    }
}
