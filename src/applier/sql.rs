//! The statements of a batch's transaction, each batched over the whole batch.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::batch::Key;
use crate::db::progress::ProgressRow;
pub(crate) use crate::db::progress::{lock_learners, write_rows};
use crate::model::{ProgressCommand, ProgressEvent, UserProgress};

/// Limits set on each batch's transaction, so an applier that lost its network cannot hold a
/// learner's lock until TCP notices, and a stuck statement fails (and is retried) instead of
/// stalling the pipeline. Set per transaction (`set local`), which transaction poolers keep.
#[derive(Debug, Clone)]
pub(crate) struct Timeouts {
    pub statement: Duration,
    pub lock: Duration,
    pub idle_in_transaction: Duration,
}

pub(super) async fn set_timeouts(
    tx: &mut Transaction<'_, Postgres>,
    timeouts: &Timeouts,
) -> Result<(), sqlx::Error> {
    let ms = |d: Duration| format!("{}ms", d.as_millis());
    sqlx::query(
        "select set_config('statement_timeout', $1, true), set_config('lock_timeout', $2, true),
                set_config('idle_in_transaction_session_timeout', $3, true)",
    )
    .bind(ms(timeouts.statement))
    .bind(ms(timeouts.lock))
    .bind(ms(timeouts.idle_in_transaction))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// When each erased learner among `keys` was erased; learners never erased are absent.
pub(super) async fn erased_learners(
    tx: &mut Transaction<'_, Postgres>,
    keys: &[Key],
) -> Result<HashMap<Uuid, DateTime<Utc>>, sqlx::Error> {
    let users: Vec<Uuid> = keys.iter().map(|(user, _)| *user).collect();
    let rows: Vec<(Uuid, DateTime<Utc>)> =
        sqlx::query_as("select user_id, erased_at from erased_learners where user_id = any($1)")
            .bind(users)
            .fetch_all(&mut **tx)
            .await?;
    Ok(rows.into_iter().collect())
}

pub(crate) async fn load_rows(
    tx: &mut Transaction<'_, Postgres>,
    keys: &[Key],
) -> Result<HashMap<Key, UserProgress>, sqlx::Error> {
    let (users, tracks): (Vec<Uuid>, Vec<Uuid>) = keys.iter().copied().unzip();
    // `for update` as well: a row lock beside the advisory one costs little and keeps the rows
    // safe from any writer that forgets the advisory lock
    let rows: Vec<ProgressRow> = sqlx::query_as(
        "select p.* from user_progress p
         join unnest($1::uuid[], $2::uuid[]) as k (u, t) on p.user_id = k.u and p.track_id = k.t
         order by p.user_id, p.track_id
         for update of p",
    )
    .bind(users)
    .bind(tracks)
    .fetch_all(&mut **tx)
    .await?;
    rows.into_iter()
        .map(|row| {
            let progress =
                UserProgress::try_from(row).map_err(|e| sqlx::Error::Decode(e.into()))?;
            Ok(((progress.user_id, progress.track_id), progress))
        })
        .collect()
}

/// The highest seq in each learner's ledger; learners without entries are absent.
pub(super) async fn applied_through(
    tx: &mut Transaction<'_, Postgres>,
    keys: &[Key],
) -> Result<HashMap<Key, i64>, sqlx::Error> {
    let (users, tracks): (Vec<Uuid>, Vec<Uuid>) = keys.iter().copied().unzip();
    let rows: Vec<(Uuid, Uuid, i64)> = sqlx::query_as(
        "select k.u, k.t, last.seq
         from unnest($1::uuid[], $2::uuid[]) as k (u, t)
         cross join lateral (
             select seq from progress_ledger l
             where l.user_id = k.u and l.track_id = k.t
             order by seq desc limit 1
         ) as last",
    )
    .bind(users)
    .bind(tracks)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows.into_iter().map(|(u, t, seq)| ((u, t), seq)).collect())
}

/// Why a command was rejected: a short code (the dead letter's subject) and the full reason.
#[derive(Debug, Clone)]
pub struct Rejection {
    pub code: String,
    pub reason: String,
}

/// A ledger entry that shares an id, or a learner's seq, with a command of the batch.
pub(super) struct LedgerEntry {
    pub command_id: Uuid,
    pub user_id: Uuid,
    pub track_id: Uuid,
    pub seq: i64,
    pub outcome: String,
    pub rejection: Option<Rejection>,
    /// The command as stored; `None` when it no longer decodes (then it is not compared).
    pub payload: Option<ProgressCommand>,
}

type EntryRow = (
    Uuid,
    Uuid,
    Uuid,
    i64,
    String,
    Option<String>,
    Option<String>,
    Json<serde_json::Value>,
);

pub(super) async fn load_ledger(
    tx: &mut Transaction<'_, Postgres>,
    commands: &[ProgressCommand],
) -> Result<Vec<LedgerEntry>, sqlx::Error> {
    let ids: Vec<Uuid> = commands.iter().map(|c| c.command_id).collect();
    let users: Vec<Uuid> = commands.iter().map(|c| c.user_id).collect();
    let tracks: Vec<Uuid> = commands.iter().map(|c| c.track_id).collect();
    let seqs: Vec<i64> = commands.iter().map(|c| c.seq).collect();
    let rows: Vec<EntryRow> = sqlx::query_as(
        "select command_id, user_id, track_id, seq, outcome, reason_code, reason, payload
         from progress_ledger where command_id = any($1)
         union
         select l.command_id, l.user_id, l.track_id, l.seq, l.outcome, l.reason_code, l.reason,
                l.payload
         from unnest($2::uuid[], $3::uuid[], $4::bigint[]) as k (u, t, s)
         join progress_ledger l on l.user_id = k.u and l.track_id = k.t and l.seq = k.s",
    )
    .bind(ids)
    .bind(users)
    .bind(tracks)
    .bind(seqs)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(command_id, user_id, track_id, seq, outcome, code, reason, payload)| LedgerEntry {
                command_id,
                user_id,
                track_id,
                seq,
                rejection: (outcome == "rejected").then(|| Rejection {
                    // entries older than the reason code were all unit or track refusals
                    code: code.unwrap_or_else(|| "rejected".to_owned()),
                    reason: reason.unwrap_or_default(),
                }),
                outcome,
                payload: serde_json::from_value(payload.0).ok(),
            },
        )
        .collect())
}

/// One `progress_ledger` row to insert.
pub struct LedgerRow<'a> {
    pub command: &'a ProgressCommand,
    pub outcome: &'static str,
    pub rejection: Option<Rejection>,
    pub version_after: Option<i64>,
}

/// Records the batch's commands with one batched insert. Every id was checked against the
/// ledger under the learners' locks, so nothing here conflicts; should it anyway, the insert
/// fails rather than dropping a row.
pub async fn insert_ledger(
    tx: &mut Transaction<'_, Postgres>,
    rows: &[LedgerRow<'_>],
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let column = |f: fn(&LedgerRow<'_>) -> Uuid| rows.iter().map(f).collect::<Vec<_>>();
    let rejection = |f: fn(&Rejection) -> &str| {
        rows.iter()
            .map(|r| r.rejection.as_ref().map(|x| f(x).to_owned()))
            .collect::<Vec<_>>()
    };
    sqlx::query(
        "insert into progress_ledger (command_id, user_id, track_id, seq, kind, payload,
             occurred_at, applied_at, outcome, reason_code, reason, version_after)
         select l.command_id, l.user_id, l.track_id, l.seq, l.kind, l.payload, l.occurred_at, $8,
                l.outcome, l.reason_code, l.reason, l.version_after
         from unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::bigint[], $5::text[], $6::jsonb[],
                     $7::timestamptz[], $9::text[], $10::text[], $11::text[], $12::bigint[])
              as l (command_id, user_id, track_id, seq, kind, payload, occurred_at,
                    outcome, reason_code, reason, version_after)",
    )
    .bind(column(|r| r.command.command_id))
    .bind(column(|r| r.command.user_id))
    .bind(column(|r| r.command.track_id))
    .bind(rows.iter().map(|r| r.command.seq).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.command.kind()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| Json(r.command)).collect::<Vec<_>>())
    .bind(
        rows.iter()
            .map(|r| r.command.occurred_at)
            .collect::<Vec<_>>(),
    )
    .bind(now)
    .bind(rows.iter().map(|r| r.outcome).collect::<Vec<_>>())
    .bind(rejection(|r| &r.code))
    .bind(rejection(|r| &r.reason))
    .bind(rows.iter().map(|r| r.version_after).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// One learner's ledger up to a seq, in seq order: (command, outcome, applied_at).
pub(crate) type History = Vec<(ProgressCommand, String, DateTime<Utc>)>;

/// The ledgers of `through` learners, each up to its seq: enough to rebuild the snapshot any
/// of those commands produced.
pub(crate) async fn histories(
    conn: &mut PgConnection,
    through: &HashMap<Key, i64>,
) -> Result<HashMap<Key, History>, sqlx::Error> {
    if through.is_empty() {
        return Ok(HashMap::new());
    }
    let users: Vec<Uuid> = through.keys().map(|k| k.0).collect();
    let tracks: Vec<Uuid> = through.keys().map(|k| k.1).collect();
    let seqs: Vec<i64> = through.values().copied().collect();
    type Row = (Uuid, Uuid, Json<serde_json::Value>, String, DateTime<Utc>);
    let rows: Vec<Row> = sqlx::query_as(
        "select l.user_id, l.track_id, l.payload, l.outcome, l.applied_at
         from unnest($1::uuid[], $2::uuid[], $3::bigint[]) as k (u, t, s)
         join progress_ledger l on l.user_id = k.u and l.track_id = k.t and l.seq <= k.s
         order by l.user_id, l.track_id, l.seq",
    )
    .bind(users)
    .bind(tracks)
    .bind(seqs)
    .fetch_all(conn)
    .await?;
    let mut histories: HashMap<Key, History> = HashMap::new();
    for (user, track, payload, outcome, applied_at) in rows {
        let command: ProgressCommand =
            serde_json::from_value(payload.0).map_err(|e| sqlx::Error::Decode(e.into()))?;
        histories
            .entry((user, track))
            .or_default()
            .push((command, outcome, applied_at));
    }
    Ok(histories)
}

/// A learner's snapshot right after a change of the track's units, and the highest seq of
/// their ledger then: commands above it were applied on top of this snapshot.
pub(crate) struct ChangeBase {
    pub through_seq: i64,
    pub progress: UserProgress,
    pub total_units: i64,
    /// The units removed from the track by then, which later commands were applied without.
    pub removed: Vec<Uuid>,
}

/// The track changes of `through` learners made before each one's seq (in version order):
/// where the snapshots of those learners' later commands were built from.
pub(crate) async fn change_bases(
    conn: &mut PgConnection,
    through: &HashMap<Key, i64>,
) -> Result<HashMap<Key, Vec<ChangeBase>>, sqlx::Error> {
    if through.is_empty() {
        return Ok(HashMap::new());
    }
    let users: Vec<Uuid> = through.keys().map(|k| k.0).collect();
    let tracks: Vec<Uuid> = through.keys().map(|k| k.1).collect();
    let seqs: Vec<i64> = through.values().copied().collect();
    let rows: Vec<(i64, Json<ProgressEvent>, Vec<Uuid>)> = sqlx::query_as(
        "select e.through_seq, e.event,
                array(select c.unit_id from track_changes c
                      where c.track_id = e.track_id and c.kind = 'unit_removed'
                        and c.units_version <= e.units_version)
         from unnest($1::uuid[], $2::uuid[], $3::bigint[]) as k (u, t, s)
         join track_change_events e on e.user_id = k.u and e.track_id = k.t and e.through_seq < k.s
         order by e.user_id, e.track_id, e.version",
    )
    .bind(users)
    .bind(tracks)
    .bind(seqs)
    .fetch_all(conn)
    .await?;
    let mut bases: HashMap<Key, Vec<ChangeBase>> = HashMap::new();
    for (through_seq, Json(event), removed) in rows {
        let progress = event.progress.progress;
        bases
            .entry((progress.user_id, progress.track_id))
            .or_default()
            .push(ChangeBase {
                through_seq,
                total_units: event.progress.total_units,
                progress,
                removed,
            });
    }
    Ok(bases)
}

/// Records that the events of the commands `ids` are stored in the events stream.
pub(super) async fn mark_announced(pool: &PgPool, ids: &[Uuid]) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update progress_ledger set announced = true where command_id = any($1) and not announced",
    )
    .bind(ids)
    .execute(pool)
    .await?;
    Ok(())
}

/// Up to `limit` applied commands whose event nobody confirmed within `grace` of being
/// applied, oldest first.
pub(super) async fn unannounced(
    pool: &PgPool,
    grace: Duration,
    limit: i64,
) -> Result<Vec<ProgressCommand>, sqlx::Error> {
    let rows: Vec<(Json<serde_json::Value>,)> = sqlx::query_as(
        "select payload from progress_ledger
         where outcome = 'applied' and not announced
           and applied_at < now() - make_interval(secs => $1)
         order by applied_at
         limit $2",
    )
    .bind(grace.as_secs_f64())
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|(payload,)| {
            serde_json::from_value(payload.0).map_err(|e| sqlx::Error::Decode(e.into()))
        })
        .collect()
}
