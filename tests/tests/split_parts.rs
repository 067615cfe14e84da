//! Split parts with parity for removable media (issue 13, "Removable
//! media"): `bundler split`, `bundler join` and `install-bundle` from parts,
//! with up to PARITY parts lost or corrupt in different places, parts on
//! several "sticks", and one part too many lost: a precise refusal, nothing
//! written, the host untouched.

use std::path::{Path, PathBuf};

use bundle_tests::cli::{Output, bundler, installer, run};
use bundle_tests::fixture::Fixture;
use bundle_tests::kit;
use bundle_tests::tree::{diff_listings, tree_listing};

const CIDR: &str = "--set=POD_CIDR=172.16.1.0/24";

fn split(f: &Fixture, bundle: &Path, out: &Path, size: &str, parity: &str) -> Output {
    run(
        &bundler(),
        [
            "split".as_ref(),
            bundle.as_os_str(),
            "--size".as_ref(),
            size.as_ref(),
            "--parity".as_ref(),
            parity.as_ref(),
            "--key".as_ref(),
            f.keys.secret.as_os_str(),
            "-o".as_ref(),
            out.as_os_str(),
        ],
        &[],
    )
}

fn join(f: &Fixture, index: &Path, out: &Path, extra: &[&Path]) -> Output {
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "join".as_ref(),
        index.as_os_str(),
        "--key".as_ref(),
        f.keys.public.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
    ];
    for d in extra {
        args.push("--parts-dir".as_ref());
        args.push(d.as_os_str());
    }
    run(&bundler(), args, &[])
}

fn part(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("worker.tar.zst.{:03}", i + 1))
}

fn corrupt(p: &Path, at: usize) {
    let mut b = std::fs::read(p).unwrap();
    let at = at.min(b.len() - 1);
    b[at] ^= 0x40;
    std::fs::write(p, b).unwrap();
}

/// The bundle split in 1 KiB parts with 2 parity parts.
fn setup() -> (Fixture, PathBuf, PathBuf, usize) {
    let f = Fixture::new();
    let bundle = f.bundle();
    let parts = f.path("parts");
    let out = split(&f, &bundle, &parts, "1K", "2");
    out.code(0)
        .stdout_has("2 parity part(s); any 2 may be lost");
    let n = std::fs::read_dir(&parts)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("worker.tar.zst.0")
        })
        .count();
    assert!(
        n >= 5,
        "{n} parts: the test needs several data parts\n{out}"
    );
    (f, bundle, parts, n)
}

#[test]
fn intact_parts_join_byte_identical_and_install_like_the_bundle() {
    let (f, bundle, parts, _) = setup();
    let joined = f.path("joined.tar.zst");
    join(&f, &parts.join("worker.tar.zst.parts.json"), &joined, &[])
        .code(0)
        .stdout_has("every part intact");
    assert_eq!(
        std::fs::read(&joined).unwrap(),
        std::fs::read(&bundle).unwrap()
    );
    // Installing from the parts gives the same root as from the bundle.
    let a = f.root("from-bundle");
    let b = f.root("from-parts");
    kit::install(&a, &bundle, &f.keys.public, &[CIDR], &[]).code(0);
    let first_part = part(&parts, 0);
    kit::install(&b, &first_part, &f.keys.public, &[CIDR], &[])
        .code(0)
        .stdout_has("reading");
    let strip = |mut l: std::collections::BTreeMap<String, String>| {
        l.retain(|k, _| !k.starts_with("var/lib/install-bundle"));
        l
    };
    assert!(diff_listings(&strip(tree_listing(&a)), &strip(tree_listing(&b))).is_empty());
}

#[test]
fn up_to_parity_lost_or_corrupt_parts_anywhere_are_rebuilt() {
    let (f, bundle, parts, n) = setup();
    let original = std::fs::read(&bundle).unwrap();
    // (parts removed, parts corrupted): first and last data part, a parity
    // part, data and parity together.
    for (round, (lose, bad)) in [
        (vec![0usize, 1], vec![]),
        (vec![n - 3], vec![n - 1]),
        (vec![], vec![0, n - 2]),
        (vec![n - 1, n - 2], vec![]),
    ]
    .into_iter()
    .enumerate()
    {
        let dir = f.path(&format!("round-{round}"));
        std::fs::create_dir_all(&dir).unwrap();
        for e in std::fs::read_dir(&parts).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
        }
        for i in &lose {
            std::fs::remove_file(part(&dir, *i)).unwrap();
        }
        for i in &bad {
            corrupt(&part(&dir, *i), 5000);
        }
        let joined = f.path(&format!("joined-{round}.tar.zst"));
        join(&f, &dir.join("worker.tar.zst.parts.json"), &joined, &[]).code(0);
        assert_eq!(std::fs::read(&joined).unwrap(), original, "round {round}");
        let root = f.root(&format!("root-{round}"));
        kit::install(
            &root,
            &dir.join("worker.tar.zst.parts.json"),
            &f.keys.public,
            &[CIDR],
            &[],
        )
        .code(0);
    }
}

#[test]
fn parts_on_several_sticks_are_found_with_parts_dir() {
    let (f, bundle, parts, n) = setup();
    let stick2 = f.path("stick2");
    std::fs::create_dir_all(&stick2).unwrap();
    for i in (0..n).step_by(2) {
        std::fs::rename(part(&parts, i), part(&stick2, i)).unwrap();
    }
    let joined = f.path("joined.tar.zst");
    join(
        &f,
        &parts.join("worker.tar.zst.parts.json"),
        &joined,
        &[&stick2],
    )
    .code(0);
    assert_eq!(
        std::fs::read(&joined).unwrap(),
        std::fs::read(&bundle).unwrap()
    );
    let root = f.root("root");
    kit::install(
        &root,
        &parts.join("worker.tar.zst.parts.json"),
        &f.keys.public,
        &[CIDR, "--parts-dir", stick2.to_str().unwrap()],
        &[],
    )
    .code(0);
}

#[test]
fn one_part_more_than_parity_is_a_precise_refusal_with_nothing_written() {
    let (f, _bundle, parts, _) = setup();
    for i in [0, 2, 3] {
        std::fs::remove_file(part(&parts, i)).unwrap();
    }
    let joined = f.path("joined.tar.zst");
    join(&f, &parts.join("worker.tar.zst.parts.json"), &joined, &[])
        .code(3)
        .stderr_has("3 of the")
        .stderr_has("worker.tar.zst.001 (not found)")
        .stderr_has("worker.tar.zst.003 (not found)")
        .stderr_has("worker.tar.zst.004 (not found)");
    assert!(!joined.exists());
    let root = f.root("root");
    let before = tree_listing(&root);
    kit::install(
        &root,
        &parts.join("worker.tar.zst.parts.json"),
        &f.keys.public,
        &[CIDR],
        &[],
    )
    .code(3)
    .stderr_has("worker.tar.zst.001 (not found)")
    .stderr_has("nothing was changed");
    assert!(diff_listings(&before, &tree_listing(&root)).is_empty());
}

#[test]
fn corruption_beyond_parity_in_one_place_is_refused_naming_the_parts() {
    let (f, _bundle, parts, _) = setup();
    for i in [1, 2, 3] {
        corrupt(&part(&parts, i), 100);
    }
    let joined = f.path("joined.tar.zst");
    join(&f, &parts.join("worker.tar.zst.parts.json"), &joined, &[])
        .code(3)
        .stderr_has("cannot be rebuilt")
        .stderr_has("worker.tar.zst.003");
    assert!(!joined.exists());
    let root = f.root("root");
    let before = tree_listing(&root);
    kit::install(
        &root,
        &parts.join("worker.tar.zst.parts.json"),
        &f.keys.public,
        &[CIDR],
        &[],
    )
    .code(3)
    .stderr_has("cannot be rebuilt");
    assert!(diff_listings(&before, &tree_listing(&root)).is_empty());
}

#[test]
fn a_tampered_or_unsigned_index_is_refused() {
    let (f, _bundle, parts, _) = setup();
    let index = parts.join("worker.tar.zst.parts.json");
    let text = std::fs::read_to_string(&index).unwrap();
    std::fs::write(
        &index,
        text.replacen("\"parity_parts\": 2", "\"parity_parts\": 1", 1),
    )
    .unwrap();
    join(&f, &index, &f.path("j.tar.zst"), &[])
        .code(3)
        .stderr_has("worker.tar.zst.parts.json");
    std::fs::write(&index, text).unwrap();
    std::fs::remove_file(parts.join("worker.tar.zst.parts.json.minisig")).unwrap();
    join(&f, &index, &f.path("j.tar.zst"), &[])
        .code(3)
        .stderr_has("worker.tar.zst.parts.json.minisig");
    let root = f.root("root");
    let out = run(
        &installer(),
        kit::install_args(&root, &index, &f.keys.public, &[CIDR]),
        &[],
    );
    out.code(3).stderr_has("travels with its signature");
}
