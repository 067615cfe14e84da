//! Structured: the input is a bundle's *decompressed* tar (the seeds are
//! valid bundles' tars), so mutations land in headers, the manifest, the
//! signature and the artifacts rather than in zstd's entropy coding. Each
//! input is compressed and read twice: as is (an attacker without the key),
//! and with its manifest re-signed by the trusted key (a signed bundle that
//! is still malformed), which lets mutated manifests reach the parser and
//! the artifact checks.
#![no_main]

use std::sync::OnceLock;

use bundle_spec::sign::TrustedKeys;
use libfuzzer_sys::fuzz_target;

static TRUSTED: OnceLock<TrustedKeys> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let trusted = TRUSTED.get_or_init(bundle_fuzz::trusted);
    let limits = bundle_fuzz::limits();
    bundle_fuzz::check_bundle(&bundle_fuzz::compress(data), trusted, &limits);
    let mut entries = bundle_fuzz::split_tar(data);
    if entries.is_empty() {
        return;
    }
    bundle_fuzz::resign(&mut entries);
    let tar = bundle_fuzz::join_tar(&entries);
    bundle_fuzz::check_bundle(&bundle_fuzz::compress(&tar), trusted, &limits);
});
