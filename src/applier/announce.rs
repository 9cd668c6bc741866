//! Every applied change is announced, whatever dies between the commit and the publish.
//!
//! The ledger row of an applied command records whether its event is known to be stored
//! (`announced`). Once JetStream acknowledges a batch's events, the [`Marks`] task sets the
//! flag, off the batch's path, coalescing batches into one statement. Usually a crash between
//! commit and publish is repaired by the redelivery of the unacknowledged command, which
//! re-announces its event from the ledger; but when the broker loses that message, nothing
//! would be redelivered. The [`sweep`] covers that case: every so often it takes the applied
//! commands left unannounced for `announce_after_secs` and runs them through the batch as the
//! redeliveries they stand for, publishing the events the ledger rebuilds. An event announced
//! twice carries the same `Nats-Msg-Id` (the command id), so JetStream stores it once within
//! its duplicate window, and consumers ignore a version they already have in any case.
//! The sweep also publishes the `track_changed` events a change of a track's units left in its
//! outbox ([`crate::track_changes::outbox`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::batch::{self, Outcome};
use super::lock_turn::LockTurn;
use super::pipeline::Applier;
use super::retry::Transient;
use super::sql;
use crate::messaging;
use crate::telemetry::causes;
use crate::track_changes;

/// Most commands one sweep re-announces; the next sweep takes the rest.
const SWEEP_LIMIT: i64 = 500;

/// Command ids whose events JetStream acknowledged, on their way to the ledger.
#[derive(Clone)]
pub(super) struct Marks(mpsc::UnboundedSender<Vec<Uuid>>);

impl Marks {
    /// Starts the task that records announcements; it ends once every `Marks` is dropped and
    /// what they sent is written.
    pub(super) fn start(pool: sqlx::PgPool) -> (Marks, JoinHandle<()>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        (Marks(sender), tokio::spawn(record(pool, receiver)))
    }

    pub(super) fn announced(&self, ids: Vec<Uuid>) {
        if !ids.is_empty() {
            // the task outlives every sender; should it be gone, the sweep re-announces them
            let _ = self.0.send(ids);
        }
    }
}

async fn record(pool: sqlx::PgPool, mut receiver: mpsc::UnboundedReceiver<Vec<Uuid>>) {
    while let Some(mut ids) = receiver.recv().await {
        while ids.len() < 10_000
            && let Ok(more) = receiver.try_recv()
        {
            ids.extend(more);
        }
        let mut attempt = 0;
        while let Err(error) = sql::mark_announced(&pool, &ids).await {
            attempt += 1;
            if attempt == 5 {
                // harmless: the sweep announces them again, under the same ids
                tracing::warn!(error = %causes(&error), commands = ids.len(), "cannot record announced events; the sweep will announce them again");
                break;
            }
            tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
        }
    }
}

/// Re-announces applied commands left unannounced, until `shutdown` fires.
pub(super) async fn sweep(applier: Arc<Applier>, shutdown: CancellationToken) {
    let grace = Duration::from_secs(applier.config.announce_after_secs);
    let every = (grace / 2).clamp(Duration::from_millis(200), Duration::from_secs(30));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        match sweep_once(&applier, grace).await {
            Ok(0) => {}
            Ok(count) => {
                tracing::warn!(
                    count,
                    "re-announced applied commands whose events were never confirmed"
                )
            }
            Err(error) => {
                tracing::warn!(error = %causes(&error), "sweep for unannounced events failed; retrying")
            }
        }
        let (pool, js, nats) = (&applier.pool, &applier.js, &applier.nats);
        match track_changes::outbox::announce_pending(pool, js, nats, grace, SWEEP_LIMIT).await {
            Ok(0) => {}
            Ok(count) => {
                tracing::warn!(count, "published track change events left unannounced")
            }
            Err(error) => {
                tracing::warn!(error = %causes(&error), "sweep for unannounced track change events failed; retrying")
            }
        }
    }
}

/// One sweep: how many commands it re-announced.
async fn sweep_once(applier: &Applier, grace: Duration) -> Result<usize, Transient> {
    let commands = sql::unannounced(&applier.pool, grace, SWEEP_LIMIT)
        .await
        .map_err(Transient::Database)?;
    if commands.is_empty() {
        return Ok(0);
    }
    // in the ledger already, each comes back as a duplicate carrying its original event
    let outcomes = batch::apply_batch(
        &applier.pool,
        &applier.track_units,
        &LockTurn::default(),
        &commands,
        &applier.config.timeouts(),
    )
    .await
    .map_err(Transient::Database)?;
    let mut acks = Vec::new();
    for outcome in outcomes {
        if let Outcome::Duplicate(Some(event)) | Outcome::Applied(event) = outcome {
            match messaging::publish_event(&applier.js, &applier.nats, &event).await {
                Ok(ack) => acks.push((event.event_id, ack)),
                Err(error) => refused(event.event_id, error)?,
            }
        }
    }
    for (id, ack) in futures::future::join_all(
        acks.into_iter()
            .map(|(id, ack)| async move { (id, ack.await) }),
    )
    .await
    {
        if let Err(error) = ack {
            refused(id, error)?;
        }
    }
    let ids: Vec<Uuid> = commands.iter().map(|c| c.command_id).collect();
    sql::mark_announced(&applier.pool, &ids)
        .await
        .map_err(Transient::Database)?;
    Ok(ids.len())
}

/// A publish that failed: transient, or refused for good (logged; its command was
/// dead-lettered when it was applied, and announcing it again cannot help).
fn refused(id: Uuid, error: async_nats::jetstream::context::PublishError) -> Result<(), Transient> {
    if !messaging::is_permanent(&error) {
        return Err(Transient::Publish(error));
    }
    tracing::error!(event.id = %id, error = %causes(&error), "JetStream refuses a re-announced event");
    Ok(())
}
