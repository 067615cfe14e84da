//! `debs` steps behave as apt would and never leave dpkg half-done (issue
//! 12, items 7–10; reproducers `shared/cases/11`, `12`, `13`, `L5`): real
//! packages built by `dpkg-deb`, installed by the real `dpkg --root`.

use std::path::{Path, PathBuf};
use std::process::Command;

use bundle_tests::cli::{Output, installer, run};
use bundle_tests::fixture::{Fixture, build_deb};
use bundle_tests::kit;
use bundle_tests::tree::{diff_listings, tree_listing};

/// Writes a spec installing `debs` (artifact name → file in `files/`) in one
/// `debs` step, then `extra` steps; pins and builds it.
fn bundle(
    f: &Fixture,
    name: &str,
    serial: u64,
    debs: &[&str],
    extra: &[serde_json::Value],
) -> PathBuf {
    let mut artifacts = serde_json::Map::new();
    for d in debs {
        artifacts.insert(
            (*d).to_owned(),
            serde_json::json!({ "url": format!("file:files/{d}.deb") }),
        );
    }
    let mut steps = vec![serde_json::json!({"kind": "debs", "artifacts": debs})];
    steps.extend(extra.iter().cloned());
    let spec = serde_json::json!({
        "apiVersion": "bundle/v1", "name": name, "version": format!("{serial}"), "serial": serial,
        "target": {"os": "linux", "arch": "amd64"},
        "variables": {"POD_CIDR": {"default": "10.200.1.0/24"}},
        "artifacts": artifacts, "steps": steps,
    });
    let path = kit::write_pinned_spec(f, &format!("{name}-{serial}.json"), &spec);
    f.build(&path, &format!("{name}-{serial}.tar.zst"))
}

/// `files/ARTIFACT.deb` from [`build_deb`].
#[allow(clippy::too_many_arguments)]
fn deb(
    f: &Fixture,
    artifact: &str,
    package: &str,
    version: &str,
    control: &str,
    files: &[(&str, &str)],
    conffiles: &[&str],
    postinst: Option<&str>,
) {
    let files_dir = f.path("files");
    std::fs::create_dir_all(&files_dir).unwrap();
    let built = build_deb(
        &files_dir, package, version, control, files, conffiles, postinst,
    );
    std::fs::rename(built, files_dir.join(format!("{artifact}.deb"))).unwrap();
}

fn dpkg_root(root: &Path, args: &[&str]) -> std::process::Output {
    Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .args(args)
        .output()
        .expect("dpkg")
}

fn status_of(root: &Path, package: &str) -> (String, String) {
    let out = dpkg_root(root, &["-s", package]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or("")
            .to_owned()
    };
    (field("Status"), field("Version"))
}

fn audit_clean(root: &Path) -> bool {
    let out = dpkg_root(root, &["--audit"]);
    out.status.success() && out.stdout.is_empty()
}

fn plan(root: &Path, bundle: &Path, key: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["plan".into()];
    args.extend(kit::install_args(root, bundle, key, extra));
    run(&installer(), args, &[])
}

#[test]
fn pre_depends_inside_the_bundle_are_configured_in_an_earlier_dpkg_pass() {
    let f = Fixture::new();
    deb(
        &f,
        "demo-extra",
        "demo-extra",
        "1.0",
        "Depends: demo-tool\n",
        &[],
        &[],
        None,
    );
    deb(
        &f,
        "demo-tool",
        "demo-tool",
        "1.0",
        "Pre-Depends: libdemo (>= 1.0)\n",
        &[],
        &[],
        None,
    );
    // Through an alternative and a Provides, as real Pre-Depends are written.
    deb(
        &f,
        "libdemo",
        "libdemo",
        "1.0",
        "Provides: libdemo-abi\n",
        &[],
        &[],
        None,
    );
    deb(
        &f,
        "demo-abi-user",
        "demo-abi-user",
        "1.0",
        "Pre-Depends: missing-thing | libdemo-abi\n",
        &[],
        &[],
        None,
    );
    let b = bundle(
        &f,
        "order",
        1,
        &["demo-extra", "demo-tool", "demo-abi-user", "libdemo"],
        &[],
    );
    let root = f.root("root");
    plan(&root, &b, &f.keys.public, &[])
        .code(0)
        .stdout_has("install (pass 1 of 2) libdemo 1.0")
        .stdout_has("install (pass 2 of 2) demo-extra 1.0, demo-tool 1.0, demo-abi-user 1.0");
    kit::install(&root, &b, &f.keys.public, &[], &[]).code(0);
    for p in ["libdemo", "demo-tool", "demo-extra", "demo-abi-user"] {
        assert_eq!(status_of(&root, p).0, "install ok installed", "{p}");
    }
    assert!(audit_clean(&root));
    kit::install(&root, &b, &f.keys.public, &[], &[])
        .code(0)
        .stdout_has("0 changed");
}

#[test]
fn a_pre_depends_cycle_is_refused_at_preflight_with_the_host_untouched() {
    let f = Fixture::new();
    deb(
        &f,
        "cyc-a",
        "cyc-a",
        "1.0",
        "Pre-Depends: cyc-b\n",
        &[],
        &[],
        None,
    );
    deb(
        &f,
        "cyc-b",
        "cyc-b",
        "1.0",
        "Pre-Depends: cyc-a\n",
        &[],
        &[],
        None,
    );
    let b = bundle(&f, "cycle", 1, &["cyc-a", "cyc-b"], &[]);
    let root = f.root("root");
    let before = tree_listing(&root);
    kit::install(&root, &b, &f.keys.public, &[], &[])
        .code(4)
        .stderr_has("Pre-Depends cycle among the bundled packages: cyc-a -> cyc-b -> cyc-a")
        .stderr_has("nothing was changed");
    assert!(diff_listings(&before, &tree_listing(&root)).is_empty());
    assert!(audit_clean(&root));
}

#[test]
fn a_conffile_our_file_step_changed_survives_a_package_upgrade_without_a_prompt() {
    let f = Fixture::new();
    let conf = "/etc/demo/config.toml";
    deb(
        &f,
        "demo-conf-1.0",
        "demo-conf",
        "1.0",
        "",
        &[(conf, "v1\n")],
        &[conf],
        None,
    );
    deb(
        &f,
        "demo-conf-1.1",
        "demo-conf",
        "1.1",
        "",
        &[(conf, "v1.1\n")],
        &[conf],
        None,
    );
    let ours = serde_json::json!({"kind": "file", "dest": conf, "mode": "0644", "template": true,
        "content": "ours ${POD_CIDR}\n"});
    let a = bundle(
        &f,
        "conf",
        1,
        &["demo-conf-1.0"],
        std::slice::from_ref(&ours),
    );
    let b = bundle(&f, "conf", 2, &["demo-conf-1.1"], &[ours]);
    let root = f.root("root");
    kit::install(&root, &a, &f.keys.public, &[], &[]).code(0);
    // stdin is not a terminal and dpkg must not ask (it would fail on EOF).
    kit::install(&root, &b, &f.keys.public, &[], &[]).code(0);
    assert_eq!(
        status_of(&root, "demo-conf"),
        ("install ok installed".into(), "1.1".into())
    );
    assert_eq!(
        std::fs::read_to_string(root.join("etc/demo/config.toml")).unwrap(),
        "ours 10.200.1.0/24\n"
    );
    // dpkg's new default is kept beside it, as with apt's confold.
    assert_eq!(
        std::fs::read_to_string(root.join("etc/demo/config.toml.dpkg-dist")).unwrap(),
        "v1.1\n"
    );
    assert!(audit_clean(&root));
}

#[test]
fn an_unmodified_conffile_takes_the_new_default_and_a_later_file_step_still_applies() {
    let f = Fixture::new();
    let conf = "/etc/demo/config.toml";
    deb(
        &f,
        "demo-conf-1.0",
        "demo-conf",
        "1.0",
        "",
        &[(conf, "v1\n")],
        &[conf],
        None,
    );
    deb(
        &f,
        "demo-conf-1.1",
        "demo-conf",
        "1.1",
        "",
        &[(conf, "v1.1\n")],
        &[conf],
        None,
    );
    // The file step writes exactly the old default: dpkg sees an unmodified
    // conffile and replaces it; the step (planned "unchanged" before dpkg
    // ran) must still leave its content.
    let same_as_v1 =
        serde_json::json!({"kind": "file", "dest": conf, "mode": "0644", "content": "v1\n"});
    let a = bundle(
        &f,
        "conf",
        1,
        &["demo-conf-1.0"],
        std::slice::from_ref(&same_as_v1),
    );
    let b = bundle(&f, "conf", 2, &["demo-conf-1.1"], &[same_as_v1]);
    let root = f.root("root");
    kit::install(&root, &a, &f.keys.public, &[], &[]).code(0);
    kit::install(&root, &b, &f.keys.public, &[], &[])
        .code(0)
        .stdout_has("unchanged file /etc/demo/config.toml")
        .stdout_has("update file /etc/demo/config.toml");
    assert_eq!(status_of(&root, "demo-conf").1, "1.1");
    assert_eq!(
        std::fs::read_to_string(root.join("etc/demo/config.toml")).unwrap(),
        "v1\n"
    );
    kit::install(&root, &b, &f.keys.public, &[], &[])
        .code(0)
        .stdout_has("0 changed");
}

#[test]
fn a_newer_installed_package_is_kept_not_silently_downgraded() {
    for (installed, bundled) in [("1.0-2", "1.0-1"), ("1:0.9", "2.0")] {
        let f = Fixture::new();
        let files = f.path("files");
        std::fs::create_dir_all(&files).unwrap();
        let newer = build_deb(&files, "demo", installed, "", &[], &[], None);
        deb(&f, "demo", "demo", bundled, "", &[], &[], None);
        deb(
            &f,
            "demo-user",
            "demo-user",
            "1.0",
            "Depends: demo (>= 0.1)\n",
            &[],
            &[],
            None,
        );
        let b = bundle(&f, "keep", 1, &["demo", "demo-user"], &[]);
        let root = f.root("root");
        assert!(
            dpkg_root(&root, &["-i", newer.to_str().unwrap()])
                .status
                .success()
        );
        plan(&root, &b, &f.keys.public, &[])
            .code(0)
            .stdout_has(&format!(
                "keep demo {installed} (newer than bundled {bundled})"
            ))
            .stdout_has("install demo-user 1.0");
        kit::install(&root, &b, &f.keys.public, &[], &[]).code(0);
        assert_eq!(status_of(&root, "demo").1, installed);
        assert_eq!(status_of(&root, "demo-user").0, "install ok installed");
        kit::install(&root, &b, &f.keys.public, &[], &[])
            .code(0)
            .stdout_has("0 changed");
    }
}

#[test]
fn a_bundled_package_needing_the_older_version_is_refused_unless_the_downgrade_is_allowed() {
    let f = Fixture::new();
    let files = f.path("files");
    std::fs::create_dir_all(&files).unwrap();
    let newer = build_deb(&files, "demo", "1.0-2", "", &[], &[], None);
    deb(&f, "demo", "demo", "1.0-1", "", &[], &[], None);
    deb(
        &f,
        "demo-user",
        "demo-user",
        "1.0",
        "Depends: demo (= 1.0-1)\n",
        &[],
        &[],
        None,
    );
    let b = bundle(&f, "pinned", 1, &["demo", "demo-user"], &[]);
    let root = f.root("root");
    assert!(
        dpkg_root(&root, &["-i", newer.to_str().unwrap()])
            .status
            .success()
    );
    let before = tree_listing(&root);
    kit::install(&root, &b, &f.keys.public, &[], &[])
        .code(4)
        .stderr_has("demo-user depends on demo (= 1.0-1)")
        .stderr_has("pass --allow-deb-downgrade to downgrade it")
        .stderr_has("nothing was changed");
    assert!(diff_listings(&before, &tree_listing(&root)).is_empty());
    kit::install(&root, &b, &f.keys.public, &["--allow-deb-downgrade"], &[])
        .code(0)
        .stdout_has("demo 1.0-2 -> 1.0-1");
    assert_eq!(status_of(&root, "demo").1, "1.0-1");
    assert!(audit_clean(&root));
}

/// A root whose maintainer scripts can run: busybox as /bin/sh.
fn root_with_shell(f: &Fixture, name: &str) -> Option<PathBuf> {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists())?;
    let root = f.root(name);
    std::fs::copy(busybox, root.join("usr/bin/busybox")).unwrap();
    for c in ["sh", "echo", "cat"] {
        std::os::unix::fs::symlink("busybox", root.join("usr/bin").join(c)).unwrap();
    }
    Some(root)
}

const POSTINST_CHECKS_POLICY: &str = "#!/bin/sh\n\
if [ -x /usr/sbin/policy-rc.d ]; then /usr/sbin/policy-rc.d demo-svc start; r=$?; else r=none; fi\n\
echo \"policy-rc.d: $r\" > /demo-svc-policy\n\
[ \"$r\" = 101 ] || { echo \"service start would not be held off (policy-rc.d: $r)\" >&2; exit 1; }\n";

#[test]
fn service_starts_are_held_off_while_dpkg_runs_below_root_and_leave_no_trace() {
    let f = Fixture::new();
    let Some(root) = root_with_shell(&f, "root") else {
        assert!(
            std::env::var_os("BUNDLE_E2E_REQUIRED").is_none(),
            "busybox is needed (apt-get install busybox-static)"
        );
        eprintln!("SKIPPED: no busybox");
        return;
    };
    deb(
        &f,
        "demo-svc",
        "demo-svc",
        "1.0",
        "",
        &[],
        &[],
        Some(POSTINST_CHECKS_POLICY),
    );
    let b = bundle(&f, "svc", 1, &["demo-svc"], &[]);
    kit::install(&root, &b, &f.keys.public, &[], &[]).code(0);
    assert_eq!(
        std::fs::read_to_string(root.join("demo-svc-policy")).unwrap(),
        "policy-rc.d: 101\n"
    );
    assert_eq!(status_of(&root, "demo-svc").0, "install ok installed");
    assert!(!root.join("usr/sbin/policy-rc.d").exists());
    assert!(
        !root.join("usr/sbin").exists(),
        "the directory made for it is gone too"
    );
    // A policy-rc.d the root has already is the root's: left alone.
    let f2 = Fixture::new();
    let root2 = root_with_shell(&f2, "root").unwrap();
    std::fs::create_dir_all(root2.join("usr/sbin")).unwrap();
    std::fs::write(root2.join("usr/sbin/policy-rc.d"), "#!/bin/sh\nexit 101\n").unwrap();
    std::fs::set_permissions(
        root2.join("usr/sbin/policy-rc.d"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    deb(
        &f2,
        "demo-svc",
        "demo-svc",
        "1.0",
        "",
        &[],
        &[],
        Some(POSTINST_CHECKS_POLICY),
    );
    let b2 = bundle(&f2, "svc", 1, &["demo-svc"], &[]);
    kit::install(&root2, &b2, &f2.keys.public, &[], &[]).code(0);
    assert_eq!(
        std::fs::read_to_string(root2.join("usr/sbin/policy-rc.d")).unwrap(),
        "#!/bin/sh\nexit 101\n"
    );
}

#[test]
fn a_failing_maintainer_script_is_reported_as_what_remains_and_policy_rc_d_is_gone() {
    let f = Fixture::new();
    let Some(root) = root_with_shell(&f, "root") else {
        eprintln!("SKIPPED: no busybox");
        return;
    };
    deb(
        &f,
        "broken",
        "broken",
        "1.0",
        "",
        &[("/usr/share/broken/x", "x\n")],
        &[],
        Some("#!/bin/sh\necho postinst fails >&2\nexit 1\n"),
    );
    let b = bundle(&f, "broken", 1, &["broken"], &[]);
    let out = kit::install(&root, &b, &f.keys.public, &[], &[]);
    // dpkg left the package half-configured: the host is not as it was.
    out.code(6)
        .stderr_has("dpkg installed broken 1.0 failed and left: packages dpkg left half-installed")
        .stderr_has("the host is NOT fully as it was");
    assert!(!root.join("usr/sbin/policy-rc.d").exists());
}
