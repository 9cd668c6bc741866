//! The workflow's I/O: publishing commands to JetStream and reading the projection back.
//!
//! Activity names are set explicitly because other SDKs call them by name, and the Rust
//! SDK's default would be `ProgressActivities::method`.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{
    self,
    context::{PublishError, PublishErrorKind},
    stream::LastRawMessageErrorKind,
};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use temporalio_common::RetryPolicy;
use temporalio_sdk::activities::{ActivityContext, ActivityError, activities};
use temporalio_sdk::{ActivityOptions, ApplicationFailure, LocalActivityOptions};
use uuid::Uuid;

use crate::messaging::{self, NatsConfig, is_permanent};
use crate::model::{Action, ProgressCommand, decode_command};

/// Holds the clients the activities use; the worker wraps it in an `Arc`.
pub struct ProgressActivities {
    pub jetstream: jetstream::Context,
    pub nats: NatsConfig,
    pub pool: PgPool,
}

/// Where JetStream stored a command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublishReceipt {
    pub stream: String,
    pub sequence: u64,
    /// JetStream had already stored this `Nats-Msg-Id` within its duplicate window.
    pub duplicate: bool,
}

/// A command reconcile publishes again, as a new copy (see
/// [`messaging::publish_command_copy`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Republish {
    pub command: ProgressCommand,
    /// Distinguishes this copy's `Nats-Msg-Id` from the original's and from other copies'.
    pub copy: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReconcileRequest {
    pub user_id: Uuid,
    pub track_id: Uuid,
    pub highest_seq: i64,
    /// The seqs to ask about; when absent (requests of older runs), all of `1..=highest_seq`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seqs: Option<Vec<i64>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResumeRequest {
    pub user_id: Uuid,
    pub track_id: Uuid,
}

/// How far the projection got for a learner: where a new run of the workflow continues.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResumePoint {
    /// The highest `seq` in the ledger, 0 when none.
    pub last_seq: i64,
    pub completed_unit_ids: Vec<Uuid>,
    /// The track's `units_version`; 0 while its units are those it was created with.
    #[serde(default)]
    pub units_version: i64,
    /// The track's units in order, once they changed (`units_version` > 0); else empty.
    #[serde(default)]
    pub unit_ids: Vec<Uuid>,
}

/// Why a command was not published.
#[derive(Debug, thiserror::Error)]
pub enum PublishFailure {
    /// NATS is down, slow or restarting: retrying will get through.
    #[error("publishing command {command_id} failed, will retry")]
    Transient {
        command_id: Uuid,
        #[source]
        source: PublishError,
    },
    /// JetStream refused it for a reason retrying cannot fix.
    #[error("JetStream will never accept command {command_id} (check the stream configuration)")]
    Permanent {
        command_id: Uuid,
        #[source]
        source: PublishError,
    },
    /// JetStream took the id for a duplicate, but the message it stored under it is another
    /// command: publishing this one under its id can never succeed.
    #[error(
        "command id {command_id} is already stored as another command (stream {stream}, \
         sequence {sequence}); this command would be dropped as its duplicate"
    )]
    Collision {
        command_id: Uuid,
        stream: String,
        sequence: u64,
    },
}

/// Publishes `command` and waits for JetStream's ack. Every retry carries the same
/// `Nats-Msg-Id`, so JetStream drops a re-publish within its duplicate window.
pub async fn publish(
    js: &jetstream::Context,
    config: &NatsConfig,
    command: &ProgressCommand,
) -> Result<PublishReceipt, PublishFailure> {
    publish_copy(js, config, command, None).await
}

/// [`publish`], as copy `copy` of the command when given (see
/// [`messaging::publish_command_copy`]); the retries of one copy share its id.
pub async fn publish_copy(
    js: &jetstream::Context,
    config: &NatsConfig,
    command: &ProgressCommand,
    copy: Option<i64>,
) -> Result<PublishReceipt, PublishFailure> {
    let classify = |source: PublishError| {
        let command_id = command.command_id;
        if is_permanent(&source) {
            PublishFailure::Permanent { command_id, source }
        } else {
            PublishFailure::Transient { command_id, source }
        }
    };
    let ack = messaging::publish_command_copy(js, config, command, copy)
        .await
        .map_err(classify)?
        .await
        .map_err(classify)?;
    if ack.duplicate {
        check_stored(js, command, &ack.stream, ack.sequence).await?;
    }
    Ok(PublishReceipt {
        stream: ack.stream,
        sequence: ack.sequence,
        duplicate: ack.duplicate,
    })
}

/// A duplicate answer is success only when what JetStream stored under the id is this same
/// command (a retry, or reconcile re-publishing it). The stored message may be gone already
/// (applied, or aged out), which says nothing against it.
async fn check_stored(
    js: &jetstream::Context,
    command: &ProgressCommand,
    stream: &str,
    sequence: u64,
) -> Result<(), PublishFailure> {
    let stored = match js.get_stream_no_info(stream).await {
        Ok(stream) => stream.get_raw_message(sequence).await.ok(),
        Err(_) => None,
    };
    let Some(stored) = stored else {
        return Ok(());
    };
    let ours = serde_json::to_vec(command).expect("commands always serialize");
    match stored.payload == ours {
        true => Ok(()),
        false => Err(PublishFailure::Collision {
            command_id: command.command_id,
            stream: stream.to_owned(),
            sequence,
        }),
    }
}

impl ProgressActivities {
    /// Publishes (a copy of) `command`; a failure no retry can fix is non-retryable, with a
    /// type name the workflow can tell apart.
    async fn publish_or_fail(
        &self,
        ctx: &ActivityContext,
        command: &ProgressCommand,
        copy: Option<i64>,
    ) -> Result<PublishReceipt, ActivityError> {
        let attempt = ctx.info().attempt;
        let failure = match publish_copy(&self.jetstream, &self.nats, command, copy).await {
            Ok(receipt) => return Ok(receipt),
            Err(failure) => failure,
        };
        let (type_name, permanent) = match &failure {
            PublishFailure::Permanent { .. } => ("UnpublishableCommand", true),
            PublishFailure::Collision { .. } => ("CommandIdCollision", true),
            PublishFailure::Transient { source, .. }
                if source.kind() == PublishErrorKind::StreamNotFound
                    && attempt >= NO_STREAM_ATTEMPTS =>
            {
                ("NoStream", true)
            }
            PublishFailure::Transient { .. } => ("", false),
        };
        let message = format!("{:#}", anyhow::Error::from(failure));
        if permanent {
            tracing::error!(command.id = %command.command_id, attempt, error = %message, "command cannot be published");
            return Err(ActivityError::application(
                ApplicationFailure::builder(message)
                    .type_name(type_name.to_owned())
                    .non_retryable(true)
                    .build(),
            ));
        }
        tracing::warn!(
            command.id = %command.command_id,
            attempt,
            error = %message,
            "publishing a command failed; Temporal retries it"
        );
        Err(ActivityError::application(ApplicationFailure::new(message)))
    }
}

#[activities]
impl ProgressActivities {
    #[activity(name = "update_user_progress")]
    pub async fn update_user_progress(
        self: Arc<Self>,
        ctx: ActivityContext,
        command: ProgressCommand,
    ) -> Result<PublishReceipt, ActivityError> {
        self.publish_or_fail(&ctx, &command, None).await
    }

    /// Reconcile's re-publish of a command the projection lacks: a new copy, which JetStream
    /// stores even while the original's id is in its duplicate window.
    #[activity(name = "republish_command")]
    pub async fn republish_command(
        self: Arc<Self>,
        ctx: ActivityContext,
        request: Republish,
    ) -> Result<PublishReceipt, ActivityError> {
        self.publish_or_fail(&ctx, &request.command, Some(request.copy))
            .await
    }

    /// Which of the asked seqs (by default all of `1..=highest_seq`) the ledger lacks.
    #[activity(name = "reconcile_progress")]
    pub async fn reconcile_progress(
        self: Arc<Self>,
        _ctx: ActivityContext,
        request: ReconcileRequest,
    ) -> Result<Vec<i64>, ActivityError> {
        let asked: Vec<i64> = request
            .seqs
            .unwrap_or_else(|| (1..=request.highest_seq).collect());
        let applied: Vec<i64> = sqlx::query_scalar(
            "select seq from progress_ledger where user_id = $1 and track_id = $2 and seq = any($3)",
        )
        .bind(request.user_id)
        .bind(request.track_id)
        .bind(&asked)
        .fetch_all(&self.pool)
        .await?;
        let applied: std::collections::HashSet<i64> = applied.into_iter().collect();
        Ok(asked
            .into_iter()
            .filter(|seq| !applied.contains(seq))
            .collect())
    }

    /// Where a new run continues: after the highest seq ever allocated for the learner —
    /// the ledger's, or a higher one still waiting on the commands stream (published by a
    /// previous run, not applied yet) — with the units those commands complete.
    #[activity(name = "resume_progress")]
    pub async fn resume_progress(
        self: Arc<Self>,
        _ctx: ActivityContext,
        request: ResumeRequest,
    ) -> Result<ResumePoint, ActivityError> {
        let ledger_seq: i64 = sqlx::query_scalar(
            "select coalesce(max(seq), 0)::bigint from progress_ledger
             where user_id = $1 and track_id = $2",
        )
        .bind(request.user_id)
        .bind(request.track_id)
        .fetch_one(&self.pool)
        .await?;
        let completed_unit_ids: Option<Vec<Uuid>> = sqlx::query_scalar(
            "select completed_unit_ids from user_progress where user_id = $1 and track_id = $2",
        )
        .bind(request.user_id)
        .bind(request.track_id)
        .fetch_optional(&self.pool)
        .await?;
        let units_version: i64 =
            sqlx::query_scalar("select units_version from learning_tracks where id = $1")
                .bind(request.track_id)
                .fetch_optional(&self.pool)
                .await?
                .unwrap_or(0);
        let unit_ids = match units_version {
            0 => Vec::new(),
            _ => crate::db::tracks::unit_ids(&self.pool, request.track_id).await?,
        };
        let mut resumed = ResumePoint {
            last_seq: ledger_seq,
            completed_unit_ids: completed_unit_ids.unwrap_or_default(),
            units_version,
            unit_ids,
        };
        for command in self.unapplied(&request, ledger_seq).await? {
            resumed.last_seq = resumed.last_seq.max(command.seq);
            if let Action::UnitCompleted { unit_id, .. } = command.action {
                resumed.completed_unit_ids.push(unit_id);
            }
        }
        Ok(resumed)
    }
}

/// Most messages of one learner's subject read while resuming; a path publishes far fewer.
const MAX_RESUME_SCAN: usize = 100_000;

impl ProgressActivities {
    /// The workflow's commands on the learner's subject with a seq above `applied`: published,
    /// not yet in the ledger. Only commands carrying the workflow's own id for their seq
    /// count, so a forged message cannot move where the path resumes.
    async fn unapplied(
        &self,
        request: &ResumeRequest,
        applied: i64,
    ) -> Result<Vec<ProgressCommand>, ActivityError> {
        let subject = self.nats.command_subject(request.user_id, request.track_id);
        let workflow = super::workflow_id(request.user_id, request.track_id);
        let stream = self
            .jetstream
            .get_stream_no_info(&self.nats.commands_stream)
            .await
            .map_err(anyhow::Error::from)?;
        let ours = |payload: &[u8]| {
            decode_command(payload)
                .ok()
                .filter(|c| c.command_id == super::command_id(&workflow, c.seq) && c.seq > applied)
        };
        // the usual case, everything applied, costs one lookup
        match stream.get_last_raw_message_by_subject(&subject).await {
            Ok(last) if ours(&last.payload).is_some() => {}
            Ok(_) => return Ok(Vec::new()),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => return Ok(Vec::new()),
            Err(e) => return Err(anyhow::Error::from(e).into()),
        }
        let mut found = Vec::new();
        let mut next = 1;
        for _ in 0..MAX_RESUME_SCAN {
            match stream
                .get_first_raw_message_by_subject(&subject, next)
                .await
            {
                Ok(message) => {
                    next = message.sequence + 1;
                    found.extend(ours(&message.payload));
                }
                Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => break,
                Err(e) => return Err(anyhow::Error::from(e).into()),
            }
        }
        Ok(found)
    }
}

/// Attempts while no stream answers before the publish fails for good (about five minutes with
/// [`publish_options`]): long enough for a leader election or a rolling restart, short enough
/// that a stream that was never created is reported.
const NO_STREAM_ATTEMPTS: u32 = 35;

/// Publishing runs as a local activity: inside the workflow task, with no activity task
/// round trip through the server, which roughly halves the history writes per command (the
/// dev server's persistence is what bounds throughput here). NATS being down is transient:
/// retry forever, backing off to one attempt every 10 s; backoffs past a few seconds become
/// workflow timers so the workflow task is not held open.
pub(super) fn publish_options() -> LocalActivityOptions {
    LocalActivityOptions::builder()
        .start_to_close_timeout(Duration::from_secs(15))
        .timer_backoff_threshold(Duration::from_secs(3))
        .retry_policy(
            RetryPolicy::builder()
                .initial_interval(Duration::from_millis(200))
                .backoff_coefficient(2.0)
                .maximum_interval(Duration::from_secs(10))
                .maximum_attempts(0)
                .build(),
        )
        .build()
}

/// The database being down is transient too; a read takes well under the timeout.
pub(super) fn reconcile_options() -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(30))
        .retry_policy(
            RetryPolicy::builder()
                .initial_interval(Duration::from_millis(500))
                .backoff_coefficient(2.0)
                .maximum_interval(Duration::from_secs(30))
                .maximum_attempts(0)
                .build(),
        )
        .build()
}
