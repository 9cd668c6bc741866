//! Creates or updates the streams at start-up, idempotently, and logs what they ended up as.

use async_nats::jetstream::{self, stream};

use super::NatsConfig;

/// The largest command the commands stream stores (256 KiB); JetStream refuses a larger
/// publish, so the publisher learns of it at once. A command is a few hundred bytes; the cap
/// keeps a dead letter (the original plus a bounded error) far below the server's
/// max_payload, so it can always be published.
pub const MAX_COMMAND_BYTES: i32 = 256 * 1024;

/// Retention is chosen per stream:
/// - commands: a work queue — a command leaves the stream when the applier acks it, never by
///   age; when `commands_max_bytes` is reached a publish is refused (and retried by the
///   workflow), never an unapplied command dropped;
/// - dead letters: kept until handled — no age limit, and at `dlq_max_bytes` a new dead letter
///   is refused (the applier retries and logs it) rather than an old one dropped;
/// - events: bounded by age and bytes for subscribers, oldest dropped first; they can always
///   be derived again from the projection.
pub async fn ensure_streams(
    js: &jetstream::Context,
    config: &NatsConfig,
) -> Result<(), StreamSetupError> {
    use stream::{DiscardPolicy, RetentionPolicy};
    let prefix = &config.subject_prefix;
    let streams = [
        stream::Config {
            name: config.commands_stream.clone(),
            subjects: vec![format!("{prefix}.cmd.>")],
            retention: RetentionPolicy::WorkQueue,
            max_bytes: config.commands_max_bytes,
            discard: DiscardPolicy::New,
            max_message_size: MAX_COMMAND_BYTES,
            ..Default::default()
        },
        stream::Config {
            name: config.events_stream.clone(),
            subjects: vec![format!("{prefix}.evt.>")],
            retention: RetentionPolicy::Limits,
            max_age: config.events_max_age(),
            max_bytes: config.events_max_bytes,
            discard: DiscardPolicy::Old,
            ..Default::default()
        },
        stream::Config {
            name: config.dlq_stream.clone(),
            subjects: vec![format!("{prefix}.dlq.>")],
            retention: RetentionPolicy::Limits,
            max_bytes: config.dlq_max_bytes,
            discard: DiscardPolicy::New,
            ..Default::default()
        },
    ];
    for wanted in streams {
        let name = wanted.name.clone();
        let wanted = stream::Config {
            storage: stream::StorageType::File,
            duplicate_window: config.duplicate_window(),
            num_replicas: config.replicas,
            ..wanted
        };
        if let Ok(mut existing) = js.get_stream(&name).await
            && let Ok(info) = existing.info().await
            && info.config.retention != wanted.retention
        {
            return Err(StreamSetupError::Retention {
                name,
                found: info.config.retention,
                wanted: wanted.retention,
            });
        }
        let info = js
            .create_or_update_stream(wanted)
            .await
            .map_err(|source| StreamSetupError::Create { name, source })?;
        tracing::info!(
            stream = %info.config.name,
            subjects = ?info.config.subjects,
            retention = ?info.config.retention,
            replicas = info.config.num_replicas,
            max_age_secs = info.config.max_age.as_secs(),
            max_bytes = info.config.max_bytes,
            duplicate_window_secs = info.config.duplicate_window.as_secs(),
            messages = info.state.messages,
            "stream ready (fsync is the server's setting: deploy/README.md recommends sync_interval always)"
        );
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum StreamSetupError {
    #[error("creating or updating stream {name}")]
    Create {
        name: String,
        #[source]
        source: jetstream::context::CreateStreamError,
    },
    /// JetStream cannot change a stream's retention in place.
    #[error(
        "stream {name} exists with {found:?} retention, and this version needs {wanted:?}: once \
         the applier has applied everything in it (`nats consumer info {name} progress-applier`: \
         no pending, no ack pending), delete it (`nats stream rm {name}`) and start again"
    )]
    Retention {
        name: String,
        found: stream::RetentionPolicy,
        wanted: stream::RetentionPolicy,
    },
}

/// Deletes the three streams of `config`, ignoring any that do not exist: for benchmarks and
/// tests that made their own, never for a shared deployment.
pub async fn delete_streams(js: &jetstream::Context, config: &NatsConfig) {
    for stream in [
        &config.commands_stream,
        &config.events_stream,
        &config.dlq_stream,
    ] {
        let _ = js.delete_stream(stream).await;
    }
}
