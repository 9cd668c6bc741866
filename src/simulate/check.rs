//! Compares one learner's row and ledger with the model of the commands they caused.

use chrono::Utc;
use sqlx::PgPool;
use uuid::Uuid;

use super::script::{Step, expected_actions};
use crate::db::progress::get_user_progress;
use crate::db::tracks::Track;
use crate::model::{ProgressCommand, UserProgress};
use crate::workflow::{command_id, workflow_id};

/// Every difference between what is stored and what the model says, as readable lines.
pub async fn learner(
    pool: &PgPool,
    track: &Track,
    user: Uuid,
    steps: &[Step],
) -> Result<Vec<String>, sqlx::Error> {
    let id = workflow_id(user, track.id);
    let commands: Vec<ProgressCommand> = expected_actions(track, steps)
        .into_iter()
        .enumerate()
        .map(|(i, action)| {
            let seq = i as i64 + 1;
            ProgressCommand {
                command_id: command_id(&id, seq),
                user_id: user,
                track_id: track.id,
                seq,
                occurred_at: Utc::now(),
                action,
            }
        })
        .collect();
    let mut mismatches = Vec::new();
    let mut fail = |what: String| mismatches.push(format!("learner {user}: {what}"));

    let ledger: Vec<(i64, Uuid, String, String)> = sqlx::query_as(
        "select seq, command_id, kind, outcome from progress_ledger
         where user_id = $1 and track_id = $2 order by seq",
    )
    .bind(user)
    .bind(track.id)
    .fetch_all(pool)
    .await?;
    let expected_ledger: Vec<(i64, Uuid, String, String)> = commands
        .iter()
        .map(|c| {
            (
                c.seq,
                c.command_id,
                c.kind().to_owned(),
                "applied".to_owned(),
            )
        })
        .collect();
    if ledger != expected_ledger {
        fail(format!("ledger {ledger:?} != expected {expected_ledger:?}"));
    }

    let Some(row) = get_user_progress(pool, user, track.id)
        .await
        .map_err(|e| match e {
            crate::db::progress::ProgressError::Database(e) => e,
            other => sqlx::Error::Protocol(other.to_string()),
        })?
    else {
        fail("no progress row".to_owned());
        return Ok(mismatches);
    };
    let mut expected = UserProgress::empty(user, track.id, Utc::now());
    for command in &commands {
        expected.apply(command, Utc::now());
    }
    let attempts = |p: &UserProgress| -> Vec<(Uuid, Uuid, f64, f64, bool)> {
        p.assessment_results
            .iter()
            .flat_map(|(unit, a)| {
                a.attempts
                    .iter()
                    .map(|(id, a)| (*unit, *id, a.score, a.max_score, a.passed))
            })
            .collect()
    };
    let compare = [
        (
            "status",
            format!("{:?}", row.status),
            format!("{:?}", expected.status),
        ),
        (
            "completed_unit_ids",
            format!("{:?}", row.completed_unit_ids),
            format!("{:?}", expected.completed_unit_ids),
        ),
        (
            "current_unit_id",
            format!("{:?}", row.current_unit_id),
            format!("{:?}", expected.current_unit_id),
        ),
        (
            "last_seq",
            row.last_seq.to_string(),
            expected.last_seq.to_string(),
        ),
        (
            "version",
            row.version.to_string(),
            expected.version.to_string(),
        ),
        (
            "attempts",
            format!("{:?}", attempts(&row)),
            format!("{:?}", attempts(&expected)),
        ),
        (
            "completed_at set",
            row.completed_at.is_some().to_string(),
            expected.completed_at.is_some().to_string(),
        ),
    ];
    for (field, actual, wanted) in compare {
        if actual != wanted {
            fail(format!("{field}: stored {actual}, model {wanted}"));
        }
    }
    Ok(mismatches)
}
