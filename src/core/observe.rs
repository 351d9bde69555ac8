//! What sentri tells operators: one `tracing` span per auth operation with its outcome,
//! and (feature `metrics`) counters, gauges and histograms through the [`metrics`]
//! facade, recorded by whatever recorder the application installed (e.g.
//! `metrics-exporter-prometheus`).
//!
//! Spans are named `sentri.<operation>` (`sentri.login`, `sentri.register`,
//! `sentri.refresh`, `sentri.logout`, `sentri.logout_all`, `sentri.change_password`,
//! `sentri.change_identifier`, `sentri.verify_2fa`, `sentri.reset_password`,
//! `sentri.magic_link`) and carry one field, `outcome`: `ok`, `challenge` (a second
//! factor is asked for) or the error code (`INVALID_CREDENTIALS`, `TOKEN_EXPIRED`, …).
//! No identifier, token, address or secret is ever a span field or a metric label.
//!
//! The metric names (Prometheus conventions; docs/METRICS.md lists them with their
//! labels):
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `sentri_logins_total` | counter | `outcome`: `ok`, `failed`, `throttled` |
//! | `sentri_registrations_total` | counter | — |
//! | `sentri_refreshes_total` | counter | `outcome`: `ok`, `expired`, `invalid`, `error` |
//! | `sentri_refresh_reuse_detections_total` | counter | — |
//! | `sentri_session_revocations_total` | counter | `reason`: `logout`, `logout_all`, `reuse_detected`, `password_changed`, `password_reset` |
//! | `sentri_session_cache_requests_total` | counter | `result`: `hit`, `miss` |
//! | `sentri_password_hash_queue_depth` | gauge | — |
//! | `sentri_password_hash_wait_seconds` | histogram | — |
//! | `sentri_password_hash_shed_total` | counter | — |
//! | `sentri_idempotency_requests_total` | counter | `outcome`: `executed`, `replayed`, `in_progress`, `mismatch`, `not_replayable` |

use std::future::Future;

use tracing::Instrument;

use crate::core::error::Result;

/// `sentri_logins_total{outcome}`.
pub const LOGINS: &str = "sentri_logins_total";
/// `sentri_registrations_total`.
pub const REGISTRATIONS: &str = "sentri_registrations_total";
/// `sentri_refreshes_total{outcome}`.
pub const REFRESHES: &str = "sentri_refreshes_total";
/// `sentri_refresh_reuse_detections_total`.
pub const REUSE_DETECTIONS: &str = "sentri_refresh_reuse_detections_total";
/// `sentri_session_revocations_total{reason}`.
pub const REVOCATIONS: &str = "sentri_session_revocations_total";
/// `sentri_session_cache_requests_total{result}`.
pub const SESSION_CACHE: &str = "sentri_session_cache_requests_total";
/// `sentri_password_hash_queue_depth`.
pub const HASH_QUEUE_DEPTH: &str = "sentri_password_hash_queue_depth";
/// `sentri_password_hash_wait_seconds`.
pub const HASH_WAIT: &str = "sentri_password_hash_wait_seconds";
/// `sentri_password_hash_shed_total`.
pub const HASH_SHED: &str = "sentri_password_hash_shed_total";
/// `sentri_idempotency_requests_total{outcome}`.
pub const IDEMPOTENCY: &str = "sentri_idempotency_requests_total";

/// A span for the auth operation `$name`: `sentri.$name` with an empty `outcome`.
macro_rules! op_span {
    ($name:literal) => {
        tracing::info_span!(concat!("sentri.", $name), outcome = tracing::field::Empty)
    };
}
pub(crate) use op_span;

/// Runs `fut` inside `span` and records its outcome: `ok_outcome(&value)` on success,
/// the error code on failure.
pub(crate) async fn traced<T>(
    span: tracing::Span,
    fut: impl Future<Output = Result<T>>,
    ok_outcome: impl FnOnce(&T) -> &'static str,
) -> Result<T> {
    let res = fut.instrument(span.clone()).await;
    match &res {
        Ok(value) => span.record("outcome", ok_outcome(value)),
        Err(err) => span.record("outcome", err.code().as_str()),
    };
    res
}

/// Counts `name{label=value}` up by one.
#[inline]
pub(crate) fn count(name: &'static str, label: Option<(&'static str, &'static str)>) {
    #[cfg(feature = "metrics")]
    match label {
        Some((k, v)) => metrics::counter!(name, k => v).increment(1),
        None => metrics::counter!(name).increment(1),
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (name, label);
}

/// Sets the gauge `name`.
#[inline]
pub(crate) fn gauge(name: &'static str, value: f64) {
    #[cfg(feature = "metrics")]
    metrics::gauge!(name).set(value);
    #[cfg(not(feature = "metrics"))]
    let _ = (name, value);
}

/// Records `seconds` in the histogram `name`.
#[inline]
pub(crate) fn histogram(name: &'static str, seconds: f64) {
    #[cfg(feature = "metrics")]
    metrics::histogram!(name).record(seconds);
    #[cfg(not(feature = "metrics"))]
    let _ = (name, seconds);
}

/// `sentri_refreshes_total{outcome}` for one refresh that ended with `res`.
pub(crate) fn refresh<T>(res: &Result<T>) {
    use crate::core::error::ErrorCode;
    let outcome = match res {
        Ok(_) => "ok",
        Err(e) if e.is(&ErrorCode::TokenExpired) => "expired",
        Err(e) if e.is(&ErrorCode::TokenInvalid) => "invalid",
        Err(_) => "error",
    };
    count(REFRESHES, Some(("outcome", outcome)));
}
