//! dpkg's status database (`/var/lib/dpkg/status`).
//!
//! Only packages whose `Status` is `install ok installed` or
//! `hold ok installed` count as installed. Every other state — removed but
//! with configuration files left, half-installed, unpacked but not
//! configured, awaiting triggers, selected for removal (`deinstall ok
//! installed`), flagged `reinstreq` — is ignored, so a dependency on such a
//! package is reported as unmet rather than trusted.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

use crate::control::{ControlError, FieldError, Fields, Stanza, StanzaReader};
use crate::deb::{MultiArch, architecture_field};
use crate::relation::Provide;
use crate::version::Version;

/// A package that dpkg reports as installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledPackage {
    /// `Package`.
    pub package: String,
    /// `Version`.
    pub version: Version,
    /// `Architecture` (`amd64`, `all`, ...).
    pub architecture: String,
    /// `Multi-Arch` ([`MultiArch::No`] when absent).
    pub multi_arch: MultiArch,
    /// `Provides` (empty when absent).
    pub provides: Vec<Provide>,
}

const WANTS: &[&str] = &["unknown", "install", "hold", "deinstall", "purge"];
const FLAGS: &[&str] = &["ok", "reinstreq"];
const STATES: &[&str] = &[
    "not-installed",
    "config-files",
    "half-installed",
    "unpacked",
    "half-configured",
    "triggers-awaited",
    "triggers-pending",
    "installed",
];

impl InstalledPackage {
    /// Interprets a status-file stanza: `Ok(None)` if the package is not
    /// (fully) installed, an error if its `Status` is malformed or an
    /// installed package lacks `Version`/`Architecture`.
    pub fn from_status_stanza(stanza: &Stanza) -> Result<Option<Self>, FieldError> {
        let package = Fields::package(stanza)?;
        let f = Fields { stanza, package };
        let status = f.required("Status")?;
        let words: Vec<&str> = status.split_whitespace().collect();
        let [want, flag, state] = words[..] else {
            return Err(f.invalid("Status", status, "expected three words: want flag status"));
        };
        if !WANTS.contains(&want) || !FLAGS.contains(&flag) || !STATES.contains(&state) {
            return Err(f.invalid("Status", status, "unknown selection, flag or state"));
        }
        if !(matches!(want, "install" | "hold") && flag == "ok" && state == "installed") {
            return Ok(None);
        }
        Ok(Some(InstalledPackage {
            package: package.to_owned(),
            version: f.version("Version")?,
            architecture: architecture_field(&f)?.to_owned(),
            multi_arch: MultiArch::from_fields(&f)?,
            provides: f.provides()?,
        }))
    }
}

/// The installed packages of a dpkg database, indexed by name and by
/// provided name.
#[derive(Debug, Clone, Default)]
pub struct Status {
    packages: Vec<InstalledPackage>,
    by_name: HashMap<String, Vec<usize>>,
    by_provide: HashMap<String, Vec<usize>>,
}

/// Why a status file could not be read. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The file exists but could not be opened.
    #[error("{}: {source}", path.display())]
    Io {
        /// The status file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A syntax or read error (names the file and line).
    #[error(transparent)]
    Control(#[from] ControlError),
    /// A stanza has a missing or invalid field.
    #[error("{origin}: {source}")]
    Field {
        /// The status file (or `<status>`).
        origin: String,
        /// The field error (names package and field).
        #[source]
        source: Box<FieldError>,
    },
}

impl Status {
    /// An empty database (a fresh root).
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads a status file, e.g. `ROOT/var/lib/dpkg/status`. A missing file
    /// yields an empty database.
    pub fn read(path: impl AsRef<Path>) -> Result<Self, StatusError> {
        let path = path.as_ref();
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Status::new()),
            Err(source) => {
                return Err(StatusError::Io {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        Self::from_reader_named(BufReader::new(file), &path.display().to_string())
    }

    /// Reads status data from `reader` (errors name it `<status>`).
    pub fn from_reader(reader: impl BufRead) -> Result<Self, StatusError> {
        Self::from_reader_named(reader, "<status>")
    }

    /// Reads status data from `reader`; errors name it `origin` (a path).
    pub fn from_reader_named(reader: impl BufRead, origin: &str) -> Result<Self, StatusError> {
        let mut status = Status::new();
        for stanza in StanzaReader::with_origin(reader, origin) {
            let installed = InstalledPackage::from_status_stanza(&stanza?).map_err(|source| {
                StatusError::Field {
                    origin: origin.to_owned(),
                    source: Box::new(source),
                }
            })?;
            if let Some(p) = installed {
                status.insert(p);
            }
        }
        Ok(status)
    }

    /// Adds an installed package, replacing one with the same name and
    /// architecture.
    pub fn insert(&mut self, package: InstalledPackage) {
        if let Some(&i) = self.by_name.get(&package.package).and_then(|ids| {
            ids.iter()
                .find(|&&i| self.packages[i].architecture == package.architecture)
        }) {
            self.packages[i] = package;
            self.reindex();
            return;
        }
        let i = self.packages.len();
        self.index(i, &package);
        self.packages.push(package);
    }

    fn index(&mut self, i: usize, p: &InstalledPackage) {
        self.by_name.entry(p.package.clone()).or_default().push(i);
        for provide in &p.provides {
            let ids = self.by_provide.entry(provide.name.clone()).or_default();
            if !ids.contains(&i) {
                ids.push(i);
            }
        }
    }

    fn reindex(&mut self) {
        self.by_name.clear();
        self.by_provide.clear();
        let packages = std::mem::take(&mut self.packages);
        for (i, p) in packages.iter().enumerate() {
            self.index(i, p);
        }
        self.packages = packages;
    }

    /// All installed instances of `name` (one per architecture).
    pub fn get(&self, name: &str) -> impl Iterator<Item = &InstalledPackage> {
        self.ids(&self.by_name, name)
    }

    /// The installed instance of `name` for `architecture`.
    pub fn get_arch(&self, name: &str, architecture: &str) -> Option<&InstalledPackage> {
        self.get(name).find(|p| p.architecture == architecture)
    }

    /// Whether any instance of `name` is installed.
    pub fn is_installed(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// Installed packages that list `name` in their `Provides`.
    pub fn providers(&self, name: &str) -> impl Iterator<Item = &InstalledPackage> {
        self.ids(&self.by_provide, name)
    }

    fn ids<'a>(
        &'a self,
        index: &'a HashMap<String, Vec<usize>>,
        name: &str,
    ) -> impl Iterator<Item = &'a InstalledPackage> + use<'a> {
        index
            .get(name)
            .into_iter()
            .flatten()
            .map(|&i| &self.packages[i])
    }

    /// All installed packages, in file order.
    pub fn iter(&self) -> impl Iterator<Item = &InstalledPackage> {
        self.packages.iter()
    }

    /// Number of installed packages.
    pub fn len(&self) -> usize {
        self.packages.len()
    }

    /// Whether nothing is installed.
    pub fn is_empty(&self) -> bool {
        self.packages.is_empty()
    }
}

impl FromIterator<InstalledPackage> for Status {
    fn from_iter<I: IntoIterator<Item = InstalledPackage>>(iter: I) -> Self {
        let mut status = Status::new();
        for p in iter {
            status.insert(p);
        }
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "\
Package: libc6
Status: install ok installed
Priority: optional
Architecture: amd64
Multi-Arch: same
Version: 2.36-9+deb12u14
Provides: libc6-x32-compat (= 2.36), glibc

Package: libc6
Status: install ok installed
Architecture: i386
Multi-Arch: same
Version: 2.36-9+deb12u14

Package: oldpkg
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0

Package: removed-never-configured
Status: purge ok not-installed
Architecture: amd64

Package: held
Status: hold ok installed
Architecture: all
Version: 3.0

Package: half
Status: install ok unpacked
Architecture: amd64
Version: 1.0

Package: going
Status: deinstall ok installed
Architecture: amd64
Version: 1.0

Package: broken
Status: install reinstreq installed
Architecture: amd64
Version: 1.0

Package: mawk
Status: install ok installed
Architecture: amd64
Multi-Arch: foreign
Version: 1.3.4.20200120-3.1
Provides: awk
";

    #[test]
    fn only_install_or_hold_ok_installed_count_as_installed() {
        let s = Status::from_reader(STATUS.as_bytes()).unwrap();
        let names: Vec<_> = s.iter().map(|p| p.package.as_str()).collect();
        assert_eq!(names, ["libc6", "libc6", "held", "mawk"]);
        for absent in [
            "oldpkg",
            "removed-never-configured",
            "half",
            "going",
            "broken",
        ] {
            assert!(!s.is_installed(absent), "{absent}");
        }
    }

    #[test]
    fn installed_packages_record_version_arch_and_provides() {
        let s = Status::from_reader(STATUS.as_bytes()).unwrap();
        assert_eq!(s.get("libc6").count(), 2);
        let libc = s.get_arch("libc6", "amd64").unwrap();
        assert_eq!(libc.version, "2.36-9+deb12u14".parse().unwrap());
        assert_eq!(libc.multi_arch, MultiArch::Same);
        assert_eq!(libc.provides.len(), 2);
        assert!(s.get_arch("libc6", "arm64").is_none());
        let awk: Vec<_> = s.providers("awk").map(|p| p.package.as_str()).collect();
        assert_eq!(awk, ["mawk"]);
        assert_eq!(s.providers("glibc").count(), 1);
        assert_eq!(s.providers("nothing").count(), 0);
        assert_eq!(
            s.get_arch("held", "all").unwrap().version.to_string(),
            "3.0"
        );
    }

    #[test]
    fn missing_status_file_is_an_empty_database() {
        let dir = tempfile::tempdir().unwrap();
        let s = Status::read(dir.path().join("var/lib/dpkg/status")).unwrap();
        assert!(s.is_empty());
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn status_file_is_read_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("status");
        std::fs::write(&path, STATUS).unwrap();
        assert_eq!(Status::read(&path).unwrap().len(), 4);
    }

    #[test]
    fn malformed_status_errors_name_file_package_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("status");
        let err = |text: &str| {
            std::fs::write(&path, text).unwrap();
            Status::read(&path).unwrap_err().to_string()
        };
        let msg = err("Package: foo\nStatus: install ok\nVersion: 1\n");
        assert!(
            msg.contains("status: package foo: field Status has invalid value"),
            "{msg}"
        );
        let msg = err("Package: foo\nStatus: install ok exploded\n");
        assert!(msg.contains("package foo: field Status"), "{msg}");
        let msg = err("Package: foo\nStatus: install ok installed\nArchitecture: amd64\n");
        assert!(
            msg.contains("package foo: missing required field Version"),
            "{msg}"
        );
        let msg = err(
            "Package: foo\nStatus: install ok installed\nVersion: 1..\nArchitecture: amd64\nProvides: a (>= 1)\n",
        );
        assert!(msg.contains("package foo: field Provides"), "{msg}");
        let msg = err("Package: foo\nVersion: 1\n");
        assert!(
            msg.contains("package foo: missing required field Status"),
            "{msg}"
        );
        let msg = err("Package: a\nStatus: purge ok not-installed\n\ngarbage\n");
        assert!(msg.contains("status:4: expected"), "{msg}");
        assert!(msg.starts_with(&path.display().to_string()), "{msg}");
    }

    #[test]
    fn insert_replaces_same_name_and_arch() {
        let pkg = |v: &str, arch: &str| InstalledPackage {
            package: "foo".into(),
            version: v.parse().unwrap(),
            architecture: arch.into(),
            multi_arch: MultiArch::Same,
            provides: vec![Provide {
                name: format!("foo-{v}"),
                version: None,
            }],
        };
        let mut s: Status = [pkg("1", "amd64"), pkg("1", "i386")].into_iter().collect();
        s.insert(pkg("2", "amd64"));
        assert_eq!(s.len(), 2);
        assert_eq!(s.get_arch("foo", "amd64").unwrap().version.to_string(), "2");
        assert_eq!(s.providers("foo-1").count(), 1);
        assert_eq!(s.providers("foo-2").count(), 1);
    }
}
