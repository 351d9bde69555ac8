mod adversarial;
#[cfg(feature = "client")]
mod client;
mod common;
mod db;
mod example;
mod faults;
mod http;
mod idempotency;
mod integrity;
mod integrity_rules;
mod password;
mod props;
mod races;
mod secrets;
mod services;
mod store;
