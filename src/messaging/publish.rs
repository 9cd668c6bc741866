//! Publishing commands and events with their CloudEvents headers, awaiting JetStream's ack.

use async_nats::jetstream::{
    self, ErrorCode,
    context::{PublishAckFuture, PublishError, PublishErrorKind},
};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{CloudEvent, NatsConfig, cloud_event_headers};
use crate::model::{ErasedEvent, ProgressCommand, ProgressEvent};

pub const SOURCE: &str = "learning-progress";

/// Sends a command; the returned future resolves to JetStream's ack (or a timeout).
pub async fn publish_command(
    js: &jetstream::Context,
    config: &NatsConfig,
    command: &ProgressCommand,
) -> Result<PublishAckFuture, jetstream::context::PublishError> {
    publish_command_copy(js, config, command, None).await
}

/// Sends a command as a new copy: its `Nats-Msg-Id` is `<command_id>.<copy>`, so JetStream
/// stores it even when the original's id is still in the duplicate window — the original may
/// be exactly what the broker lost. The payload, and the ledger's deduplication by
/// `command_id`, are the same as the original's.
pub async fn publish_command_copy(
    js: &jetstream::Context,
    config: &NatsConfig,
    command: &ProgressCommand,
    copy: Option<i64>,
) -> Result<PublishAckFuture, jetstream::context::PublishError> {
    let kind = format!("learning.progress.command.{}.v1", command.kind());
    let mut headers = cloud_event_headers(&CloudEvent {
        id: command.command_id,
        kind: &kind,
        source: SOURCE,
        time: Utc::now(),
    });
    if let Some(copy) = copy {
        headers.insert(
            "Nats-Msg-Id",
            format!("{}.{copy}", command.command_id).as_str(),
        );
    }
    let payload = serde_json::to_vec(command).expect("commands always serialize");
    js.publish_with_headers(
        config.command_subject(command.user_id, command.track_id),
        headers,
        payload.into(),
    )
    .await
}

/// Sends an event; the returned future resolves to JetStream's ack (or a timeout).
pub async fn publish_event(
    js: &jetstream::Context,
    config: &NatsConfig,
    event: &ProgressEvent,
) -> Result<PublishAckFuture, jetstream::context::PublishError> {
    let progress = &event.progress.progress;
    let learner = (progress.user_id, progress.track_id);
    let stamp = (event.event_id, event.kind.as_str(), event.applied_at);
    publish_on_event_subject(js, config, learner, stamp, event).await
}

/// Sends the tombstone of an erased learner's track on that learner's event subject; the
/// returned future resolves to JetStream's ack.
pub async fn publish_erased(
    js: &jetstream::Context,
    config: &NatsConfig,
    event: &ErasedEvent,
) -> Result<PublishAckFuture, jetstream::context::PublishError> {
    let learner = (event.user_id, event.track_id);
    let stamp = (event.event_id, event.kind.as_str(), event.erased_at);
    publish_on_event_subject(js, config, learner, stamp, event).await
}

/// Any event payload on `<prefix>.evt.<user>.<track>`, with the CloudEvents headers of its
/// `(id, type, time)`: one place for what every event carries.
async fn publish_on_event_subject(
    js: &jetstream::Context,
    config: &NatsConfig,
    (user_id, track_id): (Uuid, Uuid),
    (id, kind, time): (Uuid, &str, DateTime<Utc>),
    payload: &impl serde::Serialize,
) -> Result<PublishAckFuture, jetstream::context::PublishError> {
    let kind = format!("learning.progress.event.{kind}.v1");
    let headers = cloud_event_headers(&CloudEvent {
        id,
        kind: &kind,
        source: SOURCE,
        time,
    });
    let payload = serde_json::to_vec(payload).expect("events always serialize");
    js.publish_with_headers(
        config.event_subject(user_id, track_id),
        headers,
        payload.into(),
    )
    .await
}

/// JetStream API errors a retry cannot change: the message is larger than the stream takes
/// (10054), or the publish's own expectations fail (10060 expected stream, 10070 last msg id,
/// 10071 last sequence).
const PERMANENT_API_ERRORS: [ErrorCode; 4] = [
    ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM,
    ErrorCode::STREAM_NOT_MATCH,
    ErrorCode::STREAM_WRONG_LAST_MESSAGE_ID,
    ErrorCode::STREAM_WRONG_LAST_SEQUENCE,
];

/// True when publishing the same message again would be refused again. No stream answering
/// (async-nats' `StreamNotFound`: no responders) is not permanent: it is how a stream looks
/// during a leader election or a rolling restart. Neither are timeouts, a full stream, or
/// "temporarily unavailable".
pub fn is_permanent(error: &PublishError) -> bool {
    match error.kind() {
        PublishErrorKind::MaxPayloadExceeded
        | PublishErrorKind::WrongLastMessageId
        | PublishErrorKind::WrongLastSequence => true,
        PublishErrorKind::Other => std::error::Error::source(error)
            .and_then(|e| e.downcast_ref::<jetstream::Error>())
            .is_some_and(|api| PERMANENT_API_ERRORS.contains(&api.error_code())),
        _ => false,
    }
}
