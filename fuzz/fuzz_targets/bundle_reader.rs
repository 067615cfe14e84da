//! Arbitrary bytes as a bundle file: `BundleReader::open` then
//! `read_artifacts`, with a fixed trusted key. Nothing may panic, hang or
//! allocate without bound; whatever is accepted must hold what it promises.
#![no_main]

use std::sync::OnceLock;

use bundle_spec::Limits;
use bundle_spec::sign::TrustedKeys;
use libfuzzer_sys::fuzz_target;

static TRUSTED: OnceLock<TrustedKeys> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let trusted = TRUSTED.get_or_init(bundle_fuzz::trusted);
    // The limits the installer uses, and smaller ones the input can reach.
    bundle_fuzz::check_bundle(data, trusted, &Limits::default());
    bundle_fuzz::check_bundle(data, trusted, &bundle_fuzz::limits());
});
