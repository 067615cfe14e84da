//! `install-bundle` end to end, run as a subprocess (the static binary when
//! `make static` built it) against real bundles made by `bundler`.

use std::ffi::OsString;
use std::path::Path;

use bundle_tests::cli::{installer, keygen, run};
use bundle_tests::fixture::{Fixture, INSTALLED_FILES, runc_bytes};
use bundle_tests::kit::{self, install};
use bundle_tests::tree::{diff_listings, tree_hash, tree_listing};

const CIDR: &str = "--set=POD_CIDR=172.16.1.0/24";

/// The tree of a root without the receipt's timestamp and our lock file.
fn listing(root: &Path) -> std::collections::BTreeMap<String, String> {
    let mut l = tree_listing(root);
    l.remove("var/lib/install-bundle/lock");
    if let Some(v) = l.get_mut("var/lib/install-bundle/k8s-worker.json") {
        *v = "receipt".into();
    }
    l
}

#[track_caller]
fn assert_same_tree(before: &std::collections::BTreeMap<String, String>, root: &Path, what: &str) {
    let after = listing(root);
    let diff = diff_listings(before, &after);
    assert!(
        diff.is_empty(),
        "{what}: the root changed:\n{}",
        diff.join("\n")
    );
}

#[test]
fn full_install_with_every_step_kind_then_rerun_changes_nothing() {
    let f = Fixture::new();
    let bundle = f.bundle();
    let root = f.root("root");
    let out = install(&root, &bundle, &f.keys.public, &[CIDR], &[]);
    out.code(0)
        .stdout_has("[1/5] verify & stage")
        .stdout_has("[2/5] preflight")
        .stdout_has("[3/5] plan")
        .stdout_has("[4/5] apply")
        .stdout_has("[5/5] receipt")
        .stdout_has("dpkg: install demo-motd 1.0-1")
        .stdout_has("update file /usr/local/bin/runc")
        .stdout_has("skip sysctl --system (not run under --root")
        .stdout_has("installed")
        .stderr_empty();
    for rel in INSTALLED_FILES {
        let p = root.join(rel);
        assert!(
            std::fs::symlink_metadata(&p).is_ok()
                || root
                    .join("usr")
                    .join(rel.trim_start_matches("bin/"))
                    .exists(),
            "{rel} missing"
        );
    }
    // Bytes and modes.
    assert_eq!(
        std::fs::read(root.join("usr/local/bin/runc")).unwrap(),
        runc_bytes()
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(root.join("usr/local/bin/runc"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o755
    );
    // /bin -> usr/bin inside the root: containerd lands in usr/bin.
    assert!(root.join("usr/bin/containerd").is_file());
    assert!(
        !root.join("usr/local/bin/LICENSE").exists(),
        "include must select only crictl"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("etc/cni/net.d/10-bridge.conf")).unwrap(),
        "{ \"subnet\": \"172.16.1.0/24\", \"dns\": \"10.32.0.10\" }\n"
    );
    assert_eq!(
        std::fs::read_link(
            root.join("etc/systemd/system/multi-user.target.wants/containerd.service")
        )
        .unwrap(),
        Path::new("/etc/systemd/system/containerd.service")
    );
    assert_eq!(
        std::fs::read_to_string(root.join("etc/modules-load.d/overlay.conf")).unwrap(),
        "overlay\n"
    );
    assert!(
        std::fs::read_to_string(root.join("etc/fstab"))
            .unwrap()
            .contains("# /swap.img none swap")
    );
    assert_eq!(
        std::fs::read_to_string(root.join("usr/share/demo-motd/motd")).unwrap(),
        "hello\n"
    );
    let status = std::fs::read_to_string(root.join("var/lib/dpkg/status")).unwrap();
    assert!(
        status.contains("Package: demo-motd") && status.contains("Status: install ok installed"),
        "{status}"
    );
    let receipt: serde_json::Value = serde_json::from_slice(
        &std::fs::read(root.join("var/lib/install-bundle/k8s-worker.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(receipt["serial"], 1);
    assert_eq!(receipt["variables"]["POD_CIDR"], "172.16.1.0/24");
    assert!(
        receipt["paths"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["path"] == "/usr/local/bin/runc")
    );
    assert_eq!(receipt["packages"][0]["name"], "demo-motd");
    assert!(
        !root.join("var/lib/install-bundle/staging").exists(),
        "staging left behind"
    );
    assert!(
        !root.join("var/lib/install-bundle/journal").exists(),
        "journal left behind"
    );

    // Again: nothing changes, and it says so.
    let before = listing(&root);
    let receipt_bytes = std::fs::read(root.join("var/lib/install-bundle/k8s-worker.json")).unwrap();
    install(&root, &bundle, &f.keys.public, &[CIDR], &[])
        .code(0)
        .stdout_has("0 changed")
        .stdout_has("already installed: demo-motd 1.0-1");
    assert_same_tree(&before, &root, "re-run");
    assert_eq!(
        std::fs::read(root.join("var/lib/install-bundle/k8s-worker.json")).unwrap(),
        receipt_bytes
    );

    // status reads the receipt and checks every file.
    let out = run(
        &installer(),
        [
            "status".as_ref(),
            "k8s-worker".as_ref(),
            "--root".as_ref(),
            root.as_os_str(),
        ],
        &[],
    );
    out.code(0)
        .stdout_has("k8s-worker 1.21.0-1 (serial 1)")
        .stdout_has("/usr/local/bin/runc ok");
    std::fs::write(root.join("usr/local/bin/crictl"), "tampered").unwrap();
    run(
        &installer(),
        [
            "status".as_ref(),
            "k8s-worker".as_ref(),
            "--root".as_ref(),
            root.as_os_str(),
        ],
        &[],
    )
    .code(7)
    .stdout_has("/usr/local/bin/crictl content modified")
    .stderr_has("1 item(s) differ from what was installed")
    .stderr_has("/usr/local/bin/crictl: content modified");
}

#[test]
fn changed_variable_changes_exactly_the_templated_files() {
    let f = Fixture::new();
    let bundle = f.bundle();
    let root = f.root("root");
    install(&root, &bundle, &f.keys.public, &[CIDR], &[]).code(0);
    let before = listing(&root);
    let out = install(
        &root,
        &bundle,
        &f.keys.public,
        &["--set", "POD_CIDR=172.16.9.0/24"],
        &[],
    );
    out.code(0).stdout_has("1 changed");
    let after = listing(&root);
    let diff = diff_listings(&before, &after);
    assert_eq!(diff.len(), 1, "{}", diff.join("\n"));
    assert!(diff[0].contains("etc/cni/net.d/10-bridge.conf"), "{diff:?}");
}

#[test]
fn dry_run_and_plan_change_nothing() {
    let f = Fixture::new();
    let bundle = f.bundle();
    let root = f.root("root");
    let before = listing(&root);
    install(&root, &bundle, &f.keys.public, &[CIDR, "--dry-run"], &[])
        .code(0)
        .stdout_has("create file /etc/cni/net.d/10-bridge.conf")
        .stdout_has("dry run:");
    assert_same_tree(&before, &root, "--dry-run");
    let mut args: Vec<OsString> = vec![
        "plan".into(),
        bundle.clone().into(),
        "--root".into(),
        root.clone().into(),
    ];
    args.extend([
        "--trusted-key".into(),
        f.keys.public.clone().into(),
        CIDR.into(),
        "--json".into(),
    ]);
    let out = run(&installer(), args, &[]);
    out.code(0);
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(doc["result"], "planned");
    assert!(doc["changed"].as_u64().unwrap() > 5);
    assert_same_tree(&before, &root, "plan");
}

#[test]
fn failing_step_rolls_back_every_earlier_change_byte_for_byte() {
    let f = Fixture::new();
    let bundle = f.bundle();
    let root = f.root("root");
    let before = listing(&root);
    // Step 8 (the systemd unit) fails: steps 1-7 wrote files, replaced runc, edited fstab.
    let out = install(
        &root,
        &bundle,
        &f.keys.public,
        &[CIDR],
        &[("INSTALL_BUNDLE_TEST_FAIL_AT", "8")],
    );
    out.code(5)
        .stderr_has("apply failed and was rolled back: step 8 (systemd-unit): injected failure")
        .stderr_has("the host is as it was before this run");
    assert_same_tree(&before, &root, "rollback");
    assert_eq!(
        std::fs::read_to_string(root.join("usr/local/bin/runc")).unwrap(),
        "old runc\n"
    );
}

#[test]
fn failure_after_dpkg_reports_what_cannot_be_undone() {
    let f = Fixture::new();
    let bundle = f.bundle();
    let root = f.root("root");
    let out = install(
        &root,
        &bundle,
        &f.keys.public,
        &[CIDR],
        &[("INSTALL_BUNDLE_TEST_FAIL_AT", "10")],
    );
    out.code(6)
        .stderr_has("not undone (cannot be): dpkg installed demo-motd 1.0-1");
    // Every file change was still undone.
    assert_eq!(
        std::fs::read_to_string(root.join("usr/local/bin/runc")).unwrap(),
        "old runc\n"
    );
    assert!(!root.join("etc/cni/net.d/10-bridge.conf").exists());
}

#[test]
fn killed_at_every_journal_point_then_recovered_leaves_the_root_as_before() {
    let f = Fixture::new();
    let bundle = f.bundle();
    // The full install's tree, for the "re-run converges" half.
    let clean = f.root("clean");
    install(&clean, &bundle, &f.keys.public, &[CIDR], &[]).code(0);
    let installed = listing(&clean);
    let mut point = 1;
    loop {
        let root = f.root(&format!("crash-{point}"));
        let before = listing(&root);
        let out = install(
            &root,
            &bundle,
            &f.keys.public,
            &[CIDR],
            &[("INSTALL_BUNDLE_TEST_CRASH_AT", &point.to_string())],
        );
        if out.code == 0 {
            break; // past the last journal point
        }
        assert_eq!(out.code, -1, "point {point}: expected SIGKILL\n{out}");
        // Every target path holds its old or its new content: recover restores the old.
        let rec = run(
            &installer(),
            ["recover".as_ref(), "--root".as_ref(), root.as_os_str()],
            &[],
        );
        if rec.stdout.contains("finished cleaning up") {
            rec.code(0);
            // Killed after the commit record: the install stands, only its clean-up was left.
            let diff = diff_listings(&installed, &listing(&root));
            assert!(
                diff.is_empty(),
                "point {point}, after commit: {}",
                diff.join("\n")
            );
            std::fs::remove_dir_all(&root).unwrap();
            point += 1;
            continue;
        }
        // dpkg's own database changes are not ours to undo (reported instead).
        let mut after_listing = listing(&root);
        let dpkg_ran = after_listing.contains_key("usr/share/demo-motd/motd");
        // Recover exits like a failed install: 5 when everything was undone,
        // 6 when dpkg ran (or was running: it may have completed).
        if rec.code == 6 {
            rec.stderr_has("not undone (cannot be): dpkg installed demo-motd")
                .stderr_has("could not be fully rolled back");
        } else {
            rec.code(5).stderr_has("was rolled back");
            assert!(
                !dpkg_ran,
                "point {point}: dpkg ran, yet recover exits 5\n{rec}"
            );
        }
        if dpkg_ran {
            after_listing
                .retain(|k, _| !k.starts_with("var/lib/dpkg") && !k.starts_with("usr/share"));
            let mut b = before.clone();
            b.retain(|k, _| !k.starts_with("var/lib/dpkg"));
            let diff = diff_listings(&b, &after_listing);
            assert!(diff.is_empty(), "point {point}: {}", diff.join("\n"));
        } else {
            assert_same_tree(
                &before,
                &root,
                &format!("crash at point {point}, recovered"),
            );
        }
        // And a re-run converges to the full install.
        let root2 = f.root(&format!("crash-rerun-{point}"));
        install(
            &root2,
            &bundle,
            &f.keys.public,
            &[CIDR],
            &[("INSTALL_BUNDLE_TEST_CRASH_AT", &point.to_string())],
        );
        install(&root2, &bundle, &f.keys.public, &[CIDR], &[]).code(0);
        let diff = diff_listings(&installed, &listing(&root2));
        assert!(
            diff.is_empty(),
            "point {point}, re-run: {}",
            diff.join("\n")
        );
        std::fs::remove_dir_all(&root).unwrap();
        std::fs::remove_dir_all(&root2).unwrap();
        point += 1;
        assert!(point < 500, "the install never completed");
    }
    assert!(
        point > 20,
        "only {point} journal points: is the crash hook working?"
    );
}

#[test]
fn killed_during_staging_leaves_the_root_as_before() {
    let f = Fixture::new();
    let bundle = f.bundle();
    let root = f.root("root");
    let before = listing(&root);
    let out = install(
        &root,
        &bundle,
        &f.keys.public,
        &[CIDR],
        &[("INSTALL_BUNDLE_TEST_CRASH_AT", "staging")],
    );
    assert_eq!(out.code, -1, "{out}");
    run(
        &installer(),
        ["recover".as_ref(), "--root".as_ref(), root.as_os_str()],
        &[],
    )
    .code(0);
    assert_same_tree(&before, &root, "crash during staging");
}

fn refused(
    f: &Fixture,
    root: &Path,
    bundle: &Path,
    key: &Path,
    extra: &[&str],
    code: i32,
    message: &str,
) {
    let before = tree_hash(root);
    let listing_before = tree_listing(root);
    let out = install(root, bundle, key, extra, &[]);
    out.code(code)
        .stderr_has(message)
        .stderr_has("nothing was changed");
    assert!(
        tree_hash(root) == before,
        "root changed after refusal ({message}):\n{}",
        diff_listings(&listing_before, &tree_listing(root)).join("\n")
    );
    let _ = f;
}

#[test]
fn bad_signature_is_refused_with_exit_3() {
    let f = Fixture::new();
    let bundle = f.bundle();
    let root = f.root("root");
    let mut entries = kit::read_entries(&bundle);
    entries[0].data[20] ^= 0x01;
    let bad = f.path("bad.tar.zst");
    kit::write_entries(&entries, &bad);
    refused(
        &f,
        &root,
        &bad,
        &f.keys.public,
        &[CIDR],
        3,
        "does not match the signed data",
    );
}

#[test]
fn untrusted_key_is_refused_with_exit_3() {
    let f = Fixture::new();
    let bundle = f.bundle();
    let root = f.root("root");
    let other = keygen(f.dir.path(), "other");
    refused(
        &f,
        &root,
        &bundle,
        &other.public,
        &[CIDR],
        3,
        "which is not trusted",
    );
    // Without any trusted key at all.
    let before = tree_hash(&root);
    let out = run(
        &installer(),
        [
            bundle.as_os_str(),
            "--root".as_ref(),
            root.as_os_str(),
            CIDR.as_ref(),
        ],
        &[],
    );
    out.code(3).stderr_has("no trusted public key");
    assert_eq!(tree_hash(&root), before);
}

#[test]
fn artifact_byte_flip_is_refused_with_exit_3() {
    let f = Fixture::new();
    let bundle = f.bundle();
    let root = f.root("root");
    let mut entries = kit::read_entries(&bundle);
    let last = entries.len() - 1;
    entries[last].data[0] ^= 0x80;
    let bad = f.path("bad.tar.zst");
    kit::write_entries(&entries, &bad);
    refused(
        &f,
        &root,
        &bad,
        &f.keys.public,
        &[CIDR],
        3,
        "sha256 mismatch",
    );
}

fn resigned(
    f: &Fixture,
    bundle: &Path,
    name: &str,
    edit: impl FnOnce(&mut serde_json::Value),
) -> std::path::PathBuf {
    let mut entries = kit::read_entries(bundle);
    kit::edit_manifest(&mut entries, &kit::secret_key(&f.keys.secret), edit);
    let out = f.path(name);
    kit::write_entries(&entries, &out);
    out
}

#[test]
fn expired_bundle_is_refused_with_exit_4() {
    let f = Fixture::new();
    let bundle = f.bundle();
    let root = f.root("root");
    let expired = resigned(&f, &bundle, "expired.tar.zst", |m| {
        m["expires"] = "2020-01-01T00:00:00Z".into()
    });
    refused(
        &f,
        &root,
        &expired,
        &f.keys.public,
        &[CIDR],
        4,
        "expired at 2020-01-01T00:00:00Z",
    );
}

#[test]
fn wrong_arch_is_refused_with_exit_4() {
    let f = Fixture::new();
    let bundle = f.bundle();
    let root = f.root("root");
    let arm = resigned(&f, &bundle, "arm.tar.zst", |m| {
        m["target"]["arch"] = "arm64".into()
    });
    refused(
        &f,
        &root,
        &arm,
        &f.keys.public,
        &[CIDR],
        4,
        "bundle is for linux/arm64",
    );
    let deb = resigned(&f, &bundle, "osr.tar.zst", |m| {
        m["target"]["os_release"] = serde_json::json!({"ID": "ubuntu"});
    });
    refused(
        &f,
        &root,
        &deb,
        &f.keys.public,
        &[CIDR],
        4,
        "os-release ID=\"ubuntu\", the root has ID=\"debian\"",
    );
}

#[test]
fn downgrade_is_refused_with_exit_4_unless_allowed() {
    let f = Fixture::new();
    let v1 = f.bundle();
    let spec2 = f.write_spec("spec2.json", 2, &[]);
    let v2 = f.build(&spec2, "worker-2.tar.zst");
    let root = f.root("root");
    install(&root, &v2, &f.keys.public, &[CIDR], &[]).code(0);
    refused(
        &f,
        &root,
        &v1,
        &f.keys.public,
        &[CIDR],
        4,
        "downgrade refused",
    );
    install(
        &root,
        &v1,
        &f.keys.public,
        &[CIDR, "--allow-downgrade"],
        &[],
    )
    .code(0);
}

#[test]
fn missing_and_invalid_variables_are_all_listed_with_exit_4() {
    let f = Fixture::new();
    let bundle = f.bundle();
    let root = f.root("root");
    refused(
        &f,
        &root,
        &bundle,
        &f.keys.public,
        &[],
        4,
        "variable POD_CIDR (this node's pod subnet) is required",
    );
    let before = tree_hash(&root);
    let out = install(
        &root,
        &bundle,
        &f.keys.public,
        &["--set", "POD_CIDR=nope", "--set", "NODE=1"],
        &[],
    );
    out.code(4)
        .stderr_has("\"nope\" does not match the pattern")
        .stderr_has("no variable NODE in this bundle");
    assert_eq!(tree_hash(&root), before);
}

#[test]
fn hostile_member_in_extract_artifact_is_refused_with_exit_4() {
    let f = Fixture::new();
    // A pinned (so "valid") upstream tarball with a ../ member.
    let mut h = tar::Header::new_gnu();
    h.set_size(4);
    h.set_mode(0o644);
    let mut raw = kit::RawEntry {
        header: [0; 512],
        data: b"evil".to_vec(),
    };
    raw.header.copy_from_slice(h.as_bytes());
    raw.set_name("../../etc/evil");
    let tar = kit::tar_bytes(&[raw]);
    let hostile = zstd::encode_all(&tar[..], 3).unwrap();
    // bundler refuses to pin (or build) it; another tool could still sign
    // such a bundle: the good one with the tarball swapped in, re-signed.
    let spec = f.write_spec("spec.json", 1, &[]);
    let good = f.build(&spec, "good.tar.zst");
    let bundle = f.path("hostile.tar.zst");
    kit::replace_artifact(&good, &bundle, "crictl", &hostile, &f.keys.secret);
    let root = f.root("root");
    refused(
        &f,
        &root,
        &bundle,
        &f.keys.public,
        &[CIDR],
        4,
        "../../etc/evil",
    );
    assert!(!f.path("etc/evil").exists());
}

#[test]
fn unmet_deb_dependency_is_refused_before_dpkg_runs() {
    let f = Fixture::new();
    let deb = bundle_tests::fixture::make_deb(
        &f.path("files"),
        "needy",
        "1.0",
        Some("libdoesnotexist1 (>= 2.0)"),
        ("usr/share/needy/x", "x"),
    );
    std::fs::rename(deb, f.path("files/demo-motd.deb")).unwrap();
    let spec = f.write_spec("spec.json", 1, &[]);
    let bundle = f.build(&spec, "needy.tar.zst");
    let root = f.root("root");
    refused(
        &f,
        &root,
        &bundle,
        &f.keys.public,
        &[CIDR],
        4,
        "needy depends on libdoesnotexist1 (>= 2.0)",
    );
}

#[test]
fn bundle_from_stdin_installs() {
    let f = Fixture::new();
    let bundle = f.bundle();
    let root = f.root("root");
    let out = std::process::Command::new(installer())
        .args(["-", "--root"])
        .arg(&root)
        .arg("--trusted-key")
        .arg(&f.keys.public)
        .arg(CIDR)
        .stdin(std::fs::File::open(&bundle).unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(root.join("usr/local/bin/crictl").is_file());
}

#[test]
fn second_installer_is_refused_while_one_holds_the_lock() {
    let f = Fixture::new();
    let bundle = f.bundle();
    let root = f.root("root");
    std::fs::create_dir_all(root.join("var/lib/install-bundle")).unwrap();
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(root.join("var/lib/install-bundle/lock"))
        .unwrap();
    lock.lock().unwrap();
    let before = tree_hash(&root);
    install(&root, &bundle, &f.keys.public, &[CIDR], &[])
        .code(4)
        .stderr_has("another install-bundle is running");
    assert_eq!(tree_hash(&root), before);
    drop(lock);
    install(&root, &bundle, &f.keys.public, &[CIDR], &[]).code(0);
}

#[test]
fn json_output_is_one_document() {
    let f = Fixture::new();
    let bundle = f.bundle();
    let root = f.root("root");
    let out = install(&root, &bundle, &f.keys.public, &[CIDR, "--json"], &[]);
    out.code(0);
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).expect("one JSON document");
    assert_eq!(doc["result"], "installed");
    assert_eq!(doc["name"], "k8s-worker");
    let out = install(
        &root,
        &f.path("missing.tar.zst"),
        &f.keys.public,
        &["--json"],
        &[],
    );
    out.code(1);
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).expect("one JSON document");
    assert_eq!(doc["result"], "error");
}

#[test]
fn verify_subcommand_checks_everything_and_changes_nothing() {
    let f = Fixture::new();
    let bundle = f.bundle();
    let out = run(
        &installer(),
        [
            "verify".as_ref(),
            bundle.as_os_str(),
            "--trusted-key".as_ref(),
            f.keys.public.as_os_str(),
        ],
        &[],
    );
    out.code(0)
        .stdout_has("OK")
        .stdout_has("signed by trusted key");
}

#[test]
fn static_installer_has_no_dynamic_dependencies_and_no_tls_stack() {
    let bin = installer();
    if !bin.ends_with("static/install-bundle") {
        eprintln!(
            "SKIP: {} is not the static build (run `make static`)",
            bin.display()
        );
        return;
    }
    let ldd = std::process::Command::new("ldd")
        .arg(&bin)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&ldd.stdout),
        String::from_utf8_lossy(&ldd.stderr)
    );
    assert!(
        text.contains("statically linked") || text.contains("not a dynamic executable"),
        "ldd reports dynamic dependencies:\n{text}"
    );
    let size = std::fs::metadata(&bin).unwrap().len();
    assert!(
        // 3.9 MB before stage/apply/status --json and shell completions; 4.4 MB with them.
        size <= 5 << 20,
        "static installer is {size} bytes, more than 5 MiB"
    );
    let tree = std::process::Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            "install-bundle",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        tree.status.success(),
        "{}",
        String::from_utf8_lossy(&tree.stderr)
    );
    let deps = String::from_utf8_lossy(&tree.stdout);
    for banned in [
        "reqwest ",
        "hyper ",
        "rustls ",
        "openssl ",
        "native-tls ",
        "h2 ",
    ] {
        assert!(
            !deps.lines().any(|l| l.starts_with(banned)),
            "install-bundle depends on {banned}"
        );
    }
}

#[test]
fn values_file_supplies_variables_and_set_overrides_it() {
    let f = Fixture::new();
    let bundle = f.bundle();
    let root = f.root("root");
    let values = f.path("values.json");
    std::fs::write(
        &values,
        r#"{"POD_CIDR": "10.9.0.0/16", "CLUSTER_DNS": "10.9.0.10"}"#,
    )
    .unwrap();
    let v = values.display().to_string();
    install(
        &root,
        &bundle,
        &f.keys.public,
        &["--values", &v, "--set", "CLUSTER_DNS=10.9.0.53"],
        &[],
    )
    .code(0);
    assert_eq!(
        std::fs::read_to_string(root.join("etc/cni/net.d/10-bridge.conf")).unwrap(),
        "{ \"subnet\": \"10.9.0.0/16\", \"dns\": \"10.9.0.53\" }\n"
    );
    std::fs::write(&values, r#"{"POD_CIDR": 7}"#).unwrap();
    let root2 = f.root("root2");
    refused(
        &f,
        &root2,
        &bundle,
        &f.keys.public,
        &["--values", &v],
        4,
        "POD_CIDR: expected a string value",
    );
}
