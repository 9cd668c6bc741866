//! The event feed: every progress event, applied to this replica's cache.
//!
//! Each replica follows the events stream with an ordered JetStream consumer: an ephemeral,
//! unacknowledged, single-replica consumer that the client checks message by message. A gap
//! in its sequence (a delivery lost on a broken route, say) or two missed heartbeats make the
//! client recreate it from the last stream sequence it saw, so an event the replica did not
//! hear is delivered again instead of leaving its learner stale until the cache's TTL. A core
//! subscription cannot do that: an event stored while the routes to this replica's NATS node
//! were down reached the stream but never this replica, and nothing said so.
//!
//! The feed starts at the stream's end (an empty cache loads from the database anyway) and
//! clears the cache each time it starts following, since whatever was loaded before may have
//! missed events. Whatever goes wrong with the consumer itself, it starts over the same way,
//! with a backoff, while the replica keeps serving from the database. A disconnect or a slow
//! consumer also clears the cache: until the feed is back, reads go to the database.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, consumer::DeliverPolicy, consumer::pull};
use async_nats::{Client, Event};
use futures::StreamExt as _;
use tokio_util::sync::CancellationToken;

use super::ProgressCache;
use super::metrics::Metrics;
use crate::messaging::{self, NatsConfig};
use crate::model::{ErasedEvent, ProgressEvent};

/// The `ce-type` of an [`ErasedEvent`]; every other event is a [`ProgressEvent`].
const ERASED_TYPE: &str = "learning.progress.event.erased.v1";

/// How long one pull of the ordered consumer waits; its heartbeats come at half of it, and two
/// missed ones make the client recreate the consumer, so this bounds how long a replica stays
/// deaf after the consumer's node dies.
const PULL_EXPIRES: Duration = Duration::from_secs(5);

/// Connects to NATS, clearing the cache whenever events may have been missed.
pub(crate) async fn connect(
    config: &NatsConfig,
    cache: ProgressCache,
) -> Result<Client, messaging::ConnectError> {
    // keeps retrying a server that is down at start-up; /readyz reports it meanwhile
    let client = messaging::options(config, "api")
        .await?
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
        .await?;
    Ok(client)
}

/// Whether the feed follows the events stream right now; `/readyz` reports it.
#[derive(Clone, Default)]
pub struct FeedState(Arc<AtomicBool>);

impl FeedState {
    pub fn following(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    fn set(&self, following: bool) {
        self.0.store(following, Ordering::SeqCst);
    }
}

/// Why the feed stopped following and starts over.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FeedError {
    #[error("looking up the events stream {stream}")]
    Stream {
        stream: String,
        #[source]
        source: async_nats::jetstream::context::GetStreamError,
    },
    #[error("reading the events stream's state")]
    Info(#[from] async_nats::jetstream::context::RequestError),
    #[error("creating the ordered consumer")]
    Consumer(#[from] async_nats::jetstream::stream::ConsumerError),
    #[error("pulling from the ordered consumer")]
    Pull(#[from] async_nats::jetstream::consumer::StreamError),
    #[error("following the events stream")]
    Ordered(#[from] async_nats::jetstream::consumer::pull::OrderedError),
    #[error("the ordered consumer replayed from before its start; starting over")]
    Replayed,
    #[error("the events stream ended")]
    Ended,
}

/// The ordered consumer of one start: events after `floor`, the stream's last sequence when
/// it was created.
pub(crate) struct Following {
    messages: pull::Ordered,
    floor: u64,
}

/// Creates an ordered consumer at the end of the events stream, then clears the cache: from
/// here on every event reaches the cache, and what it held before may have missed some.
pub(crate) async fn follow(
    client: &Client,
    config: &NatsConfig,
    cache: &ProgressCache,
) -> Result<Following, FeedError> {
    let js = jetstream::new(client.clone());
    let mut stream = js
        .get_stream(&config.events_stream)
        .await
        .map_err(|source| FeedError::Stream {
            stream: config.events_stream.clone(),
            source,
        })?;
    let floor = stream.info().await?.state.last_sequence;
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: config.events_filter(),
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: floor + 1,
            },
            max_expires: PULL_EXPIRES,
            ..Default::default()
        })
        .await?;
    let messages = consumer.messages().await?;
    cache.clear();
    Ok(Following { messages, floor })
}

/// Applies events to the cache until `shutdown` fires, starting over (with a backoff) from the
/// stream's end whenever following fails. `first` is a consumer already created, if any.
pub(crate) async fn run(
    client: Client,
    config: NatsConfig,
    first: Option<Following>,
    cache: ProgressCache,
    metrics: Metrics,
    state: FeedState,
    shutdown: CancellationToken,
) {
    let mut next = first;
    let mut backoff = Duration::from_millis(100);
    loop {
        let following = match next.take() {
            Some(following) => Ok(following),
            None => tokio::select! {
                _ = shutdown.cancelled() => return,
                following = follow(&client, &config, &cache) => following,
            },
        };
        let error = match following {
            Ok(following) => {
                state.set(true);
                backoff = Duration::from_millis(100);
                tracing::info!(stream = %config.events_stream, from = following.floor + 1, "following progress events");
                let result = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    result = apply_all(following, &config, &cache, &metrics) => result,
                };
                state.set(false);
                // whatever was cached may miss events until the next start clears it
                cache.clear();
                result
            }
            Err(error) => error,
        };
        tracing::warn!(error = %crate::telemetry::causes(&error), retry_in = ?backoff, "progress events feed stopped; reads go to the database until it is back");
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Applies each event to the cache; returns when the consumer fails. An event is believed only
/// about the learner its subject names: whoever may publish on one learner's subject must not
/// be able to change another's progress, so an event whose body names someone else is dropped.
async fn apply_all(
    mut following: Following,
    config: &NatsConfig,
    cache: &ProgressCache,
    metrics: &Metrics,
) -> FeedError {
    while let Some(message) = following.messages.next().await {
        let message = match message {
            Ok(message) => message,
            Err(error) => return error.into(),
        };
        // a consumer recreated before its first event starts again from the stream's first
        let sequence = message.info().map(|info| info.stream_sequence).unwrap_or(0);
        if sequence <= following.floor {
            return FeedError::Replayed;
        }
        if messaging::header_str(message.headers.as_ref(), "ce-type") == Some(ERASED_TYPE) {
            erase(&message, config, cache, metrics).await;
            continue;
        }
        match serde_json::from_slice::<ProgressEvent>(&message.payload) {
            Ok(event)
                if message.subject.as_str()
                    != config.event_subject(
                        event.progress.progress.user_id,
                        event.progress.progress.track_id,
                    ) =>
            {
                metrics
                    .cache_events
                    .with_label_values(&["mismatched"])
                    .inc();
                tracing::warn!(subject = %message.subject, event.id = %event.event_id, sequence, "ignoring a progress event about another learner than its subject names");
            }
            Ok(event) => {
                let applied = cache.apply(&event).await;
                tracing::debug!(
                    event.id = %event.event_id,
                    user.id = %event.progress.progress.user_id,
                    version = event.version,
                    sequence,
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
    FeedError::Ended
}

/// An erased learner's track: forgotten, if the event's subject names that learner and track.
async fn erase(
    message: &jetstream::Message,
    config: &NatsConfig,
    cache: &ProgressCache,
    metrics: &Metrics,
) {
    match serde_json::from_slice::<ErasedEvent>(&message.payload) {
        Ok(event)
            if message.subject.as_str() == config.event_subject(event.user_id, event.track_id) =>
        {
            cache.erase((event.user_id, event.track_id)).await;
            tracing::info!(event.id = %event.event_id, user.id = %event.user_id, track.id = %event.track_id, "learner erased; forgotten");
        }
        Ok(event) => {
            metrics
                .cache_events
                .with_label_values(&["mismatched"])
                .inc();
            tracing::warn!(subject = %message.subject, event.id = %event.event_id, "ignoring an erasure about another learner than its subject names");
        }
        Err(error) => {
            metrics.cache_events.with_label_values(&["malformed"]).inc();
            tracing::warn!(subject = %message.subject, %error, "ignoring a malformed erasure event");
        }
    }
}
