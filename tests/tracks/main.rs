//! Changing the units of a track learners are already on (`tracks add-unit`, `remove-unit`,
//! `move-unit`), through the real binary, against real PostgreSQL (a database per test), NATS
//! (streams per test), Temporal (a task queue per test), the applier and the read API.

#[path = "../common/mod.rs"]
mod common;

mod announcing;
mod catalogue;
mod concurrency;
mod history;
mod paths;

use std::time::Duration;

use async_nats::jetstream;
use common::binary::{cli, stderr, stdout};
use common::commands::{at, command, publish};
use common::{delete_streams, eventually, isolated_nats, read_stream, start_applier, stream_len};
use learning_progress::applier::ApplierConfig;
use learning_progress::db::progress::get_user_progress;
use learning_progress::db::tracks::{Track, create_track};
use learning_progress::messaging::{NatsConfig, publish_command};
use learning_progress::model::{Action, ProgressCommand, ProgressEvent, Status, UserProgress};
use learning_progress::track_changes::{self, Change};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);

/// Runs `args`, expects success, returns the `--json` summary.
async fn change(pool: &PgPool, nats: &NatsConfig, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    let output = cli(pool, nats, &args).await;
    assert!(output.status.success(), "{args:?}: {}", stderr(&output));
    serde_json::from_str(&stdout(&output)).unwrap()
}

/// Publishes a learner's commands (seq 1, 2, …) and waits until the applier applied them.
async fn drive(
    pool: &PgPool,
    js: &jetstream::Context,
    nats: &NatsConfig,
    user: Uuid,
    track: &Track,
    actions: Vec<Action>,
) -> UserProgress {
    let count = actions.len() as i64;
    for (i, action) in actions.into_iter().enumerate() {
        publish(js, nats, &command(user, track.id, i as i64 + 1, action)).await;
    }
    eventually(WAIT, "the learner's commands applied", || async {
        let applied: i64 = sqlx::query_scalar(
            "select count(*) from progress_ledger where user_id = $1 and track_id = $2",
        )
        .bind(user)
        .bind(track.id)
        .fetch_one(pool)
        .await
        .unwrap();
        (applied == count).then_some(())
    })
    .await;
    get_user_progress(pool, user, track.id)
        .await
        .unwrap()
        .unwrap()
}

/// A learner who completed the first `done` units of `track` (and the track, when all).
fn path(track: &Track, done: usize) -> Vec<Action> {
    let units: Vec<Uuid> = track.units.iter().map(|u| u.id).collect();
    let mut actions = vec![Action::TrackStarted {
        current_unit_id: Some(units[0]),
    }];
    for i in 0..done {
        actions.push(Action::UnitCompleted {
            unit_id: units[i],
            next_unit_id: units.get(i + 1).copied(),
        });
    }
    if done == units.len() {
        actions.push(Action::TrackCompleted {});
    }
    actions
}

async fn progress(pool: &PgPool, user: Uuid, track: Uuid) -> UserProgress {
    get_user_progress(pool, user, track).await.unwrap().unwrap()
}

async fn unit_count(pool: &PgPool, track: Uuid) -> i64 {
    sqlx::query_scalar("select count(*) from track_units where track_id = $1")
        .bind(track)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// The events on the stream after the first `skip`, decoded.
async fn events(js: &jetstream::Context, nats: &NatsConfig, count: usize) -> Vec<ProgressEvent> {
    read_stream(js, &nats.events_stream, count, WAIT)
        .await
        .iter()
        .map(|m| serde_json::from_slice(&m.payload).unwrap())
        .collect()
}
