//! What the read service loads: a learner's progress together with its track's unit count,
//! in one statement, so a cache miss costs exactly one query.

use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

use super::progress::{ProgressError, ProgressRow};
use crate::model::{ProgressView, UserProgress};

#[derive(sqlx::FromRow)]
struct ViewRow {
    #[sqlx(flatten)]
    progress: ProgressRow,
    total_units: i64,
}

impl TryFrom<ViewRow> for ProgressView {
    type Error = ProgressError;

    fn try_from(row: ViewRow) -> Result<ProgressView, ProgressError> {
        Ok(ProgressView::new(
            UserProgress::try_from(row.progress)?,
            row.total_units,
        ))
    }
}

/// One learner's progress on one track as readers see it, or `None` when there is none yet.
pub async fn get_progress_view<'e>(
    db: impl PgExecutor<'e>,
    user_id: Uuid,
    track_id: Uuid,
) -> Result<Option<ProgressView>, ProgressError> {
    let row: Option<ViewRow> = sqlx::query_as(
        "select p.*, (select count(*) from track_units u where u.track_id = p.track_id) as total_units
         from user_progress p
         where p.user_id = $1 and p.track_id = $2",
    )
    .bind(user_id)
    .bind(track_id)
    .fetch_optional(db)
    .await?;
    row.map(ProgressView::try_from).transpose()
}

/// Every track a learner has progress on, most recently updated first.
pub async fn list_progress_views(
    pool: &PgPool,
    user_id: Uuid,
) -> Result<Vec<ProgressView>, ProgressError> {
    let rows: Vec<ViewRow> = sqlx::query_as(
        "select p.*, (select count(*) from track_units u where u.track_id = p.track_id) as total_units
         from user_progress p
         where p.user_id = $1
         order by p.updated_at desc, p.track_id",
    )
    .bind(user_id)
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(ProgressView::try_from).collect()
}
