//! `verify` and `rebuild`: every `user_progress` row against the merge of its learner's ledger
//! ([`UserProgress::replay_since`]), and rewriting the rows that differ, in batches, while the
//! service runs.
//!
//! The ledger is the history; the row is its projection. A row differs when the pure merge
//! of the ledger's applied and no-op commands, in seq order, gives other content (versions
//! and `updated_at` aside: a rewrite bumps the version). Learners are visited in
//! (user, track) order, a batch at a time, each batch in one transaction: `verify` reads a
//! repeatable-read snapshot, so a row and its ledger are seen as one commit left them;
//! `rebuild` takes the same per-learner locks as the applier, so it never races a batch.

use std::collections::HashMap;

use async_nats::jetstream;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::applier::sql::{self as applier_sql, ChangeBase, History};
use crate::db::progress::ProgressRow;
use crate::messaging::{NatsConfig, publish_event};
use crate::model::{ProgressEvent, ProgressView, UserProgress};

type Key = (Uuid, Uuid);

/// Which learners to visit; both `None` is everyone.
#[derive(Debug, Clone, Copy, Default)]
pub struct Scope {
    pub user: Option<Uuid>,
    pub track: Option<Uuid>,
}

/// How one learner's row differs from the merge of their ledger.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Difference {
    /// The ledger holds applied commands and there is no row.
    MissingRow {
        user_id: Uuid,
        track_id: Uuid,
        merged: Box<UserProgress>,
    },
    /// A row with nothing applied in the ledger (written by another path, or a ledger
    /// entry removed): left as it is, since nothing says what it should be.
    NoHistory { user_id: Uuid, track_id: Uuid },
    /// Row and merge disagree; both are given.
    Content {
        user_id: Uuid,
        track_id: Uuid,
        stored: Box<UserProgress>,
        merged: Box<UserProgress>,
    },
}

impl Difference {
    pub(crate) fn key(&self) -> Key {
        match self {
            Difference::MissingRow {
                user_id, track_id, ..
            }
            | Difference::NoHistory { user_id, track_id }
            | Difference::Content {
                user_id, track_id, ..
            } => (*user_id, *track_id),
        }
    }

    /// One line for a person.
    pub(crate) fn describe(&self) -> String {
        let (user, track) = self.key();
        match self {
            Difference::MissingRow { .. } => {
                format!("user {user} track {track}: applied commands in the ledger, no row")
            }
            Difference::NoHistory { .. } => {
                format!("user {user} track {track}: a row, nothing applied in the ledger")
            }
            Difference::Content { stored, merged, .. } => {
                let mut fields = Vec::new();
                let mut differs = |name: &str, same: bool| {
                    if !same {
                        fields.push(name.to_owned());
                    }
                };
                differs("status", stored.status == merged.status);
                differs(
                    "current_unit_id",
                    stored.current_unit_id == merged.current_unit_id,
                );
                differs(
                    "completed_unit_ids",
                    stored.completed_unit_ids == merged.completed_unit_ids,
                );
                differs(
                    "assessment_results",
                    stored.assessment_results == merged.assessment_results,
                );
                differs("started_at", stored.started_at == merged.started_at);
                differs("completed_at", stored.completed_at == merged.completed_at);
                differs("last_seq", stored.last_seq == merged.last_seq);
                format!(
                    "user {user} track {track}: row differs from its ledger in {}",
                    fields.join(", ")
                )
            }
        }
    }
}

/// What a pass found and did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Learners visited (a row, applied commands, or both).
    pub learners: u64,
    pub differences: Vec<Difference>,
    /// Rows written (`rebuild` only, not with `--dry-run`).
    pub rewritten: u64,
    /// Of those, rows whose event JetStream did not confirm (caches learn of them when
    /// their entries expire).
    pub unannounced: u64,
}

/// Progress of a pass, after each batch: learners visited so far.
pub(crate) type OnBatch<'a> = &'a mut (dyn FnMut(u64) + Send);

/// Checks every learner in `scope`; changes nothing.
pub async fn verify(
    pool: &PgPool,
    scope: Scope,
    batch: usize,
    on_batch: OnBatch<'_>,
) -> Result<Report, sqlx::Error> {
    let mut report = Report::default();
    let mut after: Option<Key> = None;
    loop {
        let mut tx = pool.begin().await?;
        sqlx::query("set transaction isolation level repeatable read, read only")
            .execute(&mut *tx)
            .await?;
        let keys = next_keys(&mut tx, scope, after, batch).await?;
        let Some(last) = keys.last().copied() else {
            break;
        };
        let rows = read_rows(&mut tx, &keys).await?;
        let histories = read_histories(&mut tx, &keys).await?;
        let bases = read_bases(&mut tx, &keys).await?;
        tx.commit().await?;
        for key in &keys {
            report.differences.extend(compare(
                *key,
                rows.get(key),
                histories.get(key),
                last_base(&bases, key),
            ));
        }
        report.learners += keys.len() as u64;
        on_batch(report.learners);
        after = Some(last);
    }
    Ok(report)
}

/// Rewrites every row in `scope` that differs from the merge of its ledger (and writes the
/// rows that are missing), each with the next version, then announces each rewritten row
/// with a `rebuilt` event. With `dry_run`, reports what it would rewrite and writes nothing.
pub async fn rebuild(
    pool: &PgPool,
    events: Option<(&jetstream::Context, &NatsConfig)>,
    scope: Scope,
    batch: usize,
    dry_run: bool,
    on_batch: OnBatch<'_>,
) -> Result<Report, RebuildError> {
    let mut report = Report::default();
    let mut after: Option<Key> = None;
    loop {
        let mut tx = pool.begin().await?;
        let keys = next_keys(&mut tx, scope, after, batch).await?;
        let Some(last) = keys.last().copied() else {
            break;
        };
        // the applier's locks, in its order: no batch applies to these learners meanwhile
        applier_sql::lock_learners(&mut tx, &keys).await?;
        let rows = applier_sql::load_rows(&mut tx, &keys).await?;
        let histories = read_histories(&mut tx, &keys).await?;
        let bases = read_bases(&mut tx, &keys).await?;
        let now = crate::model::now_micros();
        let mut rewrites = Vec::new();
        for key in &keys {
            let base = last_base(&bases, key);
            let Some(difference) = compare(*key, rows.get(key), histories.get(key), base) else {
                continue;
            };
            if let Some(row) = rewrite(&difference, now) {
                rewrites.push(row);
            }
            report.differences.push(difference);
        }
        if dry_run || rewrites.is_empty() {
            tx.rollback().await?;
        } else {
            applier_sql::write_rows(&mut tx, &rewrites.iter().collect::<Vec<_>>()).await?;
            tx.commit().await?;
            report.rewritten += rewrites.len() as u64;
            if let Some((js, nats)) = events {
                report.unannounced += announce(pool, js, nats, &rewrites, now).await?;
            }
        }
        report.learners += keys.len() as u64;
        on_batch(report.learners);
        after = Some(last);
    }
    Ok(report)
}

#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("the database")]
    Database(#[from] sqlx::Error),
}

/// The row to write for a difference: the merge, at the version after the stored one.
fn rewrite(difference: &Difference, now: DateTime<Utc>) -> Option<UserProgress> {
    match difference {
        Difference::NoHistory { .. } => None,
        // exactly the row the applier wrote
        Difference::MissingRow { merged, .. } => Some((**merged).clone()),
        Difference::Content { stored, merged, .. } => Some(UserProgress {
            version: stored.version.max(merged.version) + 1,
            updated_at: now,
            ..(**merged).clone()
        }),
    }
}

/// One learner: nothing, or how the row differs from the merge of the history.
fn compare(
    key: Key,
    row: Option<&UserProgress>,
    history: Option<&History>,
    base: Option<&ChangeBase>,
) -> Option<Difference> {
    // a change of the track's units rewrote the row: the merge starts from what it wrote
    let after = base.map_or(0, |b| b.through_seq);
    let merged = history.and_then(|history| {
        UserProgress::replay_since(
            base.map(|b| b.progress.clone()),
            base.map_or(&[][..], |b| &b.removed[..]),
            history
                .iter()
                .filter(|(command, outcome, _)| outcome != "rejected" && command.seq > after)
                .map(|(command, _, applied_at)| (command, *applied_at)),
        )
    });
    let (user_id, track_id) = key;
    match (row, merged) {
        (None, None) => None,
        (None, Some(merged)) => Some(Difference::MissingRow {
            user_id,
            track_id,
            merged: Box::new(merged),
        }),
        (Some(_), None) => Some(Difference::NoHistory { user_id, track_id }),
        (Some(stored), Some(merged)) if stored.content_eq(&merged) => None,
        (Some(stored), Some(merged)) => Some(Difference::Content {
            user_id,
            track_id,
            stored: Box::new(stored.clone()),
            merged: Box::new(merged),
        }),
    }
}

/// The next `batch` learners after `after`: those with a row and those with a command in
/// the ledger that was not rejected, each once, in (user, track) order.
async fn next_keys(
    conn: &mut PgConnection,
    scope: Scope,
    after: Option<Key>,
    batch: usize,
) -> Result<Vec<Key>, sqlx::Error> {
    let (after_user, after_track) = after.unwrap_or((Uuid::nil(), Uuid::nil()));
    let inclusive = after.is_none();
    sqlx::query_as(
        "(select user_id, track_id from user_progress
          where ($1::uuid is null or user_id = $1) and ($2::uuid is null or track_id = $2)
            and ((user_id, track_id) > ($3, $4) or ($5 and (user_id, track_id) = ($3, $4)))
          order by user_id, track_id limit $6)
         union
         (select distinct user_id, track_id from progress_ledger
          where ($1::uuid is null or user_id = $1) and ($2::uuid is null or track_id = $2)
            and ((user_id, track_id) > ($3, $4) or ($5 and (user_id, track_id) = ($3, $4)))
            and outcome <> 'rejected'
          order by user_id, track_id limit $6)
         order by user_id, track_id limit $6",
    )
    .bind(scope.user)
    .bind(scope.track)
    .bind(after_user)
    .bind(after_track)
    .bind(inclusive)
    .bind(i64::try_from(batch).unwrap_or(i64::MAX))
    .fetch_all(conn)
    .await
}

async fn read_rows(
    conn: &mut PgConnection,
    keys: &[Key],
) -> Result<HashMap<Key, UserProgress>, sqlx::Error> {
    let (users, tracks): (Vec<Uuid>, Vec<Uuid>) = keys.iter().copied().unzip();
    let rows: Vec<ProgressRow> = sqlx::query_as(
        "select p.* from user_progress p
         join unnest($1::uuid[], $2::uuid[]) as k (u, t) on p.user_id = k.u and p.track_id = k.t",
    )
    .bind(users)
    .bind(tracks)
    .fetch_all(conn)
    .await?;
    rows.into_iter()
        .map(|row| {
            let progress =
                UserProgress::try_from(row).map_err(|e| sqlx::Error::Decode(e.into()))?;
            Ok(((progress.user_id, progress.track_id), progress))
        })
        .collect()
}

fn last_base<'a>(bases: &'a HashMap<Key, Vec<ChangeBase>>, key: &Key) -> Option<&'a ChangeBase> {
    bases.get(key).and_then(|b| b.last())
}

/// Each learner's snapshots after the changes of their track's units, oldest first.
async fn read_bases(
    conn: &mut PgConnection,
    keys: &[Key],
) -> Result<HashMap<Key, Vec<ChangeBase>>, sqlx::Error> {
    let whole: HashMap<Key, i64> = keys.iter().map(|key| (*key, i64::MAX)).collect();
    applier_sql::change_bases(conn, &whole).await
}

async fn read_histories(
    conn: &mut PgConnection,
    keys: &[Key],
) -> Result<HashMap<Key, History>, sqlx::Error> {
    let whole: HashMap<Key, i64> = keys.iter().map(|key| (*key, i64::MAX)).collect();
    applier_sql::histories(conn, &whole).await
}

/// Publishes a `rebuilt` event per rewritten row and waits for JetStream's acks; returns how
/// many were not confirmed. The event id is derived from the learner and the new version,
/// so announcing one rewrite twice stores it once.
async fn announce(
    pool: &PgPool,
    js: &jetstream::Context,
    nats: &NatsConfig,
    rows: &[UserProgress],
    now: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    let tracks: Vec<Uuid> = rows.iter().map(|row| row.track_id).collect();
    let totals: HashMap<Uuid, i64> = crate::db::tracks::unit_sets(pool, &tracks)
        .await?
        .into_iter()
        .map(|(track, units)| (track, units.len() as i64))
        .collect();
    let mut acks = Vec::with_capacity(rows.len());
    for row in rows {
        let event = ProgressEvent {
            event_id: rebuilt_event_id(row.user_id, row.track_id, row.version),
            kind: REBUILT.to_owned(),
            version: row.version,
            occurred_at: now,
            applied_at: now,
            progress: ProgressView::new(
                row.clone(),
                totals.get(&row.track_id).copied().unwrap_or(0),
            ),
        };
        acks.push(publish_event(js, nats, &event).await);
    }
    let mut unconfirmed = 0;
    for ack in acks {
        let confirmed = match ack {
            Ok(ack) => ack.await.is_ok(),
            Err(_) => false,
        };
        if !confirmed {
            unconfirmed += 1;
        }
    }
    if unconfirmed > 0 {
        tracing::warn!(
            unconfirmed,
            "rewritten rows whose event JetStream did not confirm; caches holding them \
             refresh when their entries expire"
        );
    }
    Ok(unconfirmed)
}

/// The `type` of the event a rewrite announces.
pub const REBUILT: &str = "rebuilt";

/// Rewrite events' ids: a name-based uuid of the learner and the version the rewrite made.
pub(crate) fn rebuilt_event_id(user: Uuid, track: Uuid, version: i64) -> Uuid {
    const NAMESPACE: Uuid = Uuid::from_u128(0x5d0c_7a1e_92b4_4c1f_8e3a_61f0_b2d9_4e77);
    Uuid::new_v5(
        &NAMESPACE,
        format!("rebuilt/{user}/{track}/{version}").as_bytes(),
    )
}
