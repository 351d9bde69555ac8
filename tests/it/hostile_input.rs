//! Hostile input into every field of every route, generated from the served OpenAPI
//! document (every capability on): for each operation and each string field or
//! parameter (request-body properties, also inside arrays; path, query and header
//! parameters), a request carries a marker in that field (four variants: markup with
//! quotes and braces, very long, unicode with a right-to-left override and a combining
//! mark, JSON-looking), the other fields plausible, as a normal user and as an admin so
//! guarded routes are reached.
//!
//! What must hold: an error answer (4xx/5xx) carries no marker at all, neither in its
//! body nor in a header; a success answer carries none in its envelope `message` nor
//! in a header (its `data` may show what was stored, e.g. a workspace's new name). Each
//! request has a marker of its own; an error answer is also searched for every marker
//! sent before it (a stored value echoed by a later error counts too).

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method, Request};
use sentri::capability::api_keys::ApiKeys;
use sentri::capability::audit::Audit;
use sentri::capability::devices::Devices;
use sentri::capability::lifecycle::Lifecycle;
use sentri::capability::roles::Roles;
use sentri::capability::sso::{Sso, SsoProvider};
use sentri::capability::two_factor::TwoFactor;
use sentri::capability::workspaces::Workspaces;
use sentri::core::seal::Sealer;
use sentri::mail::LogMailer;
use sentri::{AccessCookieConfig, CookieConfig, ServerAuth, create_auth};
use serde_json::{Value, json};

use crate::support::db::databases;
use crate::support::http::{Reply, login, send};
use crate::support::services::config;

const PW: &str = "password1";
/// Every marker starts with it (lower case, ASCII: it survives case folding and NFKC).
const FAMILY: &str = "zq9mk";

/// A server with every capability on, the cookies, and the OpenAPI route.
async fn everything(db: sentri::db::Database) -> ServerAuth {
    let sso = Sso::new("http://127.0.0.1:1/auth")
        .http_timeout(Duration::from_secs(1))
        .provider(
            SsoProvider::new("oidc", "http://127.0.0.1:1", "client").allow_insecure_http(true),
        );
    let config = config(db.clone())
        .cookie(Some(CookieConfig::default()))
        .access_cookie(Some(AccessCookieConfig::default()))
        .serve_openapi(true)
        .with(Audit::new(db))
        .with(Roles::default())
        .with(Devices::default())
        .with(ApiKeys::default().scopes(["orders:read"]))
        .with(TwoFactor::new(Sealer::new("k1", [7; 32]).unwrap()))
        .with(Lifecycle::new(LogMailer).magic_link(true))
        .with(Workspaces::default())
        .with(sso);
    let auth = create_auth(config).unwrap();
    auth.migrate().await.unwrap();
    auth
}

/// The four shapes of a marker carrying `tag`.
fn variants(tag: &str) -> [String; 4] {
    [
        format!("<{tag}\"'{{{{x}}}}>"),
        format!("{tag}{}", "A".repeat(5000)),
        format!("\u{1E9E}\u{202E}{tag}e\u{301}\u{1F600}"),
        format!("{{\"{tag}\": [\"{tag}\"], \"$ref\": \"#/{tag}\"}}"),
    ]
}

/// A plausible value for a field the test does not target.
fn filler(name: &str, schema: &Value, doc: &Value) -> Value {
    let schema = resolve(doc, schema);
    let kind = schema["type"].as_str().unwrap_or_else(|| {
        schema["type"]
            .as_array()
            .and_then(|t| t.iter().find_map(|t| t.as_str().filter(|t| *t != "null")))
            .unwrap_or("string")
    });
    match kind {
        "integer" | "number" => json!(120),
        "boolean" => json!(false),
        "array" => json!([]),
        "object" => json!({}),
        _ => match name {
            n if n.to_lowercase().contains("password") => json!(PW),
            "identifier" | "email" => json!("victim@example.com"),
            _ => json!("x1"),
        },
    }
}

/// `schema` with a local `$ref` followed (once; the document's refs are one level).
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str().and_then(|r| r.strip_prefix('#')) {
        Some(pointer) => doc.pointer(pointer).unwrap_or(schema),
        None => schema,
    }
}

/// `true` when the schema takes a string (or strings).
fn takes_string(doc: &Value, schema: &Value) -> Option<bool> {
    let schema = resolve(doc, schema);
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => {
            // oneOf / anyOf of strings, or no type at all: a string is worth a try.
            return Some(false);
        }
    };
    if types.contains(&"string") {
        return Some(false);
    }
    if types.contains(&"array") {
        return takes_string(doc, &schema["items"]).map(|_| true);
    }
    None
}

/// Where a marker goes.
#[derive(Debug, Clone)]
enum Target {
    Body { name: String, array: bool },
    Path(String),
    Query(String),
    Header(String),
}

struct Operation {
    method: Method,
    path: String,
    params: Vec<(String, String)>,
    body: Option<BTreeMap<String, Value>>,
    targets: Vec<Target>,
}

fn operations(doc: &Value) -> Vec<Operation> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let Ok(method) = method.to_uppercase().parse::<Method>() else {
                continue;
            };
            let mut targets = Vec::new();
            let mut params = Vec::new();
            let all_params = item["parameters"]
                .as_array()
                .into_iter()
                .chain(op["parameters"].as_array())
                .flatten();
            for p in all_params {
                let p = resolve(doc, p);
                let name = p["name"].as_str().unwrap().to_owned();
                let place = p["in"].as_str().unwrap().to_owned();
                params.push((place.clone(), name.clone()));
                if takes_string(doc, &p["schema"]).is_none() && place != "path" {
                    continue;
                }
                targets.push(match place.as_str() {
                    "path" => Target::Path(name),
                    "query" => Target::Query(name),
                    "header" => Target::Header(name),
                    _ => continue,
                });
            }
            let body = op["requestBody"]["content"]["application/json"]["schema"].clone();
            let body = (!body.is_null()).then(|| {
                let schema = resolve(doc, &body);
                let mut fields = BTreeMap::new();
                if let Some(props) = schema["properties"].as_object() {
                    for (name, prop) in props {
                        fields.insert(name.clone(), filler(name, prop, doc));
                        if let Some(array) = takes_string(doc, prop) {
                            targets.push(Target::Body {
                                name: name.clone(),
                                array,
                            });
                        }
                    }
                }
                fields
            });
            out.push(Operation {
                method,
                path: path.clone(),
                params,
                body,
                targets,
            });
        }
    }
    out
}

/// Percent-encodes every byte but unreserved ASCII.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The request of `op` with `marker` in `target`, as the bearer of `token`.
fn build(op: &Operation, target: &Target, marker: &str, token: &str) -> Request<Body> {
    let mut path = op.path.clone();
    let mut query = Vec::new();
    let mut headers: Vec<(String, Vec<u8>)> = Vec::new();
    for (place, name) in &op.params {
        let hit =
            matches!(target, Target::Path(n) | Target::Query(n) | Target::Header(n) if n == name);
        let value = if hit {
            marker
        } else {
            "00000000-0000-7000-8000-000000000000"
        };
        match place.as_str() {
            "path" => path = path.replace(&format!("{{{name}}}"), &encode(value)),
            "query" if hit => query.push(format!("{name}={}", encode(value))),
            "header" if hit => headers.push((name.clone(), value.as_bytes().to_vec())),
            _ => {}
        }
    }
    let mut uri = format!("/auth{path}");
    if !query.is_empty() {
        uri = format!("{uri}?{}", query.join("&"));
    }
    let mut req = Request::builder().method(op.method.clone()).uri(uri);
    req = req.header("authorization", format!("Bearer {token}"));
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
        let value = HeaderValue::from_bytes(&value).unwrap();
        req = req.header(name, value);
    }
    let body = match &op.body {
        Some(fields) => {
            let mut fields = fields.clone();
            if let Target::Body { name, array } = target {
                let v = if *array {
                    json!([marker])
                } else {
                    json!(marker)
                };
                fields.insert(name.clone(), v);
            }
            req = req.header("content-type", "application/json");
            Body::from(serde_json::to_vec(&fields).unwrap())
        }
        None => Body::empty(),
    };
    req.body(body).unwrap()
}

/// What the answer shows of `needle` (lower case), if anything the rule forbids.
fn echo(r: &Reply, needle: &str, error: bool) -> Option<String> {
    for (name, value) in &r.headers {
        let v = String::from_utf8_lossy(value.as_bytes()).to_lowercase();
        if v.contains(needle) {
            return Some(format!("header {name}: {v}"));
        }
    }
    let shown = if error {
        r.body.to_string()
    } else {
        r.body["message"].to_string()
    };
    shown.to_lowercase().contains(needle).then(|| {
        format!(
            "body: {}",
            r.body.to_string().chars().take(300).collect::<String>()
        )
    })
}

/// A new account with `roles`, signed in: its access token. (Each request sequence gets
/// its own: an operation may change the password, the identifier, or end sessions.)
async fn fresh_user(auth: &ServerAuth, app: &Router, n: usize, roles: &[&str]) -> String {
    let id = format!("user{n}@example.com");
    auth.provision_user(sentri::identity::ProvisionUser::new(&id, PW).roles(roles.iter().copied()))
        .await
        .unwrap();
    token_of(app, &id).await
}

async fn token_of(app: &Router, id: &str) -> String {
    let r = login(app, id, PW).await;
    assert_eq!(r.status.as_u16(), 200, "{id}: {:?}", r.body);
    r.body["data"]["accessToken"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn no_field_of_any_route_echoes_hostile_input() {
    let t = databases("hostile_input").await.remove(0);
    let auth = everything(t.db.clone()).await;
    let app = Router::new()
        .nest("/auth", auth.router())
        .layer(auth.error_handler());
    for (id, roles) in [
        ("root@example.com", vec!["user", "admin"]),
        ("victim@example.com", vec!["user"]),
    ] {
        auth.provision_user(sentri::identity::ProvisionUser::new(id, PW).roles(roles))
            .await
            .unwrap();
    }
    let doc = serde_json::to_value(auth.openapi()).unwrap();
    let ops = operations(&doc);
    assert!(
        ops.len() > 40,
        "the document lists {} operations",
        ops.len()
    );
    let (mut sent, mut fields, mut echoes) = (0usize, 0usize, Vec::new());
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    for op in &ops {
        fields += op.targets.len();
        for target in &op.targets {
            for (who, roles) in [("user", &["user"][..]), ("admin", &["user", "admin"][..])] {
                let token = fresh_user(&auth, &app, sent, roles).await;
                for i in 0..4 {
                    let marker_tag = format!("{FAMILY}{sent}x");
                    let marker = variants(&marker_tag)[i].clone();
                    let req = build(op, target, &marker, &token);
                    let r = send(&app, req).await;
                    sent += 1;
                    *statuses.entry(r.status.as_u16()).or_default() += 1;
                    let error = r.status.is_client_error() || r.status.is_server_error();
                    // An error shows no marker ever sent; a success not this one.
                    let needle = if error { FAMILY } else { marker_tag.as_str() };
                    if let Some(what) = echo(&r, needle, error) {
                        echoes.push(format!(
                            "{} {} {target:?} as {who} ({}): {what}",
                            op.method, op.path, r.status
                        ));
                    }
                }
            }
        }
    }
    eprintln!(
        "hostile input: {} operations, {fields} fields, {sent} requests, statuses {statuses:?}",
        ops.len()
    );
    assert!(fields > 60, "only {fields} fields targeted");
    assert!(
        echoes.is_empty(),
        "{} echoes:\n{}",
        echoes.len(),
        echoes.join("\n")
    );
    t.cleanup().await;
}
