//! Creates or updates the streams at start-up, idempotently, and logs what they ended up as.

use async_nats::jetstream::{self, stream};

use super::NatsConfig;

/// The largest command the commands stream stores (256 KiB); JetStream refuses a larger
/// publish, so the publisher learns of it at once.
pub const MAX_COMMAND_BYTES: i32 = 256 * 1024;

pub async fn ensure_streams(
    js: &jetstream::Context,
    config: &NatsConfig,
) -> Result<(), jetstream::context::CreateStreamError> {
    // a command is a few hundred bytes; the cap keeps a dead letter (the original plus a
    // bounded error) far below the server's max_payload, so it can always be published
    let streams = [
        (
            &config.commands_stream,
            format!("{}.cmd.>", config.subject_prefix),
            MAX_COMMAND_BYTES,
        ),
        (
            &config.events_stream,
            format!("{}.evt.>", config.subject_prefix),
            0,
        ),
        (
            &config.dlq_stream,
            format!("{}.dlq.>", config.subject_prefix),
            0,
        ),
    ];
    for (name, subject, max_message_size) in streams {
        let info = js
            .create_or_update_stream(stream::Config {
                name: name.clone(),
                subjects: vec![subject],
                storage: stream::StorageType::File,
                retention: stream::RetentionPolicy::Limits,
                max_age: config.max_age(),
                max_message_size,
                duplicate_window: config.duplicate_window(),
                num_replicas: config.replicas,
                ..Default::default()
            })
            .await?;
        tracing::info!(
            stream = %info.config.name,
            subjects = ?info.config.subjects,
            storage = ?info.config.storage,
            replicas = info.config.num_replicas,
            max_age_secs = info.config.max_age.as_secs(),
            duplicate_window_secs = info.config.duplicate_window.as_secs(),
            messages = info.state.messages,
            "stream ready (server fsync: its default interval, see DESIGN: Guarantees)"
        );
    }
    Ok(())
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
