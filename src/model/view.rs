//! What readers see: the snapshot plus values derived from it (percent complete, best and
//! latest attempt per assessment). Derived on write, so every subscriber gets them for free.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::progress::{UnitAttempts, UserProgress};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ProgressView {
    #[serde(flatten)]
    pub progress: UserProgress,
    /// Units in the track, so `percent_complete` can be checked by a reader.
    pub total_units: i64,
    /// Completed units over track units, 0–100, rounded to two decimals.
    pub percent_complete: f64,
    pub assessments: BTreeMap<Uuid, AssessmentSummary>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AssessmentSummary {
    pub attempts: usize,
    pub best: ScoredAttempt,
    pub latest: ScoredAttempt,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ScoredAttempt {
    pub attempt_id: Uuid,
    pub score: f64,
    pub max_score: f64,
    pub passed: bool,
    pub at: DateTime<Utc>,
}

impl ProgressView {
    pub fn new(progress: UserProgress, total_units: i64) -> ProgressView {
        let percent_complete = percent(progress.completed_unit_ids.len(), total_units);
        let assessments = progress
            .assessment_results
            .iter()
            .filter_map(|(unit, attempts)| Some((*unit, summarize(attempts)?)))
            .collect();
        ProgressView {
            progress,
            total_units,
            percent_complete,
            assessments,
        }
    }
}

fn percent(completed: usize, total: i64) -> f64 {
    if total <= 0 {
        return 0.0;
    }
    let ratio = (completed as f64 / total as f64).min(1.0);
    (ratio * 10_000.0).round() / 100.0
}

/// Best: the highest score ratio, earliest on a tie. Latest: the newest, by time then id.
fn summarize(unit: &UnitAttempts) -> Option<AssessmentSummary> {
    let scored = unit.attempts.iter().map(|(id, a)| ScoredAttempt {
        attempt_id: *id,
        score: a.score,
        max_score: a.max_score,
        passed: a.passed,
        at: a.at,
    });
    let best = scored.clone().min_by(|a, b| {
        let (ra, rb) = (a.score / a.max_score, b.score / b.max_score);
        rb.total_cmp(&ra)
            .then(a.at.cmp(&b.at))
            .then(a.attempt_id.cmp(&b.attempt_id))
    })?;
    let latest = scored.max_by_key(|a| (a.at, a.attempt_id))?;
    Some(AssessmentSummary {
        attempts: unit.attempts.len(),
        best,
        latest,
    })
}
