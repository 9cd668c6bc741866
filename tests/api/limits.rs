//! What one caller may cost: waiters per key, stream caps, token expiry, misses, the
//! catalogue, rate limits, mismatched events, panics, slow connections.

use super::*;

/// Reads a live stream until the server ends it; panics if it is still open after `timeout`.
async fn until_stream_ends(response: reqwest::Response, timeout: Duration) {
    let mut body = response.bytes_stream();
    let ended = tokio::time::timeout(timeout, async {
        while let Some(chunk) = body.next().await {
            if chunk.is_err() {
                break;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream was still open after {timeout:?}");
}

#[sqlx::test]
async fn a_change_wakes_only_the_waiters_of_its_key_and_a_key_is_watched_only_while_waited_on(
    pool: PgPool,
) {
    let (track, user, v1) = started(&pool).await;
    let metrics = Metrics::new();
    let config = CacheConfig {
        capacity: 100,
        ttl: Duration::from_secs(3600),
        miss_ttl: Duration::from_secs(2),
    };
    let source = Arc::new(PgSource::new(pool.clone(), &metrics));
    let cache = ProgressCache::new(&config, source, &metrics);
    let key = (user, track.id);
    assert_eq!(cache.get(key).await.unwrap().unwrap().version(), 1);
    let mut first = cache.changes(key);
    let mut second = cache.changes(key);
    assert_eq!(cache.watched_keys(), 1);

    let someone_else = UserProgress {
        user_id: Uuid::new_v4(),
        ..v1.clone()
    };
    assert!(
        !cache.apply(&event(&someone_else, 3)).await,
        "a learner not cached is left to the database"
    );
    assert!(
        first.next().now_or_never().is_none(),
        "woken by another key"
    );

    let v2 = complete(&pool, &track, user, 0).await;
    assert!(cache.apply(&event(&v2, 3)).await);
    assert_eq!(
        first
            .next()
            .now_or_never()
            .unwrap()
            .snapshot()
            .unwrap()
            .version(),
        2
    );
    assert_eq!(
        second
            .next()
            .now_or_never()
            .unwrap()
            .snapshot()
            .unwrap()
            .version(),
        2
    );
    assert!(first.next().now_or_never().is_none(), "each change once");

    drop(first);
    assert_eq!(cache.watched_keys(), 1, "one waiter is left");
    drop(second);
    assert_eq!(
        cache.watched_keys(),
        0,
        "nobody waits: the key is forgotten"
    );
}

#[sqlx::test]
async fn live_streams_are_capped_per_user_and_in_all_and_a_closed_one_frees_its_place(
    pool: PgPool,
) {
    let (nats, js) = common::isolated_nats().await;
    let config = ApiConfig {
        max_streams_per_user: 2,
        max_streams: 3,
        ..api_config()
    };
    let api = spawn_api_with(&pool, &nats, config).await;
    let (track, ann, _) = started(&pool).await;
    let bob = Uuid::new_v4();
    let carl = Uuid::new_v4();
    let stream = |user: Uuid| format!("{}/stream", progress_path(user, track.id));

    let mut open = Vec::new();
    for _ in 0..2 {
        let response = api.get(&stream(ann), Some(&token_for(ann))).await;
        assert_eq!(response.status(), StatusCode::OK);
        open.push(response);
    }
    let refused = api.get(&stream(ann), Some(&token_for(ann))).await;
    assert_eq!(refused.headers()["retry-after"], "5");
    let body = refusal(refused, StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(body["error"], "too_many_streams");
    assert!(body["message"].as_str().unwrap().contains("this user"));

    let bobs = api.get(&stream(bob), Some(&token_for(bob))).await;
    assert_eq!(bobs.status(), StatusCode::OK);
    let body = refusal(
        api.get(&stream(carl), Some(&token_for(carl))).await,
        StatusCode::TOO_MANY_REQUESTS,
    )
    .await;
    assert!(body["message"].as_str().unwrap().contains("this server"));
    assert_eq!(api.state.cache().watched_keys(), 2);

    drop(open.pop());
    drop(bobs);
    common::eventually(Duration::from_secs(5), "closed streams to leave", || {
        let open = api.state.stream_slots().open();
        async move { (open == 1).then_some(()) }
    })
    .await;
    let again = api.get(&stream(ann), Some(&token_for(ann))).await;
    assert_eq!(again.status(), StatusCode::OK);
    drop(again);
    drop(open);
    common::eventually(Duration::from_secs(5), "every stream to leave", || {
        let (open, watched) = (
            api.state.stream_slots().open(),
            api.state.cache().watched_keys(),
        );
        async move { (open == 0 && watched == 0).then_some(()) }
    })
    .await;
    common::delete_streams(&js, &nats).await;
}

#[sqlx::test]
async fn a_live_stream_ends_when_the_token_that_opened_it_expires(pool: PgPool) {
    let (nats, js) = common::isolated_nats().await;
    let api = spawn_api(&pool, &nats).await;
    let (track, user, _) = started(&pool).await;
    let soon = jsonwebtoken::get_current_timestamp() + 2;
    let short_lived = hs256(
        &with(claims(user), json!({ "exp": soon })),
        SECRET.as_bytes(),
    );
    let stream_path = format!("{}/stream", progress_path(user, track.id));

    let response = api.get(&stream_path, Some(&short_lived)).await;
    assert_eq!(response.status(), StatusCode::OK);
    until_stream_ends(response, Duration::from_secs(10)).await;

    // a ticket minted with that token lives no longer than it
    let soon = jsonwebtoken::get_current_timestamp() + 2;
    let short_lived = hs256(
        &with(claims(user), json!({ "exp": soon })),
        SECRET.as_bytes(),
    );
    let ticket = ticket_of(mint_ticket(&api, user, track.id, &short_lived).await).await;
    let response = stream_with_ticket(&api, user, track.id, &ticket).await;
    assert_eq!(response.status(), StatusCode::OK);
    until_stream_ends(response, Duration::from_secs(10)).await;

    // a token valid for an hour keeps its stream open past that
    let response = api.get(&stream_path, Some(&token_for(user))).await;
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    assert_eq!(next_event(&mut body, &mut buffer).await["version"], 1);
    assert_eq!(api.state.stream_slots().open(), 1);
    common::delete_streams(&js, &nats).await;
}

#[sqlx::test]
async fn a_learner_without_progress_costs_one_query_until_an_event_or_the_miss_ttl(pool: PgPool) {
    let (nats, js) = common::isolated_nats().await;
    let config = ApiConfig {
        miss_ttl_ms: 300,
        ..api_config()
    };
    let api = spawn_api_with(&pool, &nats, config).await;
    let track = create_track(&pool, "Not started", 3).await.unwrap();
    let user = Uuid::new_v4();
    let token = token_for(user);
    let path = progress_path(user, track.id);
    for _ in 0..5 {
        assert_eq!(
            api.get(&path, Some(&token)).await.status(),
            StatusCode::NOT_FOUND
        );
    }
    assert_eq!(api.progress_queries(), 1);

    // started meanwhile: the event ends the remembered miss at once
    let create = UserProgressCreate {
        user_id: user,
        track_id: track.id,
        current_unit_id: Some(track.units[0].id),
        started_at: Utc::now(),
    };
    let v1 = create_user_progress(&pool, &create).await.unwrap();
    publish(&js, &nats, &event(&v1, 3)).await;
    let found = api
        .get(&format!("{path}?min_version=1"), Some(&token))
        .await;
    assert_eq!(found.status(), StatusCode::OK);
    // the event ended the remembered miss; the learner, not cached, is read from the database
    // (an event never creates an entry: RELIABILITY.md, finding 9)
    assert_eq!(api.progress_queries(), 2);

    // started without an event reaching this replica: found once the miss expires
    let other = Uuid::new_v4();
    let other_token = token_for(other);
    let other_path = progress_path(other, track.id);
    assert_eq!(
        api.get(&other_path, Some(&other_token)).await.status(),
        StatusCode::NOT_FOUND
    );
    create_user_progress(
        &pool,
        &UserProgressCreate {
            user_id: other,
            ..create
        },
    )
    .await
    .unwrap();
    common::eventually(Duration::from_secs(5), "the miss to expire", || async {
        let status = api.get(&other_path, Some(&other_token)).await.status();
        (status == StatusCode::OK).then_some(())
    })
    .await;
    common::delete_streams(&js, &nats).await;
}

#[sqlx::test]
async fn the_track_catalogue_is_read_once_for_every_learner_on_a_track(pool: PgPool) {
    let (nats, js) = common::isolated_nats().await;
    let api = spawn_api(&pool, &nats).await;
    let (track, first, _) = started(&pool).await;
    let mut learners = vec![first];
    for _ in 0..3 {
        let user = Uuid::new_v4();
        create_user_progress(
            &pool,
            &UserProgressCreate {
                user_id: user,
                track_id: track.id,
                current_unit_id: Some(track.units[0].id),
                started_at: Utc::now(),
            },
        )
        .await
        .unwrap();
        learners.push(user);
    }
    for user in &learners {
        let response = api
            .get(&progress_path(*user, track.id), Some(&token_for(*user)))
            .await;
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["total_units"], 3);
        let list = api
            .get(
                &format!("/api/v1/users/{user}/progress"),
                Some(&token_for(*user)),
            )
            .await;
        let list: Value = list.json().await.unwrap();
        assert_eq!(list["progress"][0]["total_units"], 3);
    }
    let queries = |query: &str| {
        api.state
            .metrics()
            .db_queries
            .with_label_values(&[query])
            .get()
    };
    assert_eq!(queries("progress"), 4);
    assert_eq!(queries("track_units"), 1);
    common::delete_streams(&js, &nats).await;
}

#[sqlx::test]
async fn a_learner_over_the_rate_limit_is_told_when_to_retry_and_others_are_not_slowed(
    pool: PgPool,
) {
    let (nats, js) = common::isolated_nats().await;
    let config = ApiConfig {
        rate_limit_per_sec: 0.5,
        rate_limit_burst: 3,
        ..api_config()
    };
    let api = spawn_api_with(&pool, &nats, config).await;
    let (track, user, _) = started(&pool).await;
    let path = progress_path(user, track.id);
    let token = token_for(user);
    for _ in 0..3 {
        assert_eq!(api.get(&path, Some(&token)).await.status(), StatusCode::OK);
    }
    let limited = api.get(&path, Some(&token)).await;
    assert_eq!(limited.headers()["retry-after"], "2");
    let body = refusal(limited, StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(body["error"], "rate_limited");
    let limited = api.get("/api/v1/me", Some(&token)).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);

    let other = Uuid::new_v4();
    assert_eq!(
        api.get("/api/v1/me", Some(&token_for(other)))
            .await
            .status(),
        StatusCode::OK
    );
    let admin = hs256(
        &with(
            claims(other),
            json!({ "app_metadata": { "role": "admin" } }),
        ),
        SECRET.as_bytes(),
    );
    for _ in 0..10 {
        assert_eq!(api.get(&path, Some(&admin)).await.status(), StatusCode::OK);
    }
    // unauthenticated routes are bounded by the connection limit, not per user
    assert_eq!(api.get("/healthz", None).await.status(), StatusCode::OK);
    common::delete_streams(&js, &nats).await;
}

#[sqlx::test]
async fn an_event_about_another_learner_than_its_subject_names_is_dropped_and_counted(
    pool: PgPool,
) {
    let (nats, js) = common::isolated_nats().await;
    let api = spawn_api(&pool, &nats).await;
    let (track, user, _) = started(&pool).await;
    let path = progress_path(user, track.id);
    let token = token_for(user);
    assert_eq!(version_of(api.get(&path, Some(&token)).await).await, 1);

    let v2 = complete(&pool, &track, user, 0).await;
    let forged = serde_json::to_vec(&event(&v2, 3)).unwrap();
    for subject in [
        nats.event_subject(Uuid::new_v4(), track.id),
        nats.event_subject(user, Uuid::new_v4()),
    ] {
        js.publish(subject, forged.clone().into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let mismatched = api
        .state
        .metrics()
        .cache_events
        .with_label_values(&["mismatched"]);
    common::eventually(Duration::from_secs(5), "both events to be dropped", || {
        let seen = mismatched.get() == 2;
        async move { seen.then_some(()) }
    })
    .await;
    assert_eq!(version_of(api.get(&path, Some(&token)).await).await, 1);

    publish(&js, &nats, &event(&v2, 3)).await;
    let fresh = api
        .get(&format!("{path}?min_version=2"), Some(&token))
        .await;
    assert_eq!(version_of(fresh).await, 2);
    common::delete_streams(&js, &nats).await;
}

#[sqlx::test]
async fn a_panicking_handler_answers_a_json_500_and_the_server_goes_on(pool: PgPool) {
    let (nats, js) = common::isolated_nats().await;
    let verifier = Verifier::from_config(&auth_config()).await.unwrap();
    let shutdown = CancellationToken::new();
    let state = ApiState::start(pool, &nats, verifier, api_config(), shutdown.clone())
        .await
        .unwrap();
    let boom = axum::Router::new().route(
        "/boom",
        axum::routing::get(|| async {
            panic!("a bug in a handler");
            #[allow(unreachable_code)]
            ""
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let limits = state.config().connection_limits();
    let server = tokio::spawn(api::serve_router(
        listener,
        api::router_with(state.clone(), boom),
        limits,
        shutdown.clone(),
    ));
    let http = reqwest::Client::new();
    let response = http.get(format!("{base}/boom")).send().await.unwrap();
    let body = refusal(response, StatusCode::INTERNAL_SERVER_ERROR).await;
    assert_eq!(
        body,
        json!({"error": "internal", "message": "internal error"})
    );
    let health = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let metrics = http.get(format!("{base}/metrics")).send().await.unwrap();
    assert!(
        metrics
            .text()
            .await
            .unwrap()
            .contains(r#"http_requests_total{method="GET",route="/boom",status="500"} 1"#)
    );

    // shutdown drains: the idle keep-alive connection closes and the server returns
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the server stops on shutdown")
        .unwrap()
        .unwrap();
    common::delete_streams(&js, &nats).await;
}

/// Reads what the server sends on `stream` until it closes it; panics after `timeout`.
async fn read_until_closed(stream: &mut tokio::net::TcpStream, timeout: Duration) -> String {
    use tokio::io::AsyncReadExt as _;
    let mut read = Vec::new();
    let closed = tokio::time::timeout(timeout, async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => read.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the connection was still open after {timeout:?}"
    );
    String::from_utf8_lossy(&read).into_owned()
}

#[sqlx::test]
async fn a_silent_connection_is_closed_and_connections_past_the_limit_wait_their_turn(
    pool: PgPool,
) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (nats, js) = common::isolated_nats().await;
    let config = ApiConfig {
        max_http_connections: 1,
        header_read_timeout_ms: 500,
        ..api_config()
    };
    let api = spawn_api_with(&pool, &nats, config).await;
    let address = api.base.trim_start_matches("http://").to_owned();

    // half a request's headers, then nothing: it holds the only connection until the timeout
    let mut slow = tokio::net::TcpStream::connect(&address).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut waiting = tokio::net::TcpStream::connect(&address).await.unwrap();
    waiting
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 1];
    let served_early = tokio::time::timeout(Duration::from_millis(200), waiting.read(&mut first))
        .await
        .is_ok();
    assert!(!served_early, "a connection past the limit was served");

    read_until_closed(&mut slow, Duration::from_secs(5)).await;
    let answer = read_until_closed(&mut waiting, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    common::delete_streams(&js, &nats).await;
}
