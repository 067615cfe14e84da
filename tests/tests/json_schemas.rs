//! Every `--json` output has a documented schema (issue 14, "CLI
//! conventions"): `install-bundle`'s documents (every command, success and
//! failure) against `installer/schema/install-bundle.schema.json`, `bundler`'s
//! against `builder/schema/*.schema.json`, and `bundler inspect --json` (the
//! manifest) against `bundle-spec/schema/manifest.schema.json`. Each output is
//! produced by the real programs on the fixture and validated; a schema that
//! does not describe an output, or an output that grew an undocumented
//! field, fails here.

use std::ffi::OsString;

use bundle_tests::cli::{Output, bundler, installer, run};
use bundle_tests::fixture::Fixture;
use bundle_tests::kit;
use bundle_tests::schema;
use serde_json::Value;

const CIDR: &str = "--set=POD_CIDR=10.200.1.0/24";

/// `out`'s standard output, valid against the schema at `rel`.
fn assert_valid(rel: &str, what: &str, out: &Output) -> Value {
    schema::assert_valid_output(rel, what, &out.stdout)
}

const INSTALLER_SCHEMA: &str = "installer/schema/install-bundle.schema.json";

fn ib(args: Vec<OsString>) -> Output {
    run(&installer(), args, &[])
}

fn os<S: AsRef<std::ffi::OsStr>>(items: &[S]) -> Vec<OsString> {
    items.iter().map(|s| s.as_ref().to_owned()).collect()
}

#[test]
fn every_install_bundle_json_document_is_valid_against_its_schema() {
    let f = Fixture::new();
    let bundle = f.bundle();
    let key = f.keys.public.as_os_str();
    let root = f.root("root");
    let r = root.as_os_str();
    let common = |cmd: &str| -> Vec<OsString> {
        os(&[
            OsString::from(cmd),
            "--root".into(),
            r.into(),
            "--trusted-key".into(),
            key.into(),
            "--json".into(),
        ])
    };
    let with = |mut a: Vec<OsString>, more: &[&std::ffi::OsStr]| {
        a.extend(more.iter().map(|m| m.to_os_string()));
        a
    };
    let b = bundle.as_os_str();

    // verify; plan (with --diff); install; install again; status.
    let out = ib(with(common("verify"), &[b]));
    out.code(0);
    assert_valid(INSTALLER_SCHEMA, "verify", &out);
    let out = ib(with(common("plan"), &[b, CIDR.as_ref(), "--diff".as_ref()]));
    out.code(0);
    assert_valid(INSTALLER_SCHEMA, "plan", &out);
    let out = ib(with(common("install"), &[b, CIDR.as_ref()]));
    out.code(0);
    let doc = assert_valid(INSTALLER_SCHEMA, "install", &out);
    assert_eq!(doc["result"], "installed");
    let out = ib(with(common("install"), &[b, CIDR.as_ref()]));
    out.code(0);
    assert_valid(INSTALLER_SCHEMA, "install again", &out);
    let out = ib(common("status"));
    out.code(0);
    assert_valid(INSTALLER_SCHEMA, "status", &out);
    let out = ib(common("recover"));
    out.code(0);
    assert_valid(INSTALLER_SCHEMA, "recover", &out);

    // stage, status with a staged bundle, apply, unstage (twice).
    let s2 = f.write_spec("spec-2.json", 2, &[]);
    let b2 = f.build(&s2, "worker-2.tar.zst");
    let out = ib(with(common("stage"), &[b2.as_os_str(), CIDR.as_ref()]));
    out.code(0);
    assert_valid(INSTALLER_SCHEMA, "stage", &out);
    let out = ib(common("status"));
    out.code(0);
    assert_valid(INSTALLER_SCHEMA, "status staged", &out);
    let out = ib(with(common("unstage"), &["k8s-worker".as_ref()]));
    out.code(0);
    assert_valid(INSTALLER_SCHEMA, "unstage", &out);
    let out = ib(with(common("unstage"), &["k8s-worker".as_ref()]));
    out.code(0);
    assert_valid(INSTALLER_SCHEMA, "unstage not staged", &out);
    ib(with(common("stage"), &[b2.as_os_str(), CIDR.as_ref()])).code(0);
    let out = ib(with(common("apply"), &["k8s-worker".as_ref()]));
    out.code(0);
    assert_valid(INSTALLER_SCHEMA, "apply", &out);

    // Failures: drift (7), refused (4), verification (3).
    std::fs::write(root.join("usr/local/bin/runc"), "changed\n").unwrap();
    let out = ib(common("status"));
    out.code(7);
    let doc = assert_valid(INSTALLER_SCHEMA, "status drift", &out);
    assert_eq!(doc["result"], "drift");
    let out = ib(with(common("install"), &[b, CIDR.as_ref()]));
    out.code(4);
    let doc = assert_valid(INSTALLER_SCHEMA, "refused", &out);
    assert_eq!(doc["result"], "refused");
    let mut raw = std::fs::read(&bundle).unwrap();
    let mid = raw.len() / 2;
    raw[mid] ^= 1;
    let flipped = f.path("flipped.tar.zst");
    std::fs::write(&flipped, raw).unwrap();
    let out = ib(with(common("verify"), &[flipped.as_os_str()]));
    out.code(3);
    let doc = assert_valid(INSTALLER_SCHEMA, "verification failed", &out);
    assert_eq!(doc["result"], "verification-failed");
}

#[test]
fn bundler_json_outputs_are_valid_against_their_schemas() {
    let f = Fixture::new();
    let spec = f.write_spec("spec.json", 1, &[]);
    let bundle = f.path("w.tar.zst");
    let out = run(
        &bundler(),
        [
            "build".as_ref(),
            spec.as_os_str(),
            "--key".as_ref(),
            f.keys.secret.as_os_str(),
            "--cache".as_ref(),
            f.path("cache").as_os_str(),
            "-o".as_ref(),
            bundle.as_os_str(),
            "--json".as_ref(),
        ],
        &[],
    );
    out.code(0);
    assert_valid("builder/schema/build.schema.json", "bundler build", &out);
    let out = run(
        &bundler(),
        [
            "verify".as_ref(),
            bundle.as_os_str(),
            "--key".as_ref(),
            f.keys.public.as_os_str(),
            "--json".as_ref(),
        ],
        &[],
    );
    out.code(0);
    assert_valid("builder/schema/verify.schema.json", "bundler verify", &out);
    for keyed in [true, false] {
        let mut args: Vec<&std::ffi::OsStr> =
            vec!["inspect".as_ref(), bundle.as_os_str(), "--json".as_ref()];
        if keyed {
            args.extend(["--key".as_ref(), f.keys.public.as_os_str()]);
        }
        let out = run(&bundler(), args, &[]);
        out.code(0);
        let doc = assert_valid(
            "bundle-spec/schema/manifest.schema.json",
            "bundler inspect",
            &out,
        );
        assert_eq!(doc, kit::manifest_json(&kit::read_entries(&bundle)));
    }
    // A differential bundle: its build summary and its manifest (`base`).
    let s2 = f.write_spec(
        "spec-2.json",
        2,
        &[serde_json::json!({"kind": "directory", "paths": ["/var/lib/two"], "mode": "0755"})],
    );
    let diff = f.path("w2.tar.zst");
    let out = run(
        &bundler(),
        [
            "build".as_ref(),
            s2.as_os_str(),
            "--key".as_ref(),
            f.keys.secret.as_os_str(),
            "--cache".as_ref(),
            f.path("cache").as_os_str(),
            "--base".as_ref(),
            bundle.as_os_str(),
            "-o".as_ref(),
            diff.as_os_str(),
            "--full-output".as_ref(),
            f.path("w2-full.tar.zst").as_os_str(),
            "--json".as_ref(),
        ],
        &[],
    );
    out.code(0);
    let doc = assert_valid(
        "builder/schema/build.schema.json",
        "bundler build --base",
        &out,
    );
    assert_eq!(doc["base"]["omitted"].as_array().unwrap().len(), 4, "{doc}");
    let out = run(
        &bundler(),
        ["inspect".as_ref(), diff.as_os_str(), "--json".as_ref()],
        &[],
    );
    out.code(0);
    let doc = assert_valid(
        "bundle-spec/schema/manifest.schema.json",
        "bundler inspect (differential)",
        &out,
    );
    assert!(
        doc["base"]["omitted"]["demo-motd"]["package"]["files"].is_array(),
        "{doc}"
    );
}
