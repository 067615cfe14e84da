//! An SBOM in every bundle (issue 14): CycloneDX 1.5 JSON, the entry after
//! the manifest's signature, covered by the manifest; it lists exactly what
//! the bundle holds (each Debian package with name, version, architecture,
//! URL, sha256 and the licenses its machine-readable copyright file states;
//! each upstream file; each image with ref, index and manifest digests and
//! layers; the bundle itself), validates with an independent validator
//! (the CycloneDX Python library's JSON schema validator), `bundler sbom`
//! prints it only after verifying, the installer keeps it with the receipt,
//! a tampered SBOM is refused, and bundles stay byte-reproducible.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use bundle_tests::cli::{bundler, run};
use bundle_tests::fixture::{Fixture, build_deb};
use bundle_tests::kit;
use bundle_tests::oci::TestImage;
use bundle_tests::registry::Registry;
use serde_json::{Value, json};

const DEP5: &str = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
Upstream-Name: licensed\n\n\
Files: *\nCopyright: 2020 Someone\nLicense: GPL-2+\n\n\
Files: lib/*\nCopyright: 2021 Other\nLicense: BSD-3-clause or Expat\n\n\
License: GPL-2+\n On Debian systems, see /usr/share/common-licenses/GPL-2.\n";

/// The fixture's spec plus a `.deb` whose copyright file is DEP-5 and, when
/// given, an image from `registry`.
fn spec_with_everything(f: &Fixture, image: Option<(&Registry, &TestImage)>) -> PathBuf {
    let base = f.write_spec("base.json", 1, &[]);
    let mut spec: Value = serde_json::from_slice(&std::fs::read(base).unwrap()).unwrap();
    let files = f.path("files");
    let deb = build_deb(
        &files,
        "licensed",
        "2:1.4-3",
        "",
        &[
            ("/usr/share/doc/licensed/copyright", DEP5),
            ("/usr/share/licensed/data", "data\n"),
        ],
        &[],
        None,
    );
    std::fs::rename(deb, files.join("licensed.deb")).unwrap();
    spec["artifacts"]["licensed"] = json!({"url": "file:files/licensed.deb"});
    for s in spec["steps"].as_array_mut().unwrap() {
        if s["kind"] == "debs" {
            s["artifacts"] = json!(["demo-motd", "licensed"]);
        }
    }
    if let Some((registry, img)) = image {
        spec["images"] = json!({"pause": {
            "ref": format!("{}/pause:3.9", registry.host()), "digest": img.digest()}});
        spec["steps"]
            .as_array_mut()
            .unwrap()
            .push(json!({"kind": "images", "images": ["pause"], "pin": true}));
    }
    kit::write_pinned_spec(f, "everything.json", &spec)
}

fn sbom_of(f: &Fixture, bundle: &Path) -> Value {
    let out = run(
        &bundler(),
        [
            "sbom".as_ref(),
            bundle.as_os_str(),
            "--key".as_ref(),
            f.keys.public.as_os_str(),
        ],
        &[],
    );
    out.code(0).stderr_empty();
    serde_json::from_str(&out.stdout).expect("bundler sbom prints JSON")
}

/// Validates `doc` with the CycloneDX Python library's strict JSON validator
/// for spec version 1.5 (installed by .ci/run from PyPI).
fn validate_with_cyclonedx_python(doc: &str) {
    let script = "import sys\n\
from cyclonedx.validation.json import JsonStrictValidator\n\
from cyclonedx.schema import SchemaVersion\n\
err = JsonStrictValidator(SchemaVersion.V1_5).validate_str(sys.stdin.read())\n\
print(err if err else 'valid')\n\
sys.exit(1 if err else 0)\n";
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(doc.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "CycloneDX validation failed (pip install 'cyclonedx-python-lib[json-validation]'):\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn component<'a>(doc: &'a Value, bom_ref: &str) -> &'a Value {
    doc["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["bom-ref"] == bom_ref)
        .unwrap_or_else(|| panic!("no component {bom_ref} in\n{doc:#}"))
}

fn property<'a>(c: &'a Value, name: &str) -> &'a str {
    c["properties"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["value"].as_str())
        .unwrap_or_else(|| panic!("no property {name} in {c:#}"))
}

#[test]
fn every_bundle_carries_an_sbom_that_lists_exactly_what_it_holds_and_validates() {
    let registry = (!Registry::skip()).then(Registry::plain);
    let image = TestImage::single("hello from pause");
    if let Some(r) = &registry {
        image.push(r, "pause", "3.9");
    }
    let f = Fixture::new();
    let spec = spec_with_everything(&f, registry.as_ref().map(|r| (r, &image)));
    let bundle = f.build(&spec, "everything.tar.zst");

    // The manifest names the SBOM entry, which is entry 2, right after the signature.
    let entries = kit::read_entries(&bundle);
    assert_eq!(entries[2].name(), "SBOM.cdx.json");
    let manifest = kit::manifest_json(&entries);
    assert_eq!(manifest["sbom"]["path"], "SBOM.cdx.json");
    assert_eq!(manifest["sbom"]["format"], "CycloneDX-1.5");
    assert_eq!(
        manifest["sbom"]["sha256"],
        bundle_tests::oci::sha256(&entries[2].data).trim_start_matches("sha256:")
    );

    let text = String::from_utf8(entries[2].data.clone()).unwrap();
    validate_with_cyclonedx_python(&text);
    let doc = sbom_of(&f, &bundle);
    assert_eq!(doc, serde_json::from_str::<Value>(&text).unwrap());
    assert_eq!(doc["bomFormat"], "CycloneDX");
    assert_eq!(doc["specVersion"], "1.5");

    // The bundle itself.
    let me = &doc["metadata"]["component"];
    assert_eq!(me["name"], "k8s-worker");
    assert_eq!(me["version"], "1.21.0-1");
    assert_eq!(property(me, "airgap:serial"), "1");
    assert_eq!(property(me, "airgap:target"), "linux/amd64");
    assert_eq!(doc["metadata"]["timestamp"], manifest["created"]);

    // Exactly the artifacts: one top-level component per artifact, with its sha256.
    let listed: BTreeSet<String> = doc["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| property(c, "airgap:artifact").to_owned())
        .collect();
    let held: BTreeSet<String> = manifest["artifacts"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(listed, held);
    for c in doc["components"].as_array().unwrap() {
        let name = property(c, "airgap:artifact");
        assert_eq!(
            c["hashes"][0],
            json!({"alg": "SHA-256", "content": manifest["artifacts"][name]["sha256"]}),
            "{name}"
        );
        assert_eq!(
            property(c, "airgap:size"),
            manifest["artifacts"][name]["size"].to_string()
        );
    }
    // Every component is a dependency of the bundle.
    let deps = &doc["dependencies"][0];
    assert_eq!(deps["ref"], "bundle");
    assert_eq!(
        deps["dependsOn"].as_array().unwrap().len(),
        doc["components"].as_array().unwrap().len()
    );

    // Debian packages: from their control data, licenses from DEP-5.
    let deb = component(&doc, "artifact:licensed");
    assert_eq!(deb["type"], "library");
    assert_eq!(deb["name"], "licensed");
    assert_eq!(deb["version"], "2:1.4-3");
    assert_eq!(deb["purl"], "pkg:deb/debian/licensed@2:1.4-3?arch=all");
    assert_eq!(
        deb["licenses"],
        json!([{"expression": "GPL-2.0-or-later AND (BSD-3-Clause OR MIT)"}])
    );
    assert_eq!(
        deb["externalReferences"][0],
        json!({"type": "distribution", "url": "file:files/licensed.deb"})
    );
    // A package without a machine-readable copyright file states no license.
    let motd = component(&doc, "artifact:demo-motd");
    assert_eq!(motd["version"], "1.0-1");
    assert!(motd.get("licenses").is_none(), "{motd:#}");
    // Upstream files.
    let runc = component(&doc, "artifact:runc");
    assert_eq!(runc["type"], "file");
    assert_eq!(
        runc["externalReferences"][0]["url"],
        "file:files/runc.amd64"
    );

    // Images: ref, index/manifest digests, layers.
    if registry.is_some() {
        let img = component(&doc, "image:pause");
        assert_eq!(img["type"], "container");
        let m = &manifest["images"]["pause"];
        assert_eq!(property(img, "airgap:ref"), m["ref"]);
        assert_eq!(property(img, "airgap:digest"), m["digest"]);
        assert_eq!(property(img, "airgap:manifest-digest"), m["manifest"]);
        let layers: Vec<String> = img["components"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["name"].as_str().unwrap().to_owned())
            .collect();
        let expected: Vec<String> = image.platforms[0]
            .layers
            .iter()
            .map(|l| format!("sha256:{}", l.hex()))
            .collect();
        assert_eq!(layers, expected);
        let purl = img["purl"].as_str().unwrap();
        assert!(
            purl.starts_with(&format!("pkg:oci/pause@{}?", m["digest"].as_str().unwrap()))
                && purl.contains(&format!(
                    "repository_url={}",
                    m["ref"].as_str().unwrap().trim_end_matches(":3.9")
                )),
            "{purl}"
        );
    }
}

#[test]
fn rebuilds_with_the_sbom_stay_byte_identical() {
    let f = Fixture::new();
    let spec = spec_with_everything(&f, None);
    let a = f.build(&spec, "a.tar.zst");
    let b = f.build(&spec, "b.tar.zst");
    assert_eq!(std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
}

#[test]
fn a_tampered_sbom_is_refused_by_bundler_and_the_installer_before_anything_changes() {
    let f = Fixture::new();
    let bundle = f.bundle();
    let mut entries = kit::read_entries(&bundle);
    assert_eq!(entries[2].name(), "SBOM.cdx.json");
    let text = String::from_utf8(entries[2].data.clone()).unwrap();
    let forged = text.replacen("demo-motd", "demo-motX", 1);
    assert_ne!(forged, text);
    let name = entries[2].name();
    let mut e = kit::RawEntry::file("x", forged.into_bytes());
    e.set_name(&name);
    entries[2] = e;
    let bad = f.path("forged.tar.zst");
    kit::write_entries(&entries, &bad);

    let out = run(
        &bundler(),
        [
            "sbom".as_ref(),
            bad.as_os_str(),
            "--key".as_ref(),
            f.keys.public.as_os_str(),
        ],
        &[],
    );
    out.code(3)
        .stderr_has("SBOM.cdx.json: does not match the manifest");
    assert_eq!(out.stdout, "");

    let root = f.root("root");
    let before = bundle_tests::tree::tree_listing(&root);
    kit::install(
        &root,
        &bad,
        &f.keys.public,
        &["--set", "POD_CIDR=10.200.0.0/24"],
        &[],
    )
    .code(3)
    .stderr_has("SBOM.cdx.json: does not match the manifest");
    assert_eq!(bundle_tests::tree::tree_listing(&root), before);
}

#[test]
fn the_installer_keeps_the_sbom_beside_the_receipt() {
    let f = Fixture::new();
    let bundle = f.bundle();
    let root = f.root("root");
    kit::install(
        &root,
        &bundle,
        &f.keys.public,
        &["--set", "POD_CIDR=10.200.0.0/24"],
        &[],
    )
    .code(0);
    let kept = std::fs::read(root.join("var/lib/install-bundle/sbom/k8s-worker.cdx.json"))
        .expect("the SBOM is kept with the receipt");
    assert_eq!(kept, kit::read_entries(&bundle)[2].data);
    // Status lists receipts only: the SBOM directory is not mistaken for one.
    run(
        &bundle_tests::cli::installer(),
        ["status".as_ref(), "--root".as_ref(), root.as_os_str()],
        &[],
    )
    .code(0)
    .stdout_has("k8s-worker");
}

#[test]
fn bundler_sbom_needs_a_trusted_key() {
    let f = Fixture::new();
    let bundle = f.bundle();
    std::fs::create_dir_all(f.path("other")).unwrap();
    let other = bundle_tests::cli::keygen(&f.path("other"), "other");
    let out = run(
        &bundler(),
        [
            "sbom".as_ref(),
            bundle.as_os_str(),
            "--key".as_ref(),
            other.public.as_os_str(),
        ],
        &[],
    );
    out.code(3);
    assert_eq!(out.stdout, "");
}
