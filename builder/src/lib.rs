//! The `bundler` library: fetch → verify → pack → sign.
pub mod build;
pub mod cache;
pub mod content;
pub mod diff;
pub mod differential;
pub mod fetch;
pub mod images;
pub mod keys;
pub mod lock;
pub mod pin;
pub mod progress;
pub mod registry;
pub mod sandbox;
pub mod sbom;
pub mod transfer;
