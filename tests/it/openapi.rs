//! The OpenAPI document (feature `openapi`): served by the opt-in route, well-formed
//! OpenAPI 3.1 (every `$ref`, path parameter and security scheme resolves), and in step
//! with the router both ways: every route in the source is documented, and every
//! documented operation is served.

use std::collections::BTreeSet;

use axum::http::{Method, StatusCode};
use sentri::capability::api_keys::ApiKeys;
use sentri::capability::audit::Audit;
use sentri::capability::devices::Devices;
use sentri::capability::lifecycle::Lifecycle;
use sentri::capability::roles::Roles;
use sentri::capability::sso::{Sso, SsoProvider};
use sentri::capability::two_factor::TwoFactor;
use sentri::core::seal::Sealer;
use sentri::db::Database;
use sentri::mail::LogMailer;
use sentri::{AccessCookieConfig, CookieConfig, ServerAuth, create_auth};
use serde_json::Value;

use crate::support::http::{call, request, send};
use crate::support::services::config;

/// A server with every capability on (and the cookies, and the registration key).
async fn everything(serve: bool) -> ServerAuth {
    let db = Database::connect("sqlite::memory:").await.unwrap();
    let sso = Sso::new("http://127.0.0.1:1/auth").provider(SsoProvider::new(
        "oidc",
        "https://idp.example.com",
        "client",
    ));
    let config = config(db.clone())
        .cookie(Some(CookieConfig::default()))
        .access_cookie(Some(AccessCookieConfig::default()))
        .api_key("registration-key-registration-key")
        .serve_openapi(serve)
        .with(Audit::new(db))
        .with(Roles::default())
        .with(Devices::default())
        .with(ApiKeys::default().scopes(["orders:read"]))
        .with(TwoFactor::new(Sealer::new("k1", [7; 32]).unwrap()))
        .with(Lifecycle::new(LogMailer).magic_link(true))
        .with(sentri::capability::workspaces::Workspaces::default())
        .with(sso);
    let auth = create_auth(config).unwrap();
    auth.migrate().await.unwrap();
    auth
}

fn app(auth: &ServerAuth) -> axum::Router {
    axum::Router::new()
        .nest("/auth", auth.router())
        .layer(auth.error_handler())
}

/// Resolves a local `$ref` (`#/components/...`).
fn resolve<'a>(doc: &'a Value, reference: &str) -> Option<&'a Value> {
    let pointer = reference.strip_prefix('#')?;
    doc.pointer(pointer)
}

/// Every `$ref` anywhere under `v`.
fn refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push(r.clone()),
                    _ => refs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

#[tokio::test]
async fn the_document_is_served_only_when_asked_and_is_openapi_3_1() {
    let off = everything(false).await;
    let r = call(&app(&off), Method::GET, "/auth/openapi.json", &[], None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    assert_eq!(r.code(), "NOT_FOUND");

    let auth = everything(true).await;
    let r = call(&app(&auth), Method::GET, "/auth/openapi.json", &[], None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        r.headers["content-type"], "application/json",
        "{:?}",
        r.headers
    );
    let doc = r.body;
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["title"], "sentri");
    assert_eq!(doc["servers"][0]["url"], "/auth", "the mount prefix");
    // The served document is the one `openapi()` builds (plus the server prefix).
    let mut built = serde_json::to_value(auth.openapi()).unwrap();
    built["servers"] = doc["servers"].clone();
    assert_eq!(doc, built);

    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    let names: BTreeSet<&str> = schemes.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "accessCookie",
            "apiKey",
            "bearer",
            "refreshCookie",
            "registrationKey"
        ])
    );
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["refreshCookie"]["in"], "cookie");
    assert_eq!(schemes["refreshCookie"]["name"], "refresh_token");
    assert_eq!(schemes["apiKey"]["in"], "header");
    assert_eq!(schemes["apiKey"]["name"], "x-sentri-key");

    let mut all_refs = Vec::new();
    refs(&doc, &mut all_refs);
    assert!(!all_refs.is_empty());
    for r in &all_refs {
        assert!(resolve(&doc, r).is_some(), "dangling $ref {r}");
    }

    let mut ids = BTreeSet::new();
    let paths = doc["paths"].as_object().unwrap();
    for (path, item) in paths {
        let params: BTreeSet<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .collect();
        for method in METHODS {
            let Some(op) = item.get(method) else { continue };
            let what = format!("{method} {path}");
            assert!(
                ids.insert(op["operationId"].as_str().unwrap().to_owned()),
                "duplicate operationId at {what}"
            );
            let declared: BTreeSet<&str> = op["parameters"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .filter(|p| p["in"] == "path")
                        .map(|p| p["name"].as_str().unwrap())
                        .collect()
                })
                .unwrap_or_default();
            assert_eq!(declared, params, "path parameters of {what}");
            let responses = op["responses"].as_object().unwrap();
            assert!(responses.contains_key("503"), "{what} documents 503");
            for (status, res) in responses {
                let code: u16 = status.parse().unwrap();
                let Some(schema) = res.pointer("/content/application~1json/schema") else {
                    assert!(
                        (300..400).contains(&code),
                        "{what} {status} has no JSON body"
                    );
                    continue;
                };
                if code >= 400 {
                    assert_eq!(schema["properties"]["error"]["enum"][0], true, "{what}");
                    assert_eq!(schema["properties"]["statusCode"]["enum"][0], code);
                    let codes = schema["properties"]["code"]["enum"].as_array().unwrap();
                    assert!(!codes.is_empty(), "{what} {status} lists its codes");
                }
            }
            if let Some(security) = op["security"].as_array() {
                for requirement in security {
                    for name in requirement.as_object().unwrap().keys() {
                        assert!(schemes.contains_key(name), "{what}: unknown scheme {name}");
                    }
                }
            }
        }
    }
    // A guarded route of sentri's admits sessions only: the session schemes, the guard's
    // refusals, and 403 CREDENTIAL_NOT_ADMITTED for an API key.
    let me = &doc["paths"]["/me"]["get"];
    let security: Vec<&str> = me["security"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_object().unwrap().keys().map(String::as_str))
        .collect();
    assert_eq!(security, ["bearer", "accessCookie", "refreshCookie"]);
    let codes_of = |status: &str| {
        me["responses"][status]["content"]["application/json"]["schema"]["properties"]["code"]
            ["enum"]
            .as_array()
            .unwrap()
            .clone()
    };
    let unauthorized = codes_of("401");
    for code in ["UNAUTHORIZED", "TOKEN_INVALID", "TOKEN_EXPIRED"] {
        assert!(unauthorized.contains(&code.into()), "{unauthorized:?}");
    }
    assert!(!unauthorized.contains(&"API_KEY_INVALID".into()));
    assert!(codes_of("403").contains(&"CREDENTIAL_NOT_ADMITTED".into()));
    // A sensitive route documents the freshness refusal.
    let change = &doc["paths"]["/change-password"]["post"]["responses"]["403"];
    let codes = change["content"]["application/json"]["schema"]["properties"]["code"]["enum"]
        .as_array()
        .unwrap();
    assert!(codes.contains(&"REAUTH_REQUIRED".into()), "{codes:?}");
    // Descriptions are for API readers: no rustdoc links or Rust internals leak in.
    let text = doc.to_string();
    for leak in ["](crate::", "[`", "serde("] {
        assert!(!text.contains(leak), "{leak} in the document");
    }
    // A request body from the route's own type.
    let login = &doc["paths"]["/login"]["post"]["requestBody"];
    assert_eq!(login["required"], true);
    let body = &login["content"]["application/json"]["schema"];
    assert_eq!(
        body["required"],
        serde_json::json!(["identifier", "password"])
    );
}

/// Every `.route("/…"` literal of sentri's router code (the core routes and every
/// capability's): a route added without its OpenAPI entry fails here.
fn routes_in_source() -> BTreeSet<String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = vec![root.join("server/routes.rs")];
    for entry in std::fs::read_dir(root.join("capability")).unwrap() {
        let routes = entry.unwrap().path().join("routes.rs");
        if routes.exists() {
            files.push(routes);
        }
    }
    let mut out = BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let mut rest = text.as_str();
        while let Some(at) = rest.find(".route(") {
            rest = &rest[at + ".route(".len()..];
            let literal = rest.trim_start();
            if let Some(lit) = literal.strip_prefix('"') {
                let end = lit.find('"').unwrap();
                out.insert(lit[..end].to_owned());
            }
        }
    }
    out
}

#[tokio::test]
async fn every_route_is_documented_and_every_documented_operation_is_served() {
    let auth = everything(true).await;
    let doc = serde_json::to_value(auth.openapi()).unwrap();
    let documented: BTreeSet<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    let in_source = routes_in_source();
    assert!(in_source.len() > 40, "{in_source:?}");
    let missing: Vec<_> = in_source.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "routes without OpenAPI entries: {missing:?}"
    );

    let app = app(&auth);
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in METHODS {
            if item.get(method).is_none() {
                continue;
            }
            let concrete: String = path
                .split('/')
                .map(|s| if s.starts_with('{') { "x" } else { s })
                .collect::<Vec<_>>()
                .join("/");
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let r = send(&app, request(m, &format!("/auth{concrete}"), &[], None)).await;
            let what = format!("{method} {path}: {} {}", r.status, r.body);
            assert_ne!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{what}");
            assert!(
                !(r.status == StatusCode::NOT_FOUND && r.body["message"] == "Not found"),
                "documented but not served: {what}"
            );
            let status = r.status.as_u16().to_string();
            assert!(
                item[method]["responses"].get(&status).is_some(),
                "undocumented status: {what}"
            );
        }
    }
}

/// The served document through `openapi-spec-validator` (the OpenAPI 3.1 JSON Schema and
/// its rules), when `.ci/venv` has it (`.ci/run` installs it): skipped loudly without it,
/// a failure with `SENTRI_TEST_REQUIRE_SERVICES=1`.
#[tokio::test]
async fn the_document_passes_the_openapi_3_1_validator() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let validator = root.join(".ci/venv/bin/openapi-spec-validator");
    if !validator.exists() {
        assert!(
            !crate::support::common::require_services(),
            "{} is missing (pip install openapi-spec-validator into .ci/venv)",
            validator.display()
        );
        crate::support::common::loud_skip(
            "openapi-spec-validator in .ci/venv",
            "the_document_passes_the_openapi_3_1_validator",
        );
        return;
    }
    let auth = everything(true).await;
    let r = call(&app(&auth), Method::GET, "/auth/openapi.json", &[], None).await;
    assert_eq!(r.status, StatusCode::OK);
    let file = std::env::temp_dir().join(format!("sentri-openapi-{}.json", uuid::Uuid::new_v4()));
    std::fs::write(&file, r.body.to_string()).unwrap();
    let out = std::process::Command::new(&validator)
        .arg(&file)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&file);
    let report =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{report}");
    assert!(report.trim_end().ends_with(": OK"), "{report}");
}
