//! The OpenAPI 3.1 building blocks (feature `openapi`): one small builder, [`ApiDoc::op`],
//! that every `routes.rs` uses to describe the routes it serves, next to the router that
//! serves them. Every operation answers in sentri's envelope: each success status with
//! the success envelope, each error status with the error envelope whose `code` is one
//! of the codes listed for it, and 503 `SERVICE_UNAVAILABLE` (a backend down) on all.

use std::collections::BTreeMap;

use utoipa::PartialSchema;
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{
    HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItem, PathsBuilder,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::response::{ResponseBuilder, ResponsesBuilder};
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, SchemaType, Type};
use utoipa::openapi::security::SecurityRequirement;
use utoipa::openapi::{ComponentsBuilder, OpenApi, Ref, RefOr, Required, Schema};

use crate::core::error::ErrorCode;

pub use utoipa::openapi::path::HttpMethod as Method;

/// The security scheme of `Authorization: Bearer <access token>`.
pub const BEARER: &str = "bearer";
/// The security scheme of the access-token cookie.
pub const ACCESS_COOKIE: &str = "accessCookie";
/// The security scheme of the refresh-token cookie (guarded routes refresh silently
/// with it; `POST /refresh` and `POST /logout` read it).
pub const REFRESH_COOKIE: &str = "refreshCookie";
/// The schema component of a user as the routes answer it.
pub const USER: &str = "User";

/// An extra credential kind a capability adds to guarded routes (e.g. an API key
/// header): its security scheme and the codes it can refuse with.
#[derive(Clone)]
pub struct CredentialDoc {
    /// The security scheme's name in `components.securitySchemes`.
    pub scheme: &'static str,
    /// The error codes it refuses a request with.
    pub codes: &'static [ErrorCode],
}

impl std::fmt::Debug for CredentialDoc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialDoc")
            .field("scheme", &self.scheme)
            .finish_non_exhaustive()
    }
}

/// What every part of the document needs to know about the server it describes: the
/// extra credential kinds the guard accepts. Passed to each capability's
/// `Capability::openapi`.
#[derive(Debug, Clone, Default)]
pub struct ApiDoc {
    /// The credential kinds of the enabled capabilities.
    pub credentials: Vec<CredentialDoc>,
    /// The access-token cookie is configured.
    pub access_cookie: bool,
    /// The refresh-token cookie is configured.
    pub refresh_cookie: bool,
}

/// One operation being described; [`ApiDoc::paths`] turns a list of them into a
/// document.
pub struct Op {
    method: HttpMethod,
    path: &'static str,
    tag: &'static str,
    summary: &'static str,
    description: Option<String>,
    body: Option<RefOr<Schema>>,
    body_optional: bool,
    params: Vec<(ParameterIn, &'static str, Type, &'static str, bool)>,
    ok: BTreeMap<u16, (&'static str, Option<RefOr<Schema>>)>,
    redirects: BTreeMap<u16, &'static str>,
    errors: BTreeMap<u16, Vec<String>>,
    security: Vec<SecurityRequirement>,
    raw: Option<(&'static str, RefOr<Schema>)>,
}

impl std::fmt::Debug for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Op")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn method_name(m: &HttpMethod) -> &'static str {
    match m {
        HttpMethod::Get => "get",
        HttpMethod::Post => "post",
        HttpMethod::Put => "put",
        HttpMethod::Delete => "delete",
        HttpMethod::Options => "options",
        HttpMethod::Head => "head",
        HttpMethod::Patch => "patch",
        HttpMethod::Trace => "trace",
    }
}

/// A schema of `t`.
pub fn of(t: Type) -> RefOr<Schema> {
    ObjectBuilder::new().schema_type(t).into()
}

/// Any JSON value.
pub fn any() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(SchemaType::AnyValue)
        .into()
}

/// An array of strings.
pub fn strings() -> RefOr<Schema> {
    ArrayBuilder::new().items(of(Type::String)).into()
}

/// A reference to the `User` component.
pub fn user() -> RefOr<Schema> {
    Ref::from_schema_name(USER).into()
}

/// An object with these required properties (and no others documented).
pub fn object<'a>(props: impl IntoIterator<Item = (&'a str, RefOr<Schema>)>) -> RefOr<Schema> {
    let mut b = ObjectBuilder::new().schema_type(Type::Object);
    for (name, schema) in props {
        b = b.property(name, schema).required(name);
    }
    b.into()
}

/// `schema` or `null`.
pub fn nullable(t: Type) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([t, Type::Null]))
        .into()
}

fn constant(t: Type, value: serde_json::Value) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(t)
        .enum_values(Some([value]))
        .into()
}

/// The success envelope of `status` with `data`.
fn success_envelope(status: u16, data: RefOr<Schema>) -> RefOr<Schema> {
    object([
        ("error", constant(Type::Boolean, false.into())),
        ("statusCode", constant(Type::Integer, status.into())),
        ("message", of(Type::String)),
        ("data", data),
    ])
}

/// The error envelope of `status` whose `code` is one of `codes`.
fn error_envelope(status: u16, codes: &[String]) -> RefOr<Schema> {
    let code = ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(codes.iter().map(String::as_str)));
    object([
        ("error", constant(Type::Boolean, true.into())),
        ("statusCode", constant(Type::Integer, status.into())),
        ("code", code.into()),
        ("message", of(Type::String)),
        ("data", of(Type::Null)),
    ])
}

fn json(schema: RefOr<Schema>) -> utoipa::openapi::Content {
    ContentBuilder::new().schema(Some(schema)).build()
}

impl ApiDoc {
    /// Starts describing `method path` (relative to where `auth.router()` is nested).
    pub fn op(
        &self,
        method: HttpMethod,
        path: &'static str,
        tag: &'static str,
        summary: &'static str,
    ) -> Op {
        Op {
            method,
            path,
            tag,
            summary,
            description: None,
            body: None,
            body_optional: false,
            params: Vec::new(),
            ok: BTreeMap::new(),
            redirects: BTreeMap::new(),
            errors: BTreeMap::new(),
            security: Vec::new(),
            raw: None,
        }
    }

    /// The security requirements of a guarded route: the access token (bearer or
    /// cookie), the refresh cookie (silent refresh), and every capability credential.
    fn guard_security(&self) -> Vec<SecurityRequirement> {
        let cookies = [
            (ACCESS_COOKIE, self.access_cookie),
            (REFRESH_COOKIE, self.refresh_cookie),
        ];
        // Sessions only: no route of `auth.router()` admits a capability credential.
        std::iter::once(BEARER)
            .chain(cookies.into_iter().filter(|c| c.1).map(|c| c.0))
            .map(|s| SecurityRequirement::new(s, Vec::<String>::new()))
            .collect()
    }

    /// The document of these operations.
    pub fn paths(&self, ops: impl IntoIterator<Item = Op>) -> OpenApi {
        let mut paths = PathsBuilder::new();
        let mut built: BTreeMap<&'static str, PathItem> = BTreeMap::new();
        for op in ops {
            let (path, method, operation) = op.build();
            match built.get_mut(path) {
                Some(item) => item.merge_operations(PathItem::new(method, operation)),
                None => {
                    built.insert(path, PathItem::new(method, operation));
                }
            }
        }
        for (path, item) in built {
            paths = paths.path(path, item);
        }
        let mut doc = OpenApi::new(utoipa::openapi::Info::new("sentri", ""), paths);
        doc.components = Some(ComponentsBuilder::new().build());
        doc
    }
}

impl Op {
    /// A longer description (markdown).
    pub fn describe(mut self, text: impl Into<String>) -> Self {
        self.description = Some(text.into());
        self
    }

    /// A required JSON request body of schema `T` (the route's own body type), with the
    /// body errors: 400 `VALIDATION_ERROR`, 413 `PAYLOAD_TOO_LARGE`.
    pub fn body<T: PartialSchema>(mut self) -> Self {
        self.body = Some(T::schema());
        self.err(&[ErrorCode::ValidationError, ErrorCode::PayloadTooLarge])
    }

    /// A JSON request body of schema `T` that may be left out (the errors it can cause
    /// are listed by the route).
    pub fn optional_body<T: PartialSchema>(mut self) -> Self {
        self.body_optional = true;
        self.body = Some(T::schema());
        self
    }

    /// A required path parameter.
    pub fn path_param(mut self, name: &'static str, description: &'static str) -> Self {
        self.params
            .push((ParameterIn::Path, name, Type::String, description, true));
        self
    }

    /// An optional query parameter of type `t`.
    pub fn query(mut self, name: &'static str, t: Type, description: &'static str) -> Self {
        self.params
            .push((ParameterIn::Query, name, t, description, false));
        self
    }

    /// A success answer: the envelope with `data` of any shape.
    pub fn ok(self, status: u16, description: &'static str) -> Self {
        self.ok_data(status, description, any())
    }

    /// A success answer: the envelope with `data` of this schema.
    pub fn ok_data(mut self, status: u16, description: &'static str, data: RefOr<Schema>) -> Self {
        self.ok.insert(status, (description, Some(data)));
        self
    }

    /// A success answer that is a plain JSON document of `schema` (not the envelope).
    pub fn raw(mut self, description: &'static str, schema: RefOr<Schema>) -> Self {
        self.raw = Some((description, schema));
        self
    }

    /// A redirect (`Location` header, no body).
    pub fn redirect(mut self, status: u16, description: &'static str) -> Self {
        self.redirects.insert(status, description);
        self
    }

    /// Error answers: each code under its status.
    pub fn err(mut self, codes: &[ErrorCode]) -> Self {
        for code in codes {
            let list = self.errors.entry(code.status().as_u16()).or_default();
            let name = code.as_str().to_owned();
            if !list.contains(&name) {
                list.push(name);
            }
        }
        self
    }

    /// An error answer with an application-level code that has no [`ErrorCode`] variant.
    pub fn err_custom(mut self, status: u16, code: &'static str) -> Self {
        let list = self.errors.entry(status).or_default();
        if !list.iter().any(|c| c == code) {
            list.push(code.to_owned());
        }
        self
    }

    /// A route behind `protect()`, for sessions only: the session's security schemes
    /// and its refusals (401 `UNAUTHORIZED` / `TOKEN_INVALID` / `TOKEN_EXPIRED`, 403
    /// `FORBIDDEN` for a cross-origin cookie request, and 403 `CREDENTIAL_NOT_ADMITTED`
    /// for a capability credential such as an API key).
    pub fn signed_in(mut self, doc: &ApiDoc) -> Self {
        self.security = doc.guard_security();
        self = self.err(&[
            ErrorCode::Unauthorized,
            ErrorCode::TokenInvalid,
            ErrorCode::TokenExpired,
            ErrorCode::Forbidden,
        ]);
        if !doc.credentials.is_empty() {
            self = self.err(&[ErrorCode::CredentialNotAdmitted]);
        }
        self
    }

    /// A sensitive operation ([`signed_in`](Self::signed_in) first): 403
    /// `REAUTH_REQUIRED` without a recent authentication, 403 `TWO_FACTOR_REQUIRED`
    /// without a second factor when `sensitive_requires_2fa` is on.
    pub fn sensitive(mut self) -> Self {
        let note = "Sensitive: needs an authentication within the re-authentication \
                    window (`POST /reauthenticate`).";
        self.description = Some(match self.description.take() {
            Some(text) => format!("{text} {note}"),
            None => note.to_owned(),
        });
        self.err(&[ErrorCode::ReauthRequired, ErrorCode::TwoFactorRequired])
    }

    /// A route behind a role guard: [`signed_in`](Self::signed_in), and 403 `FORBIDDEN`
    /// without the role.
    pub fn admin(self, doc: &ApiDoc) -> Self {
        self.signed_in(doc).err(&[ErrorCode::Forbidden])
    }

    /// Adds a whole security requirement (e.g. the empty one: no credential needed).
    pub fn security_requirement(mut self, requirement: SecurityRequirement) -> Self {
        self.security.push(requirement);
        self
    }

    /// Adds a security requirement (alternatives accumulate).
    pub fn security(mut self, scheme: &'static str) -> Self {
        self.security
            .push(SecurityRequirement::new(scheme, Vec::<String>::new()));
        self
    }

    fn build(self) -> (&'static str, HttpMethod, utoipa::openapi::path::Operation) {
        let id = format!(
            "{}{}",
            method_name(&self.method),
            self.path
                .replace(['{', '}'], "")
                .replace(['/', '-'], "_")
                .trim_end_matches('_')
        );
        let mut op = OperationBuilder::new()
            .tag(self.tag)
            .summary(Some(self.summary))
            .description(self.description)
            .operation_id(Some(id));
        for (place, name, t, description, required) in self.params {
            let required = if required {
                Required::True
            } else {
                Required::False
            };
            op = op.parameter(
                ParameterBuilder::new()
                    .name(name)
                    .parameter_in(place)
                    .required(required)
                    .description(Some(description))
                    .schema(Some(of(t))),
            );
        }
        if let Some(body) = self.body {
            let required = if self.body_optional {
                Required::False
            } else {
                Required::True
            };
            op = op.request_body(Some(
                RequestBodyBuilder::new()
                    .required(Some(required))
                    .content("application/json", json(body))
                    .build(),
            ));
        }
        let mut responses = ResponsesBuilder::new();
        if let Some((description, schema)) = self.raw {
            responses = responses.response(
                "200",
                ResponseBuilder::new()
                    .description(description)
                    .content("application/json", json(schema)),
            );
        }
        for (status, (description, data)) in self.ok {
            let data = data.unwrap_or_else(any);
            responses = responses.response(
                status.to_string(),
                ResponseBuilder::new()
                    .description(description)
                    .content("application/json", json(success_envelope(status, data))),
            );
        }
        for (status, description) in self.redirects {
            let location = HeaderBuilder::new()
                .schema(of(Type::String))
                .description(Some("Where to go next"));
            responses = responses.response(
                status.to_string(),
                ResponseBuilder::new()
                    .description(description)
                    .header("Location", location.build()),
            );
        }
        let mut errors = self.errors;
        errors.insert(503, vec![ErrorCode::ServiceUnavailable.as_str().to_owned()]);
        for (status, codes) in errors {
            let description = format!("Error: {}", codes.join(", "));
            let mut response = ResponseBuilder::new()
                .description(description)
                .content("application/json", json(error_envelope(status, &codes)));
            if status == 429 || status == 503 {
                let retry = HeaderBuilder::new()
                    .schema(of(Type::Integer))
                    .description(Some("Seconds to wait before trying again"));
                response = response.header("Retry-After", retry.build());
            }
            responses = responses.response(status.to_string(), response);
        }
        op = op.responses(responses.build());
        if !self.security.is_empty() {
            op = op.securities(Some(self.security));
        }
        (self.path, self.method, op.build())
    }
}
