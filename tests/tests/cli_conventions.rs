//! CLI conventions (issue 14): shell completions for bash, zsh and fish and
//! man pages generated from the clap definitions, and every subcommand's
//! `--help` ending with real examples.

use std::path::Path;

use bundle_tests::cli::{Output, bundler, installer, run};

/// `PROGRAM SUB --help` for each of `subs` exits 0 and ends with an
/// "Examples:" section that shows `PROGRAM SUB`.
fn assert_help_ends_with_examples(bin: &Path, program: &str, subs: &[&str]) {
    for sub in subs {
        let out = run(bin, [sub, &"--help"], &[]);
        out.code(0);
        let tail = out.stdout.rsplit("Examples:").next().unwrap();
        assert!(
            out.stdout.contains("\nExamples:\n") && tail.contains(&format!("{program} {sub}")),
            "{program} {sub} --help has no examples of itself at its end:\n{}",
            out.stdout
        );
    }
}

/// `PROGRAM completions SHELL` for bash, zsh and fish: exit 0, nothing on
/// stderr, the shell's own marker, every one of `subs`; the bash script
/// parses (`bash -n`). Returns the three outputs.
fn assert_completions(bin: &Path, program: &str, subs: &[&str], markers: [&str; 3]) -> Vec<Output> {
    let dir = tempfile::tempdir().unwrap();
    let mut outs = Vec::new();
    for (shell, marker) in ["bash", "zsh", "fish"].into_iter().zip(markers) {
        let out = run(bin, ["completions", shell], &[]);
        out.code(0).stderr_empty().stdout_has(marker);
        for sub in subs {
            out.stdout_has(sub);
        }
        if shell == "bash" {
            let script = dir.path().join(format!("{program}.bash"));
            std::fs::write(&script, &out.stdout).unwrap();
            let check = std::process::Command::new("bash")
                .arg("-n")
                .arg(&script)
                .output()
                .unwrap();
            assert!(check.status.success(), "{check:?}");
        }
        outs.push(out);
    }
    outs
}

const BUNDLER_SUBCOMMANDS: &[&str] = &[
    "build",
    "pin",
    "lock",
    "keygen",
    "verify",
    "sbom",
    "split",
    "push",
    "pull",
    "join",
    "diff",
    "completions",
    "inspect",
];

#[test]
fn every_bundler_subcommand_help_ends_with_examples() {
    assert_help_ends_with_examples(&bundler(), "bundler", BUNDLER_SUBCOMMANDS);
}

#[test]
fn bundler_completions_are_valid_scripts_for_each_shell() {
    assert_completions(
        &bundler(),
        "bundler",
        BUNDLER_SUBCOMMANDS,
        [
            "complete -F _bundler",
            "#compdef bundler",
            "complete -c bundler",
        ],
    );
    run(&bundler(), ["completions", "tcsh"], &[])
        .code(2)
        .stderr_has("invalid value 'tcsh'");
}

#[test]
fn man_pages_cover_bundler_and_each_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("man");
    run(
        &bundler(),
        ["man".as_ref(), "--out".as_ref(), out.as_os_str()],
        &[],
    )
    .code(0);
    let page = |name: &str| std::fs::read_to_string(out.join(format!("{name}.1"))).unwrap();
    assert!(page("bundler").contains(".TH BUNDLER 1"));
    for sub in BUNDLER_SUBCOMMANDS {
        let p = page(&format!("bundler-{sub}"));
        assert!(
            p.contains(&format!(".TH BUNDLER-{} 1", sub.to_uppercase())),
            "{sub}: {}",
            &p[..200.min(p.len())]
        );
        assert!(p.contains("Examples:"), "bundler-{sub}.1 has no examples");
    }
    assert!(!Path::new(&out.join("bundler-man.1")).exists());
}

const INSTALLER_SUBCOMMANDS: &[&str] = &[
    "verify",
    "status",
    "plan",
    "recover",
    "install",
    "stage",
    "apply",
    "unstage",
    "completions",
];

#[test]
fn every_install_bundle_subcommand_help_ends_with_examples() {
    assert_help_ends_with_examples(&installer(), "install-bundle", INSTALLER_SUBCOMMANDS);
}

#[test]
fn install_bundle_completions_cover_every_subcommand_in_each_shell() {
    for out in assert_completions(
        &installer(),
        "install-bundle",
        INSTALLER_SUBCOMMANDS,
        [
            "complete -F _install__bundle",
            "#compdef install-bundle",
            "complete -c install-bundle",
        ],
    ) {
        out.stdout_has("trusted-key");
    }
}

#[test]
fn build_quiet_prints_nothing_but_errors() {
    let f = bundle_tests::fixture::Fixture::new();
    let spec = f.write_spec("spec.json", 1, &[]);
    let out = run(
        &bundler(),
        [
            "build".as_ref(),
            spec.as_os_str(),
            "--key".as_ref(),
            f.keys.secret.as_os_str(),
            "--cache".as_ref(),
            f.path("cache").as_os_str(),
            "-o".as_ref(),
            f.path("w.tar.zst").as_os_str(),
            "--quiet".as_ref(),
        ],
        &[],
    );
    out.code(0);
    assert_eq!(
        (out.stdout.as_str(), out.stderr.as_str()),
        ("", ""),
        "{out}"
    );
    assert!(f.path("w.tar.zst").exists());
    // verify and pin too.
    for args in [
        vec![
            "verify".into(),
            f.path("w.tar.zst").into_os_string(),
            "--key".into(),
            f.keys.public.clone().into_os_string(),
            "--quiet".into(),
        ],
        vec![
            "pin".into(),
            spec.clone().into_os_string(),
            "--cache".into(),
            f.path("cache").into_os_string(),
            "--quiet".into(),
        ],
    ] {
        let out = run(&bundler(), args, &[]);
        out.code(0);
        assert_eq!(
            (out.stdout.as_str(), out.stderr.as_str()),
            ("", ""),
            "{out}"
        );
    }
    // An error still says what is wrong.
    let out = run(
        &bundler(),
        [
            "build".as_ref(),
            f.path("missing.json").as_os_str(),
            "--key".as_ref(),
            f.keys.secret.as_os_str(),
            "--quiet".as_ref(),
        ],
        &[],
    );
    assert_ne!(out.code, 0);
    assert_eq!(out.stdout, "");
    assert!(out.stderr.contains("missing.json"), "{out}");
}

/// `bundler build` on a terminal (a pty from `script`) while a download
/// trickles in, with `NO_COLOR` set or not: the raw terminal output.
fn build_on_a_terminal(f: &bundle_tests::fixture::Fixture, no_color: bool, tag: &str) -> String {
    let spec = f.path("slow.json");
    let cmd = format!(
        "{} build {} --key {} --cache {} -o {}",
        bundler().display(),
        spec.display(),
        f.keys.secret.display(),
        f.path(&format!("cache-{tag}")).display(),
        f.path(&format!("{tag}.tar.zst")).display(),
    );
    let mut c = std::process::Command::new("script");
    c.args(["-qec", &cmd, "/dev/null"])
        .env("TERM", "xterm-256color");
    if no_color {
        c.env("NO_COLOR", "1");
    } else {
        c.env_remove("NO_COLOR");
    }
    let out = c.output().expect("script (util-linux)");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn progress_bars_on_a_terminal_are_colored_unless_no_color_is_set() {
    let f = bundle_tests::fixture::Fixture::new();
    let server = bundle_tests::server::Server::start();
    let mut body = b"#!/bin/sh\necho slow\n".to_vec();
    body.extend(std::iter::repeat_n(b"# padding\n".as_slice(), 30_000).flatten());
    server.route(
        "/slow.bin",
        bundle_tests::server::Behavior::Trickle {
            body,
            bytes_per_sec: 250_000,
        },
    );
    let spec = serde_json::json!({
        "apiVersion": "bundle/v1", "name": "slow", "version": "1", "serial": 1,
        "target": {"os": "linux", "arch": "amd64"},
        "artifacts": {"slow": {"url": server.url("slow.bin")}},
        "steps": [{"kind": "binary", "artifact": "slow", "dest": "/usr/local/bin/slow", "mode": "0755"}],
    });
    bundle_tests::kit::write_pinned_spec(&f, "slow.json", &spec);
    // SGR sequences that set a color or bold (cursor movement is fine).
    let colored = |t: &str| {
        ["\x1b[1m", "\x1b[32m", "\x1b[36m", "\x1b[34m"]
            .iter()
            .any(|c| t.contains(c))
    };
    let plain = build_on_a_terminal(&f, true, "plain");
    assert!(plain.contains("built slow 1"), "{plain:?}");
    assert!(!colored(&plain), "NO_COLOR=1 but colors: {plain:?}");
    let color = build_on_a_terminal(&f, false, "color");
    assert!(colored(&color), "no colors on a terminal: {color:?}");
}
