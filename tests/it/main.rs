#[cfg(feature = "client")]
mod client;
mod common;
mod db;
mod http;
mod services;
mod store;
