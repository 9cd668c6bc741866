//! The stages a pulled batch goes through: commit (decode, one transaction, retried while the
//! failure is transient, split while it is permanent), then delivery (publish events and dead
//! letters, await JetStream's acks, then ack or hold back each command).
//!
//! Up to `commits_in_flight` batches are in their transactions at once (learners shared
//! between them are serialised by the advisory locks, taken in pull order), and while one
//! batch delivers, later batches commit. At most one batch delivers at a time, in pull order.
//! A crash loses only acks, which the ledger turns into duplicates.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind, Message};
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use uuid::Uuid;

use super::announce::Marks;
use super::batch::{self, Outcome};
use super::lock_turn::LockTurn;
use super::retry::{Backoff, Transient, defer_delay, is_permanent_db};
use super::track_units::TrackUnits;
use super::{ApplierConfig, ApplierError, Seams, dlq};
use crate::messaging::{self, NatsConfig, header_str};
use crate::model::{ProgressCommand, ProgressEvent, decode_command};
use crate::telemetry::causes;

pub(super) struct Applier {
    pub js: jetstream::Context,
    pub pool: PgPool,
    pub nats: NatsConfig,
    pub config: ApplierConfig,
    pub seams: Seams,
    pub track_units: TrackUnits,
    pub marks: Marks,
}

type CommitTask = JoinHandle<Result<Option<Committed>, ApplierError>>;

/// Batches in their transactions, oldest first, and the one batch being delivered.
#[derive(Default)]
pub(super) struct Pipeline {
    pub committing: VecDeque<CommitTask>,
    delivering: Option<JoinHandle<()>>,
    /// The newest batch's locks-taken signal; the next batch locks after it.
    last_locked: Option<tokio::sync::watch::Receiver<bool>>,
}

impl Pipeline {
    pub(super) fn commit(
        &mut self,
        applier: &Arc<Applier>,
        batch: Vec<Message>,
        waiting: Instant,
        shutdown: &CancellationToken,
    ) {
        let waited_ms = waiting.elapsed().as_secs_f64() * 1e3;
        let (turn, locked) = LockTurn::after(self.last_locked.take());
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
    pub(super) async fn oldest(&mut self) -> Result<Option<Committed>, ApplierError> {
        let oldest = self.committing.front_mut().expect("a batch is committing");
        oldest.await.expect("committing a batch does not panic")
    }

    /// Hands a committed batch to delivery after the previous one is delivered; false when
    /// there is nothing to deliver because shutdown interrupted the commit.
    pub(super) async fn deliver(
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

    /// Waits for the batch being delivered, if any.
    pub(super) async fn drain(self) {
        if let Some(last) = self.delivering {
            last.await.expect("delivering a batch does not panic");
        }
    }
}

/// A decoded command, or why a message can never be one: (reason, error).
type Decoded = Result<ProgressCommand, (&'static str, String)>;

/// A committed batch and what it still owes: what to publish, then how to settle each message.
pub(super) struct Committed {
    batch: Vec<Message>,
    sends: Vec<Send>,
    /// The commands whose events `sends` announces: recorded as announced once published.
    announces: Vec<Uuid>,
    /// Per message: `None` to ack, or how long JetStream should hold it back before
    /// redelivering (a command deferred behind a missing predecessor).
    hold: Vec<Option<Duration>>,
    started: Instant,
    commit_ms: f64,
    /// How long the consumer waited for this batch's messages: near zero when the applier,
    /// not the stream, is the bottleneck.
    waited_ms: f64,
}

/// One publish a committed batch owes before its commands may be acked; `index` is the
/// message's place in the batch.
enum Send {
    Event {
        index: usize,
        event: Box<ProgressEvent>,
    },
    DeadLetter {
        index: usize,
        reason: String,
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
        turn: LockTurn,
        shutdown: &CancellationToken,
    ) -> Result<Option<Committed>, ApplierError> {
        let mut backoff = Backoff::new(self.config.max_backoff_ms);
        let started = Instant::now();
        let decoded: Vec<Decoded> = batch.iter().map(|m| self.decode(m)).collect();
        let commands: Vec<ProgressCommand> = decoded
            .iter()
            .filter_map(|d| d.as_ref().ok().cloned())
            .collect();
        let outcomes = loop {
            match self.apply_splitting(&commands, &turn).await {
                Ok(outcomes) => break outcomes,
                Err(e) => {
                    if !backoff.wait(&e, &batch, shutdown).await {
                        return Ok(None);
                    }
                }
            }
        };
        if self.seams.halts_after_commit() {
            return Err(ApplierError::Halted);
        }
        let commit_ms = started.elapsed().as_secs_f64() * 1e3;
        let (sends, hold) = self.settle(&batch, decoded, outcomes);
        let announces = sends
            .iter()
            .filter_map(|send| match send {
                Send::Event { event, .. } => Some(event.event_id),
                Send::DeadLetter { .. } => None,
            })
            .collect();
        Ok(Some(Committed {
            batch,
            sends,
            announces,
            hold,
            started,
            commit_ms,
            waited_ms: 0.0,
        }))
    }

    /// Applies `commands` in one transaction; when the database refuses it for good, applies
    /// each half on its own, down to the one command at fault, which is recorded as rejected
    /// and dead-lettered while the rest are applied.
    async fn apply_splitting(
        &self,
        commands: &[ProgressCommand],
        turn: &LockTurn,
    ) -> Result<Vec<Outcome>, Transient> {
        if commands.is_empty() {
            return Ok(Vec::new());
        }
        let timeouts = self.config.timeouts();
        let error = match batch::apply_batch(
            &self.pool,
            &self.track_units,
            turn,
            commands,
            &timeouts,
        )
        .await
        {
            Ok(outcomes) => return Ok(outcomes),
            Err(e) if is_permanent_db(&e) => e,
            Err(e) => return Err(Transient::Database(e)),
        };
        if let [command] = commands {
            let error = causes(&error);
            tracing::error!(command.id = %command.command_id, user.id = %command.user_id, error, "the database refuses a command; dead-lettering it");
            match batch::record_refused(&self.pool, command, &error).await {
                Err(e) if !is_permanent_db(&e) => return Err(Transient::Database(e)),
                _ => {}
            }
            return Ok(vec![Outcome::Rejected {
                reason: "refused_by_database".to_owned(),
                error,
            }]);
        }
        tracing::warn!(commands = commands.len(), error = %error, "the database refuses a batch; applying its halves apart");
        let (first, second) = commands.split_at(commands.len() / 2);
        let mut outcomes = Box::pin(self.apply_splitting(first, turn)).await?;
        outcomes.extend(Box::pin(self.apply_splitting(second, turn)).await?);
        Ok(outcomes)
    }

    /// What each message owes once its batch committed: events and dead letters to publish,
    /// and whether it is acked or held back.
    fn settle(
        &self,
        batch: &[Message],
        decoded: Vec<Decoded>,
        outcomes: Vec<Outcome>,
    ) -> (Vec<Send>, Vec<Option<Duration>>) {
        let mut outcomes = outcomes.into_iter();
        let mut sends = Vec::new();
        let mut hold = vec![None; batch.len()];
        for (index, decoded) in decoded.into_iter().enumerate() {
            let command = match decoded {
                Ok(command) => command,
                Err((reason, error)) => {
                    sends.push(Send::DeadLetter {
                        index,
                        reason: reason.to_owned(),
                        error,
                    });
                    continue;
                }
            };
            match outcomes.next().expect("one outcome per command") {
                Outcome::Applied(event) | Outcome::Duplicate(Some(event)) => {
                    sends.push(Send::Event { index, event });
                }
                Outcome::Rejected { reason, error } => {
                    tracing::warn!(reason, error, command.id = %command.command_id, "dead-lettering command");
                    sends.push(Send::DeadLetter {
                        index,
                        reason,
                        error,
                    });
                }
                Outcome::Noop | Outcome::Duplicate(None) => {}
                // acked and kept nowhere: a dead letter would store the learner's data again
                Outcome::Erased { error } => {
                    tracing::warn!(command.id = %command.command_id, reason = "erased", error, "refusing command");
                }
                Outcome::Deferred { waiting_for } => {
                    let (waited, deliveries) = batch[index]
                        .info()
                        .map(|i| (waited(i.published.unix_timestamp_nanos()), i.delivered))
                        .unwrap_or((Duration::ZERO, 1));
                    if waited.as_secs() >= self.config.gap_wait_secs {
                        let error = format!(
                            "seq {} waited {}s for seq {waiting_for} of its learner, which never came",
                            command.seq,
                            waited.as_secs()
                        );
                        tracing::error!(command.id = %command.command_id, error, "dead-lettering command");
                        sends.push(Send::DeadLetter {
                            index,
                            reason: "seq_gap".to_owned(),
                            error,
                        });
                    } else {
                        hold[index] = Some(defer_delay(deliveries));
                    }
                }
            }
        }
        (sends, hold)
    }

    /// Publishes what a committed batch owes, then settles its commands; publishing is retried
    /// (events and dead letters carry stable `Nats-Msg-Id`s, so a retry stores nothing twice).
    async fn deliver_until_done(&self, mut committed: Committed, shutdown: &CancellationToken) {
        let mut backoff = Backoff::new(self.config.max_backoff_ms);
        self.seams.publish_allowed().await;
        let published_at = loop {
            match self.publish(&mut committed).await {
                Ok(()) => {
                    // including events JetStream refused for good: their commands are
                    // dead-lettered, and announcing them again cannot help
                    self.marks
                        .announced(std::mem::take(&mut committed.announces));
                    break Instant::now();
                }
                Err(e) => {
                    if !backoff.wait(&e, &committed.batch, shutdown).await {
                        return;
                    }
                }
            }
        };
        for (message, hold) in committed.batch.iter().zip(&committed.hold) {
            let settled = match hold {
                None => message.ack().await,
                Some(delay) => message.ack_with(AckKind::Nak(Some(*delay))).await,
            };
            // a lost ack only means a redelivery, which the ledger absorbs
            if let Err(e) = settled {
                tracing::warn!(error = %e, subject = %message.subject, "ack failed; the command will be redelivered");
            }
        }
        let total_ms = committed.started.elapsed().as_secs_f64() * 1e3;
        let done_ms = (published_at - committed.started).as_secs_f64() * 1e3;
        tracing::debug!(
            messages = committed.batch.len(),
            deferred = committed.hold.iter().filter(|h| h.is_some()).count(),
            waited_ms = committed.waited_ms,
            commit_ms = committed.commit_ms,
            publish_ms = done_ms - committed.commit_ms,
            ack_ms = total_ms - done_ms,
            "batch done"
        );
    }

    /// Publishes every send and awaits the acks. A send JetStream refuses for good is not
    /// retried: an event becomes a dead letter of its command (`event_unpublishable`; the
    /// command stays applied), a dead letter is logged and dropped (the ledger or the log
    /// keeps its record).
    async fn publish(&self, committed: &mut Committed) -> Result<(), Transient> {
        loop {
            let mut acks = Vec::with_capacity(committed.sends.len());
            let mut refused = Vec::new();
            for (position, send) in committed.sends.iter().enumerate() {
                match self.send(&committed.batch, send).await {
                    Ok(ack) => acks.push((position, ack)),
                    Err(e) if messaging::is_permanent(&e) => refused.push((position, e)),
                    Err(e) => return Err(Transient::Publish(e)),
                }
            }
            let acked = futures::future::join_all(
                acks.into_iter()
                    .map(|(position, ack)| async move { (position, ack.await) }),
            )
            .await;
            for (position, ack) in acked {
                match ack {
                    Ok(_) => {}
                    Err(e) if messaging::is_permanent(&e) => refused.push((position, e)),
                    Err(e) => return Err(Transient::Publish(e)),
                }
            }
            if refused.is_empty() {
                return Ok(());
            }
            let sends = std::mem::take(&mut committed.sends);
            committed.sends = replace_refused(sends, refused);
        }
    }

    async fn send(
        &self,
        batch: &[Message],
        send: &Send,
    ) -> Result<jetstream::context::PublishAckFuture, jetstream::context::PublishError> {
        match send {
            Send::Event { event, .. } => {
                messaging::publish_event(&self.js, &self.nats, event).await
            }
            Send::DeadLetter {
                index,
                reason,
                error,
            } => dlq::dead_letter(&self.js, &self.nats, &batch[*index], reason, error).await,
        }
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

/// The sends after JetStream refused some for good: a refused event becomes a dead letter
/// of its command; a refused dead letter is dropped, logged.
fn replace_refused(
    sends: Vec<Send>,
    refused: Vec<(usize, jetstream::context::PublishError)>,
) -> Vec<Send> {
    let mut refused: std::collections::HashMap<usize, String> = refused
        .into_iter()
        .map(|(position, e)| (position, causes(&e)))
        .collect();
    sends
        .into_iter()
        .enumerate()
        .filter_map(|(position, send)| {
            let Some(error) = refused.remove(&position) else {
                return Some(send);
            };
            match send {
                Send::Event { index, event } => {
                    tracing::error!(event.id = %event.event_id, error, "JetStream refuses an event; dead-lettering its command");
                    Some(Send::DeadLetter {
                        index,
                        reason: "event_unpublishable".to_owned(),
                        error,
                    })
                }
                Send::DeadLetter { reason, .. } => {
                    tracing::error!(reason, error, "JetStream refuses a dead letter; dropping it");
                    None
                }
            }
        })
        .collect()
}

/// How long ago `published_nanos` (Unix nanoseconds) was.
fn waited(published_nanos: i128) -> Duration {
    let now = chrono::Utc::now()
        .timestamp_nanos_opt()
        .map_or(0, i128::from);
    Duration::from_nanos(u64::try_from(now - published_nanos).unwrap_or(0))
}
