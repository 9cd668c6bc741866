//! Late events never put an old version into an emptied cache (RELIABILITY.md, finding 9).

use super::*;

/// RELIABILITY.md, finding 9: a learner's events can reach the stream out of version order (an
/// event announced late, after a crash), so an event must never create the entry of a learner
/// the cache does not hold — after a clear, that pinned an old version until the TTL.
#[sqlx::test]
async fn a_late_event_never_puts_an_old_version_into_an_emptied_cache(pool: PgPool) {
    let (track, user, v1) = started(&pool).await;
    let metrics = Metrics::new();
    let config = CacheConfig {
        capacity: 100,
        ttl: Duration::from_secs(3600),
        miss_ttl: Duration::from_secs(2),
    };
    let cache = ProgressCache::new(
        &config,
        Arc::new(PgSource::new(pool.clone(), &metrics)),
        &metrics,
    );
    let key = (user, track.id);
    complete(&pool, &track, user, 0).await;
    assert_eq!(cache.get(key).await.unwrap().unwrap().version(), 2);

    // the cache empties (a NATS reconnect), then version 1's event arrives late
    cache.clear();
    assert!(!cache.apply(&event(&v1, 3)).await);
    assert_eq!(
        cache.get(key).await.unwrap().unwrap().version(),
        2,
        "read from the database, not pinned at the late event's version"
    );
    // and a cached learner ignores it as before
    assert!(!cache.apply(&event(&v1, 3)).await);
    assert_eq!(cache.get(key).await.unwrap().unwrap().version(), 2);
}
