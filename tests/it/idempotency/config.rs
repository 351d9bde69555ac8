//! Layer configuration: invalid options are rejected, secrets never shown.

use std::time::Duration;

use sentri::{IdempotencyLayer, IdempotencyOptions};

#[test]
fn bad_configuration_is_rejected_and_secrets_redacted() {
    let err = IdempotencyLayer::new(IdempotencyOptions {
        ttl: Duration::ZERO,
        ..Default::default()
    })
    .err();
    assert_eq!(
        err.map(|e| e.code().as_str().to_owned()).as_deref(),
        Some("CONFIGURATION_ERROR")
    );

    let err = IdempotencyLayer::new(IdempotencyOptions {
        max_memory_bytes: sentri::idempotency::MIN_MEMORY_BYTES - 1,
        ..Default::default()
    })
    .err();
    assert_eq!(
        err.map(|e| e.code().as_str().to_owned()).as_deref(),
        Some("CONFIGURATION_ERROR")
    );

    let opts = IdempotencyOptions {
        redis_url: Some("redis://admin:hunter2@cache.internal:6379/0".into()),
        ..Default::default()
    };
    let shown = format!("{opts:?}");
    assert!(
        !shown.contains("hunter2") && !shown.contains("admin"),
        "{shown}"
    );
    assert!(shown.contains("cache.internal:6379"), "{shown}");

    #[cfg(feature = "redis")]
    {
        let err = IdempotencyLayer::new(IdempotencyOptions {
            redis_url: Some("not a url".into()),
            ..Default::default()
        })
        .err();
        assert_eq!(
            err.map(|e| e.code().as_str().to_owned()).as_deref(),
            Some("CONFIGURATION_ERROR")
        );
        // Valid URL, nothing listening: still builds (connects lazily), outside a runtime.
        let layer = IdempotencyLayer::new(IdempotencyOptions {
            redis_url: Some("redis://:hunter2@127.0.0.1:1".into()),
            ..Default::default()
        });
        let shown = format!("{layer:?}");
        assert!(layer.is_ok() && !shown.contains("hunter2"), "{shown}");
    }
}
