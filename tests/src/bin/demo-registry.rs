//! `demo-registry OUT.json`
//!
//! For `make demo`: starts Debian's `docker-registry` on `127.0.0.1` (an
//! ephemeral port), pushes a small test image to it (busybox-static, whose
//! entrypoint prints a line: [`TestImage::single`]) as `demo/hello:1.0`,
//! writes `{"ref": …, "digest": …}` to OUT.json atomically, and serves until
//! its standard input is closed (or 600 seconds pass), then stops the
//! registry. Exit 2 when docker-registry or busybox-static is missing.

use std::io::Read as _;
use std::process::ExitCode;

use bundle_tests::oci::TestImage;
use bundle_tests::registry::Registry;

fn main() -> ExitCode {
    let Some(out) = std::env::args().nth(1) else {
        eprintln!("usage: demo-registry OUT.json");
        return ExitCode::from(2);
    };
    if !Registry::available() || !std::path::Path::new("/bin/busybox").exists() {
        eprintln!("demo-registry: needs docker-registry and busybox-static");
        return ExitCode::from(2);
    }
    let registry = Registry::plain();
    let image = TestImage::single("hello from the demo image, run offline");
    image.push(&registry, "demo/hello", "1.0");
    let doc = serde_json::json!({
        "ref": format!("{}/demo/hello:1.0", registry.host()),
        "digest": image.digest(),
    });
    let tmp = format!("{out}.tmp");
    if let Err(e) = std::fs::write(&tmp, doc.to_string()).and_then(|()| std::fs::rename(&tmp, &out))
    {
        eprintln!("demo-registry: {out}: {e}");
        return ExitCode::from(1);
    }
    // Until stdin closes (the demo's cleanup), at most 600 s.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        let _ = tx.send(());
    });
    let _ = rx.recv_timeout(std::time::Duration::from_secs(600));
    drop(registry);
    ExitCode::SUCCESS
}
