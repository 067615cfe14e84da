//! A bundle's validity window (issue 12, case 10): `bundler verify` and
//! `install-bundle verify` show `created` and `expires` (text and --json) so
//! an operator can check the window before carrying a bundle to a host whose
//! clock is in doubt; an expired bundle verifies (it is authentic) with a
//! warning, and does not install. The exact boundary (refused at exactly
//! `expires`) is tested on the rule itself, `bundle_spec::time::is_expired`,
//! with explicit timestamps (bundle-spec/src/time.rs).

use std::path::{Path, PathBuf};

use bundle_spec::Timestamp;
use bundle_tests::cli::{Keys, Output, bundler, installer, keygen, run};
use bundle_tests::kit;

const CREATED: &str = "2023-11-14T22:13:20Z"; // SOURCE_DATE_EPOCH=1700000000

struct Setup {
    dir: tempfile::TempDir,
    keys: Keys,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let keys = keygen(dir.path(), "release");
        Self { dir, keys }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn build(&self, expires: Option<&str>) -> PathBuf {
        let mut spec = serde_json::json!({
            "apiVersion": "bundle/v1", "name": "window", "version": "1", "serial": 1,
            "target": { "os": "linux", "arch": "amd64" },
            "artifacts": {}, "steps": [ { "kind": "directory", "paths": ["/opt/x"] } ],
        });
        if let Some(e) = expires {
            spec["expires"] = e.into();
        }
        let path = self.path("spec.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
        let out = self.path("b.tar.zst");
        run(
            &bundler(),
            [
                "build".as_ref(),
                path.as_os_str(),
                "--key".as_ref(),
                self.keys.secret.as_os_str(),
                "--cache".as_ref(),
                self.path("cache").as_os_str(),
                "-o".as_ref(),
                out.as_os_str(),
                "--quiet".as_ref(),
            ],
            &[("SOURCE_DATE_EPOCH", "1700000000")],
        )
        .code(0);
        out
    }

    fn bundler_verify(&self, bundle: &Path, json: bool) -> Output {
        let mut args = vec![
            "verify".into(),
            bundle.display().to_string(),
            "--key".into(),
            self.keys.public.display().to_string(),
        ];
        if json {
            args.push("--json".into());
        }
        run(&bundler(), args, &[])
    }

    fn installer_verify(&self, bundle: &Path, json: bool) -> Output {
        let mut args = vec![
            "verify".into(),
            bundle.display().to_string(),
            "--trusted-key".into(),
            self.keys.public.display().to_string(),
        ];
        if json {
            args.push("--json".into());
        }
        run(&installer(), args, &[])
    }
}

fn in_days(days: i64) -> String {
    Timestamp::from_unix(Timestamp::now().unix() + days * 86_400)
        .unwrap()
        .to_string()
}

#[test]
fn both_verify_commands_show_created_and_expires() {
    let s = Setup::new();
    let expires = in_days(30);
    let bundle = s.build(Some(&expires));

    let out = s.bundler_verify(&bundle, false);
    assert!(!out.stderr.contains("warning"), "{out}");
    out.code(0)
        .stdout_has(&format!("\n  created {CREATED}\n"))
        .stdout_has(&format!("\n  expires {expires} (in "))
        .stdout_has("install-bundle refuses it from that instant on");
    let out = s.bundler_verify(&bundle, true);
    out.code(0).stderr_empty();
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["created"], CREATED);
    assert_eq!(v["expires"], expires.as_str());
    assert_eq!(v["expired"], false);

    let out = s.installer_verify(&bundle, false);
    out.code(0)
        .stdout_has(&format!("\n  created {CREATED}\n"))
        .stdout_has(&format!("\n  expires {expires} (in "));
    assert!(!out.stderr.contains("warning"), "{out}");
    let out = s.installer_verify(&bundle, true);
    out.code(0);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["created"], CREATED);
    assert_eq!(v["expires"], expires.as_str());
    assert_eq!(v["expired"], false);
}

#[test]
fn bundle_without_expiry_says_it_never_expires() {
    let s = Setup::new();
    let bundle = s.build(None);
    s.bundler_verify(&bundle, false)
        .code(0)
        .stdout_has(&format!("  created {CREATED}\n  never expires\n"));
    let out = s.bundler_verify(&bundle, true);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["expires"], serde_json::Value::Null);
    s.installer_verify(&bundle, false)
        .code(0)
        .stdout_has("  never expires\n");
}

/// An expired bundle (`bundler build` refuses to make one, so it is re-signed
/// with the trusted key) verifies, with the window and a warning; installing
/// it is refused with exit 4, naming both times.
#[test]
fn expired_bundle_verifies_with_a_warning_and_does_not_install() {
    let s = Setup::new();
    let bundle = s.build(Some(&in_days(30)));
    let past = in_days(-2);
    let mut entries = kit::read_entries(&bundle);
    kit::edit_manifest(&mut entries, &kit::secret_key(&s.keys.secret), |m| {
        m["expires"] = past.as_str().into();
    });
    let expired = s.path("expired.tar.zst");
    kit::write_entries(&entries, &expired);

    s.bundler_verify(&expired, false)
        .code(0)
        .stdout_has(&format!("  expired at {past} (2 days ago"))
        .stderr_has(&format!(
            "warning: the bundle expired at {past}; install-bundle will refuse it"
        ));
    let v: serde_json::Value =
        serde_json::from_str(&s.bundler_verify(&expired, true).code(0).stdout).unwrap();
    assert_eq!(v["expired"], true);
    s.installer_verify(&expired, false)
        .code(0)
        .stdout_has(&format!("  expired at {past} (2 days ago"))
        .stderr_has(&format!("the bundle expired at {past}"));

    let root = s.path("root");
    std::fs::create_dir(&root).unwrap();
    kit::install(&root, &expired, &s.keys.public, &[], &[])
        .code(4)
        .stderr_has(&format!("expired at {past} (now "));
    assert!(!root.join("opt/x").exists());
}
