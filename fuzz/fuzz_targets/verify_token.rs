//! `cargo fuzz run verify_token`: arbitrary bytes as access/refresh tokens and as the
//! header segment; verification must return an error, never panic.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sentri::token::{SigningKey, TokenOptions, TokenService};

fn service() -> &'static TokenService {
    static S: OnceLock<TokenService> = OnceLock::new();
    S.get_or_init(|| {
        let key = SigningKey::hs256(b"fuzz-secret-fuzz-secret-fuzz-secret!!").unwrap();
        TokenService::new(vec![key], TokenOptions::default()).unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    let t = service();
    assert!(t.verify_access(&s).is_err());
    assert!(t.verify_refresh(&s).is_err());
    let _ = sentri::token::peek_kid(&s);
});
