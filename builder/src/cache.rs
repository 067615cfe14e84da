//! Content-addressed download cache.
