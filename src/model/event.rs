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
    /// The command's type, e.g. `unit_completed`; or `track_changed`: the track's units
    /// changed (a unit added or removed), and with them this learner's progress.
    #[serde(rename = "type")]
    // the command schema's `type`s and `track_changed`; tests/schemas.rs checks the lists agree
    #[schemars(extend("enum" = ["track_started", "unit_completed", "assessment_recorded", "track_completed", "track_changed"]))]
    pub kind: String,
    /// The progress version after the change; readers keep only the newest.
    #[schemars(range(min = 1))]
    pub version: i64,
    pub occurred_at: DateTime<Utc>,
    pub applied_at: DateTime<Utc>,
    pub progress: ProgressView,
}
