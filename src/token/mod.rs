//! Tokens: signing keys, claims, verification and JWKS.
