//! Debian package metadata.
