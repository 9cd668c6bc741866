//! The track catalogue as the read side needs it: each track's unit count, cached. A change of
//! a track's units (`tracks add-unit`, `remove-unit`) publishes a `track_changed` event per
//! learner on it; the first one a replica sees makes it read the count again
//! ([`TrackCatalogue::forget`]). The TTL bounds how long a catalogue edited by hand, without
//! those events, stays believed.

use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

use super::Metrics;
use crate::db::progress::ProgressError;
use crate::model::{ProgressView, UserProgress};

/// How long a track's unit count is believed.
const TRACK_TTL: Duration = Duration::from_secs(60);

/// Tracks kept; a catalogue is small, this only bounds a flood of unknown track ids.
const TRACK_CAPACITY: u64 = 10_000;

/// Cheap to clone: clones share the cache.
#[derive(Clone)]
pub(crate) struct TrackCatalogue {
    pool: PgPool,
    unit_counts: moka::future::Cache<Uuid, i64>,
    metrics: Metrics,
}

impl TrackCatalogue {
    pub(crate) fn new(pool: PgPool, metrics: &Metrics) -> TrackCatalogue {
        TrackCatalogue {
            pool,
            unit_counts: moka::future::Cache::builder()
                .max_capacity(TRACK_CAPACITY)
                .time_to_live(TRACK_TTL)
                .build(),
            metrics: metrics.clone(),
        }
    }

    /// How many units `track` has, from the cache or one counted query.
    pub(crate) async fn unit_count(&self, track: Uuid) -> Result<i64, ProgressError> {
        if let Some(count) = self.unit_counts.get(&track).await {
            return Ok(count);
        }
        self.metrics
            .db_queries
            .with_label_values(&["track_units"])
            .inc();
        let count = crate::db::views::unit_count(&self.pool, track).await?;
        self.unit_counts.insert(track, count).await;
        Ok(count)
    }

    /// Reads `track`'s unit count again next time: its units changed.
    pub(crate) async fn forget(&self, track: Uuid) {
        self.unit_counts.invalidate(&track).await;
    }

    /// `progress` as readers see it, with its track's unit count.
    pub(crate) async fn view(&self, progress: UserProgress) -> Result<ProgressView, ProgressError> {
        let total_units = self.unit_count(progress.track_id).await?;
        Ok(ProgressView::new(progress, total_units))
    }
}
