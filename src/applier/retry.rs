//! Which failures are worth retrying, and the capped backoff between retries.
//!
//! Transient: the database or NATS unreachable, restarting, overloaded, or a transaction that
//! lost a race (serialization failure, deadlock, a timeout). Permanent: what the same input
//! would hit again — data and constraint errors, a row that no longer decodes, a message
//! JetStream will never store. Only permanent failures dead-letter, and only the command
//! that caused them.

use std::time::Duration;

use async_nats::jetstream::{AckKind, Message};
use tokio_util::sync::CancellationToken;

use crate::telemetry::causes;

/// Why a batch must be retried later; never a reason to dead-letter.
#[derive(Debug, thiserror::Error)]
pub(super) enum Transient {
    #[error("database")]
    Database(#[source] sqlx::Error),
    #[error("publishing to NATS")]
    Publish(#[source] async_nats::jetstream::context::PublishError),
}

/// True when applying the same commands again would fail the same way. SQLSTATE classes 22
/// (data exception) and 23 (integrity constraint violation), and rows or values that do not
/// decode; everything else — connections, timeouts (57014, 55P03), serialization failures
/// (40001), deadlocks (40P01), too many connections (53300), a missing table during a
/// migration — is worth retrying, and must never dead-letter a command.
pub(super) fn is_permanent_db(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| code.starts_with("22") || code.starts_with("23")),
        sqlx::Error::Decode(_) | sqlx::Error::ColumnDecode { .. } => true,
        _ => false,
    }
}

/// Capped exponential backoff between retries of a batch that failed for a transient reason.
pub(super) struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub(super) fn new(max_ms: u64) -> Backoff {
        Backoff {
            next: Duration::from_millis(100),
            max: Duration::from_millis(max_ms),
        }
    }

    /// Logs `error`, keeps JetStream from redelivering `batch` meanwhile, and sleeps; false
    /// when shutdown fired first.
    pub(super) async fn wait(
        &mut self,
        error: &Transient,
        batch: &[Message],
        shutdown: &CancellationToken,
    ) -> bool {
        let error = causes(error);
        tracing::warn!(
            error,
            messages = batch.len(),
            retry_in_ms = self.next.as_millis() as u64,
            "batch failed; will retry"
        );
        for message in batch {
            // fails while NATS is down, which is fine: redelivery is harmless
            let _ = message.ack_with(AckKind::Progress).await;
        }
        let slept = tokio::select! {
            _ = shutdown.cancelled() => false,
            _ = tokio::time::sleep(self.next) => true,
        };
        self.next = (self.next * 2).min(self.max);
        slept
    }
}

/// How long JetStream holds back a command deferred behind a missing predecessor. Short,
/// since the predecessor is usually in a batch just ahead (or in another instance's), and
/// every step of a learner's path may wait this long; growing slowly to a second for a
/// predecessor that is really missing, until reconcile re-publishes it.
pub(super) fn defer_delay(deliveries: i64) -> Duration {
    Duration::from_millis(10 * deliveries.clamp(1, 100) as u64)
}
