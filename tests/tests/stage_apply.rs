//! `install-bundle stage`, `apply`, `unstage` and `status --json`, run as a
//! subprocess against real bundles: staging verifies, preflights and plans,
//! keeps the verified bundle under the state directory and changes nothing
//! else; `apply` verifies the staged copy again and preflights against the
//! host as it is then.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;

use bundle_tests::cli::{Output, installer, run};
use bundle_tests::fixture::Fixture;
use bundle_tests::tree::{diff_listings, tree_listing};
use serde_json::Value;

const CIDR: &str = "--set=POD_CIDR=172.16.1.0/24";
const STAGED: &str = "var/lib/install-bundle/staged/k8s-worker";

fn cmd(command: &str, root: &Path, key: &Path, args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut all: Vec<OsString> = vec![command.into()];
    all.extend(args.iter().map(|a| a.as_ref().to_owned()));
    all.extend([
        "--root".into(),
        root.into(),
        "--trusted-key".into(),
        key.into(),
    ]);
    run(&installer(), all, &[])
}

fn json(out: &Output) -> Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}"))
}

/// The root's tree without the lock file and the state directory's staged copies.
fn outside_state(root: &Path) -> BTreeMap<String, String> {
    tree_listing(root)
        .into_iter()
        .filter(|(k, _)| !k.starts_with("var/lib/install-bundle"))
        .collect()
}

#[test]
fn stage_changes_nothing_but_the_staged_copy_then_apply_installs_it_and_drops_the_copy() {
    let f = Fixture::new();
    let bundle = f.bundle();
    let root = f.root("root");
    let key = &f.keys.public;
    let before = outside_state(&root);
    cmd("stage", &root, key, &[&bundle, &CIDR])
        .code(0)
        .stdout_has("[1/5] verify & stage")
        .stdout_has("[2/5] preflight")
        .stdout_has("[3/5] plan")
        .stdout_has("staged: k8s-worker 1.21.0-1 (serial 1)")
        .stdout_has("install it with: install-bundle apply k8s-worker")
        .stderr_empty();
    assert!(
        diff_listings(&before, &outside_state(&root)).is_empty(),
        "stage changed the root outside the state directory"
    );
    // The verified bundle is kept: manifest, signature, values, every artifact.
    let staged = root.join(STAGED);
    for f in [
        "BUNDLE.json",
        "BUNDLE.json.minisig",
        "values.json",
        "staged.json",
    ] {
        assert!(staged.join(f).is_file(), "{f} not staged");
    }
    for a in ["runc", "crictl", "containerd", "demo-motd"] {
        assert!(
            staged.join("artifacts").join(a).is_file(),
            "artifact {a} not staged"
        );
    }
    // status lists it (and nothing is installed yet).
    let st = cmd("status", &root, key, &[&"--json"]);
    st.code(0);
    let doc = json(&st);
    assert_eq!(doc["bundles"][0]["name"], "k8s-worker", "{doc:#}");
    assert!(doc["bundles"][0]["receipt"].is_null(), "{doc:#}");
    assert_eq!(doc["bundles"][0]["staged"]["serial"], 1, "{doc:#}");
    assert_eq!(
        doc["bundles"][0]["staged"]["variables"]["POD_CIDR"],
        "172.16.1.0/24"
    );
    cmd("status", &root, key, &[])
        .code(0)
        .stdout_has("k8s-worker: not installed")
        .stdout_has("staged 1.21.0-1 (serial 1)");

    // apply: no bundle file needed.
    std::fs::remove_file(&bundle).unwrap();
    let out = cmd("apply", &root, key, &[&"k8s-worker", &"--json"]);
    out.code(0);
    let doc = json(&out);
    assert_eq!(doc["result"], "installed", "{doc:#}");
    assert_eq!(doc["receipt"]["variables"]["POD_CIDR"], "172.16.1.0/24");
    assert!(doc["changed"].as_u64().unwrap() > 0);
    assert_eq!(
        std::fs::read_to_string(root.join("etc/cni/net.d/10-bridge.conf")).unwrap(),
        "{ \"subnet\": \"172.16.1.0/24\", \"dns\": \"10.32.0.10\" }\n"
    );
    assert!(!staged.exists(), "the staged copy was kept after apply");
    // Nothing staged any more.
    cmd("apply", &root, key, &[&"k8s-worker"])
        .code(1)
        .stderr_has("nothing is staged for k8s-worker");
}

#[test]
fn staging_what_is_installed_exactly_so_stages_nothing_and_says_up_to_date() {
    let f = Fixture::new();
    let bundle = f.bundle();
    let root = f.root("root");
    let key = &f.keys.public;
    cmd("install", &root, key, &[&bundle, &CIDR]).code(0);
    let out = cmd("stage", &root, key, &[&bundle, &CIDR, &"--json"]);
    out.code(0);
    assert_eq!(json(&out)["result"], "up-to-date", "{out}");
    assert!(!root.join(STAGED).exists());
    // Other values are a change: staged.
    let out = cmd(
        "stage",
        &root,
        key,
        &[&bundle, &"--set=POD_CIDR=10.9.0.0/24", &"--json"],
    );
    out.code(0);
    assert_eq!(json(&out)["result"], "staged", "{out}");
    // Staging the same again: already staged, nothing rewritten.
    let out = cmd(
        "stage",
        &root,
        key,
        &[&bundle, &"--set=POD_CIDR=10.9.0.0/24"],
    );
    out.code(0)
        .stdout_has("already staged: k8s-worker 1.21.0-1 (serial 1)");
}

#[test]
fn a_refused_stage_exits_4_and_keeps_nothing() {
    let f = Fixture::new();
    let bundle = f.bundle();
    let root = f.root("root");
    let before = tree_listing(&root);
    // POD_CIDR is required.
    cmd("stage", &root, &f.keys.public, &[&bundle])
        .code(4)
        .stderr_has("POD_CIDR");
    assert!(diff_listings(&before, &tree_listing(&root)).is_empty());
    // A directory where the bundle puts a file: preflight refuses.
    std::fs::create_dir_all(root.join("etc/cni/net.d/10-bridge.conf/keep")).unwrap();
    let before = tree_listing(&root);
    cmd("stage", &root, &f.keys.public, &[&bundle, &CIDR])
        .code(4)
        .stderr_has("preflight failed");
    assert!(diff_listings(&before, &tree_listing(&root)).is_empty());
}

#[test]
fn a_newer_serial_replaces_the_staged_one_and_an_older_one_is_refused() {
    let f = Fixture::new();
    let root = f.root("root");
    let key = &f.keys.public;
    let s1 = f.write_spec("s1.json", 1, &[]);
    let b1 = f.build(&s1, "b1.tar.zst");
    let s2 = f.write_spec("s2.json", 2, &[]);
    let b2 = f.build(&s2, "b2.tar.zst");
    cmd("stage", &root, key, &[&b1, &CIDR]).code(0);
    cmd("stage", &root, key, &[&b2, &CIDR])
        .code(0)
        .stdout_has("replaced the staged 1.21.0-1 (serial 1)")
        .stdout_has("staged: k8s-worker 1.21.0-2 (serial 2)");
    let info: Value =
        serde_json::from_slice(&std::fs::read(root.join(STAGED).join("staged.json")).unwrap())
            .unwrap();
    assert_eq!(info["serial"], 2);
    cmd("stage", &root, key, &[&b1, &CIDR])
        .code(4)
        .stderr_has("k8s-worker 1.21.0-2 (serial 2) is staged")
        .stderr_has("install-bundle unstage k8s-worker");
    // unstage drops it; status no longer lists it.
    cmd("unstage", &root, key, &[&"k8s-worker"])
        .code(0)
        .stdout_has("unstaged k8s-worker 1.21.0-2 (serial 2)");
    assert!(!root.join(STAGED).exists());
    cmd("unstage", &root, key, &[&"k8s-worker"])
        .code(0)
        .stdout_has("nothing is staged for k8s-worker");
    cmd("status", &root, key, &[])
        .code(0)
        .stdout_has("no bundle is installed or staged");
}

#[test]
fn apply_refuses_a_tampered_staged_artifact_with_exit_3_and_changes_nothing() {
    let f = Fixture::new();
    let bundle = f.bundle();
    let root = f.root("root");
    let key = &f.keys.public;
    cmd("stage", &root, key, &[&bundle, &CIDR]).code(0);
    let runc = root.join(STAGED).join("artifacts/runc");
    let mut bytes = std::fs::read(&runc).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&runc, bytes).unwrap();
    let before = tree_listing(&root);
    cmd("apply", &root, key, &[&"k8s-worker"])
        .code(3)
        .stderr_has("artifact runc: sha256 mismatch")
        .stderr_has("install-bundle unstage k8s-worker and stage the bundle again");
    assert!(diff_listings(&before, &tree_listing(&root)).is_empty());
}

#[test]
fn apply_reruns_preflight_against_the_host_as_it_is_now() {
    let f = Fixture::new();
    let bundle = f.bundle();
    let root = f.root("root");
    let key = &f.keys.public;
    cmd("stage", &root, key, &[&bundle, &CIDR]).code(0);
    // Since staging, a directory appeared where the bundle puts a file.
    std::fs::create_dir_all(root.join("etc/cni/net.d/10-bridge.conf/keep")).unwrap();
    let before = tree_listing(&root);
    cmd("apply", &root, key, &[&"k8s-worker"])
        .code(4)
        .stderr_has("preflight failed");
    assert!(diff_listings(&before, &tree_listing(&root)).is_empty());
    // Still staged for when the host is fixed.
    assert!(root.join(STAGED).join("staged.json").is_file());
    std::fs::remove_dir_all(root.join("etc/cni/net.d/10-bridge.conf")).unwrap();
    cmd("apply", &root, key, &[&"k8s-worker"]).code(0);
}

#[test]
fn status_json_reports_drift_per_path_and_exits_7() {
    let f = Fixture::new();
    let bundle = f.bundle();
    let root = f.root("root");
    let key = &f.keys.public;
    cmd("install", &root, key, &[&bundle, &CIDR]).code(0);
    let out = cmd("status", &root, key, &[&"k8s-worker", &"--json"]);
    out.code(0);
    assert_eq!(json(&out)["result"], "status");
    assert_eq!(json(&out)["bundles"][0]["drifted"], false);
    std::fs::write(root.join("etc/cni/net.d/10-bridge.conf"), "edited\n").unwrap();
    std::fs::remove_file(root.join("usr/local/bin/crictl")).unwrap();
    let out = cmd("status", &root, key, &[&"--json"]);
    out.code(7)
        .stderr_has("2 item(s) differ from what was installed");
    let doc = json(&out);
    assert_eq!(doc["result"], "drift", "{doc:#}");
    assert_eq!(doc["exit_code"], 7);
    let b = &doc["bundles"][0];
    assert_eq!(b["drifted"], true);
    let mut drift: Vec<(String, String)> = b["drift"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            assert_eq!(d["kind"], "path", "{d}");
            (
                d["path"].as_str().unwrap().to_owned(),
                d["problem"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    drift.sort();
    assert_eq!(drift[0].0, "/etc/cni/net.d/10-bridge.conf", "{drift:?}");
    assert_eq!(drift[1].0, "/usr/local/bin/crictl", "{drift:?}");
    // Packages are checked against the root's dpkg database too.
    let status = root.join("var/lib/dpkg/status");
    let text = std::fs::read_to_string(&status).unwrap();
    std::fs::write(&status, text.replace("Version: 1.0-1", "Version: 0.9-1")).unwrap();
    let out = cmd("status", &root, key, &[&"k8s-worker", &"--json"]);
    out.code(7);
    let doc = json(&out);
    assert!(
        doc["bundles"][0]["drift"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["kind"] == "package"
                && d["package"] == "demo-motd"
                && d["problem"] == "version 0.9-1 installed"),
        "{doc:#}"
    );
}

#[test]
fn stage_json_with_diff_shows_each_changed_file_before_and_after() {
    let f = Fixture::new();
    let bundle = f.bundle();
    let root = f.root("root");
    let out = cmd(
        "stage",
        &root,
        &f.keys.public,
        &[&bundle, &CIDR, &"--json", &"--diff", &"--dry-run"],
    );
    out.code(0);
    let doc = json(&out);
    assert_eq!(doc["result"], "would-stage", "{doc:#}");
    assert!(!root.join(STAGED).exists(), "--dry-run staged");
    let diff = doc["diff"].as_array().expect("diff");
    let conf = diff
        .iter()
        .find(|d| d["path"] == "/etc/cni/net.d/10-bridge.conf")
        .unwrap_or_else(|| panic!("{doc:#}"));
    assert_eq!(conf["change"], "create");
    assert!(conf["before"].is_null());
    assert_eq!(
        conf["after"]["text"],
        "{ \"subnet\": \"172.16.1.0/24\", \"dns\": \"10.32.0.10\" }\n"
    );
    let runc = diff
        .iter()
        .find(|d| d["path"] == "/usr/local/bin/runc")
        .unwrap_or_else(|| panic!("{doc:#}"));
    assert_eq!(runc["change"], "update");
    assert_eq!(runc["before"]["text"], "old runc\n");
    assert!(
        runc["after"]["text"].is_null(),
        "binary content is not shown"
    );
}

#[test]
fn a_staged_bundle_keeps_its_sbom_and_apply_puts_it_beside_the_receipt() {
    let f = Fixture::new();
    let bundle = f.bundle();
    let sbom = bundle_tests::kit::read_entries(&bundle)[2].data.clone();
    let root = f.root("root");
    let key = &f.keys.public;
    cmd("stage", &root, key, &[&bundle, &CIDR]).code(0);
    assert_eq!(
        std::fs::read(root.join(STAGED).join("SBOM.cdx.json")).unwrap(),
        sbom
    );
    std::fs::remove_file(&bundle).unwrap();
    cmd("apply", &root, key, &[&"k8s-worker"]).code(0);
    assert_eq!(
        std::fs::read(root.join("var/lib/install-bundle/sbom/k8s-worker.cdx.json")).unwrap(),
        sbom
    );
}

#[test]
fn apply_refuses_a_staged_sbom_changed_behind_its_back() {
    let f = Fixture::new();
    let bundle = f.bundle();
    let root = f.root("root");
    let key = &f.keys.public;
    cmd("stage", &root, key, &[&bundle, &CIDR]).code(0);
    let path = root.join(STAGED).join("SBOM.cdx.json");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replacen("demo-motd", "demo-motX", 1)).unwrap();
    let before = tree_listing(&root);
    cmd("apply", &root, key, &[&"k8s-worker"])
        .code(3)
        .stderr_has("SBOM.cdx.json: does not match the manifest");
    assert!(diff_listings(&before, &tree_listing(&root)).is_empty());
}
