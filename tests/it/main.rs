mod common;
mod idempotency;
