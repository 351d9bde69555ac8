//! An in-process OpenID Connect provider for the SSO tests: discovery, authorize, token
//! (single-use codes, PKCE S256, client authentication) and JWKS, on a random loopback
//! port; ID tokens signed ES256 or RS256 with keys generated here. Hooks let a test
//! tamper with the ID token or make an endpoint fail.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{EncodingKey, Header};
use sentri::token::{Algorithm, SigningKey};
use serde_json::{Value, json};

pub const CLIENT_ID: &str = "sentri-test-client";
pub const CLIENT_SECRET: &str = "s3cret/with+reserved&chars";

/// How an endpoint behaves.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    Normal,
    Down,
    Garbage,
}

/// Makes the ID token from the default claims (a test's tampering).
pub type TokenHook = Arc<dyn Fn(&Idp, Value) -> String + Send + Sync>;

struct Pending {
    claims: Value,
    nonce: String,
    challenge: String,
    redirect_uri: String,
}

#[derive(Default)]
struct St {
    next_user: Value,
    codes: HashMap<String, Pending>,
    discovery: Option<Mode>,
    token: Option<Mode>,
    hook: Option<TokenHook>,
    token_requests: usize,
}

pub struct Idp {
    pub issuer: String,
    pub key: SigningKey,
    encoding: EncodingKey,
    st: Mutex<St>,
}

pub struct Running {
    pub idp: Arc<Idp>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl std::ops::Deref for Running {
    type Target = Idp;
    fn deref(&self) -> &Idp {
        &self.idp
    }
}

impl Idp {
    /// Starts a provider signing with a fresh key of `alg`.
    pub async fn start(alg: Algorithm) -> Running {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let key = SigningKey::generate(alg).await.unwrap();
        let pem = key.to_pkcs8_pem().unwrap();
        let encoding = match alg {
            Algorithm::ES256 => EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
            _ => EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
        };
        let idp = Arc::new(Idp {
            issuer: format!("http://127.0.0.1:{}", addr.port()),
            key,
            encoding,
            st: Mutex::new(St::default()),
        });
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/authorize", get(authorize))
            .route("/token", post(token))
            .route("/jwks", get(jwks))
            .with_state(idp.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Running { idp, task }
    }

    fn st(&self) -> std::sync::MutexGuard<'_, St> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The identity the next authorization signs in.
    pub fn next_user(&self, sub: &str, email: &str, verified: bool) {
        self.st().next_user = json!({"sub": sub, "email": email, "email_verified": verified});
    }

    pub fn set_discovery(&self, mode: Mode) {
        self.st().discovery = Some(mode);
    }

    pub fn set_token(&self, mode: Mode) {
        self.st().token = Some(mode);
    }

    pub fn set_hook(&self, hook: Option<TokenHook>) {
        self.st().hook = hook;
    }

    pub fn token_requests(&self) -> usize {
        self.st().token_requests
    }

    /// Signs `claims` with the provider's key (header `kid`, `alg`, `typ: JWT`).
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.key.algorithm());
        header.kid = Some(self.key.kid().to_owned());
        header.typ = Some("JWT".into());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }

    /// A compact JWS with this header and claims and a junk signature.
    pub fn unsigned(header: &Value, claims: &Value) -> String {
        let enc = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
        format!("{}.{}.", enc(header), enc(claims))
    }

    /// HS256 over `header.claims` keyed with `secret`.
    pub fn hs256(&self, claims: &Value, secret: &[u8]) -> String {
        let mut header = Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some(self.key.kid().to_owned());
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret)).unwrap()
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn garbage() -> Response {
    (StatusCode::OK, "<html>definitely not json").into_response()
}

async fn discovery(State(idp): State<Arc<Idp>>) -> Response {
    match idp.st().discovery.unwrap_or(Mode::Normal) {
        Mode::Down => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        Mode::Garbage => return garbage(),
        Mode::Normal => {}
    }
    let i = &idp.issuer;
    Json(json!({
        "issuer": i,
        "authorization_endpoint": format!("{i}/authorize"),
        "token_endpoint": format!("{i}/token"),
        "jwks_uri": format!("{i}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256", "RS256"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic"],
    }))
    .into_response()
}

async fn authorize(
    State(idp): State<Arc<Idp>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    assert_eq!(q.get("client_id").map(String::as_str), Some(CLIENT_ID));
    assert_eq!(q.get("response_type").map(String::as_str), Some("code"));
    assert_eq!(
        q.get("code_challenge_method").map(String::as_str),
        Some("S256")
    );
    assert!(q["scope"].split(' ').any(|s| s == "openid"));
    let code = uuid::Uuid::new_v4().simple().to_string();
    let redirect_uri = q["redirect_uri"].clone();
    let mut st = idp.st();
    let claims = st.next_user.clone();
    st.codes.insert(
        code.clone(),
        Pending {
            claims,
            nonce: q["nonce"].clone(),
            challenge: q["code_challenge"].clone(),
            redirect_uri: redirect_uri.clone(),
        },
    );
    let sep = if redirect_uri.contains('?') { '&' } else { '?' };
    Redirect::to(&format!(
        "{redirect_uri}{sep}code={code}&state={}",
        q["state"]
    ))
    .into_response()
}

fn oauth_error(code: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": code}))).into_response()
}

async fn token(State(idp): State<Arc<Idp>>, headers: HeaderMap, body: String) -> Response {
    let f: HashMap<String, String> = form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    let expected = format!(
        "Basic {}",
        STANDARD.encode(format!(
            "{CLIENT_ID}:{}",
            form_urlencoded::byte_serialize(CLIENT_SECRET.as_bytes()).collect::<String>()
        ))
    );
    let (mode, pending, hook) = {
        let mut st = idp.st();
        st.token_requests += 1;
        // Single use: the code is gone after the first exchange, whatever its outcome.
        let pending = f.get("code").and_then(|c| st.codes.remove(c));
        (st.token.unwrap_or(Mode::Normal), pending, st.hook.clone())
    };
    match mode {
        Mode::Down => return StatusCode::SERVICE_UNAVAILABLE.into_response(),
        Mode::Garbage => return garbage(),
        Mode::Normal => {}
    }
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        return oauth_error("invalid_client");
    }
    let Some(p) = pending else {
        return oauth_error("invalid_grant");
    };
    let verifier = f.get("code_verifier").cloned().unwrap_or_default();
    let challenge = URL_SAFE_NO_PAD.encode(
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes()).as_ref(),
    );
    if challenge != p.challenge || f.get("redirect_uri") != Some(&p.redirect_uri) {
        return oauth_error("invalid_grant");
    }
    let mut claims = p.claims;
    let t = now();
    claims["iss"] = json!(idp.issuer);
    claims["aud"] = json!(CLIENT_ID);
    claims["iat"] = json!(t);
    claims["exp"] = json!(t + 300);
    claims["nonce"] = json!(p.nonce);
    let id_token = match hook {
        Some(h) => h(&idp, claims),
        None => idp.sign(&claims),
    };
    Json(json!({"access_token": "at", "token_type": "Bearer", "id_token": id_token}))
        .into_response()
}

async fn jwks(State(idp): State<Arc<Idp>>) -> Json<Value> {
    Json(json!({"keys": [idp.key.public_jwk().unwrap()]}))
}
