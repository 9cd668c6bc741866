//! Browsers: CORS for listed origins only.

use super::*;

/// An `OPTIONS` preflight from `origin` for a `GET` with an `Authorization` header.
async fn preflight(api: &TestApi, path: &str, origin: &str) -> reqwest::Response {
    api.http
        .request(reqwest::Method::OPTIONS, format!("{}{path}", api.base))
        .header("origin", origin)
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .expect("API reachable")
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).map(|v| v.to_str().unwrap())
}

#[sqlx::test]
async fn browsers_on_a_listed_origin_may_call_and_others_get_no_cors_headers(pool: PgPool) {
    const ALLOWED: &str = "http://127.0.0.1:5173";
    const OTHER: &str = "http://127.0.0.1:5174";
    let (nats, js) = common::isolated_nats().await;
    let config = ApiConfig {
        cors_origins: vec![reqwest::header::HeaderValue::from_static(ALLOWED)],
        ..api_config()
    };
    let api = spawn_api_with(&pool, &nats, config).await;
    let (track, user, _) = started(&pool).await;
    let path = progress_path(user, track.id);

    let allowed = preflight(&api, &path, ALLOWED).await;
    assert!(allowed.status().is_success(), "{}", allowed.status());
    assert_eq!(
        header(&allowed, "access-control-allow-origin"),
        Some(ALLOWED)
    );
    let methods = header(&allowed, "access-control-allow-methods").unwrap();
    assert!(
        methods.contains("GET") && methods.contains("POST"),
        "{methods}"
    );
    let headers = header(&allowed, "access-control-allow-headers").unwrap();
    assert!(
        headers.contains("authorization") && headers.contains("content-type"),
        "{headers}"
    );
    assert_eq!(header(&allowed, "access-control-allow-credentials"), None);

    let other = preflight(&api, &path, OTHER).await;
    assert_eq!(header(&other, "access-control-allow-origin"), None);

    let read = |origin: &'static str| {
        api.http
            .get(format!("{}{path}", api.base))
            .header("origin", origin)
            .bearer_auth(token_for(user))
            .send()
    };
    let response = read(ALLOWED).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header(&response, "access-control-allow-origin"),
        Some(ALLOWED)
    );
    let exposed = header(&response, "access-control-expose-headers").unwrap();
    assert!(exposed.contains("etag"), "{exposed}");
    let response = read(OTHER).await.unwrap();
    assert_eq!(header(&response, "access-control-allow-origin"), None);

    // a refusal is readable too, so a page can tell a stale token from a network failure
    let refused = api
        .http
        .get(format!("{}{path}", api.base))
        .header("origin", ALLOWED)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        header(&refused, "access-control-allow-origin"),
        Some(ALLOWED)
    );
    common::delete_streams(&js, &nats).await;
}

#[sqlx::test]
async fn without_listed_origins_no_cors_headers_are_sent(pool: PgPool) {
    let (nats, js) = common::isolated_nats().await;
    let api = spawn_api(&pool, &nats).await;
    let (track, user, _) = started(&pool).await;
    let path = progress_path(user, track.id);
    for origin in ["http://127.0.0.1:5173", "http://localhost:8000"] {
        let response = preflight(&api, &path, origin).await;
        assert_eq!(header(&response, "access-control-allow-origin"), None);
    }
    common::delete_streams(&js, &nats).await;
}
