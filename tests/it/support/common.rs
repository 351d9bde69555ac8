//! Shared test harness: which backing services are available, and loud skips.
//!
//! SQLite always runs. PostgreSQL, MariaDB/MySQL and Redis run when their URL is set
//! (`SENTRI_TEST_POSTGRES_URL`, `SENTRI_TEST_MYSQL_URL`, `SENTRI_TEST_REDIS_URL`).
//! With `SENTRI_TEST_REQUIRE_SERVICES=1` a missing or unreachable service fails the test.
#![allow(dead_code)]

/// `true` when `SENTRI_TEST_REQUIRE_SERVICES=1`: missing services fail instead of skipping.
pub fn require_services() -> bool {
    std::env::var("SENTRI_TEST_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// The URL of an optional service, or a loud skip line (and `None`).
/// Panics when the service is required but not configured.
pub fn service_url(var: &str, test: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            if require_services() {
                panic!("{var} is not set but SENTRI_TEST_REQUIRE_SERVICES=1 ({test})");
            }
            loud_skip(var, test);
            None
        }
    }
}

/// The Redis URL for tests, or `None` (with a skip line).
pub fn redis_url(test: &str) -> Option<String> {
    service_url("SENTRI_TEST_REDIS_URL", test)
}

/// A short random suffix for names that must not collide between tests.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// Prints a skip line straight to stderr (not captured by the test harness), once per
/// service per test run, so a skipped backend is visible in every run.
pub fn loud_skip(var: &str, test: &str) {
    use std::io::Write;
    static SEEN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    if seen.iter().any(|v| v == var) {
        return;
    }
    seen.push(var.to_owned());
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: {var} is not set: tests on that backend are skipped (first: {test}). Set it, or SENTRI_TEST_REQUIRE_SERVICES=1 to fail instead."
    );
}
