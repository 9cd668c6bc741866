//! Exporting a track's progress rows for reporting tools, a page at a time: `export` writes
//! them as NDJSON or CSV, and admins page through them over HTTP
//! (`GET /api/v1/tracks/{track_id}/progress`).
//!
//! Pages follow the learners' ids, which never change, so a row updated during an export is
//! neither skipped nor repeated: it appears once, as it was when its page was read. For an
//! incremental export, `since` keeps the rows updated at or after a time; each export says
//! which `since` the next one should use (`resume_since`): its own start less
//! [`SETTLE`], because a row's `updated_at` is taken when its transaction starts and it
//! becomes visible when that transaction commits. The next export may repeat a few rows
//! (their `version` tells which copy is newer); it never misses one.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::db::progress::{ProgressError, ProgressRow};
use crate::db::views::unit_count;
use crate::model::{ProgressView, UserProgress};

/// How much earlier than an export's start the next incremental export resumes: far longer
/// than any applier transaction may run (its statements time out after 30 s by default).
pub(crate) const SETTLE: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

/// The largest page a caller may ask for.
pub(crate) const MAX_PAGE: u32 = 5_000;

/// What to export: one track's rows, optionally only those updated since a time, after a
/// learner (the previous page's last).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Query {
    pub track: Uuid,
    pub since: Option<DateTime<Utc>>,
    pub after: Option<Uuid>,
    pub limit: u32,
}

#[derive(Debug, Serialize)]
pub(crate) struct Page {
    pub progress: Vec<ProgressView>,
    /// The `after` of the next page; `None` on the last one.
    pub next: Option<Uuid>,
}

/// One page of a track's rows, in learner order.
pub(crate) async fn page(pool: &PgPool, query: &Query) -> Result<Page, ProgressError> {
    let limit = query.limit.clamp(1, MAX_PAGE);
    let rows: Vec<ProgressRow> = sqlx::query_as(
        "select * from user_progress
         where track_id = $1
           and ($2::timestamptz is null or updated_at >= $2)
           and ($3::uuid is null or user_id > $3)
         order by user_id
         limit $4",
    )
    .bind(query.track)
    .bind(query.since)
    .bind(query.after)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    let full = rows.len() == limit as usize;
    let total_units = unit_count(pool, query.track).await?;
    let progress: Vec<ProgressView> = rows
        .into_iter()
        .map(|row| UserProgress::try_from(row).map(|p| ProgressView::new(p, total_units)))
        .collect::<Result<_, _>>()?;
    let next = if full {
        progress.last().map(|view| view.progress.user_id)
    } else {
        None
    };
    Ok(Page { progress, next })
}

/// Whether the track exists: an export of an unknown track is an error, not an empty file.
pub(crate) async fn track_exists(pool: &PgPool, track: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("select exists (select 1 from learning_tracks where id = $1)")
        .bind(track)
        .fetch_one(pool)
        .await
}

/// The `since` for the export after one that started at `started`.
pub(crate) fn resume_since(started: DateTime<Utc>) -> DateTime<Utc> {
    started - SETTLE
}

/// The CSV header [`csv_line`] follows.
pub const CSV_HEADER: &str = "user_id,track_id,status,percent_complete,completed_units,\
total_units,current_unit_id,started_at,completed_at,updated_at,version";

/// One row as CSV; every field is a uuid, number, timestamp or fixed word, so none needs
/// quoting.
pub(crate) fn csv_line(view: &ProgressView) -> String {
    let p = &view.progress;
    let time = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    format!(
        "{},{},{},{},{},{},{},{},{},{},{}",
        p.user_id,
        p.track_id,
        p.status.as_str(),
        view.percent_complete,
        p.completed_unit_ids.len(),
        view.total_units,
        p.current_unit_id.map(|u| u.to_string()).unwrap_or_default(),
        time(p.started_at),
        p.completed_at.map(time).unwrap_or_default(),
        time(p.updated_at),
        p.version,
    )
}
