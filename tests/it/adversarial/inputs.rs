//! Hostile identifiers (SQL metacharacters, lookalikes), passwords, and user-id paths.

use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::support::db::databases;
use crate::support::http::{Reply, app, bearer, call, expect, login, register, session};
use crate::support::services::config;

#[tokio::test]
async fn identifiers_sql_metacharacters_lookalikes_and_passwords() {
    for t in databases("adversarial::identifiers").await {
        let n = t.name;
        let auth = sentri::create_auth(config(t.db.clone())).unwrap();
        let app = app(&auth);
        let created = |r: &Reply, what: &str| {
            assert_eq!(r.status, StatusCode::CREATED, "{n} {what}: {:?}", r.body)
        };
        let conflict = |r: &Reply, what: &str| {
            expect(
                r,
                StatusCode::CONFLICT,
                "USER_ALREADY_EXISTS",
                &format!("{n} {what}"),
            )
        };
        let bad = |r: &Reply, what: &str| {
            expect(
                r,
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                &format!("{n} {what}"),
            )
        };

        // SQL metacharacters are data.
        let sqlish = [
            "robert'); drop table sentri_users;--",
            "\" or 1=1 --",
            "' or ''='",
            "%",
            "_",
            "a\\b",
            "`x`; select 1",
            "$1",
            "?",
        ];
        for id in sqlish {
            let r = register(&app, id, "password1").await;
            created(&r, id);
            assert_eq!(
                r.body["data"]["user"]["identifier"], id,
                "{n}: stored verbatim"
            );
            assert_eq!(
                login(&app, id, "password1").await.status,
                StatusCode::OK,
                "{n} {id}"
            );
        }
        assert_eq!(
            t.db.count_users().await.unwrap(),
            sqlish.len() as u64,
            "{n}: tables intact"
        );
        // No wildcard semantics: "%" and "_" are two accounts, "x%" does not match.
        expect(
            &login(&app, "robert%", "password1").await,
            StatusCode::UNAUTHORIZED,
            "INVALID_CREDENTIALS",
            "LIKE",
        );

        // NFKC_Casefold: these collide.
        created(&register(&app, "admin", "password1").await, "admin");
        for twin in [
            "ＡＤＭＩＮ",
            " Admin ",
            "ADMIN",
            "\u{3000}admin\u{3000}",
            "ａｄｍｉｎ",
        ] {
            conflict(&register(&app, twin, "password1").await, twin);
        }
        assert_eq!(
            login(&app, "ＡＤＭＩＮ", "password1").await.status,
            StatusCode::OK,
            "{n}: fullwidth logs in as admin"
        );
        created(&register(&app, "ﬁle", "password1").await, "ligature");
        conflict(&register(&app, "FILE", "password1").await, "ligature twin");
        created(&register(&app, "Å", "password1").await, "precomposed");
        conflict(
            &register(&app, "A\u{30a}", "password1").await,
            "decomposed twin",
        );
        conflict(
            &register(&app, "\u{212b}", "password1").await,
            "angstrom sign twin",
        );
        // Not folded (documented): other scripts are other identifiers.
        created(
            &register(&app, "\u{430}dmin", "password1").await,
            "cyrillic a",
        );
        // Invisible and bidi-control characters are refused (they would make look-alikes).
        for id in [
            "admin\u{200b}",
            "ad\u{200d}min",
            "\u{202e}nimda",
            "admin\u{feff}",
            "\u{2066}admin",
            "ad\u{ad}min",
        ] {
            bad(&register(&app, id, "password1").await, &format!("{id:?}"));
        }

        // Passwords by length (bytes).
        let cases: [(usize, bool); 7] = [
            (0, false),
            (7, false),
            (8, true),
            (72, true),
            (73, true),
            (1024, true),
            (1025, false),
        ];
        for (len, ok) in cases {
            let id = format!("pw{len}");
            let pw: String = (0..len).map(|i| (b'a' + (i % 26) as u8) as char).collect();
            let r = register(&app, &id, &pw).await;
            if ok {
                created(&r, &id);
                assert_eq!(
                    login(&app, &id, &pw).await.status,
                    StatusCode::OK,
                    "{n} {id}"
                );
            } else {
                bad(&r, &id);
            }
        }
        // No truncation: 73 bytes differing only in the last byte, and a 72-byte prefix.
        let pw73: String = (0..73).map(|i| (b'a' + (i % 26) as u8) as char).collect();
        let mut other73 = pw73.clone();
        other73.pop();
        other73.push('!');
        expect(
            &login(&app, "pw73", &other73).await,
            StatusCode::UNAUTHORIZED,
            "INVALID_CREDENTIALS",
            "73 vs 73",
        );
        expect(
            &login(&app, "pw73", &pw73[..72]).await,
            StatusCode::UNAUTHORIZED,
            "INVALID_CREDENTIALS",
            "72 prefix",
        );
        let pw1024: String = (0..1024).map(|i| (b'a' + (i % 26) as u8) as char).collect();
        expect(
            &login(&app, "pw1024", &pw1024[..1023]).await,
            StatusCode::UNAUTHORIZED,
            "INVALID_CREDENTIALS",
            "1023 prefix",
        );
        bad(
            &login(&app, "pw1024", &format!("{pw1024}x")).await,
            "login with 1025 bytes",
        );
        bad(&login(&app, "pw8", "").await, "login with empty password");
        // Characters, not bytes, count for the minimum; NUL bytes are not terminators.
        bad(
            &register(&app, "multibyte", "ééééééé").await,
            "7 two-byte chars",
        );
        created(
            &register(&app, "nul", "abcdefgh\u{0}X").await,
            "NUL password",
        );
        expect(
            &login(&app, "nul", "abcdefgh\u{0}Y").await,
            StatusCode::UNAUTHORIZED,
            "INVALID_CREDENTIALS",
            "after NUL",
        );
        expect(
            &login(&app, "nul", "abcdefgh").await,
            StatusCode::UNAUTHORIZED,
            "INVALID_CREDENTIALS",
            "NUL prefix",
        );
        assert_eq!(
            login(&app, "nul", "abcdefgh\u{0}X").await.status,
            StatusCode::OK,
            "{n}"
        );
        t.cleanup().await;
    }
}

// ---- paths ---------------------------------------------------------------------------

#[tokio::test]
async fn user_id_paths() {
    let t = databases("adversarial::paths").await.remove(0);
    let auth = sentri::create_auth(config(t.db.clone())).unwrap();
    let app = app(&auth);
    auth.register(sentri::RegisterInput {
        identifier: "root".into(),
        password: "password1".into(),
        roles: Some(vec!["admin".into()]),
    })
    .await
    .unwrap();
    let admin = login(&app, "root", "password1").await.body["data"]["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let (user, _) = session(&app, "ivy", "password1").await;
    let body = Some(json!({"roles": ["user"]}));
    let ids = [
        "not-a-uuid".to_owned(),
        "..".to_owned(),
        "%2e%2e".to_owned(),
        "..%2f..%2fetc".to_owned(),
        "%00".to_owned(),
        "%FF%FE".to_owned(),
        "%zz".to_owned(),
        "'%20or%201=1--".to_owned(),
        uuid::Uuid::now_v7().simple().to_string(),
        format!("{}", uuid::Uuid::now_v7()).to_uppercase(),
        "0".repeat(10 * 1024),
        "%41".repeat(4 * 1024),
    ];
    for id in &ids {
        let path = format!("/auth/users/{id}/roles");
        let r = call(
            &app,
            Method::POST,
            &path,
            &[("authorization", &bearer(&admin))],
            body.clone(),
        )
        .await;
        expect(
            &r,
            StatusCode::NOT_FOUND,
            "USER_NOT_FOUND",
            &format!("admin {}", &id[..id.len().min(20)]),
        );
        let r = call(
            &app,
            Method::POST,
            &path,
            &[("authorization", &bearer(&user))],
            body.clone(),
        )
        .await;
        expect(&r, StatusCode::FORBIDDEN, "FORBIDDEN", "non-admin");
        let r = call(&app, Method::POST, &path, &[], body.clone()).await;
        expect(&r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "anonymous");
    }
    let r = call(
        &app,
        Method::POST,
        "/auth/users//roles",
        &[("authorization", &bearer(&admin))],
        body.clone(),
    )
    .await;
    expect(&r, StatusCode::NOT_FOUND, "USER_NOT_FOUND", "empty id");
    for path in ["/auth/users/../roles/x", "/auth/users/a/b/roles"] {
        let r = call(
            &app,
            Method::POST,
            path,
            &[("authorization", &bearer(&admin))],
            body.clone(),
        )
        .await;
        expect(&r, StatusCode::NOT_FOUND, "NOT_FOUND", path);
    }
}
