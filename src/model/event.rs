//! `ProgressEvent`: what the applier announces after a command changed a learner's progress.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::view::ProgressView;

/// Carries the full snapshot after the change, so a subscriber never needs the database.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ProgressEvent {
    /// The id of the command that caused it; also the `Nats-Msg-Id`.
    pub event_id: Uuid,
    /// The command's type, e.g. `unit_completed`; or what an operator did: `rebuilt` (the
    /// row was rewritten from its ledger by `learning-progress rebuild`).
    #[serde(rename = "type")]
    // the command schema's `type`s, then the operators'; tests/schemas.rs checks the lists agree
    #[schemars(extend("enum" = ["track_started", "unit_completed", "assessment_recorded", "track_completed", "rebuilt"]))]
    pub kind: String,
    /// The progress version after the change; readers keep only the newest.
    #[schemars(range(min = 1))]
    pub version: i64,
    pub occurred_at: DateTime<Utc>,
    pub applied_at: DateTime<Utc>,
    pub progress: ProgressView,
}
