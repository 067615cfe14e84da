//! Writes the seed corpus: a few small valid bundles signed by the fuzzing
//! key (corpus/bundle_reader), their decompressed tars (corpus/bundle_tar),
//! and specs and manifests (corpus/spec_parser).
//!
//!     cargo +nightly run --manifest-path fuzz/Cargo.toml --example make_seeds

use std::io::Read as _;
use std::path::{Path, PathBuf};

use bundle_spec::validate::parse_manifest;
use bundle_spec::write::{WriteOptions, write_bundle};
use serde_json::json;
use sha2::{Digest as _, Sha256};

fn hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A plain tar of (name, type flag, data or link target, mode).
fn tar(members: &[(&str, u8, &[u8], u32)]) -> Vec<u8> {
    let mut entries = Vec::new();
    for (name, flag, data, mode) in members {
        let mut header =
            bundle_fuzz::file_header(name, if *flag == b'0' { data.len() as u64 } else { 0 });
        header[100..108].copy_from_slice(format!("{mode:07o}\0").as_bytes());
        header[156] = *flag;
        if *flag == b'2' {
            header[157..157 + data.len()].copy_from_slice(data);
        }
        header[148..156].fill(b' ');
        let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
        header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        entries.push(bundle_fuzz::Entry {
            header,
            data: if *flag == b'0' {
                data.to_vec()
            } else {
                Vec::new()
            },
        });
    }
    let mut t = bundle_fuzz::join_tar(&entries);
    t.truncate(t.len() - 1024);
    t.extend_from_slice(&[0; 1024]);
    t
}

fn artifact(name: &str, data: &[u8]) -> serde_json::Value {
    json!({
        "path": format!("artifacts/{name}"), "sha256": hex(data), "size": data.len(),
        "url": format!("https://example.invalid/{name}"),
    })
}

fn manifest(
    name: &str,
    artifacts: &[(&str, &[u8])],
    variables: serde_json::Value,
    steps: serde_json::Value,
) -> serde_json::Value {
    let mut a = serde_json::Map::new();
    for (n, d) in artifacts {
        a.insert((*n).to_owned(), artifact(n, d));
    }
    json!({
        "format": "install-bundle/v1", "name": name, "version": "1.0-1", "serial": 1,
        "created": "2026-01-01T00:00:00Z", "expires": "2099-01-01T00:00:00Z",
        "target": {"os": "linux", "arch": "amd64"},
        "variables": variables, "artifacts": a, "steps": steps,
    })
}

fn write(dir: &Path, name: &str, data: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), data).unwrap();
}

fn main() {
    let fuzz = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let corpus = fuzz.join("corpus");
    let tool: Vec<u8> = b"#!/bin/sh\necho tool\n"
        .iter()
        .copied()
        .chain((0..300u32).map(|i| (i * 7 % 251) as u8))
        .collect();
    let archive = tar(&[
        ("pkg/", b'5', b"", 0o755),
        ("pkg/bin/tool", b'0', b"#!/bin/sh\necho packed\n", 0o755),
        ("pkg/bin/alias", b'2', b"tool", 0o777),
        ("pkg/README", b'0', b"readme\n", 0o644),
    ]);
    let unit = "[Unit]\nDescription=tool\n[Service]\nExecStart=/usr/local/bin/tool\n[Install]\nWantedBy=multi-user.target\n";
    let seeds = [
        (
            "one-binary",
            manifest(
                "one",
                &[("tool", &tool)],
                json!({}),
                json!([{"kind": "binary", "artifact": "tool", "dest": "/usr/local/bin/tool", "mode": "0755"}]),
            ),
            vec![("tool", tool.clone())],
        ),
        (
            "every-kind",
            manifest(
                "every-kind",
                &[("pkg", &archive), ("tool", &tool)],
                json!({"CIDR": {"required": true, "pattern": "^[0-9./]+$"}, "DNS": {"default": "10.0.0.10"}}),
                json!([
                    {"kind": "swap-off"},
                    {"kind": "kernel-module", "name": "overlay"},
                    {"kind": "binary", "artifact": "tool", "dest": "/usr/local/bin/tool"},
                    {"kind": "extract", "artifact": "pkg", "dest": "/opt/pkg", "include": ["pkg/bin/*"], "strip_components": 1},
                    {"kind": "directory", "paths": ["/var/lib/tool"], "mode": "0700"},
                    {"kind": "file", "dest": "/etc/tool.conf", "template": true, "content": "cidr=${CIDR} dns=${DNS} $${literal}\n"},
                    {"kind": "systemd-unit", "name": "tool.service", "content": unit, "enable": true, "start": true},
                    {"kind": "command", "argv": ["true"], "unless": ["test", "-e", "/run/x"]},
                ]),
            ),
            vec![("pkg", archive.clone()), ("tool", tool.clone())],
        ),
        (
            "three",
            manifest(
                "three",
                &[("a", b"a\n"), ("b", b""), ("c", &[0u8; 1000])],
                json!({}),
                json!([
                    {"kind": "binary", "artifact": "a", "dest": "/opt/a"},
                    {"kind": "binary", "artifact": "b", "dest": "/opt/b", "mode": "0644"},
                    {"kind": "binary", "artifact": "c", "dest": "/opt/c"},
                ]),
            ),
            vec![
                ("a", b"a\n".to_vec()),
                ("b", Vec::new()),
                ("c", vec![0u8; 1000]),
            ],
        ),
    ];
    let key = bundle_fuzz::key();
    let limits = bundle_spec::Limits::default();
    for (name, m, data) in seeds {
        let text = serde_json::to_vec_pretty(&m).unwrap();
        let manifest = parse_manifest(&text, &limits)
            .unwrap_or_else(|e| panic!("seed {name}: invalid manifest:\n{e}"));
        let data: std::collections::BTreeMap<&str, Vec<u8>> = data.into_iter().collect();
        let written = write_bundle(
            Vec::new(),
            &manifest,
            None,
            &key,
            &mut |n, _| {
                Ok(Box::new(std::io::Cursor::new(data[n.as_str()].clone()))
                    as Box<dyn std::io::Read>)
            },
            WriteOptions {
                level: 3,
                workers: 1,
            },
            &bundle_spec::NoReporter,
        )
        .unwrap();
        let bundle = written.output;
        // It verifies with the fuzzing key.
        bundle_spec::read::verify(
            &bundle[..],
            &bundle_fuzz::trusted(),
            &limits,
            &bundle_spec::NoReporter,
        )
        .unwrap_or_else(|e| panic!("seed {name}: {e}"));
        let mut tar = Vec::new();
        zstd::stream::read::Decoder::new(&bundle[..])
            .unwrap()
            .read_to_end(&mut tar)
            .unwrap();
        write(
            &corpus.join("bundle_reader"),
            &format!("{name}.tar.zst"),
            &bundle,
        );
        write(&corpus.join("bundle_tar"), &format!("{name}.tar"), &tar);
        write(
            &corpus.join("spec_parser"),
            &format!("manifest-{name}.json"),
            &manifest.to_bytes(),
        );
    }
    for spec in ["minimal.json", "full.json"] {
        let text = std::fs::read(fuzz.join("../bundle-spec/examples").join(spec)).unwrap();
        write(&corpus.join("spec_parser"), &format!("spec-{spec}"), &text);
    }
    println!("seeds written to {}", corpus.display());
}
