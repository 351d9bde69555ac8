//! Shared test helpers, one module per level of the crate they drive.
//!
//! - [`common`]: which backing services are configured, and loud skips;
//! - [`db`]: one isolated database per dialect and test;
//! - [`services`]: the server configuration and inputs for service-level tests;
//! - [`http`]: requests through the real router and envelope assertions.

pub mod common;
pub mod db;
pub mod http;
pub mod services;
