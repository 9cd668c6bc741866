//! `ProgressEvent`: what the applier announces after a command changed a learner's progress.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::view::ProgressView;

/// Carries the full snapshot after the change, so a subscriber never needs the database.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ProgressEvent {
    /// The id of the command that caused it (for `track_changed`, an id derived from the
    /// track, the change and the learner); also the `Nats-Msg-Id`.
    pub event_id: Uuid,
    /// The command's type, e.g. `unit_completed`; or what an operator did: `rebuilt` (the
    /// row was rewritten from its ledger by `learning-progress rebuild`), `track_changed` (the
    /// track's units changed — a unit added or removed — and with them this learner's progress).
    #[serde(rename = "type")]
    // the command schema's `type`s, then the operators'; tests/schemas.rs checks the lists agree
    #[schemars(extend("enum" = ["track_started", "unit_completed", "assessment_recorded", "track_completed", "rebuilt", "track_changed"]))]
    pub kind: String,
    /// The progress version after the change; readers keep only the newest.
    #[schemars(range(min = 1))]
    pub version: i64,
    pub occurred_at: DateTime<Utc>,
    pub applied_at: DateTime<Utc>,
    pub progress: ProgressView,
}

/// The `type` of an [`ErasedEvent`], and the `<type>` of its `ce-type`.
pub const ERASED: &str = "erased";

/// Announces that a learner's progress on a track was erased (`learning-progress erase`): the
/// row, the ledger and the learner's messages are gone, and subscribers forget what they hold
/// of that learner on that track. Should the learner start the track again, their versions
/// start again at 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ErasedEvent {
    /// UUIDv5 of the learner, the track and the time of the erasure; also the `Nats-Msg-Id`.
    pub event_id: Uuid,
    /// Always `erased`.
    #[serde(rename = "type")]
    #[schemars(extend("const" = ERASED))]
    pub kind: String,
    /// One more than the last version the learner's progress on the track had (1 when it had
    /// none), so that a subscriber ordering by version takes it after every change before it.
    #[schemars(range(min = 1))]
    pub version: i64,
    pub user_id: Uuid,
    pub track_id: Uuid,
    pub erased_at: DateTime<Utc>,
}

impl ErasedEvent {
    pub fn new(
        user_id: Uuid,
        track_id: Uuid,
        last_version: i64,
        erased_at: DateTime<Utc>,
    ) -> ErasedEvent {
        let name = format!(
            "erased/{user_id}/{track_id}/{}",
            erased_at.timestamp_micros()
        );
        ErasedEvent {
            event_id: Uuid::new_v5(&Uuid::NAMESPACE_URL, name.as_bytes()),
            kind: ERASED.to_owned(),
            version: last_version.max(0) + 1,
            user_id,
            track_id,
            erased_at,
        }
    }
}
