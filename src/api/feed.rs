//! The event feed: every progress event, applied to this replica's cache.
//!
//! Each replica subscribes to `<prefix>.evt.>` with a plain core NATS subscription rather than
//! an ordered JetStream consumer. JetStream publishes are delivered to core subscribers too, so
//! every replica sees every event as it is stored, with no consumer state on the server to
//! create, name per replica or clean up after a crash, and no replay at start (an empty cache
//! loads from the database anyway). What a core subscription loses — messages sent while
//! disconnected, or dropped because this replica fell behind — is exactly what the cache
//! cannot afford to miss, so on a reconnect, a disconnect and a slow-consumer notice the cache
//! is cleared and refills from the database; the TTL is the last safety net. An ordered
//! consumer would give gap detection and replay, which the cache does not need.

use async_nats::{Client, ConnectOptions, Event, Subscriber};
use futures::StreamExt as _;
use tokio_util::sync::CancellationToken;

use super::ProgressCache;
use super::metrics::Metrics;
use crate::messaging::NatsConfig;
use crate::model::ProgressEvent;

/// Connects to NATS, clearing the cache whenever events may have been missed.
pub async fn connect(
    config: &NatsConfig,
    cache: ProgressCache,
) -> Result<Client, async_nats::ConnectError> {
    ConnectOptions::new()
        .name("learning-progress-api")
        // keep retrying a server that is down at start-up; /readyz reports it meanwhile
        .retry_on_initial_connect()
        .event_callback(move |event| {
            let cache = cache.clone();
            async move {
                match event {
                    Event::Connected | Event::Disconnected | Event::SlowConsumer(_) => {
                        tracing::info!(%event, "NATS connection changed; clearing the progress cache");
                        cache.clear();
                    }
                    Event::Closed => tracing::debug!("NATS connection closed"),
                    other => tracing::warn!(event = %other, "NATS"),
                }
            }
        })
        .connect(config.servers())
        .await
}

/// Subscribes to every event subject.
pub async fn subscribe(
    client: &Client,
    config: &NatsConfig,
) -> Result<Subscriber, async_nats::SubscribeError> {
    client.subscribe(config.events_filter()).await
}

/// Applies events to the cache until the subscription ends or `shutdown` fires.
pub async fn run(
    mut events: Subscriber,
    cache: ProgressCache,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    loop {
        let message = tokio::select! {
            _ = shutdown.cancelled() => break,
            message = events.next() => match message {
                Some(message) => message,
                None => break,
            },
        };
        match serde_json::from_slice::<ProgressEvent>(&message.payload) {
            Ok(event) => {
                let applied = cache.apply(&event).await;
                tracing::debug!(
                    event.id = %event.event_id,
                    user.id = %event.progress.progress.user_id,
                    version = event.version,
                    applied,
                    "progress event"
                );
            }
            Err(error) => {
                metrics.cache_events.with_label_values(&["malformed"]).inc();
                tracing::warn!(subject = %message.subject, %error, "ignoring a malformed progress event");
            }
        }
    }
    let _ = events.unsubscribe().await;
}
