//! The `bundler` library: fetch → verify → pack → sign.
pub mod cache;
pub mod fetch;
