//! The fuzzing corpus in the normal suite: the committed seeds
//! (fuzz/corpus/<target>/) still mean what they were made to mean, and every
//! input a fuzzer ever found a crash with (fuzz/regressions/<target>/, plus
//! the cases below) goes through the same checks as in the fuzz targets
//! (fuzz/src/lib.rs) without a panic.

use std::path::{Path, PathBuf};

use bundle_spec::Limits;
use bundle_spec::read::{BundleReader, DiscardSink};
use bundle_spec::sign::{KeyId, SecretKey, TrustedKeys};
use bundle_spec::validate::{parse_manifest, parse_spec};

/// The fuzzing key (fuzz/src/lib.rs: KEY_ID, KEY_SEED).
fn trusted() -> TrustedKeys {
    let mut t = TrustedKeys::new();
    t.add(
        SecretKey::from_seed(KeyId(*b"fuzzkey1"), [7; 32]).public(),
        "fuzz",
    );
    t
}

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

/// What the `bundle_reader` target checks, returning whether it was accepted.
fn check_bundle(bytes: &[u8], trusted: &TrustedKeys) -> bool {
    let limits = Limits::default();
    let Ok(reader) = BundleReader::open(bytes, trusted, &limits) else {
        return false;
    };
    let manifest = reader.manifest().clone();
    match reader.read_artifacts(&mut DiscardSink, &bundle_spec::NoReporter) {
        Ok(v) => {
            assert_eq!(v.artifact_bytes, manifest.total_artifact_bytes());
            let again = parse_manifest(&manifest.to_bytes(), &limits).unwrap();
            assert_eq!(again, manifest);
            true
        }
        Err(_) => false,
    }
}

/// What the `spec_parser` target checks.
fn check_parsers(bytes: &[u8]) -> (bool, bool) {
    let limits = Limits::default();
    let spec = parse_spec(bytes, &limits).ok();
    if let Some(s) = &spec {
        let again = parse_spec(&serde_json::to_vec(s).unwrap(), &limits).unwrap();
        assert_eq!(&again, s);
    }
    let manifest = parse_manifest(bytes, &limits).ok();
    if let Some(m) = &manifest {
        let again = parse_manifest(&m.to_bytes(), &limits).unwrap();
        assert_eq!(&again, m);
    }
    (spec.is_some(), manifest.is_some())
}

#[test]
fn fuzz_seed_bundles_verify_with_the_fuzzing_key() {
    let trusted = trusted();
    let seeds = files(&fuzz_dir().join("corpus/bundle_reader"));
    assert!(seeds.len() >= 3, "seed corpus missing: {seeds:?}");
    for p in &seeds {
        let bytes = std::fs::read(p).unwrap();
        assert!(
            check_bundle(&bytes, &trusted),
            "{} does not verify",
            p.display()
        );
        // And not with another key.
        assert!(!check_bundle(&bytes, &TrustedKeys::new()));
    }
    for p in files(&fuzz_dir().join("corpus/bundle_tar")) {
        let tar = std::fs::read(&p).unwrap();
        let z = zstd::encode_all(&tar[..], 1).unwrap();
        assert!(
            check_bundle(&z, &trusted),
            "{} does not verify",
            p.display()
        );
    }
}

#[test]
fn fuzz_seed_specs_and_manifests_parse() {
    let seeds = files(&fuzz_dir().join("corpus/spec_parser"));
    assert!(seeds.len() >= 4, "seed corpus missing: {seeds:?}");
    for p in &seeds {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let (spec, manifest) = check_parsers(&std::fs::read(p).unwrap());
        if name.starts_with("spec-") {
            assert!(spec, "{name} is not a valid spec");
        } else {
            assert!(manifest, "{name} is not a valid manifest");
        }
    }
}

#[test]
fn fuzz_regressions_do_not_panic() {
    let trusted = trusted();
    let dir = fuzz_dir().join("regressions");
    let mut n = 0;
    for p in files(&dir.join("bundle_reader")) {
        check_bundle(&std::fs::read(&p).unwrap(), &trusted);
        n += 1;
    }
    for p in files(&dir.join("bundle_tar")) {
        let tar = std::fs::read(&p).unwrap();
        check_bundle(&zstd::encode_all(&tar[..], 1).unwrap(), &trusted);
        n += 1;
    }
    for p in files(&dir.join("spec_parser")) {
        check_parsers(&std::fs::read(&p).unwrap());
        n += 1;
    }
    eprintln!("{n} fuzz regression inputs replayed");
}
