//! Hostile upstream tarballs inside `extract` artifacts (issue #5, case 6),
//! end to end. `bundler build` reads every archive with the installer's own
//! reader and refuses these (checked for each case); a bundle holding one
//! can still be signed by an older bundler or another tool, so each case
//! also makes one (built with the good archive, the hostile one swapped in,
//! the manifest re-signed with the trusted key): `bundler verify` accepts it
//! (it is authentic) and `install-bundle` must refuse it by policy (exit 4)
//! before changing anything: the root's tree hash is identical before and
//! after, and nothing appears outside the root. (bundle-spec/tests/extract.rs
//! tests the extract module itself, member by member.)

use std::path::{Path, PathBuf};

use bundle_tests::cli::{Output, bundler, run};
use bundle_tests::fixture::Fixture;
use bundle_tests::kit::{self, RawEntry};
use bundle_tests::tree::{diff_listings, tree_hash, tree_listing};

const CIDR: &str = "--set=POD_CIDR=172.16.1.0/24";

/// A regular file member.
fn file(name: &str, data: &[u8], mode: u32) -> RawEntry {
    let mut e = RawEntry::file("x", data.to_vec());
    e.set_name(name);
    e.set_mode(mode);
    e
}

fn symlink(name: &str, target: &str) -> RawEntry {
    let mut e = RawEntry::special(name, b'2', target, Vec::new());
    e.set_mode(0o777);
    e
}

/// The fixture, whose `containerd` archive (step: `extract` into /bin with
/// `strip_components: 1`, no include) or `crictl` archive (step: `extract`
/// into /usr/local/bin, include `["crictl"]`) is replaced by `members`.
struct Case {
    f: Fixture,
    bundle: PathBuf,
    root: PathBuf,
}

impl Case {
    fn new(archive: &str, members: &[RawEntry]) -> Self {
        let f = Fixture::new();
        let tar = kit::tar_bytes(members);
        let hostile = zstd::encode_all(&tar[..], 3).unwrap();
        let file = f.path(&format!("files/{archive}.tar.zst"));
        // The good bundle, pinned and built from the fixture's archives.
        let spec = f.write_spec("spec.json", 1, &[]);
        let built = f.build(&spec, "good.tar.zst");
        // The spec pinned to the hostile archive instead.
        let good = std::fs::read(&file).unwrap();
        std::fs::write(&file, &hostile).unwrap();
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&spec).unwrap()).unwrap();
        v["artifacts"][archive]["sha256"] = kit::sha256_hex(&hostile).into();
        v["artifacts"][archive]["size"] = hostile.len().into();
        std::fs::write(&spec, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
        let bundle = f.path("hostile.tar.zst");
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
                "--quiet".as_ref(),
            ],
            &[],
        );
        std::fs::write(&file, &good).unwrap();
        if out.code != 0 {
            // bundler refuses to pack it, saying why...
            out.code(1)
                .stderr_has(&format!("artifact {archive} does not fit the extract step"));
            assert!(!bundle.exists());
            // ...so the bundle is made as another tool would: the good one
            // with the hostile archive swapped in, re-signed.
            kit::replace_artifact(&built, &bundle, archive, &hostile, &f.keys.secret);
        }
        let root = f.root("root");
        // Something worth stealing or overwriting.
        std::fs::write(
            root.join("etc/shadow"),
            "root:$6$secret:19000:0:99999:7:::\n",
        )
        .unwrap();
        std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
        Self { f, bundle, root }
    }

    /// Authentic: `bundler verify` accepts it.
    fn assert_authentic(&self) {
        run(
            &bundler(),
            [
                "verify".as_ref(),
                self.bundle.as_os_str(),
                "--key".as_ref(),
                self.f.keys.public.as_os_str(),
            ],
            &[],
        )
        .code(0);
    }

    fn install(&self) -> Output {
        kit::install(&self.root, &self.bundle, &self.f.keys.public, &[CIDR], &[])
    }

    /// Refused with exit 4 naming `member` and `reason`; root unchanged;
    /// nothing written next to the root either.
    #[track_caller]
    fn assert_refused(&self, member: &str, reason: &str) {
        self.assert_authentic();
        let before = tree_hash(&self.root);
        let listing = tree_listing(&self.root);
        let outside = tree_hash(self.f.dir.path());
        let out = self.install();
        out.code(4)
            .stderr_has(member)
            .stderr_has(reason)
            .stderr_has("nothing was changed");
        assert!(
            tree_hash(&self.root) == before,
            "the root changed:\n{}",
            diff_listings(&listing, &tree_listing(&self.root)).join("\n")
        );
        assert_eq!(
            tree_hash(self.f.dir.path()),
            outside,
            "something changed next to the root"
        );
        assert!(!Path::new("/tmp/ib-hostile-escape").exists());
    }
}

fn good_containerd() -> Vec<RawEntry> {
    vec![
        file("bin/containerd", b"#!/bin/sh\necho containerd\n", 0o755),
        file("bin/ctr", b"#!/bin/sh\necho ctr\n", 0o755),
    ]
}

#[test]
fn extract_member_with_dotdot_is_refused() {
    for name in [
        "bin/../../../../../../../../../tmp/ib-hostile-escape",
        "../etc/cron.d/evil",
        "bin/./../../etc/passwd",
    ] {
        let mut m = good_containerd();
        m.push(file(name, b"* * * * * root id\n", 0o644));
        let c = Case::new("containerd", &m);
        c.assert_refused(name, "unsafe name");
    }
}

#[test]
fn extract_absolute_member_is_refused() {
    for name in ["/etc/cron.d/evil", "/tmp/ib-hostile-escape", "//etc/passwd"] {
        let mut m = good_containerd();
        m.push(file(name, b"evil\n", 0o644));
        let c = Case::new("containerd", &m);
        c.assert_refused(name, "unsafe name");
    }
}

#[test]
fn extract_symlink_pointing_outside_then_a_file_through_it_is_refused() {
    // Absolute target, relative target climbing out of dest, and a link to
    // a place inside dest that is fine on its own but has a file written
    // through a second link that climbs.
    let cases: Vec<(Vec<RawEntry>, &str)> = vec![
        (
            vec![
                symlink("bin/etc", "/etc"),
                file("bin/etc/shadow", b"root::0:0:::::\n", 0o600),
            ],
            "bin/etc",
        ),
        (
            vec![
                symlink("bin/up", "../../../../etc"),
                file("bin/up/passwd", b"evil::0:0::/:/bin/sh\n", 0o644),
            ],
            "bin/up",
        ),
        (
            // The file first, then the link: order does not matter.
            vec![
                file("bin/lnk/shadow", b"root::0:0:::::\n", 0o600),
                symlink("bin/lnk", "/etc"),
            ],
            "bin/lnk",
        ),
        (
            vec![
                symlink("bin/a", "."),
                symlink("bin/b", "a/../../../etc"),
                file("bin/b/shadow", b"x\n", 0o600),
            ],
            "bin/b",
        ),
    ];
    for (extra, member) in cases {
        let mut m = good_containerd();
        m.extend(extra);
        let c = Case::new("containerd", &m);
        c.assert_refused(member, "refused");
    }
}

#[test]
fn extract_hard_link_to_etc_shadow_is_refused() {
    for target in ["/etc/shadow", "../../etc/shadow", "bin/containerd"] {
        let mut m = good_containerd();
        m.push(RawEntry::special("bin/shadow", b'1', target, Vec::new()));
        let c = Case::new("containerd", &m);
        c.assert_refused("bin/shadow", "hard link");
    }
}

#[test]
fn extract_setuid_file_is_refused() {
    for mode in [0o4755, 0o2755, 0o6777] {
        let mut m = good_containerd();
        m[0].set_mode(mode);
        let c = Case::new("containerd", &m);
        c.assert_refused("bin/containerd", "setuid/setgid");
    }
}

#[test]
fn extract_device_node_is_refused() {
    let cases = [
        (b'3', 1, 3, "character device"),
        (b'4', 8, 0, "block device"),
        (b'6', 0, 0, "FIFO"),
    ];
    for (flag, major, minor, what) in cases {
        let mut m = good_containerd();
        let mut dev = RawEntry::special("bin/disk", flag, "", Vec::new());
        dev.set_mode(0o666);
        dev.set_device(major, minor);
        m.push(dev);
        let c = Case::new("containerd", &m);
        c.assert_refused("bin/disk", what);
    }
}

#[test]
fn extract_member_named_like_the_include_glob_in_another_directory_is_not_installed() {
    // include ["crictl"]: only the top-level crictl, never evil/crictl
    // (`*` and plain names do not cross `/`).
    let m = vec![
        file("evil/crictl", b"#!/bin/sh\necho evil\n", 0o755),
        file("crictl", b"#!/bin/sh\necho crictl\n", 0o755),
        file("sub/dir/crictl", b"#!/bin/sh\necho evil\n", 0o755),
        file("LICENSE", b"license\n", 0o644),
    ];
    let c = Case::new("crictl", &m);
    c.assert_authentic();
    c.install().code(0);
    assert_eq!(
        std::fs::read(c.root.join("usr/local/bin/crictl")).unwrap(),
        b"#!/bin/sh\necho crictl\n"
    );
    for p in [
        "usr/local/bin/evil",
        "usr/local/bin/sub",
        "usr/local/bin/LICENSE",
    ] {
        assert!(!c.root.join(p).exists(), "{p} was extracted");
    }
    let listing = tree_listing(&c.root);
    assert!(
        !listing
            .values()
            .any(|d| d.contains(&kit::sha256_hex(b"#!/bin/sh\necho evil\n"))),
        "an evil crictl was installed somewhere"
    );
    // Only the look-alikes: the glob matches nothing, refused.
    let m = vec![file("evil/crictl", b"#!/bin/sh\necho evil\n", 0o755)];
    let c = Case::new("crictl", &m);
    c.assert_refused("crictl", "matched no member");
}
