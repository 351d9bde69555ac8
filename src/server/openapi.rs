//! The OpenAPI 3.1 document of `auth.router()` (feature `openapi`): the core routes and
//! every enabled capability's, with the security schemes of this configuration.

use axum::extract::{OriginalUri, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::schema::Type;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::server::Server;
use utoipa::openapi::{ComponentsBuilder, InfoBuilder, OpenApi};

use super::ServerAuth;
use crate::http::openapi::{
    ACCESS_COOKIE, ApiDoc, BEARER, REFRESH_COOKIE, USER, object, of, strings,
};

/// The security scheme of `X-Api-Key` on `POST /register` (`ServerConfig::api_key`).
pub(super) const REGISTRATION_KEY: &str = "registrationKey";

impl ServerAuth {
    /// The OpenAPI 3.1 document of everything [`router`](Self::router) serves: the core
    /// routes and those of every enabled capability, each with its request body, every
    /// answer (the envelope, and for errors the codes of each status) and its security
    /// schemes (bearer, the cookies as configured, capability credentials such as API
    /// keys). Paths are relative to where the router is nested; merge it into the app's
    /// own document with [`OpenApi::nest`]:
    ///
    /// ```no_run
    /// # fn demo(auth: sentri::ServerAuth, app_doc: utoipa::openapi::OpenApi) {
    /// let doc = app_doc.nest("/auth", auth.openapi());
    /// # }
    /// ```
    ///
    /// [`ServerConfig::serve_openapi`](crate::ServerConfig::serve_openapi) serves it at
    /// `GET /openapi.json` under the router.
    #[cfg_attr(docsrs, doc(cfg(feature = "openapi")))]
    pub fn openapi(&self) -> OpenApi {
        let transport = &self.inner.core.transport;
        let capabilities = &self.inner.capabilities;
        let mut credentials = Vec::new();
        let mut components = ComponentsBuilder::new()
            .security_scheme(
                BEARER,
                SecurityScheme::Http(
                    Http::builder()
                        .scheme(HttpAuthScheme::Bearer)
                        .bearer_format("JWT")
                        .description(Some("The access token (`POST /login`, `POST /refresh`)"))
                        .build(),
                ),
            )
            .schema(USER, user_schema());
        if let Some(c) = &transport.access_cookie {
            components = components.security_scheme(
                ACCESS_COOKIE,
                SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                    c.name.as_str(),
                    "The access token as a cookie (set by login and refresh)",
                ))),
            );
        }
        if let Some(c) = &transport.cookie {
            components = components.security_scheme(
                REFRESH_COOKIE,
                SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                    c.name.as_str(),
                    "The refresh token as an HttpOnly cookie: guarded routes refresh silently with it",
                ))),
            );
        }
        if self.inner.api_key.is_some() {
            components = components.security_scheme(
                REGISTRATION_KEY,
                SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                    "X-Api-Key",
                    "The server's API key: registrations with any valid role",
                ))),
            );
        }
        for capability in capabilities {
            if let Some((doc, scheme)) = capability.openapi_credential() {
                components = components.security_scheme(doc.scheme, scheme);
                credentials.push(doc);
            }
        }
        let doc = ApiDoc {
            credentials,
            access_cookie: transport.access_cookie.is_some(),
            refresh_cookie: transport.cookie.is_some(),
        };
        let mut api = super::routes::openapi(self, &doc);
        for capability in capabilities {
            api.merge(capability.openapi(&doc));
        }
        api.info = InfoBuilder::new()
            .title("sentri")
            .version(env!("CARGO_PKG_VERSION"))
            .description(Some(
                "Authentication endpoints. Every answer is the JSON envelope \
                 `{error, statusCode, code?, message, data}`; errors carry a code.",
            ))
            .build();
        let mut built = components.build();
        if let Some(theirs) = api.components.take() {
            for (name, scheme) in theirs.security_schemes {
                built.security_schemes.entry(name).or_insert(scheme);
            }
            for (name, schema) in theirs.schemas {
                built.schemas.entry(name).or_insert(schema);
            }
        }
        api.components = Some(built);
        api
    }
}

fn user_schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    object([
        ("id", of(Type::String)),
        ("identifier", of(Type::String)),
        ("roles", strings()),
    ])
}

/// `GET /openapi.json`: the document, with the prefix the router is nested under as
/// its server.
pub(super) async fn serve(
    State(auth): State<ServerAuth>,
    OriginalUri(uri): OriginalUri,
) -> Response {
    let body = auth.inner.openapi.1.get_or_init(|| {
        let prefix = uri
            .path()
            .strip_suffix("/openapi.json")
            .unwrap_or_default()
            .to_owned();
        let mut doc = auth.openapi();
        if !prefix.is_empty() {
            doc.servers = Some(vec![Server::new(prefix)]);
        }
        match doc.to_json() {
            Ok(json) => bytes::Bytes::from(json),
            Err(err) => {
                tracing::error!(error = %err, "sentri: failed to render the OpenAPI document");
                bytes::Bytes::new()
            }
        }
    });
    if body.is_empty() {
        return crate::SentriError::new(crate::ErrorCode::InternalError, "Internal server error")
            .into_response();
    }
    let mut res = (StatusCode::OK, body.clone()).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}
