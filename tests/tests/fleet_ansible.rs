//! The Ansible collection `airgap.bundles` (built and installed with
//! `ansible-galaxy`) rolling a bundle out with the real `ansible-core`
//! (pinned in `ansible/requirements-test.txt`) to hosts reached over SSH:
//! one real sshd per host on loopback, each host with its own root
//! filesystem (the module's `root` option), via the collection's playbook
//! `airgap.bundles.rollout`. Skipped without root, sshd or the venv, unless
//! `BUNDLE_E2E_REQUIRED=1` (CI) makes that a failure.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bundle_tests::cli::installer;
use bundle_tests::debootstrap::skip;
use bundle_tests::fixture::Fixture;
use bundle_tests::fleet::{Fleet, PlaybookRun};
use bundle_tests::kit;
use bundle_tests::tree::{diff_listings, tree_listing};
use serde_json::{Value, json};

/// One fleet at a time: the timings stay meaningful on 2 cores.
static SERIAL: Mutex<()> = Mutex::new(());

fn cidr(host: &str) -> String {
    let n: u32 = host
        .rsplit('-')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    format!("172.16.{n}.0/24")
}

fn ready(test: &str) -> bool {
    match Fleet::prerequisites() {
        Some(why) => {
            skip(test, &why);
            false
        }
        None => true,
    }
}

/// Extra variables of the rollout (`-e @rollout.json`).
fn extra_vars(f: &Fixture, fleet: &Fleet, bundle: &Path, more: Value) -> PathBuf {
    let mut v = json!({
        "rollout_hosts": "fleet",
        "rollout_name": "k8s-worker",
        "rollout_bundle": bundle,
        "rollout_installer": installer(),
        "rollout_trusted_keys": [f.keys.public],
        "rollout_report_dir": fleet.dir.join("report"),
    });
    if let Value::Object(m) = more {
        for (k, x) in m {
            v[k] = x;
        }
    }
    let path = fleet.dir.join("rollout.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    path
}

fn rollout(fleet: &Fleet, inventory: &Path, vars: &Path, args: &[&str]) -> PlaybookRun {
    let at_vars = format!("@{}", vars.display());
    let mut all = vec!["-e", at_vars.as_str()];
    all.extend_from_slice(args);
    fleet.playbook(inventory, Path::new("airgap.bundles.rollout"), &all)
}

fn report(fleet: &Fleet) -> Value {
    let path = fleet.dir.join("report/fleet-report.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}\n{text}", path.display()))
}

fn report_table(fleet: &Fleet) -> String {
    std::fs::read_to_string(fleet.dir.join("report/fleet-report.txt")).unwrap()
}

fn row<'a>(report: &'a Value, host: &str) -> &'a Value {
    report["hosts"]
        .as_array()
        .and_then(|a| a.iter().find(|r| r["host"] == host))
        .unwrap_or_else(|| panic!("no row for {host} in {report:#}"))
}

/// Each host's root, without the lock file.
fn roots(fleet: &Fleet) -> BTreeMap<String, BTreeMap<String, String>> {
    fleet
        .hosts
        .iter()
        .map(|h| {
            let mut l = tree_listing(&h.root());
            l.remove("var/lib/install-bundle/lock");
            (h.name.clone(), l)
        })
        .collect()
}

#[track_caller]
fn assert_roots_unchanged(
    before: &BTreeMap<String, BTreeMap<String, String>>,
    fleet: &Fleet,
    what: &str,
) {
    let after = roots(fleet);
    for (host, l) in before {
        let d = diff_listings(l, &after[host]);
        assert!(
            d.is_empty(),
            "{what}: {host}'s root changed:\n{}",
            d.join("\n")
        );
    }
}

/// A number in the report (Jinja may render it as a string).
fn num(v: &Value) -> Option<u64> {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

fn bridge_conf(fleet: &Fleet, host: &str) -> Option<String> {
    std::fs::read_to_string(fleet.host(host).root().join("etc/cni/net.d/10-bridge.conf")).ok()
}

#[test]
fn check_mode_changes_nothing_then_rollout_installs_each_pod_cidr_rerun_changes_nothing_and_drift_shows_in_check_mode()
 {
    let test = "fleet check/rollout/re-run/drift";
    if !ready(test) {
        return;
    }
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let f = Fixture::new();
    let bundle = f.bundle();
    let names = ["host-1", "host-2", "host-3"];
    let fleet = Fleet::start(&f.path("fleet"), &names, |name, root| {
        f.root(&format!("fleet/hosts/{name}/root"));
        assert!(root.is_dir());
    });
    let inventory = fleet.write_inventory(&|h| json!({"rollout_vars": {"POD_CIDR": cidr(h)}}));
    let vars = extra_vars(&f, &fleet, &bundle, json!({"rollout_batch_size": 2}));

    // 1. Check mode on a fresh fleet: nothing changes, each host's plan is reported.
    let before = roots(&fleet);
    let check = rollout(&fleet, &inventory, &vars, &["--check", "--diff"]);
    assert_eq!(check.code, 0, "{check}");
    assert_roots_unchanged(&before, &fleet, "check mode");
    let r = report(&fleet);
    assert_eq!(r["check_mode"], true, "{r:#}");
    for h in names {
        let row = row(&r, h);
        assert_eq!(row["phase1"], "would-stage", "{h}: {row:#}");
        assert_eq!(row["phase2"], "check-mode", "{h}: {row:#}");
        assert!(
            row["serial"].is_null(),
            "{h}: nothing installed yet: {row:#}"
        );
        assert!(
            num(&row["changed"]).unwrap_or(0) > 0,
            "{h}: would change something: {row:#}"
        );
        // --diff shows each host's own subnet in the file it would get.
        assert!(
            check.stdout.contains(&cidr(h)),
            "{h}'s subnet not in the diff:\n{check}"
        );
        assert!(
            !fleet.host(h).dir.join("var/install-bundle").exists(),
            "{h}: check mode left the installer behind"
        );
    }
    assert!(
        report_table(&fleet).contains("check mode: nothing was changed"),
        "{}",
        report_table(&fleet)
    );

    // 2. The rollout: every host gets the bundle with its own POD_CIDR.
    let full = rollout(&fleet, &inventory, &vars, &[]);
    assert_eq!(full.code, 0, "{full}");
    eprintln!(
        "TIMING fleet rollout of {} hosts (stage everywhere, apply in batches of 2): {:.1}s",
        names.len(),
        full.elapsed.as_secs_f64()
    );
    let r = report(&fleet);
    for h in names {
        let conf = bridge_conf(&fleet, h).unwrap_or_else(|| panic!("{h}: not installed\n{full}"));
        assert!(conf.contains(&cidr(h)), "{h}: {conf}");
        let row = row(&r, h);
        assert_eq!(row["phase1"], "staged", "{h}: {row:#}");
        assert_eq!(row["phase2"], "installed", "{h}: {row:#}");
        assert_eq!(num(&row["serial"]), Some(1), "{h}: {row:#}");
        assert_eq!(row["variables"]["POD_CIDR"], cidr(h), "{h}: {row:#}");
        assert_eq!(row["drifted"], false, "{h}: {row:#}");
        assert!(full.recap(h, "changed").unwrap_or(0) > 0, "{h}:\n{full}");
        assert_eq!(full.recap(h, "failed"), Some(0), "{h}:\n{full}");
        // Applied: the staged copy is gone.
        assert!(
            !fleet
                .host(h)
                .root()
                .join("var/lib/install-bundle/staged/k8s-worker")
                .exists(),
            "{h}: the staged copy was kept after apply"
        );
    }
    let table = report_table(&fleet);
    assert!(table.starts_with("HOST"), "{table}");
    assert!(table.contains("host-3"), "{table}");

    // 3. A re-run changes nothing anywhere.
    let installed = roots(&fleet);
    let again = rollout(&fleet, &inventory, &vars, &[]);
    assert_eq!(again.code, 0, "{again}");
    eprintln!(
        "TIMING fleet re-run (nothing to do): {:.1}s",
        again.elapsed.as_secs_f64()
    );
    let r = report(&fleet);
    for h in names {
        assert_eq!(again.recap(h, "changed"), Some(0), "{h}:\n{again}");
        let row = row(&r, h);
        assert_eq!(row["phase1"], "up-to-date", "{h}: {row:#}");
        assert_eq!(row["phase2"], "not-needed", "{h}: {row:#}");
        assert_eq!(num(&row["changed"]), Some(0), "{h}: {row:#}");
    }
    let mut receipts_aside = installed.clone();
    let mut now = roots(&fleet);
    for l in receipts_aside.values_mut().chain(now.values_mut()) {
        l.remove("var/lib/install-bundle/k8s-worker.json");
    }
    for h in names {
        assert!(
            diff_listings(&receipts_aside[h], &now[h]).is_empty(),
            "{h} changed on re-run"
        );
    }

    // 4. A file changed behind our back on host-2 shows in check mode's drift report.
    let conf = fleet
        .host("host-2")
        .root()
        .join("etc/cni/net.d/10-bridge.conf");
    std::fs::write(&conf, "{ \"subnet\": \"10.99.0.0/16\" }\n").unwrap();
    let before = roots(&fleet);
    let drift = rollout(&fleet, &inventory, &vars, &["--check"]);
    assert_eq!(drift.code, 0, "drift is reported, not a failure: {drift}");
    assert_roots_unchanged(&before, &fleet, "check mode with drift");
    let r = report(&fleet);
    let row2 = row(&r, "host-2");
    assert_eq!(row2["drifted"], true, "{row2:#}");
    let paths: Vec<&str> = row2["drift"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["path"].as_str())
        .collect();
    assert_eq!(paths, ["/etc/cni/net.d/10-bridge.conf"], "{row2:#}");
    assert_eq!(
        row2["phase1"], "would-stage",
        "host-2 would get its file back: {row2:#}"
    );
    for h in ["host-1", "host-3"] {
        let row = row(&r, h);
        assert_eq!(row["drifted"], false, "{h}: {row:#}");
        assert_eq!(row["phase1"], "up-to-date", "{h}: {row:#}");
    }
    let table = report_table(&fleet);
    let line = table
        .lines()
        .find(|l| l.starts_with("host-2"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        line.contains("10-bridge.conf (content modified") || line.contains("10-bridge.conf ("),
        "{table}"
    );
}

#[test]
fn a_host_failing_preflight_in_phase_1_stops_the_rollout_before_any_host_changes() {
    let test = "fleet phase 1 failure";
    if !ready(test) {
        return;
    }
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let f = Fixture::new();
    let bundle = f.bundle();
    let names = ["host-1", "host-2", "host-3"];
    let fleet = Fleet::start(&f.path("fleet"), &names, |name, _root| {
        let root = f.root(&format!("fleet/hosts/{name}/root"));
        if name == "host-2" {
            // A directory where the bundle puts a file: preflight refuses.
            std::fs::create_dir_all(root.join("etc/cni/net.d/10-bridge.conf/keep")).unwrap();
        }
    });
    let inventory = fleet.write_inventory(&|h| json!({"rollout_vars": {"POD_CIDR": cidr(h)}}));
    let vars = extra_vars(&f, &fleet, &bundle, json!({"rollout_batch_size": 3}));
    let before = roots(&fleet);
    let run = rollout(&fleet, &inventory, &vars, &[]);
    assert_eq!(run.code, 2, "the rollout fails: {run}");
    assert!(
        run.stdout
            .contains("phase 1 failed on host-2: no host was changed"),
        "{run}"
    );
    assert_roots_unchanged(&before, &fleet, "phase 1 failed on host-2");
    let r = report(&fleet);
    assert_eq!(r["phase1_failed"], json!(["host-2"]), "{r:#}");
    let row2 = row(&r, "host-2");
    assert_eq!(row2["phase1"], "refused", "{row2:#}");
    assert_eq!(
        num(&row2["exit_code"]),
        Some(4),
        "refused by preflight: {row2:#}"
    );
    assert!(
        row2["error"]
            .as_str()
            .unwrap_or("")
            .contains("preflight failed"),
        "{row2:#}"
    );
    for h in names {
        let row = row(&r, h);
        assert_eq!(row["phase2"], "not-run", "{h}: {row:#}");
        assert!(row["serial"].is_null(), "{h}: {row:#}");
        assert!(
            row["staged_serial"].is_null(),
            "{h}: unstaged again: {row:#}"
        );
        assert!(bridge_conf(&fleet, h).is_none(), "{h} was changed");
    }
}

/// `true` runnable in `root` through chroot: the host's `true`, or its
/// `false` under that name (a host whose apply fails), with their libraries.
fn put_true(root: &Path, fails: bool) {
    let from = if fails { "/bin/false" } else { "/bin/true" };
    std::fs::copy(from, root.join("usr/bin/true")).unwrap();
    let ldd = std::process::Command::new("ldd")
        .arg(from)
        .output()
        .unwrap();
    for lib in String::from_utf8_lossy(&ldd.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
    {
        let to = root.join(lib.trim_start_matches('/'));
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(lib, to).unwrap();
    }
}

#[test]
fn phase_2_failures_beyond_max_fail_percentage_stop_the_rollout_and_the_report_says_which_host_has_what()
 {
    let test = "fleet phase 2 failures";
    if !ready(test) {
        return;
    }
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let f = Fixture::new();
    // The bundle (file steps only, all undoable) ends with a command run
    // in the host's root: it fails on host-2 and host-3 (their `true` is
    // `false`) after everything else was applied, so those applies roll
    // back completely (exit 5).
    let mut spec = kit::files_only_spec(&[], &[]);
    spec["name"] = json!("k8s-worker");
    spec["steps"]
        .as_array_mut()
        .unwrap()
        .push(json!({"kind": "command", "argv": ["true"], "in_root": true}));
    let spec = kit::write_pinned_spec(&f, "spec.json", &spec);
    let bundle = f.build(&spec, "worker.tar.zst");
    let names = ["host-1", "host-2", "host-3", "host-4"];
    let fleet = Fleet::start(&f.path("fleet"), &names, |name, _root| {
        let root = f.root(&format!("fleet/hosts/{name}/root"));
        put_true(&root, matches!(name, "host-2" | "host-3"));
    });
    let inventory = fleet.write_inventory(&|h| json!({"rollout_vars": {"POD_CIDR": cidr(h)}}));
    // One host per batch; stop once more than 30% of the 4 failed: after
    // host-3 (2 of 4), so host-4 is never applied.
    let vars = extra_vars(
        &f,
        &fleet,
        &bundle,
        json!({"rollout_batch_size": 1, "rollout_max_fail_percentage": 30}),
    );
    let run = rollout(&fleet, &inventory, &vars, &[]);
    assert_eq!(run.code, 2, "{run}");
    let r = report(&fleet);
    assert_eq!(r["stopped"], true, "{r:#}");
    assert_eq!(r["failed"], json!(["host-2", "host-3"]), "{r:#}");
    // host-1: installed.
    let row1 = row(&r, "host-1");
    assert_eq!(row1["phase2"], "installed", "{row1:#}");
    assert_eq!(num(&row1["serial"]), Some(1), "{row1:#}");
    assert!(bridge_conf(&fleet, "host-1").is_some_and(|c| c.contains(&cidr("host-1"))));
    // host-2, host-3: apply failed and rolled back, still staged.
    for h in ["host-2", "host-3"] {
        let row = row(&r, h);
        assert_eq!(row["phase2"], "failed", "{h}: {row:#}");
        assert_eq!(num(&row["exit_code"]), Some(5), "{h}: rolled back: {row:#}");
        assert!(row["serial"].is_null(), "{h}: {row:#}");
        assert_eq!(num(&row["staged_serial"]), Some(1), "{h}: {row:#}");
        assert!(bridge_conf(&fleet, h).is_none(), "{h} was not rolled back");
        assert_eq!(run.recap(h, "failed"), Some(1), "{h}:\n{run}");
    }
    // host-4: never applied, its bundle stays staged for a later run.
    let row4 = row(&r, "host-4");
    assert_eq!(row4["phase2"], "stopped", "{row4:#}");
    assert!(row4["serial"].is_null(), "{row4:#}");
    assert_eq!(num(&row4["staged_serial"]), Some(1), "{row4:#}");
    assert!(bridge_conf(&fleet, "host-4").is_none());
    assert!(
        run.stdout.contains("phase 2 stopped before this host"),
        "{run}"
    );
    let table = report_table(&fleet);
    for h in names {
        assert!(table.contains(h), "{table}");
    }
}

/// The module on its own, on the controller (connection `local`, a root
/// directory of its own): one-shot `installed` with check and diff mode,
/// `query`, `staged`, `installed` by name and `absent-staged` in check mode
/// and for real, idempotence, and a failure carrying the installer's exit code.
#[test]
fn the_module_alone_plans_installs_queries_stages_and_unstages_idempotently() {
    if !ready("the_module_alone_plans_installs_queries_stages_and_unstages_idempotently") {
        return;
    }
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let f = Fixture::new();
    let bundle = f.bundle();
    let fleet = Fleet::start(&f.path("controller"), &[], |_, _| {});
    let root = f.root("local");
    let common = json!({
        "installer": installer(), "root": root, "trusted_keys": [f.keys.public],
    });
    let with = |more: Value| {
        let mut a = common.clone();
        for (k, v) in more.as_object().unwrap() {
            a[k] = v.clone();
        }
        a
    };
    let install = with(
        json!({"state": "installed", "bundle": bundle, "vars": {"POD_CIDR": "172.16.9.0/24"}}),
    );
    let before = tree_listing(&root);

    // Check + diff mode: what would change, nothing written.
    let (rc, r) = fleet.module_on_controller(&install, &["--check", "--diff"]);
    assert_eq!(rc, 0, "{r:#}");
    assert_eq!(
        (r["changed"].as_bool(), r["outcome"].as_str()),
        (Some(true), Some("planned")),
        "{r:#}"
    );
    let diff = r["diff"].as_str().unwrap();
    assert!(
        diff.contains("/etc/cni/net.d/10-bridge.conf") && diff.contains("172.16.9.0/24"),
        "{diff}"
    );
    assert!(
        diff_listings(&before, &tree_listing(&root)).is_empty(),
        "check mode changed the root"
    );

    // One-shot install, then again: changed, then not.
    let (rc, r) = fleet.module_on_controller(&install, &[]);
    assert_eq!(rc, 0, "{r:#}");
    assert_eq!(
        (r["changed"].as_bool(), r["outcome"].as_str()),
        (Some(true), Some("installed")),
        "{r:#}"
    );
    assert_eq!(r["receipt"]["serial"], 1, "{r:#}");
    let (rc, r) = fleet.module_on_controller(&install, &[]);
    assert_eq!(rc, 0, "{r:#}");
    assert_eq!(r["changed"], false, "{r:#}");

    // query: nothing drifted; never changed.
    let query = with(json!({"state": "query", "name": "k8s-worker"}));
    let (rc, r) = fleet.module_on_controller(&query, &[]);
    assert_eq!(rc, 0, "{r:#}");
    assert_eq!(
        (r["changed"].as_bool(), r["drifted"].as_bool()),
        (Some(false), Some(false)),
        "{r:#}"
    );
    assert_eq!(
        r["receipt"]["variables"]["POD_CIDR"], "172.16.9.0/24",
        "{r:#}"
    );

    // Serial 2 staged; installing it by name in check mode changes nothing.
    let s2 = f.write_spec(
        "spec-2.json",
        2,
        &[json!({"kind": "directory", "paths": ["/var/lib/two"], "mode": "0755"})],
    );
    let b2 = f.build(&s2, "worker-2.tar.zst");
    let (rc, r) = fleet.module_on_controller(
        &with(json!({"state": "staged", "bundle": b2, "vars": {"POD_CIDR": "172.16.9.0/24"}})),
        &[],
    );
    assert_eq!(rc, 0, "{r:#}");
    assert_eq!(
        (r["changed"].as_bool(), r["outcome"].as_str()),
        (Some(true), Some("staged")),
        "{r:#}"
    );
    let apply = with(json!({"state": "installed", "name": "k8s-worker"}));
    let (rc, r) = fleet.module_on_controller(&apply, &["--check"]);
    assert_eq!(rc, 0, "{r:#}");
    assert_eq!(r["changed"], true, "{r:#}");
    assert!(!root.join("var/lib/two").exists(), "check mode applied");

    // absent-staged: check mode keeps it, then it goes, then nothing to do.
    let unstage = with(json!({"state": "absent-staged", "name": "k8s-worker"}));
    let staged_dir = root.join("var/lib/install-bundle/staged/k8s-worker");
    let (rc, r) = fleet.module_on_controller(&unstage, &["--check"]);
    assert_eq!((rc, r["changed"].as_bool()), (0, Some(true)), "{r:#}");
    assert!(staged_dir.exists());
    let (rc, r) = fleet.module_on_controller(&unstage, &[]);
    assert_eq!((rc, r["changed"].as_bool()), (0, Some(true)), "{r:#}");
    assert!(!staged_dir.exists());
    let (rc, r) = fleet.module_on_controller(&unstage, &[]);
    assert_eq!((rc, r["changed"].as_bool()), (0, Some(false)), "{r:#}");

    // A bundle with a flipped byte: failed, with the installer's exit code 3.
    let mut raw = std::fs::read(&b2).unwrap();
    let mid = raw.len() / 2;
    raw[mid] ^= 1;
    let bad = f.path("bad.tar.zst");
    std::fs::write(&bad, raw).unwrap();
    let (rc, r) = fleet.module_on_controller(
        &with(json!({"state": "installed", "bundle": bad, "vars": {"POD_CIDR": "172.16.9.0/24"}})),
        &[],
    );
    assert_ne!(rc, 0, "{r:#}");
    // (The minimal callback shows `failed` as "FAILED!" and ansible exits 2.)
    assert_eq!((rc, r["exit_code"].as_i64()), (2, Some(3)), "{r:#}");
    assert!(
        r["msg"].as_str().unwrap().contains("verification failed"),
        "{r:#}"
    );
}
