//! Key and signature files are read as the real `minisign` reads them, in
//! both directions: files made by `minisign` and by `bundler keygen` /
//! `bundler build`, mangled the ways files get mangled on their way between
//! machines (CRLF line ends, no final newline, a UTF-8 byte order mark, white
//! space, blank or extra lines, classic-Mac CR line ends, a long comment),
//! are accepted by `bundler` and `install-bundle` exactly when `minisign`
//! accepts them; when they are refused, both tools say why in the same words
//! and exit 3.

use std::path::{Path, PathBuf};
use std::process::Command;

use bundle_tests::cli::{Output, bundler, installer, run};
use bundle_tests::kit::{self, RawEntry};

/// How a file is mangled: a label and a function of its bytes.
type Mangle = (&'static str, fn(&[u8]) -> Vec<u8>);

fn lines(b: &[u8]) -> Vec<&[u8]> {
    let mut v: Vec<&[u8]> = b.split(|&c| c == b'\n').collect();
    if b.ends_with(b"\n") {
        v.pop();
    }
    v
}

fn join(parts: &[&[u8]], end: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in parts {
        out.extend_from_slice(p);
        out.extend_from_slice(end);
    }
    out
}

/// Line 2 (the base64 line of a key) replaced by `f(line 2)`.
fn line2(b: &[u8], f: impl Fn(&[u8]) -> Vec<u8>) -> Vec<u8> {
    let l = lines(b);
    let mut parts: Vec<Vec<u8>> = l.iter().map(|x| x.to_vec()).collect();
    parts[1] = f(l[1]);
    let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    join(&refs, b"\n")
}

fn comment_of_len(b: &[u8], len: usize, end: &[u8]) -> Vec<u8> {
    let l = lines(b);
    let mut comment = b"untrusted comment: ".to_vec();
    comment.resize(len, b'x');
    let mut parts: Vec<&[u8]> = vec![&comment];
    parts.extend(&l[1..]);
    join(&parts, end)
}

const MANGLES: &[Mangle] = &[
    ("as made", |b| b.to_vec()),
    ("CRLF line ends", |b| join(&lines(b), b"\r\n")),
    ("no final newline", |b| {
        let mut v = b.to_vec();
        v.pop();
        v
    }),
    ("CRLF and no final newline", |b| {
        let mut v = join(&lines(b), b"\r\n");
        v.truncate(v.len() - 2);
        v
    }),
    ("UTF-8 byte order mark", |b| {
        [b"\xef\xbb\xbf".as_slice(), b].concat()
    }),
    ("byte order mark and CRLF", |b| {
        [b"\xef\xbb\xbf".as_slice(), &join(&lines(b), b"\r\n")].concat()
    }),
    ("blank lines after", |b| [b, b"\n\n\n".as_slice()].concat()),
    ("other lines after", |b| {
        [b, b"more text\nand more\n".as_slice()].concat()
    }),
    ("another first line", |b| {
        let l = lines(b);
        let mut parts: Vec<&[u8]> = vec![b"my release key, do not lose"];
        parts.extend(&l[1..]);
        join(&parts, b"\n")
    }),
    ("spaces after the base64 line", |b| {
        line2(b, |l| [l, b"  ".as_slice()].concat())
    }),
    ("a tab after the base64 line", |b| {
        line2(b, |l| [l, b"\t".as_slice()].concat())
    }),
    ("spaces before the base64 line", |b| {
        line2(b, |l| [b"  ".as_slice(), l].concat())
    }),
    ("a blank line first", |b| [b"\n".as_slice(), b].concat()),
    ("a blank line after the comment", |b| {
        let l = lines(b);
        let mut parts: Vec<&[u8]> = vec![l[0], b""];
        parts.extend(&l[1..]);
        join(&parts, b"\n")
    }),
    ("CR-only line ends", |b| join(&lines(b), b"\r")),
    ("no comment line", |b| join(&lines(b)[1..], b"\n")),
    ("empty", |_| Vec::new()),
    ("a 1022-byte comment", |b| comment_of_len(b, 1022, b"\n")),
    ("a 1023-byte comment", |b| comment_of_len(b, 1023, b"\n")),
    ("a 1021-byte comment, CRLF", |b| {
        comment_of_len(b, 1021, b"\r\n")
    }),
    ("a 1022-byte comment, CRLF", |b| {
        comment_of_len(b, 1022, b"\r\n")
    }),
];

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn minisign(&self, args: &[&str]) -> bool {
        Command::new("minisign")
            .args(args)
            .current_dir(self.dir.path())
            .stdin(std::process::Stdio::null())
            .output()
            .expect("minisign (apt-get install minisign)")
            .status
            .success()
    }

    /// A key pair: (public, secret), made by minisign or by bundler.
    fn keys(&self, by_minisign: bool, name: &str) -> (PathBuf, PathBuf) {
        let (public, secret) = (
            self.path(&format!("{name}.pub")),
            self.path(&format!("{name}.key")),
        );
        if by_minisign {
            let (p, s) = (public.display().to_string(), secret.display().to_string());
            assert!(self.minisign(&["-G", "-W", "-f", "-p", &p, "-s", &s]));
        } else {
            run(
                &bundler(),
                [
                    "keygen",
                    "--out",
                    &self.path(name).display().to_string(),
                    "--unencrypted",
                ],
                &[],
            )
            .code(0);
        }
        (public, secret)
    }

    fn build(&self, secret: &Path, out: &str) -> Output {
        let spec = self.path("spec.json");
        std::fs::write(
            &spec,
            r#"{"apiVersion": "bundle/v1", "name": "keys", "version": "1", "serial": 1,
                "target": {"os": "linux", "arch": "amd64"}, "artifacts": {},
                "steps": [{"kind": "directory", "paths": ["/opt/x"]}]}"#,
        )
        .unwrap();
        run(
            &bundler(),
            [
                "build".as_ref(),
                spec.as_os_str(),
                "--key".as_ref(),
                secret.as_os_str(),
                "--cache".as_ref(),
                self.path("cache").as_os_str(),
                "-o".as_ref(),
                self.path(out).as_os_str(),
                "--quiet".as_ref(),
            ],
            &[("BUNDLER_KEY_PASSWORD", "")],
        )
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or_default()
}

/// Public key files: `minisign -V` accepts a mangled file exactly when
/// `bundler verify --key` and `install-bundle verify --trusted-key` do; a
/// refusal is exit 3 from both, with the same first line.
#[test]
fn public_key_files_are_accepted_exactly_when_minisign_accepts_them() {
    let s = Setup::new();
    let mut accepted = 0;
    let mut refused = 0;
    for by_minisign in [true, false] {
        let tag = if by_minisign { "minisign" } else { "bundler" };
        let (public, secret) = s.keys(by_minisign, tag);
        let bundle = s.path(&format!("{tag}.tar.zst"));
        s.build(&secret, &format!("{tag}.tar.zst")).code(0);
        // The detached signature of the whole file, for minisign.
        let sig = format!("{}.minisig", bundle.display());
        let original = std::fs::read(&public).unwrap();
        for (label, mangle) in MANGLES {
            let file = s.write(&format!("{tag}-mangled.pub"), &mangle(&original));
            let f = file.display().to_string();
            let oracle = s.minisign(&[
                "-V",
                "-m",
                &bundle.display().to_string(),
                "-x",
                &sig,
                "-p",
                &f,
            ]);
            let ours = run(
                &bundler(),
                [
                    "verify",
                    &bundle.display().to_string(),
                    "--key",
                    &f,
                    "--quiet",
                ],
                &[],
            );
            let theirs = run(
                &installer(),
                ["verify", &bundle.display().to_string(), "--trusted-key", &f],
                &[],
            );
            if oracle {
                ours.code(0);
                theirs.code(0);
                accepted += 1;
            } else {
                ours.code(3);
                theirs.code(3);
                assert_eq!(
                    first_line(&ours.stderr),
                    first_line(&theirs.stderr),
                    "{tag}, {label}: different words"
                );
                assert!(
                    ours.stderr
                        .contains(&format!("{f} is not a minisign key: ")),
                    "{tag}, {label}: {ours}"
                );
                refused += 1;
            }
        }
    }
    // The matrix holds both outcomes.
    assert!(accepted >= 2 * 10, "{accepted} accepted");
    assert!(refused >= 2 * 8, "{refused} refused");
}

/// Secret key files: `minisign -S` signs with a mangled unencrypted key
/// exactly when `bundler build --key` does, and minisign verifies what was
/// signed with it.
#[test]
fn secret_key_files_are_accepted_exactly_when_minisign_accepts_them() {
    let s = Setup::new();
    std::fs::write(s.path("msg"), b"message\n").unwrap();
    for by_minisign in [true, false] {
        let tag = if by_minisign { "minisign" } else { "bundler" };
        let (public, secret) = s.keys(by_minisign, tag);
        let original = std::fs::read(&secret).unwrap();
        for (i, (label, mangle)) in MANGLES.iter().enumerate() {
            let file = s.write(&format!("{tag}-mangled.key"), &mangle(&original));
            let f = file.display().to_string();
            let oracle = s.minisign(&["-S", "-s", &f, "-m", "msg", "-x", "msg.sig"]);
            let out = format!("{tag}-{i}.tar.zst");
            let ours = s.build(&file, &out);
            if oracle {
                ours.code(0);
                let b = s.path(&out).display().to_string();
                assert!(
                    s.minisign(&["-V", "-m", &b, "-p", &public.display().to_string()]),
                    "{tag}, {label}: minisign does not verify what bundler signed"
                );
            } else {
                ours.code(1)
                    .stderr_has(&format!("error: {f} is not a minisign key: "));
                assert!(!s.path(&out).exists(), "{tag}, {label}");
            }
        }
    }
}

/// Signature files: the manifest signature inside a bundle, made by
/// bundler or by minisign (`-t "name version serial"`), mangled: bundler
/// and install-bundle accept it exactly when `minisign -V` accepts the same
/// file for the manifest.
#[test]
fn signature_files_are_accepted_exactly_when_minisign_accepts_them() {
    let s = Setup::new();
    let (public, secret) = s.keys(true, "release");
    let p = public.display().to_string();
    s.build(&secret, "b.tar.zst").code(0);
    let entries = kit::read_entries(&s.path("b.tar.zst"));
    let manifest = s.write("BUNDLE.json", &entries[0].data);
    let by_bundler = entries[1].data.clone();
    assert!(s.minisign(&[
        "-S",
        "-s",
        &secret.display().to_string(),
        "-m",
        "BUNDLE.json",
        "-x",
        "m.sig",
        "-t",
        "keys 1 1"
    ]));
    let by_minisign = std::fs::read(s.path("m.sig")).unwrap();
    let mut checked = 0;
    for (tag, original) in [("bundler", &by_bundler), ("minisign", &by_minisign)] {
        for (label, mangle) in MANGLES {
            let sig = mangle(original);
            let f = s.write("mangled.sig", &sig);
            let oracle = s.minisign(&[
                "-V",
                "-m",
                &manifest.display().to_string(),
                "-x",
                &f.display().to_string(),
                "-p",
                &p,
            ]);
            let mut e = entries.clone();
            e[1] = RawEntry::file("BUNDLE.json.minisig", sig);
            let bundle = s.path("mangled.tar.zst");
            kit::write_entries(&e, &bundle);
            let b = bundle.display().to_string();
            let ours = run(&bundler(), ["verify", &b, "--key", &p, "--quiet"], &[]);
            let theirs = run(&installer(), ["verify", &b, "--trusted-key", &p], &[]);
            let want = if oracle { 0 } else { 3 };
            assert_eq!(
                ours.code, want,
                "{tag}, {label}: minisign accepts: {oracle}\n{ours}"
            );
            assert_eq!(
                theirs.code, want,
                "{tag}, {label}: minisign accepts: {oracle}\n{theirs}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 2 * MANGLES.len());
}

/// A key file that cannot be read at all: both programs exit 3 with the
/// same message.
#[test]
fn missing_key_file_gets_the_same_words_from_both_programs() {
    let s = Setup::new();
    let (_, secret) = s.keys(false, "release");
    s.build(&secret, "b.tar.zst").code(0);
    let b = s.path("b.tar.zst").display().to_string();
    let missing = s.path("nowhere.pub").display().to_string();
    let ours = run(
        &bundler(),
        ["verify", &b, "--key", &missing, "--quiet"],
        &[],
    );
    let theirs = run(&installer(), ["verify", &b, "--trusted-key", &missing], &[]);
    ours.code(3)
        .stderr_has(&format!("error: cannot read key file {missing}: "));
    theirs.code(3);
    assert_eq!(ours.stderr.trim_end(), first_line(&theirs.stderr));
}
