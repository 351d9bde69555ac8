//! The roles capability: the admin routes of the role catalogue and of users' roles.
//! Switched on with `ServerConfig::with(Roles::default())`; its routes need the admin
//! role or the `roles:manage` permission.
//!
//! | route | does |
//! |---|---|
//! | `GET /roles` | every role with its permissions |
//! | `POST /roles` | creates a role (`name`, `description`, `permissions`) |
//! | `GET /roles/{role}` | one role |
//! | `PATCH /roles/{role}` | changes `description` and/or replaces `permissions` |
//! | `DELETE /roles/{role}` | deletes a role nobody holds; `?reassign=<role>` or `?strip=true` for one in use |
//! | `GET /roles/{role}/users` | its holders, by id (`?after=<id>&limit=<n>`) |
//! | `GET /users/{userId}/roles` | the user |
//! | `PUT /users/{userId}/roles` | replaces the user's roles (`{"roles": [...]}`) |
//! | `DELETE /users/{userId}/roles/{role}` | takes one role away |
//!
//! Assigning (`POST /users/{userId}/roles`) stays with the account capability. Every
//! change emits an event (`role_created`, `role_updated`, `role_deleted`,
//! `roles_changed`); a change of a user's roles makes their older access tokens stale.

mod routes;
mod service;

use axum::Router;
use axum::http::StatusCode;

pub use service::RolesService;

use super::{Capability, Core};

/// The roles capability (no settings yet).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Roles {}

impl Capability for Roles {
    fn name(&self) -> &'static str {
        "roles"
    }

    fn error_codes(&self) -> &'static [(&'static str, StatusCode)] {
        &[
            ("ROLE_NOT_FOUND", StatusCode::NOT_FOUND),
            ("ROLE_ALREADY_EXISTS", StatusCode::CONFLICT),
            ("ROLE_IN_USE", StatusCode::CONFLICT),
            ("LAST_ADMIN", StatusCode::CONFLICT),
            ("INVALID_PERMISSION", StatusCode::BAD_REQUEST),
        ]
    }

    fn routes(&self, core: &Core) -> Router {
        routes::router(core)
    }

    #[cfg(feature = "openapi")]
    fn openapi(&self, doc: &crate::http::openapi::ApiDoc) -> utoipa::openapi::OpenApi {
        routes::openapi(doc)
    }
}
