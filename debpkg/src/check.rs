//! Dependency preflight: are the `Depends` and `Pre-Depends` of a set of
//! `.deb`s satisfied by what is installed plus the set itself?
//!
//! The check models the system *after* installing the bundle: an installed
//! package that a bundled `.deb` will replace (same name and architecture,
//! or same name when either side is not `Multi-Arch: same`) no longer counts;
//! the bundled one does.
//!
//! An alternative `name [:qual] [(op version)]` is satisfied by a package
//! (installed or bundled) when
//!
//! * the package is called `name` and its version satisfies the constraint,
//!   or it `Provides` `name` and — when the dependency is versioned — the
//!   provide carries a version that satisfies the constraint (an unversioned
//!   provide never satisfies a versioned dependency, as in dpkg); and
//! * the architecture fits, in a deliberately simple model of multi-arch:
//!   a `:any` qualifier or a `Multi-Arch: foreign` package accepts any
//!   architecture; an explicit `:ARCH` qualifier requires `ARCH`; `:native`
//!   requires the native architecture; otherwise the package must have the
//!   depending package's architecture (the native one when the depender is
//!   `all`). A package of architecture `all` always fits.
//!
//! Architecture restriction lists and build profiles are ignored (they only
//! appear in source packages). Conflicts and Breaks are not checked.

use std::collections::HashMap;
use std::fmt;

use crate::deb::{DebInfo, MultiArch};
use crate::relation::{Provide, Relation, format_group};
use crate::status::Status;
use crate::version::Version;

/// What [`Unmet::found`] says when nothing of the name exists.
pub const NOT_FOUND: &str = "not installed and not in the bundle";

/// A dependency of a bundled package that nothing satisfies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmet {
    /// The bundled package that has the dependency.
    pub package: String,
    /// `"Depends"` or `"Pre-Depends"`.
    pub field: &'static str,
    /// The OR-group, e.g. `libc6 (>= 2.34)` or `default-mta | mail-transport-agent`.
    pub relation: String,
    /// What the host and the bundle have instead: [`NOT_FOUND`], or
    /// `not satisfied by installed libfoo 1.0-1 (amd64) or bundled ...`.
    pub found: String,
}

/// `socat depends on libwrap0 (>= 7.6-4~), which is not installed and not in the bundle`.
impl fmt::Display for Unmet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = if self.field == "Pre-Depends" {
            "pre-depends on"
        } else {
            "depends on"
        };
        write!(
            f,
            "{} {verb} {}, which is {}",
            self.package, self.relation, self.found
        )
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Origin {
    Installed,
    Bundled,
}

/// A package that will be present after installation.
struct Candidate<'a> {
    name: &'a str,
    version: &'a Version,
    arch: &'a str,
    multi_arch: MultiArch,
    provides: &'a [Provide],
    origin: Origin,
}

impl Candidate<'_> {
    fn describe(&self) -> String {
        let origin = match self.origin {
            Origin::Installed => "installed",
            Origin::Bundled => "bundled",
        };
        format!("{origin} {} {} ({})", self.name, self.version, self.arch)
    }
}

struct Universe<'a> {
    candidates: Vec<Candidate<'a>>,
    by_name: HashMap<&'a str, Vec<usize>>,
    by_provide: HashMap<&'a str, Vec<usize>>,
    native_arch: &'a str,
}

impl<'a> Universe<'a> {
    fn new(debs: &'a [DebInfo], status: &'a Status, native_arch: &'a str) -> Self {
        let replaced = |name: &str, arch: &str, ma: MultiArch| {
            debs.iter().any(|d| {
                d.package == name
                    && (d.architecture == arch
                        || !(d.multi_arch == MultiArch::Same && ma == MultiArch::Same))
            })
        };
        let installed = status
            .iter()
            .filter(|p| !replaced(&p.package, &p.architecture, p.multi_arch))
            .map(|p| Candidate {
                name: &p.package,
                version: &p.version,
                arch: &p.architecture,
                multi_arch: p.multi_arch,
                provides: &p.provides,
                origin: Origin::Installed,
            });
        let bundled = debs.iter().map(|d| Candidate {
            name: &d.package,
            version: &d.version,
            arch: &d.architecture,
            multi_arch: d.multi_arch,
            provides: &d.provides,
            origin: Origin::Bundled,
        });
        let mut u = Universe {
            candidates: installed.chain(bundled).collect(),
            by_name: HashMap::new(),
            by_provide: HashMap::new(),
            native_arch,
        };
        for (i, c) in u.candidates.iter().enumerate() {
            u.by_name.entry(c.name).or_default().push(i);
            for p in c.provides {
                let ids = u.by_provide.entry(p.name.as_str()).or_default();
                if ids.last() != Some(&i) {
                    ids.push(i);
                }
            }
        }
        u
    }

    fn arch_fits(&self, rel: &Relation, c: &Candidate<'_>, depender_arch: &str) -> bool {
        if c.arch == "all" {
            return true;
        }
        match rel.arch_qualifier.as_deref() {
            Some("any") => true,
            _ if c.multi_arch == MultiArch::Foreign => true,
            Some("native") => c.arch == self.native_arch,
            Some(q) => c.arch == q,
            None => {
                let wanted = if depender_arch == "all" {
                    self.native_arch
                } else {
                    depender_arch
                };
                c.arch == wanted
            }
        }
    }

    /// Indexes of the candidates that satisfy `rel` (by name or Provides).
    fn matching<'s>(
        &'s self,
        rel: &'s Relation,
        depender_arch: &'s str,
    ) -> impl Iterator<Item = usize> + 's {
        let by_name = self
            .by_name
            .get(rel.name.as_str())
            .into_iter()
            .flatten()
            .copied()
            .filter(move |&i| {
                let c = &self.candidates[i];
                rel.version_matches(c.version) && self.arch_fits(rel, c, depender_arch)
            });
        let by_provide = self
            .by_provide
            .get(rel.name.as_str())
            .into_iter()
            .flatten()
            .copied()
            .filter(move |&i| {
                let c = &self.candidates[i];
                c.provides.iter().filter(|p| p.name == rel.name).any(|p| {
                    let version_ok = match (&rel.constraint, &p.version) {
                        (None, _) => true,
                        (Some((op, reference)), Some(v)) => op.matches(v, reference),
                        (Some(_), None) => false,
                    };
                    version_ok && self.arch_fits(rel, c, depender_arch)
                })
            });
        by_name.chain(by_provide)
    }

    /// Whether `rel` is satisfied; otherwise pushes descriptions of the
    /// near misses onto `misses`.
    fn satisfies(&self, rel: &Relation, depender_arch: &str, misses: &mut Vec<String>) -> bool {
        for &i in self.by_name.get(rel.name.as_str()).into_iter().flatten() {
            let c = &self.candidates[i];
            if rel.version_matches(c.version) && self.arch_fits(rel, c, depender_arch) {
                return true;
            }
            misses.push(c.describe());
        }
        for &i in self.by_provide.get(rel.name.as_str()).into_iter().flatten() {
            let c = &self.candidates[i];
            for p in c.provides.iter().filter(|p| p.name == rel.name) {
                let version_ok = match (&rel.constraint, &p.version) {
                    (None, _) => true,
                    (Some((op, reference)), Some(v)) => op.matches(v, reference),
                    (Some(_), None) => false,
                };
                if version_ok && self.arch_fits(rel, c, depender_arch) {
                    return true;
                }
                misses.push(format!("{} providing {p}", c.describe()));
            }
        }
        false
    }
}

/// Checks every `Pre-Depends` and `Depends` of every package in `debs`
/// against the installed packages in `status` plus `debs` themselves.
/// Returns the unmet ones in order (by package, `Pre-Depends` first); empty
/// means everything is satisfied.
pub fn check_dependencies(debs: &[DebInfo], status: &Status, native_arch: &str) -> Vec<Unmet> {
    let universe = Universe::new(debs, status, native_arch);
    let mut unmet = Vec::new();
    for deb in debs {
        for (field, groups) in [("Pre-Depends", &deb.pre_depends), ("Depends", &deb.depends)] {
            for group in groups {
                let mut misses = Vec::new();
                let ok = group
                    .iter()
                    .any(|rel| universe.satisfies(rel, &deb.architecture, &mut misses));
                if ok {
                    continue;
                }
                let mut seen = std::collections::HashSet::new();
                misses.retain(|m| seen.insert(m.clone()));
                let found = if misses.is_empty() {
                    NOT_FOUND.to_owned()
                } else {
                    format!("not satisfied by {}", misses.join(" or "))
                };
                unmet.push(Unmet {
                    package: deb.package.clone(),
                    field,
                    relation: format_group(group),
                    found,
                });
            }
        }
    }
    unmet
}

/// A `Pre-Depends` cycle among bundled packages: no order can configure
/// each one's pre-dependencies before it is unpacked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Pre-Depends cycle among the bundled packages: {}", .packages.join(" -> "))]
pub struct PreDependsCycle {
    /// The packages on the cycle, the first repeated at the end.
    pub packages: Vec<String>,
}

/// Splits `debs` into dpkg passes (indexes into `debs`, in order) so that
///
/// * a package's `Pre-Depends` on another bundled package is met by an
///   *earlier* pass (dpkg needs pre-dependencies configured before it
///   unpacks the package: within one `dpkg -i` they are not), and
/// * a package's `Depends` on another bundled package is met by the same or
///   an earlier pass (one `dpkg -i` configures its packages in dependency
///   order, so cycles of `Depends` stay in one pass).
///
/// A dependency already satisfied by what is installed (and not replaced by
/// the bundle) makes no edge. Passes are as few as possible; within a pass
/// the input order is kept. A cycle that goes through a `Pre-Depends` edge
/// cannot be ordered and is returned as an error.
pub fn install_passes(
    debs: &[DebInfo],
    status: &Status,
    native_arch: &str,
) -> Result<Vec<Vec<usize>>, PreDependsCycle> {
    let universe = Universe::new(debs, status, native_arch);
    let installed_count = universe
        .candidates
        .iter()
        .filter(|c| c.origin == Origin::Installed)
        .count();
    // Edges: (from, to, strict) meaning pass(from) >= pass(to) (+1 if strict).
    let mut edges: Vec<(usize, usize, bool)> = Vec::new();
    for (i, deb) in debs.iter().enumerate() {
        for (strict, groups) in [(true, &deb.pre_depends), (false, &deb.depends)] {
            for group in groups {
                let by_installed = group.iter().any(|rel| {
                    universe
                        .matching(rel, &deb.architecture)
                        .any(|c| c < installed_count)
                });
                if by_installed {
                    continue;
                }
                let mut targets: Vec<usize> = group
                    .iter()
                    .flat_map(|rel| {
                        universe
                            .matching(rel, &deb.architecture)
                            .filter(|&c| c >= installed_count)
                            .map(|c| c - installed_count)
                            .collect::<Vec<_>>()
                    })
                    .filter(|&j| j != i)
                    .collect();
                targets.sort_unstable();
                targets.dedup();
                edges.extend(targets.into_iter().map(|j| (i, j, strict)));
            }
        }
    }
    let n = debs.len();
    let mut pass = vec![0usize; n];
    // Longest path by relaxation; more than n rounds of change means a cycle
    // with a strict edge (non-strict cycles settle).
    for round in 0..=n {
        let mut changed = false;
        for &(from, to, strict) in &edges {
            let need = pass[to] + usize::from(strict);
            if pass[from] < need {
                pass[from] = need;
                changed = true;
            }
        }
        if !changed {
            let passes = pass.iter().copied().max().map_or(0, |m| m + 1);
            let mut out = vec![Vec::new(); passes];
            for (i, p) in pass.iter().enumerate() {
                out[*p].push(i);
            }
            return Ok(out);
        }
        if round == n {
            break;
        }
    }
    Err(PreDependsCycle {
        packages: find_cycle(debs, &edges),
    })
}

/// A cycle through a strict (`Pre-Depends`) edge, by name, for the message.
fn find_cycle(debs: &[DebInfo], edges: &[(usize, usize, bool)]) -> Vec<String> {
    let n = debs.len();
    let adj = |i: usize| edges.iter().filter(move |e| e.0 == i).map(|e| e.1);
    for &(start, next, strict) in edges {
        if !strict {
            continue;
        }
        // Breadth-first from `next` back to `start`.
        let mut prev = vec![usize::MAX; n];
        let mut queue = std::collections::VecDeque::from([next]);
        prev[next] = next;
        while let Some(u) = queue.pop_front() {
            if u == start {
                let mut path = vec![start];
                let mut v = start;
                while v != next {
                    v = prev[v];
                    path.push(v);
                }
                path.reverse();
                let mut names: Vec<String> =
                    path.iter().map(|&i| debs[i].package.clone()).collect();
                names.insert(0, debs[start].package.clone());
                names.dedup();
                if names.first() != names.last() {
                    names.push(debs[start].package.clone());
                }
                return names;
            }
            for w in adj(u) {
                if prev[w] == usize::MAX {
                    prev[w] = u;
                    queue.push_back(w);
                }
            }
        }
    }
    debs.iter().map(|d| d.package.clone()).collect()
}

/// Whether exactly this package (same name, version and architecture) is
/// already installed, so installing it again would be a no-op.
pub fn already_installed(deb: &DebInfo, status: &Status) -> bool {
    status
        .get_arch(&deb.package, &deb.architecture)
        .is_some_and(|p| p.version == deb.version)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::Stanza;
    use crate::relation::parse_relations;

    fn deb(control: &str) -> DebInfo {
        DebInfo::from_stanza(&Stanza::parse(control).unwrap()).unwrap()
    }

    fn status(text: &str) -> Status {
        Status::from_reader(text.as_bytes()).unwrap()
    }

    fn installed(name: &str, version: &str, arch: &str, extra: &str) -> String {
        format!(
            "Package: {name}\nStatus: install ok installed\nVersion: {version}\nArchitecture: {arch}\n{extra}\n"
        )
    }

    fn socat() -> DebInfo {
        deb("Package: socat\nVersion: 1.7.4.4-2\nArchitecture: amd64\n\
             Depends: libc6 (>= 2.34), libssl3 (>= 3.0.0), libwrap0 (>= 7.6-4~)\n")
    }

    fn unmet_relations(u: &[Unmet]) -> Vec<&str> {
        u.iter().map(|u| u.relation.as_str()).collect()
    }

    fn names(debs: &[DebInfo], passes: &[Vec<usize>]) -> Vec<Vec<String>> {
        passes
            .iter()
            .map(|p| p.iter().map(|&i| debs[i].package.clone()).collect())
            .collect()
    }

    #[test]
    fn pre_depends_inside_the_set_are_configured_in_an_earlier_pass() {
        let debs = vec![
            deb("Package: demo-extra\nVersion: 1.0\nArchitecture: all\nDepends: demo-tool\n"),
            deb(
                "Package: demo-tool\nVersion: 1.0\nArchitecture: all\nPre-Depends: libdemo (>= 1.0)\n",
            ),
            deb("Package: libdemo\nVersion: 1.0\nArchitecture: all\n"),
            deb("Package: other\nVersion: 1.0\nArchitecture: all\n"),
        ];
        let passes = install_passes(&debs, &Status::new(), "amd64").unwrap();
        assert_eq!(
            names(&debs, &passes),
            vec![vec!["libdemo", "other"], vec!["demo-extra", "demo-tool"]]
        );
    }

    #[test]
    fn depends_cycles_stay_in_one_pass_and_installed_pre_depends_make_no_pass() {
        let debs = vec![
            deb("Package: a\nVersion: 1\nArchitecture: all\nDepends: b\nPre-Depends: libc6\n"),
            deb("Package: b\nVersion: 1\nArchitecture: all\nDepends: a\n"),
        ];
        let st = status(&installed("libc6", "2.36-9", "all", ""));
        let passes = install_passes(&debs, &st, "amd64").unwrap();
        assert_eq!(names(&debs, &passes), vec![vec!["a", "b"]]);
    }

    #[test]
    fn a_pre_depends_cycle_is_refused_and_named() {
        let debs = vec![
            deb("Package: cyc-a\nVersion: 1.0\nArchitecture: all\nPre-Depends: cyc-b\n"),
            deb("Package: cyc-b\nVersion: 1.0\nArchitecture: all\nPre-Depends: cyc-a\n"),
        ];
        let e = install_passes(&debs, &Status::new(), "amd64").unwrap_err();
        assert_eq!(e.packages.first(), e.packages.last());
        assert!(
            e.to_string().contains("cyc-a") && e.to_string().contains("cyc-b"),
            "{e}"
        );
    }

    #[test]
    fn missing_dependency_is_reported_with_a_readable_message() {
        let st = status(
            &[
                installed("libc6", "2.36-9", "amd64", ""),
                installed("libssl3", "3.0.11-1", "amd64", ""),
            ]
            .join("\n"),
        );
        let unmet = check_dependencies(&[socat()], &st, "amd64");
        assert_eq!(unmet.len(), 1);
        assert_eq!(
            unmet[0],
            Unmet {
                package: "socat".into(),
                field: "Depends",
                relation: "libwrap0 (>= 7.6-4~)".into(),
                found: NOT_FOUND.into(),
            }
        );
        assert_eq!(
            unmet[0].to_string(),
            "socat depends on libwrap0 (>= 7.6-4~), which is not installed and not in the bundle"
        );
    }

    #[test]
    fn too_old_installed_version_is_unmet_and_named() {
        let st = status(
            &[
                installed("libc6", "2.31-13", "amd64", ""),
                installed("libssl3", "3.0.11-1", "amd64", ""),
                installed("libwrap0", "7.6.q-32", "amd64", ""),
            ]
            .join("\n"),
        );
        let unmet = check_dependencies(&[socat()], &st, "amd64");
        assert_eq!(unmet.len(), 1);
        assert_eq!(
            unmet[0].to_string(),
            "socat depends on libc6 (>= 2.34), which is not satisfied by installed libc6 2.31-13 (amd64)"
        );
    }

    #[test]
    fn dependency_satisfied_by_another_bundled_deb() {
        let st = status(
            &[
                installed("libc6", "2.36-9", "amd64", ""),
                installed("libssl3", "3.0.11-1", "amd64", ""),
            ]
            .join("\n"),
        );
        let wrap = deb(
            "Package: libwrap0\nVersion: 7.6.q-32\nArchitecture: amd64\nDepends: libc6 (>= 2.33)\n",
        );
        assert!(check_dependencies(&[socat(), wrap.clone()], &st, "amd64").is_empty());
        let old_wrap = deb("Package: libwrap0\nVersion: 7.6-3\nArchitecture: amd64\n");
        let unmet = check_dependencies(&[socat(), old_wrap], &st, "amd64");
        assert_eq!(
            unmet[0].found,
            "not satisfied by bundled libwrap0 7.6-3 (amd64)"
        );
    }

    #[test]
    fn pre_depends_are_checked_and_reported_first() {
        let d = deb("Package: x\nVersion: 1\nArchitecture: all\nDepends: b\nPre-Depends: a\n");
        let unmet = check_dependencies(&[d], &Status::new(), "amd64");
        assert_eq!(unmet_relations(&unmet), ["a", "b"]);
        assert_eq!(unmet[0].field, "Pre-Depends");
        assert_eq!(
            unmet[0].to_string(),
            "x pre-depends on a, which is not installed and not in the bundle"
        );
    }

    #[test]
    fn any_alternative_of_an_or_group_suffices() {
        let d = deb(
            "Package: x\nVersion: 1\nArchitecture: all\nDepends: default-mta | mail-transport-agent, foo | bar (>= 2)\n",
        );
        let st = status(
            &[
                installed("exim4", "4.96", "amd64", "Provides: mail-transport-agent"),
                installed("bar", "1", "amd64", ""),
            ]
            .join("\n"),
        );
        let unmet = check_dependencies(&[d], &st, "amd64");
        assert_eq!(unmet_relations(&unmet), ["foo | bar (>= 2)"]);
        assert_eq!(unmet[0].found, "not satisfied by installed bar 1 (amd64)");
    }

    #[test]
    fn unversioned_provide_never_satisfies_versioned_dependency() {
        let st = status(&installed("mawk", "1.3.4", "amd64", "Provides: awk"));
        let d = |dep: &str| {
            deb(&format!(
                "Package: x\nVersion: 1\nArchitecture: amd64\nDepends: {dep}\n"
            ))
        };
        assert!(check_dependencies(&[d("awk")], &st, "amd64").is_empty());
        let unmet = check_dependencies(&[d("awk (>= 1)")], &st, "amd64");
        assert_eq!(unmet.len(), 1);
        assert_eq!(
            unmet[0].found,
            "not satisfied by installed mawk 1.3.4 (amd64) providing awk"
        );
    }

    #[test]
    fn versioned_provide_satisfies_matching_constraint_only() {
        let st = status(&installed(
            "libfoo-impl",
            "9",
            "amd64",
            "Provides: libfoo (= 1.5)",
        ));
        let d = |dep: &str| {
            deb(&format!(
                "Package: x\nVersion: 1\nArchitecture: amd64\nDepends: {dep}\n"
            ))
        };
        assert!(check_dependencies(&[d("libfoo (>= 1.2)")], &st, "amd64").is_empty());
        assert!(check_dependencies(&[d("libfoo (= 1.5)")], &st, "amd64").is_empty());
        let unmet = check_dependencies(&[d("libfoo (>= 2)")], &st, "amd64");
        assert_eq!(
            unmet[0].found,
            "not satisfied by installed libfoo-impl 9 (amd64) providing libfoo (= 1.5)"
        );
        // A bundled provider works the same way.
        let provider = deb("Package: p\nVersion: 1\nArchitecture: all\nProvides: virt (= 3)\n");
        assert!(
            check_dependencies(&[d("virt (>> 2)"), provider], &Status::new(), "amd64").is_empty()
        );
    }

    #[test]
    fn architecture_must_match_unless_any_foreign_or_all() {
        let st = status(
            &[
                installed("libi386", "1", "i386", ""),
                installed("tool", "1", "i386", "Multi-Arch: foreign"),
                installed("perl", "5.36", "i386", "Multi-Arch: allowed"),
                installed("data", "1", "all", ""),
            ]
            .join("\n"),
        );
        let d = |arch: &str, dep: &str| {
            deb(&format!(
                "Package: x\nVersion: 1\nArchitecture: {arch}\nDepends: {dep}\n"
            ))
        };
        let unmet = |arch: &str, dep: &str| check_dependencies(&[d(arch, dep)], &st, "amd64");
        let msgs = unmet("amd64", "libi386");
        assert_eq!(msgs[0].found, "not satisfied by installed libi386 1 (i386)");
        assert!(
            unmet("i386", "libi386").is_empty(),
            "same arch as the depender"
        );
        assert_eq!(
            unmet("all", "libi386").len(),
            1,
            "arch all depends on native"
        );
        assert!(unmet("amd64", "libi386:i386").is_empty());
        assert_eq!(unmet("i386", "libi386:native").len(), 1);
        assert!(unmet("amd64", "tool").is_empty(), "Multi-Arch: foreign");
        assert_eq!(unmet("amd64", "perl").len(), 1);
        assert!(unmet("amd64", "perl:any").is_empty());
        assert!(unmet("amd64", "data").is_empty());
        assert!(unmet("arm64", "data:native").is_empty());
    }

    #[test]
    fn bundled_deb_replaces_installed_version() {
        let st = status(&installed("libfoo", "1.0", "amd64", "Provides: foo-abi-1"));
        let new_foo =
            deb("Package: libfoo\nVersion: 2.0\nArchitecture: amd64\nProvides: foo-abi-2\n");
        let user = deb(
            "Package: app\nVersion: 1\nArchitecture: amd64\nDepends: libfoo (<< 2), foo-abi-1\n",
        );
        let unmet = check_dependencies(&[new_foo, user], &st, "amd64");
        assert_eq!(unmet_relations(&unmet), ["libfoo (<< 2)", "foo-abi-1"]);
        assert_eq!(
            unmet[0].found,
            "not satisfied by bundled libfoo 2.0 (amd64)"
        );
        assert_eq!(unmet[1].found, NOT_FOUND);
    }

    #[test]
    fn multi_arch_same_bundled_deb_keeps_other_arch_installed() {
        let st = status(&installed("libbar", "1.0", "i386", "Multi-Arch: same"));
        let bundled = deb("Package: libbar\nVersion: 1.0\nArchitecture: amd64\nMulti-Arch: same\n");
        let user = deb("Package: app\nVersion: 1\nArchitecture: i386\nDepends: libbar (= 1.0)\n");
        assert!(check_dependencies(&[bundled, user], &st, "amd64").is_empty());
    }

    #[test]
    fn self_satisfied_and_empty_dependencies_pass() {
        let d =
            deb("Package: a\nVersion: 1\nArchitecture: all\nProvides: a-virt\nDepends: a-virt\n");
        assert!(check_dependencies(&[d], &Status::new(), "amd64").is_empty());
        assert!(check_dependencies(&[], &Status::new(), "amd64").is_empty());
    }

    #[test]
    fn already_installed_requires_same_name_version_and_arch() {
        let st = status(
            &[
                installed("socat", "1.7.4.4-2", "amd64", ""),
                installed("tzdata", "2024a-0+deb12u1", "all", ""),
            ]
            .join("\n"),
        );
        assert!(already_installed(&socat(), &st));
        let mut other = socat();
        other.version = "1.7.4.4-3".parse().unwrap();
        assert!(!already_installed(&other, &st));
        other = socat();
        other.architecture = "i386".into();
        assert!(!already_installed(&other, &st));
        let tz = deb("Package: tzdata\nVersion: 2024a-0+deb12u1\nArchitecture: all\n");
        assert!(already_installed(&tz, &st));
        assert!(!already_installed(&socat(), &Status::new()));
    }

    #[test]
    fn relation_text_is_the_or_group_as_parsed() {
        let group = &parse_relations("a (>= 1) | b:any").unwrap()[0];
        assert_eq!(format_group(group), "a (>= 1) | b:any");
    }
}
