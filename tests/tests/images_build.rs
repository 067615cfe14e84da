//! Container images on the build side (issue 10): `bundler pin` resolves a
//! ref to the digest the registry serves, `bundler build` pulls the target
//! platform's blobs from real registries (Debian's docker-registry on
//! loopback: plain, TLS with htpasswd, token authentication) into the cache
//! and packs each image as an OCI layout tar, and refuses a bundle whose
//! files name a sandbox image it does not carry.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use bundle_tests::cli::{Keys, Output, bundler, keygen, run};
use bundle_tests::kit;
use bundle_tests::oci::{TestImage, sha256};
use bundle_tests::registry::{self, Registry};

struct Setup {
    dir: tempfile::TempDir,
    keys: Keys,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let keys = keygen(dir.path(), "release");
        Self { dir, keys }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// `spec.json` with these images (`name → {"ref", optional "digest",
    /// optional "mirrors"}`), an images step for all, and `steps` after it.
    fn spec(&self, images: serde_json::Value, steps: &[serde_json::Value]) -> PathBuf {
        let names: Vec<String> = images.as_object().unwrap().keys().cloned().collect();
        let mut all = vec![serde_json::json!({"kind": "images", "images": names, "pin": true})];
        all.extend(steps.iter().cloned());
        if names.is_empty() {
            all.remove(0);
        }
        let spec = serde_json::json!({
            "apiVersion": "bundle/v1", "name": "images", "version": "1", "serial": 1,
            "target": {"os": "linux", "arch": "amd64"},
            "variables": {"SANDBOX": {"default": "registry.k8s.io/pause:3.9"}, "OTHER": {}},
            "images": images, "steps": all,
        });
        let path = self.path("spec.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
        path
    }

    /// Runs bundler with HOME in the test directory (no ~/.docker of the
    /// machine), the cache in it, and no retries unless `args` say so.
    fn bundler(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let home = self.path("home");
        std::fs::create_dir_all(&home).unwrap();
        let mut argv: Vec<OsString> = args.iter().map(OsString::from).collect();
        argv.push("--cache".into());
        argv.push(self.path("cache").into());
        if !args.contains(&"--retries") {
            argv.extend(["--retries".into(), "0".into()]);
        }
        let home = home.display().to_string();
        let mut env: Vec<(&str, &str)> = env.to_vec();
        env.push(("HOME", &home));
        run(&bundler(), argv, &env)
    }

    fn build(&self, spec: &Path, out: &str, extra: &[&str], env: &[(&str, &str)]) -> Output {
        let spec = spec.display().to_string();
        let out = self.path(out).display().to_string();
        let key = self.keys.secret.display().to_string();
        let mut args = vec!["build", &spec, "--key", &key, "-o", &out];
        args.extend_from_slice(extra);
        self.bundler(&args, env)
    }

    fn pin(&self, spec: &Path, extra: &[&str]) -> Output {
        let spec = spec.display().to_string();
        let mut args = vec!["pin", &spec];
        args.extend_from_slice(extra);
        self.bundler(&args, &[])
    }

    /// Every object of the cache, checked: its content hashes to its name.
    fn cache_objects(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let Ok(dir) = std::fs::read_dir(self.path("cache/sha256")) else {
            return out;
        };
        for e in dir {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            let bytes = std::fs::read(e.path()).unwrap();
            assert_eq!(
                sha256(&bytes),
                format!("sha256:{name}"),
                "a bad object in the cache"
            );
            out.insert(format!("sha256:{name}"));
        }
        out
    }
}

/// The entries (name, data) of an image's layout tar.
fn layout_entries(tar_bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut archive = tar::Archive::new(tar_bytes);
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut data).unwrap();
        out.push((name, data));
    }
    out
}

/// The artifact `name` of a bundle.
fn artifact(bundle: &Path, name: &str) -> Vec<u8> {
    kit::read_entries(bundle)
        .into_iter()
        .find(|e| e.name() == format!("artifacts/{name}"))
        .unwrap_or_else(|| panic!("no artifacts/{name} in {}", bundle.display()))
        .data
}

fn manifest(bundle: &Path) -> serde_json::Value {
    kit::manifest_json(&kit::read_entries(bundle))
}

/// The blob names a layout must hold for the amd64 image of `image`.
fn amd64_blobs(image: &TestImage) -> BTreeSet<String> {
    let p = image.platform("amd64").unwrap();
    let mut want: BTreeSet<String> = [&image.root, &p.manifest, &p.config]
        .into_iter()
        .chain(&p.layers)
        .map(|b| format!("blobs/sha256/{}", b.hex()))
        .collect();
    want.insert("blobs/sha256/".into());
    want
}

#[test]
fn pin_resolves_an_unpinned_ref_to_the_digest_the_registry_serves() {
    if Registry::skip() {
        return;
    }
    let registry = Registry::plain();
    let image = TestImage::two_platform("pinned");
    image.push(&registry, "team/app", "1.0");
    let s = Setup::new();
    let reference = format!("{}/team/app:1.0", registry.host());
    let spec = s.spec(serde_json::json!({"app": {"ref": reference}}), &[]);

    let out = s.pin(&spec, &[]);
    out.code(0).stderr_progress_only().stdout_has(&format!(
        "pinned image app: {reference} is {} (manifest {}; from {reference})",
        image.digest(),
        image.platform("amd64").unwrap().manifest.digest
    ));
    let pinned: serde_json::Value = serde_json::from_slice(&std::fs::read(&spec).unwrap()).unwrap();
    assert_eq!(pinned["images"]["app"]["digest"], image.digest());
    assert_eq!(pinned["images"]["app"]["ref"], reference);
    // Nothing else changed.
    let mut expected: serde_json::Value = pinned.clone();
    expected["images"]["app"]
        .as_object_mut()
        .unwrap()
        .remove("digest");
    let before = s.spec(serde_json::json!({"app": {"ref": reference}}), &[]);
    let before: serde_json::Value =
        serde_json::from_slice(&std::fs::read(before).unwrap()).unwrap();
    assert_eq!(expected, before);

    // Pinned already: nothing to do, no change.
    std::fs::write(&spec, serde_json::to_vec_pretty(&pinned).unwrap()).unwrap();
    let bytes = std::fs::read(&spec).unwrap();
    s.pin(&spec, &[])
        .code(0)
        .stdout_has("every artifact is already pinned");
    assert_eq!(std::fs::read(&spec).unwrap(), bytes);
}

#[test]
fn pin_of_a_tag_the_registry_lacks_fails_naming_image_and_ref_and_leaves_the_spec_alone() {
    if Registry::skip() {
        return;
    }
    let registry = Registry::plain();
    TestImage::single("x").push(&registry, "team/app", "1.0");
    let s = Setup::new();
    let reference = format!("{}/team/app:9.9", registry.host());
    let spec = s.spec(serde_json::json!({"app": {"ref": reference}}), &[]);
    let before = std::fs::read(&spec).unwrap();
    let out = s.pin(&spec, &[]);
    out.code(1)
        .stderr_has(&format!("image app: cannot resolve {reference}"))
        .stderr_has(&format!("{} has no such manifest", registry.host()));
    assert_eq!(out.stdout, "");
    assert_eq!(std::fs::read(&spec).unwrap(), before, "spec changed");
}

#[test]
fn build_from_a_plain_registry_carries_only_the_target_platform() {
    if Registry::skip() {
        return;
    }
    let registry = Registry::plain();
    let multi = TestImage::two_platform("hello from app");
    multi.push(&registry, "team/app", "1.0");
    let single = TestImage::single("hello from tool");
    single.push(&registry, "tool", "2");
    let s = Setup::new();
    let app_ref = format!("{}/team/app:1.0", registry.host());
    let tool_ref = format!("{}/tool:2", registry.host());
    let spec = s.spec(
        serde_json::json!({
            "app": {"ref": app_ref, "digest": multi.digest()},
            "tool": {"ref": tool_ref, "digest": single.digest()},
        }),
        // containerd's config names a sandbox image the bundle carries.
        &[serde_json::json!({"kind": "file", "dest": "/etc/containerd/config.toml",
            "content": format!("version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"{tool_ref}\"\n")})],
    );
    let out = s.build(&spec, "out.tar.zst", &[], &[]);
    out.code(0)
        .stderr_progress_only()
        .stdout_has(&format!(
            "image app {app_ref}@{} (linux/amd64 manifest {})",
            multi.digest(),
            multi.platform("amd64").unwrap().manifest.digest
        ))
        .stdout_has("2 blob(s) downloaded, 0 from cache")
        .stdout_has("0 artifacts (0 downloaded, 0 from cache), 2 image(s), signed by key");
    let bundle = s.path("out.tar.zst");

    // The manifest: both digests, the platform, the layout as an artifact.
    let m = manifest(&bundle);
    assert_eq!(
        m["images"]["app"],
        serde_json::json!({"ref": app_ref, "digest": multi.digest(),
            "manifest": multi.platform("amd64").unwrap().manifest.digest, "platform": "linux/amd64"})
    );
    assert_eq!(
        m["images"]["tool"],
        serde_json::json!({"ref": tool_ref, "digest": single.digest(),
            "manifest": single.digest(), "platform": "linux/amd64"})
    );
    assert_eq!(
        m["artifacts"]["app"]["url"],
        format!("docker://{}/team/app@{}", registry.host(), multi.digest())
    );

    // The layout: fixed entries, only amd64's blobs (the index too).
    for (name, image, tag) in [("app", &multi, "1.0"), ("tool", &single, "2")] {
        let tar = artifact(&bundle, name);
        assert_eq!(
            sha256(&tar),
            format!(
                "sha256:{}",
                m["artifacts"][name]["sha256"].as_str().unwrap()
            )
        );
        let entries = layout_entries(&tar);
        let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(&names[..3], ["oci-layout", "index.json", "blobs/"]);
        let blobs: BTreeSet<String> = names[3..].iter().map(|n| n.to_string()).collect();
        assert_eq!(blobs, amd64_blobs(image), "{name}");
        let mut sorted = names[4..].to_vec();
        sorted.sort();
        assert_eq!(names[4..], sorted[..], "blobs sorted");
        for (n, data) in &entries {
            if let Some(hex) = n.strip_prefix("blobs/sha256/").filter(|h| !h.is_empty()) {
                assert_eq!(sha256(data), format!("sha256:{hex}"));
            }
        }
        let index: serde_json::Value = serde_json::from_slice(&entries[1].1).unwrap();
        assert_eq!(
            index,
            serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": [{"mediaType": image.root.media_type, "digest": image.digest(), "size": image.root.size(),
                    "annotations": {"io.containerd.image.name": m["images"][name]["ref"],
                                    "org.opencontainers.image.ref.name": tag}}]})
        );
    }
    let arm = multi.platform("arm64").unwrap();
    let tar = artifact(&bundle, "app");
    for b in std::iter::once(&arm.manifest)
        .chain([&arm.config])
        .chain(&arm.layers)
    {
        assert!(
            !layout_entries(&tar)
                .iter()
                .any(|(n, _)| n.ends_with(b.hex())),
            "arm64 blob {} in the bundle",
            b.digest
        );
    }

    // verify and inspect see it like any artifact.
    let public = s.keys.public.display().to_string();
    let path = bundle.display().to_string();
    run(&bundler(), ["verify", &path, "--key", &public], &[])
        .code(0)
        .stdout_has("2 artifacts")
        .stderr_progress_only();
    run(&bundler(), ["inspect", &path, "--key", &public], &[])
        .code(0)
        .stdout_has("images     2")
        .stdout_has(&app_ref)
        .stdout_has(&format!("digest   {}", multi.digest()))
        .stdout_has(&format!(
            "linux/amd64 manifest {}",
            multi.platform("amd64").unwrap().manifest.digest
        ))
        .stderr_progress_only();

    // skopeo, when installed, reads the layout as an OCI archive.
    if std::process::Command::new("skopeo")
        .arg("--version")
        .output()
        .is_ok()
    {
        let file = s.path("app-layout.tar");
        std::fs::write(&file, &tar).unwrap();
        let out = std::process::Command::new("skopeo")
            .args([
                "inspect",
                "--override-arch",
                "amd64",
                "--override-os",
                "linux",
            ])
            .arg(format!("oci-archive:{}:1.0", file.display()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "skopeo: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["Architecture"], "amd64");
        // The digest of what the reference names: the index.
        assert_eq!(v["Digest"], multi.digest(), "{v}");
        assert_eq!(
            v["Layers"][0],
            multi.platform("amd64").unwrap().layers[0].digest
        );
    }
}

#[test]
fn rebuilds_are_byte_identical_and_a_warm_cache_needs_no_registry() {
    if Registry::skip() {
        return;
    }
    let mut registry = Registry::plain();
    let image = TestImage::two_platform("same bytes");
    image.push(&registry, "team/app", "1.0");
    let s = Setup::new();
    let spec = s.spec(
        serde_json::json!({"app": {"ref": format!("{}/team/app:1.0", registry.host()), "digest": image.digest()}}),
        &[],
    );
    let epoch = [("SOURCE_DATE_EPOCH", "1700000000")];
    s.build(&spec, "a.tar.zst", &[], &epoch).code(0);
    let blob_gets = registry.requests_for("/blobs/");
    assert_eq!(
        blob_gets,
        2,
        "config and layer, each once:\n{}",
        registry.log()
    );

    // The registry is gone: the cache has everything.
    registry.stop();
    s.build(&spec, "b.tar.zst", &[], &epoch)
        .code(0)
        .stdout_has("0 blob(s) downloaded, 2 from cache");
    s.build(&spec, "c.tar.zst", &["--offline"], &epoch).code(0);
    let a = std::fs::read(s.path("a.tar.zst")).unwrap();
    assert_eq!(
        a,
        std::fs::read(s.path("b.tar.zst")).unwrap(),
        "rebuild differs"
    );
    assert_eq!(
        a,
        std::fs::read(s.path("c.tar.zst")).unwrap(),
        "offline rebuild differs"
    );
    // The layout's entries carry SOURCE_DATE_EPOCH.
    let layout = artifact(&s.path("a.tar.zst"), "app");
    let mut archive = tar::Archive::new(&layout[..]);
    for e in archive.entries().unwrap() {
        assert_eq!(e.unwrap().header().mtime().unwrap(), 1_700_000_000);
    }
}

#[test]
fn a_tls_registry_needs_its_ca_and_the_credentials_of_the_auth_file() {
    if Registry::skip() {
        return;
    }
    let registry = Registry::tls_htpasswd();
    let image = TestImage::single("over tls");
    image.push(&registry, "secure/app", "1");
    let s = Setup::new();
    let spec = s.spec(
        serde_json::json!({"app": {"ref": format!("{}/secure/app:1", registry.host()), "digest": image.digest()}}),
        &[],
    );
    let ca = registry.ca_file().unwrap().display().to_string();
    let good = s.path("auth.json");
    registry.auth_file(&good, registry::USER, registry::PASSWORD);
    let good_env = good.display().to_string();

    // Without the CA: the certificate is not trusted; no fallback to HTTP.
    let out = s.build(
        &spec,
        "out.tar.zst",
        &[],
        &[("REGISTRY_AUTH_FILE", &good_env)],
    );
    out.code(1)
        .stderr_has(&format!("image app ({}/secure/app:1)", registry.host()))
        .stderr_has(&format!(
            "{}: its TLS certificate is not trusted",
            registry.host()
        ))
        .stderr_has("--registry-ca FILE");
    assert!(!s.path("out.tar.zst").exists());

    // Without credentials, then with wrong ones: refused, naming the registry.
    let out = s.build(&spec, "out.tar.zst", &["--registry-ca", &ca], &[]);
    out.code(1).stderr_has(&format!(
        "{} refused access to secure/app (HTTP 401 Unauthorized): no credentials for {}",
        registry.host(),
        registry.host()
    ));
    let bad = s.path("bad.json");
    registry.auth_file(&bad, registry::USER, "wrong");
    let bad_env = bad.display().to_string();
    let out = s.build(
        &spec,
        "out.tar.zst",
        &["--registry-ca", &ca],
        &[("REGISTRY_AUTH_FILE", &bad_env)],
    );
    out.code(1)
        .stderr_has(&format!("{} refused access to secure/app", registry.host()))
        .stderr_has(&format!(
            "it refused the credentials of user \"{}\" from {bad_env}",
            registry::USER
        ));
    assert!(!s.path("out.tar.zst").exists());

    // CA and credentials: built.
    s.build(
        &spec,
        "out.tar.zst",
        &["--registry-ca", &ca],
        &[("REGISTRY_AUTH_FILE", &good_env)],
    )
    .code(0)
    .stderr_progress_only()
    .stdout_has("2 blob(s) downloaded, 0 from cache");
    let m = manifest(&s.path("out.tar.zst"));
    assert_eq!(m["images"]["app"]["manifest"], image.digest());
}

#[test]
fn a_registry_with_token_authentication_is_pulled_from_anonymously_with_a_bearer_token() {
    if Registry::skip() {
        return;
    }
    let registry = Registry::token(&["team/app"]);
    let image = TestImage::two_platform("token flow");
    image.push(&registry, "team/app", "1.0");
    let s = Setup::new();
    let reference = format!("{}/team/app:1.0", registry.host());
    let spec = s.spec(serde_json::json!({"app": {"ref": reference}}), &[]);
    s.pin(&spec, &[]).code(0).stdout_has(image.digest());
    s.build(&spec, "out.tar.zst", &[], &[])
        .code(0)
        .stderr_progress_only()
        .stdout_has("2 blob(s) downloaded");
    let token_requests = registry.token_server().unwrap().requests("/token");
    assert!(!token_requests.is_empty(), "no token was asked for");
    let scope = token_requests[0].target.clone();
    assert!(
        scope.contains("scope=repository%3Ateam%2Fapp%3Apull")
            || scope.contains("scope=repository:team/app:pull"),
        "{scope}"
    );
    assert!(
        scope.contains(&format!("service={}", registry::TOKEN_SERVICE)),
        "{scope}"
    );
    assert_eq!(token_requests[0].header("Authorization"), None, "anonymous");
}

#[test]
fn mirrors_are_tried_in_order_when_the_registry_is_down() {
    if Registry::skip() {
        return;
    }
    let mirror = Registry::plain();
    let image = TestImage::two_platform("from the mirror");
    image.push(&mirror, "team/app", "1.0");
    let s = Setup::new();
    let down = registry::dead_host();
    let reference = format!("{down}/team/app:1.0");
    let spec = s.spec(
        serde_json::json!({"app": {"ref": reference, "mirrors": [format!("{}/team/app", mirror.host())]}}),
        &[],
    );
    s.pin(&spec, &[])
        .code(0)
        .stdout_has(&format!("from {}/team/app:1.0", mirror.host()));
    s.build(&spec, "out.tar.zst", &[], &[])
        .code(0)
        .stderr_progress_only();
    let m = manifest(&s.path("out.tar.zst"));
    // The node knows the image by its ref, wherever it came from.
    assert_eq!(m["images"]["app"]["ref"], reference);
    assert_eq!(m["images"]["app"]["digest"], image.digest());
    let entries = layout_entries(&artifact(&s.path("out.tar.zst"), "app"));
    let index: serde_json::Value = serde_json::from_slice(&entries[1].1).unwrap();
    assert_eq!(
        index["manifests"][0]["annotations"]["io.containerd.image.name"],
        reference
    );
}

#[test]
fn a_corrupted_layer_fails_the_build_naming_image_blob_expected_and_actual() {
    if Registry::skip() {
        return;
    }
    let registry = Registry::plain();
    let image = TestImage::two_platform("corrupt me");
    image.push(&registry, "team/app", "1.0");
    let layer = &image.platform("amd64").unwrap().layers[0];
    let data = registry.blob_data(&layer.digest);
    let mut bytes = std::fs::read(&data).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    let actual = sha256(&bytes);
    std::fs::write(&data, &bytes).unwrap();

    let s = Setup::new();
    let reference = format!("{}/team/app:1.0", registry.host());
    let spec = s.spec(
        serde_json::json!({"app": {"ref": reference, "digest": image.digest()}}),
        &[],
    );
    let out = s.build(&spec, "out.tar.zst", &[], &[]);
    out.code(1).stderr_has(&format!(
        "image app ({reference}): layer 1 {} ({} bytes): ",
        layer.digest,
        layer.size()
    ));
    let hex = |d: &str| d["sha256:".len()..].to_owned();
    out.stderr_has(&format!(
        "sha256 mismatch for {}/v2/team/app/blobs/{}: expected {}, got {}; not cached",
        registry.host(),
        layer.digest,
        hex(&layer.digest),
        hex(&actual)
    ));
    assert!(!s.path("out.tar.zst").exists(), "output left behind");
    assert!(!s.path("out.tar.zst.minisig").exists());
    let cached = s.cache_objects();
    assert!(!cached.contains(&layer.digest), "the bad layer is cached");
    assert!(!cached.contains(&actual));
    let leftovers: Vec<_> = std::fs::read_dir(s.path("cache/partial"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_sandbox_image_the_bundle_does_not_carry_is_refused_naming_the_step_and_the_ref() {
    let s = Setup::new();
    let pause = "registry.k8s.io/pause:3.9";
    let digest = format!("sha256:{}", "7".repeat(64));
    // Carried (pinned, never fetched: the check comes first): no problem.
    let file = |content: &str, template: bool| serde_json::json!({"kind": "file", "dest": "/etc/containerd/config.toml", "content": content, "template": template});
    let unit = serde_json::json!({"kind": "systemd-unit", "name": "kubelet.service",
        "content": "[Service]\nExecStart=/usr/local/bin/kubelet --pod-infra-container-image k8s.gcr.io/pause:3.2\n"});
    let spec = s.spec(
        serde_json::json!({"pause": {"ref": "registry.k8s.io/pause:3.10", "digest": digest}}),
        &[
            file(&format!("sandbox_image = \"{pause}\"\n"), false),
            unit.clone(),
        ],
    );
    let out = s.build(&spec, "out.tar.zst", &[], &[]);
    out.code(1)
        .stderr_has("sandbox images not carried:")
        .stderr_has(&format!(
            "steps[1].content: names the sandbox image {pause} (containerd sandbox_image), which the bundle does not carry"
        ))
        .stderr_has("steps[2].content: names the sandbox image k8s.gcr.io/pause:3.2 (kubelet --pod-infra-container-image)")
        .stderr_has("or name one the bundle carries (registry.k8s.io/pause:3.10)");
    assert_eq!(out.stdout, "");
    assert!(!s.path("out.tar.zst").exists());

    // A template is checked as it renders with the defaults; a variable
    // without a default is not known at build time.
    let spec = s.spec(
        serde_json::json!({}),
        &[file("sandbox_image = \"${SANDBOX}\"\n", true)],
    );
    s.build(&spec, "out.tar.zst", &[], &[])
        .code(1)
        .stderr_has(&format!(
            "steps[0].content: names the sandbox image {pause} (containerd sandbox_image) (rendered with the variables' defaults)"
        ))
        .stderr_has("name an image the bundle carries");
    let spec = s.spec(
        serde_json::json!({}),
        &[file("sandbox_image = \"${OTHER}\"\n", true)],
    );
    let out = s.build(&spec, "out.tar.zst", &[], &[]);
    out.code(0).stderr_progress_only();
}

#[test]
fn an_unpinned_image_or_a_bad_insecure_registry_value_is_refused_before_any_download() {
    let s = Setup::new();
    let spec = s.spec(
        serde_json::json!({"app": {"ref": "registry.example/app:1"}}),
        &[],
    );
    s.build(&spec, "out.tar.zst", &[], &[])
        .code(1)
        .stderr_has("image(s) not pinned: app")
        .stderr_has("bundler pin");
    let before = std::fs::read(&spec).unwrap();
    s.pin(&spec, &["--offline"]).code(1).stderr_has(
        "image app: cannot resolve registry.example/app:1: registry.example: --offline",
    );
    assert_eq!(std::fs::read(&spec).unwrap(), before);
    let spec = s.spec(
        serde_json::json!({"app": {"ref": "registry.example/app:1", "digest": format!("sha256:{}", "1".repeat(64))}}),
        &[],
    );
    s.build(
        &spec,
        "out.tar.zst",
        &["--insecure-registry", "http://registry.example"],
        &[],
    )
    .code(1)
    .stderr_has("--insecure-registry \"http://registry.example\": expected HOST:PORT");
    assert!(!s.path("out.tar.zst").exists());
}

#[test]
fn a_manifest_whose_docker_content_digest_differs_from_its_bytes_is_refused_by_pin() {
    // A registry (or a proxy in front of one) that lies: the loopback test
    // server answers the distribution API's two requests.
    let server = bundle_tests::server::Server::start();
    server.route("/v2/", bundle_tests::server::Behavior::Body(b"{}".to_vec()));
    let image = TestImage::single("lying registry");
    let claimed = format!("sha256:{}", "e".repeat(64));
    server.route(
        "/v2/team/app/manifests/1.0",
        bundle_tests::server::Behavior::Headers {
            content_type: image.root.media_type.clone(),
            headers: vec![("Docker-Content-Digest".into(), claimed.clone())],
            body: image.root.bytes.clone(),
        },
    );
    let s = Setup::new();
    let host = format!("127.0.0.1:{}", server.addr().port());
    let spec = s.spec(
        serde_json::json!({"app": {"ref": format!("{host}/team/app:1.0")}}),
        &[],
    );
    let before = std::fs::read(&spec).unwrap();
    // The test server waits for a request head the TLS probe never sends.
    s.pin(&spec, &["--timeout", "1"])
        .code(1)
        .stderr_has(&format!(
            "{host}/team/app:1.0: the manifest {host} sent has sha256 {}, not {claimed}",
            image.digest()
        ));
    assert_eq!(std::fs::read(&spec).unwrap(), before);
}
