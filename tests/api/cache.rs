//! The cache: cold reads, events by version, a slow load racing an event, several replicas.

use super::*;

#[sqlx::test]
async fn a_thousand_concurrent_cold_reads_make_one_database_query(pool: PgPool) {
    let (nats, js) = common::isolated_nats().await;
    let api = spawn_api(&pool, &nats).await;
    let (track, user, _) = started(&pool).await;
    let url = format!("{}{}", api.base, progress_path(user, track.id));
    let token = token_for(user);
    let reads = (0..1000).map(|_| {
        let request = api.http.get(&url).bearer_auth(&token).send();
        async move { request.await.unwrap().status() }
    });
    let statuses = futures::future::join_all(reads).await;
    assert!(statuses.iter().all(|s| *s == StatusCode::OK));
    assert_eq!(api.progress_queries(), 1);
    common::delete_streams(&js, &nats).await;
}

#[sqlx::test]
async fn a_newer_event_updates_the_cache_and_an_older_one_does_not(pool: PgPool) {
    let (nats, js) = common::isolated_nats().await;
    let api = spawn_api(&pool, &nats).await;
    let (track, user, v1) = started(&pool).await;
    let path = progress_path(user, track.id);
    let token = token_for(user);
    assert_eq!(version_of(api.get(&path, Some(&token)).await).await, 1);

    // the database moves on, but only an event tells the cache
    let v2 = complete(&pool, &track, user, 0).await;
    assert_eq!(version_of(api.get(&path, Some(&token)).await).await, 1);
    publish(&js, &nats, &event(&v2, 3)).await;
    let fresh = api
        .get(&format!("{path}?min_version=2"), Some(&token))
        .await;
    assert!(fresh.headers().get("x-progress-behind").is_none());
    let body: Value = fresh.json().await.unwrap();
    assert_eq!(body["version"], 2);
    assert_eq!(body["percent_complete"], 33.33);

    publish(&js, &nats, &event(&v1, 3)).await;
    let stale = api
        .state
        .metrics()
        .cache_events
        .with_label_values(&["stale"]);
    common::eventually(Duration::from_secs(5), "the old event to arrive", || {
        let seen = stale.get() == 1;
        async move { seen.then_some(()) }
    })
    .await;
    assert_eq!(version_of(api.get(&path, Some(&token)).await).await, 2);
    assert_eq!(api.progress_queries(), 1);
    common::delete_streams(&js, &nats).await;
}

/// Reads through to PostgreSQL, then holds the result until released.
struct HeldSource {
    db: PgSource,
    loaded: std::sync::Mutex<Option<oneshot::Sender<()>>>,
    release: Arc<Notify>,
}

impl SnapshotSource for HeldSource {
    fn load(
        &self,
        key: (Uuid, Uuid),
    ) -> BoxFuture<'static, Result<Option<ProgressView>, ProgressError>> {
        let read = self.db.load(key);
        let loaded = self.loaded.lock().unwrap().take();
        let release = self.release.clone();
        async move {
            let view = read.await;
            if let Some(loaded) = loaded {
                let _ = loaded.send(());
            }
            release.notified().await;
            view
        }
        .boxed()
    }
}

#[sqlx::test]
async fn a_slow_load_racing_an_event_never_leaves_the_older_snapshot(pool: PgPool) {
    let (track, user, _) = started(&pool).await;
    let metrics = Metrics::new();
    let (loaded_tx, loaded) = oneshot::channel();
    let release = Arc::new(Notify::new());
    let source = HeldSource {
        db: PgSource::new(pool.clone(), &metrics),
        loaded: std::sync::Mutex::new(Some(loaded_tx)),
        release: release.clone(),
    };
    let config = CacheConfig {
        capacity: 100,
        ttl: Duration::from_secs(3600),
        miss_ttl: Duration::from_secs(2),
    };
    let cache = ProgressCache::new(&config, Arc::new(source), &metrics);
    let key = (user, track.id);

    let reader = tokio::spawn({
        let cache = cache.clone();
        async move { cache.get(key).await.unwrap().unwrap() }
    });
    loaded.await.unwrap(); // the load has read version 1 and is held
    let v2 = complete(&pool, &track, user, 0).await;
    let applied = tokio::time::timeout(Duration::from_secs(2), cache.apply(&event(&v2, 3)))
        .await
        .expect("an event never waits for a database load");
    assert!(applied);
    release.notify_one();

    let answered = reader.await.unwrap();
    assert_eq!(answered.version(), 2, "the reader gets the newer snapshot");
    assert_eq!(cache.peek(key).await.unwrap().version(), 2);
    assert_eq!(cache.get(key).await.unwrap().unwrap().version(), 2);
}

#[sqlx::test]
async fn every_replica_sees_an_event_and_min_version_waits_for_it(pool: PgPool) {
    let (nats, js) = common::isolated_nats().await;
    let replicas = [spawn_api(&pool, &nats).await, spawn_api(&pool, &nats).await];
    let (track, user, _) = started(&pool).await;
    let path = progress_path(user, track.id);
    let token = token_for(user);
    for api in &replicas {
        assert_eq!(version_of(api.get(&path, Some(&token)).await).await, 1);
    }

    let v2 = complete(&pool, &track, user, 0).await;
    let wait_path = format!("{path}?min_version=2");
    let waiting = replicas.iter().map(|api| async {
        let started = Instant::now();
        let response = api.get(&wait_path, Some(&token)).await;
        (response, started.elapsed())
    });
    let waiting = futures::future::join_all(waiting);
    let publishing = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        publish(&js, &nats, &event(&v2, 3)).await;
    };
    let (answers, ()) = tokio::join!(waiting, publishing);
    for (response, took) in answers {
        assert!(response.headers().get("x-progress-behind").is_none());
        assert_eq!(version_of(response).await, 2);
        assert!(
            took < Duration::from_millis(450),
            "woken by the event, took {took:?}"
        );
    }

    let behind = replicas[0]
        .get(&format!("{path}?min_version=3"), Some(&token))
        .await;
    assert_eq!(behind.status(), StatusCode::OK);
    assert_eq!(behind.headers()["x-progress-behind"], "true");
    assert_eq!(version_of(behind).await, 2);
    for api in &replicas {
        assert_eq!(api.progress_queries(), 1);
    }
    common::delete_streams(&js, &nats).await;
}
