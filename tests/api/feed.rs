//! Following the events stream through NATS faults; development mode stays on loopback.

use super::*;

/// An API whose NATS connection goes through a proxy of the test's (one that reads the NATS
/// protocol, so it can both cut the connection and hide deliveries).
async fn spawn_api_behind_a_proxy(pool: &PgPool, nats: &NatsConfig) -> (TestApi, common::Proxy) {
    let server: &'static str = Box::leak(
        common::nats_url()
            .trim_start_matches("nats://")
            .to_owned()
            .into_boxed_str(),
    );
    let proxy = common::Proxy::nats(server).await;
    let through_proxy = NatsConfig {
        url: format!("nats://127.0.0.1:{}", proxy.port),
        ..nats.clone()
    };
    (spawn_api(pool, &through_proxy).await, proxy)
}

#[sqlx::test]
async fn a_nats_reconnect_clears_the_cache_so_missed_events_cannot_leave_it_stale(pool: PgPool) {
    let (nats, js) = common::isolated_nats().await;
    let (api, proxy) = spawn_api_behind_a_proxy(&pool, &nats).await;
    let (track, user, _) = started(&pool).await;
    let path = progress_path(user, track.id);
    let token = token_for(user);
    assert_eq!(version_of(api.get(&path, Some(&token)).await).await, 1);

    proxy.cut();
    let v2 = complete(&pool, &track, user, 0).await;
    publish(&js, &nats, &event(&v2, 3)).await; // this replica cannot hear it
    proxy.restore();

    common::eventually(
        Duration::from_secs(10),
        "version 2 after the reconnect",
        || async {
            let version = version_of(api.get(&path, Some(&token)).await).await;
            (version == 2).then_some(())
        },
    )
    .await;
    assert_eq!(api.progress_queries(), 2);
    common::delete_streams(&js, &nats).await;
}

#[sqlx::test]
async fn an_event_this_replica_never_received_reaches_its_cache_from_the_stream(pool: PgPool) {
    let (nats, js) = common::isolated_nats().await;
    let (api, proxy) = spawn_api_behind_a_proxy(&pool, &nats).await;
    let (track, lost, _) = started(&pool).await;
    let (other_track, other, _) = started(&pool).await;
    let (lost_path, lost_token) = (progress_path(lost, track.id), token_for(lost));
    let (other_path, other_token) = (progress_path(other, other_track.id), token_for(other));
    assert_eq!(
        version_of(api.get(&lost_path, Some(&lost_token)).await).await,
        1
    );
    assert_eq!(
        version_of(api.get(&other_path, Some(&other_token)).await).await,
        1
    );

    // the replica's connection stays up, but this learner's event never reaches it
    proxy.hide(Some(&lost.to_string()));
    let v2 = complete(&pool, &track, lost, 0).await;
    publish(&js, &nats, &event(&v2, 3)).await;
    proxy.hide(None);
    // the next event it does receive shows the gap
    let other_v2 = complete(&pool, &other_track, other, 0).await;
    publish(&js, &nats, &event(&other_v2, 3)).await;

    common::eventually(
        Duration::from_secs(10),
        "the missed version 2, from the stream",
        || async {
            let lost = version_of(api.get(&lost_path, Some(&lost_token)).await).await;
            let other = version_of(api.get(&other_path, Some(&other_token)).await).await;
            (lost == 2 && other == 2).then_some(())
        },
    )
    .await;
    // both learners loaded once; version 2 came from events, not from a cleared cache
    assert_eq!(api.progress_queries(), 2);
    common::delete_streams(&js, &nats).await;
}

#[sqlx::test]
async fn a_replica_started_before_the_events_stream_exists_follows_it_once_it_does(pool: PgPool) {
    let tag = format!("t{}", &Uuid::new_v4().simple().to_string()[..12]);
    let nats = NatsConfig::isolated(common::nats_url(), &tag);
    let api = spawn_api(&pool, &nats).await;
    let ready = api.get("/readyz", None).await;
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["checks"]["events"], "not_following");

    let client = messaging::connect(&nats, "test").await.unwrap();
    let js = jetstream::new(client);
    messaging::ensure_streams(&js, &nats).await.unwrap();
    common::eventually(Duration::from_secs(10), "the replica to follow", || async {
        let ready = api.get("/readyz", None).await;
        (ready.status() == StatusCode::OK).then_some(())
    })
    .await;

    let (track, user, _) = started(&pool).await;
    let path = progress_path(user, track.id);
    let token = token_for(user);
    assert_eq!(version_of(api.get(&path, Some(&token)).await).await, 1);
    let v2 = complete(&pool, &track, user, 0).await;
    publish(&js, &nats, &event(&v2, 3)).await;
    common::eventually(
        Duration::from_secs(10),
        "version 2 from the event",
        || async {
            let version = version_of(api.get(&path, Some(&token)).await).await;
            (version == 2).then_some(())
        },
    )
    .await;
    assert_eq!(api.progress_queries(), 1, "version 2 came from the event");
    common::delete_streams(&js, &nats).await;
}

#[tokio::test]
async fn development_mode_refuses_to_serve_beyond_loopback() {
    let development = AuthConfig {
        jwt_secret: None,
        dev: true,
        ..AuthConfig::with_secret("unused")
    };
    let open = ApiConfig {
        listen: "0.0.0.0:0".parse().unwrap(),
        ..api_config()
    };
    let nats = NatsConfig::isolated(common::nats_url(), "unused");
    let db = DbConfig::new("postgres://postgres@127.0.0.1:1/nowhere");
    let error = api::run(&db, &nats, open, &development, CancellationToken::new())
        .await
        .unwrap_err();
    assert!(format!("{error:#}").contains("loopback"), "{error:#}");
}
