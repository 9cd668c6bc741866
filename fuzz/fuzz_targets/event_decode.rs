//! A message on the events subject, read as the API's live feed reads it (`api::feed::run`)
//! and applied to a real cache (`ProgressCache::apply`).
//!
//! Properties: decoding never panics; an event that decodes can always be cached (the cache
//! serialises and compresses it with `expect`s) and is served as JSON that reads back as the
//! very snapshot the event carried; the cache then holds at least its version, and the same
//! event applied again, or an older one, changes nothing.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::FutureExt as _;
use futures::future::BoxFuture;
use learning_progress::api::{CacheConfig, Metrics, ProgressCache, Snapshot, SnapshotSource};
use learning_progress::db::progress::ProgressError;
use learning_progress::model::{ProgressEvent, ProgressView};
use libfuzzer_sys::fuzz_target;

/// The feed only writes to the cache; a miss never happens here.
struct NoSource;

impl SnapshotSource for NoSource {
    fn load(
        &self,
        _key: (uuid::Uuid, uuid::Uuid),
    ) -> BoxFuture<'static, Result<Option<ProgressView>, ProgressError>> {
        async { Ok(None) }.boxed()
    }
}

struct Fixture {
    runtime: tokio::runtime::Runtime,
    cache: ProgressCache,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let config = CacheConfig {
            capacity: 10_000,
            ttl: Duration::from_secs(3600),
            miss_ttl: Duration::from_secs(2),
        };
        let cache = ProgressCache::new(&config, Arc::new(NoSource), &Metrics::new());
        Fixture { runtime, cache }
    })
}

fuzz_target!(|payload: &[u8]| {
    let Ok(event) = serde_json::from_slice::<ProgressEvent>(payload) else {
        return;
    };

    let snapshot = Snapshot::new(&event.progress);
    let served: ProgressView =
        serde_json::from_slice(&snapshot.json()).expect("a served snapshot is valid JSON");
    assert_eq!(served, event.progress, "the cache serves another snapshot");
    assert_eq!(snapshot.json_string().as_bytes(), &snapshot.json()[..]);
    assert_eq!(snapshot.version(), event.progress.progress.version);

    let Fixture { runtime, cache } = fixture();
    runtime.block_on(async {
        let key = snapshot.key();
        cache.apply(&event).await;
        let cached = cache.peek(key).await.expect("an applied event is cached");
        assert!(cached.version() >= snapshot.version());
        assert!(!cache.apply(&event).await, "the same event applied twice");
        if let Some(older) = event.progress.progress.version.checked_sub(1) {
            let mut stale = event.clone();
            stale.progress.progress.version = older;
            assert!(
                !cache.apply(&stale).await,
                "an older version replaced a newer"
            );
        }
        assert!(cache.peek(key).await.unwrap().version() >= snapshot.version());
    });
});
