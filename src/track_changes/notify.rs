//! Telling the running `LearningPathWorkflow`s of a track's learners its new unit list
//! (signal `track_units_changed`), so a path accepts a new unit and refuses a removed one.
//!
//! Only learners whose track is in progress are told: a path publishes `track_completed` before
//! the projection shows it, so a learner completed there has a path that accepts no unit any
//! more (or none at all). A path started later reads the list from the catalogue as it starts
//! (`resume_progress`), and a signal carrying an older list than the path holds is ignored, so
//! telling a learner twice, or late, is harmless: `tracks notify` tells them all again.

use futures::StreamExt as _;
use sqlx::PgPool;
use temporalio_client::Client;
use uuid::Uuid;

use crate::workflow::TrackUnitsChanged;
use crate::workflow::client::{self, ClientError};

/// Signals in flight at once: enough to hide the round trips, few enough for the frontend.
const CONCURRENT_SIGNALS: usize = 16;

/// Learners read per query.
const PAGE: i64 = 1_000;

#[derive(Debug, Default, Clone, PartialEq, serde::Serialize)]
pub(crate) struct Notified {
    /// Running paths told the new list.
    pub signalled: usize,
    /// Learners in progress with no running path (stopped, or never started one here).
    pub not_running: usize,
    /// Learners whose path could not be told; `first_error` says why.
    pub failed: usize,
    pub first_error: Option<String>,
}

/// Signals the path of every learner in progress on `track`. `progress(done, total)` is
/// called after each page of learners.
pub(crate) async fn notify_learners(
    temporal: &Client,
    pool: &PgPool,
    track: Uuid,
    units_version: i64,
    unit_ids: &[Uuid],
    progress: &mut (dyn FnMut(usize, usize) + Send),
) -> Result<Notified, sqlx::Error> {
    let total: i64 = sqlx::query_scalar(
        "select count(*) from user_progress where track_id = $1 and status = 'in_progress'",
    )
    .bind(track)
    .fetch_one(pool)
    .await?;
    let mut notified = Notified::default();
    let mut after = Uuid::nil();
    loop {
        let users: Vec<Uuid> = sqlx::query_scalar(
            "select user_id from user_progress
             where track_id = $1 and status = 'in_progress' and user_id > $2
             order by user_id limit $3",
        )
        .bind(track)
        .bind(after)
        .bind(PAGE)
        .fetch_all(pool)
        .await?;
        let Some(last) = users.last().copied() else {
            return Ok(notified);
        };
        after = last;
        let outcomes: Vec<Result<bool, ClientError>> = futures::stream::iter(users)
            .map(|user| {
                let change = TrackUnitsChanged {
                    units_version,
                    unit_ids: unit_ids.to_vec(),
                };
                client::signal_track_units_changed(temporal, user, track, change)
            })
            .buffer_unordered(CONCURRENT_SIGNALS)
            .collect()
            .await;
        for outcome in outcomes {
            match outcome {
                Ok(true) => notified.signalled += 1,
                Ok(false) => notified.not_running += 1,
                Err(error) => {
                    notified.failed += 1;
                    notified
                        .first_error
                        .get_or_insert_with(|| crate::telemetry::causes(&error));
                }
            }
        }
        progress(
            notified.signalled + notified.not_running + notified.failed,
            total as usize,
        );
    }
}
