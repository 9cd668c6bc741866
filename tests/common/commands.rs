//! Learners' commands as the workflow writes them, at fixed times, published and confirmed.

use async_nats::jetstream;
use chrono::{DateTime, Utc};
use learning_progress::messaging::{NatsConfig, publish_command};
use learning_progress::model::{Action, ProgressCommand};
use uuid::Uuid;

/// A fixed instant, `secs` seconds after a base in 2026: commands' times that never depend on
/// the clock.
pub fn at(secs: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(1_790_000_000 + secs, 0).unwrap()
}

/// A new command of the learner on the track, at `at(seq)`.
pub fn command(user: Uuid, track: Uuid, seq: i64, action: Action) -> ProgressCommand {
    ProgressCommand {
        command_id: Uuid::new_v4(),
        user_id: user,
        track_id: track,
        seq,
        occurred_at: at(seq),
        action,
    }
}

/// Publishes `command` and waits until JetStream stored it.
pub async fn publish(js: &jetstream::Context, nats: &NatsConfig, command: &ProgressCommand) {
    publish_command(js, nats, command)
        .await
        .unwrap()
        .await
        .unwrap();
}
