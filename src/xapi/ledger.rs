//! Reading applied commands from the ledger, with the catalogue's titles, for statements.
//! Rejected and no-op commands are never read: they make no statement.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

use super::statement::{LedgerRecord, UnitTitle};
use crate::model::ProgressCommand;

/// Selected columns: the command, when it was applied, and the titles it names.
const SELECT: &str = "select l.payload, l.applied_at, t.title, u.title, u.kind
     from progress_ledger l
     join learning_tracks t on t.id = l.track_id
     left join track_units u on u.track_id = l.track_id and u.id::text = l.payload->>'unit_id'";

type Row = (
    sqlx::types::Json<serde_json::Value>,
    DateTime<Utc>,
    String,
    Option<String>,
    Option<String>,
);

fn record(
    (payload, applied_at, track_title, unit_title, unit_kind): Row,
) -> Result<LedgerRecord, sqlx::Error> {
    let command: ProgressCommand =
        serde_json::from_value(payload.0).map_err(|e| sqlx::Error::Decode(e.into()))?;
    Ok(LedgerRecord {
        command,
        applied_at,
        track_title,
        unit: unit_title
            .zip(unit_kind)
            .map(|(title, kind)| UnitTitle { title, kind }),
    })
}

/// The applied commands among `command_ids` (an event's id is its command's id).
pub(crate) async fn applied_by_ids<'e>(
    db: impl PgExecutor<'e>,
    command_ids: &[Uuid],
) -> Result<Vec<LedgerRecord>, sqlx::Error> {
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "{SELECT} where l.command_id = any($1) and l.outcome = 'applied'"
    ))
    .bind(command_ids)
    .fetch_all(db)
    .await?;
    rows.into_iter().map(record).collect()
}

/// The applied command whose statement has this id (through the ledger's index on it).
pub(crate) async fn applied_by_statement_id<'e>(
    db: impl PgExecutor<'e>,
    statement_id: Uuid,
) -> Result<Option<LedgerRecord>, sqlx::Error> {
    let row: Option<Row> = sqlx::query_as(&format!(
        "{SELECT} where xapi_statement_id(l.command_id) = $1 and l.outcome = 'applied'"
    ))
    .bind(statement_id)
    .fetch_optional(db)
    .await?;
    row.map(record).transpose()
}

/// What to select from the ledger; `None` selects everything on that axis.
#[derive(Debug, Clone, Default)]
pub(crate) struct Filter {
    pub user_id: Option<Uuid>,
    pub track_id: Option<Uuid>,
    /// The learner's registration on a track (`xapi_registration(user_id, track_id)`).
    pub registration: Option<Uuid>,
    /// The unit the command names (`unit_completed`, `assessment_recorded`).
    pub unit_id: Option<Uuid>,
    /// Command types, e.g. `["unit_completed", "track_completed"]`.
    pub kinds: Option<Vec<String>>,
    /// For assessments: only passed (`true`) or failed (`false`) attempts.
    pub passed: Option<bool>,
    /// `applied_at > since`.
    pub since: Option<DateTime<Utc>>,
    /// `applied_at <= until`.
    pub until: Option<DateTime<Utc>>,
}

/// Where a page starts: strictly after this `(applied_at, command_id)` in the page's order.
pub(crate) type Position = (DateTime<Utc>, Uuid);

/// Up to `limit` applied commands matching `filter`, ordered by `(applied_at, command_id)`
/// ascending or descending, starting after `after`.
pub(crate) async fn applied<'e>(
    db: impl PgExecutor<'e>,
    filter: &Filter,
    ascending: bool,
    after: Option<Position>,
    limit: i64,
) -> Result<Vec<LedgerRecord>, sqlx::Error> {
    let (order, beyond) = if ascending {
        ("asc", ">")
    } else {
        ("desc", "<")
    };
    let query = format!(
        "{SELECT}
         where l.outcome = 'applied'
           and ($1::uuid is null or l.user_id = $1)
           and ($2::uuid is null or l.track_id = $2)
           and ($3::uuid is null or l.track_id = $3)
           and ($12::uuid is null or xapi_registration(l.user_id, l.track_id) = $12)
           and ($4::text is null or l.payload->>'unit_id' = $4)
           and ($5::text[] is null or l.kind = any($5))
           and ($6::boolean is null or (l.payload->>'passed')::boolean = $6)
           and ($7::timestamptz is null or l.applied_at > $7)
           and ($8::timestamptz is null or l.applied_at <= $8)
           and ($9::timestamptz is null or (l.applied_at, l.command_id) {beyond} ($9, $10))
         order by l.applied_at {order}, l.command_id {order}
         limit $11"
    );
    let rows: Vec<Row> = sqlx::query_as(&query)
        .bind(filter.user_id)
        .bind(filter.track_id)
        .bind(filter.track_id)
        .bind(filter.unit_id.map(|unit| unit.to_string()))
        .bind(filter.kinds.as_deref())
        .bind(filter.passed)
        .bind(filter.since)
        .bind(filter.until)
        .bind(after.map(|(at, _)| at))
        .bind(after.map(|(_, id)| id))
        .bind(limit)
        .bind(filter.registration)
        .fetch_all(db)
        .await?;
    rows.into_iter().map(record).collect()
}
