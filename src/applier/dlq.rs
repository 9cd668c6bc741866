//! Dead letters: the original bytes and headers, plus why, on `<prefix>.dlq.<reason>`.

use async_nats::HeaderMap;
use async_nats::jetstream::{self, Message, context::PublishAckFuture};

use crate::messaging::NatsConfig;

/// Publishes `message` to the dead-letter stream; the future resolves to JetStream's ack.
pub async fn dead_letter(
    js: &jetstream::Context,
    config: &NatsConfig,
    message: &Message,
    reason: &str,
    error: &str,
) -> Result<PublishAckFuture, jetstream::context::PublishError> {
    let (stream_seq, deliveries) = message
        .info()
        .map(|i| (i.stream_sequence, i.delivered))
        .unwrap_or_default();
    let mut headers = HeaderMap::new();
    if let Some(original) = &message.headers {
        for (name, values) in original.iter() {
            for value in values {
                headers.append(name.as_ref(), value.as_str());
            }
        }
    }
    // one dead letter per original message, however often it is retried
    headers.insert(
        "Nats-Msg-Id",
        format!("dlq-{}-{stream_seq}", config.commands_stream).as_str(),
    );
    headers.insert("lp-dlq-reason", reason);
    // header values are single lines
    headers.insert("lp-dlq-error", error.replace(['\r', '\n'], " ").as_str());
    headers.insert("lp-dlq-subject", message.subject.as_str());
    headers.insert("lp-dlq-stream", config.commands_stream.as_str());
    headers.insert("lp-dlq-stream-seq", stream_seq.to_string().as_str());
    headers.insert("lp-dlq-deliveries", deliveries.to_string().as_str());
    js.publish_with_headers(config.dlq_subject(reason), headers, message.payload.clone())
        .await
}
