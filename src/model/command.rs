//! `ProgressCommand`: what the workflow asks the applier to do, with the exact JSON of the design.

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One progress command for one learner on one track.
///
/// `command_id` is deterministic (UUIDv5 of the workflow id and `seq`), so every retry of a
/// publish carries the same id and the ledger can deduplicate it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ProgressCommand {
    pub command_id: Uuid,
    pub user_id: Uuid,
    pub track_id: Uuid,
    /// Gapless per (user, track), starting at 1.
    #[schemars(range(min = 1, max = MAX_SEQ))]
    pub seq: i64,
    pub occurred_at: DateTime<Utc>,
    #[serde(flatten)]
    pub action: Action,
}

/// What the command does; serialized as the `type` field beside the common fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Action {
    /// The learner started the track; `current_unit_id` is where they begin.
    TrackStarted { current_unit_id: Option<Uuid> },
    /// The learner completed `unit_id`; `next_unit_id` is where they go next (none: the end).
    UnitCompleted {
        unit_id: Uuid,
        next_unit_id: Option<Uuid>,
    },
    /// One attempt at the assessment of `unit_id`; 0 <= `score` <= `max_score`, `max_score` > 0.
    AssessmentRecorded {
        unit_id: Uuid,
        attempt_id: Uuid,
        score: f64,
        max_score: f64,
        passed: bool,
    },
    /// The learner completed the track.
    TrackCompleted {},
}

/// The highest `seq` accepted: a million commands per learner and track per year for a
/// thousand years. A forged seq far beyond would otherwise become where the next run resumes.
pub const MAX_SEQ: i64 = 1_000_000_000;

/// How far ahead of the applier's clock `occurred_at` may be (clocks drift; days do not).
const MAX_CLOCK_AHEAD: TimeDelta = TimeDelta::days(1);

/// The earliest `occurred_at` accepted; an older one would rewrite `started_at` for ever.
fn earliest_occurred_at() -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(946_684_800, 0).expect("2000-01-01 is a valid time")
}

/// Why a command is not acceptable. Every variant is permanent: retrying cannot fix it.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("malformed command JSON: {0}")]
    Malformed(#[source] serde_json::Error),
    #[error("invalid command: {0}")]
    Invalid(String),
}

impl CommandError {
    /// A short, stable reason used in dead-letter subjects and the ledger.
    pub fn reason(&self) -> &'static str {
        match self {
            CommandError::Malformed(e) if e.to_string().starts_with("unknown variant") => {
                "unknown_type"
            }
            CommandError::Malformed(_) => "malformed",
            CommandError::Invalid(_) => "invalid",
        }
    }
}

/// Decodes and validates a command from its wire bytes.
///
/// Timestamps are truncated to microseconds, the precision PostgreSQL keeps, so a snapshot
/// computed in memory equals the one read back from the database.
pub fn decode_command(bytes: &[u8]) -> Result<ProgressCommand, CommandError> {
    let mut command: ProgressCommand =
        serde_json::from_slice(bytes).map_err(CommandError::Malformed)?;
    command.validate()?;
    command.occurred_at = truncate_to_micros(command.occurred_at);
    Ok(command)
}

pub(crate) fn truncate_to_micros(at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_trunc(TimeDelta::microseconds(1)).unwrap_or(at)
}

/// The current time at the precision PostgreSQL stores.
pub fn now_micros() -> DateTime<Utc> {
    truncate_to_micros(Utc::now())
}

impl ProgressCommand {
    /// The `type` as it appears in JSON, the ledger and the CloudEvents type.
    pub fn kind(&self) -> &'static str {
        self.action.kind()
    }

    /// Every unit id the command refers to; each must belong to the command's track.
    pub(crate) fn unit_ids(&self) -> Vec<Uuid> {
        match &self.action {
            Action::TrackStarted { current_unit_id } => current_unit_id.iter().copied().collect(),
            Action::UnitCompleted {
                unit_id,
                next_unit_id,
            } => std::iter::once(*unit_id).chain(*next_unit_id).collect(),
            Action::AssessmentRecorded { unit_id, .. } => vec![*unit_id],
            Action::TrackCompleted {} => Vec::new(),
        }
    }

    /// Checks what the types alone cannot: sequence numbers, times and scores.
    pub fn validate(&self) -> Result<(), CommandError> {
        if !(1..=MAX_SEQ).contains(&self.seq) {
            return Err(CommandError::Invalid(format!(
                "seq must be between 1 and {MAX_SEQ}, got {}",
                self.seq
            )));
        }
        if self.occurred_at < earliest_occurred_at() {
            return Err(CommandError::Invalid(format!(
                "occurred_at {} is before {}, the earliest accepted",
                self.occurred_at,
                earliest_occurred_at()
            )));
        }
        let latest = Utc::now() + MAX_CLOCK_AHEAD;
        if self.occurred_at > latest {
            return Err(CommandError::Invalid(format!(
                "occurred_at {} is more than a day ahead of this server's clock",
                self.occurred_at
            )));
        }
        if let Action::AssessmentRecorded {
            score, max_score, ..
        } = self.action
        {
            check_score(score, max_score).map_err(CommandError::Invalid)?;
        }
        Ok(())
    }
}

/// The score rule, for commands and for the workflow that makes them: `max_score` a positive
/// number, `score` between 0 and it.
pub fn check_score(score: f64, max_score: f64) -> Result<(), String> {
    if !(max_score.is_finite() && max_score > 0.0) {
        return Err(format!(
            "max_score must be a positive number, got {max_score}"
        ));
    }
    if !(score.is_finite() && (0.0..=max_score).contains(&score)) {
        return Err(format!(
            "score must be between 0 and max_score ({max_score}), got {score}"
        ));
    }
    Ok(())
}

impl Action {
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Action::TrackStarted { .. } => "track_started",
            Action::UnitCompleted { .. } => "unit_completed",
            Action::AssessmentRecorded { .. } => "assessment_recorded",
            Action::TrackCompleted {} => "track_completed",
        }
    }
}
