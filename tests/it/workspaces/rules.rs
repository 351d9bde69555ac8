//! The rules: the last owner stays, roles take effect at once, invitations are accepted
//! once by the invited address only, removal racing a switch leaves no window, pages
//! over 10 000 workspaces, bad input answered 4xx.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use sentri::ProvisionWorkspace;
use sentri::clock::ManualClock;
use sentri::identity::ProvisionUser;
use serde_json::json;

use super::{PW, add, api, member, switch, tenant_get, workspace, ws_app, ws_config};
use crate::support::db::databases;
use crate::support::http::expect;

#[tokio::test]
async fn the_last_owner_cannot_leave_be_removed_suspended_or_demoted() {
    for t in databases("workspaces::last_owner").await {
        let n = t.name;
        let (auth, app) = ws_app(ws_config(t.db.clone())).await;
        let olga = member(&auth, &app, "olga").await;
        let adam = member(&auth, &app, "adam").await;
        let ws = workspace(&app, &olga, "Solo").await;
        add(&app, &olga, &ws, "adam", &["admin"]).await;
        let me = format!("/workspaces/{ws}/members/{}", olga.id);
        let tries = [
            (Method::POST, format!("/workspaces/{ws}/leave"), None),
            (Method::PATCH, me.clone(), Some(json!({"roles": ["admin"]}))),
            (
                Method::PATCH,
                me.clone(),
                Some(json!({"status": "suspended"})),
            ),
            (Method::DELETE, me.clone(), None),
        ];
        for (method, path, body) in tries {
            let r = api(&app, &olga.token, method.clone(), &path, body).await;
            expect(
                &r,
                StatusCode::CONFLICT,
                "LAST_OWNER",
                &format!("{n}: {method} {path}"),
            );
        }
        // An admin cannot touch the owner, nor make themselves one.
        let r = api(&app, &adam.token, Method::DELETE, &me, None).await;
        expect(&r, StatusCode::FORBIDDEN, "FORBIDDEN", n);
        let adam_path = format!("/workspaces/{ws}/members/{}", adam.id);
        let r = api(
            &app,
            &adam.token,
            Method::PATCH,
            &adam_path,
            Some(json!({"roles": ["owner"]})),
        )
        .await;
        expect(&r, StatusCode::FORBIDDEN, "FORBIDDEN", n);
        // With a second owner, the first may leave; the workspace keeps one.
        let r = api(
            &app,
            &olga.token,
            Method::PATCH,
            &adam_path,
            Some(json!({"roles": ["owner"]})),
        )
        .await;
        assert_eq!(
            r.body["data"]["member"]["roles"],
            json!(["owner"]),
            "{n}: {:?}",
            r.body
        );
        let r = api(
            &app,
            &olga.token,
            Method::POST,
            &format!("/workspaces/{ws}/leave"),
            None,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{n}: {:?}", r.body);
        let r = api(
            &app,
            &adam.token,
            Method::POST,
            &format!("/workspaces/{ws}/leave"),
            None,
        )
        .await;
        expect(&r, StatusCode::CONFLICT, "LAST_OWNER", n);
        t.cleanup().await;
    }
}

/// Two owners demoting each other (or both leaving) at once: never zero owners.
#[tokio::test]
async fn concurrent_owner_changes_always_leave_an_owner() {
    const TRIALS: usize = 12;
    for t in databases("workspaces::owner_race").await {
        let n = t.name;
        let (auth, app) = ws_app(ws_config(t.db.clone())).await;
        let a = member(&auth, &app, "ann").await;
        let b = member(&auth, &app, "ben").await;
        let mut wins = 0;
        for trial in 0..TRIALS {
            let ws = workspace(&app, &a, &format!("Race {trial}")).await;
            add(&app, &a, &ws, "ben", &["owner"]).await;
            let (ra, rb) = if trial % 2 == 0 {
                let pa = format!("/workspaces/{ws}/members/{}", b.id);
                let pb = format!("/workspaces/{ws}/members/{}", a.id);
                tokio::join!(
                    api(
                        &app,
                        &a.token,
                        Method::PATCH,
                        &pa,
                        Some(json!({"roles": ["member"]}))
                    ),
                    api(
                        &app,
                        &b.token,
                        Method::PATCH,
                        &pb,
                        Some(json!({"roles": ["member"]}))
                    ),
                )
            } else {
                let leave = format!("/workspaces/{ws}/leave");
                tokio::join!(
                    api(&app, &a.token, Method::POST, &leave, None),
                    api(&app, &b.token, Method::POST, &leave, None),
                )
            };
            let ok = [&ra, &rb]
                .iter()
                .filter(|r| r.status == StatusCode::OK)
                .count();
            // The loser is refused: the last owner stays, or (demoted first) it is no
            // longer a manager at all.
            for r in [&ra, &rb] {
                if r.status != StatusCode::OK {
                    assert!(
                        matches!(
                            (r.status, r.code()),
                            (StatusCode::CONFLICT, "LAST_OWNER")
                                | (StatusCode::FORBIDDEN, "FORBIDDEN")
                        ),
                        "{n}: {:?}",
                        r.body
                    );
                }
            }
            assert_eq!(ok, 1, "{n}: trial {trial}: exactly one change passes");
            wins += ok;
            let owners = t
                .scalar(&format!(
                    "SELECT COUNT(*) FROM sentri_workspace_members WHERE workspace_id = '{ws}' AND owner = 1 AND status = 'active'"
                ))
                .await;
            assert_eq!(owners, 1, "{n}: trial {trial}: one active owner remains");
        }
        assert_eq!(wins, TRIALS, "{n}");
        t.cleanup().await;
    }
}

#[tokio::test]
async fn role_changes_take_effect_at_once_and_refresh_keeps_the_binding() {
    for t in databases("workspaces::roles").await {
        let n = t.name;
        let (auth, app) = ws_app(ws_config(t.db.clone())).await;
        let olga = member(&auth, &app, "olga").await;
        let mia = member(&auth, &app, "mia").await;
        let ws = workspace(&app, &olga, "Roles").await;
        add(&app, &olga, &ws, "mia", &["member"]).await;
        let token = switch(&app, &mia, &ws).await;
        let r = tenant_get(&app, &token, Some(&ws), "/api/ws/admin").await;
        expect(&r, StatusCode::FORBIDDEN, "FORBIDDEN", n);
        let path = format!("/workspaces/{ws}/members/{}", mia.id);
        let r = api(
            &app,
            &olga.token,
            Method::PATCH,
            &path,
            Some(json!({"roles": ["admin"]})),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{n}: {:?}", r.body);
        let r = tenant_get(&app, &token, Some(&ws), "/api/ws/admin").await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "{n}: promoted at once: {:?}",
            r.body
        );
        let r = tenant_get(&app, &token, Some(&ws), "/api/ws").await;
        assert_eq!(r.body["roles"], json!(["admin"]), "{n}");
        // Back to personal: the tenant route refuses that token.
        let r = api(
            &app,
            &mia.token,
            Method::POST,
            "/workspaces/personal/switch",
            None,
        )
        .await;
        let personal = r.body["data"]["accessToken"].as_str().unwrap().to_owned();
        let r = tenant_get(&app, &personal, Some(&ws), "/api/ws").await;
        expect(&r, StatusCode::FORBIDDEN, "WORKSPACE_MISMATCH", n);
        t.cleanup().await;
    }
}

#[tokio::test]
async fn an_invitation_is_accepted_once_by_the_invited_address_before_it_expires() {
    for t in databases("workspaces::invitations").await {
        let n = t.name;
        let clock = ManualClock::starting_now();
        let (auth, app) = ws_app(ws_config(t.db.clone()).clock(clock.clone())).await;
        let olga = member(&auth, &app, "olga@example.com").await;
        let ivy = member(&auth, &app, "ivy@example.com").await;
        let eve = member(&auth, &app, "eve@example.com").await;
        let ws = workspace(&app, &olga, "Invites").await;
        let invite = |address: &'static str| {
            let (app, token, ws) = (app.clone(), olga.token.clone(), ws.clone());
            async move {
                let body = json!({"address": address, "roles": ["admin"]});
                let r = api(
                    &app,
                    &token,
                    Method::POST,
                    &format!("/workspaces/{ws}/invitations"),
                    Some(body),
                )
                .await;
                assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
                r.body["data"]["token"].as_str().unwrap().to_owned()
            }
        };
        let accept = |who: String, token: String| {
            let app = app.clone();
            async move {
                api(
                    &app,
                    &who,
                    Method::POST,
                    "/workspaces/invitations/accept",
                    Some(json!({"token": token})),
                )
                .await
            }
        };
        // An invitation makes no membership row: the list does not tell whether an
        // account holds the address.
        let token = invite("ivy@example.com").await;
        let r = api(
            &app,
            &olga.token,
            Method::GET,
            &format!("/workspaces/{ws}/members"),
            None,
        )
        .await;
        let statuses: Vec<_> = r.body["data"]["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["status"].clone())
            .collect();
        assert_eq!(statuses, [json!("active")], "{n}: only the owner");
        let r = accept(eve.token.clone(), token.clone()).await;
        expect(&r, StatusCode::FORBIDDEN, "INVITATION_ADDRESS_MISMATCH", n);
        // Eight concurrent accepts of one token: exactly one joins.
        let tries: Vec<_> = (0..8)
            .map(|_| accept(ivy.token.clone(), token.clone()))
            .collect();
        let replies = futures_util::future::join_all(tries).await;
        let ok = replies
            .iter()
            .filter(|r| r.status == StatusCode::OK)
            .count();
        assert_eq!(ok, 1, "{n}: accepted once");
        for r in replies.iter().filter(|r| r.status != StatusCode::OK) {
            assert!(
                matches!(r.code(), "INVITATION_INVALID" | "ALREADY_MEMBER"),
                "{n}: {:?}",
                r.body
            );
        }
        let r = accept(ivy.token.clone(), token.clone()).await;
        expect(&r, StatusCode::BAD_REQUEST, "INVITATION_INVALID", n);
        let t_ivy = switch(&app, &ivy, &ws).await;
        let r = tenant_get(&app, &t_ivy, Some(&ws), "/api/ws/admin").await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "{n}: joined with the invited roles"
        );
        // Expired after seven days; revoked at once.
        let late = invite("eve@example.com").await;
        clock.advance(Duration::from_secs(7 * 24 * 3600 + 1));
        // Sessions ended too on the moved clock: sign in again.
        let r = crate::support::http::login(&app, "eve@example.com", PW).await;
        let eve_token = r.body["data"]["accessToken"].as_str().unwrap().to_owned();
        let r = crate::support::http::login(&app, "olga@example.com", PW).await;
        let olga_token = r.body["data"]["accessToken"].as_str().unwrap().to_owned();
        let r = accept(eve_token.clone(), late).await;
        expect(&r, StatusCode::BAD_REQUEST, "INVITATION_INVALID", n);
        let body = json!({"address": "eve@example.com"});
        let r = api(
            &app,
            &olga_token,
            Method::POST,
            &format!("/workspaces/{ws}/invitations"),
            Some(body),
        )
        .await;
        let (revoked, id) = (
            r.body["data"]["token"].as_str().unwrap().to_owned(),
            r.body["data"]["invitation"]["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
        let r = api(
            &app,
            &olga_token,
            Method::DELETE,
            &format!("/workspaces/{ws}/invitations/{id}"),
            None,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{n}");
        let r = accept(eve_token.clone(), revoked).await;
        expect(&r, StatusCode::BAD_REQUEST, "INVITATION_INVALID", n);
        let r = accept(eve_token.clone(), "not-a-token".into()).await;
        expect(&r, StatusCode::BAD_REQUEST, "INVITATION_INVALID", n);
        t.cleanup().await;
    }
}

/// "Remove member" racing "switch": once the removal has returned, no token of the
/// member passes the tenant guard, whichever finished first.
#[tokio::test]
async fn a_removal_racing_a_switch_leaves_no_window() {
    const TRIALS: usize = 15;
    for t in databases("workspaces::remove_vs_switch").await {
        let n = t.name;
        let (auth, app) = ws_app(ws_config(t.db.clone())).await;
        let olga = member(&auth, &app, "olga").await;
        let sam = member(&auth, &app, "sam").await;
        let ws = workspace(&app, &olga, "Race").await;
        let path = format!("/workspaces/{ws}/members/{}", sam.id);
        for trial in 0..TRIALS {
            add(&app, &olga, &ws, "sam", &[]).await;
            let early = switch(&app, &sam, &ws).await;
            let warm = tenant_get(&app, &early, Some(&ws), "/api/ws").await;
            assert_eq!(warm.status, StatusCode::OK, "{n}: trial {trial}");
            let switch_path = format!("/workspaces/{ws}/switch");
            let (removed, switched) = tokio::join!(
                api(&app, &olga.token, Method::DELETE, &path, None),
                api(&app, &sam.token, Method::POST, &switch_path, None),
            );
            assert_eq!(removed.status, StatusCode::OK, "{n}: trial {trial}");
            let mut tokens = vec![early];
            match switched.status {
                StatusCode::OK => tokens.push(
                    switched.body["data"]["accessToken"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                ),
                _ => expect(&switched, StatusCode::NOT_FOUND, "WORKSPACE_NOT_FOUND", n),
            }
            for token in &tokens {
                let r = tenant_get(&app, token, Some(&ws), "/api/ws").await;
                expect(
                    &r,
                    StatusCode::FORBIDDEN,
                    "WORKSPACE_ACCESS_DENIED",
                    &format!("{n}: trial {trial}"),
                );
            }
        }
        t.cleanup().await;
    }
}

#[tokio::test]
async fn ten_thousand_workspaces_page_without_gaps_or_repeats() {
    const WORKSPACES: usize = 10_000;
    for t in databases("workspaces::pagination").await {
        let n = t.name;
        let (auth, app) = ws_app(ws_config(t.db.clone())).await;
        let pat = member(&auth, &app, "pat").await;
        let others = [
            member(&auth, &app, "quinn").await,
            member(&auth, &app, "rey").await,
        ];
        for chunk in (0..WORKSPACES).collect::<Vec<_>>().chunks(1000) {
            let id = |i: usize| format!("00000000-0000-7000-8000-{i:012}");
            let ws: Vec<String> = chunk
                .iter()
                .map(|&i| format!("('{}', 'W{i}', 'w{i}', 'active', 1, 1)", id(i)))
                .collect();
            t.raw(&format!("INSERT INTO sentri_workspaces (id, name, slug, status, created_at, updated_at) VALUES {}", ws.join(","))).await;
            let mut rows = Vec::new();
            for &i in chunk {
                rows.push(format!(
                    "('{}', '{}', '[\"owner\"]', 1, 'active', 1, 1)",
                    id(i),
                    pat.id
                ));
                for o in &others {
                    rows.push(format!(
                        "('{}', '{}', '[\"member\"]', 0, 'active', 1, 1)",
                        id(i),
                        o.id
                    ));
                }
            }
            t.raw(&format!("INSERT INTO sentri_workspace_members (workspace_id, user_id, roles, owner, status, created_at, updated_at) VALUES {}", rows.join(","))).await;
        }
        let mut seen = std::collections::BTreeSet::new();
        let mut after: Option<String> = None;
        loop {
            let q = after
                .as_ref()
                .map_or(String::new(), |a| format!("&after={a}"));
            let r = api(
                &app,
                &pat.token,
                Method::GET,
                &format!("/workspaces?limit=200{q}"),
                None,
            )
            .await;
            assert_eq!(r.status, StatusCode::OK, "{n}: {:?}", r.body);
            for w in r.body["data"]["items"].as_array().unwrap() {
                assert_eq!(w["roles"], json!(["owner"]), "{n}");
                assert!(
                    seen.insert(w["id"].as_str().unwrap().to_owned()),
                    "{n}: repeated"
                );
            }
            match r.body["data"]["next"].as_str() {
                Some(next) => after = Some(next.to_owned()),
                None => break,
            }
        }
        assert_eq!(seen.len(), WORKSPACES, "{n}");
        let first = seen.iter().next().unwrap().clone();
        let r = api(
            &app,
            &pat.token,
            Method::GET,
            &format!("/workspaces/{first}/members?limit=2"),
            None,
        )
        .await;
        assert_eq!(r.body["data"]["items"].as_array().unwrap().len(), 2, "{n}");
        let next = r.body["data"]["next"].as_str().unwrap().to_owned();
        let r = api(
            &app,
            &pat.token,
            Method::GET,
            &format!("/workspaces/{first}/members?limit=2&after={next}"),
            None,
        )
        .await;
        assert_eq!(r.body["data"]["items"].as_array().unwrap().len(), 1, "{n}");
        assert_eq!(r.body["data"]["next"], json!(null), "{n}");
        t.cleanup().await;
    }
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx() {
    for t in databases("workspaces::bad_input").await {
        let n = t.name;
        let (auth, app) = ws_app(ws_config(t.db.clone())).await;
        let olga = member(&auth, &app, "olga").await;
        let ws = workspace(&app, &olga, "Input").await;
        let slug = api(
            &app,
            &olga.token,
            Method::GET,
            &format!("/workspaces/{ws}"),
            None,
        )
        .await
        .body["data"]["workspace"]["slug"]
            .clone();
        let long = "x".repeat(201);
        let cases = [
            (
                Method::GET,
                "/workspaces/not-a-uuid".to_owned(),
                None,
                StatusCode::NOT_FOUND,
                "WORKSPACE_NOT_FOUND",
            ),
            (
                Method::GET,
                "/workspaces/00000000-0000-7000-8000-000000000000".to_owned(),
                None,
                StatusCode::NOT_FOUND,
                "WORKSPACE_NOT_FOUND",
            ),
            (
                Method::GET,
                "/workspaces/'%3B%20DROP%20TABLE%20x".to_owned(),
                None,
                StatusCode::NOT_FOUND,
                "WORKSPACE_NOT_FOUND",
            ),
            (
                Method::POST,
                "/workspaces".to_owned(),
                Some(json!({"name": "Dup", "slug": slug})),
                StatusCode::CONFLICT,
                "WORKSPACE_SLUG_TAKEN",
            ),
            (
                Method::POST,
                "/workspaces".to_owned(),
                Some(json!({"name": long})),
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
            ),
            (
                Method::POST,
                "/workspaces".to_owned(),
                Some(json!({"name": ""})),
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
            ),
            (
                Method::POST,
                "/workspaces".to_owned(),
                Some(json!({"name": "Ok", "slug": "Bad Slug"})),
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
            ),
            (
                Method::POST,
                "/workspaces".to_owned(),
                Some(json!({"name": 5})),
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
            ),
            (
                Method::POST,
                format!("/workspaces/{ws}/members"),
                Some(json!({"identifier": "olga", "roles": ["emperor"]})),
                StatusCode::BAD_REQUEST,
                "INVALID_ROLE",
            ),
            (
                Method::POST,
                format!("/workspaces/{ws}/members"),
                Some(json!({"identifier": "olga"})),
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
            ),
            (
                Method::POST,
                format!("/workspaces/{ws}/members"),
                Some(json!({"identifier": "bob@bad domain.test"})),
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
            ),
            (
                Method::PATCH,
                format!("/workspaces/{ws}/members/not-a-uuid"),
                Some(json!({"roles": ["admin"]})),
                StatusCode::NOT_FOUND,
                "MEMBER_NOT_FOUND",
            ),
            (
                Method::PATCH,
                format!("/workspaces/{ws}/members/{}", olga.id),
                Some(json!({"status": "banished"})),
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
            ),
            (
                Method::GET,
                "/workspaces?limit=abc".to_owned(),
                None,
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
            ),
        ];
        for (method, path, body, status, code) in cases {
            let r = api(&app, &olga.token, method.clone(), &path, body).await;
            expect(&r, status, code, &format!("{n}: {method} {path}"));
        }
        t.cleanup().await;
    }
}

#[tokio::test]
async fn provisioning_creates_or_joins_a_workspace_idempotently() {
    for t in databases("workspaces::provision").await {
        let n = t.name;
        let (auth, app) = ws_app(ws_config(t.db.clone())).await;
        let input =
            ProvisionUser::new("founder", PW).workspace(ProvisionWorkspace::new("Acme", "acme"));
        let first = auth.provision_user(input.clone()).await.unwrap();
        let again = auth.provision_user(input).await.unwrap();
        assert_eq!(first.id, again.id, "{n}");
        let joiner = ProvisionUser::new("joiner", PW)
            .workspace(ProvisionWorkspace::new("Acme", "acme").roles(["member"]));
        auth.provision_user(joiner.clone()).await.unwrap();
        auth.provision_user(joiner).await.unwrap();
        let count = t
            .scalar("SELECT COUNT(*) FROM sentri_workspaces WHERE slug = 'acme'")
            .await;
        assert_eq!(count, 1, "{n}");
        let members = t
            .scalar("SELECT COUNT(*) FROM sentri_workspace_members")
            .await;
        assert_eq!(members, 2, "{n}");
        let r = crate::support::http::login(&app, "founder", PW).await;
        let token = r.body["data"]["accessToken"].as_str().unwrap().to_owned();
        let r = api(&app, &token, Method::GET, "/workspaces", None).await;
        assert_eq!(r.body["data"]["items"][0]["slug"], "acme", "{n}");
        assert_eq!(r.body["data"]["items"][0]["roles"], json!(["owner"]), "{n}");
        // Another target for the same user and workspace is refused, not merged.
        let other = ProvisionUser::new("joiner", PW)
            .workspace(ProvisionWorkspace::new("Acme", "acme").roles(["admin"]));
        let err = auth.provision_user(other).await.unwrap_err();
        assert_eq!(err.code().as_str(), "ALREADY_MEMBER", "{n}");
        t.cleanup().await;
    }
}

/// With a mailer, the invitation travels by real mail (never in the answer), and every
/// change emits an event carrying the workspace id.
#[tokio::test]
async fn invitations_are_mailed_and_changes_emit_workspace_events() {
    use sentri::AuthEventKind as K;
    let Some((url, maildir)) = crate::lifecycle::smtp("workspaces::mail") else {
        return;
    };
    for t in databases("workspaces::mail").await {
        let n = t.name;
        let mailer = std::sync::Arc::new(sentri::mail::SmtpMailer::from_url(&url).unwrap());
        let from = sentri::mail::Mailbox::new(Some("Acme"), "no-reply@acme.example").unwrap();
        let link = "https://app.example/invitations/accept?token={token}";
        let events = crate::lifecycle::Recorder::default();
        let cfg = crate::support::services::config(t.db.clone())
            .event_sink(events.clone())
            .with(
                sentri::capability::workspaces::Workspaces::default()
                    .invitation_mail(mailer, from, link),
            );
        let (auth, app) = ws_app(cfg).await;
        let olga = member(&auth, &app, "olga").await;
        let to = crate::lifecycle::address();
        let guest = member(&auth, &app, &to).await;
        let ws = workspace(&app, &olga, "Mailed").await;
        let body = json!({"address": to, "roles": ["member"]});
        let r = api(
            &app,
            &olga.token,
            Method::POST,
            &format!("/workspaces/{ws}/invitations"),
            Some(body),
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED, "{n}: {:?}", r.body);
        assert_eq!(
            r.body["data"].get("token"),
            None,
            "{n}: mailed, not returned"
        );
        let mail = crate::lifecycle::wait_mail(&maildir, &to, 1).await;
        let token = crate::lifecycle::token_in(&mail);
        let r = api(
            &app,
            &guest.token,
            Method::POST,
            "/workspaces/invitations/accept",
            Some(json!({"token": token})),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{n}: {:?}", r.body);
        let r = api(
            &app,
            &olga.token,
            Method::DELETE,
            &format!("/workspaces/{ws}/members/{}", guest.id),
            None,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{n}");
        for kind in [
            K::WorkspaceCreated,
            K::InvitationCreated,
            K::InvitationAccepted,
            K::MemberRemoved,
            K::WorkspaceSwitched,
        ] {
            if kind == K::WorkspaceSwitched {
                switch(&app, &olga, &ws).await;
            }
            let event = events.wait_for(kind).await;
            assert_eq!(
                event.workspace_id.as_deref(),
                Some(ws.as_str()),
                "{n}: {kind:?}"
            );
        }
        t.cleanup().await;
    }
}

/// Deleting a workspace takes its memberships and invitations with it and is refused by
/// the guard at once; deleting a user removes their memberships (foreign keys).
#[tokio::test]
async fn deleting_a_workspace_or_a_user_removes_the_memberships() {
    for t in databases("workspaces::deletion").await {
        let n = t.name;
        let (auth, app) = ws_app(ws_config(t.db.clone())).await;
        let olga = member(&auth, &app, "olga").await;
        let max = member(&auth, &app, "max").await;
        let ws = workspace(&app, &olga, "Doomed").await;
        add(&app, &olga, &ws, "max", &["admin"]).await;
        let token = switch(&app, &max, &ws).await;
        let body = json!({"address": "zed@example.com"});
        let r = api(
            &app,
            &olga.token,
            Method::POST,
            &format!("/workspaces/{ws}/invitations"),
            Some(body),
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED, "{n}");
        let r = tenant_get(&app, &token, Some(&ws), "/api/ws").await;
        assert_eq!(r.status, StatusCode::OK, "{n}");
        // An admin may not delete it; the owner may.
        let r = api(
            &app,
            &max.token,
            Method::DELETE,
            &format!("/workspaces/{ws}"),
            None,
        )
        .await;
        expect(&r, StatusCode::FORBIDDEN, "FORBIDDEN", n);
        let r = api(
            &app,
            &olga.token,
            Method::DELETE,
            &format!("/workspaces/{ws}"),
            None,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{n}: {:?}", r.body);
        let r = tenant_get(&app, &token, Some(&ws), "/api/ws").await;
        expect(&r, StatusCode::FORBIDDEN, "WORKSPACE_ACCESS_DENIED", n);
        for table in ["sentri_workspace_members", "sentri_workspace_invitations"] {
            let left = t
                .scalar(&format!(
                    "SELECT COUNT(*) FROM {table} WHERE workspace_id = '{ws}'"
                ))
                .await;
            assert_eq!(left, 0, "{n}: {table}");
        }
        let other = workspace(&app, &olga, "Kept").await;
        add(&app, &olga, &other, "max", &[]).await;
        assert!(t.db.delete_user(&max.id).await.unwrap(), "{n}");
        let left = t
            .scalar(&format!(
                "SELECT COUNT(*) FROM sentri_workspace_members WHERE user_id = '{}'",
                max.id
            ))
            .await;
        assert_eq!(left, 0, "{n}: memberships of a deleted user");
        t.cleanup().await;
    }
}

/// A workspace id that is not a UUID is refused before any query: with the workspace
/// tables gone, it still answers 404, while a well-formed id reaches the store (503).
#[tokio::test]
async fn a_malformed_workspace_id_is_refused_before_any_query() {
    for t in databases("workspaces::no_query").await {
        let n = t.name;
        let (auth, app) = ws_app(ws_config(t.db.clone())).await;
        let olga = member(&auth, &app, "olga").await;
        let r = crate::support::http::profile_with(&app, &olga.token).await;
        assert_eq!(r.status, StatusCode::OK, "{n}: session cached");
        for table in [
            "sentri_workspace_invitations",
            "sentri_workspace_members",
            "sentri_workspaces",
        ] {
            t.raw(&format!("DROP TABLE {table}")).await;
        }
        for id in [
            "not-a-uuid",
            "1%20OR%201%3D1",
            "00000000-0000-7000-8000-00000000000",
        ] {
            let r = api(
                &app,
                &olga.token,
                Method::GET,
                &format!("/workspaces/{id}"),
                None,
            )
            .await;
            expect(
                &r,
                StatusCode::NOT_FOUND,
                "WORKSPACE_NOT_FOUND",
                &format!("{n}: {id}"),
            );
        }
        let r = api(
            &app,
            &olga.token,
            Method::GET,
            "/workspaces/00000000-0000-7000-8000-000000000000",
            None,
        )
        .await;
        expect(
            &r,
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVICE_UNAVAILABLE",
            n,
        );
        t.cleanup().await;
    }
}

/// The audit log keeps each workspace event's workspace, and filters by it.
#[tokio::test]
async fn the_audit_log_records_and_filters_workspace_events() {
    use sentri::capability::audit::{Audit, AuditQuery};
    for t in databases("workspaces::audit").await {
        let n = t.name;
        let audit = Audit::new(t.db.clone());
        let (auth, app) = ws_app(ws_config(t.db.clone()).with(audit.clone())).await;
        let olga = member(&auth, &app, "olga").await;
        let _mia = member(&auth, &app, "mia").await;
        let a = workspace(&app, &olga, "Audited A").await;
        let b = workspace(&app, &olga, "Audited B").await;
        add(&app, &olga, &b, "mia", &[]).await;
        // Waits (bounded) for `count` events of workspace `ws`; their kinds, oldest first.
        let kinds_of = |ws: String, count: usize| {
            let audit = audit.clone();
            async move {
                let mut q = AuditQuery::default();
                q.workspace_id = Some(ws.clone());
                q.limit = 50;
                for _ in 0..1000 {
                    let rows = audit.query(&q).await.unwrap().events;
                    if rows.len() >= count {
                        assert!(
                            rows.iter()
                                .all(|e| e.workspace_id.as_deref() == Some(ws.as_str()))
                        );
                        return rows
                            .iter()
                            .rev()
                            .map(|e| e.kind.clone())
                            .collect::<Vec<_>>();
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                panic!("fewer than {count} audit rows of {ws}");
            }
        };
        assert_eq!(kinds_of(a.clone(), 1).await, ["workspace_created"], "{n}");
        assert_eq!(
            kinds_of(b.clone(), 3).await,
            [
                "workspace_created",
                "invitation_created",
                "invitation_accepted"
            ],
            "{n}"
        );
        t.cleanup().await;
    }
}
