//! The applier: a durable pull consumer, shared by any number of instances, that applies
//! progress commands exactly once to PostgreSQL, each learner's in `seq` order, and announces
//! each change as an event.
//!
//! Per batch ([`pipeline`]): decode → one transaction ([`batch`]) → publish events and dead
//! letters, await JetStream's acks → ack the commands (or hold back those waiting for a
//! predecessor). A crash anywhere before the last step means redelivery, which the ledger
//! turns into a duplicate that re-publishes its event or dead letter. Transient faults
//! (database or NATS down) are retried with capped backoff and never dead-lettered
//! ([`retry`]); permanent ones (undecodable, unknown type, foreign unit, wrong subject, a
//! command the database refuses) dead-letter only the command at fault.

mod announce;
pub(crate) mod batch;
mod config;
mod dlq;
mod lock_turn;
mod pipeline;
mod retry;
pub mod sql;
mod track_units;

use std::sync::Arc;
#[cfg(feature = "test-seams")]
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull};
use futures::StreamExt;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

pub use config::ApplierConfig;
pub(crate) use dlq::dead_letter_from;

use crate::messaging::{self, NatsConfig};
use pipeline::{Applier, Pipeline};

/// Points where a test can make the applier stop as if the process had died. Built only with
/// the `test-seams` feature, which the crate's own tests turn on (its dev-dependency on
/// itself); in the service's binary this is an empty struct and the checks compile away.
#[derive(Debug, Clone, Default)]
pub struct Seams {
    /// When set, the applier returns right after a commit, before publishing or acking.
    #[cfg(feature = "test-seams")]
    pub halt_after_commit: Arc<AtomicBool>,
    /// While a test holds this lock for writing, the applier commits batches but publishes
    /// nothing of them (as an applier whose publishes are slow to be acknowledged).
    #[cfg(feature = "test-seams")]
    pub publish_gate: Arc<tokio::sync::RwLock<()>>,
}

impl Seams {
    fn halts_after_commit(&self) -> bool {
        #[cfg(feature = "test-seams")]
        {
            self.halt_after_commit
                .load(std::sync::atomic::Ordering::SeqCst)
        }
        #[cfg(not(feature = "test-seams"))]
        false
    }

    /// Returns once the test lets batches be published.
    async fn publish_allowed(&self) {
        #[cfg(feature = "test-seams")]
        drop(self.publish_gate.read().await);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApplierError {
    #[error("setting up the streams")]
    Streams(#[from] messaging::StreamSetupError),
    #[error("creating the durable consumer {durable} on {stream}")]
    Consumer {
        durable: String,
        stream: String,
        #[source]
        source: async_nats::jetstream::stream::ConsumerError,
    },
    #[error("halted after commit by a test seam")]
    Halted,
}

/// Runs until `shutdown` fires; the batch in hand is finished first.
pub async fn run(
    js: jetstream::Context,
    pool: PgPool,
    nats: NatsConfig,
    config: ApplierConfig,
    seams: Seams,
    shutdown: CancellationToken,
) -> Result<(), ApplierError> {
    messaging::ensure_streams(&js, &nats).await?;
    let consumer: jetstream::consumer::Consumer<pull::Config> = js
        .create_consumer_on_stream(
            pull::Config {
                durable_name: Some(config.durable.clone()),
                // no filter: the stream holds only commands, and a filtered consumer is much
                // slower to deliver on nats-server 2.9 (seen: 15-message batches, 237 cmd/s)
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(config.ack_wait_secs),
                // transient faults must never exhaust deliveries: retry for ever
                max_deliver: -1,
                max_ack_pending: config.max_ack_pending,
                ..Default::default()
            },
            &nats.commands_stream,
        )
        .await
        .map_err(|source| ApplierError::Consumer {
            durable: config.durable.clone(),
            stream: nats.commands_stream.clone(),
            source,
        })?;
    tracing::info!(durable = %config.durable, stream = %nats.commands_stream, batch_size = config.batch_size, "applier consuming");

    let (marks, recording) = announce::Marks::start(pool.clone());
    let applier = Arc::new(Applier {
        js,
        pool,
        nats,
        config,
        seams,
        track_units: Default::default(),
        marks,
    });
    // the sweep stops however this returns, as it would with the process
    let sweep = shutdown.child_token();
    let stop_sweep = sweep.clone().drop_guard();
    let sweeping = tokio::spawn(announce::sweep(applier.clone(), sweep));
    let depth = applier.config.commits_in_flight.max(1);
    let mut pipeline = Pipeline::default();
    'consume: while !shutdown.is_cancelled() {
        let messages = match consumer
            .stream()
            .max_messages_per_batch(applier.config.batch_size)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await
        {
            Ok(messages) => messages,
            Err(e) => {
                tracing::warn!(error = %e, "cannot pull commands; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        // every message already delivered to us, up to a batch: low latency when idle,
        // large transactions under load
        let mut chunks = messages.ready_chunks(applier.config.batch_size);
        let mut waiting = Instant::now();
        loop {
            // unconstrained: under tokio's cooperative budget the channel reports "not ready"
            // after 128 messages, which capped every batch at 128 however many had arrived
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break 'consume,
                done = pipeline.oldest(), if !pipeline.committing.is_empty() => {
                    pipeline.committing.pop_front();
                    if !pipeline.deliver(&applier, done?, &shutdown).await {
                        break 'consume;
                    }
                }
                chunk = tokio::task::unconstrained(chunks.next()), if pipeline.committing.len() < depth => {
                    let Some(chunk) = chunk else {
                        continue 'consume;
                    };
                    let mut batch = Vec::with_capacity(chunk.len());
                    for message in chunk {
                        match message {
                            Ok(message) => batch.push(message),
                            Err(e) => tracing::warn!(error = %e, "pull stream error; resuming"),
                        }
                    }
                    if !batch.is_empty() {
                        pipeline.commit(&applier, batch, waiting, &shutdown);
                    }
                    waiting = Instant::now();
                }
            }
        }
    }
    // the batches in hand are finished: committed, their events published, commands acked
    while let Some(committing) = pipeline.committing.pop_front() {
        let done = committing.await.expect("committing a batch does not panic");
        if !pipeline.deliver(&applier, done?, &shutdown).await {
            break;
        }
    }
    pipeline.drain().await;
    drop(stop_sweep);
    let _ = sweeping.await;
    // the last announcements reach the ledger once no batch can send more
    drop(applier);
    let _ = recording.await;
    tracing::info!("applier stopped");
    Ok(())
}

/// Connects to NATS and PostgreSQL from configuration and runs until `shutdown`.
pub async fn start(
    db: &crate::config::DbConfig,
    nats: &NatsConfig,
    config: &ApplierConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let pool = crate::db::connect(db).await?;
    let client = messaging::connect(nats, "applier").await?;
    run(
        jetstream::new(client),
        pool,
        nats.clone(),
        config.clone(),
        Seams::default(),
        shutdown,
    )
    .await?;
    Ok(())
}
