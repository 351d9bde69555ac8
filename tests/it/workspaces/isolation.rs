//! Tenant isolation: a member of A never reads or changes anything of B, whatever they
//! send. One row per attack, each asserting its exact status and code.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;

use super::{Member, add, api, member, switch, tenant_get, workspace, ws_app, ws_config};
use crate::support::common::redis_url;
use crate::support::db::databases;
use crate::support::http::{Reply, expect, refresh_with};

/// `token` with its payload's `wid` replaced by `wid` and the signature kept.
fn forge_wid(token: &str, wid: &str) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    claims["wid"] = json!(wid);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
    format!("{}.{payload}.{}", parts[0], parts[2])
}

/// The claims of an access token (unverified: for assertions only).
fn claims(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

#[tokio::test]
async fn a_member_of_one_workspace_never_reaches_another() {
    for t in databases("workspaces::isolation").await {
        let n = t.name;
        let (auth, app) = ws_app(ws_config(t.db.clone())).await;
        let alice = member(&auth, &app, "alice").await;
        let bob = member(&auth, &app, "bob").await;
        let carol = member(&auth, &app, "carol").await;
        let dave = member(&auth, &app, "dave").await;
        let erin = member(&auth, &app, "erin").await;
        let a = workspace(&app, &alice, "Alpha").await;
        let b = workspace(&app, &bob, "Beta").await;
        add(&app, &alice, &a, "carol", &["member"]).await;
        add(&app, &bob, &b, "dave", &["member"]).await;
        add(&app, &bob, &b, "erin", &["member"]).await;
        let carol_a = switch(&app, &carol, &a).await;
        let dave_b = switch(&app, &dave, &b).await;
        let erin_b = switch(&app, &erin, &b).await;
        let r = api(
            &app,
            &bob.token,
            Method::POST,
            &format!("/workspaces/{b}/invitations"),
            Some(json!({"address": "zed@example.com"})),
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED, "{n}: {:?}", r.body);
        let b_invitation = r.body["data"]["invitation"]["id"]
            .as_str()
            .unwrap()
            .to_owned();

        // Both B members are admitted before the attacks (the matrix can fail).
        let r = tenant_get(&app, &dave_b, Some(&b), "/api/ws").await;
        assert_eq!(
            (r.status, &r.body["workspace"]),
            (StatusCode::OK, &json!(b)),
            "{n}"
        );
        let r = tenant_get(&app, &erin_b, Some(&b), "/api/ws").await;
        assert_eq!(r.status, StatusCode::OK, "{n}");
        assert_eq!(
            claims(&carol_a)["wid"],
            json!(a),
            "{n}: the switched token carries wid"
        );

        // Removing dave and suspending erin take effect at once in this process.
        let r = api(
            &app,
            &bob.token,
            Method::DELETE,
            &format!("/workspaces/{b}/members/{}", dave.id),
            None,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{n}: {:?}", r.body);
        let body = json!({ "status": "suspended" });
        let r = api(
            &app,
            &bob.token,
            Method::PATCH,
            &format!("/workspaces/{b}/members/{}", erin.id),
            Some(body),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{n}: {:?}", r.body);

        let forged = forge_wid(&carol_a, &b);
        let bmember = format!("/workspaces/{a}/members/{}", bob.id);
        type Attack<'x> = (&'x str, Reply, StatusCode, &'x str);
        let rows: Vec<Attack> = vec![
            (
                "A's token with B's header",
                tenant_get(&app, &carol_a, Some(&b), "/api/ws").await,
                StatusCode::FORBIDDEN,
                "WORKSPACE_MISMATCH",
            ),
            (
                "A's token, no header",
                tenant_get(&app, &carol_a, None, "/api/ws").await,
                StatusCode::FORBIDDEN,
                "WORKSPACE_HEADER_REQUIRED",
            ),
            (
                "personal token with A's header",
                tenant_get(&app, &carol.token, Some(&a), "/api/ws").await,
                StatusCode::FORBIDDEN,
                "WORKSPACE_MISMATCH",
            ),
            (
                "personal token with B's header",
                tenant_get(&app, &carol.token, Some(&b), "/api/ws").await,
                StatusCode::FORBIDDEN,
                "WORKSPACE_MISMATCH",
            ),
            (
                "forged wid = B",
                tenant_get(&app, &forged, Some(&b), "/api/ws").await,
                StatusCode::UNAUTHORIZED,
                "TOKEN_INVALID",
            ),
            (
                "removed member's token switched to B",
                tenant_get(&app, &dave_b, Some(&b), "/api/ws").await,
                StatusCode::FORBIDDEN,
                "WORKSPACE_ACCESS_DENIED",
            ),
            (
                "suspended member's token switched to B",
                tenant_get(&app, &erin_b, Some(&b), "/api/ws").await,
                StatusCode::FORBIDDEN,
                "WORKSPACE_ACCESS_DENIED",
            ),
            (
                "member role on an admin route",
                tenant_get(&app, &carol_a, Some(&a), "/api/ws/admin").await,
                StatusCode::FORBIDDEN,
                "FORBIDDEN",
            ),
            (
                "GET B",
                api(
                    &app,
                    &carol.token,
                    Method::GET,
                    &format!("/workspaces/{b}"),
                    None,
                )
                .await,
                StatusCode::NOT_FOUND,
                "WORKSPACE_NOT_FOUND",
            ),
            (
                "list B's members",
                api(
                    &app,
                    &carol.token,
                    Method::GET,
                    &format!("/workspaces/{b}/members"),
                    None,
                )
                .await,
                StatusCode::NOT_FOUND,
                "WORKSPACE_NOT_FOUND",
            ),
            (
                "add self to B",
                api(
                    &app,
                    &carol.token,
                    Method::POST,
                    &format!("/workspaces/{b}/members"),
                    Some(json!({"identifier": "carol"})),
                )
                .await,
                StatusCode::NOT_FOUND,
                "WORKSPACE_NOT_FOUND",
            ),
            (
                "rename B",
                api(
                    &app,
                    &carol.token,
                    Method::PATCH,
                    &format!("/workspaces/{b}"),
                    Some(json!({"name": "pwned"})),
                )
                .await,
                StatusCode::NOT_FOUND,
                "WORKSPACE_NOT_FOUND",
            ),
            (
                "delete B",
                api(
                    &app,
                    &carol.token,
                    Method::DELETE,
                    &format!("/workspaces/{b}"),
                    None,
                )
                .await,
                StatusCode::NOT_FOUND,
                "WORKSPACE_NOT_FOUND",
            ),
            (
                "switch to B",
                api(
                    &app,
                    &carol.token,
                    Method::POST,
                    &format!("/workspaces/{b}/switch"),
                    None,
                )
                .await,
                StatusCode::NOT_FOUND,
                "WORKSPACE_NOT_FOUND",
            ),
            (
                "invite into B",
                api(
                    &app,
                    &carol.token,
                    Method::POST,
                    &format!("/workspaces/{b}/invitations"),
                    Some(json!({"address": "x@example.com"})),
                )
                .await,
                StatusCode::NOT_FOUND,
                "WORKSPACE_NOT_FOUND",
            ),
            (
                "list B's invitations",
                api(
                    &app,
                    &carol.token,
                    Method::GET,
                    &format!("/workspaces/{b}/invitations"),
                    None,
                )
                .await,
                StatusCode::NOT_FOUND,
                "WORKSPACE_NOT_FOUND",
            ),
            (
                "removed member re-switches to B",
                api(
                    &app,
                    &dave.token,
                    Method::POST,
                    &format!("/workspaces/{b}/switch"),
                    None,
                )
                .await,
                StatusCode::NOT_FOUND,
                "WORKSPACE_NOT_FOUND",
            ),
            (
                "A's owner edits B's member through A",
                api(
                    &app,
                    &alice.token,
                    Method::PATCH,
                    &bmember,
                    Some(json!({"roles": ["admin"]})),
                )
                .await,
                StatusCode::NOT_FOUND,
                "MEMBER_NOT_FOUND",
            ),
            (
                "A's owner removes B's member through A",
                api(&app, &alice.token, Method::DELETE, &bmember, None).await,
                StatusCode::NOT_FOUND,
                "MEMBER_NOT_FOUND",
            ),
            (
                "A's owner revokes B's invitation through A",
                api(
                    &app,
                    &alice.token,
                    Method::DELETE,
                    &format!("/workspaces/{a}/invitations/{b_invitation}"),
                    None,
                )
                .await,
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
            ),
            (
                "A's owner deletes B",
                api(
                    &app,
                    &alice.token,
                    Method::DELETE,
                    &format!("/workspaces/{b}"),
                    None,
                )
                .await,
                StatusCode::NOT_FOUND,
                "WORKSPACE_NOT_FOUND",
            ),
        ];
        for (what, r, status, code) in &rows {
            expect(r, *status, code, &format!("{n}: {what}"));
            let text = r.body.to_string();
            assert!(
                !text.contains("Beta") && !text.contains(&bob.id),
                "{n}: {what} leaked B: {text}"
            );
        }
        // B is untouched: its owner still sees it whole, its invitation pending.
        let r = api(
            &app,
            &bob.token,
            Method::GET,
            &format!("/workspaces/{b}"),
            None,
        )
        .await;
        assert_eq!(r.body["data"]["workspace"]["name"], "Beta", "{n}");
        let r = api(
            &app,
            &bob.token,
            Method::GET,
            &format!("/workspaces/{b}/invitations"),
            None,
        )
        .await;
        assert_eq!(r.body["data"]["items"].as_array().unwrap().len(), 1, "{n}");
        // A refresh keeps the binding; the removed member's refresh carries none.
        let r = refresh_with(&app, &carol.refresh).await;
        assert_eq!(
            claims(r.body["data"]["accessToken"].as_str().unwrap())["wid"],
            json!(a),
            "{n}"
        );
        let r = refresh_with(&app, &dave.refresh).await;
        assert_eq!(
            claims(r.body["data"]["accessToken"].as_str().unwrap()).get("wid"),
            None,
            "{n}"
        );
        t.cleanup().await;
    }
}

/// Fails a test only when nothing ever happens (never a timing assertion).
const GENEROUS: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_removal_reaches_another_instance_through_redis() {
    let Some(redis) = redis_url("workspaces::remote_removal") else {
        return;
    };
    for t in databases("workspaces::remote_removal").await {
        let n = t.name;
        let (auth, app) = ws_app(ws_config(t.db.clone()).redis_url(redis.clone())).await;
        let (_, other) = ws_app(ws_config(t.db.clone()).redis_url(redis.clone())).await;
        let owner = member(&auth, &app, "olga").await;
        let m: Member = member(&auth, &app, "max").await;
        let ws = workspace(&app, &owner, "Remote").await;
        add(&app, &owner, &ws, "max", &[]).await;
        let token = switch(&app, &m, &ws).await;
        // Warm the other instance's caches.
        let r = tenant_get(&other, &token, Some(&ws), "/api/ws").await;
        assert_eq!(r.status, StatusCode::OK, "{n}: {:?}", r.body);
        let r = api(
            &app,
            &owner.token,
            Method::DELETE,
            &format!("/workspaces/{ws}/members/{}", m.id),
            None,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{n}");
        let started = std::time::Instant::now();
        loop {
            let r = tenant_get(&other, &token, Some(&ws), "/api/ws").await;
            if r.status == StatusCode::FORBIDDEN {
                expect(&r, StatusCode::FORBIDDEN, "WORKSPACE_ACCESS_DENIED", n);
                break;
            }
            assert!(
                started.elapsed() < GENEROUS,
                "{n}: the removal never arrived"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        t.cleanup().await;
    }
}
