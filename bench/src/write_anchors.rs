//! The anchors of P1 and P2, on the same rows in a database of their own.
//!
//! - raw: the limit — the applier's own batched `unnest` statements writing the final rows
//!   and ledger rows of each batch, merged in memory, with no locks, reads or NATS.
//! - seed: the seed's design — one transaction per command (ledger insert, row created if
//!   missing, the atomic SQL merge of `update_user_progress`), as many callers as the pool has.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use sqlx::PgPool;
use uuid::Uuid;

use learning_progress::applier::sql::{LedgerRow, insert_ledger};
use learning_progress::db::progress::write_rows;
use learning_progress::db::progress::{UserProgressUpdate, update_user_progress_on};
use learning_progress::model::{ProgressCommand, UserProgress, now_micros};

/// Commands per second writing `commands` in batches of `batch_size`.
pub async fn raw(
    pool: &PgPool,
    commands: &[ProgressCommand],
    batch_size: usize,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut rows: HashMap<(Uuid, Uuid), UserProgress> = HashMap::new();
    for chunk in commands.chunks(batch_size) {
        let now = now_micros();
        let mut changed = HashSet::new();
        let mut ledger = Vec::with_capacity(chunk.len());
        for command in chunk {
            let key = (command.user_id, command.track_id);
            let row = rows.entry(key).or_insert_with(|| {
                UserProgress::empty(command.user_id, command.track_id, command.occurred_at)
            });
            if row.apply(command, now) {
                changed.insert(key);
                ledger.push(LedgerRow {
                    command,
                    outcome: "applied",
                    rejection: None,
                    version_after: Some(row.version),
                });
            } else {
                ledger.push(LedgerRow {
                    command,
                    outcome: "noop",
                    rejection: None,
                    version_after: Some(row.version),
                });
            }
        }
        let changed: Vec<&UserProgress> = changed.iter().map(|k| &rows[k]).collect();
        let mut tx = pool.begin().await?;
        write_rows(&mut tx, &changed).await?;
        insert_ledger(&mut tx, &ledger, now).await?;
        tx.commit().await?;
    }
    Ok(commands.len() as f64 / started.elapsed().as_secs_f64())
}

/// Commands per second applying each command in a transaction of its own, with `callers`
/// concurrent callers (command `i` goes to caller `i % callers`).
pub async fn seed(
    pool: &PgPool,
    commands: &[ProgressCommand],
    callers: usize,
) -> anyhow::Result<f64> {
    let commands = Arc::new(commands.to_vec());
    let started = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|caller| {
            let (pool, commands) = (pool.clone(), commands.clone());
            tokio::spawn(async move {
                for command in commands.iter().skip(caller).step_by(callers) {
                    seed_apply(&pool, command).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(commands.len() as f64 / started.elapsed().as_secs_f64())
}

async fn seed_apply(pool: &PgPool, command: &ProgressCommand) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    let new = sqlx::query(
        "insert into progress_ledger (command_id, user_id, track_id, seq, kind, payload,
             occurred_at, applied_at, outcome)
         values ($1, $2, $3, $4, $5, $6, $7, now(), 'applied')
         on conflict (command_id) do nothing",
    )
    .bind(command.command_id)
    .bind(command.user_id)
    .bind(command.track_id)
    .bind(command.seq)
    .bind(command.kind())
    .bind(sqlx::types::Json(command))
    .bind(command.occurred_at)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if new {
        sqlx::query(
            "insert into user_progress (user_id, track_id, started_at, updated_at)
             values ($1, $2, $3, now())
             on conflict (user_id, track_id) do nothing",
        )
        .bind(command.user_id)
        .bind(command.track_id)
        .bind(command.occurred_at)
        .execute(&mut *tx)
        .await?;
        let update = UserProgressUpdate::from(command);
        update_user_progress_on(&mut tx, command.user_id, command.track_id, &update).await?;
    }
    tx.commit().await?;
    Ok(())
}
