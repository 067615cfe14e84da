//! `strip_components` and `include` against GNU tar as the oracle: archives
//! made by the real `tar` in the layouts upstream releases use (`./`-prefixed
//! from `tar -C dir .`, plain, with and without directory entries, the root
//! entry `./` alone, nested), extracted by `tar --strip-components=N` for
//! N = 0..3; `scan` must select exactly the tree tar writes.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use bundle_spec::extract::{ExtractError, MemberKind, scan};
use bundle_spec::spec::ExtractStep;

fn step(include: Option<&[&str]>, strip_components: u32) -> ExtractStep {
    ExtractStep {
        artifact: "tool".parse().unwrap(),
        dest: "/opt/x".parse().unwrap(),
        include: include.map(|g| g.iter().map(|s| (*s).to_owned()).collect()),
        strip_components,
        allow_setuid: false,
    }
}

#[track_caller]
fn sh(cmd: &mut Command) {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `d PATH` / `f PATH` / `l PATH` for everything below `dir`.
fn tree(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let rel = e
                .path()
                .strip_prefix(dir)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let t = e.file_type().unwrap();
            if t.is_symlink() {
                out.insert(format!("l {rel}"));
            } else if t.is_dir() {
                out.insert(format!("d {rel}"));
                stack.push(e.path());
            } else {
                out.insert(format!("f {rel}"));
            }
        }
    }
    out
}

/// What `scan` selects, with the parent directories the engine creates.
fn scanned(archive: &Path, step: &ExtractStep) -> Result<BTreeSet<String>, ExtractError> {
    let members = scan(archive, "tool", step)?;
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

/// A source tree: nested files, a symlink, an empty directory.
fn source(dir: &Path) {
    for (p, data) in [
        ("dist/pkg/spf", "spf\n"),
        ("dist/pkg/lib/libx.so", "lib\n"),
        ("dist/README", "readme\n"),
        ("top", "top\n"),
        ("a/b/c/d/deep", "deep\n"),
    ] {
        let path = dir.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, data).unwrap();
    }
    std::fs::create_dir_all(dir.join("dist/empty")).unwrap();
    std::os::unix::fs::symlink("spf", dir.join("dist/pkg/spf-link")).unwrap();
}

/// Archives made by GNU tar: (label, arguments after `-cf ARCHIVE -C SRC`).
const LAYOUTS: &[(&str, &[&str])] = &[
    // `tar -C dir -czf x.tgz .`: ./, ./dist/, ./dist/pkg/spf ... (the CNI
    // plugins and many release tarballs).
    ("dot-prefixed with directories", &["."]),
    // `tar -C dir -cf x.tar dist top a`: dist/, dist/pkg/spf ...
    ("plain with directories", &["dist", "top", "a"]),
    // Only files, no directory entries.
    (
        "plain files only",
        &[
            "--no-recursion",
            "dist/pkg/spf",
            "dist/pkg/lib/libx.so",
            "top",
            "a/b/c/d/deep",
        ],
    ),
    (
        "dot-prefixed files only",
        &[
            "--no-recursion",
            "./dist/pkg/spf",
            "./dist/README",
            "./top",
            "./a/b/c/d/deep",
        ],
    ),
    // The CNI layout: flat files below ./
    ("dot-prefixed flat", &["--no-recursion", ".", "./top"]),
    // One directory holding everything: containerd-style bin/ and nested.
    ("nested under one directory", &["a"]),
    ("dot-prefixed nested", &["./a"]),
];

/// The archive root entry `./` alone extracts nothing at any N; `scan`
/// says so.
#[test]
fn root_entry_alone_extracts_nothing_like_gnu_tar() {
    let w = tempfile::tempdir().unwrap();
    let src = w.path().join("src");
    source(&src);
    let archive = w.path().join("root.tar");
    sh(Command::new("tar")
        .arg("-cf")
        .arg(&archive)
        .arg("-C")
        .arg(&src)
        .args(["--no-recursion", "."]));
    for n in 0..=3 {
        let out = w.path().join(format!("out{n}"));
        std::fs::create_dir(&out).unwrap();
        sh(Command::new("tar")
            .arg(format!("--strip-components={n}"))
            .arg("-xf")
            .arg(&archive)
            .arg("-C")
            .arg(&out));
        assert!(tree(&out).is_empty());
        let err = scanned(&archive, &step(None, n)).unwrap_err();
        assert!(
            matches!(err, ExtractError::NothingToExtract { .. }),
            "N={n}: {err}"
        );
    }
}

#[test]
fn strip_components_matches_gnu_tar_for_every_layout_and_n_0_to_3() {
    let w = tempfile::tempdir().unwrap();
    let src = w.path().join("src");
    source(&src);
    let mut compared = 0;
    for (i, (label, args)) in LAYOUTS.iter().enumerate() {
        for compress in ["", "z"] {
            let archive = w.path().join(format!("a{i}{compress}.tar"));
            sh(Command::new("tar")
                .args(["--owner=0", "--group=0", &format!("-c{compress}f")])
                .arg(&archive)
                .arg("-C")
                .arg(&src)
                .args(*args));
            for n in 0..=3u32 {
                let out = w.path().join(format!("out-{i}{compress}-{n}"));
                std::fs::create_dir(&out).unwrap();
                sh(Command::new("tar")
                    .arg(format!("--strip-components={n}"))
                    .arg("-xf")
                    .arg(&archive)
                    .arg("-C")
                    .arg(&out));
                let expected = tree(&out);
                match scanned(&archive, &step(None, n)) {
                    Ok(got) => assert_eq!(got, expected, "{label}, N={n}"),
                    Err(ExtractError::NothingToExtract { .. }) => {
                        assert!(
                            expected.is_empty(),
                            "{label}, N={n}: tar wrote {expected:?}"
                        )
                    }
                    Err(e) => panic!("{label}, N={n}: {e}"),
                }
                compared += 1;
            }
        }
    }
    assert_eq!(compared, LAYOUTS.len() * 2 * 4);
}

/// `./dist/pkg/spf` without 1 component is `dist/pkg/spf`, and the CNI
/// layout `./bridge` without 1 is `bridge` (the two faults of case 03).
#[test]
fn dot_prefixed_members_lose_the_dot_as_their_first_component() {
    let w = tempfile::tempdir().unwrap();
    let src = w.path().join("src");
    std::fs::create_dir_all(src.join("dist/pkg")).unwrap();
    std::fs::write(src.join("dist/pkg/spf"), "spf").unwrap();
    std::fs::write(src.join("bridge"), "bridge").unwrap();
    let archive = w.path().join("x.tgz");
    sh(Command::new("tar")
        .arg("-czf")
        .arg(&archive)
        .arg("-C")
        .arg(&src)
        .arg("."));
    let members = scan(&archive, "tool", &step(None, 1)).unwrap();
    let mut paths: Vec<&str> = members.iter().map(|m| m.path.as_str()).collect();
    paths.sort_unstable();
    assert_eq!(paths, ["bridge", "dist", "dist/pkg", "dist/pkg/spf"]);
}

/// `include` globs match a member's name as `tar -t` lists it (trailing `/`
/// aside) or that name without its leading `./`; a glob's own leading `./`
/// is ignored. So what users copy from `tar -tf` and what they type both
/// work, for `./`-prefixed and plain archives alike.
#[test]
fn include_globs_match_the_listed_name_with_and_without_leading_dot_slash() {
    let w = tempfile::tempdir().unwrap();
    let src = w.path().join("src");
    source(&src);
    let dotted = w.path().join("dotted.tar");
    sh(Command::new("tar")
        .arg("-cf")
        .arg(&dotted)
        .arg("-C")
        .arg(&src)
        .arg("."));
    let plain = w.path().join("plain.tar");
    sh(Command::new("tar")
        .arg("-cf")
        .arg(&plain)
        .arg("-C")
        .arg(&src)
        .args(["dist", "top", "a"]));
    for archive in [&dotted, &plain] {
        for glob in [
            "./dist/pkg/spf",
            "dist/pkg/spf",
            "dist/pkg/sp?",
            "dist/*/spf",
            "**/spf",
            "./**/spf",
        ] {
            let members = scan(archive, "tool", &step(Some(&[glob]), 0)).unwrap();
            let paths: Vec<&str> = members.iter().map(|m| m.path.as_str()).collect();
            assert_eq!(paths, ["dist/pkg/spf"], "{glob} in {}", archive.display());
            // Selection happens before stripping.
            let members = scan(archive, "tool", &step(Some(&[glob]), 2)).unwrap();
            let paths: Vec<&str> = members.iter().map(|m| m.path.as_str()).collect();
            let want = if archive == &dotted { "pkg/spf" } else { "spf" };
            assert_eq!(paths, [want], "{glob} in {}", archive.display());
        }
        // `*` does not cross `/`.
        let err = scan(archive, "tool", &step(Some(&["*spf"]), 0)).unwrap_err();
        assert!(matches!(err, ExtractError::IncludeMatchedNothing { .. }));
    }
    // A pattern copied from the listing of the dotted archive, `*` standing
    // for the leading `.`, matches the listed name.
    let members = scan(&dotted, "tool", &step(Some(&["*/top"]), 0)).unwrap();
    let paths: Vec<&str> = members.iter().map(|m| m.path.as_str()).collect();
    assert_eq!(paths, ["top"]);
    // Directory entries are matched without their trailing `/`.
    let members = scan(&dotted, "tool", &step(Some(&["./dist/pkg"]), 0)).unwrap();
    let paths: Vec<&str> = members.iter().map(|m| m.path.as_str()).collect();
    assert_eq!(paths, ["dist/pkg"]);
}
