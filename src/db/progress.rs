//! CRUD of `user_progress`. Every change is one SQL statement that merges under the row lock,
//! following the same rules as [`UserProgress::apply`], so concurrent callers lose nothing.

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{PgConnection, PgExecutor, PgPool};
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
pub struct ProgressRow {
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
pub async fn ensure_units_in_track<'e>(
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
    .fetch_optional(pool)
    .await?;
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
/// transaction (e.g. together with a ledger insert).
pub async fn update_user_progress_on(
    conn: &mut PgConnection,
    user_id: Uuid,
    track_id: Uuid,
    update: &UserProgressUpdate,
) -> Result<Option<UserProgress>, ProgressError> {
    ensure_units_in_track(&mut *conn, track_id, &update.unit_ids()).await?;
    let (assessment_unit, attempt_id, attempt) = match &update.assessment {
        Some(a) => (
            Some(a.unit_id),
            Some(a.attempt_id),
            Some(Json(a.attempt.clone())),
        ),
        None => (None, None, None),
    };
    // `merged` reads the row under `for update`, so a concurrent writer's change is seen
    // before merging; the update compares old and merged values to decide on a new version.
    let row: Option<ProgressRow> = sqlx::query_as(
        "with old as (
            select * from user_progress where user_id = $1 and track_id = $2 for update
        ), candidate as (
            select
                array(select distinct u from unnest(old.completed_unit_ids || $3::uuid[]) as u
                      order by u) as completed_unit_ids,
                case when $4::uuid is null then old.assessment_results
                     when kept is not null and not (
                         ($6->>'at')::timestamptz < (kept->>'at')::timestamptz
                         or (($6->>'at')::timestamptz = (kept->>'at')::timestamptz
                             and (($6->>'score')::float8, ($6->>'max_score')::float8, ($6->>'passed')::bool)
                               > ((kept->>'score')::float8, (kept->>'max_score')::float8, (kept->>'passed')::bool)))
                     then old.assessment_results
                     else jsonb_set(old.assessment_results, array[$4::text],
                          jsonb_build_object('attempts',
                              coalesce(old.assessment_results #> array[$4::text, 'attempts'], '{}')
                              || jsonb_build_object($5::text, $6::jsonb)))
                end as assessment_results,
                case when $7::bigint > old.last_seq then $8::uuid else old.current_unit_id end
                    as current_unit_id,
                greatest(old.last_seq, coalesce($7::bigint, 0)) as last_seq,
                case when $9::timestamptz is null then old.status else 'completed' end as status,
                case when $9::timestamptz is null then old.completed_at
                     else least(coalesce(old.completed_at, $9::timestamptz), $9::timestamptz)
                end as completed_at,
                least(old.started_at, coalesce($10::timestamptz, old.started_at)) as started_at
            from old, lateral (
                select old.assessment_results #> array[$4::text, 'attempts', $5::text] as kept
            ) k
        ), merged as (
            select c.*, (c.completed_unit_ids, c.assessment_results, c.current_unit_id, c.last_seq,
                         c.status, c.completed_at, c.started_at)
                is distinct from (old.completed_unit_ids, old.assessment_results,
                                  old.current_unit_id, old.last_seq, old.status,
                                  old.completed_at, old.started_at) as changed
            from candidate c, old
        )
        update user_progress p set
            completed_unit_ids = m.completed_unit_ids,
            assessment_results = m.assessment_results,
            current_unit_id = m.current_unit_id,
            last_seq = m.last_seq,
            status = m.status,
            completed_at = m.completed_at,
            started_at = m.started_at,
            version = p.version + m.changed::int,
            updated_at = case when m.changed then now() else p.updated_at end
        from merged m
        where p.user_id = $1 and p.track_id = $2
        returning p.*",
    )
    .bind(user_id)
    .bind(track_id)
    .bind(&update.completed_unit_ids_add)
    .bind(assessment_unit)
    .bind(attempt_id)
    .bind(attempt)
    .bind(update.current_unit.map(|c| c.seq))
    .bind(update.current_unit.and_then(|c| c.unit_id))
    .bind(update.completed_at)
    .bind(update.occurred_at)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(UserProgress::try_from).transpose()
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
