//! Dependency closure over a `Packages` index: which packages to install so
//! that the requested ones and all their `Pre-Depends` and `Depends` are met
//! on a system that already has a baseline set (a dpkg [`Status`]).
//!
//! The model, like apt's without `Recommends`, and deterministic:
//!
//! * Only packages of the target architecture or `all` are candidates.
//!   A name's candidates are tried from the highest version down.
//! * A dependency group (`a | b (>= 2)`) already met by the baseline or by a
//!   package chosen so far adds nothing. Otherwise its alternatives are tried
//!   in order; the first one the index can satisfy is chosen: a real package
//!   of that name whose version fits, else a package that `Provides` it (with
//!   a fitting version when the dependency is versioned), preferring the
//!   higher `Priority` and then the name in byte order.
//! * A baseline package that does not meet a versioned dependency is upgraded
//!   when the index has a version that does (it is then part of the result).
//! * A requested package already in the baseline is left out; a requested
//!   name that only a virtual package matches is refused when several
//!   packages provide it (as apt does: pick one).
//! * `Conflicts`, `Breaks` and `Recommends` are not considered.
//!
//! [`Resolution::order`] lists the chosen packages with every dependency
//! before its dependents (cycles, which Debian has, are broken by name).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;

use crate::deb::MultiArch;
use crate::index::IndexPackage;
use crate::relation::{Relation, format_group};
use crate::status::Status;
use crate::version::Version;

/// A dependency nothing in the baseline or the index satisfies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsatisfiable {
    /// The package that has the dependency (`socat 1.7.4.4-2`), or
    /// `requested` for a name asked for directly.
    pub package: String,
    /// `Depends`, `Pre-Depends`, or `requested`.
    pub field: &'static str,
    /// The OR-group, as written (`libssl3 (>= 3.0.0)`).
    pub relation: String,
    /// What the index and the baseline had instead.
    pub found: String,
}

impl fmt::Display for Unsatisfiable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field == "requested" {
            write!(f, "requested package {}: {}", self.relation, self.found)
        } else {
            let verb = if self.field == "Pre-Depends" {
                "pre-depends on"
            } else {
                "depends on"
            };
            write!(
                f,
                "{} {verb} {}, but {}",
                self.package, self.relation, self.found
            )
        }
    }
}

/// Why resolution failed: every unsatisfiable dependency found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ResolveError(pub Vec<Unsatisfiable>);

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, u) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{u}")?;
        }
        Ok(())
    }
}

/// The result of [`resolve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// Indexes (into the slice given to [`resolve`]) of the packages to
    /// install, dependencies before dependents.
    pub order: Vec<usize>,
    /// Requested packages the baseline already has (left out).
    pub in_baseline: Vec<String>,
    /// Chosen packages that replace an older baseline version.
    pub upgrades: Vec<String>,
    /// For each chosen package (by index), why: `requested`, or the first
    /// package whose dependency pulled it in.
    pub reasons: BTreeMap<usize, String>,
}

fn priority_rank(p: Option<&str>) -> u8 {
    match p {
        Some("required") => 0,
        Some("important") => 1,
        Some("standard") => 2,
        Some("optional") => 3,
        Some("extra") => 4,
        _ => 5,
    }
}

struct Index<'a> {
    packages: &'a [IndexPackage],
    arch: &'a str,
    by_name: HashMap<&'a str, Vec<usize>>,
    by_provide: HashMap<&'a str, Vec<usize>>,
}

impl<'a> Index<'a> {
    fn new(packages: &'a [IndexPackage], arch: &'a str) -> Self {
        let mut by_name: HashMap<&str, Vec<usize>> = HashMap::new();
        let mut by_provide: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, p) in packages.iter().enumerate() {
            if p.info.architecture != arch && p.info.architecture != "all" {
                continue;
            }
            by_name.entry(&p.info.package).or_default().push(i);
            for pr in &p.info.provides {
                let ids = by_provide.entry(&pr.name).or_default();
                if ids.last() != Some(&i) {
                    ids.push(i);
                }
            }
        }
        for ids in by_name.values_mut() {
            // Highest version first; the earlier source wins a tie.
            ids.sort_by(|&a, &b| {
                packages[b]
                    .info
                    .version
                    .cmp(&packages[a].info.version)
                    .then(a.cmp(&b))
            });
        }
        Index {
            packages,
            arch,
            by_name,
            by_provide,
        }
    }

    /// Whether an architecture qualifier admits candidates of the target
    /// architecture (the only ones there are).
    fn qualifier_ok(&self, rel: &Relation) -> bool {
        match rel.arch_qualifier.as_deref() {
            None | Some("any") | Some("native") => true,
            Some(q) => q == self.arch,
        }
    }

    fn provide_fits(rel: &Relation, version: Option<&Version>) -> bool {
        match (&rel.constraint, version) {
            (None, _) => true,
            (Some((op, reference)), Some(v)) => op.matches(v, reference),
            (Some(_), None) => false,
        }
    }

    /// Whether package `i` satisfies `rel` (by name or by a provide).
    fn satisfies(&self, i: usize, rel: &Relation) -> bool {
        let p = &self.packages[i].info;
        if !self.qualifier_ok(rel) {
            return false;
        }
        if p.package == rel.name && rel.version_matches(&p.version) {
            return true;
        }
        p.provides
            .iter()
            .any(|pr| pr.name == rel.name && Self::provide_fits(rel, pr.version.as_ref()))
    }

    /// The package the index offers for `rel`, if any.
    fn candidate(&self, rel: &Relation) -> Option<usize> {
        if !self.qualifier_ok(rel) {
            return None;
        }
        if let Some(&i) = self
            .by_name
            .get(rel.name.as_str())
            .into_iter()
            .flatten()
            .find(|&&i| rel.version_matches(&self.packages[i].info.version))
        {
            return Some(i);
        }
        self.providers(rel).into_iter().next()
    }

    /// Packages providing `rel` with a fitting version, best first.
    fn providers(&self, rel: &Relation) -> Vec<usize> {
        let mut ids: Vec<usize> = self
            .by_provide
            .get(rel.name.as_str())
            .into_iter()
            .flatten()
            .copied()
            .filter(|&i| self.satisfies(i, rel))
            .collect();
        ids.sort_by(|&a, &b| {
            let (pa, pb) = (&self.packages[a], &self.packages[b]);
            priority_rank(pa.priority.as_deref())
                .cmp(&priority_rank(pb.priority.as_deref()))
                .then(pa.info.package.cmp(&pb.info.package))
                .then(pb.info.version.cmp(&pa.info.version))
        });
        ids
    }

    /// What the index has under `name` (for messages).
    fn describe(&self, name: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .by_name
            .get(name)
            .into_iter()
            .flatten()
            .map(|&i| self.packages[i].info.to_string())
            .collect();
        out.extend(self.by_provide.get(name).into_iter().flatten().map(|&i| {
            let p = &self.packages[i].info;
            let pr = p.provides.iter().find(|pr| pr.name == name);
            format!(
                "{p} providing {}",
                pr.map_or(name.to_owned(), ToString::to_string)
            )
        }));
        out
    }
}

/// Whether the baseline (minus packages being replaced) satisfies `rel`.
fn baseline_satisfies(
    baseline: &Status,
    arch: &str,
    replaced: &BTreeMap<String, usize>,
    rel: &Relation,
) -> bool {
    let arch_fits = |a: &str, ma: MultiArch| {
        a == arch
            || a == "all"
            || ma == MultiArch::Foreign
            || rel.arch_qualifier.as_deref() == Some("any")
    };
    let qualifier_ok = match rel.arch_qualifier.as_deref() {
        None | Some("any") | Some("native") => true,
        Some(q) => q == arch,
    };
    if !qualifier_ok {
        return false;
    }
    let by_name = baseline.get(&rel.name).any(|p| {
        !replaced.contains_key(&p.package)
            && rel.version_matches(&p.version)
            && arch_fits(&p.architecture, p.multi_arch)
    });
    by_name
        || baseline.providers(&rel.name).any(|p| {
            !replaced.contains_key(&p.package)
                && arch_fits(&p.architecture, p.multi_arch)
                && p.provides
                    .iter()
                    .any(|pr| pr.name == rel.name && Index::provide_fits(rel, pr.version.as_ref()))
        })
}

/// Resolves `requested` (package names) against `index` for `arch`, given
/// what `baseline` has. Every unsatisfiable dependency is reported at once.
pub fn resolve(
    index: &[IndexPackage],
    requested: &[String],
    baseline: &Status,
    arch: &str,
) -> Result<Resolution, ResolveError> {
    let idx = Index::new(index, arch);
    let mut chosen: BTreeMap<String, usize> = BTreeMap::new();
    let mut reasons: BTreeMap<usize, String> = BTreeMap::new();
    let mut queue: VecDeque<usize> = VecDeque::new();
    let mut problems = Vec::new();
    let mut in_baseline = Vec::new();

    for name in requested {
        let rel = Relation::new(name.clone());
        if baseline.is_installed(name) {
            in_baseline.push(name.clone());
            continue;
        }
        if chosen.contains_key(name) {
            continue;
        }
        let pick = if idx.by_name.contains_key(name.as_str()) {
            idx.candidate(&rel)
        } else {
            let providers = idx.providers(&rel);
            if providers.len() > 1 {
                let names: BTreeSet<&str> = providers
                    .iter()
                    .map(|&i| idx.packages[i].info.package.as_str())
                    .collect();
                problems.push(Unsatisfiable {
                    package: "requested".into(),
                    field: "requested",
                    relation: name.clone(),
                    found: format!(
                        "it is a virtual package provided by {}; request one of them",
                        names.into_iter().collect::<Vec<_>>().join(", ")
                    ),
                });
                continue;
            }
            providers.first().copied()
        };
        match pick {
            Some(i) => {
                chosen.insert(idx.packages[i].info.package.clone(), i);
                reasons.insert(i, "requested".into());
                queue.push_back(i);
            }
            None => problems.push(Unsatisfiable {
                package: "requested".into(),
                field: "requested",
                relation: name.clone(),
                found: format!("the index has no package {name} for {arch} or all"),
            }),
        }
    }

    while let Some(i) = queue.pop_front() {
        let p = &idx.packages[i].info;
        for (field, groups) in [("Pre-Depends", &p.pre_depends), ("Depends", &p.depends)] {
            for group in groups {
                let met = group.iter().any(|rel| {
                    baseline_satisfies(baseline, arch, &chosen, rel)
                        || chosen.values().any(|&c| idx.satisfies(c, rel))
                });
                if met {
                    continue;
                }
                let mut picked = None;
                let mut conflict = None;
                for rel in group {
                    let Some(c) = idx.candidate(rel) else {
                        continue;
                    };
                    let name = &idx.packages[c].info.package;
                    match chosen.get(name) {
                        Some(&other) if other != c => {
                            conflict.get_or_insert(format!(
                                "{} is already chosen and the index's {} is needed",
                                idx.packages[other].info, idx.packages[c].info
                            ));
                        }
                        _ => {
                            picked = Some(c);
                            break;
                        }
                    }
                }
                match picked {
                    Some(c) => {
                        chosen.insert(idx.packages[c].info.package.clone(), c);
                        reasons.insert(c, format!("{} {}", p.package, p.version));
                        queue.push_back(c);
                    }
                    None => {
                        let mut found = Vec::new();
                        for rel in group {
                            let mut seen: Vec<String> = idx.describe(&rel.name);
                            for b in baseline.get(&rel.name) {
                                seen.push(format!(
                                    "baseline {} {} ({})",
                                    b.package, b.version, b.architecture
                                ));
                            }
                            if seen.is_empty() {
                                found.push(format!(
                                    "neither the index nor the baseline has {}",
                                    rel.name
                                ));
                            } else {
                                found.push(format!("the index has {}", seen.join(", ")));
                            }
                        }
                        if let Some(c) = conflict {
                            found.push(c);
                        }
                        problems.push(Unsatisfiable {
                            package: format!("{} {}", p.package, p.version),
                            field,
                            relation: format_group(group),
                            found: found.join("; "),
                        });
                    }
                }
            }
        }
    }
    if !problems.is_empty() {
        return Err(ResolveError(problems));
    }
    let upgrades = chosen
        .keys()
        .filter(|n| baseline.is_installed(n))
        .cloned()
        .collect();
    let order = install_order(&idx, baseline, arch, &chosen);
    Ok(Resolution {
        order,
        in_baseline,
        upgrades,
        reasons,
    })
}

/// The chosen packages, dependencies first: Tarjan's strongly connected
/// components over "depends on" edges (to the chosen package satisfying each
/// group the baseline does not), visited in name order; the members of one
/// cycle are listed by name.
fn install_order(
    idx: &Index<'_>,
    baseline: &Status,
    arch: &str,
    chosen: &BTreeMap<String, usize>,
) -> Vec<usize> {
    let nodes: Vec<usize> = chosen.values().copied().collect(); // name order
    let pos: HashMap<usize, usize> = nodes.iter().enumerate().map(|(k, &i)| (i, k)).collect();
    let mut edges: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    for (k, &i) in nodes.iter().enumerate() {
        let p = &idx.packages[i].info;
        for group in p.pre_depends.iter().chain(&p.depends) {
            if group
                .iter()
                .any(|rel| baseline_satisfies(baseline, arch, chosen, rel))
            {
                continue;
            }
            let target = group
                .iter()
                .find_map(|rel| nodes.iter().find(|&&c| c != i && idx.satisfies(c, rel)));
            if let Some(&t) = target {
                let tk = pos[&t];
                if !edges[k].contains(&tk) {
                    edges[k].push(tk);
                }
            }
        }
        edges[k].sort_unstable();
    }

    // Iterative Tarjan.
    let n = nodes.len();
    let mut index = vec![usize::MAX; n];
    let mut low = vec![0; n];
    let mut on_stack = vec![false; n];
    let mut stack = Vec::new();
    let mut next = 0;
    let mut out = Vec::with_capacity(n);
    for start in 0..n {
        if index[start] != usize::MAX {
            continue;
        }
        let mut call: Vec<(usize, usize)> = vec![(start, 0)];
        index[start] = next;
        low[start] = next;
        next += 1;
        stack.push(start);
        on_stack[start] = true;
        while let Some(&mut (v, ref mut e)) = call.last_mut() {
            if *e < edges[v].len() {
                let w = edges[v][*e];
                *e += 1;
                if index[w] == usize::MAX {
                    index[w] = next;
                    low[w] = next;
                    next += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    call.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
            } else {
                call.pop();
                if let Some(&(parent, _)) = call.last() {
                    low[parent] = low[parent].min(low[v]);
                }
                if low[v] == index[v] {
                    let mut component = Vec::new();
                    while let Some(w) = stack.pop() {
                        on_stack[w] = false;
                        component.push(w);
                        if w == v {
                            break;
                        }
                    }
                    component.sort_unstable();
                    out.extend(component.into_iter().map(|k| nodes[k]));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::Stanza;

    fn pkg(text: &str) -> IndexPackage {
        let mut s = Stanza::parse(text).unwrap();
        let name = s.get("Package").unwrap().to_owned();
        let version = s.get("Version").unwrap().to_owned();
        if !s.contains("Architecture") {
            s.insert("Architecture", "amd64");
        }
        s.insert("Filename", format!("pool/{name}_{version}.deb"));
        s.insert("Size", "1");
        s.insert("SHA256", "0".repeat(64));
        IndexPackage::from_stanza(&s, "Packages").unwrap()
    }

    fn names(index: &[IndexPackage], r: &Resolution) -> Vec<String> {
        r.order
            .iter()
            .map(|&i| format!("{} {}", index[i].info.package, index[i].info.version))
            .collect()
    }

    fn status(text: &str) -> Status {
        Status::from_reader(text.as_bytes()).unwrap()
    }

    fn req(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn closure_minus_baseline_in_dependency_order() {
        let index = vec![
            pkg(
                "Package: socat\nVersion: 1.7.4.4-2\nDepends: libc6 (>= 2.34), libssl3 (>= 3.0.0), libwrap0 (>= 7.6-4~)",
            ),
            pkg("Package: libwrap0\nVersion: 7.6.q-32\nDepends: libc6 (>= 2.33), libnsl2 (>= 1.0)"),
            pkg(
                "Package: libnsl2\nVersion: 1.3.0-2\nDepends: libc6 (>= 2.14), libtirpc3 (>= 1.0.2)",
            ),
            pkg(
                "Package: libtirpc3\nVersion: 1.3.3+ds-1\nDepends: libc6, libtirpc-common (>= 1.3.3+ds-1)",
            ),
            pkg("Package: libtirpc-common\nVersion: 1.3.3+ds-1\nArchitecture: all"),
            pkg("Package: libssl3\nVersion: 3.0.13-1\nDepends: libc6 (>= 2.34)"),
            pkg("Package: libssl3\nVersion: 3.0.11-1\nDepends: libc6 (>= 2.34)"),
            pkg("Package: libc6\nVersion: 2.36-9\nDepends: libgcc-s1"),
            pkg("Package: arm-only\nVersion: 1\nArchitecture: arm64"),
        ];
        let base = status(
            "Package: libc6\nStatus: install ok installed\nVersion: 2.36-9\nArchitecture: amd64\nMulti-Arch: same\n\n\
             Package: libgcc-s1\nStatus: install ok installed\nVersion: 12.2.0-14\nArchitecture: amd64\n",
        );
        let r = resolve(&index, &req(&["socat"]), &base, "amd64").unwrap();
        assert_eq!(
            names(&index, &r),
            [
                "libtirpc-common 1.3.3+ds-1",
                "libtirpc3 1.3.3+ds-1",
                "libnsl2 1.3.0-2",
                "libssl3 3.0.13-1",
                "libwrap0 7.6.q-32",
                "socat 1.7.4.4-2"
            ]
        );
        assert_eq!(r.reasons[&0], "requested");
        assert_eq!(r.reasons[&1], "socat 1.7.4.4-2");
        assert!(r.upgrades.is_empty());
        // Requested packages the baseline has are left out.
        let r = resolve(&index, &req(&["libc6", "libtirpc-common"]), &base, "amd64").unwrap();
        assert_eq!(r.in_baseline, ["libc6"]);
        assert_eq!(names(&index, &r), ["libtirpc-common 1.3.3+ds-1"]);
    }

    #[test]
    fn alternatives_virtuals_and_upgrades() {
        let index = vec![
            pkg("Package: app\nVersion: 1\nDepends: missing | mta, libc6 (>= 2.40), awk"),
            pkg("Package: postfix\nVersion: 3\nProvides: mta\nPriority: optional"),
            pkg("Package: exim4\nVersion: 4\nProvides: mta\nPriority: standard"),
            pkg("Package: libc6\nVersion: 2.41-1"),
        ];
        let base = status(
            "Package: libc6\nStatus: install ok installed\nVersion: 2.36-9\nArchitecture: amd64\n\n\
             Package: mawk\nStatus: install ok installed\nVersion: 1.3.4\nArchitecture: amd64\nProvides: awk\n",
        );
        let r = resolve(&index, &req(&["app"]), &base, "amd64").unwrap();
        // exim4 wins on priority; libc6 is upgraded; awk comes from the baseline's mawk.
        assert_eq!(names(&index, &r), ["exim4 4", "libc6 2.41-1", "app 1"]);
        assert_eq!(r.upgrades, ["libc6"]);
        // A requested virtual package with several providers is refused.
        let e = resolve(&index, &req(&["mta"]), &base, "amd64").unwrap_err();
        assert_eq!(
            e.to_string(),
            "requested package mta: it is a virtual package provided by exim4, postfix; request one of them"
        );
    }

    #[test]
    fn unsatisfiable_names_package_constraint_and_what_the_index_had() {
        let index = vec![
            pkg(
                "Package: socat\nVersion: 1.7.4.4-2\nDepends: libssl3 (>= 3.2), libwrap0 | libnothing",
            ),
            pkg("Package: libssl3\nVersion: 3.0.13-1"),
        ];
        let e = resolve(&index, &req(&["socat", "nosuch"]), &Status::new(), "amd64").unwrap_err();
        assert_eq!(
            e.to_string(),
            "requested package nosuch: the index has no package nosuch for amd64 or all\n\
             socat 1.7.4.4-2 depends on libssl3 (>= 3.2), but the index has libssl3 3.0.13-1 (amd64)\n\
             socat 1.7.4.4-2 depends on libwrap0 | libnothing, but neither the index nor the baseline has libwrap0; neither the index nor the baseline has libnothing"
        );
    }

    #[test]
    fn cycles_are_ordered_by_name_after_their_dependencies() {
        let index = vec![
            pkg("Package: libc6\nVersion: 2.36\nDepends: libgcc-s1"),
            pkg("Package: libgcc-s1\nVersion: 12\nDepends: libc6 (>= 2.35), gcc-base"),
            pkg("Package: gcc-base\nVersion: 12"),
            pkg("Package: top\nVersion: 1\nPre-Depends: libc6"),
        ];
        let r = resolve(&index, &req(&["top"]), &Status::new(), "amd64").unwrap();
        assert_eq!(
            names(&index, &r),
            ["gcc-base 12", "libc6 2.36", "libgcc-s1 12", "top 1"]
        );
    }
}
