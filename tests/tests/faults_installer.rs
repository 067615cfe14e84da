//! Installer faults (issue #5): a crash at every journal point and during
//! staging, a target filesystem that is too small or fills up mid-apply, and
//! two installers at once. Each test checks that every target path holds its
//! old or its new content (never a partial one) and that a re-run converges.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bundle_tests::cli::{Output, installer, run};
use bundle_tests::fixture::Fixture;
use bundle_tests::kit::{self, Mount};
use bundle_tests::tree::{diff_listings, tree_listing};

const CIDR: &str = "--set=POD_CIDR=172.16.1.0/24";
const STATE: &str = "var/lib/install-bundle";

type Listing = BTreeMap<String, String>;

/// The tree of a root, without what differs between two equal installs (the
/// receipt's timestamp) and our lock file.
fn listing(root: &Path) -> Listing {
    let mut l = tree_listing(root);
    l.remove(&format!("{STATE}/lock"));
    for (k, v) in l.iter_mut() {
        if k.starts_with(STATE) && k.ends_with(".json") {
            *v = "receipt".into();
        }
    }
    l
}

#[track_caller]
fn assert_same(expected: &Listing, root: &Path, what: &str) {
    assert_same_listing(expected, &listing(root), what);
}

#[track_caller]
fn assert_same_listing(expected: &Listing, now: &Listing, what: &str) {
    let diff = diff_listings(expected, now);
    assert!(diff.is_empty(), "{what}:\n{}", diff.join("\n"));
}

/// Paths that belong to the installer's own bookkeeping, never a target:
/// the journal, staging, the temp and backup names of atomic writes, and the
/// `policy-rc.d` (with the directory made for it) that holds off service
/// starts while dpkg runs below --root.
fn bookkeeping(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    path == "usr/sbin/policy-rc.d"
        || path == "usr/sbin"
        || path == format!("{STATE}/journal")
        || path == format!("{STATE}/staging")
        || path.starts_with(&format!("{STATE}/staging/"))
        || (name.starts_with('.') && (name.contains(".ib-new-") || name.contains(".ib-old-")))
}

/// Every path of `old` and `new` holds exactly its old or its new state in
/// `now` (absent counts as a state); anything else present is bookkeeping.
/// Returns how many target paths (outside the state directory) were new.
#[track_caller]
fn assert_old_or_new(old: &Listing, new: &Listing, now: &Listing, what: &str) -> usize {
    let mut changed = 0;
    let mut problems = Vec::new();
    let paths: std::collections::BTreeSet<&String> =
        old.keys().chain(new.keys()).chain(now.keys()).collect();
    for p in paths {
        let (o, n, c) = (old.get(p), new.get(p), now.get(p));
        if c == o {
            continue;
        }
        if c == n {
            if !p.starts_with(STATE) {
                changed += 1;
            }
            continue;
        }
        if o.is_none() && n.is_none() && bookkeeping(p) {
            continue;
        }
        problems.push(format!(
            "{p}: {} (old: {}, new: {})",
            c.map_or("absent", String::as_str),
            o.map_or("absent", String::as_str),
            n.map_or("absent", String::as_str)
        ));
    }
    assert!(
        problems.is_empty(),
        "{what}: paths neither old nor new:\n{}",
        problems.join("\n")
    );
    changed
}

#[test]
fn killed_at_every_journal_point_every_target_is_old_or_new_then_rerun_converges() {
    // installer_cli.rs has the recover-first variant; this one looks at the
    // host as the crash left it, before anything is rolled back, and then
    // lets a plain re-run (which rolls back first) finish the job.
    let f = Fixture::new();
    let bundle = f.bundle();
    let clean = f.root("clean");
    let before = listing(&clean);
    kit::install(&clean, &bundle, &f.keys.public, &[CIDR], &[]).code(0);
    let installed = listing(&clean);
    let mut point = 1;
    let mut partial_states = 0;
    loop {
        let root = f.root(&format!("crash-{point}"));
        assert_same(&before, &root, "fresh root");
        let out = kit::install(
            &root,
            &bundle,
            &f.keys.public,
            &[CIDR],
            &[("INSTALL_BUNDLE_TEST_CRASH_AT", &point.to_string())],
        );
        if out.code == 0 {
            assert_same(&installed, &root, "past the last journal point");
            break;
        }
        assert_eq!(out.code, -1, "point {point}: expected SIGKILL\n{out}");
        let now = listing(&root);
        let changed = assert_old_or_new(
            &before,
            &installed,
            &now,
            &format!("killed at point {point}"),
        );
        if changed > 0 {
            partial_states += 1;
        }
        // A plain re-run rolls the interrupted run back and installs.
        let rerun = kit::install(&root, &bundle, &f.keys.public, &[CIDR], &[]);
        rerun.code(0);
        assert!(
            rerun.stdout.contains("rolled back an interrupted install")
                || rerun.stdout.contains("finished cleaning up"),
            "point {point}: the re-run did not notice the crash\n{rerun}"
        );
        assert_same(&installed, &root, &format!("re-run after point {point}"));
        // And once more: nothing left to do.
        kit::install(&root, &bundle, &f.keys.public, &[CIDR], &[])
            .code(0)
            .stdout_has("0 changed");
        std::fs::remove_dir_all(&root).unwrap();
        point += 1;
        assert!(point < 500, "the install never completed");
    }
    assert!(point > 20, "only {point} journal points");
    assert!(
        partial_states > 10,
        "only {partial_states} crash points left some new content: is the hook working?"
    );
    eprintln!(
        "{} journal points, {partial_states} with a half-applied host",
        point - 1
    );
}

#[test]
fn killed_during_staging_targets_are_untouched_then_rerun_converges() {
    let f = Fixture::new();
    let bundle = f.bundle();
    let clean = f.root("clean");
    kit::install(&clean, &bundle, &f.keys.public, &[CIDR], &[]).code(0);
    let installed = listing(&clean);
    let root = f.root("root");
    let before = listing(&root);
    let out = kit::install(
        &root,
        &bundle,
        &f.keys.public,
        &[CIDR],
        &[("INSTALL_BUNDLE_TEST_CRASH_AT", "staging")],
    );
    assert_eq!(out.code, -1, "expected SIGKILL\n{out}");
    // Staged bytes exist, yet no target changed: only bookkeeping is new.
    let now = listing(&root);
    assert!(
        now.keys()
            .any(|k| k.starts_with(&format!("{STATE}/staging/"))),
        "nothing staged before the kill?"
    );
    let mut targets = now.clone();
    targets.retain(|k, _| !bookkeeping(k) && !k.starts_with(STATE));
    let mut b = before.clone();
    b.retain(|k, _| !k.starts_with(STATE));
    let diff = diff_listings(&b, &targets);
    assert!(diff.is_empty(), "targets changed:\n{}", diff.join("\n"));
    // A re-run clears the stale staging directory and installs.
    kit::install(&root, &bundle, &f.keys.public, &[CIDR], &[]).code(0);
    assert_same(&installed, &root, "re-run after a crash in staging");
    assert!(!root.join(STATE).join("staging").exists());
}

#[test]
fn pause_hook_lists_journal_points_and_stops_at_one_with_its_record_durable() {
    // The test-only hook the booted-machine test cuts the power with
    // (INSTALL_BUNDLE_TEST_PAUSE_AT): 0 lists every point and changes nothing
    // else; N stops the installer (SIGSTOP) right after point N, whose
    // journal record is on disk, and a kill there is rolled back like a crash.
    let f = Fixture::new();
    let bundle = f.bundle();
    let clean = f.root("clean");
    let before = listing(&clean);
    let listed = kit::install(
        &clean,
        &bundle,
        &f.keys.public,
        &[CIDR],
        &[("INSTALL_BUNDLE_TEST_PAUSE_AT", "0")],
    );
    listed.code(0);
    let points: Vec<&str> = listed
        .stderr
        .lines()
        .filter(|l| l.starts_with("install-bundle: test journal point "))
        .collect();
    assert!(points.len() > 20, "{listed}");
    assert!(points[0].contains(r#"{"op":"begin""#), "{}", points[0]);
    assert!(points.iter().any(|p| p.contains(": about to rename ")));
    assert!(points.last().unwrap().ends_with(r#"{"op":"commit"}"#));
    assert!(!listed.stderr.contains("test pause"), "{listed}");
    let installed = listing(&clean);

    let n = points.len() / 2;
    let root = f.root("paused");
    let mut child = Command::new(installer())
        .args(kit::install_args(&root, &bundle, &f.keys.public, &[CIDR]))
        .env("INSTALL_BUNDLE_TEST_PAUSE_AT", n.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut seen = Vec::new();
    loop {
        let mut line = String::new();
        assert!(
            std::io::BufRead::read_line(&mut stderr, &mut line).unwrap() > 0,
            "ended before pausing: {seen:?}"
        );
        if line.trim_end() == format!("install-bundle: test pause at journal point {n}") {
            break;
        }
        seen.push(line);
    }
    // The installer prints the line, then stops itself: wait for the stop
    // rather than racing it (a loaded machine can run the reader first).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap();
        let state = stat.rsplit(')').next().unwrap().split_whitespace().next();
        if state == Some("T") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not stopped 30 s after its pause line: {stat}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let journal = std::fs::read_to_string(root.join(STATE).join("journal")).unwrap();
    let records = journal.lines().count();
    let expected = points[..n]
        .iter()
        .filter(|p| !p.contains(": about to rename "))
        .count();
    assert_eq!(records, expected, "{journal}");
    child.kill().unwrap();
    child.wait().unwrap();
    assert_old_or_new(&before, &installed, &listing(&root), "paused, then killed");
    let recovered = run(
        &installer(),
        ["recover".as_ref(), "--root".as_ref(), root.as_os_str()],
        &[],
    );
    recovered.code(5).stdout_has("rolled back");
    assert_same(&before, &root, "recovered after the pause");
}

/// A fixture root on a fresh tmpfs mounted at `f.path(name)`; `None` (with a
/// message) where this host cannot mount.
fn tmpfs_root(f: &Fixture, name: &str, options: &str) -> Option<(Mount, PathBuf)> {
    match Mount::tmpfs(&f.path(name), options) {
        Ok(m) => {
            let root = f.root(name);
            Some((m, root))
        }
        Err(e) => {
            eprintln!(
                "SKIPPED: cannot mount a tmpfs here ({e}); run as root to test a full filesystem"
            );
            None
        }
    }
}

fn remount(m: &Mount, options: &str) {
    let st = Command::new("mount")
        .args(["-o", &format!("remount,{options}")])
        .arg(&m.dir)
        .status()
        .unwrap();
    assert!(st.success(), "remount {options}");
}

/// The files-only bundle (every change undoable), and its full install.
fn files_only(
    f: &Fixture,
    first: &[serde_json::Value],
    artifacts: &[(&str, &str)],
) -> (PathBuf, Listing) {
    let spec = kit::write_pinned_spec(
        f,
        "files-only.json",
        &kit::files_only_spec(first, artifacts),
    );
    let bundle = f.build(&spec, "files-only.tar.zst");
    let clean = f.root("clean");
    kit::install(&clean, &bundle, &f.keys.public, &[CIDR], &[]).code(0);
    let installed = listing(&clean);
    std::fs::remove_dir_all(&clean).unwrap();
    (bundle, installed)
}

#[test]
fn target_filesystem_clearly_too_small_is_refused_by_preflight() {
    let f = Fixture::new();
    let (bundle, _) = files_only(&f, &[], &[]);
    // 4 MiB: less than the artifacts plus the 16 MiB margin.
    let Some((_m, root)) = tmpfs_root(&f, "small", "size=4m,mode=0755") else {
        return;
    };
    let before = listing(&root);
    // Staged on the small filesystem: refused before staging.
    kit::install(&root, &bundle, &f.keys.public, &[CIDR], &[])
        .code(4)
        .stderr_has("not enough space to stage the bundle")
        .stderr_has("nothing was changed");
    assert_same(&before, &root, "refused before staging");
    // Staged elsewhere: refused by the free-space preflight.
    let staging = f.path("staging");
    kit::install(
        &root,
        &bundle,
        &f.keys.public,
        &[CIDR, "--staging-dir", staging.to_str().unwrap()],
        &[],
    )
    .code(4)
    .stderr_has("not enough space on the filesystem")
    .stderr_has("nothing was changed");
    assert_same(&before, &root, "refused by preflight");
}

#[test]
fn target_filesystem_out_of_inodes_mid_apply_is_rolled_back_at_every_point() {
    // The free-space preflight counts bytes, not inodes: a tmpfs with just
    // enough inodes for the root plus k more runs out after k new files or
    // directories — at every k in turn, until the install fits.
    let f = Fixture::new();
    let (bundle, installed) = files_only(&f, &[], &[]);
    let staging = f.path("staging");
    let staging_arg = staging.to_str().unwrap().to_owned();
    let mut codes = Vec::new();
    for k in 0..200u64 {
        let Some((m, root)) = tmpfs_root(&f, "full", "size=64m,mode=0755") else {
            return;
        };
        let before = listing(&root);
        let (free, _) = m.free();
        let total = {
            let out = Command::new("stat")
                .args(["-f", "-c", "%c"])
                .arg(&m.dir)
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse::<u64>()
                .unwrap()
        };
        remount(&m, &format!("nr_inodes={}", total - free + k));
        let out = kit::install(
            &root,
            &bundle,
            &f.keys.public,
            &[CIDR, "--staging-dir", &staging_arg],
            &[],
        );
        codes.push(out.code);
        match out.code {
            0 => {
                assert_same(&installed, &root, &format!("{k} spare inodes: installed"));
                eprintln!("inode budget 0..{k}: exit codes {codes:?}");
                assert!(
                    codes.iter().filter(|&&c| c == 5).count() >= 10,
                    "too few mid-apply failures: {codes:?}"
                );
                return;
            }
            // Out of inodes for the state directory, lock or journal: an
            // I/O error before anything was applied.
            1 => assert!(
                out.stderr.contains("No space left on device"),
                "{k} spare inodes\n{out}"
            ),
            5 => {
                out.stderr_has("No space left on device")
                    .stderr_has("rolled back");
            }
            _ => panic!("{k} spare inodes: unexpected exit\n{out}"),
        }
        assert_same(
            &before,
            &root,
            &format!("{k} spare inodes: exit {}", out.code),
        );
        drop(m);
        std::fs::remove_dir_all(f.path("full")).unwrap();
    }
    panic!("never installed: {codes:?}");
}

/// Stops (SIGSTOP) process `pid` the moment `path` exists: a shell loop of
/// builtins (no fork between the check and the signal). `false` when the
/// process exited first.
/// Stops `pid` (SIGSTOP) as soon as `path` exists; `false` when the process
/// ended first (exited: a zombie of ours counts as ended, `kill -0` would not
/// tell).
fn stop_when_exists(path: &Path, pid: u32) -> bool {
    Command::new("bash")
        .args([
            "-c",
            r#"while [ ! -e "$1" ]; do
                 read -r _ _ st _ < "/proc/$2/stat" 2>/dev/null || exit 1
                 [ "$st" != Z ] && [ "$st" != X ] || exit 1
               done; kill -STOP "$2""#,
            "stop-when-exists",
        ])
        .arg(path)
        .arg(pid.to_string())
        .status()
        .unwrap()
        .success()
}

fn signal(pid: u32, sig: &str) {
    let st = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success(), "kill {sig} {pid}");
}

fn finish(child: Child) -> Output {
    let out = child.wait_with_output().unwrap();
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        command: "install-bundle".into(),
    }
}

#[test]
fn target_filesystem_filled_mid_apply_is_rolled_back() {
    // Enough space at preflight (the bytes check passes); then, once the
    // journal exists, the installer is stopped, the filesystem is filled to
    // the last byte by someone else, and the installer continues: its next
    // write fails and everything is rolled back.
    let f = Fixture::new();
    let big: Vec<u8> = (0..64u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(f.path("files/big.bin"), &big).unwrap();
    drop(big);
    let first = [
        serde_json::json!({"kind": "binary", "artifact": "big", "dest": "/opt/big/big.bin", "mode": "0644"}),
    ];
    let (bundle, installed) = files_only(&f, &first, &[("big", "file:files/big.bin")]);
    let staging = f.path("staging");
    let staging_arg = staging.to_str().unwrap().to_owned();
    for attempt in 1..=10 {
        let Some((m, root)) = tmpfs_root(&f, "fill", "size=96m,mode=0755") else {
            return;
        };
        let before = listing(&root);
        // At the lowest priority, so that the watcher wins the race.
        let child = Command::new("nice")
            .args(["-n", "19"])
            .arg(installer())
            .args(kit::install_args(
                &root,
                &bundle,
                &f.keys.public,
                &[CIDR, "--staging-dir", &staging_arg],
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let journal = root.join(STATE).join("journal");
        let caught = stop_when_exists(&journal, child.id());
        // Fill what is left (as another process on the host would).
        let filler = root.join("filler");
        if caught {
            let mut fill = std::fs::File::create(&filler).unwrap();
            let chunk = vec![0x55u8; 1 << 16];
            while fill.write_all(&chunk).is_ok() {}
            let one = [0u8; 1];
            while fill.write_all(&one).is_ok() {}
            assert_eq!(m.free().1, 0, "the filesystem is not full");
            signal(child.id(), "-CONT");
        }
        let out = finish(child);
        let _ = std::fs::remove_file(&filler);
        match out.code {
            5 => {
                out.stderr_has("No space left on device")
                    .stderr_has("rolled back");
                assert_same(&before, &root, "filled mid-apply, rolled back");
                // With the space back, a re-run converges.
                kit::install(
                    &root,
                    &bundle,
                    &f.keys.public,
                    &[CIDR, "--staging-dir", &staging_arg],
                    &[],
                )
                .code(0);
                assert_same(&installed, &root, "re-run after the filesystem was freed");
                eprintln!(
                    "filled mid-apply on attempt {attempt}: rolled back, then re-run installed"
                );
                return;
            }
            // The apply finished before it could be stopped: try again.
            0 => assert_same(&installed, &root, "finished before the fill"),
            _ => panic!("unexpected exit\n{out}"),
        }
        drop(m);
        std::fs::remove_dir_all(f.path("fill")).unwrap();
    }
    panic!("the apply always finished before the filesystem could be filled");
}

/// Whether `pid` holds a `flock` (as listed in /proc/locks).
fn holds_flock(pid: u32) -> bool {
    std::fs::read_to_string("/proc/locks")
        .unwrap_or_default()
        .lines()
        .any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(1) == Some(&"FLOCK") && f.get(4) == Some(&pid.to_string().as_str())
        })
}

#[test]
fn second_installer_started_while_one_runs_refuses_and_never_both_apply() {
    // Installer A reads the bundle from a pipe that the test holds open, so
    // it sits inside its run holding the lock; installer B starts meanwhile.
    let f = Fixture::new();
    let bundle = f.bundle();
    let root = f.root("root");
    let before = listing(&root);
    let mut a = Command::new(installer())
        .args(["-", "--root"])
        .arg(&root)
        .arg("--trusted-key")
        .arg(&f.keys.public)
        .arg(CIDR)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !holds_flock(a.id()) {
        assert!(a.try_wait().unwrap().is_none(), "A exited early");
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "A never took the lock"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // B, for real, while A runs: refused, and the root is as A left it (A has
    // not read a byte of its bundle yet).
    let b = kit::install(&root, &bundle, &f.keys.public, &[CIDR], &[]);
    b.code(4)
        .stderr_has("another install-bundle is running")
        .stderr_has("nothing was changed");
    let mut now = listing(&root);
    now.retain(|k, _| !k.starts_with(STATE));
    assert_same_listing(&before, &now, "B refused (A's state directory aside)");
    // A goes on and installs.
    let mut stdin = a.stdin.take().unwrap();
    stdin.write_all(&std::fs::read(&bundle).unwrap()).unwrap();
    drop(stdin);
    let a = finish(a);
    a.code(0).stdout_has("installed");
    let installed = listing(&root);
    // B again, now alone: nothing to do.
    kit::install(&root, &bundle, &f.keys.public, &[CIDR], &[])
        .code(0)
        .stdout_has("0 changed");
    assert_same(&installed, &root, "second run");
}

#[test]
fn installers_started_together_never_both_apply() {
    let f = Fixture::new();
    let bundle = f.bundle();
    let clean = f.root("clean");
    kit::install(&clean, &bundle, &f.keys.public, &[CIDR], &[]).code(0);
    let installed = listing(&clean);
    let mut outcomes = BTreeMap::new();
    for round in 0..6 {
        let root = f.root(&format!("race-{round}"));
        let spawn = || {
            Command::new(installer())
                .args(kit::install_args(
                    &root,
                    &bundle,
                    &f.keys.public,
                    &[CIDR, "--json"],
                ))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (a, b) = (spawn(), spawn());
        let (a, b) = (finish(a), finish(b));
        let result = |o: &Output| -> String {
            serde_json::from_str::<serde_json::Value>(&o.stdout)
                .map(|v| v["result"].as_str().unwrap_or("?").to_owned())
                .unwrap_or_else(|_| format!("exit {}", o.code))
        };
        let mut pair = [result(&a), result(&b)];
        pair.sort();
        let applied = pair.iter().filter(|r| *r == "installed").count();
        assert_eq!(applied, 1, "round {round}: {pair:?}\n{a}\n{b}");
        for o in [&a, &b] {
            assert!(o.code == 0 || o.code == 4, "round {round}\n{o}");
            if o.code == 4 {
                o.stderr_has("another install-bundle is running");
            }
        }
        assert_same(&installed, &root, &format!("round {round}"));
        *outcomes.entry(format!("{pair:?}")).or_insert(0) += 1;
    }
    eprintln!("outcomes of 6 races: {outcomes:?}");
}
