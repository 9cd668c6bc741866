//! One batch of events: their statements to the LRS, refused ones to the dead letters, then
//! the acks. Nothing is acked before the LRS took it or its dead letter is stored.

use std::collections::HashMap;

use async_nats::jetstream::Message;
use uuid::Uuid;

use super::{Forwarder, MALFORMED, REFUSED};
use crate::applier::dead_letter_from;
use crate::xapi::lrs::PostError;
use crate::xapi::{Statement, ledger, statement};

/// Why a batch is to be retried later.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Transient {
    #[error("reading the ledger: {0}")]
    Database(#[source] sqlx::Error),
    #[error(transparent)]
    Lrs(PostError),
    #[error("storing a dead letter: {0}")]
    DeadLetter(String),
}

impl Transient {
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Transient::Database(_) => "database",
            Transient::Lrs(_) => "lrs",
            Transient::DeadLetter(_) => "nats",
        }
    }
}

/// What the forwarder reads of an event: which command it announces. Events of no applied
/// command (`rebuilt`, `erased`) find no ledger row and make no statement.
#[derive(serde::Deserialize)]
struct Announced {
    event_id: Uuid,
}

impl Forwarder {
    pub(crate) async fn forward(&self, batch: &[Message]) -> Result<(), Transient> {
        // the messages of each command: a redelivered event may sit beside its first delivery
        let mut messages: HashMap<Uuid, Vec<&Message>> = HashMap::new();
        for message in batch {
            match serde_json::from_slice::<Announced>(&message.payload) {
                Ok(event) => messages.entry(event.event_id).or_default().push(message),
                Err(error) => {
                    self.dead_letter(message, MALFORMED, &error.to_string())
                        .await?;
                }
            }
        }
        let ids: Vec<Uuid> = messages.keys().copied().collect();
        let records = ledger::applied_by_ids(&self.pool, &ids)
            .await
            .map_err(Transient::Database)?;
        let statements: Vec<(Uuid, Statement)> = records
            .iter()
            .map(|record| {
                let statement = statement::statement(&self.xapi, record, false);
                (record.command.command_id, statement)
            })
            .collect();
        if !statements.is_empty() {
            self.post(&statements, &messages).await?;
        }
        for message in batch {
            // a lost ack means a redelivery, which the LRS takes as the duplicate it is
            if let Err(error) = message.ack().await {
                tracing::warn!(%error, "cannot ack an event; it will be forwarded again");
            }
        }
        Ok(())
    }

    /// Posts the batch; when the LRS refuses it, posts each statement alone, so that only the
    /// ones it refuses on their own are dead-lettered.
    async fn post(
        &self,
        statements: &[(Uuid, Statement)],
        messages: &HashMap<Uuid, Vec<&Message>>,
    ) -> Result<(), Transient> {
        let all: Vec<Statement> = statements.iter().map(|(_, s)| s.clone()).collect();
        match self.lrs.post(&all).await {
            Ok(()) => {
                self.metrics.forwarded.inc_by(all.len() as u64);
                return Ok(());
            }
            Err(PostError::Refused { status, answer }) if statements.len() > 1 => {
                tracing::info!(status, %answer, statements = statements.len(), "the LRS refused a batch; sending its statements one by one");
            }
            Err(PostError::Refused { .. }) => {}
            Err(transient) => return Err(Transient::Lrs(transient)),
        }
        for (command_id, statement) in statements {
            match self.lrs.post(std::slice::from_ref(statement)).await {
                Ok(()) => self.metrics.forwarded.inc(),
                Err(PostError::Refused { status, answer }) => {
                    tracing::warn!(command.id = %command_id, status, %answer, "the LRS refused a statement; dead-lettered");
                    self.metrics.refused.inc();
                    let error = format!("{status}: {answer}");
                    for message in messages.get(command_id).into_iter().flatten() {
                        self.dead_letter(message, REFUSED, &error).await?;
                    }
                }
                Err(transient) => return Err(Transient::Lrs(transient)),
            }
        }
        Ok(())
    }

    async fn dead_letter(
        &self,
        message: &Message,
        reason: &str,
        error: &str,
    ) -> Result<(), Transient> {
        let failed = |e: &dyn std::fmt::Display| Transient::DeadLetter(e.to_string());
        dead_letter_from(
            &self.js,
            &self.nats,
            &self.nats.events_stream,
            message,
            reason,
            error,
        )
        .await
        .map_err(|e| failed(&e))?
        .await
        .map_err(|e| failed(&e))?;
        Ok(())
    }
}
