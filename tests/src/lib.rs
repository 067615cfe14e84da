//! Support for the end-to-end tests of the bundler and `install-bundle`.
//!
//! - [`server`]: a loopback HTTP/1.1 server with byte-level fault injection that
//!   stands in for upstream download sites ([`server::Server`], [`server::Behavior`]).
//! - [`tree`]: deterministic hashes and listings of directory trees, to prove that an
//!   operation changed (or did not change) a tree ([`tree::tree_hash`],
//!   [`tree::tree_listing`], [`tree::diff_listings`]).
//!
//! - [`debootstrap`]: a real Debian root (`debootstrap --variant=minbase`), cached
//!   under `target/e2e/` and copied per test.
//! - [`aptrepo`]: signed apt repositories built from real `.deb`s, and the host's
//!   `apt-get` (with private state) as a dependency-closure oracle.
//! - [`cli`]: running `bundler` and `install-bundle` as subprocesses, throwaway keys.
//! - [`registry`]: real container registries (Debian's `docker-registry`) on
//!   loopback: plain HTTP, HTTPS with htpasswd, and token authentication.
//! - [`oci`]: test container images (busybox-static, one or two platforms)
//!   pushed to them with the distribution API.
//! - [`fleet`]: hosts reached over SSH (one real sshd each on loopback, each
//!   with its own root) and the real `ansible-core` driving them.
//! - [`s3`]: a real S3 API on loopback (the `moto` server), buckets and
//!   objects inspected with boto3.
//! - [`vm`]: a booted Debian 12 machine (qemu, its own kernel and systemd)
//!   that runs commands, reboots, powers off and has its power cut.
//! - [`worker`]: the Kubernetes worker example served on loopback (OS
//!   packages, upstream files, container images, the spec rewritten to them).
//! - [`kit`]: taking bundles apart and putting them back together (re-signed or
//!   not) to build hostile bundles.
//!
//! The `serve` binary of this package serves a directory with
//! [`server::Server::serve_dir`] for `make demo`.
#![warn(missing_docs)]

pub mod aptrepo;
pub mod cli;
pub mod debootstrap;
pub mod fixture;
pub mod fleet;
pub mod kit;
pub mod oci;
pub mod registry;
pub mod s3;
pub mod schema;
pub mod server;
pub mod tree;
pub mod vm;
pub mod worker;
