//! What the read service loads: learners' progress rows and how many units a track has. The
//! unit counts come from the API's cached track catalogue, so a cache miss costs one query.

use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

use super::progress::{ProgressError, ProgressRow};
use crate::model::UserProgress;

/// Every track a learner has progress on, most recently updated first.
pub(crate) async fn list_user_progress(
    pool: &PgPool,
    user_id: Uuid,
) -> Result<Vec<UserProgress>, ProgressError> {
    let rows: Vec<ProgressRow> = sqlx::query_as(
        "select * from user_progress
         where user_id = $1
         order by updated_at desc, track_id",
    )
    .bind(user_id)
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(UserProgress::try_from).collect()
}

/// How many units a track has; 0 when it does not exist.
pub(crate) async fn unit_count<'e>(
    db: impl PgExecutor<'e>,
    track_id: Uuid,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("select count(*) from track_units where track_id = $1")
        .bind(track_id)
        .fetch_one(db)
        .await
}
