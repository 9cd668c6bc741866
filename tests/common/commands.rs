//! Learners' commands as the workflow writes them, at fixed times, published and confirmed.

use async_nats::jetstream;
use chrono::{DateTime, Utc};
use learning_progress::db::tracks::Track;
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

/// The learner starts `track` at its first unit.
pub fn started(user: Uuid, track: &Track, seq: i64) -> ProgressCommand {
    let current_unit_id = Some(track.units[0].id);
    command(
        user,
        track.id,
        seq,
        Action::TrackStarted { current_unit_id },
    )
}

/// The learner completes the track's unit `index` and moves on to the next one, if any.
pub fn unit_done(user: Uuid, track: &Track, seq: i64, index: usize) -> ProgressCommand {
    let action = Action::UnitCompleted {
        unit_id: track.units[index].id,
        next_unit_id: track.units.get(index + 1).map(|unit| unit.id),
    };
    command(user, track.id, seq, action)
}

/// A learner's whole path through `track`: start, every unit, one assessment, completion.
pub fn path(user: Uuid, track: &Track) -> Vec<ProgressCommand> {
    let units: Vec<Uuid> = track.units.iter().map(|u| u.id).collect();
    let mut commands = vec![command(
        user,
        track.id,
        1,
        Action::TrackStarted {
            current_unit_id: Some(units[0]),
        },
    )];
    for (i, unit) in units.iter().enumerate() {
        let seq = commands.len() as i64 + 1;
        commands.push(command(
            user,
            track.id,
            seq,
            Action::UnitCompleted {
                unit_id: *unit,
                next_unit_id: units.get(i + 1).copied(),
            },
        ));
    }
    let seq = commands.len() as i64 + 1;
    commands.push(command(
        user,
        track.id,
        seq,
        Action::AssessmentRecorded {
            unit_id: units[units.len() - 1],
            attempt_id: Uuid::new_v4(),
            score: 8.0,
            max_score: 10.0,
            passed: true,
        },
    ));
    let seq = commands.len() as i64 + 1;
    commands.push(command(user, track.id, seq, Action::TrackCompleted {}));
    commands
}

/// Publishes `command` and waits until JetStream stored it.
pub async fn publish(js: &jetstream::Context, nats: &NatsConfig, command: &ProgressCommand) {
    publish_command(js, nats, command)
        .await
        .unwrap()
        .await
        .unwrap();
}
