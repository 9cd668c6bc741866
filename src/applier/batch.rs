//! One batch of decoded commands applied in one PostgreSQL transaction.
//!
//! Under per-learner advisory locks taken in key order (so concurrent appliers cannot
//! deadlock), it reads the affected rows and the ledger, merges each new command with the pure
//! [`UserProgress::apply`], and writes the changed rows and the ledger rows with one batched
//! statement each. The ledger makes it idempotent: a command whose id is already there is a
//! duplicate and changes nothing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::db::progress::ProgressRow;
use crate::db::tracks;
use crate::model::{ProgressCommand, ProgressEvent, ProgressView, UserProgress};

type Key = (Uuid, Uuid);

/// What happened to one command of the batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// It changed the row; `event` announces the snapshot right after it.
    Applied(Box<ProgressEvent>),
    /// It was new but changed nothing (e.g. a unit completed twice under two ids).
    Noop,
    /// Its id was in the ledger already. `event` re-announces the current snapshot under the
    /// same id when the original was applied, in case that event was never published.
    Duplicate(Option<Box<ProgressEvent>>),
    /// It can never apply: recorded in the ledger as rejected and dead-lettered.
    Rejected { reason: &'static str, error: String },
}

/// Applies `commands` (in stream order) and returns one outcome per command, same order.
pub async fn apply_batch(
    pool: &PgPool,
    track_units: &TrackUnits,
    turn: &LockTurn,
    commands: &[ProgressCommand],
) -> Result<Vec<Outcome>, sqlx::Error> {
    let now = crate::model::now_micros();
    let mut tx = pool.begin().await?;
    let keys: Vec<Key> = commands
        .iter()
        .map(|c| (c.user_id, c.track_id))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    turn.wait().await;
    lock_learners(&mut tx, &keys).await?;
    turn.taken();
    let mut rows = load_rows(&mut tx, &keys).await?;
    let seen = load_ledger(&mut tx, commands).await?;
    let units = track_units.for_batch(&mut tx, commands).await?;

    let mut outcomes = Vec::with_capacity(commands.len());
    let mut ledger = Vec::with_capacity(commands.len());
    let mut changed: HashSet<Key> = HashSet::new();
    let mut in_batch: HashSet<Uuid> = HashSet::new();
    for command in commands {
        let key = (command.user_id, command.track_id);
        let total_units = units.get(&command.track_id).map_or(0, |u| u.len() as i64);
        if let Some(outcome) = seen.get(&command.command_id) {
            let replay = (outcome == "applied")
                .then(|| rows.get(&key))
                .flatten()
                .map(|row| Box::new(event(command, row.clone(), total_units, now)));
            outcomes.push(Outcome::Duplicate(replay));
            continue;
        }
        if !in_batch.insert(command.command_id) {
            outcomes.push(Outcome::Duplicate(None));
            continue;
        }
        if let Err((reason, error)) =
            check_units(command, units.get(&command.track_id).map(|u| &**u))
        {
            ledger.push(LedgerRow::new(
                command,
                "rejected",
                Some(error.clone()),
                None,
            ));
            outcomes.push(Outcome::Rejected { reason, error });
            continue;
        }
        let row = rows.entry(key).or_insert_with(|| {
            UserProgress::empty(command.user_id, command.track_id, command.occurred_at)
        });
        if row.apply(command, now) {
            changed.insert(key);
            ledger.push(LedgerRow::new(command, "applied", None, Some(row.version)));
            outcomes.push(Outcome::Applied(Box::new(event(
                command,
                row.clone(),
                total_units,
                now,
            ))));
        } else {
            let version = (row.version > 0).then_some(row.version);
            ledger.push(LedgerRow::new(command, "noop", None, version));
            outcomes.push(Outcome::Noop);
        }
    }

    let changed_rows: Vec<&UserProgress> = changed.iter().map(|k| &rows[k]).collect();
    upsert_rows(&mut tx, &changed_rows).await?;
    insert_ledger(&mut tx, &ledger, now).await?;
    tx.commit().await?;
    Ok(outcomes)
}

/// A batch's place among batches committing at once: it takes its learners' locks only after
/// the batch pulled before it holds theirs, so for a learner in both the earlier batch commits
/// first, and versions follow the stream. (A batch that fails and retries takes its locks
/// again, possibly after a later batch: then the row is still right, only that learner's
/// events may leave out of version order, which readers ordering by version absorb.)
#[derive(Debug, Default)]
pub struct LockTurn {
    previous: Option<watch::Receiver<bool>>,
    mine: Option<watch::Sender<bool>>,
}

impl LockTurn {
    /// The turn after `previous` (a batch's locks-taken signal), and this turn's own signal.
    pub fn after(previous: Option<watch::Receiver<bool>>) -> (LockTurn, watch::Receiver<bool>) {
        let (mine, locked) = watch::channel(false);
        let turn = LockTurn {
            previous,
            mine: Some(mine),
        };
        (turn, locked)
    }

    async fn wait(&self) {
        if let Some(previous) = &self.previous {
            // a batch that ended without locking (shutdown) drops its sender: go ahead
            let _ = previous.clone().wait_for(|locked| *locked).await;
        }
    }

    fn taken(&self) {
        if let Some(mine) = &self.mine {
            mine.send_replace(true);
        }
    }
}

/// The unit sets of the tracks seen so far, so a batch does not read them every time.
/// Tracks are a small catalogue whose units do not change under a running path; a set that
/// would reject a command is re-read first, so a unit added to a track is never refused
/// because of a stale set.
#[derive(Debug, Default)]
pub struct TrackUnits {
    known: Mutex<HashMap<Uuid, Arc<HashSet<Uuid>>>>,
}

type UnitSets = HashMap<Uuid, Arc<HashSet<Uuid>>>;

impl TrackUnits {
    /// The unit sets of the batch's tracks: cached ones, read ones where unknown or where a
    /// cached set would reject a command.
    async fn for_batch(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        commands: &[ProgressCommand],
    ) -> Result<UnitSets, sqlx::Error> {
        let mut sets = UnitSets::new();
        let mut read: HashSet<Uuid> = HashSet::new();
        {
            let known = self.known.lock().expect("track units lock poisoned");
            for command in commands {
                match known.get(&command.track_id) {
                    Some(units) if check_units(command, Some(units)).is_ok() => {
                        sets.insert(command.track_id, units.clone());
                    }
                    _ => {
                        read.insert(command.track_id);
                    }
                }
            }
        }
        if read.is_empty() {
            return Ok(sets);
        }
        let read: Vec<Uuid> = read.into_iter().collect();
        let fresh = tracks::unit_sets(&mut **tx, &read).await?;
        let mut known = self.known.lock().expect("track units lock poisoned");
        for track in read {
            match fresh.get(&track) {
                Some(units) => {
                    let units = Arc::new(units.clone());
                    known.insert(track, units.clone());
                    sets.insert(track, units);
                }
                None => {
                    known.remove(&track);
                    sets.remove(&track);
                }
            }
        }
        Ok(sets)
    }
}

fn event(
    command: &ProgressCommand,
    row: UserProgress,
    total_units: i64,
    now: DateTime<Utc>,
) -> ProgressEvent {
    ProgressEvent {
        event_id: command.command_id,
        kind: command.kind().to_owned(),
        version: row.version,
        occurred_at: command.occurred_at,
        applied_at: now,
        progress: ProgressView::new(row, total_units),
    }
}

fn check_units(
    command: &ProgressCommand,
    units: Option<&HashSet<Uuid>>,
) -> Result<(), (&'static str, String)> {
    let Some(units) = units else {
        return Err((
            "unknown_track",
            format!("track {} does not exist", command.track_id),
        ));
    };
    match command.unit_ids().into_iter().find(|u| !units.contains(u)) {
        Some(unit) => Err((
            "foreign_unit",
            format!("unit {unit} does not belong to track {}", command.track_id),
        )),
        None => Ok(()),
    }
}

/// Serialises appliers per learner, including learners that have no row yet.
async fn lock_learners(
    tx: &mut Transaction<'_, Postgres>,
    keys: &[Key],
) -> Result<(), sqlx::Error> {
    let (users, tracks): (Vec<Uuid>, Vec<Uuid>) = keys.iter().copied().unzip();
    sqlx::query(
        "select pg_advisory_xact_lock(hashtextextended(u::text || t::text, 0))
         from (select u, t from unnest($1::uuid[], $2::uuid[]) as k (u, t) order by u, t) as ordered",
    )
    .bind(users)
    .bind(tracks)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn load_rows(
    tx: &mut Transaction<'_, Postgres>,
    keys: &[Key],
) -> Result<HashMap<Key, UserProgress>, sqlx::Error> {
    let (users, tracks): (Vec<Uuid>, Vec<Uuid>) = keys.iter().copied().unzip();
    // `for update` as well: the CRUD layer writes rows under the row lock, not the advisory one
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

async fn load_ledger(
    tx: &mut Transaction<'_, Postgres>,
    commands: &[ProgressCommand],
) -> Result<HashMap<Uuid, String>, sqlx::Error> {
    let ids: Vec<Uuid> = commands.iter().map(|c| c.command_id).collect();
    let rows: Vec<(Uuid, String)> = sqlx::query_as(
        "select command_id, outcome from progress_ledger where command_id = any($1)",
    )
    .bind(ids)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows.into_iter().collect())
}

/// Writes the merged rows with one batched upsert; public so the benchmark's raw-write anchor
/// runs exactly this statement.
pub async fn upsert_rows(
    tx: &mut Transaction<'_, Postgres>,
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
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// One `progress_ledger` row to insert.
pub struct LedgerRow<'a> {
    command: &'a ProgressCommand,
    outcome: &'static str,
    reason: Option<String>,
    version_after: Option<i64>,
}

impl<'a> LedgerRow<'a> {
    pub fn new(
        command: &'a ProgressCommand,
        outcome: &'static str,
        reason: Option<String>,
        version_after: Option<i64>,
    ) -> LedgerRow<'a> {
        LedgerRow {
            command,
            outcome,
            reason,
            version_after,
        }
    }
}

/// Records the batch's commands with one batched insert (duplicates skipped).
pub async fn insert_ledger(
    tx: &mut Transaction<'_, Postgres>,
    rows: &[LedgerRow<'_>],
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let column = |f: fn(&LedgerRow<'_>) -> Uuid| rows.iter().map(f).collect::<Vec<_>>();
    sqlx::query(
        "insert into progress_ledger (command_id, user_id, track_id, seq, kind, payload,
             occurred_at, applied_at, outcome, reason, version_after)
         select l.command_id, l.user_id, l.track_id, l.seq, l.kind, l.payload, l.occurred_at, $8,
                l.outcome, l.reason, l.version_after
         from unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::bigint[], $5::text[], $6::jsonb[],
                     $7::timestamptz[], $9::text[], $10::text[], $11::bigint[])
              as l (command_id, user_id, track_id, seq, kind, payload, occurred_at,
                    outcome, reason, version_after)
         on conflict (command_id) do nothing",
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
    .bind(rows.iter().map(|r| r.reason.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.version_after).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Groups outcomes per learner for logs: how many applied, noop, duplicate, rejected.
pub fn tally(outcomes: &[Outcome]) -> BTreeMap<&'static str, usize> {
    let mut tally = BTreeMap::new();
    for outcome in outcomes {
        let name = match outcome {
            Outcome::Applied(_) => "applied",
            Outcome::Noop => "noop",
            Outcome::Duplicate(_) => "duplicate",
            Outcome::Rejected { .. } => "rejected",
        };
        *tally.entry(name).or_insert(0) += 1;
    }
    tally
}
