//! Enabling units agrees with `systemctl --root=R enable` (issue 12, item
//! 11; reproducer `shared/cases/14`): the oracle is Debian's real
//! `systemctl`, run on a second root holding the same unit files. What
//! systemctl refuses is refused at build time where the spec shows it.

use std::path::{Path, PathBuf};
use std::process::Command;

use bundle_tests::cli::{bundler, run};
use bundle_tests::fixture::Fixture;
use bundle_tests::kit;
use bundle_tests::tree::{diff_listings, tree_listing};

fn systemctl() -> Option<PathBuf> {
    ["/usr/bin/systemctl", "/bin/systemctl"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Every symlink below `root`, as `path -> target`.
fn links(root: &Path) -> Vec<String> {
    let mut out: Vec<String> = walkdir(root)
        .into_iter()
        .filter_map(|p| {
            let m = std::fs::symlink_metadata(&p).ok()?;
            m.file_type().is_symlink().then(|| {
                format!(
                    "{} -> {}",
                    p.strip_prefix(root).unwrap().display(),
                    std::fs::read_link(&p).unwrap().display()
                )
            })
        })
        .collect();
    out.sort();
    out
}

fn walkdir(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            out.push(p.clone());
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.extend(walkdir(&p));
            }
        }
    }
    out
}

/// A unit of the test: name, content, instances to enable.
struct U(&'static str, &'static str, &'static [&'static str]);

const UNITS: &[U] = &[
    U(
        "echo@.service",
        "[Unit]\nDescription=echo %i\n[Service]\nExecStart=/bin/echo %i\n[Install]\nWantedBy=multi-user.target\nDefaultInstance=eth0\nAlias=say@.service\n",
        &[],
    ),
    U(
        "getty-like@.service",
        "[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=getty.target\nAlias=tty-like@.service\n",
        &["tty1", "tty2"],
    ),
    U(
        "tpl-target@.service",
        "[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=tpl@.target\n",
        &[],
    ),
    U(
        "kubelet.service",
        "[Service]\nExecStart=/usr/local/bin/kubelet\n[Install]\nWantedBy=multi-user.target\nAlias=k8s-kubelet.service\n",
        &[],
    ),
    U(
        "containerd.service",
        "[Service]\nExecStart=/usr/local/bin/containerd\n[Install]\nRequiredBy=kubelet.service\nAlso=containerd-gc.timer\n",
        &[],
    ),
    U(
        "containerd-gc.timer",
        "[Timer]\nOnCalendar=daily\n[Install]\nWantedBy=timers.target\n",
        &[],
    ),
    U(
        "reset.service",
        "[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\nWantedBy=\nWantedBy=network.target \\\n  sockets.target\n# WantedBy=commented.target\n",
        &[],
    ),
    U(
        "spec-ifiers@.service",
        "[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\nAlias=%i-%j-%N.service\nDefaultInstance=a-b\n",
        &[],
    ),
    U(
        "inst@eth1.service",
        "[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n",
        &[],
    ),
];

fn spec(units: &[U]) -> serde_json::Value {
    let steps: Vec<serde_json::Value> = units
        .iter()
        .map(|U(name, content, instances)| {
            let mut s = serde_json::json!({"kind": "systemd-unit", "name": name, "content": content, "enable": true});
            if !instances.is_empty() {
                s["instances"] = serde_json::json!(instances);
            }
            s
        })
        .collect();
    serde_json::json!({
        "apiVersion": "bundle/v1", "name": "units", "version": "1", "serial": 1,
        "target": {"os": "linux", "arch": "amd64"}, "artifacts": {}, "steps": steps,
    })
}

#[test]
fn enable_links_agree_with_systemctl_root_enable() {
    let Some(systemctl) = systemctl() else {
        assert!(
            std::env::var_os("BUNDLE_E2E_REQUIRED").is_none(),
            "systemctl is needed as the oracle (apt-get install systemd)"
        );
        eprintln!("SKIPPED: no systemctl");
        return;
    };
    let f = Fixture::new();
    let path = kit::write_pinned_spec(&f, "units.json", &spec(UNITS));
    let b = f.build(&path, "units.tar.zst");
    let ours = f.path("ours");
    std::fs::create_dir_all(&ours).unwrap();
    kit::install(&ours, &b, &f.keys.public, &[], &[]).code(0);

    let oracle = f.path("oracle");
    let dir = oracle.join("etc/systemd/system");
    std::fs::create_dir_all(&dir).unwrap();
    let mut names = Vec::new();
    for U(name, content, instances) in UNITS {
        std::fs::write(dir.join(name), content).unwrap();
        if instances.is_empty() {
            names.push((*name).to_owned());
        } else {
            let (prefix, suffix) = name.split_once("@.").unwrap();
            names.extend(instances.iter().map(|i| format!("{prefix}@{i}.{suffix}")));
        }
    }
    let out = Command::new(&systemctl)
        .arg(format!("--root={}", oracle.display()))
        .arg("enable")
        .args(&names)
        .output()
        .unwrap();
    assert!(out.status.success(), "oracle: {out:?}");
    let (o, w) = (links(&oracle), links(&ours));
    assert_eq!(
        o,
        w,
        "links differ from systemctl --root enable\noracle:\n{}\nours:\n{}",
        o.join("\n"),
        w.join("\n")
    );
    assert!(
        w.iter()
            .any(|l| l.contains("multi-user.target.wants/echo@eth0.service"))
    );
    // A re-run changes nothing.
    kit::install(&ours, &b, &f.keys.public, &[], &[])
        .code(0)
        .stdout_has("0 changed");
}

#[test]
fn also_names_a_unit_the_root_has_already() {
    let Some(systemctl) = systemctl() else {
        eprintln!("SKIPPED: no systemctl");
        return;
    };
    let f = Fixture::new();
    let units = [U(
        "app.service",
        "[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\nAlso=helper.socket\n",
        &[],
    )];
    let path = kit::write_pinned_spec(&f, "also.json", &spec(&units));
    let b = f.build(&path, "also.tar.zst");
    let helper = "[Socket]\nListenStream=/run/helper.sock\n[Install]\nWantedBy=sockets.target\n";
    let mut roots = Vec::new();
    for name in ["ours", "oracle"] {
        let r = f.path(name);
        std::fs::create_dir_all(r.join("usr/lib/systemd/system")).unwrap();
        std::fs::write(r.join("usr/lib/systemd/system/helper.socket"), helper).unwrap();
        roots.push(r);
    }
    kit::install(&roots[0], &b, &f.keys.public, &[], &[]).code(0);
    std::fs::create_dir_all(roots[1].join("etc/systemd/system")).unwrap();
    std::fs::write(roots[1].join("etc/systemd/system/app.service"), units[0].1).unwrap();
    let st = Command::new(&systemctl)
        .arg(format!("--root={}", roots[1].display()))
        .args(["enable", "app.service"])
        .output()
        .unwrap();
    assert!(st.status.success(), "{st:?}");
    assert_eq!(links(&roots[1]), links(&roots[0]));
}

#[test]
fn what_systemctl_refuses_is_refused_at_build_time() {
    let f = Fixture::new();
    for (why, units, expected) in [
        (
            "template, no instance, non-template target",
            vec![U(
                "echo@.service",
                "[Install]\nWantedBy=multi-user.target\n",
                &[],
            )],
            "destination unit multi-user.target is a non-template unit",
        ),
        (
            "nothing to enable it by",
            vec![U("static.service", "[Service]\nExecStart=/bin/true\n", &[])],
            "has no installation config",
        ),
        (
            "alias of another type",
            vec![U("a.service", "[Install]\nAlias=a.socket\n", &[])],
            "cannot alias a.service as a.socket",
        ),
        (
            "non-template alias of a template",
            vec![U(
                "t@.service",
                "[Install]\nAlias=plain.service\nDefaultInstance=x\n",
                &[],
            )],
            "a template's alias must be a template",
        ),
        (
            "a machine-dependent specifier",
            vec![U("h.service", "[Install]\nAlias=%H.service\n", &[])],
            "specifier %H",
        ),
        (
            "an invalid WantedBy",
            vec![U("w.service", "[Install]\nWantedBy=bad/name\n", &[])],
            "is not a valid unit name",
        ),
        (
            "instances of a unit that is not a template",
            vec![U(
                "plain.service",
                "[Install]\nWantedBy=multi-user.target\n",
                &["x"],
            )],
            "is not a template unit",
        ),
    ] {
        // Nothing to pin: written as is (`bundler pin` would refuse it too).
        let path = f.path("bad.json");
        std::fs::write(&path, serde_json::to_vec(&spec(&units)).unwrap()).unwrap();
        let out = run(
            &bundler(),
            [
                "build".as_ref(),
                path.as_os_str(),
                "--key".as_ref(),
                f.keys.secret.as_os_str(),
                "--cache".as_ref(),
                f.path("cache").as_os_str(),
                "-o".as_ref(),
                f.path("bad.tar.zst").as_os_str(),
            ],
            &[],
        );
        assert_ne!(out.code, 0, "{why}: built\n{out}");
        out.stderr_has(expected).stderr_has("steps[0]");
        assert!(!f.path("bad.tar.zst").exists(), "{why}: left output");
    }
}

#[test]
fn a_failed_install_takes_the_enable_links_back() {
    let f = Fixture::new();
    let mut s = spec(&UNITS[..4]);
    s["steps"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"kind": "file", "dest": "/etc/x", "content": "x\n"}));
    let path = kit::write_pinned_spec(&f, "fail.json", &s);
    let b = f.build(&path, "fail.tar.zst");
    let root = f.path("root");
    std::fs::create_dir_all(&root).unwrap();
    let before = tree_listing(&root);
    kit::install(
        &root,
        &b,
        &f.keys.public,
        &[],
        &[("INSTALL_BUNDLE_TEST_FAIL_AT", "5")],
    )
    .code(5);
    assert!(diff_listings(&before, &tree_listing(&root)).is_empty());
}
