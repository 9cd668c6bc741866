//! What one simulated learner does, and the commands the workflow must turn that into.

use rand::Rng;
use uuid::Uuid;

use crate::db::tracks::Track;
use crate::model::Action;
use crate::workflow::AssessmentRecorded;

/// One signal a learner sends.
#[derive(Debug, Clone)]
pub enum Step {
    Complete(Uuid),
    Assess(AssessmentRecorded),
    /// The same signal again (a double click, a retried request): must change nothing.
    Repeat(Box<Step>),
}

/// Units in order; before each assessment unit is completed, one to three attempts, the last
/// one passing; about one signal in five is sent twice.
pub fn plan(track: &Track, rng: &mut impl Rng) -> Vec<Step> {
    let mut steps = Vec::new();
    for unit in &track.units {
        if unit.kind == "assessment" {
            let attempts = rng.random_range(1..=3);
            for attempt in 0..attempts {
                let passed = attempt == attempts - 1;
                let score = if passed {
                    rng.random_range(7..=10)
                } else {
                    rng.random_range(0..7)
                };
                let assessment = AssessmentRecorded {
                    unit_id: unit.id,
                    attempt_id: Uuid::new_v4(),
                    score: f64::from(score),
                    max_score: 10.0,
                    passed,
                };
                push_maybe_twice(&mut steps, Step::Assess(assessment), rng);
            }
        }
        push_maybe_twice(&mut steps, Step::Complete(unit.id), rng);
    }
    steps
}

fn push_maybe_twice(steps: &mut Vec<Step>, step: Step, rng: &mut impl Rng) {
    let repeat = rng.random_bool(0.2);
    steps.push(step.clone());
    if repeat {
        steps.push(Step::Repeat(Box::new(step)));
    }
}

/// The actions the workflow publishes for `steps`, in seq order starting at 1.
pub fn expected_actions(track: &Track, steps: &[Step]) -> Vec<Action> {
    let units: Vec<Uuid> = track.units.iter().map(|u| u.id).collect();
    let mut actions = vec![Action::TrackStarted {
        current_unit_id: units.first().copied(),
    }];
    let mut done = 0;
    for step in steps {
        match step {
            Step::Repeat(_) => {}
            Step::Assess(a) => actions.push(Action::AssessmentRecorded {
                unit_id: a.unit_id,
                attempt_id: a.attempt_id,
                score: a.score,
                max_score: a.max_score,
                passed: a.passed,
            }),
            Step::Complete(unit_id) => {
                done += 1;
                actions.push(Action::UnitCompleted {
                    unit_id: *unit_id,
                    next_unit_id: units.get(done).copied(),
                });
            }
        }
    }
    if done == units.len() {
        actions.push(Action::TrackCompleted {});
    }
    actions
}
