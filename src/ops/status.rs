//! How far behind the write path is, and what it could not do: the figures an operator (and
//! Prometheus, through the API's `/metrics`) watches.

use std::collections::BTreeMap;

use async_nats::jetstream::{self, consumer::PullConsumer};
use chrono::{DateTime, Utc};
use futures::TryStreamExt as _;
use serde::Serialize;
use sqlx::PgPool;

use crate::messaging::NatsConfig;

/// The write path's backlog and failures at one moment.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Lag {
    /// Commands stored and not yet applied and acknowledged (the work-queue stream's size).
    pub commands_waiting: u64,
    /// Of those, not yet delivered to any applier.
    pub pending: u64,
    /// Delivered to an applier and not yet acknowledged (in a batch, or held back behind a
    /// missing predecessor).
    pub ack_pending: u64,
    /// Learners (learner and track) with commands published and not yet applied: their
    /// workflow is ahead of the projection until the applier catches up or reconcile
    /// re-publishes what was lost. The work-queue stream holds each learner's commands under
    /// the learner's own subject, so this is the stream's count of subjects, read with the
    /// rest, not a scan of the ledger.
    pub unreconciled_learners: u64,
    /// How long the oldest waiting command has waited; `None` when none waits.
    pub oldest_waiting_seconds: Option<f64>,
    /// Dead letters by reason.
    pub dead_letters: BTreeMap<String, u64>,
    /// Applied changes whose event JetStream has not confirmed yet, a track change's events
    /// included; the appliers' sweep announces those left over `APPLIER_ANNOUNCE_AFTER_SECS`.
    pub unannounced: i64,
    /// Of those, applied more than a minute ago: more than a sweep should leave.
    pub unannounced_over_a_minute: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("reading the stream {0}")]
    Stream(String, #[source] async_nats::Error),
    #[error("reading the applier's consumer {0} (has an applier run with APPLIER_DURABLE={0}?)")]
    Consumer(String, #[source] async_nats::Error),
    #[error("querying the ledger")]
    Database(#[from] sqlx::Error),
}

/// Reads the lag from the commands stream, the applier's durable consumer, the dead-letter
/// stream and the ledger.
pub async fn lag(
    js: &jetstream::Context,
    pool: &PgPool,
    nats: &NatsConfig,
    durable: &str,
) -> Result<Lag, StatusError> {
    let stream_error = |name: &str| {
        let name = name.to_owned();
        move |e: async_nats::Error| StatusError::Stream(name, e)
    };
    let mut commands = js
        .get_stream(&nats.commands_stream)
        .await
        .map_err(|e| stream_error(&nats.commands_stream)(e.into()))?;
    let state = commands
        .info()
        .await
        .map_err(|e| stream_error(&nats.commands_stream)(e.into()))?
        .state
        .clone();
    let mut consumer: PullConsumer = commands
        .get_consumer(durable)
        .await
        .map_err(|e| StatusError::Consumer(durable.to_owned(), e))?;
    let consumer = consumer
        .info()
        .await
        .map_err(|e| StatusError::Consumer(durable.to_owned(), e.into()))?;
    let oldest_waiting_seconds = (state.messages > 0).then(|| {
        let first = DateTime::<Utc>::from_timestamp_nanos(
            i64::try_from(state.first_timestamp.unix_timestamp_nanos()).unwrap_or(i64::MAX),
        );
        (Utc::now() - first).num_milliseconds().max(0) as f64 / 1000.0
    });

    let dlq = js
        .get_stream(&nats.dlq_stream)
        .await
        .map_err(|e| stream_error(&nats.dlq_stream)(e.into()))?;
    let reason_prefix = format!("{}.dlq.", nats.subject_prefix);
    let dead_letters = dlq
        .info_with_subjects(format!("{reason_prefix}>"))
        .await
        .map_err(|e| stream_error(&nats.dlq_stream)(e.into()))?
        .map_ok(|(subject, count)| {
            let reason = subject
                .strip_prefix(&reason_prefix)
                .unwrap_or(&subject)
                .to_owned();
            (reason, count as u64)
        })
        .try_collect::<BTreeMap<String, u64>>()
        .await
        .map_err(|e| stream_error(&nats.dlq_stream)(e.into()))?;

    let (unannounced, unannounced_over_a_minute): (i64, i64) = sqlx::query_as(
        "select count(*), count(*) filter (where at < now() - interval '1 minute')
         from (select applied_at as at from progress_ledger
               where outcome = 'applied' and not announced
               union all
               select created_at from track_change_events where not announced) as waiting",
    )
    .fetch_one(pool)
    .await?;

    Ok(Lag {
        commands_waiting: state.messages,
        unreconciled_learners: state.subjects_count,
        pending: consumer.num_pending,
        ack_pending: consumer.num_ack_pending as u64,
        oldest_waiting_seconds,
        dead_letters,
        unannounced,
        unannounced_over_a_minute,
    })
}
