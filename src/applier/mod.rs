//! The applier: a durable pull consumer, shared by any number of instances, that applies
//! progress commands exactly once to PostgreSQL and announces each change as an event.
//!
//! Per batch: decode → one transaction ([`batch::apply_batch`]) → publish events and dead
//! letters, await JetStream's acks → ack the commands. A crash anywhere before the last step
//! means redelivery, which the ledger turns into a duplicate that re-publishes its event.
//! Transient faults (database or NATS down) are retried with capped backoff and never
//! dead-lettered; permanent ones (undecodable, unknown type, foreign unit, wrong subject) are.

pub mod batch;
mod dlq;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, Message, consumer::pull};
use futures::StreamExt;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::messaging::{self, NatsConfig, header_str};
use crate::model::{ProgressCommand, decode_command};
use batch::Outcome;

#[derive(Debug, Clone, clap::Args)]
pub struct ApplierConfig {
    /// Durable consumer shared by every applier instance.
    #[arg(long, env = "APPLIER_DURABLE", default_value = "progress-applier")]
    pub durable: String,

    /// Most commands applied in one transaction.
    #[arg(long, env = "APPLIER_BATCH_SIZE", default_value_t = 500)]
    pub batch_size: usize,

    /// Seconds JetStream waits for an ack before redelivering a command.
    #[arg(long, env = "APPLIER_ACK_WAIT_SECS", default_value_t = 30)]
    pub ack_wait_secs: u64,

    /// Commands in flight per consumer (all instances together); bounds memory and redelivery.
    #[arg(long, env = "APPLIER_MAX_ACK_PENDING", default_value_t = 20_000)]
    pub max_ack_pending: i64,

    /// Longest pause between retries of a batch that failed for a transient reason.
    #[arg(long, env = "APPLIER_MAX_BACKOFF_MS", default_value_t = 5_000)]
    pub max_backoff_ms: u64,
}

impl Default for ApplierConfig {
    fn default() -> ApplierConfig {
        ApplierConfig {
            durable: "progress-applier".to_owned(),
            batch_size: 500,
            ack_wait_secs: 30,
            max_ack_pending: 20_000,
            max_backoff_ms: 5_000,
        }
    }
}

/// Points where a test can make the applier stop as if the process had died.
#[derive(Debug, Clone, Default)]
pub struct Seams {
    /// When set, the applier returns right after a commit, before publishing or acking.
    pub halt_after_commit: Arc<AtomicBool>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApplierError {
    #[error("setting up the commands consumer: {0}")]
    Setup(String),
    #[error("halted after commit by a test seam")]
    Halted,
}

/// Why a batch must be retried later; never a reason to dead-letter.
#[derive(Debug, thiserror::Error)]
enum Transient {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("publishing to NATS: {0}")]
    Publish(String),
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
    let setup = |e: &dyn std::fmt::Display| ApplierError::Setup(e.to_string());
    messaging::ensure_streams(&js, &nats)
        .await
        .map_err(|e| setup(&e))?;
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
        .map_err(|e| setup(&e))?;
    tracing::info!(durable = %config.durable, stream = %nats.commands_stream, batch_size = config.batch_size, "applier consuming");

    let applier = Applier {
        js,
        pool,
        nats,
        config,
        seams,
    };
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
        loop {
            let chunk = tokio::select! {
                _ = shutdown.cancelled() => break 'consume,
                chunk = chunks.next() => chunk,
            };
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
                applier.process_until_done(&batch, &shutdown).await?;
            }
        }
    }
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
    let pool = crate::db::pool(db)?;
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

struct Applier {
    js: jetstream::Context,
    pool: PgPool,
    nats: NatsConfig,
    config: ApplierConfig,
    seams: Seams,
}

/// A message and what decoding made of it.
struct Incoming<'m> {
    message: &'m Message,
    command: Result<ProgressCommand, (&'static str, String)>,
}

impl Applier {
    /// Retries a batch with capped exponential backoff until it is done or shutdown fires
    /// (then the unacked messages are redelivered to whoever runs next).
    async fn process_until_done(
        &self,
        batch: &[Message],
        shutdown: &CancellationToken,
    ) -> Result<(), ApplierError> {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.process(batch).await {
                Ok(()) => return Ok(()),
                Err(Attempt::Halted) => return Err(ApplierError::Halted),
                Err(Attempt::Transient(e)) => {
                    tracing::warn!(error = %e, messages = batch.len(), retry_in_ms = backoff.as_millis() as u64, "batch failed; will retry");
                    for message in batch {
                        // keep JetStream from redelivering while we retry; fails while NATS is down
                        let _ = message.ack_with(AckKind::Progress).await;
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_millis(self.config.max_backoff_ms));
                }
            }
        }
    }

    async fn process(&self, batch: &[Message]) -> Result<(), Attempt> {
        let started = std::time::Instant::now();
        let incoming: Vec<Incoming<'_>> = batch.iter().map(|m| self.decode(m)).collect();
        let commands: Vec<ProgressCommand> = incoming
            .iter()
            .filter_map(|i| i.command.as_ref().ok().cloned())
            .collect();
        let mut outcomes = if commands.is_empty() {
            Vec::new()
        } else {
            batch::apply_batch(&self.pool, &commands)
                .await
                .map_err(Transient::from)?
        }
        .into_iter();
        if self.seams.halt_after_commit.load(Ordering::SeqCst) {
            return Err(Attempt::Halted);
        }
        let committed = started.elapsed();

        let mut acks = Vec::new();
        for item in &incoming {
            let publish = match &item.command {
                Err((reason, error)) => Some(self.dead_letter(item.message, reason, error).await?),
                Ok(_) => match outcomes.next().expect("one outcome per command") {
                    Outcome::Applied(event) | Outcome::Duplicate(Some(event)) => Some(
                        messaging::publish_event(&self.js, &self.nats, &event)
                            .await
                            .map_err(publish_error)?,
                    ),
                    Outcome::Rejected { reason, error } => {
                        Some(self.dead_letter(item.message, reason, &error).await?)
                    }
                    Outcome::Noop | Outcome::Duplicate(None) => None,
                },
            };
            acks.extend(publish);
        }
        for ack in futures::future::join_all(acks.into_iter().map(|a| a.into_future())).await {
            ack.map_err(publish_error)?;
        }
        let published = started.elapsed();
        for message in batch {
            // a lost ack only means a redelivery, which the ledger absorbs
            if let Err(e) = message.ack().await {
                tracing::warn!(error = %e, subject = %message.subject, "ack failed; the command will be redelivered");
            }
        }
        tracing::debug!(
            messages = batch.len(),
            commit_ms = committed.as_secs_f64() * 1e3,
            publish_ms = (published - committed).as_secs_f64() * 1e3,
            ack_ms = (started.elapsed() - published).as_secs_f64() * 1e3,
            "batch done"
        );
        Ok(())
    }

    fn decode<'m>(&self, message: &'m Message) -> Incoming<'m> {
        let command = decode_command(&message.payload)
            .map_err(|e| (e.reason(), e.to_string()))
            .and_then(|command| {
                let expected = self.nats.command_subject(command.user_id, command.track_id);
                if message.subject.as_str() == expected {
                    Ok(command)
                } else {
                    Err((
                        "wrong_subject",
                        format!("published on {} but belongs on {expected}", message.subject),
                    ))
                }
            });
        if let Err((reason, error)) = &command {
            let id = header_str(message.headers.as_ref(), "Nats-Msg-Id").unwrap_or("-");
            tracing::warn!(reason, error, subject = %message.subject, msg_id = id, "dead-lettering command");
        }
        Incoming { message, command }
    }

    async fn dead_letter(
        &self,
        message: &Message,
        reason: &str,
        error: &str,
    ) -> Result<jetstream::context::PublishAckFuture, Attempt> {
        dlq::dead_letter(&self.js, &self.nats, message, reason, error)
            .await
            .map_err(|e| Attempt::Transient(publish_error(e)))
    }
}

enum Attempt {
    Transient(Transient),
    Halted,
}

impl From<Transient> for Attempt {
    fn from(e: Transient) -> Attempt {
        Attempt::Transient(e)
    }
}

fn publish_error(e: impl std::fmt::Display) -> Transient {
    Transient::Publish(e.to_string())
}
