//! `extract` steps: what upstream tarballs may and may not do.
//!
//! Every archive is built here, byte by byte where the `tar` crate's builder
//! would refuse a hostile name.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::PathBuf;

use bundle_spec::Sha256Digest;
use bundle_spec::extract::{
    ExtractError, ExtractLimits, MAX_DECOMPRESSED_BYTES, MAX_MEMBERS, Member, MemberKind,
    for_each_file, scan, scan_with_limits,
};
use bundle_spec::spec::ExtractStep;
use tar::{EntryType, Header};

/// Builds a tar archive in memory.
struct Tar(tar::Builder<Vec<u8>>);

impl Tar {
    fn new() -> Self {
        Tar(tar::Builder::new(Vec::new()))
    }

    /// Appends an entry with raw name and link name bytes (up to 100 each),
    /// so that hostile names get in unchanged.
    fn raw(mut self, name: &[u8], kind: EntryType, mode: u32, link: &[u8], data: &[u8]) -> Self {
        let mut h = Header::new_gnu();
        {
            let old = h.as_old_mut();
            old.name[..name.len()].copy_from_slice(name);
            old.linkname[..link.len()].copy_from_slice(link);
        }
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(data.len() as u64);
        h.set_entry_type(kind);
        h.set_cksum();
        self.0.append(&h, data).unwrap();
        self
    }

    fn file(self, name: &str, data: &[u8]) -> Self {
        self.file_mode(name, 0o644, data)
    }

    fn file_mode(self, name: &str, mode: u32, data: &[u8]) -> Self {
        self.raw(name.as_bytes(), EntryType::Regular, mode, b"", data)
    }

    fn dir(self, name: &str) -> Self {
        self.dir_mode(name, 0o755)
    }

    fn dir_mode(self, name: &str, mode: u32) -> Self {
        self.raw(name.as_bytes(), EntryType::Directory, mode, b"", b"")
    }

    fn symlink(self, name: &str, target: &str) -> Self {
        self.raw(
            name.as_bytes(),
            EntryType::Symlink,
            0o777,
            target.as_bytes(),
            b"",
        )
    }

    /// A PAX extended header ('x') for the next entry.
    fn pax(self, records: &[(&str, &[u8])]) -> Self {
        self.pax_kind(EntryType::XHeader, records)
    }

    fn pax_kind(self, kind: EntryType, records: &[(&str, &[u8])]) -> Self {
        let mut data = Vec::new();
        for (key, value) in records {
            // "LEN key=value\n", where LEN counts its own digits too.
            let body = key.len() + value.len() + 3;
            let mut len = body + 1;
            while len != body + len.to_string().len() {
                len = body + len.to_string().len();
            }
            write!(data, "{len} {key}=").unwrap();
            data.extend_from_slice(value);
            data.push(b'\n');
        }
        self.raw(b"PaxHeaders/entry", kind, 0o644, b"", &data)
    }

    /// A regular file whose long name the builder writes as a GNU long-name entry.
    fn gnu_long_file(mut self, name: &str, data: &[u8]) -> Self {
        let mut h = Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_entry_type(EntryType::Regular);
        self.0.append_data(&mut h, name, data).unwrap();
        self
    }

    fn bytes(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }
}

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn xz(data: &[u8]) -> Vec<u8> {
    let mut e = liblzma::write::XzEncoder::new(Vec::new(), 6);
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zst(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}

/// A staged artifact file (no extension: the container is found by content).
struct Staged {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

fn stage(bytes: &[u8]) -> Staged {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("artifact");
    std::fs::write(&path, bytes).unwrap();
    Staged { _dir: dir, path }
}

fn step(include: Option<&[&str]>, strip_components: u32) -> ExtractStep {
    ExtractStep {
        artifact: "tool".parse().unwrap(),
        dest: "/usr/local/bin".parse().unwrap(),
        include: include.map(|globs| globs.iter().map(|g| g.to_string()).collect()),
        strip_components,
        allow_setuid: false,
    }
}

fn all() -> ExtractStep {
    step(None, 0)
}

fn scan_bytes(bytes: &[u8], step: &ExtractStep) -> Result<Vec<Member>, ExtractError> {
    let staged = stage(bytes);
    scan(&staged.path, "tool", step)
}

fn paths(members: &[Member]) -> Vec<&str> {
    members.iter().map(|m| m.path.as_str()).collect()
}

/// Scans, expects a refusal, and checks that the message names the member
/// (as stored) and the reason.
#[track_caller]
fn assert_refused(bytes: &[u8], step: &ExtractStep, member: &str, reason: &str) {
    let err = scan_bytes(bytes, step).expect_err("the archive was accepted");
    let msg = err.to_string();
    match &err {
        ExtractError::Refused {
            artifact,
            member: m,
            reason: r,
        } => {
            assert_eq!(artifact, "tool", "{msg}");
            assert_eq!(m, member, "{msg}");
            assert!(r.contains(reason), "reason {reason:?} missing: {msg}");
        }
        other => panic!("expected a refusal, got {other:?}: {msg}"),
    }
    assert!(msg.contains("tool"), "{msg}");
    assert!(msg.contains(&format!("{member:?}")), "{msg}");
    assert!(msg.contains(reason), "{msg}");
}

#[test]
fn dotdot_member_is_refused() {
    for name in ["../evil", "a/../../evil", "./../evil", "bin/.."] {
        let t = Tar::new().file("ok", b"ok").file(name, b"x").bytes();
        assert_refused(&t, &all(), name, "must not contain a \"..\" component");
    }
    // Names that cannot be parsed are refused even when include would skip them.
    let t = Tar::new()
        .file("crictl", b"x")
        .file("../../etc/cron.d/evil", b"x")
        .bytes();
    assert_refused(
        &t,
        &step(Some(&["crictl"]), 0),
        "../../etc/cron.d/evil",
        "\"..\"",
    );
}

#[test]
fn absolute_member_is_refused() {
    for name in ["/etc/cron.d/evil", "//etc/passwd", "././/etc/passwd"] {
        let t = Tar::new().file("ok", b"ok").file(name, b"x").bytes();
        assert_refused(&t, &all(), name, "must be relative (not start with /)");
    }
}

#[test]
fn symlink_pointing_outside_is_refused() {
    let t = Tar::new().symlink("lib", "../../etc").bytes();
    assert_refused(&t, &all(), "lib", "points outside /usr/local/bin");
    let msg = scan_bytes(&t, &all()).unwrap_err().to_string();
    assert!(msg.contains("/usr/local/bin"), "{msg}");

    let t = Tar::new()
        .dir("sub")
        .symlink("sub/up", "../x/../../y")
        .bytes();
    assert_refused(&t, &all(), "sub/up", "points outside /usr/local/bin");

    let t = Tar::new().symlink("shadow", "/etc/shadow").bytes();
    assert_refused(&t, &all(), "shadow", "absolute path \"/etc/shadow\"");

    // `here/..` is dest lexically, but the parent of dest at run time.
    let t = Tar::new()
        .symlink("here", ".")
        .symlink("esc", "here/../etc")
        .bytes();
    assert_refused(&t, &all(), "esc", "itself a symbolic link");

    // The same with the links in the other order.
    let t = Tar::new()
        .symlink("esc", "here/../etc")
        .symlink("here", ".")
        .bytes();
    assert_refused(&t, &all(), "esc", "itself a symbolic link");
}

#[test]
fn file_written_through_symlink_is_refused() {
    let t = Tar::new()
        .symlink("lib", "../../etc")
        .file("lib/passwd", b"root::0:0::/:/bin/sh\n")
        .bytes();
    assert_refused(
        &t,
        &all(),
        "lib/passwd",
        "its parent \"lib\" is a symbolic link",
    );

    // Even a link that stays inside dest is not written through.
    let t = Tar::new()
        .dir("b")
        .symlink("a", "b")
        .file("a/x", b"x")
        .bytes();
    assert_refused(&t, &all(), "a/x", "its parent \"a\" is a symbolic link");

    // Order does not matter.
    let t = Tar::new().file("a/x", b"x").symlink("a", "b").bytes();
    assert_refused(&t, &all(), "a/x", "its parent \"a\" is a symbolic link");

    // Deeper below the link.
    let t = Tar::new().symlink("a", "b").file("a/y/z", b"x").bytes();
    assert_refused(&t, &all(), "a/y/z", "its parent \"a\" is a symbolic link");

    // Nor below a regular file.
    let t = Tar::new().file("f", b"x").file("f/x", b"x").bytes();
    assert_refused(&t, &all(), "f/x", "its parent \"f\" is a regular file");
}

#[test]
fn hard_link_is_refused() {
    let t = Tar::new()
        .raw(b"shadow", EntryType::Link, 0o644, b"/etc/shadow", b"")
        .bytes();
    assert_refused(&t, &all(), "shadow", "hard link (to \"/etc/shadow\")");

    // Even to a member of the same archive.
    let t = Tar::new()
        .file("a", b"x")
        .raw(b"b", EntryType::Link, 0o644, b"a", b"")
        .bytes();
    assert_refused(&t, &all(), "b", "hard links are not extracted");
}

#[test]
fn device_node_is_refused() {
    let t = Tar::new()
        .raw(b"null", EntryType::Char, 0o666, b"", b"")
        .bytes();
    assert_refused(&t, &all(), "null", "it is a character device");
    let t = Tar::new()
        .raw(b"sda", EntryType::Block, 0o660, b"", b"")
        .bytes();
    assert_refused(&t, &all(), "sda", "it is a block device");
}

#[test]
fn fifo_is_refused() {
    let t = Tar::new()
        .raw(b"pipe", EntryType::Fifo, 0o644, b"", b"")
        .bytes();
    assert_refused(&t, &all(), "pipe", "it is a FIFO");
}

#[test]
fn unsupported_entry_types_are_refused() {
    // GNU sparse files are refused whether selected or not.
    let mut h = Header::new_gnu();
    h.as_old_mut().name[..6].copy_from_slice(b"sparse");
    h.set_mode(0o644);
    h.set_size(0);
    h.set_entry_type(EntryType::GNUSparse);
    h.as_gnu_mut().unwrap().set_real_size(0);
    h.set_cksum();
    let mut b = tar::Builder::new(Vec::new());
    b.append(&h, &b""[..]).unwrap();
    let t = Tar(b).file("crictl", b"x").bytes();
    assert_refused(&t, &step(Some(&["crictl"]), 0), "sparse", "GNU sparse file");

    // PAX sparse files.
    let t = Tar::new()
        .pax(&[("GNU.sparse.major", b"1"), ("GNU.sparse.minor", b"0")])
        .file("big", b"x")
        .bytes();
    assert_refused(&t, &all(), "big", "PAX sparse file");

    // GNU volume headers and the like.
    let t = Tar::new()
        .raw(b"vol", EntryType::new(b'V'), 0o644, b"", b"")
        .bytes();
    assert_refused(&t, &all(), "vol", "unsupported entry type 'V'");
}

#[test]
fn regular_entry_named_like_a_directory_is_a_directory_as_in_gnu_tar() {
    // V7 and old BSD tars store directories as regular entries named `dir/`.
    let t = Tar::new()
        .file_mode("dir/", 0o750, b"")
        .file("dir/a", b"x")
        .bytes();
    let members = scan_bytes(&t, &all()).unwrap();
    assert_eq!(paths(&members), ["dir", "dir/a"]);
    assert_eq!(members[0].kind, MemberKind::Dir { mode: 0o750 });
}

#[test]
fn non_utf8_name_is_refused() {
    let t = Tar::new()
        .raw(b"bad\xffname", EntryType::Regular, 0o644, b"", b"x")
        .bytes();
    assert_refused(&t, &all(), "bad\u{fffd}name", "not valid UTF-8");
    let t = Tar::new()
        .raw(b"ctl\x1bname", EntryType::Regular, 0o644, b"", b"x")
        .bytes();
    assert_refused(&t, &all(), "ctl\x1bname", "control character");
}

#[test]
fn setuid_member_is_refused_unless_allowed() {
    let t = Tar::new()
        .file_mode("su", 0o4755, b"x")
        .dir_mode("shared", 0o2775)
        .dir_mode("tmp", 0o1777)
        .bytes();
    assert_refused(&t, &all(), "su", "mode 4755 sets setuid/setgid bits");
    let msg = scan_bytes(&t, &all()).unwrap_err().to_string();
    assert!(msg.contains("allow_setuid"), "{msg}");

    let t2 = Tar::new().dir_mode("shared", 0o2775).bytes();
    assert_refused(&t2, &all(), "shared", "mode 2775 sets setuid/setgid bits");

    let mut allowed = all();
    allowed.allow_setuid = true;
    let members = scan_bytes(&t, &allowed).unwrap();
    let modes: Vec<u32> = members
        .iter()
        .map(|m| match m.kind {
            MemberKind::File { mode, .. } | MemberKind::Dir { mode } => mode,
            MemberKind::Symlink { .. } => unreachable!(),
        })
        .collect();
    assert_eq!(modes, [0o4755, 0o2775, 0o1777]);

    // The sticky bit alone needs no permission.
    let t3 = Tar::new().dir_mode("tmp", 0o1777).bytes();
    scan_bytes(&t3, &all()).unwrap();
}

#[test]
fn duplicate_member_is_refused() {
    let t = Tar::new().file("x", b"1").file("./x", b"2").bytes();
    assert_refused(
        &t,
        &all(),
        "./x",
        "duplicate member: x was already given by \"x\"",
    );

    // Duplicates made by strip_components.
    let t = Tar::new().file("a/x", b"1").file("b/x", b"2").bytes();
    assert_refused(&t, &step(None, 1), "b/x", "duplicate member");
    // Without strip they are distinct.
    assert_eq!(paths(&scan_bytes(&t, &all()).unwrap()), ["a/x", "b/x"]);

    // Directories too.
    let t = Tar::new().dir("d/").dir("d").bytes();
    assert_refused(&t, &all(), "d", "duplicate member");
}

#[test]
fn include_glob_does_not_match_other_directories() {
    let t = Tar::new()
        .file("LICENSE", b"license")
        .file("crictl", b"crictl")
        .file("sub/crictl", b"other")
        .dir("bin/")
        .file("bin/tool", b"tool")
        .file("bin/x/deep", b"deep")
        .bytes();
    let members = scan_bytes(&t, &step(Some(&["crictl", "bin/*"]), 0)).unwrap();
    // The `bin` directory itself does not match `bin/*`, and `*` stops at `/`.
    assert_eq!(paths(&members), ["crictl", "bin/tool"]);

    let members = scan_bytes(&t, &step(Some(&["*"]), 0)).unwrap();
    assert_eq!(paths(&members), ["LICENSE", "crictl", "bin"]);

    let members = scan_bytes(&t, &step(Some(&["**/crictl"]), 0)).unwrap();
    assert_eq!(paths(&members), ["crictl", "sub/crictl"]);

    // Matching is on the stored name after a leading `./`.
    let t = Tar::new()
        .dir("./")
        .file("./crictl", b"x")
        .file("./sub/crictl", b"y")
        .bytes();
    let members = scan_bytes(&t, &step(Some(&["crictl"]), 0)).unwrap();
    assert_eq!(paths(&members), ["crictl"]);
    assert_eq!(members[0].stored, "./crictl");
}

#[test]
fn hostile_members_outside_include_are_skipped() {
    // Only selected members are checked (names aside): a device node that is
    // not extracted does no harm.
    let t = Tar::new()
        .raw(b"dev/null", EntryType::Char, 0o666, b"", b"")
        .symlink("evil", "/etc/shadow")
        .file("crictl", b"x")
        .bytes();
    let members = scan_bytes(&t, &step(Some(&["crictl"]), 0)).unwrap();
    assert_eq!(paths(&members), ["crictl"]);
}

#[test]
fn strip_components_drops_leading_dirs() {
    // containerd-1.x-linux-amd64.tar.gz: bin/containerd, bin/ctr, ... into /bin.
    let t = Tar::new()
        .dir("bin/")
        .file_mode("bin/containerd", 0o755, b"containerd")
        .file_mode("bin/ctr", 0o755, b"ctr")
        .bytes();
    let mut s = step(None, 1);
    s.dest = "/bin".parse().unwrap();
    let members = scan_bytes(&gz(&t), &s).unwrap();
    assert_eq!(paths(&members), ["containerd", "ctr"]);
    assert_eq!(members[0].stored, "bin/containerd");
    assert_eq!(
        members[0].kind,
        MemberKind::File {
            mode: 0o755,
            size: 10,
            sha256: Sha256Digest::of(b"containerd")
        }
    );

    // Include matches the stored path, before strip.
    let members = scan_bytes(&t, &step(Some(&["bin/ctr"]), 1)).unwrap();
    assert_eq!(paths(&members), ["ctr"]);

    // Stripping everything leaves nothing, which is an error.
    let err = scan_bytes(&t, &step(None, 2)).unwrap_err();
    assert!(
        matches!(err, ExtractError::NothingToExtract { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("strip_components 2"), "{err}");
}

#[test]
fn gzip_xz_zstd_and_plain_tar_are_detected_by_content() {
    let t = Tar::new()
        .dir("d")
        .file("d/a", b"alpha")
        .symlink("d/b", "a")
        .bytes();
    let expected = scan_bytes(&t, &all()).unwrap();
    assert_eq!(paths(&expected), ["d", "d/a", "d/b"]);
    for (kind, bytes) in [("gz", gz(&t)), ("xz", xz(&t)), ("zst", zst(&t))] {
        assert_eq!(scan_bytes(&bytes, &all()).unwrap(), expected, "{kind}");
    }

    // Concatenated compressed streams (pigz, pixz, zstd -T) are read whole.
    let half = 1024; // d, d/a header and data
    let mut two_gz = gz(&t[..half]);
    two_gz.extend(gz(&t[half..]));
    assert_eq!(scan_bytes(&two_gz, &all()).unwrap(), expected);
    let mut two_xz = xz(&t[..half]);
    two_xz.extend(xz(&t[half..]));
    assert_eq!(scan_bytes(&two_xz, &all()).unwrap(), expected);
    let mut two_zst = zst(&t[..half]);
    two_zst.extend(zst(&t[half..]));
    assert_eq!(scan_bytes(&two_zst, &all()).unwrap(), expected);

    // Not an archive at all.
    let err = scan_bytes(b"#!/bin/sh\necho hi\n", &all()).unwrap_err();
    assert!(matches!(err, ExtractError::NotAnArchive { .. }), "{err:?}");
    assert!(err.to_string().contains("artifact"), "{err}");

    // A compressed file that holds no tar.
    let err = scan_bytes(&gz(&[7u8; 4096]), &all()).unwrap_err();
    assert!(matches!(err, ExtractError::NotAnArchive { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("gzip-compressed data holding binary data"),
        "{err}"
    );
    // A damaged compressed stream.
    let mut damaged = zst(&t);
    let n = damaged.len();
    damaged.truncate(n / 2);
    let err = scan_bytes(&damaged, &all()).unwrap_err();
    assert!(
        matches!(
            err,
            ExtractError::Io { .. } | ExtractError::NotAnArchive { .. }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("zstd"), "{err}");
}

#[test]
fn include_matching_nothing_is_an_error() {
    let t = Tar::new().file("crictl", b"x").bytes();
    let err = scan_bytes(&t, &step(Some(&["critcl"]), 0)).unwrap_err();
    assert!(
        matches!(err, ExtractError::IncludeMatchedNothing { .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "include globs [\"critcl\"] matched no member of tool"
    );
}

#[test]
fn for_each_file_streams_exact_bytes() {
    let big: Vec<u8> = (0..700_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let t = Tar::new()
        .dir("pkg/")
        .file("pkg/small", b"small\n")
        .file("pkg/empty", b"")
        .symlink("pkg/link", "small")
        .file_mode("pkg/big", 0o755, &big)
        .file("pkg/skipped", b"not included")
        .bytes();
    let staged = stage(&zst(&t));
    let s = step(
        Some(&["pkg", "pkg/small", "pkg/empty", "pkg/link", "pkg/big"]),
        1,
    );
    let members = scan(&staged.path, "tool", &s).unwrap();
    assert_eq!(paths(&members), ["small", "empty", "link", "big"]);

    let mut seen: Vec<(String, Vec<u8>)> = Vec::new();
    for_each_file(&staged.path, "tool", &s, &members, &mut |m, r| {
        let mut bytes = Vec::new();
        r.read_to_end(&mut bytes)?;
        seen.push((m.path.to_string(), bytes));
        Ok(())
    })
    .unwrap();
    let expected: Vec<(String, Vec<u8>)> = vec![
        ("small".into(), b"small\n".to_vec()),
        ("empty".into(), Vec::new()),
        ("big".into(), big.clone()),
    ];
    assert_eq!(seen, expected);

    // A callback may read only part (or nothing); the rest is still checked.
    let mut calls = 0;
    for_each_file(&staged.path, "tool", &s, &members, &mut |_, r| {
        calls += 1;
        let mut first = [0u8; 3];
        let _ = r.read(&mut first)?;
        Ok(())
    })
    .unwrap();
    assert_eq!(calls, 3);

    // A subset of the members is fine.
    let only_big: Vec<Member> = members
        .iter()
        .filter(|m| m.path.as_str() == "big")
        .cloned()
        .collect();
    let mut got = BTreeMap::new();
    for_each_file(&staged.path, "tool", &s, &only_big, &mut |m, r| {
        got.insert(m.path.to_string(), io::copy(r, &mut io::sink())?);
        Ok(())
    })
    .unwrap();
    assert_eq!(got, BTreeMap::from([("big".to_string(), big.len() as u64)]));

    // The callback's own errors name the member.
    let err = for_each_file(&staged.path, "tool", &s, &members, &mut |_, _| {
        Err(io::Error::other("disk full"))
    })
    .unwrap_err();
    assert!(matches!(err, ExtractError::Write { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "artifact tool: writing member \"pkg/small\": disk full"
    );
}

#[test]
fn changed_archive_is_detected_on_second_pass() {
    let before = Tar::new().file("a", b"aaaa").file("b", b"bbbb").bytes();
    let staged = stage(&before);
    let members = scan(&staged.path, "tool", &all()).unwrap();

    // Same names and sizes, other bytes: the read at the end fails.
    std::fs::write(
        &staged.path,
        Tar::new().file("a", b"aaaa").file("b", b"BBBB").bytes(),
    )
    .unwrap();
    let mut copy_failed = false;
    let err = for_each_file(&staged.path, "tool", &all(), &members, &mut |_, r| {
        let mut sink = Vec::new();
        if let Err(e) = io::copy(r, &mut sink) {
            copy_failed = true;
            return Err(e);
        }
        Ok(())
    })
    .unwrap_err();
    assert!(copy_failed);
    assert!(matches!(err, ExtractError::Changed { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("\"b\"") && msg.contains("sha256"), "{msg}");

    // A member gone.
    std::fs::write(&staged.path, Tar::new().file("a", b"aaaa").bytes()).unwrap();
    let err = for_each_file(&staged.path, "tool", &all(), &members, &mut |_, r| {
        io::copy(r, &mut io::sink()).map(drop)
    })
    .unwrap_err();
    assert!(
        err.to_string().contains("no longer in the archive"),
        "{err}"
    );

    // A member of another size or type.
    std::fs::write(
        &staged.path,
        Tar::new().file("a", b"aaaaa").file("b", b"bbbb").bytes(),
    )
    .unwrap();
    let err =
        for_each_file(&staged.path, "tool", &all(), &members, &mut |_, _| Ok(())).unwrap_err();
    assert!(err.to_string().contains("now 5 bytes"), "{err}");
    std::fs::write(
        &staged.path,
        Tar::new().file("a", b"aaaa").symlink("b", "a").bytes(),
    )
    .unwrap();
    let err =
        for_each_file(&staged.path, "tool", &all(), &members, &mut |_, _| Ok(())).unwrap_err();
    assert!(err.to_string().contains("now a symbolic link"), "{err}");
}

#[test]
fn symlink_inside_dest_is_kept() {
    let t = Tar::new()
        .dir("lib")
        .file("lib/libfoo.so.1.2", b"elf")
        .symlink("lib/libfoo.so", "libfoo.so.1.2")
        .symlink("lib/up", "..")
        .symlink("bin/tool", "../lib/./libfoo.so")
        .symlink("self", ".")
        .symlink("chain", "lib/libfoo.so")
        .bytes();
    let members = scan_bytes(&t, &all()).unwrap();
    let links: Vec<(&str, &str)> = members
        .iter()
        .filter_map(|m| match &m.kind {
            MemberKind::Symlink { target } => Some((m.path.as_str(), target.as_str())),
            _ => None,
        })
        .collect();
    assert_eq!(
        links,
        [
            ("lib/libfoo.so", "libfoo.so.1.2"),
            ("lib/up", ".."),
            ("bin/tool", "../lib/./libfoo.so"),
            ("self", "."),
            ("chain", "lib/libfoo.so"),
        ]
    );
}

#[test]
fn pax_long_name_is_supported() {
    let pax_name = format!("release/{}/crictl", "v".repeat(150));
    let gnu_name = format!("release/{}/ctr", "w".repeat(150));
    let link_target = format!("{}/crictl", "v".repeat(150));
    let t = Tar::new()
        .pax(&[("path", pax_name.as_bytes())])
        .file("release/truncated-name", b"pax")
        .gnu_long_file(&gnu_name, b"gnu")
        .pax(&[("linkpath", link_target.as_bytes())])
        .symlink("release/link", "short")
        .bytes();
    let members = scan_bytes(&gz(&t), &step(Some(&["release/*/*", "release/link"]), 0)).unwrap();
    assert_eq!(
        paths(&members),
        [pax_name.as_str(), gnu_name.as_str(), "release/link"]
    );
    assert_eq!(
        members[2].kind,
        MemberKind::Symlink {
            target: link_target
        }
    );

    let staged = stage(&t);
    let s = step(None, 2);
    let members = scan(&staged.path, "tool", &s).unwrap();
    let mut data = Vec::new();
    for_each_file(&staged.path, "tool", &s, &members, &mut |m, r| {
        data.push((m.path.to_string(), io::read_to_string(r)?));
        Ok(())
    })
    .unwrap();
    assert_eq!(
        data,
        [
            ("crictl".to_string(), "pax".to_string()),
            ("ctr".to_string(), "gnu".to_string())
        ]
    );
}

#[test]
fn pax_records_are_the_names_checked() {
    // The header says "benign"; GNU tar uses the PAX path, and so do we.
    let t = Tar::new()
        .pax(&[("path", b"../../etc/cron.d/evil")])
        .file("benign", b"x")
        .bytes();
    assert_refused(&t, &all(), "../../etc/cron.d/evil", "\"..\"");

    let t = Tar::new()
        .pax(&[("linkpath", b"/etc/shadow")])
        .symlink("link", "harmless")
        .bytes();
    assert_refused(&t, &all(), "link", "absolute path \"/etc/shadow\"");

    // A PAX size overrides the header's, so the entries that follow are where
    // GNU tar sees them.
    let mut t = Tar::new()
        .pax(&[("size", b"600")])
        .raw(b"sized", EntryType::Regular, 0o644, b"", b"")
        .0;
    t.get_mut().extend_from_slice(&[b's'; 600]);
    t.get_mut().extend_from_slice(&[0u8; 424]);
    let t = Tar(t).file("after", b"after").bytes();
    let members = scan_bytes(&t, &all()).unwrap();
    assert_eq!(paths(&members), ["sized", "after"]);
    assert!(matches!(
        members[0].kind,
        MemberKind::File { size: 600, .. }
    ));
}

#[test]
fn pax_global_header_is_ignored() {
    // `git archive` starts with one.
    let t = Tar::new()
        .pax_kind(
            EntryType::XGlobalHeader,
            &[("comment", b"0123456789abcdef0123456789abcdef01234567")],
        )
        .dir("project-1.0/")
        .file("project-1.0/README", b"hi")
        .bytes();
    let members = scan_bytes(&t, &step(None, 1)).unwrap();
    assert_eq!(paths(&members), ["README"]);
}

#[test]
fn oversized_headers_are_refused() {
    // A 2 MiB GNU long name would be held in memory by the tar reader.
    let t = Tar::new()
        .raw(
            b"././@LongLink",
            EntryType::GNULongName,
            0o644,
            b"",
            &vec![b'a'; 2 << 20],
        )
        .file("x", b"x")
        .bytes();
    let err = scan_bytes(&t, &all()).unwrap_err();
    assert!(matches!(err, ExtractError::TooLarge { .. }), "{err:?}");
    assert!(
        err.to_string().contains("long name or PAX records"),
        "{err}"
    );
}

#[test]
fn decompression_bomb_is_stopped() {
    assert_eq!(MAX_DECOMPRESSED_BYTES, 16 << 30);
    assert_eq!(MAX_MEMBERS, 100_000);
    let t = Tar::new().file("zeros", &vec![0u8; 8 << 20]).bytes();
    let bomb = gz(&t);
    assert!(bomb.len() < 64 << 10);
    let staged = stage(&bomb);
    let limits = ExtractLimits {
        max_bytes: 1 << 20,
        ..ExtractLimits::default()
    };
    let err = scan_with_limits(&staged.path, "tool", &all(), &limits).unwrap_err();
    assert!(matches!(err, ExtractError::TooLarge { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("decompresses to more than 1048576 bytes"),
        "{err}"
    );
    // Unselected members count too.
    let err =
        scan_with_limits(&staged.path, "tool", &step(Some(&["nothing"]), 0), &limits).unwrap_err();
    assert!(matches!(err, ExtractError::TooLarge { .. }), "{err:?}");

    let mut many = Tar::new();
    for i in 0..20 {
        many = many.file(&format!("f{i}"), b"");
    }
    let staged = stage(&many.bytes());
    let limits = ExtractLimits {
        max_members: 10,
        ..ExtractLimits::default()
    };
    let err = scan_with_limits(&staged.path, "tool", &all(), &limits).unwrap_err();
    assert!(err.to_string().contains("more than 10 entries"), "{err}");
}

#[test]
fn truncated_archive_is_an_error() {
    let t = Tar::new().file("a", &[1u8; 2000]).file("b", b"b").bytes();
    for cut in [1000, 512 + 1024] {
        let err = scan_bytes(&t[..cut], &all()).unwrap_err();
        assert!(matches!(err, ExtractError::Io { .. }), "{err:?}");
        assert!(err.to_string().contains("truncated"), "{err}");
        assert!(err.to_string().contains("\"a\""), "{err}");
    }
    // Cut inside an unselected member.
    let err = scan_bytes(&gz(&t[..1000]), &step(Some(&["b"]), 0)).unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
}
