mod adversarial;
#[cfg(feature = "api-keys")]
mod api_keys;
mod architecture;
mod audit;
mod boundaries;
mod browser;
#[cfg(feature = "client")]
mod client;
mod cluster;
mod events;
mod example;
mod examples_smoke;
mod faults;
#[cfg(all(feature = "openapi", feature = "api-keys", feature = "sso"))]
mod hostile_input;
mod http;
mod idempotency;
mod identifiers;
mod integrity;
mod integrity_rules;
#[cfg(feature = "api-keys")]
mod key_roles;
#[cfg(feature = "smtp")]
mod lifecycle;
mod no_echo;
#[cfg(feature = "metrics")]
mod observe;
#[cfg(all(feature = "openapi", feature = "api-keys", feature = "sso"))]
mod openapi;
mod password;
mod props;
mod races;
#[cfg(all(feature = "api-keys", feature = "smtp"))]
mod recovery;
mod roles;
mod scaleout;
mod secops;
mod secrets;
mod services;
#[cfg(feature = "sso")]
mod sso;
mod store_conformance;
mod support;
mod two_factor;
mod workspaces;
