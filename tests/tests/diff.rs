//! `bundler diff OLD NEW` (issue 14, "bundler diff"): bundles (verified)
//! and specs; artifacts, Debian packages by version, images by digest, steps
//! with a unified diff of content, variables and identity; exit 0 equal, 1
//! different, 2 unreadable, 3 unverifiable; the JSON form validated against
//! its committed schema.

use std::path::Path;

use bundle_tests::cli::{Output, bundler, run};
use bundle_tests::fixture::{Fixture, make_deb};
use bundle_tests::kit;
use serde_json::{Value, json};

fn diff(f: &Fixture, old: &Path, new: &Path, extra: &[&str]) -> Output {
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "diff".as_ref(),
        old.as_os_str(),
        new.as_os_str(),
        "--key".as_ref(),
        f.keys.public.as_os_str(),
    ];
    args.extend(extra.iter().map(|a| std::ffi::OsStr::new(*a)));
    run(&bundler(), args, &[])
}

fn assert_valid(doc: &Value) {
    bundle_tests::schema::assert_valid(
        "builder/schema/diff.schema.json",
        "bundler diff --json",
        doc,
    );
}

/// The fixture's spec (serial 1) and a serial 2 with: runc's bytes changed,
/// demo-motd 1.0-2, the bridge config's template changed, a file step
/// added, the command step removed, a variable's default changed.
fn two_releases(f: &Fixture) -> (std::path::PathBuf, std::path::PathBuf) {
    let s1 = f.write_spec("one.json", 1, &[]);
    let mut spec: Value = serde_json::from_slice(&std::fs::read(&s1).unwrap()).unwrap();
    let files = f.path("files");
    std::fs::write(files.join("runc2.amd64"), b"#!/bin/sh\necho runc 1.1\n").unwrap();
    let deb = make_deb(
        &files,
        "demo-motd",
        "1.0-2",
        None,
        ("usr/share/demo-motd/motd", "hello again\n"),
    );
    std::fs::rename(deb, files.join("demo-motd2.deb")).unwrap();
    spec["serial"] = json!(2);
    spec["version"] = json!("1.21.0-2");
    spec["artifacts"]["runc"] = json!({"url": "file:files/runc2.amd64"});
    spec["artifacts"]["demo-motd"] = json!({"url": "file:files/demo-motd2.deb"});
    spec["variables"]["CLUSTER_DNS"]["default"] = json!("10.32.0.11");
    let steps = spec["steps"].as_array_mut().unwrap();
    steps.retain(|s| s["kind"] != "command");
    for s in steps.iter_mut() {
        if s["dest"] == "/etc/cni/net.d/10-bridge.conf" {
            s["content"] = json!(
                "{ \"subnet\": \"${POD_CIDR}\", \"dns\": \"${CLUSTER_DNS}\", \"mtu\": 1450 }\n"
            );
        }
    }
    steps.push(json!({"kind": "file", "dest": "/etc/motd.d/worker", "content": "a worker\n"}));
    let s2 = kit::write_pinned_spec(f, "two.json", &spec);
    (s1, s2)
}

#[test]
fn equal_bundles_exit_0_and_say_so() {
    let f = Fixture::new();
    let b = f.bundle();
    diff(&f, &b, &b, &[]).code(0).stdout_has("no differences");
}

#[test]
fn a_new_release_lists_artifacts_packages_steps_with_content_diffs_and_variables() {
    let f = Fixture::new();
    let (s1, s2) = two_releases(&f);
    let b1 = f.build(&s1, "one.tar.zst");
    let b2 = f.build(&s2, "two.tar.zst");
    let out = diff(&f, &b1, &b2, &[]);
    out.code(1)
        .stdout_has("~ demo-motd: 1.0-1 -> 1.0-2")
        .stdout_has("~ serial: 1 -> 2")
        .stdout_has("~ runc:")
        .stdout_has("~ file /etc/cni/net.d/10-bridge.conf")
        .stdout_has("+ file /etc/motd.d/worker")
        .stdout_has("- command sysctl --system")
        .stdout_has("+{ \"subnet\": \"${POD_CIDR}\", \"dns\": \"${CLUSTER_DNS}\", \"mtu\": 1450 }")
        .stdout_has("~ CLUSTER_DNS:");
    let json_out = diff(&f, &b1, &b2, &["--json"]);
    json_out.code(1);
    let doc: Value = serde_json::from_str(&json_out.stdout).unwrap();
    assert_valid(&doc);
    assert_eq!(doc["equal"], false);
    let pkg = doc["packages"].as_array().unwrap();
    assert_eq!(
        pkg,
        &vec![json!({"key": "demo-motd", "old": "1.0-1", "new": "1.0-2"})]
    );
    let step = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["key"] == "file /etc/cni/net.d/10-bridge.conf")
        .unwrap();
    assert_eq!(step["change"], "changed");
    assert!(step["content_diff"].as_str().unwrap().contains("@@"));
    // The same comparison from the specs agrees on steps and artifacts.
    let specs = diff(&f, &s1, &s2, &["--json"]);
    specs.code(1);
    let sdoc: Value = serde_json::from_str(&specs.stdout).unwrap();
    assert_valid(&sdoc);
    assert_eq!(sdoc["steps"], doc["steps"]);
    assert_eq!(sdoc["old"]["kind"], "spec");
}

#[test]
fn image_digest_changes_are_listed_by_ref() {
    let f = Fixture::new();
    let mut spec = json!({
        "apiVersion": "bundle/v1", "name": "img", "version": "1", "serial": 1,
        "target": {"os": "linux", "arch": "amd64"},
        "images": {"pause": {"ref": "registry.k8s.io/pause:3.9", "digest": format!("sha256:{}", "a".repeat(64))}},
        "steps": [{"kind": "images", "images": ["pause"], "pin": true}],
    });
    let a = f.path("a.json");
    std::fs::write(&a, spec.to_string()).unwrap();
    spec["images"]["pause"]["digest"] = json!(format!("sha256:{}", "b".repeat(64)));
    let b = f.path("b.json");
    std::fs::write(&b, spec.to_string()).unwrap();
    let out = diff(&f, &a, &b, &["--json"]);
    out.code(1);
    let doc: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_valid(&doc);
    assert_eq!(doc["images"][0]["key"], "registry.k8s.io/pause:3.9");
}

#[test]
fn errors_exit_2_and_unverifiable_bundles_exit_3() {
    let f = Fixture::new();
    let b = f.bundle();
    run(
        &bundler(),
        ["diff".as_ref(), b.as_os_str(), b.as_os_str()],
        &[],
    )
    .code(2)
    .stderr_has("is a bundle: pass --key");
    diff(&f, &b, &f.path("missing.json"), &[])
        .code(2)
        .stderr_has("missing.json");
    let mut bytes = std::fs::read(&b).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    let bad = f.path("bad.tar.zst");
    std::fs::write(&bad, bytes).unwrap();
    diff(&f, &b, &bad, &[])
        .code(3)
        .stderr_has("verification failed");
}
