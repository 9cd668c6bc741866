//! Publishing the `track_changed` events a change wrote to its outbox
//! (`track_change_events`), and marking each once JetStream stored it.
//!
//! The command that made the change publishes its events right after the commit; the
//! applier's announce sweep publishes any left unmarked for a while (the command died, or NATS
//! was away). An event published twice carries the same `Nats-Msg-Id`, so JetStream stores it
//! once within its duplicate window, and readers drop a version they have seen in any case.

use std::time::Duration;

use async_nats::jetstream::{self, context::PublishError};
use sqlx::PgPool;
use sqlx::types::Json;
use uuid::Uuid;

use crate::messaging::{self, NatsConfig};
use crate::model::ProgressEvent;

/// Events published between two marks: bounds the acks in flight and a progress line's gap.
const PAGE: i64 = 1_000;

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("reading or marking the track change events")]
    Database(#[from] sqlx::Error),
    #[error("publishing track change event {0}")]
    Publish(Uuid, #[source] PublishError),
}

/// Publishes the unannounced events of change `units_version` of `track`; returns how many.
/// `progress(done)` is called after each page.
pub async fn publish_change(
    pool: &PgPool,
    js: &jetstream::Context,
    nats: &NatsConfig,
    track: Uuid,
    units_version: i64,
    progress: &mut (dyn FnMut(usize) + Send),
) -> Result<usize, OutboxError> {
    let mut published = 0;
    loop {
        let events: Vec<Json<ProgressEvent>> = sqlx::query_scalar(
            "select event from track_change_events
             where track_id = $1 and units_version = $2 and not announced
             order by user_id limit $3",
        )
        .bind(track)
        .bind(units_version)
        .bind(PAGE)
        .fetch_all(pool)
        .await?;
        if events.is_empty() {
            return Ok(published);
        }
        published += publish_and_mark(pool, js, nats, events).await?;
        progress(published);
    }
}

/// Publishes up to `limit` events left unannounced for longer than `grace`, oldest first;
/// returns how many. The applier's sweep runs it.
pub(crate) async fn announce_pending(
    pool: &PgPool,
    js: &jetstream::Context,
    nats: &NatsConfig,
    grace: Duration,
    limit: i64,
) -> Result<usize, OutboxError> {
    let events: Vec<Json<ProgressEvent>> = sqlx::query_scalar(
        "select event from track_change_events
         where not announced and created_at < now() - make_interval(secs => $1)
         order by created_at limit $2",
    )
    .bind(grace.as_secs_f64())
    .bind(limit)
    .fetch_all(pool)
    .await?;
    if events.is_empty() {
        return Ok(0);
    }
    publish_and_mark(pool, js, nats, events).await
}

/// Publishes `events`, waits for every ack, then marks them announced. An event JetStream
/// refuses for good (larger than the stream takes) is logged and marked too: publishing it
/// again cannot help.
async fn publish_and_mark(
    pool: &PgPool,
    js: &jetstream::Context,
    nats: &NatsConfig,
    events: Vec<Json<ProgressEvent>>,
) -> Result<usize, OutboxError> {
    let mut acks = Vec::with_capacity(events.len());
    for Json(event) in &events {
        match messaging::publish_event(js, nats, event).await {
            Ok(ack) => acks.push((event.event_id, ack)),
            Err(error) => refused(event.event_id, error)?,
        }
    }
    let acked = futures::future::join_all(
        acks.into_iter()
            .map(|(id, ack)| async move { (id, ack.await) }),
    )
    .await;
    for (id, ack) in acked {
        if let Err(error) = ack {
            refused(id, error)?;
        }
    }
    let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
    sqlx::query(
        "update track_change_events set announced = true where event_id = any($1) and not announced",
    )
    .bind(&ids)
    .execute(pool)
    .await?;
    Ok(ids.len())
}

fn refused(id: Uuid, error: PublishError) -> Result<(), OutboxError> {
    if !messaging::is_permanent(&error) {
        return Err(OutboxError::Publish(id, error));
    }
    tracing::error!(event.id = %id, error = %crate::telemetry::causes(&error), "JetStream refuses a track change event for good");
    Ok(())
}
