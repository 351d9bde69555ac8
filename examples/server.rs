//! sentri's example auth server: `cargo run --example server`.
//!
//! Configured only by environment variables (see README): by default it listens on
//! 127.0.0.1:3000 and keeps users in the SQLite file `sentri-example.db`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use sentri::capability::lifecycle::Lifecycle;
use sentri::capability::two_factor::TwoFactor;
use sentri::core::seal::Sealer;
use sentri::db::Database;
use sentri::identity::ProvisionUser;
use sentri::keystore::KeyStoreConfig;
use sentri::mail::LogMailer;
use sentri::token::{Algorithm, SigningKey};
use sentri::{
    AccessCookieConfig, CookieConfig, CurrentUser, IdempotencyOptions, PermitOptions, SentriError,
    ServerAuth, ServerConfig, create_auth, http::success,
};

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The two-factor capability, its secrets sealed under `SENTRI_2FA_KEY` (id
/// `SENTRI_2FA_KEY_ID`, default `k1`); a random key (with a warning) when unset.
fn two_factor() -> Result<TwoFactor, SentriError> {
    let kid = env("SENTRI_2FA_KEY_ID").unwrap_or_else(|| "k1".into());
    let sealer = match env("SENTRI_2FA_KEY") {
        Some(key) => Sealer::from_base64(&kid, &key)?,
        None => {
            tracing::warn!(
                "SENTRI_2FA_KEY is not set: generated a random key; 2FA devices die with this process"
            );
            let mut key = [0u8; 32];
            aws_lc_rs::rand::fill(&mut key)
                .map_err(|_| SentriError::configuration("no randomness for SENTRI_2FA_KEY"))?;
            Sealer::new(&kid, key)?
        }
    };
    let issuer = env("SENTRI_ISSUER").unwrap_or_else(|| "sentri example".into());
    Ok(TwoFactor::new(sealer).issuer(issuer))
}

fn algorithm(name: &str) -> Result<Algorithm, SentriError> {
    Ok(match name.to_ascii_uppercase().as_str() {
        "HS256" => Algorithm::HS256,
        "HS384" => Algorithm::HS384,
        "HS512" => Algorithm::HS512,
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "ES256" => Algorithm::ES256,
        "EDDSA" => Algorithm::EdDSA,
        other => {
            return Err(SentriError::configuration(format!(
                "SENTRI_ALGORITHM={other} is not supported"
            )));
        }
    })
}

async fn signing_key() -> Result<SigningKey, SentriError> {
    let alg = algorithm(&env("SENTRI_ALGORITHM").unwrap_or_else(|| "HS256".into()))?;
    match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => match env("SENTRI_SECRET") {
            Some(secret) => match alg {
                Algorithm::HS384 => SigningKey::hs384(secret.as_bytes()),
                Algorithm::HS512 => SigningKey::hs512(secret.as_bytes()),
                _ => SigningKey::hs256(secret.as_bytes()),
            },
            None => {
                tracing::warn!(
                    "SENTRI_SECRET is not set: generated a random secret; tokens die with this process"
                );
                SigningKey::generate(alg).await
            }
        },
        _ => match env("SENTRI_PRIVATE_KEY_FILE") {
            Some(path) => {
                let pem = std::fs::read_to_string(&path).map_err(|e| {
                    SentriError::configuration(format!(
                        "cannot read SENTRI_PRIVATE_KEY_FILE {path}"
                    ))
                    .with_source(e)
                })?;
                SigningKey::from_pem(alg, &pem)
            }
            None if env("SENTRI_KEK").is_some() => {
                // Only signs until the database key store has loaded (see key_store).
                SigningKey::generate(alg).await
            }
            None => {
                tracing::warn!(
                    "neither SENTRI_PRIVATE_KEY_FILE nor SENTRI_KEK is set: generated an ephemeral {alg:?} key"
                );
                SigningKey::generate(alg).await
            }
        },
    }
}

#[derive(Clone)]
struct App {
    auth: ServerAuth,
    orders: Arc<AtomicU64>,
}

async fn health(State(app): State<App>) -> (StatusCode, Json<serde_json::Value>) {
    let started = Instant::now();
    let health = app.auth.database().health_check().await;
    let latency = started.elapsed().as_secs_f64() * 1000.0;
    let status = if health.healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let label = if health.healthy { "ok" } else { "unavailable" };
    (
        status,
        Json(serde_json::json!({ "status": label, "latencyMs": latency })),
    )
}

async fn profile(user: CurrentUser) -> Response {
    success(
        StatusCode::OK,
        "Profile",
        serde_json::json!({ "user": user.user }),
    )
}

async fn admin(user: CurrentUser) -> Response {
    success(
        StatusCode::OK,
        "Welcome, admin",
        serde_json::json!({ "user": user.user }),
    )
}

async fn workspace(ws: sentri::http::CurrentWorkspace, user: CurrentUser) -> Response {
    success(
        StatusCode::OK,
        "Workspace",
        serde_json::json!({ "workspace": ws.id, "roles": ws.roles.to_vec(), "user": user.user.id }),
    )
}

async fn reports(permissions: sentri::core::principal::Permissions) -> Response {
    success(
        StatusCode::OK,
        "Reports",
        serde_json::json!({ "permissions": permissions.iter().collect::<Vec<_>>() }),
    )
}

async fn update_user(Path(id): Path<String>, user: CurrentUser) -> Response {
    success(
        StatusCode::OK,
        "User updated",
        serde_json::json!({ "id": id, "by": user.user.id }),
    )
}

async fn create_order(State(app): State<App>, user: CurrentUser) -> Response {
    let seq = app.orders.fetch_add(1, Ordering::SeqCst) + 1;
    success(
        StatusCode::CREATED,
        "Order created",
        serde_json::json!({ "orderId": uuid::Uuid::now_v7().to_string(), "seq": seq, "userId": user.user.id }),
    )
}

/// `GET /api/orders`: the caller's order count; an API key needs the `orders:read` scope.
#[cfg(feature = "api-keys")]
async fn list_orders(State(app): State<App>, user: CurrentUser) -> Response {
    let via = user.credential.as_ref().map_or("session", |c| c.kind);
    success(
        StatusCode::OK,
        "Orders",
        serde_json::json!({ "count": app.orders.load(Ordering::SeqCst), "userId": user.user.id, "via": via }),
    )
}

async fn ensure_admin(auth: &ServerAuth) -> Result<(), SentriError> {
    let (Some(identifier), Some(password)) =
        (env("SENTRI_ADMIN_IDENTIFIER"), env("SENTRI_ADMIN_PASSWORD"))
    else {
        return Ok(());
    };
    // Idempotent: the same admin on every start; a different user with that identifier
    // is a conflict, never silently changed.
    let admin = ProvisionUser::new(identifier, password)
        .roles(["admin", "user"])
        .mark_email_verified(true);
    auth.provision_user(admin).await?;
    tracing::info!("admin user in place");
    Ok(())
}

/// With an asymmetric `SENTRI_ALGORITHM`, no `SENTRI_PRIVATE_KEY_FILE` and a
/// key-encryption key in `SENTRI_KEK` (base64, 32 bytes; id `SENTRI_KEK_ID`, default
/// `kek-1`), the signing keys live in the database: every server on the same database
/// publishes the same JWKS and accepts the others' tokens. The schedule (durations like
/// `30d`, `1h`, `60s`): `SENTRI_KEY_ROTATION`, how long each key signs (default 30d);
/// `SENTRI_KEY_PUBLISH_AHEAD`, how long a new key is published before it signs (default
/// 1h; longer than `SENTRI_KEY_REFRESH`); `SENTRI_KEY_REFRESH`, how often the server
/// reloads the keys, which bounds how long it still accepts a key revoked elsewhere
/// (default 60s).
fn key_store() -> Result<Option<KeyStoreConfig>, SentriError> {
    let alg = algorithm(&env("SENTRI_ALGORITHM").unwrap_or_else(|| "HS256".into()))?;
    let symmetric = matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512);
    if symmetric || env("SENTRI_PRIVATE_KEY_FILE").is_some() {
        return Ok(None);
    }
    let Some(kek) = env("SENTRI_KEK") else {
        return Ok(None);
    };
    let kid = env("SENTRI_KEK_ID").unwrap_or_else(|| "kek-1".into());
    let mut store = KeyStoreConfig::new(Sealer::from_base64(&kid, &kek)?).algorithm(alg);
    if let Some(period) = env("SENTRI_KEY_ROTATION") {
        store = store.rotation_period(sentri::clock::parse_duration(&period)?);
    }
    if let Some(ahead) = env("SENTRI_KEY_PUBLISH_AHEAD") {
        store = store.publish_ahead(sentri::clock::parse_duration(&ahead)?);
    }
    if let Some(every) = env("SENTRI_KEY_REFRESH") {
        store = store.refresh_interval(sentri::clock::parse_duration(&every)?);
    }
    Ok(Some(store))
}
// --- account lifecycle: verification, reset, sign-in links -----------------------------
/// The lifecycle capability: real mail when `SMTP_URL` is set (feature `smtp`), else the
/// log mailer — **development only, not for production**: it writes links and codes to
/// the log.
fn lifecycle() -> Result<Lifecycle, SentriError> {
    let lifecycle = match env("SMTP_URL") {
        #[cfg(feature = "smtp")]
        Some(url) => Lifecycle::new(sentri::mail::SmtpMailer::from_url(&url)?),
        #[cfg(not(feature = "smtp"))]
        Some(_) => {
            return Err(SentriError::configuration(
                "SMTP_URL needs the `smtp` feature: cargo run --example server --features smtp",
            ));
        }
        None => {
            tracing::warn!(
                "SMTP_URL is not set: using the log mailer (development only, not for production)"
            );
            Lifecycle::new(LogMailer)
        }
    };
    let lifecycle =
        lifecycle.app_url(env("APP_URL").unwrap_or_else(|| "http://localhost:3000".into()));
    match env("MAIL_FROM") {
        Some(from) => lifecycle.sender("sentri example", &from),
        None => Ok(lifecycle),
    }
}
// --- end account lifecycle ---------------------------------------------------------------
/// Single sign-on from the environment: `SSO_ISSUER`, `SSO_CLIENT_ID`,
/// `SSO_CLIENT_SECRET`, `SSO_PROVIDER` (name in the routes, default `oidc`),
/// `SSO_BASE_URL` (where `/auth` is served, default `http://{SENTRI_ADDR}/auth`; the
/// redirect URI to register is `{SSO_BASE_URL}/sso/{SSO_PROVIDER}/callback`),
/// `SSO_ALLOWED_DOMAINS` (comma-separated), `SSO_LINK_VERIFIED_EMAIL=1`,
/// `SSO_RETURN_TO_ORIGINS` (comma-separated), `SSO_ALLOW_INSECURE_HTTP=1` (plain-http
/// issuers, for a local test provider). Start with `GET /auth/sso/{SSO_PROVIDER}/start`.
#[cfg(feature = "sso")]
fn sso_from_env(addr: SocketAddr) -> Option<sentri::capability::sso::Sso> {
    use sentri::capability::sso::{Sso, SsoProvider};
    let list = |name: &str| -> Vec<String> {
        env(name)
            .map(|v| v.split(',').map(|s| s.trim().to_owned()).collect())
            .unwrap_or_default()
    };
    let issuer = env("SSO_ISSUER")?;
    let name = env("SSO_PROVIDER").unwrap_or_else(|| "oidc".into());
    let client_id = env("SSO_CLIENT_ID").unwrap_or_else(|| "sentri-example".into());
    let mut provider = SsoProvider::new(name, issuer, client_id)
        .allowed_domains(list("SSO_ALLOWED_DOMAINS"))
        .link_verified_email(env("SSO_LINK_VERIFIED_EMAIL").as_deref() == Some("1"))
        .allow_insecure_http(env("SSO_ALLOW_INSECURE_HTTP").as_deref() == Some("1"));
    if let Some(secret) = env("SSO_CLIENT_SECRET") {
        provider = provider.client_secret(secret);
    }
    let base = env("SSO_BASE_URL").unwrap_or_else(|| format!("http://{addr}/auth"));
    let mut sso = Sso::new(base.clone())
        .provider(provider)
        .cookie_secure(base.starts_with("https://"));
    for origin in list("SSO_RETURN_TO_ORIGINS") {
        sso = sso.allow_return_to(origin);
    }
    Some(sso)
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = env("SENTRI_ADDR")
        .unwrap_or_else(|| "127.0.0.1:3000".into())
        .parse()?;
    let url = env("DATABASE_URL").unwrap_or_else(|| "sqlite://sentri-example.db?mode=rwc".into());
    let db = Database::connect(&url).await?;
    // --- audit log: every auth event in sentri_auth_events; admins read GET /auth/audit/events ---
    let audit = sentri::capability::audit::Audit::new(db.clone());
    let mut config = ServerConfig::new(db, signing_key().await?, ["user", "admin"])
        .with(audit)
        // --- roles: a role catalogue with admin routes (GET/POST /auth/roles, …) and
        // permissions granted in code; `GET /api/reports` needs `reports:read` ---
        .with(sentri::capability::roles::Roles::default())
        .grant("admin", ["reports:read"])
        // --- workspaces: tenants under /auth/workspaces; `GET /api/workspace` needs a
        // token switched to the workspace named by `X-Workspace-Id` ---
        .with(sentri::capability::workspaces::Workspaces::default());
    // --- scale-out: signing keys shared and rotated through the database ---
    if let Some(store) = key_store()? {
        config = config.signing_key_store(store);
    }
    // --- end scale-out ---
    if let Some(ttl) = env("SENTRI_ACCESS_TTL") {
        config = config.access_expires_in(ttl);
    }
    if let Some(ttl) = env("SENTRI_REFRESH_TTL") {
        config = config.refresh_expires_in(ttl);
    }
    if env("SENTRI_COOKIES").as_deref() == Some("0") {
        config = config.cookie(None).access_cookie(None);
    } else {
        config = config
            .cookie(Some(CookieConfig::default()))
            .access_cookie(Some(AccessCookieConfig::default()));
    }
    if let Some(key) = env("SENTRI_API_KEY") {
        config = config.api_key(key);
    }
    if let Some(iss) = env("SENTRI_ISSUER") {
        config = config.issuer(iss);
    }
    if let Some(aud) = env("SENTRI_AUDIENCE") {
        config = config.audience(aud);
    }
    if let Some(url) = env("REDIS_URL") {
        config = config.redis_url(url);
    }
    if let Some(secs) = env("SENTRI_SESSION_CACHE_TTL") {
        config = config.session_cache_ttl(std::time::Duration::from_secs(secs.parse()?));
    }
    if let Some(cost) = env("SENTRI_BCRYPT_COST") {
        config = config.bcrypt_cost(cost.parse()?);
    }
    if let Some(ttl) = env("SENTRI_SESSION_MAX_LIFETIME") {
        config = config.session_max_lifetime(ttl);
    }
    if let Some(origins) = env("SENTRI_TRUSTED_ORIGINS") {
        config = config.trusted_origins(origins.split(',').map(str::trim));
    }
    // --- security operations (issue 17): sessions per device; login throttling ---
    config = config.with(sentri::capability::devices::Devices::default());
    if env("SENTRI_THROTTLE").as_deref() == Some("1") {
        config = config.throttling(sentri::throttle::Throttling::default());
    }
    if let Some(proxies) = env("SENTRI_TRUSTED_PROXIES") {
        let proxies = sentri::http::TrustedProxies::new(proxies.split(',').map(str::trim))?;
        config = config.trusted_proxies(proxies);
    }
    // --- end security operations ---
    // --- API keys: machines call GET /api/orders with `X-Sentri-Key: sk_…` (scope
    // `orders:read`); keys are managed under /auth/api-keys by a signed-in user.
    #[cfg(feature = "api-keys")]
    {
        use sentri::capability::api_keys::ApiKeys;
        config = config.with(ApiKeys::default().scopes(["orders:read", "orders:write"]));
    }
    // --- two-factor authentication: TOTP sealed under SENTRI_2FA_KEY (base64, 32 bytes) ---
    config = config.with(two_factor()?);
    // --- sso: `--features sso` and SSO_ISSUER set: sign in with that OpenID provider ---
    #[cfg(feature = "sso")]
    if let Some(sso) = sso_from_env(addr) {
        config = config.with(sso);
    }
    // --- end sso ---
    // --- ecosystem: the OpenAPI document at GET /auth/openapi.json (`--features openapi`) ---
    #[cfg(feature = "openapi")]
    {
        config = config.serve_openapi(true);
    }
    let auth = create_auth(config.with(lifecycle()?))?;
    auth.migrate().await?;
    ensure_admin(&auth).await?;

    let app_state = App {
        auth: auth.clone(),
        orders: Arc::new(AtomicU64::new(0)),
    };
    let own_id_or_admin = PermitOptions::new(["admin"], |parts, user| {
        let allowed = parts
            .uri
            .path()
            .rsplit('/')
            .next()
            .is_some_and(|id| id == user.id);
        async move { allowed }
    });
    let api = Router::new()
        .route("/profile", get(profile).route_layer(auth.protect()))
        .route("/admin", get(admin).route_layer(auth.authorize(["admin"])))
        // Any role holding the permission (granted in code or through /auth/roles).
        .route(
            "/reports",
            get(reports).route_layer(auth.require_permission("reports:read")),
        )
        // Only active members of the workspace the token is switched to.
        .route("/workspace", get(workspace).route_layer(auth.tenant()))
        // Only sessions signed in with a second factor (403 TWO_FACTOR_REQUIRED otherwise).
        .route("/secure", get(profile).route_layer(auth.require_2fa()))
        .route(
            "/users/{id}",
            put(update_user).route_layer(auth.permit(own_id_or_admin)),
        )
        .route(
            "/orders",
            post(create_order)
                .route_layer(auth.idempotency(IdempotencyOptions::default())?)
                .route_layer(auth.protect()),
        );
    #[cfg(feature = "api-keys")]
    let api = api.route(
        "/orders",
        get(list_orders).route_layer(auth.require_scopes(["orders:read"])),
    );
    let app = Router::new()
        .route("/health", get(health))
        // The demo page (examples/demo.html): a plain-JS single-page app on the cookies.
        .route(
            "/demo",
            get(|| async { axum::response::Html(include_str!("demo.html")) }),
        )
        .merge(metrics_route()?)
        .nest("/auth", auth.router())
        .nest("/api", api)
        .with_state(app_state)
        .layer(auth.error_handler());

    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    // Not println!: a reader that stopped at the line above must not make this panic.
    let _ = std::io::Write::write_fmt(
        &mut std::io::stdout(),
        format_args!("demo page: http://{}/demo\n", listener.local_addr()?),
    );
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown())
    .await?;
    tracing::info!("shut down");
    Ok(())
}

/// `GET /metrics` in the Prometheus text format when `SENTRI_METRICS=1` (`--features
/// metrics`): sentri's counters, gauges and histograms (docs/METRICS.md).
fn metrics_route<S: Clone + Send + Sync + 'static>() -> Result<Router<S>, Box<dyn std::error::Error>>
{
    if env("SENTRI_METRICS").as_deref() != Some("1") {
        return Ok(Router::new());
    }
    #[cfg(feature = "metrics")]
    {
        let handle = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
        Ok(Router::new().route("/metrics", get(move || async move { handle.render() })))
    }
    #[cfg(not(feature = "metrics"))]
    Err("SENTRI_METRICS=1 needs the `metrics` feature: cargo run --example server --features metrics".into())
}

async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .init();
    if let Err(err) = run().await {
        eprintln!("sentri example server failed: {err}");
        std::process::exit(1);
    }
}
