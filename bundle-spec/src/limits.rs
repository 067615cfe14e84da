//! Resource limits enforced while reading untrusted input.

/// Bounds on everything the reader accepts from a bundle or spec.
///
/// Every limit is enforced while streaming, before the bytes it bounds are
/// read: an oversized manifest is refused from its tar header, an artifact
/// bigger than its manifest entry is never read past the declared size, and
/// the zstd window is capped before decompression starts. The defaults are
/// generous for real bundles (a worker node is ~1 GiB) and small enough that
/// a hostile bundle cannot exhaust memory: the reader's peak memory is the
/// manifest plus the zstd window plus a fixed copy buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest `BUNDLE.json` accepted, in bytes (default 8 MiB).
    pub max_manifest_bytes: u64,
    /// Largest `BUNDLE.json.minisig` accepted, in bytes (default 4 KiB).
    pub max_signature_bytes: u64,
    /// Largest `SBOM.cdx.json` accepted, in bytes (default 16 MiB).
    pub max_sbom_bytes: u64,
    /// Most artifacts one bundle may hold (default 10 000).
    pub max_artifacts: usize,
    /// Most steps one bundle may hold (default 10 000).
    pub max_steps: usize,
    /// Largest single artifact, in bytes (default 64 GiB).
    pub max_artifact_bytes: u64,
    /// Largest sum of all artifact sizes, in bytes (default 256 GiB).
    pub max_total_bytes: u64,
    /// Largest zstd window, as a power of two (default 23: 8 MiB, what level 19 uses).
    pub zstd_window_log_max: u32,
    /// Largest JSON nesting depth of a spec or manifest (default 32).
    pub max_json_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_manifest_bytes: 8 << 20,
            max_signature_bytes: 4 << 10,
            max_sbom_bytes: 16 << 20,
            max_artifacts: 10_000,
            max_steps: 10_000,
            max_artifact_bytes: 64 << 30,
            max_total_bytes: 256 << 30,
            zstd_window_log_max: 23,
            max_json_depth: 32,
        }
    }
}
