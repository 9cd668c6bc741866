//! One change of a track's units, in one transaction: the catalogue, every learner on the
//! track, and the change's events in the outbox.
//!
//! Locks: the track's row first (`for update`; an applier's batch takes it `for key share`
//! before its learners' rows, so it judges units against the catalogue as it is after any
//! change it waited for), then the learners' rows in key order, as appliers do. A learner
//! whose first command is being applied meanwhile has no row yet: that batch holds the
//! track's row, so the change waits for it, then finds the new row.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::db::progress::ProgressRow;
use crate::db::progress::write_rows;
use crate::db::tracks::TrackUnit;
use crate::model::{ProgressEvent, ProgressView, UserProgress};

/// Learners rewritten per statement: bounds a statement's parameters and a progress line's gap.
pub(crate) const LEARNER_BATCH: i64 = 1_000;

/// Units a track may hold, as `tracks create` allows.
pub(crate) const MAX_UNITS: usize = 1_000;

/// While positions are rewritten, every unit first moves this far up, so the unique
/// (track, position) constraint never sees two units at one place.
const POSITION_SHIFT: i32 = 1_000_000;

/// What to change.
#[derive(Debug, Clone)]
pub enum Change {
    /// A new unit at `position` (0-based; the end when `None`).
    AddUnit {
        title: String,
        position: Option<usize>,
        assessment: bool,
    },
    RemoveUnit {
        unit: Uuid,
    },
    MoveUnit {
        unit: Uuid,
        position: usize,
    },
}

impl Change {
    fn kind(&self) -> &'static str {
        match self {
            Change::AddUnit { .. } => "unit_added",
            Change::RemoveUnit { .. } => "unit_removed",
            Change::MoveUnit { .. } => "unit_moved",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error("track {0} does not exist")]
    UnknownTrack(Uuid),
    #[error("unit {unit} is not a unit of track {track}")]
    UnknownUnit { unit: Uuid, track: Uuid },
    #[error(
        "position {position} is out of range: with {units} units it must be between 0 and {max}"
    )]
    Position {
        position: usize,
        units: usize,
        max: usize,
    },
    #[error("unit {0} is the track's only unit; a track keeps at least one")]
    LastUnit(Uuid),
    #[error("the track already has {MAX_UNITS} units, the most a track holds")]
    TooManyUnits,
    #[error("a unit's title must not be empty")]
    EmptyTitle,
    #[error("a stored progress row does not decode: {0}")]
    Corrupt(String),
    #[error("database")]
    Database(#[from] sqlx::Error),
}

/// What a change did (or, in a dry run, would do).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Applied {
    pub track_id: Uuid,
    pub kind: &'static str,
    pub unit_id: Uuid,
    /// The unit's position after the change; `None` when removed.
    pub position: Option<usize>,
    /// The track's units in their new order.
    pub unit_ids: Vec<Uuid>,
    pub units_version: i64,
    /// Learners whose progress was rewritten (each gets an event).
    pub learners: usize,
    pub completions_dropped: usize,
    pub reopened: usize,
    pub current_moved: usize,
    pub dry_run: bool,
}

/// Applies `change` to `track` and its learners; with `dry_run`, computes everything and
/// rolls back. `progress(done, total)` is called after each batch of learners.
pub async fn apply_change(
    pool: &PgPool,
    track: Uuid,
    change: &Change,
    reopen: bool,
    dry_run: bool,
    progress: &mut (dyn FnMut(usize, usize) + Send),
) -> Result<Applied, ChangeError> {
    let now = crate::model::now_micros();
    let mut tx = pool.begin().await?;
    let units_version: i64 = sqlx::query_scalar(
        "select units_version + 1 from learning_tracks where id = $1 for update",
    )
    .bind(track)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ChangeError::UnknownTrack(track))?;
    let units: Vec<TrackUnit> = sqlx::query_as(
        "select id, position, title, kind from track_units where track_id = $1 order by position",
    )
    .bind(track)
    .fetch_all(&mut *tx)
    .await?;
    let (order, unit_id, position) = plan(track, &units, change)?;
    let mut applied = Applied {
        track_id: track,
        kind: change.kind(),
        unit_id,
        position,
        unit_ids: order.clone(),
        units_version,
        learners: 0,
        completions_dropped: 0,
        reopened: 0,
        current_moved: 0,
        dry_run,
    };
    sqlx::query(
        "insert into track_changes (track_id, units_version, kind, unit_id, position, reopen,
             total_units, changed_at)
         values ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(track)
    .bind(units_version)
    .bind(change.kind())
    .bind(unit_id)
    .bind(position.map(|p| p as i32))
    .bind(reopen)
    .bind(order.len() as i32)
    .bind(now)
    .execute(&mut *tx)
    .await?;

    sqlx::query("update track_units set position = position + $2 where track_id = $1")
        .bind(track)
        .bind(POSITION_SHIFT)
        .execute(&mut *tx)
        .await?;
    if let Change::AddUnit {
        title, assessment, ..
    } = change
    {
        let kind = if *assessment { "assessment" } else { "lesson" };
        sqlx::query(
            "insert into track_units (id, track_id, position, title, kind) values ($1, $2, $3, $4, $5)",
        )
        .bind(unit_id)
        .bind(track)
        .bind(position.unwrap_or_default() as i32)
        .bind(title)
        .bind(kind)
        .execute(&mut *tx)
        .await?;
    }
    if !matches!(change, Change::MoveUnit { .. }) {
        // adding or removing a unit changes every learner's percent complete
        rewrite_learners(
            &mut tx,
            &order,
            reopen,
            units_version,
            now,
            &mut applied,
            progress,
        )
        .await?;
    }
    if let Change::RemoveUnit { unit } = change {
        // after the learners: none has it as current unit any more
        sqlx::query("delete from track_units where id = $1")
            .bind(unit)
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query(
        "update track_units u set position = n.position
         from unnest($2::uuid[], $3::int[]) as n (id, position)
         where u.track_id = $1 and u.id = n.id",
    )
    .bind(track)
    .bind(&order)
    .bind((0..order.len() as i32).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await?;
    sqlx::query("update learning_tracks set units_version = $2 where id = $1")
        .bind(track)
        .bind(units_version)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "update track_changes set learners = $3 where track_id = $1 and units_version = $2",
    )
    .bind(track)
    .bind(units_version)
    .bind(applied.learners as i32)
    .execute(&mut *tx)
    .await?;
    if dry_run {
        tx.rollback().await?;
    } else {
        tx.commit().await?;
    }
    Ok(applied)
}

/// The new order, the unit changed and its new position; refuses what cannot be done.
fn plan(
    track: Uuid,
    units: &[TrackUnit],
    change: &Change,
) -> Result<(Vec<Uuid>, Uuid, Option<usize>), ChangeError> {
    let mut order: Vec<Uuid> = units.iter().map(|u| u.id).collect();
    let index_of = |unit: Uuid| {
        order
            .iter()
            .position(|u| *u == unit)
            .ok_or(ChangeError::UnknownUnit { unit, track })
    };
    let in_range = |position: usize, max: usize| {
        if position > max {
            Err(ChangeError::Position {
                position,
                units: units.len(),
                max,
            })
        } else {
            Ok(position)
        }
    };
    match change {
        Change::AddUnit {
            title, position, ..
        } => {
            if title.trim().is_empty() {
                return Err(ChangeError::EmptyTitle);
            }
            if order.len() >= MAX_UNITS {
                return Err(ChangeError::TooManyUnits);
            }
            let position = in_range(position.unwrap_or(order.len()), order.len())?;
            let unit = Uuid::new_v4();
            order.insert(position, unit);
            Ok((order, unit, Some(position)))
        }
        Change::RemoveUnit { unit } => {
            let index = index_of(*unit)?;
            if order.len() == 1 {
                return Err(ChangeError::LastUnit(*unit));
            }
            order.remove(index);
            Ok((order, *unit, None))
        }
        Change::MoveUnit { unit, position } => {
            let index = index_of(*unit)?;
            let position = in_range(*position, order.len() - 1)?;
            order.remove(index);
            order.insert(position, *unit);
            Ok((order, *unit, Some(position)))
        }
    }
}

/// Refits every learner on the track to `order`, in batches in key order, and writes each
/// one's `track_changed` event to the outbox.
async fn rewrite_learners(
    tx: &mut Transaction<'_, Postgres>,
    order: &[Uuid],
    reopen: bool,
    units_version: i64,
    now: DateTime<Utc>,
    applied: &mut Applied,
    progress: &mut (dyn FnMut(usize, usize) + Send),
) -> Result<(), ChangeError> {
    let track = applied.track_id;
    let total: i64 = sqlx::query_scalar("select count(*) from user_progress where track_id = $1")
        .bind(track)
        .fetch_one(&mut **tx)
        .await?;
    let mut after = Uuid::nil();
    loop {
        let rows: Vec<ProgressRow> = sqlx::query_as(
            "select * from user_progress where track_id = $1 and user_id > $2
             order by user_id limit $3 for update",
        )
        .bind(track)
        .bind(after)
        .bind(LEARNER_BATCH)
        .fetch_all(&mut **tx)
        .await?;
        if rows.is_empty() {
            break;
        }
        let mut learners: Vec<UserProgress> = rows
            .into_iter()
            .map(|row| UserProgress::try_from(row).map_err(|e| ChangeError::Corrupt(e.to_string())))
            .collect::<Result<_, _>>()?;
        after = learners.last().map_or(after, |l| l.user_id);
        let users: Vec<Uuid> = learners.iter().map(|l| l.user_id).collect();
        let through: HashMap<Uuid, i64> = sqlx::query_as::<_, (Uuid, i64)>(
            "select user_id, max(seq) from progress_ledger
             where track_id = $1 and user_id = any($2) group by user_id",
        )
        .bind(track)
        .bind(&users)
        .fetch_all(&mut **tx)
        .await?
        .into_iter()
        .collect();
        let mut events = Vec::with_capacity(learners.len());
        for learner in &mut learners {
            let reshaped = learner.reshape(order, reopen, now);
            applied.completions_dropped += reshaped.completions_dropped;
            applied.reopened += usize::from(reshaped.reopened);
            applied.current_moved += usize::from(reshaped.current_moved);
            events.push(ProgressEvent {
                event_id: super::event_id(track, units_version, learner.user_id),
                kind: super::EVENT_KIND.to_owned(),
                version: learner.version,
                occurred_at: now,
                applied_at: now,
                progress: ProgressView::new(learner.clone(), order.len() as i64),
            });
        }
        write_rows(tx, &learners.iter().collect::<Vec<_>>()).await?;
        sqlx::query(
            "insert into track_change_events (event_id, user_id, track_id, units_version, version,
                 through_seq, event)
             select e.event_id, e.user_id, $1, $2, e.version, e.through_seq, e.event
             from unnest($3::uuid[], $4::uuid[], $5::bigint[], $6::bigint[], $7::jsonb[])
                  as e (event_id, user_id, version, through_seq, event)",
        )
        .bind(track)
        .bind(units_version)
        .bind(events.iter().map(|e| e.event_id).collect::<Vec<_>>())
        .bind(&users)
        .bind(events.iter().map(|e| e.version).collect::<Vec<_>>())
        .bind(
            users
                .iter()
                .map(|u| through.get(u).copied().unwrap_or(0))
                .collect::<Vec<_>>(),
        )
        .bind(events.iter().map(Json).collect::<Vec<_>>())
        .execute(&mut **tx)
        .await?;
        applied.learners += learners.len();
        progress(applied.learners, total as usize);
    }
    Ok(())
}
