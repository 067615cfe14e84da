//! Arbitrary bytes as a spec (`parse_spec`) and as a manifest
//! (`parse_manifest`): no panic, no unbounded recursion, and whatever
//! parses survives a round trip through its canonical JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    bundle_fuzz::check_parsers(data);
});
