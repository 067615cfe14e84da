//! Preflight: everything that would make the apply fail half-way, checked
//! before it starts — tools, .deb dependencies and architectures, free space.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use bundle_spec::spec::Manifest;

use crate::paths::{Dir, Kind, Root};
use crate::plan::{Change, Decision, Op, Plan};

/// Extra room kept free on every filesystem written to, in bytes.
const SPACE_MARGIN: u64 = 16 << 20;

/// Directories searched for programs on the host.
const HOST_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Finds `program` on the host (or below `root` for a chroot).
pub fn find_program(program: &str, root: Option<&Root>) -> Option<PathBuf> {
    let exists = |p: &Path| p.is_file();
    let in_root = |r: &Root, p: &str| -> Option<PathBuf> {
        matches!(r.stat(p), Ok(Some(m)) if m.kind == Kind::File).then(|| r.display(p))
    };
    if program.contains('/') {
        return match root {
            Some(r) => in_root(r, program),
            None => {
                let p = PathBuf::from(program);
                exists(&p).then_some(p)
            }
        };
    }
    let path = match root {
        Some(_) => HOST_PATH.to_owned(),
        None => std::env::var("PATH")
            .map(|p| format!("{p}:{HOST_PATH}"))
            .unwrap_or_else(|_| HOST_PATH.to_owned()),
    };
    path.split(':')
        .filter(|d| !d.is_empty())
        .find_map(|d| match root {
            Some(r) => in_root(r, &format!("{d}/{program}")),
            None => {
                let p = Path::new(d).join(program);
                exists(&p).then_some(p)
            }
        })
}

/// Every preflight problem (empty when the apply may start).
pub fn check(root: &Root, manifest: &Manifest, plan: &Plan) -> Vec<String> {
    let mut problems = Vec::new();
    // Tools.
    let mut needed: BTreeMap<String, (String, Option<&Root>)> = BTreeMap::new();
    for op in plan.ops() {
        match op {
            Op::Dpkg { install, .. } if !install.is_empty() => {
                needed.insert("dpkg".into(), ("to install .deb packages".into(), None));
            }
            Op::Run {
                argv,
                chroot,
                decision: Decision::Run(_),
                what,
                ..
            } => {
                if *chroot {
                    needed.insert(
                        "chroot".into(),
                        ("to run commands in the root".into(), None),
                    );
                    needed.insert(
                        argv[0].clone(),
                        (format!("to {what} (inside the root)"), Some(root)),
                    );
                } else {
                    needed.insert(argv[0].clone(), (format!("to {what}"), None));
                }
            }
            _ => {}
        }
    }
    // containerd and ctr for the images steps: present now, or put in place
    // by an earlier step of this bundle.
    let planned = |program: &str| {
        plan.ops().any(
            |o| matches!(o, Op::File { target, .. } if target.rsplit('/').next() == Some(program)),
        )
    };
    let mut image_problems = std::collections::BTreeSet::new();
    for op in plan.ops() {
        if let Op::Image { daemon, .. } = op {
            if crate::images::ctr_binary(root).is_none() && !planned("ctr") {
                image_problems.insert(
                    "ctr is needed to import images but was not found (on this machine or in the root), and the bundle does not install it".to_owned(),
                );
            }
            match daemon {
                crate::images::Daemon::Private => {
                    if crate::images::private_containerd_binary(root).is_none()
                        && !planned("containerd")
                    {
                        image_problems.insert(
                            "containerd is needed to import images (a private one below the root) but was not found in the root or on this machine, and the bundle does not install it".to_owned(),
                        );
                    }
                }
                crate::images::Daemon::Live(address) => {
                    let started = plan.steps.iter().any(|s| {
                        s.ops.iter().any(|o| {
                            matches!(o, Op::Run { argv, .. } if argv.first().is_some_and(|a| a == "systemctl"))
                        })
                    });
                    let reachable = crate::images::ctr_binary(root)
                        .is_some_and(|c| crate::images::Ctr::new(c, address).reachable());
                    if !reachable && !started {
                        image_problems.insert(format!(
                            "containerd does not answer on {address} and the bundle does not start it; start containerd (systemctl start containerd) or set the step's \"address\""
                        ));
                    }
                }
            }
        }
    }
    problems.extend(image_problems);
    for (program, (why, inside)) in &needed {
        if find_program(program, *inside).is_none() {
            let place = if inside.is_some() {
                " inside the root"
            } else {
                ""
            };
            problems.push(format!(
                "{program} is needed {why} but was not found{place}"
            ));
        }
    }
    // .deb dependencies and architectures.
    let debs: Vec<&crate::plan::DebPlan> = plan
        .ops()
        .filter_map(|o| match o {
            Op::Dpkg { install, .. } => Some(install.iter()),
            _ => None,
        })
        .flatten()
        .collect();
    let kept: Vec<&(String, String, String)> = plan
        .ops()
        .filter_map(|o| match o {
            Op::Dpkg { kept, .. } => Some(kept.iter()),
            _ => None,
        })
        .flatten()
        .collect();
    if !debs.is_empty() {
        for problem in crate::debs::check(root, manifest.target.arch.as_str(), &debs) {
            // Name the downgrade that would satisfy it.
            let hint = kept
                .iter()
                .find(|(name, _, _)| problem.contains(&format!(" on {name} ")) || problem.contains(&format!(" on {name},")))
                .map(|(name, installed, bundled)| {
                    format!(
                        "; the bundled {name} {bundled} is older than the installed {installed}, which is kept: pass --allow-deb-downgrade to downgrade it"
                    )
                })
                .unwrap_or_default();
            problems.push(format!("{problem}{hint}"));
        }
    }
    // Per file system written to: writable, and enough free space.
    let mut need: BTreeMap<u64, (Dir, String, u64)> = BTreeMap::new();
    let mut add = |target: &str, bytes: u64| match root.nearest_existing_dir(target) {
        Ok(dir) => match dir.meta() {
            Ok(m) => need.entry(m.dev).or_insert((dir, target.to_owned(), 0)).2 += bytes,
            Err(e) => problems.push(e.to_string()),
        },
        Err(e) => problems.push(format!("{target}: {e}")),
    };
    for op in plan.ops() {
        match op {
            Op::File {
                target,
                size,
                change,
                ..
            } => match change {
                Change::Create | Change::Update => add(target, *size + 4096),
                Change::Mode(_) => add(target, 0),
                Change::Unchanged => {}
            },
            Op::Dir { target, change, .. } => match change {
                Change::Create => add(target, 4096),
                Change::Mode(_) => add(target, 0),
                _ => {}
            },
            Op::Link { target, change, .. } if *change != Change::Unchanged => add(target, 4096),
            Op::Dpkg { install, .. } if !install.is_empty() => {
                add("/usr", install.iter().map(|d| d.installed_size).sum());
                add("/var/lib/dpkg/status", 0);
            }
            _ => {}
        }
    }
    for (dir, target, bytes) in need.values() {
        if dir.read_only().unwrap_or(false) {
            problems.push(format!(
                "{target} is on a read-only file system ({} is mounted read-only); remount it read-write or leave it out of the bundle",
                dir.shown().display()
            ));
            continue;
        }
        if let Ok(avail) = dir.available_bytes()
            && avail < bytes.saturating_add(SPACE_MARGIN)
        {
            problems.push(format!(
                "not enough space on the filesystem of {}: {} bytes needed (+{} margin), {} available",
                dir.shown().display(),
                bytes,
                SPACE_MARGIN,
                avail
            ));
        }
    }
    problems
}

/// Free bytes on the filesystem holding `path` (or its nearest existing ancestor).
pub fn free_bytes(path: &Path) -> Option<u64> {
    let (_, existing) = existing_ancestor(path)?;
    let st = rustix::fs::statvfs(&existing).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

/// The staging problem, if the artifacts do not fit where they are staged.
pub fn check_staging_space(staging_base: &Path, artifact_bytes: u64) -> Option<String> {
    let free = free_bytes(staging_base)?;
    let need = artifact_bytes.saturating_add(SPACE_MARGIN);
    (free < need).then(|| {
        format!(
            "not enough space to stage the bundle in {}: {artifact_bytes} bytes of artifacts (+{SPACE_MARGIN} margin), {free} available; free some space or pass --staging-dir DIR",
            staging_base.display()
        )
    })
}

fn existing_ancestor(path: &Path) -> Option<(u64, PathBuf)> {
    let mut p = path;
    loop {
        if let Ok(m) = std::fs::metadata(p) {
            return Some((m.dev(), p.to_owned()));
        }
        p = p.parent()?;
    }
}
