//! CRUD of `user_progress`, and the two statements every writer of rows shares: the
//! learners' locks and the batched row write. An update merges in Rust with the model's own
//! rules ([`UserProgress::add_completed`] and its siblings, which [`UserProgress::apply`]
//! combines per command), under the same per-learner lock the applier takes, so a CRUD caller
//! and an applier never lose each other's changes and there is one merge, not two.

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{Connection as _, PgConnection, PgExecutor, PgPool};
use uuid::Uuid;

use crate::model::{Action, AssessmentResults, Attempt, ProgressCommand, Status, UserProgress};

#[derive(Debug, thiserror::Error)]
pub enum ProgressError {
    #[error("track {0} does not exist")]
    UnknownTrack(Uuid),
    #[error("unit {unit_id} does not belong to track {track_id}")]
    ForeignUnit { unit_id: Uuid, track_id: Uuid },
    #[error("progress of user {user_id} on track {track_id} already exists")]
    AlreadyExists { user_id: Uuid, track_id: Uuid },
    #[error("stored progress is corrupt: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// A new progress row: the learner has started the track.
#[derive(Debug, Clone)]
pub struct UserProgressCreate {
    pub user_id: Uuid,
    pub track_id: Uuid,
    pub current_unit_id: Option<Uuid>,
    pub started_at: DateTime<Utc>,
}

/// A partial change. Each part merges by the rules of the model; an empty update changes nothing.
#[derive(Debug, Clone, Default)]
pub struct UserProgressUpdate {
    /// Added to the completed set, without duplicates.
    pub completed_unit_ids_add: Vec<Uuid>,
    /// One attempt at an assessment; two records of one attempt id resolve as in the model.
    pub assessment: Option<AssessmentAttempt>,
    /// Sets the current unit if `seq` is newer than the one that set it last.
    pub current_unit: Option<CurrentUnit>,
    /// Marks the track completed (status never goes back).
    pub completed_at: Option<DateTime<Utc>>,
    /// When the change happened; `started_at` becomes the earliest such time.
    pub occurred_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub struct AssessmentAttempt {
    pub unit_id: Uuid,
    pub attempt_id: Uuid,
    pub attempt: Attempt,
}

#[derive(Debug, Clone, Copy)]
pub struct CurrentUnit {
    pub unit_id: Option<Uuid>,
    pub seq: i64,
}

impl UserProgressUpdate {
    fn unit_ids(&self) -> Vec<Uuid> {
        let mut ids = self.completed_unit_ids_add.clone();
        ids.extend(self.assessment.as_ref().map(|a| a.unit_id));
        ids.extend(self.current_unit.and_then(|c| c.unit_id));
        ids
    }
}

impl From<&ProgressCommand> for UserProgressUpdate {
    fn from(command: &ProgressCommand) -> UserProgressUpdate {
        let current = |unit_id| {
            Some(CurrentUnit {
                unit_id,
                seq: command.seq,
            })
        };
        let base = UserProgressUpdate {
            occurred_at: Some(command.occurred_at),
            ..UserProgressUpdate::default()
        };
        match &command.action {
            Action::TrackStarted { current_unit_id } => UserProgressUpdate {
                current_unit: current(*current_unit_id),
                ..base
            },
            Action::UnitCompleted {
                unit_id,
                next_unit_id,
            } => UserProgressUpdate {
                completed_unit_ids_add: vec![*unit_id],
                current_unit: current(*next_unit_id),
                ..base
            },
            Action::AssessmentRecorded {
                unit_id,
                attempt_id,
                score,
                max_score,
                passed,
            } => UserProgressUpdate {
                assessment: Some(AssessmentAttempt {
                    unit_id: *unit_id,
                    attempt_id: *attempt_id,
                    attempt: Attempt {
                        score: *score,
                        max_score: *max_score,
                        passed: *passed,
                        at: command.occurred_at,
                    },
                }),
                ..base
            },
            Action::TrackCompleted {} => UserProgressUpdate {
                completed_at: Some(command.occurred_at),
                current_unit: current(None),
                ..base
            },
        }
    }
}

/// A `user_progress` row as PostgreSQL returns it.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct ProgressRow {
    user_id: Uuid,
    track_id: Uuid,
    status: String,
    current_unit_id: Option<Uuid>,
    completed_unit_ids: Vec<Uuid>,
    assessment_results: Json<AssessmentResults>,
    started_at: DateTime<Utc>,
    completed_at: Option<DateTime<Utc>>,
    updated_at: DateTime<Utc>,
    last_seq: i64,
    version: i64,
}

impl TryFrom<ProgressRow> for UserProgress {
    type Error = ProgressError;

    fn try_from(row: ProgressRow) -> Result<UserProgress, ProgressError> {
        let status = Status::parse(&row.status)
            .ok_or_else(|| ProgressError::Corrupt(format!("unknown status {:?}", row.status)))?;
        Ok(UserProgress {
            user_id: row.user_id,
            track_id: row.track_id,
            status,
            current_unit_id: row.current_unit_id,
            completed_unit_ids: row.completed_unit_ids,
            assessment_results: row.assessment_results.0,
            started_at: row.started_at,
            completed_at: row.completed_at,
            updated_at: row.updated_at,
            last_seq: row.last_seq,
            version: row.version,
        })
    }
}

/// Checks that the track exists and that every unit belongs to it.
pub(crate) async fn ensure_units_in_track<'e>(
    db: impl PgExecutor<'e>,
    track_id: Uuid,
    unit_ids: &[Uuid],
) -> Result<(), ProgressError> {
    let (track_exists, known): (bool, Vec<Uuid>) = sqlx::query_as(
        "select exists (select 1 from learning_tracks where id = $1),
                array(select id from track_units where track_id = $1 and id = any($2))",
    )
    .bind(track_id)
    .bind(unit_ids)
    .fetch_one(db)
    .await?;
    if !track_exists {
        return Err(ProgressError::UnknownTrack(track_id));
    }
    match unit_ids.iter().find(|id| !known.contains(id)) {
        Some(unit_id) => Err(ProgressError::ForeignUnit {
            unit_id: *unit_id,
            track_id,
        }),
        None => Ok(()),
    }
}

pub async fn create_user_progress(
    pool: &PgPool,
    new: &UserProgressCreate,
) -> Result<UserProgress, ProgressError> {
    ensure_units_in_track(pool, new.track_id, &Vec::from_iter(new.current_unit_id)).await?;
    let mut tx = pool.begin().await?;
    lock_learners(&mut tx, &[(new.user_id, new.track_id)]).await?;
    let row: Option<ProgressRow> = sqlx::query_as(
        "insert into user_progress (user_id, track_id, current_unit_id, started_at, updated_at)
         values ($1, $2, $3, $4, now())
         on conflict (user_id, track_id) do nothing
         returning *",
    )
    .bind(new.user_id)
    .bind(new.track_id)
    .bind(new.current_unit_id)
    .bind(new.started_at)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    match row {
        Some(row) => row.try_into(),
        None => Err(ProgressError::AlreadyExists {
            user_id: new.user_id,
            track_id: new.track_id,
        }),
    }
}

pub async fn get_user_progress<'e>(
    db: impl PgExecutor<'e>,
    user_id: Uuid,
    track_id: Uuid,
) -> Result<Option<UserProgress>, ProgressError> {
    let row: Option<ProgressRow> =
        sqlx::query_as("select * from user_progress where user_id = $1 and track_id = $2")
            .bind(user_id)
            .bind(track_id)
            .fetch_optional(db)
            .await?;
    row.map(UserProgress::try_from).transpose()
}

/// Applies a partial update atomically and returns the row after it, or `None` when the
/// learner has no progress on the track. `version` grows only if the row really changed.
pub async fn update_user_progress(
    pool: &PgPool,
    user_id: Uuid,
    track_id: Uuid,
    update: &UserProgressUpdate,
) -> Result<Option<UserProgress>, ProgressError> {
    let mut conn = pool.acquire().await?;
    update_user_progress_on(&mut conn, user_id, track_id, update).await
}

/// [`update_user_progress`] on one connection, so a caller can run it inside its own
/// transaction (e.g. together with a ledger insert); it then runs in a savepoint.
pub async fn update_user_progress_on(
    conn: &mut PgConnection,
    user_id: Uuid,
    track_id: Uuid,
    update: &UserProgressUpdate,
) -> Result<Option<UserProgress>, ProgressError> {
    ensure_units_in_track(&mut *conn, track_id, &update.unit_ids()).await?;
    let mut tx = conn.begin().await?;
    lock_learners(&mut tx, &[(user_id, track_id)]).await?;
    let row: Option<ProgressRow> = sqlx::query_as(
        "select * from user_progress where user_id = $1 and track_id = $2 for update",
    )
    .bind(user_id)
    .bind(track_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let mut progress = UserProgress::try_from(row)?;
    if merge(&mut progress, update, crate::model::now_micros()) {
        write_rows(&mut tx, &[&progress]).await?;
    }
    tx.commit().await?;
    Ok(Some(progress))
}

/// Merges each part of `update` by the model's rule for it; returns whether anything changed
/// (then the version grew by one).
fn merge(progress: &mut UserProgress, update: &UserProgressUpdate, now: DateTime<Utc>) -> bool {
    let before = progress.clone();
    if let Some(at) = update.occurred_at {
        progress.note_occurred(at);
    }
    for unit in &update.completed_unit_ids_add {
        progress.add_completed(*unit);
    }
    if let Some(a) = &update.assessment {
        progress.record_attempt(a.unit_id, a.attempt_id, a.attempt.clone());
    }
    if let Some(current) = update.current_unit {
        progress.set_current(current.unit_id, current.seq);
    }
    if let Some(at) = update.completed_at {
        progress.mark_completed(at);
    }
    progress.bump_if_changed(&before, now)
}

/// Serialises every writer of the learners' rows (appliers, the CRUD, `rebuild`, `erase`),
/// including learners that have no row yet: a transaction-scoped advisory lock per learner,
/// taken in one order so two writers never deadlock.
pub(crate) async fn lock_learners(
    conn: &mut PgConnection,
    keys: &[(Uuid, Uuid)],
) -> Result<(), sqlx::Error> {
    let (users, tracks): (Vec<Uuid>, Vec<Uuid>) = keys.iter().copied().unzip();
    sqlx::query(
        "select pg_advisory_xact_lock(hashtextextended(u::text || t::text, 0))
         from (select u, t from unnest($1::uuid[], $2::uuid[]) as k (u, t) order by u, t) as ordered",
    )
    .bind(users)
    .bind(tracks)
    .execute(conn)
    .await?;
    Ok(())
}

/// Writes merged rows with one batched upsert: the only statement that writes a row's
/// content (the applier's batches, the CRUD's updates, `rebuild`). The caller holds the
/// learners' locks ([`lock_learners`]).
pub async fn write_rows(
    conn: &mut PgConnection,
    rows: &[&UserProgress],
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    // PostgreSQL arrays must be rectangular, so each row's unit set travels as one text literal
    let completed: Vec<String> = rows
        .iter()
        .map(|r| {
            let ids: Vec<String> = r.completed_unit_ids.iter().map(Uuid::to_string).collect();
            format!("{{{}}}", ids.join(","))
        })
        .collect();
    sqlx::query(
        "insert into user_progress (user_id, track_id, status, current_unit_id, completed_unit_ids,
             assessment_results, started_at, completed_at, updated_at, last_seq, version)
         select r.user_id, r.track_id, r.status, r.current_unit_id, r.completed::uuid[],
                r.results, r.started_at, r.completed_at, r.updated_at, r.last_seq, r.version
         from unnest($1::uuid[], $2::uuid[], $3::text[], $4::uuid[], $5::text[], $6::jsonb[],
                     $7::timestamptz[], $8::timestamptz[], $9::timestamptz[], $10::bigint[], $11::bigint[])
              as r (user_id, track_id, status, current_unit_id, completed, results,
                    started_at, completed_at, updated_at, last_seq, version)
         on conflict (user_id, track_id) do update set
             status = excluded.status,
             current_unit_id = excluded.current_unit_id,
             completed_unit_ids = excluded.completed_unit_ids,
             assessment_results = excluded.assessment_results,
             started_at = excluded.started_at,
             completed_at = excluded.completed_at,
             updated_at = excluded.updated_at,
             last_seq = excluded.last_seq,
             version = excluded.version",
    )
    .bind(rows.iter().map(|r| r.user_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.track_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.status.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.current_unit_id).collect::<Vec<_>>())
    .bind(completed)
    .bind(rows.iter().map(|r| Json(&r.assessment_results)).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.started_at).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.completed_at).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.updated_at).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.last_seq).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.version).collect::<Vec<_>>())
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes a learner's progress on a track; returns whether there was any.
pub async fn delete_user_progress(
    pool: &PgPool,
    user_id: Uuid,
    track_id: Uuid,
) -> Result<bool, ProgressError> {
    let result = sqlx::query("delete from user_progress where user_id = $1 and track_id = $2")
        .bind(user_id)
        .bind(track_id)
        .execute(pool)
        .await?;
    Ok(result.rows_affected() > 0)
}
