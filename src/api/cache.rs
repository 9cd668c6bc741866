//! The snapshot cache: one [`Snapshot`] per (user, track), fed by reads and by events.
//!
//! A snapshot is kept as the JSON it is served as, serialised once when it is cached and
//! LZ4-compressed: a hit serialises nothing (decompressing ~1 KB takes ~0.2 µs), and an entry
//! costs ~650 bytes for a typical learner instead of ~1.1 KB of JSON or the several
//! allocations of a [`ProgressView`] (BENCHMARKS.md, P7).
//!
//! Invariant: a key's cached version never goes down. Every write — a loaded row, an event, a
//! listed row — goes through [`ProgressCache::offer`], a moka `and_compute_with` that keeps the
//! newer of the cached and the offered snapshot. Computes on one key are serialised by moka, so
//! a database load that started before an event and finishes after it finds the event's newer
//! snapshot in place and leaves it there.
//!
//! Loads run outside that per-key lock (events never wait for the database) and are coalesced
//! by a single-flight map: concurrent misses on one key share one query. A learner without
//! progress is remembered as such for a short while ([`CacheConfig::miss_ttl`]), so asking
//! again does not cost a query per request; an event for that learner forgets it at once.
//!
//! Waiters (`min_version` reads, live streams) watch one key each ([`Changes`]): a change wakes
//! only those watching its key. A key is watched only while someone waits on it; the last
//! waiter to leave removes it, so the map holds no more keys than there are waiters.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt as _;
use futures::future::{BoxFuture, Shared};
use moka::ops::compute::{CompResult, Op};
use sqlx::PgPool;
use tokio::sync::watch;
use uuid::Uuid;

use super::Metrics;
use super::catalogue::TrackCatalogue;
use crate::db::progress::{ProgressError, get_user_progress};
use crate::model::{ProgressEvent, ProgressView};

/// A snapshot as served: its key, its version and its JSON body, kept LZ4-compressed.
/// Cloning shares the body.
#[derive(Debug, Clone)]
pub struct Snapshot {
    key: Key,
    version: i64,
    packed: Bytes,
}

impl Snapshot {
    pub fn new(view: &ProgressView) -> Snapshot {
        let json = serde_json::to_vec(view).expect("a progress view always serialises");
        Snapshot {
            key: (view.progress.user_id, view.progress.track_id),
            version: view.progress.version,
            // exactly the compressed bytes, without the compressor's spare capacity
            packed: Bytes::from(lz4_flex::block::compress_prepend_size(&json).into_boxed_slice()),
        }
    }

    pub fn key(&self) -> Key {
        self.key
    }

    pub fn version(&self) -> i64 {
        self.version
    }

    /// The [`ProgressView`] as JSON, exactly as the API serves it.
    pub fn json(&self) -> Bytes {
        Bytes::from(self.unpack())
    }

    /// The JSON as text, for Server-Sent Events.
    pub fn json_string(&self) -> String {
        String::from_utf8(self.unpack()).expect("serde_json writes UTF-8")
    }

    fn unpack(&self) -> Vec<u8> {
        lz4_flex::block::decompress_size_prepended(&self.packed)
            .expect("a snapshot decompresses what it compressed")
    }
}

impl From<&ProgressView> for Snapshot {
    fn from(view: &ProgressView) -> Snapshot {
        Snapshot::new(view)
    }
}

/// (user_id, track_id)
pub(crate) type Key = (Uuid, Uuid);

pub(crate) type LoadError = Arc<ProgressError>;

type SharedLoad = Shared<BoxFuture<'static, Result<Option<Snapshot>, LoadError>>>;

#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// Most snapshots kept.
    pub capacity: u64,
    /// A snapshot is dropped this long after it was written, in case an event was missed.
    pub ttl: Duration,
    /// How long "this learner has no progress on this track" is believed without asking again.
    pub miss_ttl: Duration,
}

/// Where a miss reads from: the database, or a test's wrapper around it.
pub trait SnapshotSource: Send + Sync + 'static {
    fn load(&self, key: Key) -> BoxFuture<'static, Result<Option<ProgressView>, ProgressError>>;

    /// The units of `track` changed: forget whatever was cached about it.
    fn forget_track(&self, _track: Uuid) -> BoxFuture<'static, ()> {
        futures::future::ready(()).boxed()
    }
}

/// Reads snapshots from PostgreSQL, one counted query per load (and one more the first time a
/// track is seen, for its unit count).
pub struct PgSource {
    pool: PgPool,
    catalogue: TrackCatalogue,
    metrics: Metrics,
}

impl PgSource {
    pub fn new(pool: PgPool, metrics: &Metrics) -> PgSource {
        PgSource {
            catalogue: TrackCatalogue::new(pool.clone(), metrics),
            pool,
            metrics: metrics.clone(),
        }
    }

    /// The track catalogue this source reads unit counts from.
    pub(crate) fn catalogue(&self) -> &TrackCatalogue {
        &self.catalogue
    }
}

impl SnapshotSource for PgSource {
    fn load(
        &self,
        (user_id, track_id): Key,
    ) -> BoxFuture<'static, Result<Option<ProgressView>, ProgressError>> {
        self.metrics
            .db_queries
            .with_label_values(&["progress"])
            .inc();
        let (pool, catalogue) = (self.pool.clone(), self.catalogue.clone());
        async move {
            match get_user_progress(&pool, user_id, track_id).await? {
                Some(progress) => Ok(Some(catalogue.view(progress).await?)),
                None => Ok(None),
            }
        }
        .boxed()
    }

    fn forget_track(&self, track: Uuid) -> BoxFuture<'static, ()> {
        let catalogue = self.catalogue.clone();
        async move { catalogue.forget(track).await }.boxed()
    }
}

#[derive(Clone)]
pub struct ProgressCache {
    inner: Arc<Inner>,
}

struct Inner {
    entries: moka::future::Cache<Key, Snapshot>,
    /// Keys the database had nothing for; `entries` wins over this when both hold a key.
    misses: moka::future::Cache<Key, ()>,
    source: Arc<dyn SnapshotSource>,
    loads: Mutex<HashMap<Key, SharedLoad>>,
    /// Bumped by [`ProgressCache::clear`]; a load that began before a clear must not refill
    /// the cache with what it read before the events it may have missed.
    generation: AtomicU64,
    /// The keys someone waits on, each with the newest snapshot that became the cached one.
    watched: Arc<Mutex<HashMap<Key, watch::Sender<Option<Change>>>>>,
    metrics: Metrics,
}

impl ProgressCache {
    pub fn new(
        config: &CacheConfig,
        source: Arc<dyn SnapshotSource>,
        metrics: &Metrics,
    ) -> ProgressCache {
        let entries = moka::future::Cache::builder()
            .max_capacity(config.capacity)
            .time_to_live(config.ttl)
            .build();
        let misses = moka::future::Cache::builder()
            .max_capacity(config.capacity)
            .time_to_live(config.miss_ttl)
            .build();
        ProgressCache {
            inner: Arc::new(Inner {
                entries,
                misses,
                source,
                loads: Mutex::default(),
                generation: AtomicU64::new(0),
                watched: Arc::default(),
                metrics: metrics.clone(),
            }),
        }
    }

    /// The snapshot for `key`, loading it on a miss; `None` when the learner has none.
    pub async fn get(&self, key: Key) -> Result<Option<Snapshot>, LoadError> {
        let inner = &self.inner;
        loop {
            if let Some(snapshot) = inner.entries.get(&key).await {
                inner.metrics.cache_hits.inc();
                return Ok(Some(snapshot));
            }
            if inner.misses.contains_key(&key) {
                inner.metrics.cache_hits.inc();
                return Ok(None);
            }
            let load = {
                let mut loads = inner.loads.lock().expect("loads lock poisoned");
                // a load may have finished between the lookup above and taking the lock
                if inner.entries.contains_key(&key) || inner.misses.contains_key(&key) {
                    continue;
                }
                loads
                    .entry(key)
                    .or_insert_with(|| self.start_load(key))
                    .clone()
            };
            inner.metrics.cache_misses.inc();
            return load.await;
        }
    }

    /// The cached snapshot, without loading.
    pub async fn peek(&self, key: Key) -> Option<Snapshot> {
        self.inner.entries.get(&key).await
    }

    /// Where the cache stands: take it before reading the database, and hand it to
    /// [`ProgressCache::offer_read`] with what was read.
    pub(crate) fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::SeqCst)
    }

    /// Caches `snapshot` unless the cached one is at least as new; returns the one that is
    /// cached afterwards (the newer of the two).
    pub async fn offer(&self, snapshot: Snapshot) -> Snapshot {
        self.offer_read(snapshot, None).await
    }

    /// [`ProgressCache::offer`] of a snapshot read from the database when the cache stood at
    /// `read_at` ([`ProgressCache::generation`]): it is not cached if the cache was cleared or
    /// a learner erased since, as the read may predate what made it stale.
    pub(crate) async fn offer_read(&self, snapshot: Snapshot, read_at: Option<u64>) -> Snapshot {
        match self
            .put_if_newer(snapshot.clone(), true, read_at, false)
            .await
        {
            CompResult::Inserted(entry) | CompResult::ReplacedWith(entry) => {
                let cached = entry.into_value();
                self.announce(snapshot.key(), cached.clone()).await;
                cached
            }
            CompResult::Unchanged(entry) => entry.into_value(),
            CompResult::StillNone(_) | CompResult::Removed(_) => snapshot,
        }
    }

    /// Makes `snapshot` its key's cached one when it is newer than the cached one (or as new
    /// but different, when `replace_equal`), or when none is cached and `create` allows it:
    /// one atomic step per key. A snapshot read at a generation that has passed is not cached:
    /// the check is inside the step, so an erasure (which moves the generation on before its
    /// own step on the key) either finds the snapshot in place and removes it, or is seen by
    /// the check.
    async fn put_if_newer(
        &self,
        snapshot: Snapshot,
        create: bool,
        read_at: Option<u64>,
        replace_equal: bool,
    ) -> CompResult<Key, Snapshot> {
        let generation = &self.inner.generation;
        self.inner
            .entries
            .entry(snapshot.key())
            .and_compute_with(|current| {
                let outdated = read_at.is_some_and(|at| generation.load(Ordering::SeqCst) != at);
                let op = match current {
                    _ if outdated => Op::Nop,
                    Some(current) if current.value().version() > snapshot.version() => Op::Nop,
                    Some(current)
                        if current.value().version() == snapshot.version()
                            && (!replace_equal || current.value().packed == snapshot.packed) =>
                    {
                        Op::Nop
                    }
                    None if !create => Op::Nop,
                    _ => Op::Put(snapshot),
                };
                std::future::ready(op)
            })
            .await
    }

    /// A snapshot became `key`'s cached one: no longer a miss, and its waiters wake.
    async fn announce(&self, key: Key, cached: Snapshot) {
        self.inner.misses.invalidate(&key).await;
        let watched = self.inner.watched.lock().expect("watched lock poisoned");
        if let Some(sender) = watched.get(&key) {
            sender.send_replace(Some(Change::Snapshot(cached)));
        }
    }

    /// Applies an event's snapshot if it is newer than the cached one; returns whether it was.
    ///
    /// An event may be older than the database: one announced late (by a redelivery after a
    /// crash, or the sweep) reaches the stream after newer ones. Updating a cached learner is
    /// safe, since only a newer version replaces the cached one, and so is landing while a
    /// load of the learner is in flight, since the load's result, read afterwards, replaces it
    /// when newer. Creating the entry of a learner not cached is not: it could pin an old
    /// version until the TTL. Such a learner is read from the database next time instead (at
    /// once, if a live stream or a `min_version` read waits on it).
    ///
    /// A `track_changed` event (the track's units changed) first makes the track's unit count
    /// be read again, and replaces a cached snapshot of its own version if that differs: a load
    /// that read the row the change wrote, with the unit count cached before the change, made
    /// that version's view with the old count; the event's is the one the change computed.
    pub async fn apply(&self, event: &ProgressEvent) -> bool {
        let offered = Snapshot::new(&event.progress);
        let key = offered.key();
        let track_changed = event.kind == crate::track_changes::EVENT_KIND;
        if track_changed {
            self.inner.source.forget_track(key.1).await;
        }
        let loading = self
            .inner
            .loads
            .lock()
            .expect("loads lock poisoned")
            .contains_key(&key);
        let result = self
            .put_if_newer(offered, loading, None, track_changed)
            .await;
        let outcome = match result {
            CompResult::Inserted(entry) | CompResult::ReplacedWith(entry) => {
                self.announce(key, entry.into_value()).await;
                "applied"
            }
            CompResult::Unchanged(_) => "stale",
            CompResult::StillNone(_) | CompResult::Removed(_) => {
                self.inner.misses.invalidate(&key).await;
                let watched = self
                    .inner
                    .watched
                    .lock()
                    .expect("watched lock poisoned")
                    .contains_key(&key);
                if watched {
                    let cache = self.clone();
                    tokio::spawn(async move {
                        // its result reaches the waiters through `offer`
                        let _ = cache.get(key).await;
                    });
                }
                "uncached"
            }
        };
        self.inner
            .metrics
            .cache_events
            .with_label_values(&[outcome])
            .inc();
        outcome == "applied"
    }

    /// Forgets `key` after its learner was erased (an `erased` event): the cached snapshot
    /// goes, a load already under way (which may have read the erased row) caches nothing and
    /// is not joined by later misses, and the next read asks the database, which has nothing
    /// (until the learner starts again). Whoever waits on the key learns of the erasure
    /// ([`Change::Erased`]): the learner's live streams end.
    pub async fn erase(&self, key: Key) {
        let inner = &self.inner;
        // first, so that a load's step on the key after this one sees it
        inner.generation.fetch_add(1, Ordering::SeqCst);
        inner
            .loads
            .lock()
            .expect("loads lock poisoned")
            .remove(&key);
        inner
            .entries
            .entry(key)
            .and_compute_with(|_| std::future::ready(Op::Remove))
            .await;
        inner.misses.invalidate(&key).await;
        if let Some(sender) = inner
            .watched
            .lock()
            .expect("watched lock poisoned")
            .get(&key)
        {
            sender.send_replace(Some(Change::Erased));
        }
        inner
            .metrics
            .cache_events
            .with_label_values(&["erased"])
            .inc();
    }

    /// Forgets every snapshot, after events may have been missed (a NATS reconnect).
    pub fn clear(&self) {
        self.inner.generation.fetch_add(1, Ordering::SeqCst);
        self.inner.entries.invalidate_all();
        self.inner.misses.invalidate_all();
    }

    /// `key`'s snapshots as they become the cached ones, from now on.
    pub fn changes(&self, key: Key) -> Changes {
        let mut watched = self.inner.watched.lock().expect("watched lock poisoned");
        let receiver = watched
            .entry(key)
            .or_insert_with(|| watch::channel(None).0)
            .subscribe();
        Changes {
            key,
            receiver,
            watched: self.inner.watched.clone(),
        }
    }

    /// How many keys someone waits on now.
    pub fn watched_keys(&self) -> usize {
        self.inner
            .watched
            .lock()
            .expect("watched lock poisoned")
            .len()
    }

    /// Approximate: moka counts lazily.
    pub(crate) fn entry_count(&self) -> u64 {
        self.inner.entries.entry_count()
    }

    /// Waits until `key` reaches `min_version` or `wait` elapses. Returns the newest snapshot
    /// seen and whether it reached `min_version`.
    pub(crate) async fn wait_for(
        &self,
        key: Key,
        min_version: i64,
        wait: Duration,
    ) -> Result<(Option<Snapshot>, bool), LoadError> {
        let deadline = tokio::time::Instant::now() + wait;
        // subscribe before reading, so a change between the two is not lost
        let mut changes = self.changes(key);
        let mut current = self.get(key).await?;
        let reached = |s: &Option<Snapshot>| s.as_ref().is_some_and(|s| s.version() >= min_version);
        while !reached(&current) {
            match tokio::time::timeout_at(deadline, changes.next()).await {
                Err(_elapsed) => break,
                Ok(Change::Snapshot(seen)) => current = newer(current, Some(seen)),
                Ok(Change::Erased) => {
                    current = None;
                    break;
                }
            }
        }
        let caught_up = reached(&current);
        Ok((current, caught_up))
    }

    fn start_load(&self, key: Key) -> SharedLoad {
        let inner = self.inner.clone();
        let generation = inner.generation.load(Ordering::SeqCst);
        let cache = self.clone();
        // A task, not a future polled by the first caller: a caller that goes away must not
        // cancel the load the others are waiting for.
        let task = tokio::spawn(async move {
            let result = match inner.source.load(key).await {
                Ok(Some(view)) if inner.generation.load(Ordering::SeqCst) == generation => {
                    Ok(Some(
                        cache
                            .offer_read(Snapshot::new(&view), Some(generation))
                            .await,
                    ))
                }
                Ok(Some(view)) => Ok(Some(Snapshot::new(&view))),
                // an event may have created the learner's progress while the query ran
                Ok(None) => match inner.entries.get(&key).await {
                    Some(snapshot) => Ok(Some(snapshot)),
                    None => {
                        if inner.generation.load(Ordering::SeqCst) == generation {
                            inner.misses.insert(key, ()).await;
                        }
                        Ok(None)
                    }
                },
                Err(error) => Err(Arc::new(error)),
            };
            // after caching, so a new miss either finds the snapshot or joins this load
            inner
                .loads
                .lock()
                .expect("loads lock poisoned")
                .remove(&key);
            result
        });
        async move { task.await.expect("snapshot loads do not panic") }
            .boxed()
            .shared()
    }
}

/// What a waiter on a key learns next.
#[derive(Debug, Clone)]
pub enum Change {
    /// A snapshot became the key's cached one.
    Snapshot(Snapshot),
    /// The learner was erased (an `erased` event): nothing of theirs is served any more.
    Erased,
}

impl Change {
    /// The snapshot, unless this is an erasure.
    pub fn snapshot(self) -> Option<Snapshot> {
        match self {
            Change::Snapshot(snapshot) => Some(snapshot),
            Change::Erased => None,
        }
    }
}

/// One waiter on one key: the snapshots that become the cached one, newest first — a waiter
/// that falls behind skips to the newest — and erasures. Dropping the last waiter of a key
/// stops watching it.
pub struct Changes {
    key: Key,
    receiver: watch::Receiver<Option<Change>>,
    watched: Arc<Mutex<HashMap<Key, watch::Sender<Option<Change>>>>>,
}

impl Changes {
    /// The learner and track waited on.
    pub(crate) fn key(&self) -> Key {
        self.key
    }

    /// The next snapshot to become the cached one, or erasure, since the last this returned
    /// (or since [`ProgressCache::changes`]).
    pub async fn next(&mut self) -> Change {
        loop {
            // the sender lives in the map as long as this receiver does
            if self.receiver.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
            if let Some(change) = self.receiver.borrow_and_update().clone() {
                return change;
            }
        }
    }
}

impl Drop for Changes {
    fn drop(&mut self) {
        let mut watched = self.watched.lock().expect("watched lock poisoned");
        // under the lock no one can subscribe meanwhile; this receiver still counts
        if watched
            .get(&self.key)
            .is_some_and(|sender| sender.receiver_count() <= 1)
        {
            watched.remove(&self.key);
        }
    }
}

/// The newer of two snapshots of one key.
fn newer(a: Option<Snapshot>, b: Option<Snapshot>) -> Option<Snapshot> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.version() > a.version() { b } else { a }),
        (a, b) => a.or(b),
    }
}
