//! Client mode end to end: a real sentri auth server and a client app on loopback
//! sockets, driven with reqwest.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sentri::client::MIN_REFETCH_COOLDOWN;
use sentri::token::{Algorithm, SigningKey};
use sentri::{
    AuthUser, ClientAuth, ClientConfig, CurrentUser, ErrorCode, RegisterInput, ServerAuth,
    ServerConfig, create_auth,
};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::support::db::{TestDb, databases};

const PASSWORD: &str = "password1";

/// What the test key server answers on `/jwks`.
#[derive(Clone)]
enum Jwks {
    Keys(Value),
    NotJson,
    Status500,
    WrongShape,
}

#[derive(Clone)]
struct KeyState {
    hits: Arc<AtomicUsize>,
    jwks: Arc<Mutex<Jwks>>,
    /// Where `/moved` redirects to (307).
    redirect_to: Arc<Mutex<String>>,
}

async fn moved_handler(State(state): State<KeyState>) -> Redirect {
    Redirect::temporary(&state.redirect_to.lock().unwrap())
}

async fn jwks_handler(State(state): State<KeyState>) -> Response {
    state.hits.fetch_add(1, Ordering::SeqCst);
    let jwks = state.jwks.lock().unwrap().clone();
    match jwks {
        Jwks::Keys(v) => axum::Json(v).into_response(),
        Jwks::NotJson => {
            ([(header::CONTENT_TYPE, "application/json")], "<html>oops").into_response()
        }
        Jwks::Status500 => (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response(),
        Jwks::WrongShape => {
            axum::Json(json!({"keys": [{"kty": "RSA", "kid": "x"}], "extra": 1})).into_response()
        }
    }
}

/// A real sentri server (SQLite) plus a counting `/jwks` route whose content the test
/// controls.
struct AuthServer {
    _db: TestDb,
    auth: ServerAuth,
    addr: SocketAddr,
    keys: KeyState,
    task: JoinHandle<()>,
}

async fn serve(app: Router) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (addr, task)
}

fn server_config(t: &TestDb, key: SigningKey) -> ServerConfig {
    ServerConfig::new(t.db.clone(), key, ["user", "admin"])
        .salt_rounds(4)
        .cookie(None)
}

impl AuthServer {
    async fn start(alg: Algorithm, test: &str) -> Self {
        let t = databases(test).await.remove(0);
        let key = SigningKey::generate(alg).await.unwrap();
        let auth = create_auth(server_config(&t, key)).unwrap();
        auth.register(RegisterInput {
            identifier: "admin@example.com".into(),
            password: PASSWORD.into(),
            roles: Some(vec!["admin".into()]),
        })
        .await
        .unwrap();
        auth.register(RegisterInput {
            identifier: "user@example.com".into(),
            password: PASSWORD.into(),
            roles: None,
        })
        .await
        .unwrap();
        let keys = KeyState {
            hits: Arc::new(AtomicUsize::new(0)),
            jwks: Arc::new(Mutex::new(Jwks::Keys(auth.tokens().jwks()))),
            redirect_to: Arc::new(Mutex::new("/jwks".into())),
        };
        let app = Router::new()
            .route("/jwks", get(jwks_handler).with_state(keys.clone()))
            .route("/moved", get(moved_handler).with_state(keys.clone()))
            .nest("/auth", auth.router())
            .layer(auth.error_handler());
        let (addr, task) = serve(app).await;
        AuthServer {
            _db: t,
            auth,
            addr,
            keys,
            task,
        }
    }

    fn key_uri(&self) -> String {
        format!("http://{}/jwks", self.addr)
    }

    /// Makes `/moved` redirect to `location`.
    fn redirect_to(&self, location: String) {
        *self.keys.redirect_to.lock().unwrap() = location;
    }

    fn hits(&self) -> usize {
        self.keys.hits.load(Ordering::SeqCst)
    }

    fn set(&self, jwks: Jwks) {
        *self.keys.jwks.lock().unwrap() = jwks;
    }

    fn publish(&self, auth: &ServerAuth) {
        self.set(Jwks::Keys(auth.tokens().jwks()));
    }

    /// Logs in over HTTP; returns (access token, refresh token).
    async fn login(&self, identifier: &str) -> (String, String) {
        let res = http()
            .post(format!("http://{}/auth/login", self.addr))
            .json(&json!({"identifier": identifier, "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let body: Value = res.json().await.unwrap();
        (
            body["data"]["accessToken"].as_str().unwrap().to_owned(),
            body["data"]["refreshToken"].as_str().unwrap().to_owned(),
        )
    }

    fn stop(&self) {
        self.task.abort();
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// The client app: `/api/profile` (protect) and `/api/admin` (authorize admin).
struct ClientApp {
    base: String,
    http: reqwest::Client,
    _task: JoinHandle<()>,
}

impl ClientApp {
    async fn start(auth: &ClientAuth) -> Self {
        let app = Router::new()
            .route(
                "/api/profile",
                get(|u: CurrentUser| async move {
                    axum::Json(json!({"user": u.user, "sid": u.session_id}))
                })
                .route_layer(auth.protect()),
            )
            .route(
                "/api/admin",
                get(|| async { "admin" }).route_layer(auth.authorize(["admin"])),
            )
            .layer(auth.error_handler());
        let (addr, task) = serve(app).await;
        ClientApp {
            base: format!("http://{addr}"),
            http: http(),
            _task: task,
        }
    }

    async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let res = req.send().await.unwrap();
        let status = res.status();
        let bytes = res.bytes().await.unwrap();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, body)
    }

    async fn code(&self, path: &str, token: Option<&str>) -> (StatusCode, String) {
        let (s, b) = self.get(path, token).await;
        (s, b["code"].as_str().unwrap_or("").to_owned())
    }
}

fn client_config(server: &AuthServer) -> ClientConfig {
    ClientConfig::new(server.key_uri())
        .valid_roles(["user", "admin"])
        .refetch_cooldown(MIN_REFETCH_COOLDOWN)
}

/// Past the refetch cooldown (and the retry delay it bounds).
async fn past_cooldown() {
    tokio::time::sleep(MIN_REFETCH_COOLDOWN + Duration::from_millis(100)).await;
}

fn client(config: ClientConfig) -> ClientAuth {
    create_auth(config).unwrap()
}

/// A real token with its header replaced (signature left as is).
fn forge(token: &str, header: &Value) -> String {
    let mut parts = token.splitn(2, '.');
    let _ = parts.next();
    let rest = parts.next().unwrap();
    format!("{}.{rest}", URL_SAFE_NO_PAD.encode(header.to_string()))
}

/// Polls until `f` holds (the client refreshes in the background).
async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if f().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const TOKEN_INVALID: (StatusCode, &str) = (StatusCode::UNAUTHORIZED, "TOKEN_INVALID");

#[tokio::test]
async fn client_verifies_rs256_es256_and_eddsa_tokens_from_a_real_server() {
    for alg in [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA] {
        let server = AuthServer::start(alg, "client::algs").await;
        let auth = client(client_config(&server));
        let app = ClientApp::start(&auth).await;
        assert_eq!(server.hits(), 0, "{alg:?}: keys are fetched lazily");

        let (admin, _) = server.login("admin@example.com").await;
        let (user, refresh) = server.login("user@example.com").await;

        let (s, body) = app.get("/api/profile", Some(&admin)).await;
        assert_eq!(s, StatusCode::OK, "{alg:?} {body}");
        assert_eq!(body["user"]["identifier"], "admin@example.com");
        assert_eq!(body["user"]["roles"], json!(["admin"]));
        assert!(!body["sid"].as_str().unwrap().is_empty());
        assert_eq!(
            app.get("/api/admin", Some(&admin)).await.0,
            StatusCode::OK,
            "{alg:?}"
        );
        assert_eq!(
            app.get("/api/profile", Some(&user)).await.0,
            StatusCode::OK,
            "{alg:?}"
        );
        assert_eq!(
            app.code("/api/admin", Some(&user)).await,
            (StatusCode::FORBIDDEN, "FORBIDDEN".into())
        );
        assert_eq!(
            app.code("/api/profile", None).await,
            (StatusCode::UNAUTHORIZED, "UNAUTHORIZED".into())
        );
        assert_eq!(
            app.code("/api/admin", None).await,
            (StatusCode::UNAUTHORIZED, "UNAUTHORIZED".into())
        );
        let (s, c) = app.code("/api/profile", Some("garbage")).await;
        assert_eq!((s, c.as_str()), TOKEN_INVALID, "{alg:?}");
        let (s, c) = app.code("/api/profile", Some(&refresh)).await;
        assert_eq!(
            (s, c.as_str()),
            TOKEN_INVALID,
            "{alg:?}: refresh token as access token"
        );
        // A token whose payload was tampered with.
        let mut parts: Vec<&str> = admin.split('.').collect();
        let payload = URL_SAFE_NO_PAD.encode(r#"{"sub":"x","identifier":"x","roles":["admin"],"sid":"s","iat":1,"exp":99999999999,"jti":"j"}"#);
        parts[1] = &payload;
        let (s, c) = app.code("/api/admin", Some(&parts.join("."))).await;
        assert_eq!((s, c.as_str()), TOKEN_INVALID, "{alg:?}: tampered payload");

        // The access cookie works too (the Bearer header wins when both are present).
        let res = app
            .http
            .get(format!("{}/api/profile", app.base))
            .header(header::COOKIE, format!("access_token={user}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{alg:?}: access cookie");

        // Same kid everywhere: one fetch served all of that.
        assert_eq!(server.hits(), 1, "{alg:?}");
        server.stop();
    }
}

#[tokio::test]
async fn issuer_audience_and_revocation_hook_are_enforced() {
    let server = AuthServer::start(Algorithm::ES256, "client::iss").await;
    let (token, _) = server.login("user@example.com").await;

    // The server puts no iss/aud in its tokens: a client that requires them refuses.
    let strict = client(client_config(&server).issuer("https://auth.example.com"));
    let app = ClientApp::start(&strict).await;
    let (s, c) = app.code("/api/profile", Some(&token)).await;
    assert_eq!((s, c.as_str()), TOKEN_INVALID);
    let strict = client(client_config(&server).audience("my-api"));
    let app = ClientApp::start(&strict).await;
    let (s, c) = app.code("/api/profile", Some(&token)).await;
    assert_eq!((s, c.as_str()), TOKEN_INVALID);

    // A server with iss/aud and a client that expects the same.
    let t = databases("client::iss2").await.remove(0);
    let key = SigningKey::generate(Algorithm::ES256).await.unwrap();
    let mut cfg = server_config(&t, key);
    cfg.issuer = Some("https://auth.example.com".into());
    cfg.audience = Some("my-api".into());
    let issuing = create_auth(cfg).unwrap();
    server.publish(&issuing);
    let user = AuthUser {
        id: "u1".into(),
        identifier: "u@example.com".into(),
        roles: vec!["user".into()],
    };
    let good = issuing.sign_access_token(&user, "sid-1").unwrap();
    let revoked = issuing.sign_access_token(&user, "sid-revoked").unwrap();
    let auth = client(
        client_config(&server)
            .issuer("https://auth.example.com")
            .audience("my-api")
            .is_token_revoked(Arc::new(|sid: String| {
                Box::pin(async move { sid == "sid-revoked" })
            })),
    );
    let app = ClientApp::start(&auth).await;
    assert_eq!(app.get("/api/profile", Some(&good)).await.0, StatusCode::OK);
    let (s, c) = app.code("/api/profile", Some(&revoked)).await;
    assert_eq!((s, c.as_str()), TOKEN_INVALID);
    let claims = auth.verify_access_token(&good).await.unwrap();
    assert_eq!(claims.sid, "sid-1");
    server.stop();
}

#[tokio::test]
async fn key_rotation_is_picked_up_without_restart() {
    let server = AuthServer::start(Algorithm::ES256, "client::rotation").await;
    let auth = client(client_config(&server).cache_ttl(Duration::from_millis(300)));
    let app = ClientApp::start(&auth).await;
    let (old_token, _) = server.login("user@example.com").await;
    assert_eq!(
        app.get("/api/profile", Some(&old_token)).await.0,
        StatusCode::OK
    );
    assert_eq!(server.hits(), 1);

    // The server rotates: a new key signs, the old one is still published.
    let old_key = server.auth.tokens().current_key().clone();
    let new_key = SigningKey::generate(Algorithm::EdDSA).await.unwrap();
    let rotated =
        create_auth(server_config(&server._db, new_key.clone()).previous_key(old_key)).unwrap();
    server.publish(&rotated);
    let user = AuthUser {
        id: "u1".into(),
        identifier: "user@example.com".into(),
        roles: vec!["user".into()],
    };
    let new_token = rotated.sign_access_token(&user, "sid-new").unwrap();
    past_cooldown().await;
    let (s, body) = app.get("/api/profile", Some(&new_token)).await;
    assert_eq!(
        s,
        StatusCode::OK,
        "new key picked up on unknown kid: {body}"
    );
    assert_eq!(
        app.get("/api/profile", Some(&old_token)).await.0,
        StatusCode::OK,
        "old key still published"
    );

    // The old key is retired: once the cache expires, old-key tokens are refused.
    let retired = create_auth(server_config(&server._db, new_key)).unwrap();
    server.publish(&retired);
    eventually("old-key token refused after refetch", || async {
        app.code("/api/profile", Some(&old_token)).await
            == (StatusCode::UNAUTHORIZED, "TOKEN_INVALID".into())
    })
    .await;
    assert_eq!(
        app.get("/api/profile", Some(&new_token)).await.0,
        StatusCode::OK
    );
    server.stop();
}

#[tokio::test]
async fn cached_keys_keep_working_when_the_key_endpoint_goes_down() {
    let server = AuthServer::start(Algorithm::ES256, "client::down").await;
    let auth = client(client_config(&server).cache_ttl(Duration::from_millis(100)));
    auth.prefetch().await.unwrap();
    assert_eq!(server.hits(), 1);
    let (token, _) = server.login("user@example.com").await;
    let app = ClientApp::start(&auth).await;
    server.stop();
    eventually("server task stopped", || async {
        server.task.is_finished()
    })
    .await;
    // Past the cache lifetime: background refreshes fail, the old keys stay.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(
            app.get("/api/profile", Some(&token)).await.0,
            StatusCode::OK
        );
    }
    let err = auth.prefetch().await.unwrap_err();
    assert!(err.is(&ErrorCode::ServiceUnavailable), "{err:?}");
    assert_eq!(
        app.get("/api/profile", Some(&token)).await.0,
        StatusCode::OK
    );
    // An unknown kid while the endpoint is down: 401, never a 5xx.
    let forged = forge(
        &token,
        &json!({"alg": "ES256", "typ": "at+jwt", "kid": "nope"}),
    );
    let (s, c) = app.code("/api/profile", Some(&forged)).await;
    assert_eq!((s, c.as_str()), TOKEN_INVALID);
}

#[tokio::test]
async fn never_fetched_keys_with_the_endpoint_down_is_503() {
    let server = AuthServer::start(Algorithm::ES256, "client::never").await;
    let (token, _) = server.login("user@example.com").await;
    // A port nobody listens on.
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let auth = client(ClientConfig::new(format!("http://{dead_addr}/auth/keys")));
    let app = ClientApp::start(&auth).await;
    let (s, body) = app.get("/api/profile", Some(&token)).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["code"], "SERVICE_UNAVAILABLE");
    assert_eq!(
        app.code("/api/profile", None).await,
        (StatusCode::UNAUTHORIZED, "UNAUTHORIZED".into())
    );
    let err = auth.prefetch().await.unwrap_err();
    assert!(err.is(&ErrorCode::ServiceUnavailable));
    server.stop();
}

#[tokio::test]
async fn garbage_jwks_is_503_before_keys_and_ignored_after() {
    let server = AuthServer::start(Algorithm::RS256, "client::garbage").await;
    let (token, _) = server.login("admin@example.com").await;
    let auth = client(client_config(&server).cache_ttl(Duration::from_millis(100)));
    let app = ClientApp::start(&auth).await;
    let good = server.auth.tokens().jwks();

    for bad in [
        Jwks::NotJson,
        Jwks::Status500,
        Jwks::WrongShape,
        Jwks::Keys(json!({"keys": []})),
    ] {
        server.set(bad);
        past_cooldown().await; // past the retry delay
        let (s, body) = app.get("/api/profile", Some(&token)).await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body["code"], "SERVICE_UNAVAILABLE");
    }
    let failed = server.hits();
    assert_eq!(failed, 4);

    server.set(Jwks::Keys(good));
    past_cooldown().await;
    assert_eq!(app.get("/api/admin", Some(&token)).await.0, StatusCode::OK);

    // Garbage while keys are held: still 200, and the client keeps retrying.
    for bad in [Jwks::NotJson, Jwks::Status500, Jwks::WrongShape] {
        server.set(bad);
        let before = server.hits();
        eventually("a refresh attempt against the garbage endpoint", || async {
            assert_eq!(app.get("/api/admin", Some(&token)).await.0, StatusCode::OK);
            server.hits() > before
        })
        .await;
        assert_eq!(app.get("/api/admin", Some(&token)).await.0, StatusCode::OK);
    }
    server.stop();
}

#[tokio::test]
async fn random_kids_cannot_hammer_the_key_server() {
    let server = AuthServer::start(Algorithm::ES256, "client::flood").await;
    let (token, _) = server.login("user@example.com").await;
    let auth = client(client_config(&server).refetch_cooldown(Duration::from_secs(60)));
    let app = ClientApp::start(&auth).await;
    for batch in 0..20 {
        let forged: Vec<String> = (0..50)
            .map(|_| forge(&token, &json!({"alg": "ES256", "typ": "at+jwt", "kid": uuid::Uuid::new_v4().to_string()})))
            .collect();
        let replies = futures_util::future::join_all(
            forged.iter().map(|t| app.code("/api/profile", Some(t))),
        )
        .await;
        for (s, c) in replies {
            assert_eq!((s, c.as_str()), TOKEN_INVALID, "batch {batch}");
        }
    }
    assert!(
        server.hits() <= 2,
        "{} fetches for 1000 random kids",
        server.hits()
    );
    assert_eq!(
        app.get("/api/profile", Some(&token)).await.0,
        StatusCode::OK
    );
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_requests_share_one_fetch() {
    let server = AuthServer::start(Algorithm::EdDSA, "client::single_flight").await;
    let (token, _) = server.login("user@example.com").await;
    let auth = client(client_config(&server));
    let app = ClientApp::start(&auth).await;
    let replies =
        futures_util::future::join_all((0..20).map(|_| app.get("/api/profile", Some(&token))))
            .await;
    for (s, body) in replies {
        assert_eq!(s, StatusCode::OK, "{body}");
    }
    assert_eq!(server.hits(), 1);

    // The same when the endpoint is failing: one attempt, twenty 503s.
    server.set(Jwks::Status500);
    let auth = client(client_config(&server).refetch_cooldown(Duration::from_secs(60)));
    let app = ClientApp::start(&auth).await;
    let replies =
        futures_util::future::join_all((0..20).map(|_| app.code("/api/profile", Some(&token))))
            .await;
    for (s, c) in replies {
        assert_eq!(
            (s, c.as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, "SERVICE_UNAVAILABLE")
        );
    }
    assert_eq!(server.hits(), 2);
    server.stop();
}

#[test]
fn configuration_errors() {
    let code = |c: ClientConfig| create_auth(c).unwrap_err().code().clone();
    for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
        assert_eq!(
            code(ClientConfig::new("https://a.example/keys").algorithms([Algorithm::ES256, alg])),
            ErrorCode::ConfigurationError
        );
    }
    for uri in [
        "ftp://a.example/keys",
        "file:///etc/keys",
        "not a url",
        "",
        "https://",
    ] {
        assert_eq!(
            code(ClientConfig::new(uri)),
            ErrorCode::ConfigurationError,
            "{uri}"
        );
    }
    assert_eq!(
        code(ClientConfig::new("https://a.example/keys").algorithms([])),
        ErrorCode::ConfigurationError
    );
    assert_eq!(
        code(ClientConfig::new("https://a.example/keys").valid_roles(Vec::<String>::new())),
        ErrorCode::ConfigurationError
    );
    assert_eq!(
        code(ClientConfig::new("https://a.example/keys").leeway(Duration::from_secs(600))),
        ErrorCode::ConfigurationError
    );
    assert_eq!(
        code(ClientConfig::new("https://a.example/keys").access_cookie(Some(String::new()))),
        ErrorCode::ConfigurationError
    );

    let cfg = ClientConfig::new("https://user:s3cret@a.example/keys");
    assert!(!format!("{cfg:?}").contains("s3cret"));
    let auth = create_auth(cfg).unwrap();
    assert!(!format!("{auth:?}").contains("s3cret"));
    // Without valid_roles any role name is accepted.
    let _ = auth.authorize(["anything"]);
}

#[test]
#[should_panic(expected = "is not one of valid_roles")]
fn authorize_panics_on_an_unknown_role() {
    let auth =
        create_auth(ClientConfig::new("https://a.example/keys").valid_roles(["user", "admin"]))
            .unwrap();
    let _ = auth.authorize(["admni"]);
}

#[test]
fn key_uri_must_be_https_unless_loopback_or_opted_in() {
    let code = |c: ClientConfig| create_auth(c).err().map(|e| e.code().clone());
    // Configuration only: nothing is fetched, so no traffic leaves the machine.
    for uri in [
        "http://example.com/jwks",
        "http://10.0.0.1/jwks",
        "http://localhost.example.com/jwks",
        "http://[2001:db8::1]/jwks",
    ] {
        assert_eq!(
            code(ClientConfig::new(uri)),
            Some(ErrorCode::ConfigurationError),
            "{uri}"
        );
        assert_eq!(
            code(ClientConfig::new(uri).allow_insecure_http(true)),
            None,
            "{uri} with the opt-in"
        );
    }
    for uri in [
        "https://example.com/jwks",
        "http://localhost:8080/jwks",
        "http://127.0.0.1:8080/jwks",
        "http://127.1.2.3/jwks",
        "http://[::1]:8080/jwks",
    ] {
        assert_eq!(code(ClientConfig::new(uri)), None, "{uri}");
    }
}

#[test]
fn refetch_cooldown_has_a_one_second_floor() {
    let code = |d: Duration| {
        create_auth(ClientConfig::new("https://a.example/keys").refetch_cooldown(d))
            .err()
            .map(|e| e.code().clone())
    };
    for d in [
        Duration::ZERO,
        Duration::from_millis(1),
        Duration::from_millis(999),
    ] {
        assert_eq!(code(d), Some(ErrorCode::ConfigurationError), "{d:?}");
    }
    assert_eq!(code(MIN_REFETCH_COOLDOWN), None);
    assert_eq!(code(Duration::from_secs(30)), None);
}

/// `prefetch` fails with a source that says why.
async fn prefetch_error(auth: &ClientAuth) -> String {
    let err = auth.prefetch().await.unwrap_err();
    assert!(err.is(&ErrorCode::ServiceUnavailable), "{err:?}");
    format!("{err:?}")
}

#[tokio::test]
async fn redirects_are_followed_only_on_the_same_host_and_port() {
    let server = AuthServer::start(Algorithm::ES256, "client::redirects").await;
    let other = AuthServer::start(Algorithm::ES256, "client::redirects2").await;
    let (token, _) = server.login("user@example.com").await;
    let port = server.addr.port();

    // Same host and port: followed.
    let auth = client(
        ClientConfig::new(format!("http://127.0.0.1:{port}/moved"))
            .refetch_cooldown(MIN_REFETCH_COOLDOWN),
    );
    auth.prefetch().await.unwrap();
    assert_eq!(server.hits(), 1);
    let app = ClientApp::start(&auth).await;
    assert_eq!(
        app.get("/api/profile", Some(&token)).await.0,
        StatusCode::OK
    );

    // Another host (the same server named `localhost`), another port, a loop: refused,
    // the target is never asked, and the keys already held stay in use.
    for (location, why) in [
        (format!("http://localhost:{port}/jwks"), "another host"),
        (
            format!("http://127.0.0.1:{}/jwks", other.addr.port()),
            "another host",
        ),
        ("/moved".to_owned(), "more than 5 redirects"),
    ] {
        server.redirect_to(location.clone());
        let msg = prefetch_error(&auth).await;
        assert!(
            msg.contains("redirect refused") && msg.contains(why),
            "{location}: {msg}"
        );
        assert_eq!(server.hits(), 1, "{location}");
        assert_eq!(other.hits(), 0, "{location}");
        assert_eq!(
            app.get("/api/profile", Some(&token)).await.0,
            StatusCode::OK,
            "{location}: old keys kept"
        );
    }

    // Both targets are reachable directly, so the refusals above were the policy's.
    let direct = client(ClientConfig::new(format!("http://localhost:{port}/jwks")));
    direct.prefetch().await.unwrap();
    assert_eq!(server.hits(), 2);
    client(client_config(&other)).prefetch().await.unwrap();
    assert_eq!(other.hits(), 1);
    server.stop();
    other.stop();
}
