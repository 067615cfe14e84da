//! Compiles every `keys/*.pub` of the repository into the installer, so one
//! copied binary trusts exactly those keys.

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    let keys = Path::new(env!("CARGO_MANIFEST_DIR")).join("../keys");
    println!("cargo:rerun-if-changed={}", keys.display());
    let mut entries: Vec<_> = std::fs::read_dir(&keys)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    entries.retain(|p| p.extension().is_some_and(|e| e == "pub"));
    entries.sort();
    let mut out = String::from(
        "/// Public keys compiled in from keys/*.pub: (file name, content).\npub const BUILTIN_KEYS: &[(&str, &str)] = &[\n",
    );
    for p in entries {
        println!("cargo:rerun-if-changed={}", p.display());
        let text = std::fs::read_to_string(&p).expect("keys/*.pub is readable text");
        let name = p
            .file_name()
            .expect("file name")
            .to_string_lossy()
            .into_owned();
        writeln!(out, "    ({name:?}, {text:?}),").expect("write to string");
    }
    out.push_str("];\n");
    let dest = Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR")).join("builtin_keys.rs");
    std::fs::write(dest, out).expect("write builtin_keys.rs");
}
