//! Real-world install faults of issue 12 on the installer side: archive
//! metadata never widens permissions (`shared/cases/02`), a read-only target
//! is refused before anything changes (`L2`), a failed last command that was
//! fully rolled back exits 5 (`V1`), and what the installer creates has
//! exact modes whatever the umask.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;
use std::process::Command;

use bundle_tests::cli::{installer, run};
use bundle_tests::fixture::Fixture;
use bundle_tests::kit::{self, Mount};
use bundle_tests::tree::{diff_listings, tree_listing};

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

/// A tar.gz as an upstream release makes it carelessly: `./` and `./bin/`
/// world-writable, a world-writable file, owned by uid 1001.
fn careless_tarball(path: &Path) {
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
        std::fs::File::create(path).unwrap(),
        flate2::Compression::default(),
    ));
    let mut add = |name: &str, data: Option<&[u8]>, mode: u32| {
        let mut h = tar::Header::new_gnu();
        h.set_path(name).unwrap();
        h.set_uid(1001);
        h.set_gid(1001);
        h.set_mode(mode);
        h.set_mtime(1_600_000_000);
        match data {
            None => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                h.set_cksum();
                b.append(&h, std::io::empty()).unwrap();
            }
            Some(d) => {
                h.set_size(d.len() as u64);
                h.set_cksum();
                b.append(&h, d).unwrap();
            }
        }
    };
    add("./", None, 0o777);
    add("./bin/", None, 0o777);
    add("./share/doc/", None, 0o700);
    add("./bin/tool", Some(b"#!/bin/sh\necho tool\n"), 0o777);
    add("./share/doc/README", Some(b"read me\n"), 0o666);
    b.into_inner().unwrap().finish().unwrap();
}

#[test]
fn archive_directory_modes_never_change_an_existing_directory_or_widen_created_ones() {
    let f = Fixture::new();
    std::fs::create_dir_all(f.path("files")).unwrap();
    careless_tarball(&f.path("files/tool.tgz"));
    let spec = serde_json::json!({
        "apiVersion": "bundle/v1", "name": "dirmode", "version": "1", "serial": 1,
        "target": {"os": "linux", "arch": "amd64"},
        "artifacts": {"tool": {"url": "file:files/tool.tgz"}},
        "steps": [{"kind": "extract", "artifact": "tool", "dest": "/usr/local"}],
    });
    let path = kit::write_pinned_spec(&f, "dirmode.json", &spec);
    let b = f.build(&path, "dirmode.tar.zst");
    // An existing /usr/local/bin keeps 0755 and its owner.
    let root = f.path("existing");
    std::fs::create_dir_all(root.join("usr/local/bin")).unwrap();
    std::fs::set_permissions(
        root.join("usr/local/bin"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::set_permissions(
        root.join("usr/local"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    kit::install(&root, &b, &f.keys.public, &[], &[]).code(0);
    assert_eq!(mode(&root.join("usr/local")), 0o755);
    assert_eq!(mode(&root.join("usr/local/bin")), 0o755);
    // Created ones get 0755, whatever the archive said (0777 and 0700).
    let root2 = f.path("created");
    std::fs::create_dir_all(root2.join("usr")).unwrap();
    kit::install(&root2, &b, &f.keys.public, &[], &[]).code(0);
    for d in [
        "usr/local",
        "usr/local/bin",
        "usr/local/share",
        "usr/local/share/doc",
    ] {
        assert_eq!(mode(&root2.join(d)), 0o755, "{d}");
    }
    // Files: the archive's bits without group/other write; owner root.
    for r in [&root, &root2] {
        assert_eq!(mode(&r.join("usr/local/bin/tool")), 0o755);
        assert_eq!(mode(&r.join("usr/local/share/doc/README")), 0o644);
        for p in [
            "usr/local/bin/tool",
            "usr/local/share/doc/README",
            "usr/local/bin",
        ] {
            let m = std::fs::symlink_metadata(r.join(p)).unwrap();
            assert_eq!(
                (m.uid(), m.gid()),
                (0, 0),
                "{p} is owned by root, not the archive's 1001"
            );
        }
    }
    // And the re-run changes nothing.
    kit::install(&root2, &b, &f.keys.public, &[], &[])
        .code(0)
        .stdout_has("0 changed");
}

#[test]
fn a_read_only_target_file_system_is_refused_at_preflight_with_nothing_changed() {
    let f = Fixture::new();
    std::fs::write(f.path("x"), "#!/bin/sh\necho x\n").unwrap();
    let spec = serde_json::json!({
        "apiVersion": "bundle/v1", "name": "ro", "version": "1", "serial": 1,
        "target": {"os": "linux", "arch": "amd64"},
        "artifacts": {"x": {"url": "file:x"}},
        "steps": [
            {"kind": "file", "dest": "/etc/app.conf", "mode": "0644", "content": "a\n"},
            {"kind": "binary", "artifact": "x", "dest": "/usr/local/bin/x", "mode": "0755"},
        ],
    });
    let path = kit::write_pinned_spec(&f, "ro.json", &spec);
    let b = f.build(&path, "ro.tar.zst");
    let root = f.path("root");
    std::fs::create_dir_all(root.join("usr/local")).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    let mount = match Mount::tmpfs(&root.join("usr/local"), "size=64m") {
        Ok(m) => m,
        Err(e) => {
            assert!(
                std::env::var_os("BUNDLE_E2E_REQUIRED").is_none(),
                "cannot mount a tmpfs: {e}"
            );
            eprintln!("SKIPPED: {e}");
            return;
        }
    };
    std::fs::create_dir(root.join("usr/local/bin")).unwrap();
    let remount = |opt: &str| {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,{opt}")])
            .arg(root.join("usr/local"))
            .status()
            .unwrap();
        assert!(st.success());
    };
    remount("ro");
    let before = tree_listing(&root);
    let out = kit::install(&root, &b, &f.keys.public, &[], &[]);
    out.code(4)
        .stderr_has("/usr/local/bin/x is on a read-only file system")
        .stderr_has("nothing was changed");
    assert!(
        diff_listings(&before, &tree_listing(&root)).is_empty(),
        "{out}"
    );
    // Every later run behaves the same (no journal was left behind) ...
    kit::install(&root, &b, &f.keys.public, &[], &[]).code(4);
    // ... and once writable, installs.
    remount("rw");
    kit::install(&root, &b, &f.keys.public, &[], &[]).code(0);
    drop(mount);
}

#[test]
fn a_failed_last_command_fully_rolled_back_exits_5_and_says_the_command_ran() {
    let f = Fixture::new();
    let root = f.path("r");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    // `false` runnable in the root (chroot): the host's binary and libraries.
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy("/bin/false", root.join("bin/false")).unwrap();
    let ldd = Command::new("ldd").arg("/bin/false").output().unwrap();
    for lib in String::from_utf8_lossy(&ldd.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
    {
        let to = root.join(lib.trim_start_matches('/'));
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(lib, to).unwrap();
    }
    let mk = |serial: u64, fail: bool| {
        let mut steps = vec![
            serde_json::json!({"kind": "file", "dest": "/etc/app.conf", "content": format!("v{serial}\n")}),
        ];
        if fail {
            steps.push(serde_json::json!({"kind": "command", "argv": ["false"], "in_root": true}));
        }
        let spec = serde_json::json!({
            "apiVersion": "bundle/v1", "name": "v1-cmd", "version": format!("{serial}"), "serial": serial,
            "target": {"os": "linux", "arch": "amd64"}, "artifacts": {}, "steps": steps,
        });
        let path = kit::write_pinned_spec(&f, &format!("s{serial}.json"), &spec);
        f.build(&path, &format!("s{serial}.tar.zst"))
    };
    let s1 = mk(1, false);
    let s2 = mk(2, true);
    kit::install(&root, &s1, &f.keys.public, &[], &[]).code(0);
    let before = tree_listing(&root);
    let out = kit::install(&root, &s2, &f.keys.public, &[], &[]);
    out.code(5)
        .stderr_has("apply failed and was rolled back: step 2 (command)")
        .stderr_has("ran and failed (it may have had effects of its own, outside the journal): command: false")
        .stderr_has("the host is as it was before this run");
    assert!(!out.stderr.contains("NOT fully"), "{out}");
    assert_eq!(
        std::fs::read_to_string(root.join("etc/app.conf")).unwrap(),
        "v1\n"
    );
    assert!(diff_listings(&before, &tree_listing(&root)).is_empty());
    // Nothing is left to recover.
    run(
        &installer(),
        ["recover".as_ref(), "--root".as_ref(), root.as_os_str()],
        &[],
    )
    .code(0)
    .stdout_has("nothing to recover");
}

#[test]
fn what_the_installer_creates_has_the_same_modes_whatever_the_umask() {
    let f = Fixture::new();
    let b = f.bundle();
    let mut listings = Vec::new();
    for umask in ["022", "077", "000"] {
        let root = f.root(&format!("umask-{umask}"));
        let args: Vec<String> =
            kit::install_args(&root, &b, &f.keys.public, &["--set=POD_CIDR=10.0.0.0/24"])
                .into_iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("umask {umask} && exec \"$0\" \"$@\""))
            .arg(installer())
            .args(&args)
            .output()
            .unwrap();
        assert!(out.status.success(), "umask {umask}: {out:?}");
        let mut l = tree_listing(&root);
        l.remove("var/lib/install-bundle/lock");
        for (k, v) in l.iter_mut() {
            if k.ends_with(".json") {
                // The receipt's timestamp differs; its mode must not.
                *v = v.split(" size=").next().unwrap().to_owned();
            }
        }
        listings.push((umask, l));
    }
    for (umask, l) in &listings[1..] {
        let diff = diff_listings(&listings[0].1, l);
        assert!(
            diff.is_empty(),
            "umask {umask} vs 022:\n{}",
            diff.join("\n")
        );
    }
    let l = &listings[0].1;
    assert!(
        l["var/lib/install-bundle"].contains("mode=0755"),
        "{}",
        l["var/lib/install-bundle"]
    );
    assert!(l["var/lib/install-bundle/k8s-worker.json"].contains("mode=0644"));
    assert!(l["var/lib/kubelet"].contains("mode=0755"));
}

#[test]
fn directories_below_run_come_back_at_every_boot_through_a_tmpfiles_entry() {
    // Found on a booted machine (tests/tests/vm_worker.rs): the worker's
    // /var/run/kubernetes is on the /run tmpfs, gone after a reboot, and
    // `status` reported it missing. The installer writes a tmpfiles.d line
    // for each directory below /run (as resolved inside the root), and
    // systemd-tmpfiles — the oracle here — makes them again at boot.
    let f = Fixture::new();
    let first = [serde_json::json!({"kind": "directory",
        "paths": ["/var/run/kubernetes", "/var/lib/app", "/run/app/sub"], "mode": "0750"})];
    let spec = kit::files_only_spec(&first, &[]);
    let path = kit::write_pinned_spec(&f, "run.json", &spec);
    let b = f.build(&path, "run.tar.zst");
    let root = f.root("root");
    std::fs::create_dir_all(root.join("run")).unwrap();
    std::fs::create_dir_all(root.join("var")).unwrap();
    std::os::unix::fs::symlink("/run", root.join("var/run")).unwrap();
    kit::install(
        &root,
        &b,
        &f.keys.public,
        &["--set=POD_CIDR=10.0.0.0/24"],
        &[],
    )
    .code(0);
    let conf = root.join("etc/tmpfiles.d/install-bundle-files-only.conf");
    let text = std::fs::read_to_string(&conf).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        lines,
        [
            "d /run/kubernetes 0750 root root -",
            "d /run/app/sub 0750 root root -"
        ],
        "{text}"
    );
    assert_eq!(mode(&conf), 0o644);
    let status = |root: &Path| {
        run(
            &installer(),
            [
                "status".as_ref(),
                "files-only".as_ref(),
                "--root".as_ref(),
                root.as_os_str(),
            ],
            &[],
        )
    };
    status(&root).code(0).stdout_has(&format!(
        "file       {} ok",
        "/etc/tmpfiles.d/install-bundle-files-only.conf"
    ));
    // A reboot empties /run; systemd-tmpfiles-setup makes them again.
    std::fs::remove_dir_all(root.join("run")).unwrap();
    std::fs::create_dir(root.join("run")).unwrap();
    status(&root)
        .code(7)
        .stdout_has("/var/run/kubernetes missing");
    if bundle_tests::debootstrap::have("systemd-tmpfiles") {
        let out = Command::new("systemd-tmpfiles")
            .arg(format!("--root={}", root.display()))
            .arg("--create")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        status(&root).code(0);
        assert_eq!(mode(&root.join("run/kubernetes")), 0o750);
    } else {
        eprintln!("systemd-tmpfiles not installed: the boot is not replayed");
    }
    // A re-run changes nothing; a bundle without such directories has no file.
    kit::install(
        &root,
        &b,
        &f.keys.public,
        &["--set=POD_CIDR=10.0.0.0/24"],
        &[],
    )
    .code(0)
    .stdout_has("0 changed");
    let plain = kit::files_only_spec(&[], &[]);
    let path = kit::write_pinned_spec(&f, "plain.json", &plain);
    let b = f.build(&path, "plain.tar.zst");
    let other = f.root("other");
    kit::install(
        &other,
        &b,
        &f.keys.public,
        &["--set=POD_CIDR=10.0.0.0/24"],
        &[],
    )
    .code(0);
    assert!(!other.join("etc/tmpfiles.d").exists());
}
