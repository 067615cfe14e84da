//! Support for the end-to-end tests: a loopback HTTP server and tree hashes.
pub mod server;
pub mod tree;
