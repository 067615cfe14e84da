//! Tree hashes.
