//! The browser tests of the demo page (`.ci/browser/`, Playwright for Python driving
//! Debian's Chromium against `examples/server`), run from the Rust suite so that
//! `cargo test --all-features` runs them too. They need `.ci/venv` with `playwright`
//! and `pytest`, and `/usr/bin/chromium` (`.ci/run` installs all three): without them
//! the test is skipped loudly, or fails with `SENTRI_TEST_REQUIRE_SERVICES=1`.

use std::path::Path;
use std::process::Command;

use crate::example::example_binary;
use crate::support::common::{loud_skip, require_services};

#[test]
fn demo_page_in_a_real_browser() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".ci/venv/bin/python");
    let chromium =
        std::env::var("SENTRI_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    let ready = python.exists()
        && Path::new(&chromium).exists()
        && Command::new(&python)
            .args(["-c", "import playwright, pytest"])
            .status()
            .is_ok_and(|s| s.success());
    if !ready {
        assert!(
            !require_services(),
            "browser tests need .ci/venv (pip install playwright pytest) and {chromium} \
             (apt-get install chromium), and SENTRI_TEST_REQUIRE_SERVICES=1"
        );
        loud_skip(
            "a browser (.ci/venv with playwright, /usr/bin/chromium)",
            "demo_page_in_a_real_browser",
        );
        return;
    }
    let server = example_binary("server");
    assert!(
        server.exists(),
        "{} is missing: cargo test --all-features builds it",
        server.display()
    );
    let artifacts = std::env::var("SENTRI_BROWSER_ARTIFACTS")
        .map_or_else(|_| root.join("target/browser-artifacts"), Into::into);
    let out = Command::new(&python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA"])
        .arg(root.join(".ci/browser"))
        .env("SENTRI_EXAMPLE_BIN", &server)
        .env("SENTRI_CHROMIUM", &chromium)
        .env("SENTRI_BROWSER_ARTIFACTS", &artifacts)
        .current_dir(root)
        .output()
        .expect("run pytest");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "browser tests failed (screenshots in {}):\n{report}",
        artifacts.display()
    );
    assert!(report.contains(" passed"), "{report}");
    assert!(!report.contains(" skipped"), "{report}");
}
