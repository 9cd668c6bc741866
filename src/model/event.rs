//! `ProgressEvent`: what the applier announces after a command changed a learner's progress.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::view::ProgressView;

/// Carries the full snapshot after the change, so a subscriber never needs the database.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgressEvent {
    /// The id of the command that caused it; also the `Nats-Msg-Id`.
    pub event_id: Uuid,
    /// The command's type, e.g. `unit_completed`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The progress version after the change; readers keep only the newest.
    pub version: i64,
    pub occurred_at: DateTime<Utc>,
    pub applied_at: DateTime<Utc>,
    pub progress: ProgressView,
}
