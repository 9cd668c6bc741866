//! The workflow's I/O: publishing commands to JetStream and reading the projection back.
//!
//! Activity names are set explicitly because other SDKs call them by name, and the Rust
//! SDK's default would be `ProgressActivities::method`.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{
    self,
    context::{PublishError, PublishErrorKind},
};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use temporalio_common::RetryPolicy;
use temporalio_sdk::activities::{ActivityContext, ActivityError, activities};
use temporalio_sdk::{ActivityOptions, ApplicationFailure, LocalActivityOptions};
use uuid::Uuid;

use crate::messaging::{self, NatsConfig};
use crate::model::ProgressCommand;

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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReconcileRequest {
    pub user_id: Uuid,
    pub track_id: Uuid,
    pub highest_seq: i64,
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
}

/// Publishes `command` and waits for JetStream's ack. Every retry carries the same
/// `Nats-Msg-Id`, so JetStream drops a re-publish within its duplicate window.
pub async fn publish(
    js: &jetstream::Context,
    config: &NatsConfig,
    command: &ProgressCommand,
) -> Result<PublishReceipt, PublishFailure> {
    let classify = |source: PublishError| {
        let command_id = command.command_id;
        if is_permanent(&source) {
            PublishFailure::Permanent { command_id, source }
        } else {
            PublishFailure::Transient { command_id, source }
        }
    };
    let ack = messaging::publish_command(js, config, command)
        .await
        .map_err(classify)?
        .await
        .map_err(classify)?;
    Ok(PublishReceipt {
        stream: ack.stream,
        sequence: ack.sequence,
        duplicate: ack.duplicate,
    })
}

/// No stream takes the subject, the message is too large, or JetStream answered with an API
/// error other than "temporarily unavailable" (503).
fn is_permanent(error: &PublishError) -> bool {
    match error.kind() {
        PublishErrorKind::StreamNotFound
        | PublishErrorKind::MaxPayloadExceeded
        | PublishErrorKind::WrongLastMessageId
        | PublishErrorKind::WrongLastSequence => true,
        PublishErrorKind::Other => std::error::Error::source(error)
            .and_then(|e| e.downcast_ref::<jetstream::Error>())
            .is_some_and(|api| api.code() != 503),
        _ => false,
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
        match publish(&self.jetstream, &self.nats, &command).await {
            Ok(receipt) => Ok(receipt),
            Err(e @ PublishFailure::Permanent { .. }) => {
                let message = format!("{:#}", anyhow::Error::from(e));
                tracing::error!(command.id = %command.command_id, error = %message, "command cannot be published");
                Err(ActivityError::application(
                    ApplicationFailure::builder(message)
                        .type_name("UnpublishableCommand".to_owned())
                        .non_retryable(true)
                        .build(),
                ))
            }
            Err(e) => {
                let message = format!("{:#}", anyhow::Error::from(e));
                tracing::warn!(
                    command.id = %command.command_id,
                    attempt = ctx.info().attempt,
                    error = %message,
                    "publishing a command failed; Temporal retries it"
                );
                Err(ActivityError::application(ApplicationFailure::new(message)))
            }
        }
    }

    /// The seqs in `1..=highest_seq` the ledger has not recorded.
    #[activity(name = "reconcile_progress")]
    pub async fn reconcile_progress(
        self: Arc<Self>,
        _ctx: ActivityContext,
        request: ReconcileRequest,
    ) -> Result<Vec<i64>, ActivityError> {
        let applied: Vec<i64> = sqlx::query_scalar(
            "select seq from progress_ledger where user_id = $1 and track_id = $2 and seq <= $3",
        )
        .bind(request.user_id)
        .bind(request.track_id)
        .bind(request.highest_seq)
        .fetch_all(&self.pool)
        .await?;
        let applied: std::collections::HashSet<i64> = applied.into_iter().collect();
        Ok((1..=request.highest_seq)
            .filter(|seq| !applied.contains(seq))
            .collect())
    }

    /// Where a new run continues: after the highest seq the projection has seen, with the units
    /// the learner already completed.
    #[activity(name = "resume_progress")]
    pub async fn resume_progress(
        self: Arc<Self>,
        _ctx: ActivityContext,
        request: ResumeRequest,
    ) -> Result<ResumePoint, ActivityError> {
        let last_seq: i64 = sqlx::query_scalar(
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
        Ok(ResumePoint {
            last_seq,
            completed_unit_ids: completed_unit_ids.unwrap_or_default(),
        })
    }
}

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
