//! Invitations and member additions bind to a verified address (issue #29, items 3c,
//! 6 and the member-addition part of 7), on the three databases: adding a member by
//! identifier is an invitation, answered the same whether an account holds the
//! address; an account that registered the address without proving it cannot accept;
//! accepting or a removal voids the workspace's other pending invitations to that
//! address, so a removed member cannot rejoin with a sibling.

use axum::Router;
use axum::http::{Method, StatusCode};
use sentri::clock::ManualClock;
use serde_json::{Value, json};

use super::{Member, PW, address_of, api, member, workspace, ws_app, ws_config};
use crate::support::db::{TestDb, databases};
use crate::support::http::{Reply, expect, login, register};

async fn members_of(t: &TestDb, ws: &str) -> i64 {
    t.scalar(&format!(
        "SELECT COUNT(*) FROM sentri_workspace_members WHERE workspace_id = '{ws}'"
    ))
    .await
}

async fn post(app: &Router, by: &Member, path: &str, body: Value) -> Reply {
    api(app, &by.token, Method::POST, path, Some(body)).await
}

/// `POST /workspaces/invitations/accept` as the bearer of `access`.
async fn accept(app: &Router, access: &str, token: &str) -> Reply {
    api(
        app,
        access,
        Method::POST,
        "/workspaces/invitations/accept",
        Some(json!({ "token": token })),
    )
    .await
}

/// The answer without what is random per invitation (its id and token) and the
/// address asked for: what is left must not depend on whether an account exists.
fn shape(r: &Reply) -> (StatusCode, Value) {
    let mut body = r.body.clone();
    let inv = &mut body["data"]["invitation"];
    assert!(inv["id"].is_string(), "{:?}", r.body);
    assert!(r.body["data"]["token"].is_string(), "{:?}", r.body);
    inv["id"] = Value::Null;
    inv["address"] = Value::Null;
    body["data"]["token"] = Value::Null;
    (r.status, body)
}

/// Issue #29, 3(c) and 7: the owner adds `carol@corp.test`, an identifier the attacker
/// registered without proving it. The answer is an invitation, identical (status,
/// message, body but id/token/address) to the one for an address no account holds;
/// no membership row is made; the attacker cannot accept it (403
/// `INVITATION_ADDRESS_MISMATCH`); the membership rows stay the owner's only.
#[tokio::test]
async fn adding_a_member_invites_and_an_unverified_holder_cannot_join() {
    for t in databases("verified::member_add").await {
        let n = t.name;
        let clock = ManualClock::starting_now();
        let (_auth, app) = ws_app(ws_config(t.db.clone()).clock(clock)).await;
        let olga = member(&_auth, &app, "olga").await;
        let ws = workspace(&app, &olga, "Corp").await;
        let carol = "carol@corp.test";
        assert_eq!(register(&app, carol, PW).await.status, StatusCode::CREATED);
        let path = format!("/workspaces/{ws}/members");
        let known = post(
            &app,
            &olga,
            &path,
            json!({"identifier": carol, "roles": ["admin"]}),
        )
        .await;
        let unknown = post(
            &app,
            &olga,
            &path,
            json!({"identifier": "nobody@corp.test", "roles": ["admin"]}),
        )
        .await;
        assert_eq!(known.status, StatusCode::CREATED, "{n}: {:?}", known.body);
        assert_eq!(shape(&known), shape(&unknown), "{n}: same answer");
        assert_eq!(known.body["message"], "Invitation created", "{n}");
        assert_eq!(known.body["data"]["invitation"]["address"], carol, "{n}");
        assert_eq!(known.body["data"].get("member"), None, "{n}");
        assert_eq!(members_of(&t, &ws).await, 1, "{n}: nobody added");
        // The attacker holds the identifier, unverified: refused, and still no row.
        let r = login(&app, carol, PW).await;
        let attacker = r.body["data"]["accessToken"].as_str().unwrap().to_owned();
        let token = known.body["data"]["token"].as_str().unwrap();
        let r = accept(&app, &attacker, token).await;
        expect(&r, StatusCode::FORBIDDEN, "INVITATION_ADDRESS_MISMATCH", n);
        assert_eq!(members_of(&t, &ws).await, 1, "{n}");
        // A username is no address: refused by its shape, whoever holds it.
        let r = post(&app, &olga, &path, json!({"identifier": "olga"})).await;
        expect(&r, StatusCode::BAD_REQUEST, "VALIDATION_ERROR", n);
        // The invited address, once verified by its holder, joins.
        let user = t.db.find_user_by_identifier(carol).await.unwrap().unwrap();
        t.db.set_user_email(&user.id, carol, Some(1)).await.unwrap();
        let r = accept(&app, &attacker, token).await;
        assert_eq!(r.status, StatusCode::OK, "{n}: {:?}", r.body);
        assert_eq!(members_of(&t, &ws).await, 2, "{n}");
        t.cleanup().await;
    }
}

/// Issue #29, item 6: accepting one invitation revokes its siblings (same address, same
/// workspace) and a removal revokes the member's pending ones, so a removed member
/// cannot rejoin with an invitation sent before the removal.
#[tokio::test]
async fn a_removed_member_cannot_rejoin_with_a_sibling_invitation() {
    for t in databases("verified::siblings").await {
        let n = t.name;
        let (auth, app) = ws_app(ws_config(t.db.clone())).await;
        let olga = member(&auth, &app, "olga").await;
        let dan = member(&auth, &app, "dan").await;
        let ws = workspace(&app, &olga, "Siblings").await;
        let path = format!("/workspaces/{ws}/invitations");
        let invite = || async {
            let body = json!({"address": address_of("dan"), "roles": ["admin"]});
            let r = post(&app, &olga, &path, body).await;
            assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
            r.body["data"]["token"].as_str().unwrap().to_owned()
        };
        let (first, sibling) = (invite().await, invite().await);
        let r = accept(&app, &dan.token, &first).await;
        assert_eq!(r.status, StatusCode::OK, "{n}: {:?}", r.body);
        let r = api(&app, &olga.token, Method::GET, &path, None).await;
        assert_eq!(r.body["data"]["items"], json!([]), "{n}: sibling revoked");
        // Invited again while a member, then removed: that invitation goes too.
        let later = invite().await;
        let r = api(
            &app,
            &olga.token,
            Method::DELETE,
            &format!("/workspaces/{ws}/members/{}", dan.id),
            None,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{n}: {:?}", r.body);
        for token in [&sibling, &later] {
            let r = accept(&app, &dan.token, token).await;
            expect(&r, StatusCode::BAD_REQUEST, "INVITATION_INVALID", n);
        }
        assert_eq!(members_of(&t, &ws).await, 1, "{n}: dan stays out");
        let revoked = t
            .scalar(&format!(
                "SELECT COUNT(*) FROM sentri_workspace_invitations \
                 WHERE workspace_id = '{ws}' AND revoked_at IS NOT NULL"
            ))
            .await;
        assert_eq!(revoked, 2, "{n}");
        // A new invitation after the removal is a new decision: it works.
        let fresh = invite().await;
        let r = accept(&app, &dan.token, &fresh).await;
        assert_eq!(r.status, StatusCode::OK, "{n}: {:?}", r.body);
        t.cleanup().await;
    }
}

/// Two sibling invitations accepted at once: exactly one joins, the other is refused,
/// and no pending sibling is left (many trials, each database).
#[tokio::test]
async fn concurrent_sibling_accepts_join_once() {
    const TRIALS: usize = 12;
    for t in databases("verified::sibling_race").await {
        let n = t.name;
        let (auth, app) = ws_app(ws_config(t.db.clone())).await;
        let olga = member(&auth, &app, "olga").await;
        let dan = member(&auth, &app, "dan").await;
        let ws = workspace(&app, &olga, "Race").await;
        let path = format!("/workspaces/{ws}/invitations");
        for trial in 0..TRIALS {
            let mut tokens = Vec::new();
            for _ in 0..2 {
                let body = json!({"address": address_of("dan")});
                let r = post(&app, &olga, &path, body).await;
                tokens.push(r.body["data"]["token"].as_str().unwrap().to_owned());
            }
            let (a, b) = tokio::join!(
                accept(&app, &dan.token, &tokens[0]),
                accept(&app, &dan.token, &tokens[1])
            );
            let ok = [&a, &b]
                .iter()
                .filter(|r| r.status == StatusCode::OK)
                .count();
            assert_eq!(ok, 1, "{n}: trial {trial}: {:?} {:?}", a.body, b.body);
            for r in [&a, &b].into_iter().filter(|r| r.status != StatusCode::OK) {
                assert!(
                    matches!(r.code(), "INVITATION_INVALID" | "ALREADY_MEMBER"),
                    "{n}: trial {trial}: {:?}",
                    r.body
                );
            }
            let r = api(&app, &olga.token, Method::GET, &path, None).await;
            assert_eq!(r.body["data"]["items"], json!([]), "{n}: trial {trial}");
            let r = api(
                &app,
                &olga.token,
                Method::DELETE,
                &format!("/workspaces/{ws}/members/{}", dan.id),
                None,
            )
            .await;
            assert_eq!(r.status, StatusCode::OK, "{n}: trial {trial}");
        }
        t.cleanup().await;
    }
}
