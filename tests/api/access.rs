//! Who may read what: the status every kind of request gets, and hostile tokens.

use super::*;

#[sqlx::test]
async fn each_request_gets_the_status_its_case_calls_for(pool: PgPool) {
    let (nats, js) = common::isolated_nats().await;
    let api = spawn_api(&pool, &nats).await;
    let (track, user, _) = started(&pool).await;
    let own = token_for(user);
    let stranger = token_for(Uuid::new_v4());
    // the project's legacy service_role key as Supabase issues it: no `sub`, no `aud`
    let now = jsonwebtoken::get_current_timestamp();
    let service = hs256(
        &json!({"iss": "supabase", "role": "service_role", "iat": now, "exp": now + 3600}),
        SECRET.as_bytes(),
    );
    let app_admin = hs256(
        &with(
            claims(Uuid::new_v4()),
            json!({"app_metadata": {"role": "admin"}}),
        ),
        SECRET.as_bytes(),
    );
    let path = progress_path(user, track.id);

    let response = api.get(&path, Some(&own)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["etag"], "\"1\"");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["user_id"], user.to_string());
    assert_eq!(body["total_units"], 3);
    assert_eq!(body["percent_complete"], 0.0);
    assert!(body["assessments"].is_object());

    let not_modified = api
        .http
        .get(format!("{}{path}", api.base))
        .bearer_auth(&own)
        .header("if-none-match", "\"1\"")
        .send()
        .await
        .unwrap();
    assert_eq!(not_modified.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(not_modified.headers()["etag"], "\"1\"");

    let other_track = progress_path(user, Uuid::new_v4());
    let bad_track = format!("/api/v1/users/{user}/tracks/12/progress");
    let cases: [(&str, &str, Option<&str>, StatusCode); 9] = [
        ("own progress", &path, Some(&own), StatusCode::OK),
        ("no token", &path, None, StatusCode::UNAUTHORIZED),
        (
            "another user's",
            &path,
            Some(&stranger),
            StatusCode::FORBIDDEN,
        ),
        ("service role", &path, Some(&service), StatusCode::OK),
        ("admin claim", &path, Some(&app_admin), StatusCode::OK),
        (
            "no progress yet",
            &other_track,
            Some(&own),
            StatusCode::NOT_FOUND,
        ),
        (
            "malformed user id",
            "/api/v1/users/nope/progress",
            Some(&own),
            StatusCode::BAD_REQUEST,
        ),
        (
            "malformed track id",
            &bad_track,
            Some(&own),
            StatusCode::BAD_REQUEST,
        ),
        (
            "unknown route",
            "/api/v2/anything",
            Some(&own),
            StatusCode::NOT_FOUND,
        ),
    ];
    for (case, path, token, expected) in cases {
        let response = api.get(path, token).await;
        assert_eq!(response.status(), expected, "{case}");
        if expected != StatusCode::OK {
            let body: Value = response.json().await.unwrap();
            assert!(
                body["error"].is_string() && body["message"].is_string(),
                "{case}: {body}"
            );
        }
    }
    let bad_query = api
        .get(&format!("{path}?min_version=soon"), Some(&own))
        .await;
    assert_eq!(bad_query.status(), StatusCode::BAD_REQUEST);

    let list_path = format!("/api/v1/users/{user}/progress");
    let list = api.get(&list_path, Some(&own)).await;
    assert_eq!(list.status(), StatusCode::OK);
    let list: Value = list.json().await.unwrap();
    assert_eq!(list["progress"].as_array().unwrap().len(), 1);
    assert_eq!(list["progress"][0]["track_id"], track.id.to_string());
    let foreign_list = api.get(&list_path, Some(&stranger)).await;
    assert_eq!(foreign_list.status(), StatusCode::FORBIDDEN);
    common::delete_streams(&js, &nats).await;
}

#[sqlx::test]
async fn hostile_tokens_are_refused_and_see_no_progress(pool: PgPool) {
    let (nats, js) = common::isolated_nats().await;
    let api = spawn_api(&pool, &nats).await;
    let (track, user, _) = started(&pool).await;
    let path = progress_path(user, track.id);
    let now = jsonwebtoken::get_current_timestamp();
    let valid = claims(user);
    let good = token_for(user);
    // {"alg":"none","typ":"JWT"}, then the valid token's claims and no signature
    let alg_none = format!(
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.",
        good.split('.').nth(1).unwrap()
    );
    let confused = |public: &[u8], kid: &str| {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, &valid, &EncodingKey::from_secret(public)).unwrap()
    };
    let changed = |changes: Value| hs256(&with(valid.clone(), changes), SECRET.as_bytes());
    let unauthorized = StatusCode::UNAUTHORIZED;

    let cases: Vec<(&str, String, StatusCode)> = vec![
        ("alg none", alg_none, unauthorized),
        (
            "wrong secret",
            hs256(&valid, b"not-the-secret"),
            unauthorized,
        ),
        (
            "HS256 keyed with the EC public key",
            confused(ES_PUBLIC, ES_KID),
            unauthorized,
        ),
        (
            "HS256 keyed with the RSA public key",
            confused(RS_PUBLIC, RS_KID),
            unauthorized,
        ),
        ("expired", changed(json!({"exp": now - 3600})), unauthorized),
        (
            "not valid yet",
            changed(json!({"nbf": now + 3600})),
            unauthorized,
        ),
        (
            "wrong audience",
            changed(json!({"aud": "anon"})),
            unauthorized,
        ),
        ("no audience", changed(json!({"aud": null})), unauthorized),
        (
            "wrong issuer",
            changed(json!({"iss": "https://evil.example"})),
            unauthorized,
        ),
        (
            "unknown kid",
            signed(Algorithm::ES256, "rotated-away", &valid),
            unauthorized,
        ),
        (
            "ES256 naming the RSA key",
            signed(Algorithm::ES256, RS_KID, &valid),
            unauthorized,
        ),
        ("truncated", good[..good.len() - 6].to_owned(), unauthorized),
        ("garbage", "definitely.not.a-jwt".to_owned(), unauthorized),
        ("missing sub", changed(json!({"sub": null})), unauthorized),
        (
            "the public anon role",
            changed(json!({"role": "anon"})),
            unauthorized,
        ),
        ("no role", changed(json!({"role": null})), unauthorized),
        (
            "service_role with another project's issuer",
            changed(json!({"role": "service_role", "iss": "https://evil.example"})),
            unauthorized,
        ),
        (
            "anonymous sign-in reading its own",
            changed(json!({"is_anonymous": true})),
            StatusCode::OK,
        ),
        (
            "sub not a user id",
            changed(json!({"sub": "admin"})),
            unauthorized,
        ),
        (
            "admin in user_metadata",
            hs256(
                &with(
                    claims(Uuid::new_v4()),
                    json!({"user_metadata": {"role": "admin"}}),
                ),
                SECRET.as_bytes(),
            ),
            StatusCode::FORBIDDEN,
        ),
        (
            "another user's sub",
            token_for(Uuid::new_v4()),
            StatusCode::FORBIDDEN,
        ),
        ("control: HS256", good.clone(), StatusCode::OK),
        (
            "control: ES256",
            signed(Algorithm::ES256, ES_KID, &valid),
            StatusCode::OK,
        ),
        (
            "control: RS256",
            signed(Algorithm::RS256, RS_KID, &valid),
            StatusCode::OK,
        ),
    ];
    for (case, token, expected) in cases {
        let response = api.get(&path, Some(&token)).await;
        assert_eq!(response.status(), expected, "{case}");
        let body = response.text().await.unwrap();
        if expected != StatusCode::OK {
            assert!(
                !body.contains(&track.id.to_string()) && !body.contains("percent_complete"),
                "{case} leaked progress: {body}"
            );
        }
    }
    common::delete_streams(&js, &nats).await;
}
