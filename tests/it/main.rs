mod common;
mod db;
mod http;
#[cfg(feature = "client")]
mod client;
mod services;
mod store;
