//! Dead letters: the original bytes and headers, plus why, on `<prefix>.dlq.<reason>`.
//!
//! A dead letter must be publishable whatever the original carried: the original's JetStream
//! headers (`Nats-Msg-Id`, `Nats-Expected-*`, …) are instructions to the stream that took the
//! original, so they travel renamed (`lp-dlq-original-<name>`), and what the dead letter adds
//! is bounded, so it fits wherever the original did.

use async_nats::HeaderMap;
use async_nats::jetstream::{self, Message, context::PublishAckFuture};
use uuid::Uuid;

use crate::messaging::NatsConfig;

/// The longest error text a dead letter carries; longer ones are cut at a char boundary.
pub(crate) const MAX_ERROR_BYTES: usize = 512;

/// Publishes the command `message` to the dead-letter stream; the future resolves to
/// JetStream's ack.
pub(super) async fn dead_letter(
    js: &jetstream::Context,
    config: &NatsConfig,
    message: &Message,
    reason: &str,
    error: &str,
) -> Result<PublishAckFuture, jetstream::context::PublishError> {
    dead_letter_from(js, config, &config.commands_stream, message, reason, error).await
}

/// Publishes `message`, delivered from `stream`, to the dead-letter stream (the xAPI
/// forwarder dead-letters events); the future resolves to JetStream's ack.
pub(crate) async fn dead_letter_from(
    js: &jetstream::Context,
    config: &NatsConfig,
    stream: &str,
    message: &Message,
    reason: &str,
    error: &str,
) -> Result<PublishAckFuture, jetstream::context::PublishError> {
    let info = message.info().ok();
    let mut headers = HeaderMap::new();
    if let Some(original) = &message.headers {
        for (name, values) in original.iter() {
            let name: &str = name.as_ref();
            let name = if name.to_ascii_lowercase().starts_with("nats-") {
                format!("lp-dlq-original-{name}")
            } else {
                name.to_owned()
            };
            for value in values {
                headers.append(name.as_str(), value.as_str());
            }
        }
    }
    // one dead letter per original message however often it is retried; a message whose
    // place in the stream is unknown gets an id of its own rather than a shared one
    let id = match &info {
        Some(info) => format!("dlq-{stream}-{}", info.stream_sequence),
        None => format!("dlq-{}", Uuid::new_v4()),
    };
    headers.insert("Nats-Msg-Id", id.as_str());
    headers.insert("lp-dlq-reason", reason);
    // header values are single lines
    headers.insert(
        "lp-dlq-error",
        bounded(error).replace(['\r', '\n'], " ").as_str(),
    );
    headers.insert("lp-dlq-subject", message.subject.as_str());
    headers.insert("lp-dlq-stream", stream);
    if let Some(info) = &info {
        headers.insert(
            "lp-dlq-stream-seq",
            info.stream_sequence.to_string().as_str(),
        );
        headers.insert("lp-dlq-deliveries", info.delivered.to_string().as_str());
    }
    js.publish_with_headers(config.dlq_subject(reason), headers, message.payload.clone())
        .await
}

fn bounded(error: &str) -> &str {
    if error.len() <= MAX_ERROR_BYTES {
        return error;
    }
    let mut end = MAX_ERROR_BYTES;
    while !error.is_char_boundary(end) {
        end -= 1;
    }
    &error[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_errors_are_cut_at_a_char_boundary() {
        let error = "é".repeat(MAX_ERROR_BYTES);
        let cut = bounded(&error);
        assert!(cut.len() <= MAX_ERROR_BYTES && cut.len() >= MAX_ERROR_BYTES - 1);
        assert!(cut.chars().all(|c| c == 'é'));
        assert_eq!(bounded("short"), "short");
    }
}
