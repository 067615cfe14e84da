//! Tests against real Debian packages (fetched with `apt-get download`) and
//! this machine's dpkg database, cross-checked with `dpkg-deb`, `dpkg-query`
//! and `dpkg --compare-versions`.
//!
//! The download tests skip (with a message) only when apt-get cannot be run
//! or fails for lack of network; any other apt-get failure fails the test.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use debpkg::check::NOT_FOUND;
use debpkg::relation::{format_group, parse_relations};
use debpkg::{
    DebInfo, InstalledPackage, MultiArch, Op, Stanza, Status, check_dependencies, read_control,
    read_info,
};

const HOST_STATUS: &str = "/var/lib/dpkg/status";
const PACKAGES: [&str; 3] = ["socat", "conntrack", "ipset"];

/// Downloaded `.deb`s, kept alive with their temporary directory.
struct Downloaded {
    _dir: tempfile::TempDir,
    debs: Vec<(PathBuf, DebInfo)>,
}

impl Downloaded {
    fn get(&self, package: &str) -> &(PathBuf, DebInfo) {
        self.debs
            .iter()
            .find(|(_, d)| d.package == package)
            .unwrap_or_else(|| panic!("{package} was not downloaded"))
    }

    fn infos(&self) -> Vec<DebInfo> {
        self.debs.iter().map(|(_, d)| d.clone()).collect()
    }
}

/// `apt-get download PACKAGES` into a fresh temporary directory, or `None`
/// (after printing why) when apt-get is unavailable or offline.
fn download() -> Option<Downloaded> {
    let dir = tempfile::tempdir().unwrap();
    let output = match Command::new("apt-get")
        .arg("download")
        .args(PACKAGES)
        .current_dir(dir.path())
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            eprintln!("SKIPPED: cannot run apt-get: {e}");
            return None;
        }
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        const OFFLINE: [&str; 6] = [
            "Temporary failure resolving",
            "Could not resolve",
            "Could not connect",
            "Unable to connect",
            "Network is unreachable",
            "Connection timed out",
        ];
        if OFFLINE.iter().any(|m| stderr.contains(m)) {
            eprintln!("SKIPPED: apt-get download failed for lack of network:\n{stderr}");
            return None;
        }
        panic!("apt-get download {PACKAGES:?} failed (try apt-get update?):\n{stderr}");
    }
    let mut debs = Vec::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "deb") {
            let info = read_info(&path).unwrap_or_else(|e| panic!("{e}"));
            debs.push((path, info));
        }
    }
    debs.sort_by(|a, b| a.1.package.cmp(&b.1.package));
    let mut names: Vec<_> = debs.iter().map(|(_, d)| d.package.as_str()).collect();
    names.sort();
    let mut expected = PACKAGES.to_vec();
    expected.sort();
    assert_eq!(names, expected, "exactly one .deb per requested package");
    Some(Downloaded { _dir: dir, debs })
}

/// Runs a command and returns its stdout, or `None` if it cannot be run or
/// exits non-zero.
fn run(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8(out.stdout).unwrap())
}

fn native_arch() -> String {
    run("dpkg", &["--print-architecture"])
        .expect("dpkg --print-architecture")
        .trim()
        .to_owned()
}

fn dpkg_deb_field(deb: &Path, field: &str) -> String {
    run("dpkg-deb", &["-f", deb.to_str().unwrap(), field])
        .expect("dpkg-deb -f")
        .trim()
        .to_owned()
}

/// What dpkg itself says about one alternative: is a package of that name
/// installed (`ii`/`hi`) for a fitting architecture with a fitting version?
/// Returns (satisfied, anything of that name installed at all).
fn dpkg_says_satisfied(name: &str, op: Option<(Op, String)>, native: &str) -> (bool, bool) {
    let Some(out) = run(
        "dpkg-query",
        &[
            "-W",
            "-f=${db:Status-Abbrev}\t${Version}\t${Architecture}\t${Multi-Arch}\n",
            name,
        ],
    ) else {
        return (false, false);
    };
    let mut any_installed = false;
    for line in out.lines() {
        let cols: Vec<&str> = line.split('\t').collect();
        let (abbrev, version, arch, multi_arch) = (cols[0], cols[1], cols[2], cols[3]);
        if !(abbrev.starts_with("ii") || abbrev.starts_with("hi")) {
            continue;
        }
        any_installed = true;
        let arch_ok = arch == native || arch == "all" || multi_arch == "foreign";
        let version_ok = op.as_ref().is_none_or(|(op, reference)| {
            let dpkg_op = match op {
                Op::Earlier => "lt",
                Op::EarlierOrEqual => "le",
                Op::Equal => "eq",
                Op::LaterOrEqual => "ge",
                Op::Later => "gt",
            };
            Command::new("dpkg")
                .args(["--compare-versions", version, dpkg_op, reference])
                .status()
                .unwrap()
                .success()
        });
        if arch_ok && version_ok {
            return (true, true);
        }
    }
    (false, any_installed)
}

#[test]
fn read_control_matches_dpkg_deb_for_real_packages() {
    let Some(dl) = download() else { return };
    for (path, info) in &dl.debs {
        let ours = read_control(path).unwrap();
        let theirs =
            Stanza::parse(&run("dpkg-deb", &["-f", path.to_str().unwrap()]).unwrap()).unwrap();
        assert_eq!(ours, theirs, "{}", path.display());
        assert_eq!(info.package, dpkg_deb_field(path, "Package"));
        assert_eq!(info.version.to_string(), dpkg_deb_field(path, "Version"));
        assert_eq!(info.architecture, dpkg_deb_field(path, "Architecture"));
        assert_eq!(
            info.installed_size_kib.map(|n| n.to_string()),
            Some(dpkg_deb_field(path, "Installed-Size"))
        );
        for (field, parsed) in [
            ("Depends", &info.depends),
            ("Pre-Depends", &info.pre_depends),
        ] {
            assert_eq!(
                *parsed,
                parse_relations(&dpkg_deb_field(path, field)).unwrap(),
                "{} {field}",
                info.package
            );
        }
        assert!(
            info.depends.iter().flatten().any(|r| r.name == "libc6"),
            "{} should depend on libc6",
            info.package
        );
    }
    let ipset = &dl.get("ipset").1;
    let provides = dpkg_deb_field(&dl.get("ipset").0, "Provides");
    assert_eq!(
        ipset
            .provides
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        provides
    );
    assert_eq!(dl.get("conntrack").1.version.epoch(), 1);
}

#[test]
fn socat_dependencies_against_host_status_agree_with_dpkg() {
    let Some(dl) = download() else { return };
    let native = native_arch();
    let status = Status::read(HOST_STATUS).unwrap();
    for package in PACKAGES {
        let (path, info) = dl.get(package);
        let unmet = check_dependencies(std::slice::from_ref(info), &status, &native);
        eprintln!("{package} against this host:");
        for u in &unmet {
            eprintln!("  {u}");
        }

        // What dpkg says, group by group, from dpkg-deb's view of the field.
        let depends = parse_relations(&dpkg_deb_field(path, "Depends")).unwrap();
        let mut expected = Vec::new();
        for group in &depends {
            let mut satisfied = false;
            let mut any_installed = false;
            for rel in group {
                assert!(
                    rel.arch_qualifier.is_none(),
                    "cross-check handles plain names only"
                );
                let (ok, installed) = dpkg_says_satisfied(
                    &rel.name,
                    rel.constraint.as_ref().map(|(op, v)| (*op, v.to_string())),
                    &native,
                );
                satisfied |= ok;
                any_installed |= installed;
            }
            if !satisfied {
                expected.push((format_group(group), any_installed));
            }
        }
        let actual: Vec<_> = unmet
            .iter()
            .map(|u| {
                assert_eq!(u.package, package);
                assert_eq!(u.field, "Depends");
                (u.relation.clone(), u.found != NOT_FOUND)
            })
            .collect();
        assert_eq!(
            actual, expected,
            "{package}: check_dependencies vs dpkg-query"
        );
        if package == "socat" {
            // libc6 is installed on any Debian system that can run dpkg.
            assert!(!actual.iter().any(|(r, _)| r.starts_with("libc6")));
        }
    }
}

#[test]
fn every_bundled_deb_reports_unmet_libc6_against_empty_status() {
    let Some(dl) = download() else { return };
    let debs = dl.infos();
    let unmet = check_dependencies(&debs, &Status::new(), &native_arch());
    for (path, info) in &dl.debs {
        let libc6_group = info
            .depends
            .iter()
            .find(|g| g.iter().any(|r| r.name == "libc6"))
            .unwrap();
        let u = unmet
            .iter()
            .find(|u| u.package == info.package && u.relation == format_group(libc6_group))
            .unwrap_or_else(|| panic!("{} should miss libc6: {unmet:?}", info.package));
        assert_eq!(u.found, NOT_FOUND);
        let libc6_dep = dpkg_deb_field(path, "Depends")
            .split(", ")
            .find(|d| d.starts_with("libc6"))
            .unwrap()
            .to_owned();
        assert_eq!(
            u.to_string(),
            format!(
                "{} depends on {libc6_dep}, which is not installed and not in the bundle",
                info.package
            )
        );
    }
    // None of the three depends on another, so every group is unmet.
    let groups: usize = debs
        .iter()
        .map(|d| d.depends.len() + d.pre_depends.len())
        .sum();
    assert_eq!(unmet.len(), groups);
}

/// The lowest version satisfying `op reference` that we can write down.
fn satisfying_version(op: Op, reference: &debpkg::Version) -> debpkg::Version {
    let v = match op {
        Op::Equal | Op::LaterOrEqual | Op::EarlierOrEqual => reference.clone(),
        Op::Later => format!("{reference}+1").parse().unwrap(),
        Op::Earlier => panic!("no << constraints expected in these packages"),
    };
    assert!(op.matches(&v, reference));
    v
}

#[test]
fn synthetic_status_with_exactly_the_needed_packages_satisfies_the_bundle() {
    let Some(dl) = download() else { return };
    let native = native_arch();
    let debs = dl.infos();

    // For every group take its first alternative, at the highest version
    // any bundled package requires.
    let mut needed: BTreeMap<String, Option<debpkg::Version>> = BTreeMap::new();
    for rel in debs
        .iter()
        .flat_map(|d| d.pre_depends.iter().chain(&d.depends))
        .map(|g| &g[0])
    {
        let version = rel
            .constraint
            .as_ref()
            .map(|(op, v)| satisfying_version(*op, v));
        let slot = needed.entry(rel.name.clone()).or_default();
        if version > *slot {
            *slot = version;
        }
    }
    let installed = |skip: Option<&str>| -> Status {
        needed
            .iter()
            .filter(|(name, _)| Some(name.as_str()) != skip)
            .map(|(name, version)| InstalledPackage {
                package: name.clone(),
                version: version.clone().unwrap_or_else(|| "1.0".parse().unwrap()),
                architecture: native.clone(),
                multi_arch: MultiArch::No,
                provides: Vec::new(),
            })
            .collect()
    };

    let status = installed(None);
    assert_eq!(status.len(), needed.len());
    let unmet = check_dependencies(&debs, &status, &native);
    assert!(unmet.is_empty(), "{unmet:#?}");

    // Leave out any one package and exactly its dependents complain.
    for name in needed.keys() {
        let unmet = check_dependencies(&debs, &installed(Some(name)), &native);
        assert!(!unmet.is_empty(), "dropping {name} must be noticed");
        for u in &unmet {
            assert!(
                u.relation.starts_with(&format!("{name} ")) || u.relation == *name,
                "{u}"
            );
            assert_eq!(u.found, NOT_FOUND);
        }
    }
}

#[test]
fn host_status_parses_fully_and_has_dpkg_installed() {
    let status = Status::read(HOST_STATUS).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !status.is_empty(),
        "{HOST_STATUS} should list installed packages"
    );
    let dpkg = status.get("dpkg").next().expect("dpkg is installed");
    assert_eq!(dpkg.architecture, native_arch());

    let Some(version) = run("dpkg-query", &["-W", "-f=${Version}", "dpkg"]) else {
        eprintln!("SKIPPED cross-check: dpkg-query unavailable");
        return;
    };
    assert_eq!(dpkg.version.to_string(), version);
    let installed = run("dpkg-query", &["-W", "-f=${db:Status-Abbrev}\n"])
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("ii ") || l.starts_with("hi "))
        .count();
    assert_eq!(status.len(), installed, "installed count vs dpkg-query");
}

#[test]
fn debs_built_by_dpkg_deb_with_each_compression_are_readable() {
    if run("dpkg-deb", &["--version"]).is_none() {
        eprintln!("SKIPPED: dpkg-deb unavailable");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
    std::fs::create_dir_all(root.join("usr/share/doc/demo")).unwrap();
    std::fs::write(root.join("usr/share/doc/demo/README"), "hello\n").unwrap();
    std::fs::write(
        root.join("DEBIAN/control"),
        "Package: demo\nVersion: 2:1.0~rc1-1+b1\nArchitecture: all\nMaintainer: Nobody <nobody@example.org>\n\
         Pre-Depends: dpkg (>= 1.19.1)\nDepends: libc6 (>= 2.34) | musl:any, perl:any\nProvides: demo-api (= 1)\n\
         Multi-Arch: foreign\nDescription: demo package\n Long description.\n .\n Second paragraph.\n",
    )
    .unwrap();
    for compression in ["gzip", "xz", "zstd", "none"] {
        let deb = dir.path().join(format!("demo-{compression}.deb"));
        let built = Command::new("dpkg-deb")
            .args([&format!("-Z{compression}"), "--root-owner-group", "--build"])
            .arg(&root)
            .arg(&deb)
            .output()
            .unwrap();
        assert!(
            built.status.success(),
            "{}",
            String::from_utf8_lossy(&built.stderr)
        );
        let info = read_info(&deb).unwrap_or_else(|e| panic!("{compression}: {e}"));
        assert_eq!(info.package, "demo");
        assert_eq!(info.version.to_string(), "2:1.0~rc1-1+b1");
        assert_eq!(info.multi_arch, MultiArch::Foreign);
        assert_eq!(
            debpkg::relation::format_relations(&info.depends),
            "libc6 (>= 2.34) | musl:any, perl:any"
        );
        let stanza = read_control(&deb).unwrap();
        assert_eq!(
            stanza.get("Description"),
            Some("demo package\n Long description.\n .\n Second paragraph.")
        );
    }
}
