//! Changes to the units of a track that learners are already on: a unit added, removed or
//! moved, applied to every learner's progress in the same transaction as the catalogue, with
//! a `track_changed` event per rewritten learner and a signal to every running path.
//!
//! - [`apply`]: the transaction — the catalogue, each learner's snapshot refitted by
//!   [`crate::model::UserProgress::reshape`] (the policy is stated there), the outbox.
//! - [`outbox`]: publishing the change's events; the applier's sweep publishes what a crash
//!   left behind.
//! - [`notify`]: telling running `LearningPathWorkflow`s the new unit list.
//! - [`cli`]: the `tracks add-unit | remove-unit | move-unit | show | notify` subcommands.

pub(crate) mod apply;
pub mod cli;
pub(crate) mod notify;
pub mod outbox;

pub use apply::{Applied, Change, ChangeError, apply_change};

use uuid::Uuid;

/// Namespace of the `track_changed` event ids; changing it would re-identify every event.
pub(crate) const EVENT_ID_NAMESPACE: Uuid =
    Uuid::from_u128(0x8c41_2f0e_93b7_4a5d_b1e6_0d7a_52c9_e3f4);

/// The `type` of the events a track change publishes.
pub const EVENT_KIND: &str = "track_changed";

/// The deterministic id of the event change `units_version` of `track` makes for `user`: a
/// retry publishes it under the same `Nats-Msg-Id`, and readers drop it as seen.
pub fn event_id(track_id: Uuid, units_version: i64, user_id: Uuid) -> Uuid {
    Uuid::new_v5(
        &EVENT_ID_NAMESPACE,
        format!("{track_id}/{units_version}/{user_id}").as_bytes(),
    )
}
