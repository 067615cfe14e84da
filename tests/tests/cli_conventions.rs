//! CLI conventions (issue 14): shell completions for bash, zsh and fish and
//! man pages generated from the clap definitions, and every subcommand's
//! `--help` ending with real examples.

use std::path::Path;

use bundle_tests::cli::{bundler, run};

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
    for sub in BUNDLER_SUBCOMMANDS {
        let out = run(&bundler(), [sub, &"--help"], &[]);
        out.code(0);
        let tail = out.stdout.rsplit("Examples:").next().unwrap();
        assert!(
            out.stdout.contains("\nExamples:\n") && tail.contains(&format!("bundler {sub}")),
            "bundler {sub} --help has no examples of itself at its end:\n{}",
            out.stdout
        );
    }
}

#[test]
fn bundler_completions_are_valid_scripts_for_each_shell() {
    let dir = tempfile::tempdir().unwrap();
    for (shell, marker) in [
        ("bash", "complete -F _bundler"),
        ("zsh", "#compdef bundler"),
        ("fish", "complete -c bundler"),
    ] {
        let out = run(&bundler(), ["completions", shell], &[]);
        out.code(0).stderr_empty().stdout_has(marker);
        // Every subcommand is completed.
        for sub in BUNDLER_SUBCOMMANDS {
            out.stdout_has(sub);
        }
        if shell == "bash" {
            let script = dir.path().join("bundler.bash");
            std::fs::write(&script, &out.stdout).unwrap();
            let check = std::process::Command::new("bash")
                .arg("-n")
                .arg(&script)
                .output()
                .unwrap();
            assert!(check.status.success(), "{check:?}");
        }
    }
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
    for sub in INSTALLER_SUBCOMMANDS {
        let out = run(&bundle_tests::cli::installer(), [sub, &"--help"], &[]);
        out.code(0);
        let tail = out.stdout.rsplit("Examples:").next().unwrap();
        assert!(
            out.stdout.contains("\nExamples:\n") && tail.contains(&format!("install-bundle {sub}")),
            "install-bundle {sub} --help has no examples of itself at its end:\n{}",
            out.stdout
        );
    }
}

#[test]
fn install_bundle_completions_cover_every_subcommand_in_each_shell() {
    let dir = tempfile::tempdir().unwrap();
    for (shell, marker) in [
        ("bash", "complete -F _install__bundle"),
        ("zsh", "#compdef install-bundle"),
        ("fish", "complete -c install-bundle"),
    ] {
        let out = run(&bundle_tests::cli::installer(), ["completions", shell], &[]);
        out.code(0).stderr_empty().stdout_has(marker);
        for sub in INSTALLER_SUBCOMMANDS {
            out.stdout_has(sub);
        }
        out.stdout_has("trusted-key");
        if shell == "bash" {
            let script = dir.path().join("install-bundle.bash");
            std::fs::write(&script, &out.stdout).unwrap();
            let check = std::process::Command::new("bash")
                .arg("-n")
                .arg(&script)
                .output()
                .unwrap();
            assert!(check.status.success(), "{check:?}");
        }
    }
}
