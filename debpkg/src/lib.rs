//! Debian package metadata, without running dpkg.
//!
//! * [`version`] — [`Version`] parsing and dpkg's exact ordering.
//! * [`control`] — deb822 stanzas ([`Stanza`]), read streaming with
//!   [`StanzaReader`].
//! * [`relation`] — `Depends`-style fields ([`Relation`]) and `Provides`.
//! * [`deb`] — the control file of a `.deb` ([`read_control`]) and its
//!   dependency metadata ([`DebInfo`]).
//! * [`copyright`] — licenses stated by machine-readable copyright files.
//! * [`status`] — dpkg's status database ([`Status`]).
//! * [`check`] — the installer preflight: [`check_dependencies`] and
//!   [`already_installed`].
//! * [`index`] — apt repository metadata: `Release`/`InRelease` and
//!   `Packages` indexes.
//! * [`resolve`] — the dependency closure of requested packages over an
//!   index, minus a baseline, in install order ([`resolve::resolve`]).
//!
//! The crate is pure Rust library code: it spawns no processes and needs no
//! Debian tools on the host.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod check;
pub mod control;
pub mod copyright;
pub mod deb;
pub mod index;
pub mod relation;
pub mod resolve;
pub mod status;
pub mod version;

pub use check::{PreDependsCycle, Unmet, already_installed, check_dependencies, install_passes};
pub use control::{ControlError, FieldError, Stanza, StanzaReader};
pub use deb::{DebError, DebInfo, MultiArch, read_control, read_copyright, read_info};
pub use relation::{Op, Provide, Relation, RelationError};
pub use status::{InstalledPackage, Status, StatusError};
pub use version::{Version, VersionError};
