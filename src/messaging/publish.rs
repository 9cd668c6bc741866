//! Publishing commands and events with their CloudEvents headers, awaiting JetStream's ack.

use async_nats::jetstream::{self, context::PublishAckFuture};
use chrono::Utc;

use super::{CloudEvent, NatsConfig, cloud_event_headers};
use crate::model::{ProgressCommand, ProgressEvent};

pub const SOURCE: &str = "learning-progress";

/// Sends a command; the returned future resolves to JetStream's ack (or a timeout).
pub async fn publish_command(
    js: &jetstream::Context,
    config: &NatsConfig,
    command: &ProgressCommand,
) -> Result<PublishAckFuture, jetstream::context::PublishError> {
    let kind = format!("learning.progress.command.{}.v1", command.kind());
    let headers = cloud_event_headers(&CloudEvent {
        id: command.command_id,
        kind: &kind,
        source: SOURCE,
        time: Utc::now(),
    });
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
    let kind = format!("learning.progress.event.{}.v1", event.kind);
    let headers = cloud_event_headers(&CloudEvent {
        id: event.event_id,
        kind: &kind,
        source: SOURCE,
        time: event.applied_at,
    });
    let payload = serde_json::to_vec(event).expect("events always serialize");
    let progress = &event.progress.progress;
    js.publish_with_headers(
        config.event_subject(progress.user_id, progress.track_id),
        headers,
        payload.into(),
    )
    .await
}
