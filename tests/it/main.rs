mod adversarial;
#[cfg(feature = "client")]
mod client;
mod common;
mod db;
mod example;
mod faults;
mod http;
mod idempotency;
mod identifiers;
mod integrity;
mod no_echo;
mod props;
mod secrets;
mod services;
mod store;
