//! Parallel downloads.
