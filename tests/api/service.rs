//! The service's own routes and start-up: health, metrics, OpenAPI, `me`, readiness, keys
//! required.

use super::*;

#[sqlx::test]
async fn health_metrics_and_the_openapi_document_are_served(pool: PgPool) {
    let (nats, js) = common::isolated_nats().await;
    let api = spawn_api(&pool, &nats).await;
    let (track, user, _) = started(&pool).await;
    let token = token_for(user);
    api.get(&progress_path(user, track.id), Some(&token)).await;
    api.get(&progress_path(user, track.id), Some(&token)).await;

    assert_eq!(api.get("/healthz", None).await.status(), StatusCode::OK);
    let ready = api.get("/readyz", None).await;
    assert_eq!(ready.status(), StatusCode::OK);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(
        ready["checks"],
        json!({"database": "ok", "nats": "ok", "events": "following"})
    );

    let metrics = api.get("/metrics", None).await.text().await.unwrap();
    for expected in [
        r#"http_requests_total{method="GET",route="/api/v1/users/{user_id}/tracks/{track_id}/progress",status="200"} 2"#,
        "http_request_duration_seconds_bucket",
        "progress_cache_hits_total 1",
        "progress_cache_misses_total 1",
        "progress_cache_entries",
        r#"db_queries_total{query="progress"} 1"#,
    ] {
        assert!(
            metrics.contains(expected),
            "missing {expected} in\n{metrics}"
        );
    }

    let document: Value = api.get("/openapi.json", None).await.json().await.unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    let paths = document["paths"].as_object().unwrap();
    let routes = [
        "/api/v1/users/{user_id}/tracks/{track_id}/progress",
        "/api/v1/users/{user_id}/tracks/{track_id}/progress/stream",
        "/api/v1/users/{user_id}/tracks/{track_id}/progress/stream-ticket",
        "/api/v1/users/{user_id}/progress",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
        "/api/v1/me",
        "/api/v1/tracks/{track_id}/progress",
        "/xapi/statements",
    ];
    for route in routes {
        assert!(paths.contains_key(route), "{route} is not documented");
    }
    assert_eq!(paths.len(), routes.len(), "every documented path is served");
    common::delete_streams(&js, &nats).await;
}

#[sqlx::test]
async fn me_names_the_caller_of_a_valid_token(pool: PgPool) {
    let (nats, js) = common::isolated_nats().await;
    let api = spawn_api(&pool, &nats).await;
    let user = Uuid::new_v4();
    let response = api.get("/api/v1/me", Some(&token_for(user))).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, json!({ "user_id": user.to_string(), "admin": false }));
    let anonymous = api.get("/api/v1/me", None).await;
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    common::delete_streams(&js, &nats).await;
}

#[tokio::test]
async fn readiness_names_an_unreachable_database() {
    let (nats, js) = common::isolated_nats().await;
    let db = DbConfig {
        acquire_timeout_secs: 1,
        ..DbConfig::new("postgres://postgres@127.0.0.1:1/nowhere")
    };
    let pool = learning_progress::db::pool(&db).unwrap();
    let api = spawn_api(&pool, &nats).await;
    let ready = api.get("/readyz", None).await;
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(
        ready["checks"],
        json!({"database": "unreachable", "nats": "ok", "events": "following"})
    );
    common::delete_streams(&js, &nats).await;
}

#[tokio::test]
async fn starting_without_a_key_is_an_error_outside_development_mode() {
    let none = AuthConfig {
        jwt_secret: None,
        ..AuthConfig::with_secret("unused")
    };
    let error = Verifier::from_config(&none).await.err().expect("refused");
    assert!(error.to_string().contains("SUPABASE_JWT_SECRET"));

    let dev = AuthConfig { dev: true, ..none };
    let verifier = Verifier::from_config(&dev).await.unwrap();
    let user = Uuid::new_v4();
    let token =
        learning_progress::auth::mint_dev_token(&dev, user, true, Duration::from_secs(60)).unwrap();
    let principal = verifier.verify(&token).await.unwrap();
    assert_eq!(principal.user_id, user);
    assert!(principal.admin);
    let with_secret = AuthConfig::with_secret("hunter2-but-longer");
    assert!(!format!("{with_secret:?}").contains("hunter2"));

    // a user may edit their own user_metadata: it cannot make anyone admin
    let editable = AuthConfig {
        admin_claim: Some("user_metadata.role=admin".to_owned()),
        ..AuthConfig::with_secret("unused")
    };
    let error = Verifier::from_config(&editable)
        .await
        .err()
        .expect("refused");
    assert!(error.to_string().contains("app_metadata"), "{error}");
}
