//! The `systemd-unit` step kind: the unit file, the links that enable it,
//! and what systemd must do once every step is applied.
//!
//! Enabling is the same everywhere — below `--root` and on a booted host —
//! and is what `systemctl enable` does ([`bundle_spec::unit`]): the links
//! its `[Install]` section asks for, written (and rolled back) by the
//! journal like every other file, then a `daemon-reload` on a booted host.
//! So the plan shows every link, a re-run changes nothing, and a rollback
//! disables what the run enabled.
//!
//! On a booted host, a unit with `start` is restarted when its unit file or
//! a file its content names (`ExecStart=/usr/local/bin/containerd`, a
//! config it passes) changed, started when it is not running, and left
//! alone otherwise; with `--no-start`, never. Below `--root` or where no
//! systemd runs (a chroot), nothing is reloaded or started.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use bundle_spec::spec::{Manifest, Step, SystemdUnitStep};
use bundle_spec::template;
use bundle_spec::unit::{self, EnableLink};
use bundle_spec::validate::unit_path;

use crate::paths::{Kind, Root};
use crate::plan::{Change, Decision, Op};

/// A unit of the bundle as planned.
#[derive(Debug, Clone)]
pub struct PlannedUnit {
    /// The names enabled and started (instances of a template).
    pub names: Vec<String>,
    /// Whether its unit file changes.
    pub changed: bool,
    /// The paths it runs from: its unit file first, then the absolute paths
    /// its content names.
    pub paths: Vec<String>,
    /// Start it (the step's `start`).
    pub start: bool,
    /// Started before a later step needed it (containerd before images),
    /// not again among the final actions.
    pub started_early: bool,
}

/// Plans one `systemd-unit` step: its unit file and, with `enable`, the
/// links; the unit as the final systemd actions need it.
pub fn plan_step(
    root: &Root,
    s: &SystemdUnitStep,
    vars: &BTreeMap<String, String>,
    bundle_units: &BTreeMap<String, (String, String)>,
) -> Result<(Vec<Op>, PlannedUnit), String> {
    let content = if s.template {
        template::render(&s.content, vars).map_err(|e| e.to_string())?
    } else {
        s.content.clone()
    };
    let unit_file = unit_path(&s.name).to_string();
    let file = crate::plan::inline_file(root, &unit_file, content.clone().into_bytes(), 0o644)
        .map_err(|e| e.to_string())?;
    let changed = file.changes();
    let mut ops = vec![file];
    let names = if s.enable {
        let (links, names) = enable_links(root, s, &content, bundle_units)?;
        ops.extend(link_ops(root, &links)?);
        names
    } else {
        start_names(s, &content)
    };
    let mut paths = vec![unit_file];
    paths.extend(named_paths(&content));
    Ok((
        ops,
        PlannedUnit {
            names,
            changed,
            paths,
            start: s.start,
            started_early: false,
        },
    ))
}

/// The names a unit that is not enabled is started by: its instances, else
/// a template's `DefaultInstance=`, else its own name.
pub fn start_names(s: &SystemdUnitStep, content: &str) -> Vec<String> {
    let instance = |i: &str| match s.name.as_str().split_once("@.") {
        Some((prefix, suffix)) => format!("{prefix}@{i}.{suffix}"),
        None => s.name.to_string(),
    };
    if !s.instances.is_empty() {
        return s.instances.iter().map(|i| instance(i)).collect();
    }
    match unit::InstallSection::parse(content).default_instance {
        Some(d) if unit::is_template(s.name.as_str()) => vec![instance(&d)],
        _ => vec![s.name.to_string()],
    }
}

/// The bundle's units, rendered, by name (for `Also=`).
pub fn rendered_units(
    manifest: &Manifest,
    vars: &BTreeMap<String, String>,
) -> BTreeMap<String, (String, String)> {
    manifest
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::SystemdUnit(u) => {
                let content = if u.template {
                    template::render(&u.content, vars).ok()?
                } else {
                    u.content.clone()
                };
                Some((
                    u.name.to_string(),
                    (unit_path(&u.name).to_string(), content),
                ))
            }
            _ => None,
        })
        .collect()
}

/// Absolute paths a unit's content names (`ExecStart=/bin/containerd` names `/bin/containerd`).
pub fn named_paths(content: &str) -> BTreeSet<String> {
    content
        .split(|c: char| c.is_whitespace() || matches!(c, '=' | '"' | '\'' | ';' | ','))
        .map(|t| t.trim_start_matches(['-', '@', '+', '!', ':']))
        .filter(|t| t.starts_with('/') && t.len() > 1)
        .map(str::to_owned)
        .collect()
}

/// A unit named by `Also=` that the bundle does not carry: its path and
/// content below the root, searched like systemd does.
fn unit_in_root(root: &Root, name: &str) -> Option<(String, String)> {
    unit::UNIT_SEARCH_PATH.iter().find_map(|dir| {
        let path = format!("{dir}/{name}");
        match root.stat(&path) {
            Ok(Some(m)) if m.kind == Kind::File => {
                let content = root
                    .open_following(&path)
                    .ok()
                    .and_then(|f| std::io::read_to_string(f).ok())?;
                Some((path, content))
            }
            _ => None,
        }
    })
}

/// The links enabling `s` (its instances), `Also=` units included.
pub fn enable_links(
    root: &Root,
    s: &SystemdUnitStep,
    content: &str,
    bundle_units: &BTreeMap<String, (String, String)>,
) -> Result<(Vec<EnableLink>, Vec<String>), String> {
    let mut links = Vec::new();
    let mut names = Vec::new();
    let mut also: Vec<String> = Vec::new();
    let path = unit_path(&s.name).to_string();
    for i in s.instance_choices() {
        let e = unit::enable(s.name.as_str(), &path, content, i)
            .map_err(|e| format!("cannot enable: {e}"))?;
        names.push(e.name);
        links.extend(e.links);
        also.extend(e.also);
    }
    // Also= units are enabled too (their own Also= followed, once each).
    let mut seen: BTreeSet<String> = BTreeSet::from([s.name.to_string()]);
    while let Some(name) = also.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        let (p, c) = bundle_units
            .get(&name)
            .cloned()
            .or_else(|| unit_in_root(root, &name))
            .ok_or_else(|| {
                format!(
                    "cannot enable: {} says Also={name}, which is neither in the bundle nor a unit file under {} in the root",
                    s.name,
                    unit::UNIT_SEARCH_PATH.join(", ")
                )
            })?;
        let e = unit::enable(&name, &p, &c, None)
            .map_err(|e| format!("cannot enable {name} (Also= of {}): {e}", s.name))?;
        links.extend(e.links);
        also.extend(e.also);
    }
    Ok((links, names))
}

/// The link operations for `links`, each compared with the root.
pub fn link_ops(root: &Root, links: &[EnableLink]) -> Result<Vec<Op>, String> {
    let mut ops = Vec::new();
    let mut by_path: BTreeMap<&str, &str> = BTreeMap::new();
    for l in links {
        match by_path.insert(&l.path, &l.to) {
            Some(prev) if prev == l.to => continue,
            Some(prev) => {
                return Err(format!("{} would link to both {prev} and {}", l.path, l.to));
            }
            None => {}
        }
        let change = crate::plan::link_change(root, &l.path, &l.to).map_err(|e| e.to_string())?;
        ops.push(Op::Link {
            target: l.path.clone(),
            to: l.to.clone(),
            change,
        });
    }
    Ok(ops)
}

/// Whether `argv` exits 0.
fn succeeds(argv: &[&str]) -> bool {
    let argv: Vec<String> = argv.iter().map(|s| (*s).to_owned()).collect();
    crate::apply::command(&argv, None)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether a systemd manager runs here (`sd_booted(3)`).
pub fn booted() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// The systemd actions after every step: `daemon-reload` when a unit file
/// or an enable link changed, then start/restart per unit (see the module
/// docs). Only on the host; `changed_targets` are the paths the plan changes.
pub fn finally(
    root: &Root,
    units: &[PlannedUnit],
    reload_needed: bool,
    changed_targets: &BTreeSet<String>,
    no_start: bool,
) -> Vec<Op> {
    let mut out = Vec::new();
    if !root.is_host() || units.is_empty() {
        return out;
    }
    if reload_needed {
        out.push(reload_op());
    }
    for u in units.iter().filter(|u| !u.started_early) {
        out.extend(start_ops(u, changed_targets, no_start));
    }
    out
}

fn not_booted() -> Decision {
    Decision::Skip("systemd is not running here (chroot or image); units load when it boots".into())
}

/// `systemctl daemon-reload`, run where systemd runs.
pub fn reload_op() -> Op {
    Op::Run {
        what: "reload systemd".into(),
        argv: vec!["systemctl".into(), "daemon-reload".into()],
        chroot: false,
        undo: Some(vec!["systemctl".into(), "daemon-reload".into()]),
        decision: if booted() {
            Decision::Run("unit files or their links changed".into())
        } else {
            not_booted()
        },
    }
}

/// The start/restart of `u` (each of its names): restart when its unit file
/// or a file it names changed, start when it is not running, else nothing.
pub fn start_ops(u: &PlannedUnit, changed_targets: &BTreeSet<String>, no_start: bool) -> Vec<Op> {
    if !u.start || no_start {
        return Vec::new();
    }
    let booted = booted();
    let touched: Vec<&str> = u.paths[1..]
        .iter()
        .filter(|n| changed_targets.contains(*n))
        .map(String::as_str)
        .collect();
    u.names
        .iter()
        .map(|name| {
            let active = booted && succeeds(&["systemctl", "is-active", "--quiet", name]);
            let (verb, decision) = if u.changed {
                ("restart", Decision::Run("unit file changed".into()))
            } else if !touched.is_empty() {
                (
                    "restart",
                    Decision::Run(format!("{} changed", touched.join(", "))),
                )
            } else if !active {
                ("start", Decision::Run("not running".into()))
            } else {
                ("start", Decision::Skip("running and unchanged".into()))
            };
            Op::Run {
                what: format!("{verb} {name}"),
                argv: vec!["systemctl".into(), verb.into(), name.clone()],
                chroot: false,
                // Afterwards it runs what is on disk again, or not at all if
                // it did not run before.
                undo: Some(vec![
                    "systemctl".into(),
                    if active { "restart" } else { "stop" }.into(),
                    name.clone(),
                ]),
                decision: if booted { decision } else { not_booted() },
            }
        })
        .collect()
}

/// Whether the unit runs a `containerd` binary (its content names one).
pub fn runs_containerd(u: &PlannedUnit) -> bool {
    u.paths[1..]
        .iter()
        .any(|p| p.rsplit('/').next() == Some("containerd"))
}

/// Where the installer keeps a copy of itself for recovery at boot.
pub const RECOVERY_BINARY: &str = "/var/lib/install-bundle/install-bundle";
/// The unit that runs `install-bundle recover` at boot.
pub const RECOVERY_UNIT: &str = "install-bundle-recover.service";

/// The recovery unit: at boot, before `sysinit.target` (so before every
/// service with default dependencies, which all the bundle's units have
/// unless they say otherwise), it rolls back an install a crash or power cut
/// interrupted, reloads systemd and restarts what runs from restored files.
/// It does nothing when there is no journal. Exit 5 (rolled back
/// completely) is a success; 6 leaves the unit failed, for
/// `systemctl --failed` to show.
pub const RECOVERY_UNIT_CONTENT: &str = "\
# Written by install-bundle. Rolls back an install that a crash or a power cut
# interrupted, before the services it manages start.
[Unit]
Description=Roll back an interrupted install-bundle run
DefaultDependencies=no
Requires=local-fs.target
After=local-fs.target
Before=sysinit.target shutdown.target
Conflicts=shutdown.target
ConditionPathExists=/var/lib/install-bundle/journal

[Service]
Type=oneshot
ExecStart=/var/lib/install-bundle/install-bundle recover
SuccessExitStatus=5

[Install]
WantedBy=sysinit.target
";

/// This installer's executable: `/proc/self/exe`, or where `/proc` is not
/// mounted (a chroot) the path it was started by (`argv[0]`, searched in
/// `PATH` when it holds no `/`).
pub fn this_installer() -> Result<std::path::PathBuf, String> {
    if let Ok(p) = std::env::current_exe() {
        return Ok(p);
    }
    let arg0 = std::env::args_os()
        .next()
        .ok_or_else(|| "finding this installer: no /proc/self/exe and no argv[0]".to_owned())?;
    let arg0 = std::path::PathBuf::from(arg0);
    if arg0.components().count() > 1 {
        return Ok(arg0);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(&arg0))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "finding this installer: no /proc/self/exe, and {} is not in PATH",
                arg0.display()
            )
        })
}

/// What a bundle with units installs first on a host: a copy of this installer and
/// the enabled [`RECOVERY_UNIT`], so that an install interrupted by a power
/// cut is rolled back at the next boot before the services it touched start
/// from half-updated files. Journaled like every change (a failed first
/// install takes them back); not part of any bundle's receipt.
pub fn recovery_ops(root: &Root) -> Result<Vec<Op>, String> {
    let exe = this_installer()?;
    let binary = std::fs::read(&exe).map_err(|e| format!("reading {}: {e}", exe.display()))?;
    let unit_file = format!("{}/{RECOVERY_UNIT}", unit::UNIT_DIR);
    let mut ops = vec![
        crate::plan::inline_file(root, RECOVERY_BINARY, binary, 0o755)
            .map_err(|e| e.to_string())?,
        crate::plan::inline_file(
            root,
            &unit_file,
            RECOVERY_UNIT_CONTENT.as_bytes().to_vec(),
            0o644,
        )
        .map_err(|e| e.to_string())?,
    ];
    let e = unit::enable(RECOVERY_UNIT, &unit_file, RECOVERY_UNIT_CONTENT, None)
        .map_err(|e| e.to_string())?;
    ops.extend(link_ops(root, &e.links)?);
    Ok(ops)
}

/// Whether any of `ops` changes something.
pub fn any_change(ops: &[Op]) -> bool {
    ops.iter().any(|o| match o {
        Op::Link { change, .. } | Op::File { change, .. } => *change != Change::Unchanged,
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_at_boot_is_this_installer_and_a_unit_enabled_before_sysinit() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path()).unwrap();
        let ops = recovery_ops(&root).unwrap();
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let targets: Vec<(String, Change)> = ops
            .iter()
            .map(|o| match o {
                Op::File {
                    target,
                    change,
                    sha256,
                    ..
                } => {
                    if target == RECOVERY_BINARY {
                        assert_eq!(*sha256, bundle_spec::Sha256Digest::of(&exe));
                    }
                    (target.clone(), *change)
                }
                Op::Link { target, to, change } => {
                    assert_eq!(to, "/etc/systemd/system/install-bundle-recover.service");
                    (target.clone(), *change)
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            targets,
            vec![
                (RECOVERY_BINARY.to_owned(), Change::Create),
                (
                    "/etc/systemd/system/install-bundle-recover.service".to_owned(),
                    Change::Create
                ),
                (
                    "/etc/systemd/system/sysinit.target.wants/install-bundle-recover.service"
                        .to_owned(),
                    Change::Create
                ),
            ]
        );
        let install = unit::InstallSection::parse(RECOVERY_UNIT_CONTENT);
        assert_eq!(install.wanted_by, vec!["sysinit.target"]);
        assert!(
            RECOVERY_UNIT_CONTENT
                .contains("ExecStart=/var/lib/install-bundle/install-bundle recover")
        );
    }
}
