//! Extracting members of upstream tar archives (`extract` steps).
//!
//! The code lives in [`bundle_spec::extract`], so that `bundler build` and
//! `bundler pin` read every archive with exactly the reader the installer
//! uses: nothing the builder accepts can fail on the host for being
//! unreadable. This module re-exports it under its old path.

pub use bundle_spec::extract::*;
