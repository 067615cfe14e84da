//! Content detection against the real tools: every tar header format GNU
//! tar writes (v7, oldgnu, gnu, ustar, posix), and every frame layout the
//! gzip, xz and zstd command-line programs produce and read (multi-member
//! gzip, trailing zero padding, multi-stream and padded xz, multi-block xz,
//! concatenated and skippable zstd frames, pzstd output). What the tools
//! read, `scan` reads, to the same tree `tar -x` writes; what they refuse
//! (trailing garbage), `scan` refuses. Content that is no archive is refused
//! with a message naming what it looks like.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use bundle_spec::extract::{ExtractError, MemberKind, scan};
use bundle_spec::spec::ExtractStep;

fn all() -> ExtractStep {
    ExtractStep {
        artifact: "tool".parse().unwrap(),
        dest: "/opt/x".parse().unwrap(),
        include: None,
        strip_components: 0,
        allow_setuid: false,
    }
}

struct Work {
    dir: tempfile::TempDir,
    n: std::cell::Cell<usize>,
}

impl Work {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        for (p, data) in [
            ("pkg/bin/tool", "#!/bin/sh\necho tool\n".to_owned()),
            ("pkg/lib/data", "x".repeat(70_000)),
            ("pkg/README", "readme\n".to_owned()),
        ] {
            let path = src.join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, data).unwrap();
        }
        std::os::unix::fs::symlink("bin/tool", src.join("pkg/tool-link")).unwrap();
        Work {
            dir,
            n: std::cell::Cell::new(0),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A tar of the source tree made by GNU tar in `format`.
    fn tar(&self, format: &str) -> PathBuf {
        let out = self.path(&format!("{format}.tar"));
        sh(&format!(
            "tar --format={format} --owner=0 --group=0 -cf {} -C {} pkg",
            out.display(),
            self.path("src").display()
        ));
        out
    }

    /// Runs a shell command with `$T` (the ustar tar) and `$O` (a new output
    /// file) set; returns `$O`.
    fn make(&self, script: &str) -> PathBuf {
        let tar = self.tar("ustar");
        self.n.set(self.n.get() + 1);
        let out = self.path(&format!("made-{}", self.n.get()));
        let status = Command::new("bash")
            .args(["-euo", "pipefail", "-c", script])
            .env("T", &tar)
            .env("O", &out)
            .current_dir(self.dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "{script}");
        out
    }

    /// What the real tools extract from `archive` (`DECOMPRESS < archive |
    /// tar -x`), or `None` when they fail.
    fn oracle(&self, archive: &Path, decompress: &str) -> Option<BTreeSet<String>> {
        self.n.set(self.n.get() + 1);
        let out = self.path(&format!("oracle-{}", self.n.get()));
        std::fs::create_dir(&out).unwrap();
        let ok = Command::new("bash")
            .args([
                "-o",
                "pipefail",
                "-c",
                &format!(
                    "{decompress} < {} | tar -xf - -C {} 2>/dev/null",
                    archive.display(),
                    out.display()
                ),
            ])
            .status()
            .unwrap()
            .success();
        ok.then(|| tree(&out))
    }
}

#[track_caller]
fn sh(script: &str) {
    let status = Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .status()
        .unwrap();
    assert!(status.success(), "{script}");
}

fn tree(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
            let t = e.file_type().unwrap();
            let kind = if t.is_symlink() {
                "l"
            } else if t.is_dir() {
                stack.push(e.path());
                "d"
            } else {
                "f"
            };
            out.insert(format!("{kind} {rel}"));
        }
    }
    out
}

fn scanned(archive: &Path) -> Result<BTreeSet<String>, ExtractError> {
    let members = scan(archive, "tool", &all())?;
    let mut out = BTreeSet::new();
    for m in &members {
        let p = m.path.as_str();
        for (i, _) in p.match_indices('/') {
            out.insert(format!("d {}", &p[..i]));
        }
        let t = match m.kind {
            MemberKind::File { .. } => 'f',
            MemberKind::Dir { .. } => 'd',
            MemberKind::Symlink { .. } => 'l',
        };
        out.insert(format!("{t} {p}"));
    }
    Ok(out)
}

/// `archive` is read by the real tools and by `scan`, to the same tree.
#[track_caller]
fn assert_read_like_the_tools(w: &Work, archive: &Path, decompress: &str, label: &str) {
    let expected = w
        .oracle(archive, decompress)
        .unwrap_or_else(|| panic!("{label}: the real tools refuse it"));
    assert!(expected.contains("f pkg/bin/tool"), "{label}: {expected:?}");
    match scanned(archive) {
        Ok(got) => assert_eq!(got, expected, "{label}"),
        Err(e) => panic!("{label}: refused: {e}"),
    }
}

/// `archive` is refused by the real tools and by `scan`.
#[track_caller]
fn assert_refused_like_the_tools(w: &Work, archive: &Path, decompress: &str, label: &str) {
    assert!(
        w.oracle(archive, decompress).is_none(),
        "{label}: the real tools read it"
    );
    let err = scanned(archive).expect_err(label);
    assert!(
        matches!(
            err,
            ExtractError::Io { .. } | ExtractError::NotAnArchive { .. }
        ),
        "{label}: {err:?}"
    );
}

#[test]
fn every_tar_header_format_gnu_tar_writes_is_read() {
    let w = Work::new();
    for format in ["v7", "oldgnu", "gnu", "ustar", "posix"] {
        let t = w.tar(format);
        assert_read_like_the_tools(&w, &t, "cat", format);
        // And compressed.
        for (c, d) in [("gzip", "gzip -dc"), ("xz", "xz -dc"), ("zstd", "zstd -dc")] {
            let out = w.path(&format!("{format}.tar.{c}"));
            sh(&format!("{c} -c < {} > {}", t.display(), out.display()));
            assert_read_like_the_tools(&w, &out, d, &format!("{format} + {c}"));
        }
    }
}

#[test]
fn a_v7_tar_is_recognized_by_its_header_checksum() {
    let w = Work::new();
    let t = w.tar("v7");
    let mut bytes = std::fs::read(&t).unwrap();
    assert_eq!(&bytes[257..262], &[0; 5], "a V7 header has no magic");
    // One changed byte in the first header's name: the checksum no longer
    // matches, GNU tar refuses it, and so does `scan`, saying what it is.
    bytes[0] ^= 0x20;
    let bad = w.path("bad-v7.tar");
    std::fs::write(&bad, &bytes).unwrap();
    assert!(w.oracle(&bad, "cat").is_none(), "GNU tar read it");
    let err = scanned(&bad).unwrap_err();
    assert!(matches!(err, ExtractError::NotAnArchive { .. }), "{err:?}");
    assert!(err.to_string().contains("is not a tar"), "{err}");
}

#[test]
fn every_gzip_layout_gzip_reads_is_read() {
    let w = Work::new();
    let cases = [
        ("gzip default", "gzip -c < $T > $O"),
        ("gzip -1 -n", "gzip -1 -n -c < $T > $O"),
        (
            "gzip -9 with a file name",
            "cp $T x.tar && gzip -9 -f x.tar && mv x.tar.gz $O",
        ),
        ("gzip --rsyncable", "gzip --rsyncable -c < $T > $O"),
        (
            "multi-member gzip (split tar, one member each)",
            "head -c 3000 $T | gzip -c > $O && tail -c +3001 $T | gzip -c >> $O",
        ),
        (
            "multi-member gzip with an empty member (bgzip's end marker)",
            "gzip -c < $T > $O && gzip -c < /dev/null >> $O",
        ),
        (
            "gzip then zero padding",
            "gzip -c < $T > $O && head -c 1024 /dev/zero >> $O",
        ),
    ];
    for (label, script) in cases {
        let a = w.make(script);
        assert_read_like_the_tools(&w, &a, "gzip -dc", label);
    }
    let a = w.make("gzip -c < $T > $O && echo garbage >> $O");
    assert_refused_like_the_tools(&w, &a, "gzip -dc", "gzip then garbage");
    let a = w.make("gzip -c < $T > $O && head -c 100 /dev/zero >> $O && echo x >> $O");
    assert_refused_like_the_tools(&w, &a, "gzip -dc", "gzip then zeros then garbage");
    let a = w.make("gzip -c < $T | head -c -4 > $O");
    assert_refused_like_the_tools(&w, &a, "gzip -dc", "gzip without its length trailer");
}

#[test]
fn every_xz_layout_xz_reads_is_read() {
    let w = Work::new();
    let cases = [
        ("xz default", "xz -c < $T > $O"),
        (
            "xz -9e --check=sha256",
            "xz -9e --check=sha256 -c < $T > $O",
        ),
        ("xz --check=none", "xz --check=none -c < $T > $O"),
        ("xz --check=crc32", "xz --check=crc32 -c < $T > $O"),
        (
            "xz multi-block (-T2 --block-size)",
            "xz -T2 --block-size=4096 -c < $T > $O",
        ),
        (
            "multi-stream xz",
            "head -c 3000 $T | xz -c > $O && tail -c +3001 $T | xz -c >> $O",
        ),
        (
            "xz with stream padding between and after streams",
            "head -c 3000 $T | xz -c > $O && head -c 8 /dev/zero >> $O && \
             tail -c +3001 $T | xz -c >> $O && head -c 4 /dev/zero >> $O",
        ),
    ];
    for (label, script) in cases {
        let a = w.make(script);
        assert_read_like_the_tools(&w, &a, "xz -dc", label);
    }
    let a = w.make("xz -c < $T > $O && echo garbage >> $O");
    assert_refused_like_the_tools(&w, &a, "xz -dc", "xz then garbage");
    let a = w.make("xz -c < $T > $O && head -c 3 /dev/zero >> $O");
    assert_refused_like_the_tools(&w, &a, "xz -dc", "xz then padding not a multiple of 4");
}

/// A zstd skippable frame (magic 0x184D2A5N, little-endian length, payload).
const SKIPPABLE: &str = r"printf '\x5a\x2a\x4d\x18\x05\x00\x00\x00hello'";

#[test]
fn every_zstd_layout_zstd_reads_is_read() {
    let w = Work::new();
    let skip_first = format!("{SKIPPABLE} > $O && zstd -c < $T >> $O");
    let skip_between = format!(
        "head -c 3000 $T | zstd -c > $O && {SKIPPABLE} >> $O && tail -c +3001 $T | zstd -c >> $O && {SKIPPABLE} >> $O"
    );
    let cases = [
        ("zstd default", "zstd -q -c < $T > $O"),
        ("zstd -19 --no-check", "zstd -q -19 --no-check -c < $T > $O"),
        ("zstd --long=27 -T2", "zstd -q --long=27 -T2 -c < $T > $O"),
        ("zstd --rsyncable", "zstd -q --rsyncable -T2 -c < $T > $O"),
        (
            "concatenated zstd frames",
            "head -c 3000 $T | zstd -q -c > $O && tail -c +3001 $T | zstd -q -c >> $O",
        ),
        ("a skippable frame first", skip_first.as_str()),
        (
            "skippable frames between and after frames",
            skip_between.as_str(),
        ),
        // pzstd writes a skippable frame before each frame.
        ("pzstd -p 2", "pzstd -q -p 2 -c < $T > $O"),
    ];
    for (label, script) in cases {
        let a = w.make(script);
        assert_read_like_the_tools(&w, &a, "zstd -dc", label);
    }
    let a = w.make("zstd -q -c < $T > $O && echo garbage >> $O");
    assert_refused_like_the_tools(&w, &a, "zstd -dc", "zstd then garbage");
    let a = w.make("zstd -q -c < $T > $O && head -c 1024 /dev/zero >> $O");
    assert_refused_like_the_tools(&w, &a, "zstd -dc", "zstd then zeros");
    let a = w.make("zstd -q -c < $T | head -c -3 > $O");
    assert_refused_like_the_tools(&w, &a, "zstd -dc", "zstd cut short");
}

/// Content that is no archive is refused, and the message says what it is.
#[test]
fn non_archives_are_refused_naming_what_they_look_like() {
    let w = Work::new();
    let page = "<!DOCTYPE html>\n<html><head><title>Access denied</title></head><body>denied</body></html>\n";
    let cases: Vec<(&str, String, &str)> = vec![
        ("HTML", format!("printf '%s' '{page}' > $O"), "an HTML page"),
        (
            "gzipped HTML",
            format!("printf '%s' '{page}' | gzip -c > $O"),
            "gzip-compressed data holding an HTML page",
        ),
        (
            "xz JSON",
            r#"echo '{"message": "Not Found"}' | xz -c > $O"#.into(),
            "xz-compressed data holding a JSON document",
        ),
        (
            "zstd text",
            "echo 'rate limit exceeded' | zstd -q -c > $O".into(),
            "zstd-compressed data holding text",
        ),
        (
            "JSON",
            r#"echo '{"error": "denied"}' > $O"#.into(),
            "a JSON document",
        ),
        ("ELF", "cp /bin/true $O".into(), "an ELF executable"),
        ("empty", ": > $O".into(), "empty (0 bytes)"),
        (
            "gzip of nothing",
            "gzip -c < /dev/null > $O".into(),
            "gzip-compressed data that decompresses to nothing",
        ),
        ("text", "echo 'Access denied' > $O".into(), "text"),
        (
            "bzip2 tar",
            "bzip2 -c < $T > $O".into(),
            "bzip2-compressed data",
        ),
        (
            "zip",
            "printf 'PK\\x03\\x04rest' > $O".into(),
            "a zip archive",
        ),
        (
            "bytes after a gzip magic",
            "printf '\\x1f\\x8bnot gzip at all' > $O".into(),
            "gzip-compressed data that cannot be decompressed",
        ),
    ];
    for (label, script, says) in cases {
        let a = w.make(&script);
        let err = scanned(&a).expect_err(label);
        assert!(
            matches!(err, ExtractError::NotAnArchive { .. }),
            "{label}: {err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains(&format!(
                "is not a tar, tar.gz, tar.xz or tar.zst archive: it is {says}"
            )),
            "{label}: {msg}"
        );
        assert!(
            msg.chars().count() < 400,
            "{label}: message too long: {msg}"
        );
    }
    // The first bytes are shown, escaped.
    let a = w.make(&format!("printf '%s' '{page}' | gzip -c > $O"));
    let msg = scanned(&a).unwrap_err().to_string();
    assert!(
        msg.contains(r#"(starts with "<!DOCTYPE html>\n<html><head><title>Access denied..."#),
        "{msg}"
    );
}

/// 1024 zero bytes are an empty archive to GNU tar; `scan` reads it and
/// says there is nothing to extract.
#[test]
fn zero_blocks_are_an_empty_archive() {
    let w = Work::new();
    let a = w.make("head -c 10240 /dev/zero > $O");
    assert_eq!(w.oracle(&a, "cat"), Some(BTreeSet::new()));
    let err = scanned(&a).unwrap_err();
    assert!(
        matches!(err, ExtractError::NothingToExtract { .. }),
        "{err:?}"
    );
}
