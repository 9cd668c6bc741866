//! The applier: a durable pull consumer, shared by any number of instances, that applies
//! progress commands exactly once to PostgreSQL and announces each change as an event.
//!
//! Per batch: decode → one transaction ([`batch::apply_batch`]) → publish events and dead
//! letters, await JetStream's acks → ack the commands. The last two steps of one batch overlap
//! the transaction of the next. A crash anywhere before the last step
//! means redelivery, which the ledger turns into a duplicate that re-publishes its event.
//! Transient faults (database or NATS down) are retried with capped backoff and never
//! dead-lettered; permanent ones (undecodable, unknown type, foreign unit, wrong subject) are.

pub mod batch;
mod dlq;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind, Message, consumer::pull};
use futures::StreamExt;
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::messaging::{self, NatsConfig, header_str};
use crate::model::{ProgressCommand, ProgressEvent, decode_command};
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

    /// Batches in their transactions at once; 1 commits one batch after the other.
    #[arg(long, env = "APPLIER_COMMITS_IN_FLIGHT", default_value_t = 2)]
    pub commits_in_flight: usize,

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
            commits_in_flight: 2,
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

    let applier = Arc::new(Applier {
        js,
        pool,
        nats,
        config,
        seams,
        track_units: batch::TrackUnits::default(),
    });
    // Stages overlap: up to `commits_in_flight` batches are in their transactions at once
    // (learners shared between them are serialised by the advisory locks, so a later batch
    // sees an earlier one's rows), and while one batch's events and dead letters are published
    // and its commands acked, later batches commit. Batches are handed to delivery in the
    // order they were pulled and at most one delivers at a time, so events leave in commit
    // order per learner; a crash loses only acks, which the ledger turns into duplicates.
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
    if let Some(last) = pipeline.delivering {
        last.await.expect("delivering a batch does not panic");
    }
    tracing::info!("applier stopped");
    Ok(())
}

type CommitTask = JoinHandle<Result<Option<Committed>, ApplierError>>;

/// Batches in their transactions, oldest first, and the one batch being delivered.
#[derive(Default)]
struct Pipeline {
    committing: VecDeque<CommitTask>,
    delivering: Option<JoinHandle<()>>,
    /// The newest batch's locks-taken signal; the next batch locks after it.
    last_locked: Option<tokio::sync::watch::Receiver<bool>>,
}

impl Pipeline {
    fn commit(
        &mut self,
        applier: &Arc<Applier>,
        batch: Vec<Message>,
        waiting: Instant,
        shutdown: &CancellationToken,
    ) {
        let waited_ms = waiting.elapsed().as_secs_f64() * 1e3;
        let (turn, locked) = batch::LockTurn::after(self.last_locked.take());
        self.last_locked = Some(locked);
        let applier = applier.clone();
        let shutdown = shutdown.clone();
        self.committing.push_back(tokio::spawn(async move {
            let mut committed = applier.commit_until_done(batch, turn, &shutdown).await?;
            if let Some(committed) = &mut committed {
                committed.waited_ms = waited_ms;
            }
            Ok(committed)
        }));
    }

    /// The oldest batch's commit, once it is done.
    async fn oldest(&mut self) -> Result<Option<Committed>, ApplierError> {
        let oldest = self.committing.front_mut().expect("a batch is committing");
        oldest.await.expect("committing a batch does not panic")
    }

    /// Hands a committed batch to delivery after the previous one is delivered; false when
    /// there is nothing to deliver because shutdown interrupted the commit.
    async fn deliver(
        &mut self,
        applier: &Arc<Applier>,
        committed: Option<Committed>,
        shutdown: &CancellationToken,
    ) -> bool {
        let Some(committed) = committed else {
            return false;
        };
        if let Some(previous) = self.delivering.take() {
            previous.await.expect("delivering a batch does not panic");
        }
        let applier = applier.clone();
        let shutdown = shutdown.clone();
        self.delivering = Some(tokio::spawn(async move {
            applier.deliver_until_done(committed, &shutdown).await
        }));
        true
    }
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
    track_units: batch::TrackUnits,
}

/// A decoded command, or why a message can never be one: (reason, error).
type Decoded = Result<ProgressCommand, (&'static str, String)>;

/// A committed batch and what it still owes: the messages to ack and what to publish first.
struct Committed {
    batch: Vec<Message>,
    sends: Vec<Send>,
    started: Instant,
    commit_ms: f64,
    /// How long the consumer waited for this batch's messages: near zero when the applier,
    /// not the stream, is the bottleneck.
    waited_ms: f64,
}

/// One publish a committed batch owes before its commands may be acked.
enum Send {
    Event(Box<ProgressEvent>),
    /// The message at this index of the batch, dead-lettered for `reason`.
    DeadLetter {
        index: usize,
        reason: &'static str,
        error: String,
    },
}

impl Applier {
    /// Commits a batch, retrying with capped exponential backoff while the failure is
    /// transient. `None` when shutdown fires first (the messages are then redelivered to
    /// whoever runs next).
    async fn commit_until_done(
        &self,
        batch: Vec<Message>,
        turn: batch::LockTurn,
        shutdown: &CancellationToken,
    ) -> Result<Option<Committed>, ApplierError> {
        let mut backoff = Backoff::new(self.config.max_backoff_ms);
        loop {
            match self.commit(&batch, &turn).await {
                Ok((sends, started, commit_ms)) => {
                    if self.seams.halt_after_commit.load(Ordering::SeqCst) {
                        return Err(ApplierError::Halted);
                    }
                    return Ok(Some(Committed {
                        batch,
                        sends,
                        started,
                        commit_ms,
                        waited_ms: 0.0,
                    }));
                }
                Err(e) => {
                    if !backoff.wait(&e, &batch, shutdown).await {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// Decodes a batch and applies it in one transaction; returns what must be published.
    async fn commit(
        &self,
        batch: &[Message],
        turn: &batch::LockTurn,
    ) -> Result<(Vec<Send>, Instant, f64), Transient> {
        let started = Instant::now();
        let decoded: Vec<Decoded> = batch.iter().map(|m| self.decode(m)).collect();
        let commands: Vec<ProgressCommand> = decoded
            .iter()
            .filter_map(|d| d.as_ref().ok().cloned())
            .collect();
        let mut outcomes = if commands.is_empty() {
            Vec::new()
        } else {
            batch::apply_batch(&self.pool, &self.track_units, turn, &commands).await?
        }
        .into_iter();
        let mut sends = Vec::new();
        for (index, decoded) in decoded.into_iter().enumerate() {
            let send = match decoded {
                Err((reason, error)) => Some(Send::DeadLetter {
                    index,
                    reason,
                    error,
                }),
                Ok(_) => match outcomes.next().expect("one outcome per command") {
                    Outcome::Applied(event) | Outcome::Duplicate(Some(event)) => {
                        Some(Send::Event(event))
                    }
                    Outcome::Rejected { reason, error } => Some(Send::DeadLetter {
                        index,
                        reason,
                        error,
                    }),
                    Outcome::Noop | Outcome::Duplicate(None) => None,
                },
            };
            sends.extend(send);
        }
        Ok((sends, started, started.elapsed().as_secs_f64() * 1e3))
    }

    /// Publishes what a committed batch owes, then acks its commands; publishing is retried
    /// (events and dead letters carry stable `Nats-Msg-Id`s, so a retry stores nothing twice).
    async fn deliver_until_done(&self, committed: Committed, shutdown: &CancellationToken) {
        let mut backoff = Backoff::new(self.config.max_backoff_ms);
        let published_at = loop {
            match self.publish(&committed).await {
                Ok(()) => break Instant::now(),
                Err(e) => {
                    if !backoff.wait(&e, &committed.batch, shutdown).await {
                        return;
                    }
                }
            }
        };
        for message in &committed.batch {
            // a lost ack only means a redelivery, which the ledger absorbs
            if let Err(e) = message.ack().await {
                tracing::warn!(error = %e, subject = %message.subject, "ack failed; the command will be redelivered");
            }
        }
        let total_ms = committed.started.elapsed().as_secs_f64() * 1e3;
        let done_ms = (published_at - committed.started).as_secs_f64() * 1e3;
        tracing::debug!(
            messages = committed.batch.len(),
            waited_ms = committed.waited_ms,
            commit_ms = committed.commit_ms,
            publish_ms = done_ms - committed.commit_ms,
            ack_ms = total_ms - done_ms,
            "batch done"
        );
    }

    async fn publish(&self, committed: &Committed) -> Result<(), Transient> {
        let mut acks = Vec::with_capacity(committed.sends.len());
        for send in &committed.sends {
            let ack = match send {
                Send::Event(event) => messaging::publish_event(&self.js, &self.nats, event).await,
                Send::DeadLetter {
                    index,
                    reason,
                    error,
                } => {
                    dlq::dead_letter(
                        &self.js,
                        &self.nats,
                        &committed.batch[*index],
                        reason,
                        error,
                    )
                    .await
                }
            };
            acks.push(ack.map_err(publish_error)?);
        }
        for ack in futures::future::join_all(acks.into_iter().map(|a| a.into_future())).await {
            ack.map_err(publish_error)?;
        }
        Ok(())
    }

    fn decode(&self, message: &Message) -> Decoded {
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
        command
    }
}

/// Capped exponential backoff between retries of a batch that failed for a transient reason.
struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    fn new(max_ms: u64) -> Backoff {
        Backoff {
            next: Duration::from_millis(100),
            max: Duration::from_millis(max_ms),
        }
    }

    /// Logs `error`, keeps JetStream from redelivering `batch` meanwhile, and sleeps; false
    /// when shutdown fired first.
    async fn wait(
        &mut self,
        error: &Transient,
        batch: &[Message],
        shutdown: &CancellationToken,
    ) -> bool {
        tracing::warn!(error = %error, messages = batch.len(), retry_in_ms = self.next.as_millis() as u64, "batch failed; will retry");
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

fn publish_error(e: impl std::fmt::Display) -> Transient {
    Transient::Publish(e.to_string())
}
