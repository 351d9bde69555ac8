//! The catalogue routes, user role changes, permission guards and the rules.

use axum::http::{Method, StatusCode};
use serde_json::json;

use super::{PW, admin_call, get_as, roles_app, roles_config, roles_of, user_with};
use crate::support::db::databases;
use crate::support::http::expect;

#[tokio::test]
async fn catalogue_crud_over_http() {
    for t in databases("roles::catalogue_crud").await {
        let n = t.name;
        let (auth, app) = roles_app(roles_config(t.db.clone())).await;
        let (_, admin, _) = user_with(&auth, &app, "root", &["admin"]).await;
        let (_, plain, _) = user_with(&auth, &app, "plain", &["user"]).await;

        let r = admin_call(&app, &admin, Method::GET, "/roles", None).await;
        assert_eq!(r.status, StatusCode::OK, "{n}: {:?}", r.body);
        let names: Vec<&str> = r.body["data"]["roles"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            ["admin", "editor", "user"],
            "{n}: seeded from valid_roles"
        );
        let editor = &r.body["data"]["roles"][1];
        assert_eq!(editor["builtin"], true, "{n}");
        assert_eq!(editor["grantedInCode"], json!(["posts:write"]), "{n}");

        let body =
            json!({"name": "support", "description": "Help desk", "permissions": ["tickets:read"]});
        let r = admin_call(&app, &admin, Method::POST, "/roles", Some(body.clone())).await;
        assert_eq!(r.status, StatusCode::CREATED, "{n}: {:?}", r.body);
        assert_eq!(
            r.body["data"]["role"]["permissions"],
            json!(["tickets:read"]),
            "{n}"
        );
        let again = admin_call(&app, &admin, Method::POST, "/roles", Some(body)).await;
        expect(&again, StatusCode::CONFLICT, "ROLE_ALREADY_EXISTS", n);
        let undeclared = json!({"name": "x", "permissions": ["nuke:all"]});
        let r = admin_call(&app, &admin, Method::POST, "/roles", Some(undeclared)).await;
        expect(&r, StatusCode::BAD_REQUEST, "INVALID_PERMISSION", n);
        let bad_name = json!({"name": "no spaces please"});
        let r = admin_call(&app, &admin, Method::POST, "/roles", Some(bad_name)).await;
        expect(&r, StatusCode::BAD_REQUEST, "VALIDATION_ERROR", n);
        let r = admin_call(&app, &plain, Method::GET, "/roles", None).await;
        expect(&r, StatusCode::FORBIDDEN, "FORBIDDEN", n);

        let patch =
            json!({"description": "Tier 1", "permissions": ["tickets:read", "tickets:write"]});
        let r = admin_call(&app, &admin, Method::PATCH, "/roles/support", Some(patch)).await;
        assert_eq!(r.status, StatusCode::OK, "{n}: {:?}", r.body);
        let r = admin_call(&app, &admin, Method::GET, "/roles/support", None).await;
        assert_eq!(r.body["data"]["role"]["description"], "Tier 1", "{n}");
        assert_eq!(
            r.body["data"]["role"]["permissions"],
            json!(["tickets:read", "tickets:write"]),
            "{n}"
        );
        let r = admin_call(&app, &admin, Method::PATCH, "/roles/ghost", Some(json!({}))).await;
        expect(&r, StatusCode::NOT_FOUND, "ROLE_NOT_FOUND", n);

        let r = admin_call(&app, &admin, Method::DELETE, "/roles/support", None).await;
        assert_eq!(r.status, StatusCode::OK, "{n}: {:?}", r.body);
        let r = admin_call(&app, &admin, Method::GET, "/roles/support", None).await;
        expect(&r, StatusCode::NOT_FOUND, "ROLE_NOT_FOUND", n);
        let r = admin_call(&app, &admin, Method::DELETE, "/roles/editor", None).await;
        expect(&r, StatusCode::FORBIDDEN, "FORBIDDEN", n);
        t.cleanup().await;
    }
}

#[tokio::test]
async fn assign_revoke_set_and_list_holders() {
    for t in databases("roles::assign_revoke_set").await {
        let n = t.name;
        let (auth, app) = roles_app(roles_config(t.db.clone())).await;
        let (_, admin, _) = user_with(&auth, &app, "root", &["admin"]).await;
        let (id, _, _) = user_with(&auth, &app, "kim", &["user"]).await;
        let path = format!("/users/{id}/roles");

        let r = admin_call(
            &app,
            &admin,
            Method::POST,
            &path,
            Some(json!({"roles": ["editor"]})),
        )
        .await;
        assert_eq!(roles_of(&r), ["user", "editor"], "{n}: assign merges");
        let r = admin_call(&app, &admin, Method::DELETE, &format!("{path}/user"), None).await;
        assert_eq!(roles_of(&r), ["editor"], "{n}: revoke");
        let r = admin_call(&app, &admin, Method::DELETE, &format!("{path}/user"), None).await;
        assert_eq!(
            (r.status, roles_of(&r)),
            (StatusCode::OK, vec!["editor".to_owned()]),
            "{n}: revoking a role not held changes nothing"
        );
        let r = admin_call(
            &app,
            &admin,
            Method::PUT,
            &path,
            Some(json!({"roles": ["user", "admin"]})),
        )
        .await;
        let mut set = roles_of(&r);
        set.sort();
        assert_eq!(set, ["admin", "user"], "{n}: set");
        let r = admin_call(
            &app,
            &admin,
            Method::PUT,
            &path,
            Some(json!({"roles": ["nope"]})),
        )
        .await;
        expect(&r, StatusCode::BAD_REQUEST, "INVALID_ROLE", n);
        let missing = "/users/0190c5a0-0000-7000-8000-000000000000/roles";
        let r = admin_call(
            &app,
            &admin,
            Method::PUT,
            missing,
            Some(json!({"roles": ["user"]})),
        )
        .await;
        expect(&r, StatusCode::NOT_FOUND, "USER_NOT_FOUND", n);
        let stored = t.db.find_user_by_id(&id).await.unwrap().unwrap();
        assert_eq!(
            stored.roles,
            roles_of(&admin_call(&app, &admin, Method::GET, &path, None).await),
            "{n}"
        );
        assert!(
            stored.authz_version >= 3,
            "{n}: each change bumps the version"
        );

        // Holders, by id, in pages.
        for i in 0..5 {
            user_with(&auth, &app, &format!("ed{i}"), &["editor"]).await;
        }
        let mut seen = Vec::new();
        let mut after = String::new();
        loop {
            let q = if after.is_empty() {
                "limit=2".to_owned()
            } else {
                format!("limit=2&after={after}")
            };
            let r = admin_call(
                &app,
                &admin,
                Method::GET,
                &format!("/roles/editor/users?{q}"),
                None,
            )
            .await;
            assert_eq!(r.status, StatusCode::OK, "{n}: {:?}", r.body);
            for u in r.body["data"]["users"].as_array().unwrap() {
                seen.push(u["identifier"].as_str().unwrap().to_owned());
            }
            match r.body["data"]["next"].as_str() {
                Some(next) => after = next.to_owned(),
                None => break,
            }
        }
        seen.sort();
        assert_eq!(seen, ["ed0", "ed1", "ed2", "ed3", "ed4"], "{n}");
        assert_eq!(t.db.count_role_holders("editor").await.unwrap(), 5, "{n}");
        t.cleanup().await;
    }
}

#[tokio::test]
async fn permission_guards_allow_and_deny() {
    for t in databases("roles::permission_matrix").await {
        let n = t.name;
        let (auth, app) = roles_app(roles_config(t.db.clone())).await;
        let (_, admin, _) = user_with(&auth, &app, "root", &["admin"]).await;
        let body = json!({"name": "support", "permissions": ["tickets:read"]});
        let r = admin_call(&app, &admin, Method::POST, "/roles", Some(body)).await;
        assert_eq!(r.status, StatusCode::CREATED, "{n}: {:?}", r.body);
        let (_, plain, _) = user_with(&auth, &app, "plain", &["user"]).await;
        let (_, editor, _) = user_with(&auth, &app, "ed", &["editor"]).await;
        // A catalogue role (not in valid_roles) is assignable.
        let (sup_id, _, _) = user_with(&auth, &app, "sup", &["user"]).await;
        let r = admin_call(
            &app,
            &admin,
            Method::POST,
            &format!("/users/{sup_id}/roles"),
            Some(json!({"roles": ["support"]})),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{n}: {:?}", r.body);
        let r = crate::support::http::login(&app, "sup", PW).await;
        let support = r.body["data"]["accessToken"].as_str().unwrap().to_owned();
        let (_, both, _) = user_with(&auth, &app, "both", &["editor", "support"]).await;

        // (token, /api/posts, /api/any, /api/all)
        let matrix = [
            ("plain", &plain, 403, 403, 403),
            ("editor", &editor, 200, 200, 403),
            ("support", &support, 403, 200, 403),
            ("both", &both, 200, 200, 200),
            ("admin", &admin, 403, 403, 403),
        ];
        for (who, token, posts, any, all) in matrix {
            for (path, want) in [("/api/posts", posts), ("/api/any", any), ("/api/all", all)] {
                let r = get_as(&app, token, path).await;
                assert_eq!(r.status.as_u16(), want, "{n}: {who} {path}: {:?}", r.body);
                if want == 403 {
                    expect(&r, StatusCode::FORBIDDEN, "FORBIDDEN", n);
                }
            }
        }
        let r = get_as(&app, &both, "/api/posts").await;
        assert_eq!(
            r.body["permissions"],
            json!(["posts:write", "tickets:read"]),
            "{n}: the extractor"
        );
        let anonymous =
            crate::support::http::call(&app, Method::GET, "/api/posts", &[], None).await;
        expect(&anonymous, StatusCode::UNAUTHORIZED, "UNAUTHORIZED", n);

        // A permission edit reaches the guard within the cache bound (here: at once, as
        // this process drops its cached set).
        let patch = json!({"permissions": ["tickets:read", "tickets:write"]});
        let r = admin_call(&app, &admin, Method::PATCH, "/roles/support", Some(patch)).await;
        assert_eq!(r.status, StatusCode::OK, "{n}");
        let r = admin_call(
            &app,
            &admin,
            Method::PATCH,
            "/roles/support",
            Some(json!({"permissions": []})),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{n}");
        let r = get_as(&app, &support, "/api/any").await;
        expect(&r, StatusCode::FORBIDDEN, "FORBIDDEN", n);
        t.cleanup().await;
    }
}

#[test]
fn an_undeclared_permission_panics_at_build_time() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let auth = rt.block_on(async {
        let db = sentri::db::Database::connect("sqlite::memory:")
            .await
            .unwrap();
        sentri::create_auth(roles_config(db)).unwrap()
    });
    let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        auth.require_permission("posts:wrte")
    }));
    let msg = built
        .err()
        .and_then(|e| e.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    assert!(msg.contains("\"posts:wrte\" is not declared"), "{msg}");
    let _ = auth.require_permission("tickets:read");
    let _ = auth.require_permission("roles:manage");
}

#[tokio::test]
async fn deleting_a_role_in_use_needs_reassign_or_strip() {
    for t in databases("roles::delete_in_use").await {
        let n = t.name;
        let (auth, app) = roles_app(roles_config(t.db.clone())).await;
        let (_, admin, _) = user_with(&auth, &app, "root", &["admin"]).await;
        for name in ["support", "helpdesk"] {
            let r = admin_call(
                &app,
                &admin,
                Method::POST,
                "/roles",
                Some(json!({"name": name})),
            )
            .await;
            assert_eq!(r.status, StatusCode::CREATED, "{n}");
        }
        let (a, _, _) = user_with(&auth, &app, "a", &["user"]).await;
        let (b, _, _) = user_with(&auth, &app, "b", &["user"]).await;
        for id in [&a, &b] {
            let r = admin_call(
                &app,
                &admin,
                Method::POST,
                &format!("/users/{id}/roles"),
                Some(json!({"roles": ["support"]})),
            )
            .await;
            assert_eq!(r.status, StatusCode::OK, "{n}: {:?}", r.body);
        }
        let r = admin_call(
            &app,
            &admin,
            Method::POST,
            &format!("/users/{b}/roles"),
            Some(json!({"roles": ["helpdesk"]})),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{n}");

        let r = admin_call(&app, &admin, Method::DELETE, "/roles/support", None).await;
        expect(&r, StatusCode::CONFLICT, "ROLE_IN_USE", n);
        assert_eq!(
            t.db.count_role_holders("support").await.unwrap(),
            2,
            "{n}: nothing changed"
        );
        let r = admin_call(
            &app,
            &admin,
            Method::DELETE,
            "/roles/support?reassign=support",
            None,
        )
        .await;
        expect(&r, StatusCode::BAD_REQUEST, "VALIDATION_ERROR", n);
        let r = admin_call(
            &app,
            &admin,
            Method::DELETE,
            "/roles/support?reassign=ghost",
            None,
        )
        .await;
        expect(&r, StatusCode::BAD_REQUEST, "INVALID_ROLE", n);
        let r = admin_call(
            &app,
            &admin,
            Method::DELETE,
            "/roles/support?reassign=helpdesk",
            None,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{n}: {:?}", r.body);
        let ua = t.db.find_user_by_id(&a).await.unwrap().unwrap();
        let ub = t.db.find_user_by_id(&b).await.unwrap().unwrap();
        assert_eq!(ua.roles, ["user", "helpdesk"], "{n}: moved");
        assert_eq!(ub.roles, ["user", "helpdesk"], "{n}: held both: one row");
        let r = admin_call(
            &app,
            &admin,
            Method::DELETE,
            "/roles/helpdesk?strip=true",
            None,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{n}: {:?}", r.body);
        assert_eq!(
            t.db.find_user_by_id(&a).await.unwrap().unwrap().roles,
            ["user"],
            "{n}: stripped"
        );
        assert_eq!(t.db.count_role_holders("helpdesk").await.unwrap(), 0, "{n}");
        t.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_last_admin_keeps_the_admin_role_under_races() {
    for t in databases("roles::last_admin").await {
        let n = t.name;
        let (auth, app) = roles_app(roles_config(t.db.clone())).await;
        let (root, admin, _) = user_with(&auth, &app, "root", &["admin"]).await;
        let r = admin_call(
            &app,
            &admin,
            Method::DELETE,
            &format!("/users/{root}/roles/admin"),
            None,
        )
        .await;
        expect(&r, StatusCode::CONFLICT, "LAST_ADMIN", n);
        let r = admin_call(
            &app,
            &admin,
            Method::PUT,
            &format!("/users/{root}/roles"),
            Some(json!({"roles": ["user"]})),
        )
        .await;
        expect(&r, StatusCode::CONFLICT, "LAST_ADMIN", n);
        // A manager through the `roles:manage` permission (not an admin) runs the race,
        // so no request of it is refused as stale.
        let keeper = json!({"name": "keeper", "permissions": ["roles:manage"]});
        let r = admin_call(&app, &admin, Method::POST, "/roles", Some(keeper)).await;
        assert_eq!(r.status, StatusCode::CREATED, "{n}: {:?}", r.body);
        let (mgr_id, _, _) = user_with(&auth, &app, "mgr", &["user"]).await;
        let r = admin_call(
            &app,
            &admin,
            Method::POST,
            &format!("/users/{mgr_id}/roles"),
            Some(json!({"roles": ["keeper"]})),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{n}: {:?}", r.body);
        let r = crate::support::http::login(&app, "mgr", PW).await;
        let mgr = r.body["data"]["accessToken"].as_str().unwrap().to_owned();
        // Two admins lose the role at the same time, many times: one always remains.
        for trial in 0..15 {
            let (other, _, _) = user_with(&auth, &app, &format!("second{trial}"), &["admin"]).await;
            let (app1, app2) = (app.clone(), app.clone());
            let (t1, t2) = (mgr.clone(), mgr.clone());
            let (p1, p2) = (
                format!("/users/{root}/roles/admin"),
                format!("/users/{other}/roles/admin"),
            );
            let a = tokio::spawn(
                async move { admin_call(&app1, &t1, Method::DELETE, &p1, None).await },
            );
            let b = tokio::spawn(
                async move { admin_call(&app2, &t2, Method::DELETE, &p2, None).await },
            );
            let (a, b) = (a.await.unwrap(), b.await.unwrap());
            let ok = [&a, &b]
                .iter()
                .filter(|r| r.status == StatusCode::OK)
                .count();
            assert_eq!(ok, 1, "{n} trial {trial}: {:?} {:?}", a.body, b.body);
            for r in [&a, &b].into_iter().filter(|r| r.status != StatusCode::OK) {
                expect(r, StatusCode::CONFLICT, "LAST_ADMIN", n);
            }
            assert_eq!(
                t.db.count_role_holders("admin").await.unwrap(),
                1,
                "{n} trial {trial}"
            );
            // Back to root as the one admin (through the store, below the rule).
            t.db.update_user_roles(&root, &["admin".to_owned()])
                .await
                .unwrap();
            t.db.update_user_roles(&other, &["user".to_owned()])
                .await
                .unwrap();
        }
        t.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_assign_and_revoke_leave_a_consistent_set() {
    for t in databases("roles::concurrent_changes").await {
        let n = t.name;
        let (auth, app) = roles_app(roles_config(t.db.clone())).await;
        let (_, admin, _) = user_with(&auth, &app, "root", &["admin"]).await;
        let (id, _, _) = user_with(&auth, &app, "kim", &["user"]).await;
        let mut tasks = Vec::new();
        for i in 0..40 {
            let (app, admin, id) = (app.clone(), admin.clone(), id.clone());
            tasks.push(tokio::spawn(async move {
                let role = if i % 4 < 2 { "editor" } else { "user" };
                if i % 2 == 0 {
                    admin_call(
                        &app,
                        &admin,
                        Method::POST,
                        &format!("/users/{id}/roles"),
                        Some(json!({"roles": [role]})),
                    )
                    .await
                } else {
                    admin_call(
                        &app,
                        &admin,
                        Method::DELETE,
                        &format!("/users/{id}/roles/{role}"),
                        None,
                    )
                    .await
                }
            }));
        }
        for task in tasks {
            let r = task.await.unwrap();
            assert_eq!(r.status, StatusCode::OK, "{n}: {:?}", r.body);
        }
        let user = t.db.find_user_by_id(&id).await.unwrap().unwrap();
        let mut distinct = user.roles.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), user.roles.len(), "{n}: no duplicate rows");
        for r in &user.roles {
            assert!(["user", "editor"].contains(&r.as_str()), "{n}: {r}");
        }
        let rows = t.db.count_role_holders("editor").await.unwrap()
            + t.db.count_role_holders("user").await.unwrap();
        assert_eq!(
            rows as usize,
            user.roles.len(),
            "{n}: the rows are the roles"
        );
        // The last change's version is the one a fresh login carries, and protect()
        // accepts it.
        let r = crate::support::http::login(&app, "kim", PW).await;
        let token = r.body["data"]["accessToken"].as_str().unwrap();
        let claims = auth.verify_access_token(token).unwrap();
        assert_eq!(claims.av.unwrap_or(0), user.authz_version, "{n}");
        assert_eq!(claims.roles, user.roles, "{n}");
        assert_eq!(
            get_as(&app, token, "/api/profile").await.status,
            StatusCode::OK,
            "{n}"
        );
        t.cleanup().await;
    }
}
