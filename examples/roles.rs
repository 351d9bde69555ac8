//! Roles and permissions: `cargo run --example roles`.
//!
//! - a role catalogue: `valid_roles` = user, editor, admin; a public registration may
//!   only ask for `user` (`public_roles`);
//! - `authorize(["admin"])`: `GET /admin/users/count` for admins only;
//! - `authorize(["editor", "admin"])`: `POST /articles`;
//! - `permit(..)`: `GET /users/{id}/settings` for that user, or any admin;
//! - an admin provisioned at start-up with `ServerAuth::register` (trusted: any valid role),
//!   who can promote users with `POST /auth/users/{id}/roles`.
//!
//! Environment: `PORT` (default 3004, on 127.0.0.1), `ADMIN_PASSWORD` (dev default with a
//! warning), `DATABASE_URL` (default: the SQLite file `sentri-roles-example.db` in the
//! temp directory). The curl commands are printed at start-up; Ctrl-C stops it.

use axum::Router;
use axum::extract::Path;
use axum::routing::{get, post};
use sentri::db::Database;
use sentri::token::{Algorithm, SigningKey};
use sentri::{CurrentUser, ErrorCode, PermitOptions, RegisterInput, ServerConfig, create_auth};

const ADMIN: &str = "admin@example.com";
const DEV_PASSWORD: &str = "change me now";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = std::env::var("PORT").map_or(Ok(3004), |p| p.parse())?;
    let (admin_password, shown_password) = match std::env::var("ADMIN_PASSWORD") {
        Ok(password) => (password, "<ADMIN_PASSWORD>".to_owned()),
        Err(_) => {
            eprintln!(
                "warning: ADMIN_PASSWORD is not set; the admin's password is `{DEV_PASSWORD}`"
            );
            (DEV_PASSWORD.to_owned(), DEV_PASSWORD.to_owned())
        }
    };
    let db_url = std::env::var("DATABASE_URL").unwrap_or_else(|_| {
        let file = std::env::temp_dir().join("sentri-roles-example.db");
        format!("sqlite://{}", file.display())
    });

    let db = Database::connect(&db_url).await?;
    let key = SigningKey::generate(Algorithm::HS256).await?; // tokens die with the process
    let config = ServerConfig::new(db, key, ["user", "editor", "admin"]).public_roles(["user"]);
    let auth = create_auth(config)?;
    auth.migrate().await?;

    // Provision the admin once; on a later run the user is already there.
    let admin = RegisterInput {
        identifier: ADMIN.into(),
        password: admin_password,
        roles: Some(vec!["admin".into()]),
    };
    match auth.register(admin).await {
        Ok(user) => println!("created admin {} ({})", user.identifier, user.id),
        Err(err) if *err.code() == ErrorCode::UserAlreadyExists => {}
        Err(err) => return Err(err.into()),
    }

    // "Own resource or admin": admins bypass the check, others must match the path id.
    let own_or_admin = PermitOptions::new(["admin"], |parts, user| {
        let path = parts.uri.path().to_owned();
        let mine = format!("/users/{}/settings", user.id);
        async move { path == mine }
    });
    let app = Router::new()
        .route(
            "/admin/users/count",
            get(|| async { "only admins see this" }).route_layer(auth.authorize(["admin"])),
        )
        .route(
            "/articles",
            post(|u: CurrentUser| async move { format!("article by {}", u.user.identifier) })
                .route_layer(auth.authorize(["editor", "admin"])),
        )
        .route(
            "/users/{id}/settings",
            get(|Path(id): Path<String>| async move { format!("settings of {id}") })
                .route_layer(auth.permit(own_or_admin)),
        )
        .nest("/auth", auth.router())
        .layer(auth.error_handler());

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let base = format!("http://{}", listener.local_addr()?);
    println!("listening on {base}\n\ntry:");
    let (json, bob) = ("-H 'content-type: application/json'", "bob@example.com");
    let login = |who: &str, pw: &str| {
        format!(
            "$(curl -s -X POST {base}/auth/login {json} -d '{{\"identifier\":\"{who}\",\"password\":\"{pw}\"}}' \
             | sed -E 's/.*\"accessToken\":\"([^\"]+)\".*/\\1/')"
        )
    };
    let as_bob = "-H \"authorization: Bearer $TOKEN\"";
    let as_admin = "-H \"authorization: Bearer $ADMIN_TOKEN\"";
    for line in [
        format!(
            "curl -s -X POST {base}/auth/register {json} -d '{{\"identifier\":\"{bob}\",\"password\":\"bob password\"}}'"
        ),
        format!("ADMIN_TOKEN={}", login(ADMIN, &shown_password)),
        format!("TOKEN={}", login(bob, "bob password")),
        format!(
            "BOB_ID=$(curl -s {base}/auth/me {as_bob} | sed -E 's/.*\"id\":\"([^\"]+)\".*/\\1/')"
        ),
        format!("curl -s {base}/admin/users/count {as_bob}     # 403 FORBIDDEN"),
        format!("curl -s {base}/admin/users/count {as_admin}   # 200"),
        format!("curl -s {base}/users/$BOB_ID/settings {as_bob}   # 200 (own); another id: 403"),
        format!("curl -s -X POST {base}/articles {as_bob}      # 403: bob is not an editor yet"),
        format!(
            "curl -s -X POST {base}/auth/users/$BOB_ID/roles {as_admin} {json} -d '{{\"roles\":[\"editor\"]}}'"
        ),
        format!(
            "TOKEN={}   # tokens carry the roles they were issued with",
            login(bob, "bob password")
        ),
        format!("curl -s -X POST {base}/articles {as_bob}      # 200"),
    ] {
        println!("  {line}");
    }

    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
