//! The progress snapshot of one learner on one track, and the merge of a command into it.
//!
//! Merge rules (idempotent, commutative, associative — see `tests/model_properties.rs`):
//! completed units are a set union; assessment attempts are a map union keyed by attempt id
//! (two records of one attempt id resolve by [`Attempt::supersedes`]); the current
//! unit is last-writer-wins by `seq`; status only moves forward; `version` grows by one only
//! when something actually changed.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::command::{Action, ProgressCommand};

/// Attempts kept per assessment unit: beyond it a new attempt is rejected, which bounds a
/// snapshot (and so every event) to a size JetStream accepts.
pub const MAX_ATTEMPTS_PER_UNIT: usize = 100;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    InProgress,
    Completed,
}

impl Status {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Status::InProgress => "in_progress",
            Status::Completed => "completed",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Status> {
        match s {
            "in_progress" => Some(Status::InProgress),
            "completed" => Some(Status::Completed),
            _ => None,
        }
    }
}

/// One recorded attempt at an assessment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Attempt {
    pub score: f64,
    pub max_score: f64,
    pub passed: bool,
    pub at: DateTime<Utc>,
}

impl Attempt {
    /// Two records of one attempt id keep the earliest; on a tie, the higher score, then the
    /// higher maximum, then passed. A total order, so the merge stays order-independent.
    pub(crate) fn supersedes(&self, kept: &Attempt) -> bool {
        let order = self
            .at
            .cmp(&kept.at)
            .then(kept.score.total_cmp(&self.score))
            .then(kept.max_score.total_cmp(&self.max_score))
            .then(kept.passed.cmp(&self.passed));
        order.is_lt()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct UnitAttempts {
    pub attempts: BTreeMap<Uuid, Attempt>,
}

/// `{ "<unit_id>": { "attempts": { "<attempt_id>": {score, max_score, passed, at} } } }`
pub type AssessmentResults = BTreeMap<Uuid, UnitAttempts>;

/// The stored projection of one learner's progress through one track.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct UserProgress {
    pub user_id: Uuid,
    pub track_id: Uuid,
    pub status: Status,
    pub current_unit_id: Option<Uuid>,
    /// Kept sorted, so equal sets are equal vectors (PostgreSQL orders uuids the same way).
    pub completed_unit_ids: Vec<Uuid>,
    pub assessment_results: AssessmentResults,
    pub started_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    /// The `seq` of the command that last set `current_unit_id`.
    pub last_seq: i64,
    /// Starts at 1 and grows by one per real change; it is the ETag and orders cache updates.
    pub version: i64,
}

impl UserProgress {
    /// The state of a learner before any command: in progress, nothing done, version 0
    /// (the first real change makes it 1, the first stored version).
    pub fn empty(user_id: Uuid, track_id: Uuid, started_at: DateTime<Utc>) -> UserProgress {
        UserProgress {
            user_id,
            track_id,
            status: Status::InProgress,
            current_unit_id: None,
            completed_unit_ids: Vec::new(),
            assessment_results: AssessmentResults::new(),
            started_at,
            completed_at: None,
            updated_at: started_at,
            last_seq: 0,
            version: 0,
        }
    }

    /// Merges `command` into the snapshot. Returns whether anything changed; if it did,
    /// `version` is incremented and `updated_at` set to `now`.
    ///
    /// The caller has already checked that the command belongs to this (user, track) and that
    /// its units belong to the track.
    pub fn apply(&mut self, command: &ProgressCommand, now: DateTime<Utc>) -> bool {
        let before = self.clone();
        self.note_occurred(command.occurred_at);
        match &command.action {
            Action::TrackStarted { current_unit_id } => {
                self.set_current(*current_unit_id, command.seq);
            }
            Action::UnitCompleted {
                unit_id,
                next_unit_id,
            } => {
                self.add_completed(*unit_id);
                self.set_current(*next_unit_id, command.seq);
            }
            Action::AssessmentRecorded {
                unit_id,
                attempt_id,
                score,
                max_score,
                passed,
            } => {
                let attempt = Attempt {
                    score: *score,
                    max_score: *max_score,
                    passed: *passed,
                    at: command.occurred_at,
                };
                self.record_attempt(*unit_id, *attempt_id, attempt);
            }
            Action::TrackCompleted {} => {
                self.mark_completed(command.occurred_at);
                self.set_current(None, command.seq);
            }
        }
        self.bump_if_changed(&before, now)
    }

    // The parts of a change, each by its merge rule. `apply` combines them per command; the
    // CRUD layer (`db::progress::update_user_progress`) combines them per partial update,
    // so both follow one definition.

    /// `started_at` becomes the earliest time anything happened.
    pub(crate) fn note_occurred(&mut self, at: DateTime<Utc>) {
        self.started_at = self.started_at.min(at);
    }

    /// Adds a unit to the completed set, kept sorted and without duplicates.
    pub(crate) fn add_completed(&mut self, unit_id: Uuid) {
        if let Err(at) = self.completed_unit_ids.binary_search(&unit_id) {
            self.completed_unit_ids.insert(at, unit_id);
        }
    }

    /// Records an assessment attempt; of two records of one attempt id, the one that
    /// supersedes is kept ([`Attempt::supersedes`]).
    pub(crate) fn record_attempt(&mut self, unit_id: Uuid, attempt_id: Uuid, attempt: Attempt) {
        let attempts = &mut self.assessment_results.entry(unit_id).or_default().attempts;
        match attempts.get(&attempt_id) {
            Some(kept) if !attempt.supersedes(kept) => {}
            _ => {
                attempts.insert(attempt_id, attempt);
            }
        }
    }

    /// Completes the track: the status never goes back, `completed_at` is the earliest.
    pub(crate) fn mark_completed(&mut self, at: DateTime<Utc>) {
        self.status = Status::Completed;
        self.completed_at = Some(self.completed_at.map_or(at, |kept| kept.min(at)));
    }

    /// Sets the current unit if `seq` is newer than the command that set it last.
    pub(crate) fn set_current(&mut self, unit: Option<Uuid>, seq: i64) {
        if seq > self.last_seq {
            self.current_unit_id = unit;
            self.last_seq = seq;
        }
    }

    /// After merging parts into a snapshot that was `before`: a new version at `now` if
    /// anything changed. Returns whether it did.
    pub(crate) fn bump_if_changed(&mut self, before: &UserProgress, now: DateTime<Utc>) -> bool {
        let changed = self != before;
        if changed {
            self.version += 1;
            self.updated_at = now;
        }
        changed
    }

    /// The snapshot without the fields whose values depend on the order or time of
    /// application (`version`, `updated_at`); what the merge rules make order-independent.
    pub fn content_eq(&self, other: &UserProgress) -> bool {
        let strip = |p: &UserProgress| UserProgress {
            version: 0,
            updated_at: DateTime::<Utc>::MIN_UTC,
            ..p.clone()
        };
        strip(self) == strip(other)
    }
}
