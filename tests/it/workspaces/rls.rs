//! The PostgreSQL row-level-security recipe of `docs/SECURITY.md`, run: an app's own
//! table confined to the workspace the tenant guard admitted.

use axum::http::StatusCode;
use axum::routing::get;
use sentri::http::CurrentWorkspace;
use serde_json::json;

use super::{add, member, switch, tenant_get, workspace, ws_app, ws_config};

const POLICY: &str = "CREATE TABLE notes (workspace_id VARCHAR(36) NOT NULL, body TEXT NOT NULL);
ALTER TABLE notes ENABLE ROW LEVEL SECURITY;
ALTER TABLE notes FORCE ROW LEVEL SECURITY;
CREATE POLICY notes_tenant ON notes
  USING (workspace_id = current_setting('app.workspace_id', true))
  WITH CHECK (workspace_id = current_setting('app.workspace_id', true));
DO $$ BEGIN CREATE ROLE sentri_rls_app NOLOGIN; EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$;
DO $$ BEGIN EXECUTE format('GRANT USAGE ON SCHEMA %I TO sentri_rls_app', current_schema()); END $$;
GRANT SELECT, INSERT ON notes TO sentri_rls_app;";

/// The app's handler: one transaction as the unprivileged role, the workspace set
/// from `CurrentWorkspace` (`None`: not set at all).
async fn notes(pool: &sqlx::PgPool, workspace: Option<&str>) -> Vec<String> {
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("SET LOCAL ROLE sentri_rls_app")
        .execute(&mut *tx)
        .await
        .unwrap();
    if let Some(ws) = workspace {
        sqlx::query("SELECT set_config('app.workspace_id', $1, true)")
            .bind(ws)
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    let bodies = sqlx::query_scalar("SELECT body FROM notes ORDER BY body")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    bodies
}

#[tokio::test]
async fn postgres_row_level_security_confines_an_app_table_to_the_admitted_workspace() {
    let Some(t) = crate::support::db::database("postgres", "workspaces::rls").await else {
        return;
    };
    let (url, schema) = t
        .pg_target()
        .map(|(u, s)| (u.to_owned(), s.to_owned()))
        .unwrap();
    let (auth, app) = ws_app(ws_config(t.db.clone())).await;
    t.raw(POLICY).await;
    let options: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options.options([("search_path", schema.as_str())]))
        .await
        .unwrap();
    let handler_pool = pool.clone();
    let app = app.route(
        "/api/notes",
        get(move |ws: CurrentWorkspace| {
            let pool = handler_pool.clone();
            async move { axum::Json(json!(notes(&pool, Some(&ws.id)).await)) }
        })
        .route_layer(auth.tenant()),
    );
    let alice = member(&auth, &app, "alice").await;
    let bob = member(&auth, &app, "bob").await;
    let a = workspace(&app, &alice, "Alpha").await;
    let b = workspace(&app, &bob, "Beta").await;
    add(&app, &alice, &a, "bob", &[]).await;
    t.raw(&format!(
        "INSERT INTO notes VALUES ('{a}', 'a1'), ('{a}', 'a2'), ('{b}', 'b1')"
    ))
    .await;
    let alice_a = switch(&app, &alice, &a).await;
    let r = tenant_get(&app, &alice_a, Some(&a), "/api/notes").await;
    assert_eq!((r.status, &r.body), (StatusCode::OK, &json!(["a1", "a2"])));
    let bob_b = switch(&app, &bob, &b).await;
    let r = tenant_get(&app, &bob_b, Some(&b), "/api/notes").await;
    assert_eq!((r.status, &r.body), (StatusCode::OK, &json!(["b1"])));
    // The database refuses on its own: no workspace set, no rows; another one, its rows.
    assert!(notes(&pool, None).await.is_empty());
    assert_eq!(notes(&pool, Some(&b)).await, ["b1"]);
    pool.close().await;
    t.cleanup().await;
}
