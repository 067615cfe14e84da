//! What `bundler pin` and `bundler build` accept as an artifact's content,
//! end to end (issue 12, cases 03, 04, 06 and 08): content must fit the step
//! that uses it (an executable for `binary`, an archive the installer's
//! reader reads whole for `extract`, a Debian package for `debs`); a proxy's
//! HTML page answered with `200 OK` is refused, naming the URL, the
//! Content-Type and the first bytes; a content-encoded response is named as
//! the cause of a mismatch; archives GNU tar reads (V7 included) build and
//! install, and `strip_components` counts like GNU tar.

use std::path::{Path, PathBuf};
use std::process::Command;

use bundle_tests::cli::{Keys, Output, bundler, keygen, run};
use bundle_tests::fixture::make_deb;
use bundle_tests::kit;
use bundle_tests::server::{Behavior, Server};

const PAGE: &[u8] = b"<!DOCTYPE html>\n<html><head><title>Access Denied</title></head><body>\
<h1>Access denied by corporate proxy</h1><p>policy</p></body></html>\n";

struct Setup {
    dir: tempfile::TempDir,
    keys: Keys,
    server: Server,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let keys = keygen(dir.path(), "release");
        Self {
            dir,
            keys,
            server: Server::start(),
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Writes `spec.json` with these artifacts (name, URL, optional sha256,
    /// optional size) and steps.
    fn spec(
        &self,
        artifacts: &[(&str, String, Option<String>, Option<usize>)],
        steps: serde_json::Value,
    ) -> PathBuf {
        let mut arts = serde_json::Map::new();
        for (name, url, sha, size) in artifacts {
            let mut a = serde_json::json!({ "url": url });
            if let Some(sha) = sha {
                a["sha256"] = sha.as_str().into();
            }
            if let Some(size) = size {
                a["size"] = (*size).into();
            }
            arts.insert((*name).to_owned(), a);
        }
        let spec = serde_json::json!({
            "apiVersion": "bundle/v1", "name": "content", "version": "1", "serial": 1,
            "target": { "os": "linux", "arch": "amd64" },
            "artifacts": arts, "steps": steps,
        });
        let path = self.path("spec.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
        path
    }

    fn pin(&self, spec: &Path) -> Output {
        run(
            &bundler(),
            [
                "pin".as_ref(),
                spec.as_os_str(),
                "--cache".as_ref(),
                self.path("cache").as_os_str(),
                "--retries".as_ref(),
                "0".as_ref(),
                "--quiet".as_ref(),
            ],
            &[],
        )
    }

    fn build(&self, spec: &Path) -> Output {
        run(
            &bundler(),
            [
                "build".as_ref(),
                spec.as_os_str(),
                "--key".as_ref(),
                self.keys.secret.as_os_str(),
                "--cache".as_ref(),
                self.path("cache").as_os_str(),
                "-o".as_ref(),
                self.path("out.tar.zst").as_os_str(),
                "--retries".as_ref(),
                "0".as_ref(),
                "--quiet".as_ref(),
            ],
            &[],
        )
    }

    fn html(&self, path: &str) -> String {
        self.server.route(
            path,
            Behavior::Headers {
                content_type: "text/html; charset=utf-8".into(),
                headers: vec![],
                body: PAGE.to_vec(),
            },
        );
        self.server.url(path)
    }
}

fn sha(data: &[u8]) -> String {
    kit::sha256_hex(data)
}

#[track_caller]
fn sh(script: &str, dir: &Path) {
    let status = Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(status.success(), "{script}");
}

/// Case 08: a proxy's "access denied" page answered with 200 for a binary, an
/// archive and a .deb is refused by `pin`, for all three at once, and the
/// spec is left byte for byte as it was.
#[test]
fn pin_refuses_an_html_error_page_for_binary_extract_and_debs_and_keeps_the_spec() {
    let s = Setup::new();
    let kubectl = s.html("/release/v1.30.0/bin/linux/amd64/kubectl");
    let cni = s.html("/cni-plugins-linux-amd64-v1.4.0.tgz");
    let socat = s.html("/pool/main/s/socat/socat_1.7.4.4-2_amd64.deb");
    let spec = s.spec(
        &[
            ("kubectl", kubectl.clone(), None, None),
            ("cni-plugins", cni.clone(), None, None),
            ("socat", socat.clone(), None, None),
        ],
        serde_json::json!([
            {"kind": "debs", "artifacts": ["socat"]},
            {"kind": "binary", "artifact": "kubectl", "dest": "/usr/local/bin/kubectl"},
            {"kind": "extract", "artifact": "cni-plugins", "dest": "/opt/cni/bin"},
        ]),
    );
    let before = std::fs::read(&spec).unwrap();
    let out = s.pin(&spec);
    out.code(1);
    assert_eq!(out.stdout, "", "{out}");
    for (name, url, needs) in [
        (
            "kubectl",
            &kubectl,
            "the binary step installing /usr/local/bin/kubectl: with mode 0755 it must be an ELF executable or a script (#! or plain text)",
        ),
        (
            "cni-plugins",
            &cni,
            "the extract step into /opt/cni/bin: it must be a tar, tar.gz, tar.xz or tar.zst archive",
        ),
        (
            "socat",
            &socat,
            "the debs step: it must be a Debian package (.deb)",
        ),
    ] {
        out.stderr_has(&format!("artifact {name} does not fit {needs}"))
            .stderr_has(&format!(
                "received from {url} with Content-Type: text/html; charset=utf-8"
            ));
    }
    out.stderr_has(
        r#"but the content is an HTML page (starts with "<!DOCTYPE html>\n<html><head><title>Access Denied...")"#,
    )
    .stderr_has("nothing was pinned and the spec is unchanged");
    assert_eq!(std::fs::read(&spec).unwrap(), before, "the spec changed");
}

/// Case 08, the other half: a spec already pinned to an error page (by an
/// older bundler, or by hand) does not build: the binary would have been
/// installed as /usr/local/bin/kubectl.
#[test]
fn build_refuses_a_binary_pinned_to_an_html_page_and_writes_nothing() {
    let s = Setup::new();
    let url = s.html("/kubectl");
    let spec = s.spec(
        &[("kubectl", url.clone(), Some(sha(PAGE)), Some(PAGE.len()))],
        serde_json::json!([{"kind": "binary", "artifact": "kubectl", "dest": "/usr/local/bin/kubectl"}]),
    );
    let out = s.build(&spec);
    out.code(1)
        .stderr_has(
            "artifact kubectl does not fit the binary step installing /usr/local/bin/kubectl",
        )
        .stderr_has("an HTML page")
        .stderr_has(&format!("received from {url} with Content-Type: text/html"))
        .stderr_has("the pin itself is wrong");
    assert_eq!(out.stdout, "");
    assert!(!s.path("out.tar.zst").exists());
}

/// What fits is pinned: an ELF executable and a script for `binary`, a data
/// file for a non-executable `binary`, a real tar.gz for `extract` and a
/// real .deb (made by dpkg-deb) for `debs`.
#[test]
fn pin_accepts_executables_archives_and_debian_packages() {
    let s = Setup::new();
    let elf = std::fs::read("/bin/true").unwrap();
    let script = b"#!/bin/sh\necho hi\n".to_vec();
    // A shell script without #! (old tarballs have them): plain text.
    let plain = b"echo hi\n".to_vec();
    std::fs::create_dir_all(s.path("src/bin")).unwrap();
    std::fs::write(s.path("src/bin/tool"), &script).unwrap();
    sh("tar -C src -czf tool.tgz .", s.dir.path());
    let tgz = std::fs::read(s.path("tool.tgz")).unwrap();
    let deb = std::fs::read(make_deb(
        s.dir.path(),
        "hello",
        "1.0",
        None,
        ("usr/share/hello/README", "hi\n"),
    ))
    .unwrap();
    for (path, body) in [
        ("/elf", &elf),
        ("/script", &script),
        ("/plain", &plain),
        ("/data", &PAGE.to_vec()),
        ("/tool.tgz", &tgz),
        ("/hello.deb", &deb),
    ] {
        s.server.route(path, Behavior::Body(body.clone()));
    }
    let spec = s.spec(
        &[
            ("elf", s.server.url("/elf"), None, None),
            ("script", s.server.url("/script"), None, None),
            ("plain", s.server.url("/plain"), None, None),
            ("page", s.server.url("/data"), None, None),
            ("tool", s.server.url("/tool.tgz"), None, None),
            ("hello", s.server.url("/hello.deb"), None, None),
        ],
        serde_json::json!([
            {"kind": "debs", "artifacts": ["hello"]},
            {"kind": "binary", "artifact": "elf", "dest": "/usr/local/bin/elf"},
            {"kind": "binary", "artifact": "script", "dest": "/usr/local/bin/script"},
            {"kind": "binary", "artifact": "plain", "dest": "/usr/local/bin/plain"},
            {"kind": "binary", "artifact": "page", "dest": "/usr/share/doc/page.html", "mode": "0644"},
            {"kind": "extract", "artifact": "tool", "dest": "/opt/tool", "strip_components": 1},
        ]),
    );
    let out = s.pin(&spec);
    out.code(0).stderr_empty();
    let pinned: serde_json::Value = serde_json::from_slice(&std::fs::read(&spec).unwrap()).unwrap();
    for (name, body) in [
        ("elf", &elf),
        ("script", &script),
        ("plain", &plain),
        ("tool", &tgz),
        ("hello", &deb),
    ] {
        assert_eq!(pinned["artifacts"][name]["sha256"], sha(body), "{name}");
    }
    s.build(&spec).code(0);
}

/// Case 06: a server that compresses the pinned file on the fly
/// (`Content-Encoding: gzip`) makes a mismatch; the error says so and what
/// to do, with and without a pinned size.
#[test]
fn content_encoded_response_is_named_as_the_cause_of_a_mismatch() {
    let s = Setup::new();
    let mut runc = b"#!/bin/sh\necho runc\n".to_vec();
    runc.extend((0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8));
    std::fs::write(s.path("runc"), &runc).unwrap();
    sh("gzip -n -c < runc > runc.gz", s.dir.path());
    let gz = std::fs::read(s.path("runc.gz")).unwrap();
    s.server.route(
        "/broken/runc",
        Behavior::Headers {
            content_type: "application/octet-stream".into(),
            headers: vec![("Content-Encoding".into(), "gzip".into())],
            body: gz.clone(),
        },
    );
    let url = s.server.url("/broken/runc");
    let steps =
        serde_json::json!([{"kind": "binary", "artifact": "runc", "dest": "/usr/local/bin/runc"}]);
    for size in [None, Some(runc.len())] {
        let spec = s.spec(
            &[("runc", url.clone(), Some(sha(&runc)), size)],
            steps.clone(),
        );
        let out = s.build(&spec);
        out.code(1)
            .stderr_has(&url)
            .stderr_has("the response had Content-Encoding: gzip")
            .stderr_has("bundler does not decode")
            .stderr_has("fix the server or proxy to send the file as it is");
        if size.is_none() {
            out.stderr_has(&format!("expected {}, got {}", sha(&runc), sha(&gz)));
        } else {
            out.stderr_has(&format!(
                "has {} bytes, not the declared {}",
                gz.len(),
                runc.len()
            ));
        }
        assert!(!s.path("out.tar.zst").exists());
        kit::assert_cache_verified(&s.path("cache"));
    }
    // Without Content-Encoding the same mismatch says nothing about it.
    s.server.route("/plain/runc", Behavior::Body(gz.clone()));
    let spec = s.spec(
        &[("runc", s.server.url("/plain/runc"), Some(sha(&runc)), None)],
        steps.clone(),
    );
    let out = s.build(&spec);
    out.code(1).stderr_has("sha256 mismatch");
    assert!(!out.stderr.contains("Content-Encoding"), "{out}");
    // Pinned as raw bytes by `pin`, the encoded body is refused for what it
    // is, and the encoding is named.
    let spec = s.spec(&[("runc", url.clone(), None, None)], steps);
    let out = s.pin(&spec);
    out.code(1)
        .stderr_has("but the content is gzip-compressed data")
        .stderr_has("Content-Encoding: gzip (bundler does not decode it");
}

/// Case 04 (a): a plain tar in the old V7 format (no "ustar" magic) builds
/// and installs the same tree as GNU tar extracts.
#[test]
fn v7_tar_builds_and_installs_like_gnu_tar_extracts_it() {
    let s = Setup::new();
    sh(
        "mkdir -p src/authservice/bin && echo bin > src/authservice/bin/authservice && \
         chmod 755 src/authservice/bin/authservice && \
         tar --owner=0 --group=0 -C src --format=v7 -cf v7.tar authservice && \
         mkdir T && tar -xf v7.tar -C T",
        s.dir.path(),
    );
    let spec = s.spec(
        &[("as", "file:v7.tar".into(), None, None)],
        serde_json::json!([{"kind": "extract", "artifact": "as", "dest": "/opt/as"}]),
    );
    s.pin(&spec).code(0);
    s.build(&spec).code(0);
    let root = s.path("root");
    std::fs::create_dir(&root).unwrap();
    kit::install(&root, &s.path("out.tar.zst"), &s.keys.public, &["-q"], &[]).code(0);
    let installed = root.join("opt/as/authservice/bin/authservice");
    assert_eq!(std::fs::read(&installed).unwrap(), b"bin\n");
    let expected = bundle_tests::tree::tree_listing(&s.path("T"));
    let got = bundle_tests::tree::tree_listing(&root.join("opt/as"));
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
}

/// Case 04 (b): a gzip-compressed HTML page used by an extract step does not
/// build (it used to build and fail on the host with "failed to read entire
/// block"); the message names what the content is.
#[test]
fn gzipped_html_page_for_an_extract_step_does_not_build() {
    let s = Setup::new();
    std::fs::write(s.path("page.html"), PAGE).unwrap();
    sh("gzip -c < page.html > page.html.gz", s.dir.path());
    let spec = s.spec(
        &[("as", "file:page.html.gz".into(), None, None)],
        serde_json::json!([{"kind": "extract", "artifact": "as", "dest": "/opt/as"}]),
    );
    let before = std::fs::read(&spec).unwrap();
    let out = s.pin(&spec);
    out.code(1)
        .stderr_has("artifact as does not fit the extract step into /opt/as")
        .stderr_has("but the content is gzip-compressed data holding an HTML page")
        .stderr_has("read from file:");
    assert_eq!(std::fs::read(&spec).unwrap(), before);
    // Pinned by hand, `build` refuses it the same way.
    let gz = std::fs::read(s.path("page.html.gz")).unwrap();
    let spec = s.spec(
        &[("as", "file:page.html.gz".into(), Some(sha(&gz)), None)],
        serde_json::json!([{"kind": "extract", "artifact": "as", "dest": "/opt/as"}]),
    );
    let out = s.build(&spec);
    out.code(1)
        .stderr_has("gzip-compressed data holding an HTML page")
        .stderr_has("nothing was built");
    assert!(!s.path("out.tar.zst").exists());
}

/// Build reads every archive whole with the installer's reader: an archive
/// whose include globs select nothing, or that holds a member the installer
/// refuses, does not build either.
#[test]
fn build_refuses_archives_the_installer_would_refuse() {
    let s = Setup::new();
    sh(
        "mkdir -p src/bin && echo x > src/bin/tool && ln -s /etc/shadow src/bin/evil && \
         tar -C src -czf evil.tgz . && tar -C src -czf good.tgz ./bin/tool",
        s.dir.path(),
    );
    let spec = s.spec(
        &[("t", "file:evil.tgz".into(), None, None)],
        serde_json::json!([{"kind": "extract", "artifact": "t", "dest": "/opt/t"}]),
    );
    s.pin(&spec)
        .code(1)
        .stderr_has("member \"./bin/evil\" refused")
        .stderr_has("absolute path");
    let spec = s.spec(
        &[("t", "file:good.tgz".into(), None, None)],
        serde_json::json!([{"kind": "extract", "artifact": "t", "dest": "/opt/t", "include": ["sbin/*"]}]),
    );
    s.pin(&spec)
        .code(1)
        .stderr_has("include globs [\"sbin/*\"] matched no member of t");
}

/// Case 03: `tar -C src -czf x.tgz .` holds `./dist/pkg/spf`; with
/// strip_components 1 the installer writes `dist/pkg/spf`, as GNU tar does,
/// and the CNI layout (`./bridge`) with 1 installs `bridge`.
#[test]
fn dot_prefixed_archives_with_strip_components_install_like_gnu_tar() {
    let s = Setup::new();
    sh(
        "mkdir -p src/dist/pkg cni && echo spf > src/dist/pkg/spf && chmod 755 src/dist/pkg/spf && \
         printf '#!/bin/sh\\n' > cni/bridge && printf '#!/bin/sh\\n' > cni/loopback && \
         tar --owner=0 --group=0 -C src -czf spf.tgz . && tar --owner=0 --group=0 -C cni -czf cni.tgz . && \
         mkdir T1 T2 && tar -x --strip-components=1 -C T1 -f spf.tgz && \
         tar -x --strip-components=1 -C T2 -f cni.tgz",
        s.dir.path(),
    );
    let spec = s.spec(
        &[
            ("spf", "file:spf.tgz".into(), None, None),
            ("cni", "file:cni.tgz".into(), None, None),
        ],
        serde_json::json!([
            {"kind": "extract", "artifact": "spf", "dest": "/opt/x", "strip_components": 1},
            {"kind": "extract", "artifact": "cni", "dest": "/opt/cni/bin", "strip_components": 1},
        ]),
    );
    s.pin(&spec).code(0);
    s.build(&spec).code(0);
    let root = s.path("root");
    std::fs::create_dir(&root).unwrap();
    kit::install(&root, &s.path("out.tar.zst"), &s.keys.public, &["-q"], &[]).code(0);
    for (tar_out, dest) in [("T1", "opt/x"), ("T2", "opt/cni/bin")] {
        let expected = bundle_tests::tree::tree_listing(&s.path(tar_out));
        let got = bundle_tests::tree::tree_listing(&root.join(dest));
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            expected.keys().collect::<Vec<_>>(),
            "{dest}"
        );
    }
    assert!(root.join("opt/x/dist/pkg/spf").is_file());
    assert!(root.join("opt/cni/bin/bridge").is_file());
}
