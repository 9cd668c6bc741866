//! CloudEvents binary-mode headers, plus `Nats-Msg-Id` equal to the event id so JetStream
//! drops a republished duplicate within its window.

use async_nats::HeaderMap;
use chrono::{DateTime, SecondsFormat, Utc};
use uuid::Uuid;

/// The attributes of one CloudEvent.
pub struct CloudEvent<'a> {
    pub id: Uuid,
    /// e.g. `learning.progress.command.unit_completed.v1`
    pub kind: &'a str,
    pub source: &'a str,
    pub time: DateTime<Utc>,
}

pub fn cloud_event_headers(event: &CloudEvent<'_>) -> HeaderMap {
    let id = event.id.to_string();
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", id.as_str());
    headers.insert("Content-Type", "application/json");
    headers.insert("ce-specversion", "1.0");
    headers.insert("ce-id", id.as_str());
    headers.insert("ce-type", event.kind);
    headers.insert("ce-source", event.source);
    headers.insert(
        "ce-time",
        event
            .time
            .to_rfc3339_opts(SecondsFormat::Micros, true)
            .as_str(),
    );
    headers
}

/// A header's value as text, if present.
pub fn header_str<'h>(headers: Option<&'h HeaderMap>, name: &str) -> Option<&'h str> {
    headers?.get(name).map(|v| v.as_str())
}
