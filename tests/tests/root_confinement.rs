//! `--root R` confines every path operation to R, as a chroot would
//! (issue 12, item 1; reproducer `shared/cases/01`): absolute and relative
//! symlinks, `..`-climbing links, link loops and links to files where a
//! directory is expected, planted at every kind of component the bundle's
//! steps touch. For each: a "host" directory outside the root (the place
//! every hostile link points at) is byte-, mode- and owner-identical after
//! `plan`, `install`, a re-run, `status` and `recover`; the install either
//! succeeds with everything inside R or is refused before changing anything
//! (exit 4) — never anything else.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use bundle_tests::cli::{Output, installer, run};
use bundle_tests::fixture::Fixture;
use bundle_tests::kit;
use bundle_tests::tree::{diff_listings, tree_listing};

const CIDR: &str = "--set=POD_CIDR=172.16.1.0/24";

/// A fixture whose bundle writes files, extracts archives, makes
/// directories, edits fstab, writes modules-load.d and enables a unit.
fn bundle(f: &Fixture) -> PathBuf {
    let spec = kit::files_only_spec(&[serde_json::json!({"kind": "swap-off"})], &[]);
    let path = kit::write_pinned_spec(f, "confine.json", &spec);
    f.build(&path, "confine.tar.zst")
}

/// The "host": what every hostile link points at, with things worth
/// overwriting or chmodding in it.
fn host(f: &Fixture) -> PathBuf {
    let h = f.path("host");
    for d in [
        "etc/cni/net.d",
        "usr/local/bin",
        "kubelet",
        "systemd/system",
        "state",
        "bin",
    ] {
        std::fs::create_dir_all(h.join(d)).unwrap();
    }
    std::fs::write(h.join("usr/local/bin/runc"), "host runc\n").unwrap();
    std::fs::write(h.join("fstab"), "/host.swap none swap sw 0 0\n").unwrap();
    std::fs::write(h.join("file"), "a file\n").unwrap();
    std::fs::write(h.join("bin/containerd"), "host containerd\n").unwrap();
    std::fs::write(h.join("etc/cni/net.d/10-bridge.conf"), "host\n").unwrap();
    for (p, mode) in [("kubelet", 0o700), ("etc/cni/net.d", 0o750), ("bin", 0o711)] {
        std::fs::set_permissions(
            h.join(p),
            std::os::unix::fs::PermissionsExt::from_mode(mode),
        )
        .unwrap();
    }
    h
}

/// `..` components that climb from `link`'s directory (below `root`) to `/`.
fn climb(root: &Path, link: &str) -> String {
    let depth = root.components().count() + link.matches('/').count();
    "../".repeat(depth + 3)
}

fn run_all(f: &Fixture, bundle: &Path, root: &Path) -> Vec<Output> {
    let key = f.keys.public.as_path();
    let mut outs = Vec::new();
    let plan = kit::install_args(root, bundle, key, &[CIDR]);
    let mut plan_args = vec!["plan".into()];
    plan_args.extend(plan);
    outs.push(run(&installer(), plan_args, &[]));
    outs.push(kit::install(root, bundle, key, &[CIDR], &[]));
    outs.push(kit::install(root, bundle, key, &[CIDR], &[]));
    outs.push(run(
        &installer(),
        [
            "status".as_ref(),
            "files-only".as_ref(),
            "--root".as_ref(),
            root.as_os_str(),
        ],
        &[],
    ));
    outs.push(run(
        &installer(),
        ["recover".as_ref(), "--root".as_ref(), root.as_os_str()],
        &[],
    ));
    outs
}

/// Plants one hostile link (or several) with `plant(root, host)`, runs every
/// command, and checks the host and the outcome.
#[track_caller]
fn confined(
    name: &str,
    plant: impl Fn(&Path, &Path),
    expect_installed: bool,
) -> (Fixture, PathBuf, PathBuf) {
    let f = Fixture::new();
    let b = bundle(&f);
    let h = host(&f);
    let root = f.root(name);
    plant(&root, &h);
    let before = tree_listing(&h);
    let outs = run_all(&f, &b, &root);
    let diff = diff_listings(&before, &tree_listing(&h));
    assert!(
        diff.is_empty(),
        "{name}: the host outside --root changed:\n{}\n{}",
        diff.join("\n"),
        outs.iter()
            .map(|o| o.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
    let install = &outs[1];
    if expect_installed {
        install.code(0);
        outs[2].code(0).stdout_has("0 changed");
        outs[3].code(0);
    } else {
        install.code(4).stderr_has("nothing was changed");
        outs[2].code(4);
    }
    assert!(
        outs[4].code == 0,
        "{name}: recover after that exits 0\n{}",
        outs[4]
    );
    (f, h, root)
}

#[test]
fn absolute_symlink_as_a_directory_steps_target_is_resolved_inside_the_root() {
    // The shape of Debian's var/run -> /run, at /var/lib/kubelet.
    let (_f, h, root) = confined(
        "abs-final",
        |r, h| {
            std::fs::create_dir_all(r.join("var/lib")).unwrap();
            symlink(h.join("kubelet"), r.join("var/lib/kubelet")).unwrap();
            // The link's target exists inside the root too: used there.
            std::fs::create_dir_all(r.join(h.join("kubelet").strip_prefix("/").unwrap())).unwrap();
        },
        true,
    );
    let inside = root.join(h.join("kubelet").strip_prefix("/").unwrap());
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&inside).unwrap().permissions());
    assert_eq!(
        mode & 0o7777,
        0o755,
        "the step's mode lands inside the root"
    );
}

#[test]
fn absolute_symlink_to_nothing_inside_the_root_is_refused() {
    confined(
        "abs-dangling",
        |r, h| {
            std::fs::create_dir_all(r.join("var/lib")).unwrap();
            symlink(h.join("kubelet"), r.join("var/lib/kubelet")).unwrap();
        },
        false,
    );
}

#[test]
fn absolute_symlink_as_a_parent_directory_never_leads_out() {
    // /etc/cni -> HOST/etc/cni: the file step's parent.
    confined(
        "abs-parent",
        |r, h| {
            symlink(h.join("etc/cni"), r.join("etc/cni")).unwrap();
        },
        false,
    );
}

#[test]
fn relative_links_climbing_above_the_root_stop_at_the_root() {
    // usr/local -> ../../../..(far above R)/HOST/usr/local: resolves to
    // R/HOST/usr/local, which does not exist, so the binary is refused; and
    // with it present inside R, the install lands there.
    confined(
        "climb-missing",
        |r, h| {
            std::fs::remove_dir_all(r.join("usr/local")).unwrap();
            let to = format!(
                "{}{}",
                climb(r, "usr/local"),
                h.join("usr/local").strip_prefix("/").unwrap().display()
            );
            symlink(to, r.join("usr/local")).unwrap();
        },
        false,
    );
    let (_f, h, root) = confined(
        "climb-present",
        |r, h| {
            std::fs::remove_dir_all(r.join("usr/local")).unwrap();
            let to = format!(
                "{}{}",
                climb(r, "usr/local"),
                h.join("usr/local").strip_prefix("/").unwrap().display()
            );
            symlink(to, r.join("usr/local")).unwrap();
            std::fs::create_dir_all(r.join(h.join("usr/local/bin").strip_prefix("/").unwrap()))
                .unwrap();
        },
        true,
    );
    let inside = root.join(h.join("usr/local/bin/runc").strip_prefix("/").unwrap());
    assert_eq!(
        std::fs::read(inside).unwrap(),
        bundle_tests::fixture::runc_bytes()
    );
}

#[test]
fn dot_dot_symlink_to_the_root_itself_stays_in_the_root() {
    // bin -> ../../../.. (climbs past R): resolves to R itself, so /bin/ctr
    // is R/ctr, never the host's /ctr.
    let (_f, _h, root) = confined(
        "dotdot-root",
        |r, _h| {
            std::fs::remove_file(r.join("bin")).unwrap();
            symlink(climb(r, "bin"), r.join("bin")).unwrap();
        },
        true,
    );
    assert!(root.join("containerd").is_file());
    assert!(!Path::new("/containerd").exists());
}

#[test]
fn symlink_loops_are_refused() {
    confined(
        "loop",
        |r, _h| {
            std::fs::create_dir_all(r.join("etc")).unwrap();
            symlink("loop-b", r.join("etc/systemd")).unwrap();
            symlink("systemd", r.join("etc/loop-b")).unwrap();
        },
        false,
    );
}

#[test]
fn links_to_files_where_a_directory_is_expected_are_refused() {
    confined(
        "file-as-dir",
        |r, h| {
            symlink(h.join("file"), r.join("etc/modules-load.d")).unwrap();
        },
        false,
    );
    confined(
        "relative-file-as-dir",
        |r, _h| {
            std::fs::write(r.join("etc/not-a-dir"), "x").unwrap();
            symlink("not-a-dir", r.join("etc/modules-load.d")).unwrap();
        },
        false,
    );
}

#[test]
fn a_symlink_where_a_file_goes_is_replaced_never_written_through() {
    let (_f, _h, root) = confined(
        "file-link",
        |r, h| {
            std::fs::remove_file(r.join("usr/local/bin/runc")).unwrap();
            symlink(h.join("usr/local/bin/runc"), r.join("usr/local/bin/runc")).unwrap();
            std::fs::remove_file(r.join("etc/fstab")).unwrap();
            std::fs::write(r.join("etc/fstab"), "/swap.img none swap sw 0 0\n").unwrap();
            symlink(
                h.join("etc/cni/net.d/10-bridge.conf"),
                r.join("etc/cni-conf-link"),
            )
            .unwrap();
        },
        true,
    );
    let m = std::fs::symlink_metadata(root.join("usr/local/bin/runc")).unwrap();
    assert!(m.is_file(), "the planted link was replaced by the file");
}

#[test]
fn the_state_directory_is_resolved_inside_the_root() {
    // var/lib/install-bundle -> HOST/state: the journal, staging and
    // receipts would land on the host. Inside R it leads nowhere: refused.
    let f = Fixture::new();
    let b = bundle(&f);
    let h = host(&f);
    let root = f.root("state-link");
    std::fs::create_dir_all(root.join("var/lib")).unwrap();
    symlink(h.join("state"), root.join("var/lib/install-bundle")).unwrap();
    let before = tree_listing(&h);
    let out = kit::install(&root, &b, &f.keys.public, &[CIDR], &[]);
    assert_ne!(out.code, 0, "{out}");
    assert!(
        diff_listings(&before, &tree_listing(&h)).is_empty(),
        "{out}"
    );
    // With the target present inside R, state goes there.
    std::fs::create_dir_all(root.join(h.join("state").strip_prefix("/").unwrap())).unwrap();
    kit::install(&root, &b, &f.keys.public, &[CIDR], &[]).code(0);
    assert!(diff_listings(&before, &tree_listing(&h)).is_empty());
    assert!(
        root.join(h.join("state/files-only.json").strip_prefix("/").unwrap())
            .is_file()
    );
}

#[test]
fn extract_destination_behind_an_absolute_link_lands_inside_the_root() {
    // /bin -> HOST/bin (a usr-merge link gone absolute): the containerd
    // tarball goes to R/HOST/bin, never to HOST/bin.
    let (_f, h, root) = confined(
        "abs-extract",
        |r, h| {
            std::fs::remove_file(r.join("bin")).unwrap();
            symlink(h.join("bin"), r.join("bin")).unwrap();
            std::fs::create_dir_all(r.join(h.join("bin").strip_prefix("/").unwrap())).unwrap();
        },
        true,
    );
    assert!(
        root.join(h.join("bin/containerd").strip_prefix("/").unwrap())
            .is_file()
    );
}

#[test]
fn a_hostile_link_swapped_in_after_install_is_reported_not_followed_by_status() {
    let f = Fixture::new();
    let b = bundle(&f);
    let h = host(&f);
    let root = f.root("status");
    kit::install(&root, &b, &f.keys.public, &[CIDR], &[]).code(0);
    std::fs::remove_file(root.join("usr/local/bin/runc")).unwrap();
    symlink(
        h.join("usr/local/bin/runc"),
        root.join("usr/local/bin/runc"),
    )
    .unwrap();
    let out = run(
        &installer(),
        [
            "status".as_ref(),
            "files-only".as_ref(),
            "--root".as_ref(),
            root.as_os_str(),
        ],
        &[],
    );
    out.code(7)
        .stdout_has("/usr/local/bin/runc not a regular file any more");
    // Re-installing replaces the link; the host file is untouched.
    let before = tree_listing(&h);
    kit::install(&root, &b, &f.keys.public, &[CIDR], &[]).code(0);
    assert!(diff_listings(&before, &tree_listing(&h)).is_empty());
    assert!(
        std::fs::symlink_metadata(root.join("usr/local/bin/runc"))
            .unwrap()
            .is_file()
    );
}

#[test]
fn the_installer_works_in_a_chroot_without_proc() {
    // Image builders chroot into a root that has no /proc mounted: path
    // resolution (openat2) and finding the state directory's path must not
    // need it.
    let bin = installer();
    if !bin.ends_with("static/install-bundle") {
        eprintln!("SKIPPED: needs the static installer (make static)");
        return;
    }
    let f = Fixture::new();
    let b = bundle(&f);
    let root = f.root("chroot");
    std::fs::copy(&bin, root.join("install-bundle")).unwrap();
    std::fs::copy(&b, root.join("b.tar.zst")).unwrap();
    std::fs::copy(&f.keys.public, root.join("k.pub")).unwrap();
    assert!(!root.join("proc/self").exists());
    let chroot = |args: &[&str]| {
        let mut argv: Vec<&std::ffi::OsStr> = vec![root.as_os_str(), "/install-bundle".as_ref()];
        argv.extend(args.iter().map(|a| std::ffi::OsStr::new(*a)));
        run(Path::new("/usr/sbin/chroot"), argv, &[])
    };
    chroot(&["/b.tar.zst", "--trusted-key", "/k.pub", CIDR])
        .code(0)
        .stdout_has("files-only 1.0-1 (serial 1) installed");
    assert_eq!(
        std::fs::read(root.join("usr/local/bin/runc")).unwrap(),
        bundle_tests::fixture::runc_bytes()
    );
    chroot(&["status", "files-only"]).code(0);
    chroot(&["/b.tar.zst", "--trusted-key", "/k.pub", CIDR])
        .code(0)
        .stdout_has("0 changed");
}
