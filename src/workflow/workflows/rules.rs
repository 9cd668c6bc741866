//! The workflow's rules as plain code: what a signal or update may do, the commands it turns
//! into, and the state a published command leaves. No SDK call happens here, so the tests
//! below run them without Temporal.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use temporalio_sdk::SyncWorkflowContext;
use uuid::Uuid;

use super::{
    AssessmentRecorded, Carry, Inbound, LearningPathInput, LearningPathWorkflow,
    MAX_RECONCILE_WAIT, PathView,
};
use crate::model::{Action, MAX_ATTEMPTS_PER_UNIT, ProgressCommand, check_score};

/// Plain helpers: the macro renames annotated methods, so shared logic lives here.
impl LearningPathWorkflow {
    /// A run's state from its input: fresh, or carried over from the previous run.
    pub(super) fn from_input(mut input: LearningPathInput) -> Self {
        let carry = input.carry.take();
        let mut workflow = LearningPathWorkflow {
            input,
            started: false,
            seq: 0,
            completed: BTreeSet::new(),
            attempts: BTreeSet::new(),
            attempts_per_unit: BTreeMap::new(),
            track_completed: false,
            units_version: 0,
            unconfirmed: BTreeMap::new(),
            inbox: VecDeque::new(),
            dirty: false,
            published_this_run: 0,
            previous_runs: 0,
            ignored_signals: 0,
            failed_reconciles: 0,
            final_reconciled: false,
        };
        if let Some(carry) = carry {
            workflow.started = true;
            workflow.previous_runs = carry.runs;
            workflow.seq = carry.seq;
            workflow.completed = carry.completed_unit_ids;
            workflow.attempts = carry.attempt_ids;
            workflow.attempts_per_unit = carry.attempts_per_unit;
            workflow.track_completed = carry.track_completed;
            workflow.units_version = carry.units_version;
            workflow.dirty = !carry.unconfirmed.is_empty();
            workflow.unconfirmed = carry.unconfirmed.into_iter().map(|c| (c.seq, c)).collect();
            workflow.inbox = carry.inbox.into();
        }
        workflow
    }

    pub(super) fn ignore_malformed(
        &mut self,
        ctx: &SyncWorkflowContext<Self>,
        signal: &str,
        reason: &str,
    ) {
        self.ignored_signals += 1;
        if !ctx.is_replaying() {
            tracing::warn!(
                workflow.id = ctx.workflow_id(),
                signal,
                reason,
                "ignored a malformed signal"
            );
        }
    }

    /// Handlers only enqueue, stamped with the workflow time at which they ran.
    pub(super) fn enqueue(
        &mut self,
        time: Option<SystemTime>,
        inbound: impl FnOnce(DateTime<Utc>) -> Inbound,
    ) {
        if let Some(time) = time {
            self.inbox.push_back(inbound(time.into()));
        }
    }

    /// A unit the run cannot judge yet: outside the list it was started with, before it read
    /// the catalogue's (which may have the unit, if the track changed since). The update
    /// handler judges it once the run has resumed.
    pub(super) fn units_unknown(&self, unit_id: Uuid) -> bool {
        !self.started && !self.input.unit_ids.contains(&unit_id)
    }

    /// Takes a newer unit list of the track; returns whether it was newer.
    pub(super) fn take_units(&mut self, units_version: i64, unit_ids: Vec<Uuid>) -> bool {
        if units_version <= self.units_version || unit_ids.is_empty() {
            return false;
        }
        self.units_version = units_version;
        self.input.unit_ids = unit_ids;
        true
    }

    /// The first unit in track order not completed, other than `skipping`.
    pub(super) fn next_unit(&self, skipping: Option<Uuid>) -> Option<Uuid> {
        self.input
            .unit_ids
            .iter()
            .copied()
            .find(|u| !self.completed.contains(u) && Some(*u) != skipping)
    }

    pub(super) fn reconcile_wait(&self) -> Duration {
        let quiet = Duration::from_millis(self.input.quiet_period_ms);
        (quiet * 2u32.pow(self.failed_reconciles.min(10))).min(MAX_RECONCILE_WAIT.max(quiet))
    }

    pub(super) fn view(&self) -> PathView {
        PathView {
            user_id: self.input.user_id,
            track_id: self.input.track_id,
            unit_ids: self.input.unit_ids.clone(),
            completed_unit_ids: (self.input.unit_ids.iter())
                .filter(|u| self.completed.contains(u))
                .copied()
                .collect(),
            current_unit_id: self.next_unit(None),
            seq: self.seq,
            pending: self.inbox.len(),
            track_completed: self.track_completed,
            unconfirmed_seqs: self.unconfirmed.keys().copied().collect(),
            ignored_signals: self.ignored_signals,
        }
    }

    /// An update is also refused when an accepted one for the same unit is still queued.
    pub(super) fn check_unit_update(&self, unit_id: Uuid) -> Result<(), String> {
        let queued = self.inbox.iter().any(
            |i| matches!(i, Inbound::UnitCompleted { unit_id: queued, .. } if *queued == unit_id),
        );
        if queued {
            return Err(format!("unit {unit_id} is already completed"));
        }
        self.check_unit_completed(unit_id)
    }

    pub(super) fn check_assessment_update(&self, a: &AssessmentRecorded) -> Result<(), String> {
        let queued = self.inbox.iter().any(|i| {
            matches!(i, Inbound::AssessmentRecorded { assessment, .. }
                if assessment.attempt_id == a.attempt_id)
        });
        if queued {
            return Err(format!("attempt {} is already recorded", a.attempt_id));
        }
        self.check_assessment(a)
    }

    pub(super) fn check_unit_completed(&self, unit_id: Uuid) -> Result<(), String> {
        if self.track_completed {
            return Err("the track is already completed".to_owned());
        }
        if !self.input.unit_ids.contains(&unit_id) {
            return Err(format!(
                "unit {unit_id} is not part of track {}",
                self.input.track_id
            ));
        }
        if self.completed.contains(&unit_id) {
            return Err(format!("unit {unit_id} is already completed"));
        }
        Ok(())
    }

    pub(super) fn check_assessment(&self, a: &AssessmentRecorded) -> Result<(), String> {
        if self.track_completed {
            return Err("the track is already completed".to_owned());
        }
        if !self.input.unit_ids.contains(&a.unit_id) {
            return Err(format!(
                "unit {} is not part of track {}",
                a.unit_id, self.input.track_id
            ));
        }
        check_score(a.score, a.max_score)?;
        if self.attempts_per_unit.get(&a.unit_id).copied().unwrap_or(0) >= MAX_ATTEMPTS_PER_UNIT {
            return Err(format!(
                "unit {} already holds {MAX_ATTEMPTS_PER_UNIT} attempts, the most kept",
                a.unit_id
            ));
        }
        if self.attempts.contains(&a.attempt_id) {
            return Err(format!("attempt {} is already recorded", a.attempt_id));
        }
        Ok(())
    }

    /// The commands an inbound signal or update turns into, or why it is ignored.
    pub(super) fn plan(&self, inbound: &Inbound) -> Result<Vec<Action>, String> {
        match inbound {
            Inbound::UnitCompleted { unit_id, .. } => {
                self.check_unit_completed(*unit_id)?;
                let next_unit_id = self.next_unit(Some(*unit_id));
                let mut actions = vec![Action::UnitCompleted {
                    unit_id: *unit_id,
                    next_unit_id,
                }];
                if next_unit_id.is_none() {
                    actions.push(Action::TrackCompleted {});
                }
                Ok(actions)
            }
            Inbound::AssessmentRecorded { assessment: a, .. } => {
                self.check_assessment(a)?;
                Ok(vec![Action::AssessmentRecorded {
                    unit_id: a.unit_id,
                    attempt_id: a.attempt_id,
                    score: a.score,
                    max_score: a.max_score,
                    passed: a.passed,
                }])
            }
            // the units left to do were removed: nothing is left to do
            Inbound::UnitsChanged { .. }
                if !self.track_completed && self.next_unit(None).is_none() =>
            {
                Ok(vec![Action::TrackCompleted {}])
            }
            Inbound::UnitsChanged { .. } => Ok(Vec::new()),
        }
    }

    pub(super) fn record_published(&mut self, command: ProgressCommand) {
        self.seq = command.seq;
        match &command.action {
            Action::UnitCompleted { unit_id, .. } => {
                self.completed.insert(*unit_id);
            }
            Action::AssessmentRecorded {
                unit_id,
                attempt_id,
                ..
            } => {
                self.attempts.insert(*attempt_id);
                *self.attempts_per_unit.entry(*unit_id).or_default() += 1;
            }
            Action::TrackCompleted {} => self.track_completed = true,
            Action::TrackStarted { .. } => {}
        }
        self.unconfirmed.insert(command.seq, command);
        self.dirty = true;
        self.published_this_run += 1;
    }

    pub(super) fn carry_over(&self) -> LearningPathInput {
        LearningPathInput {
            carry: Some(Carry {
                runs: self.previous_runs + 1,
                seq: self.seq,
                completed_unit_ids: self.completed.clone(),
                attempt_ids: self.attempts.clone(),
                attempts_per_unit: self.attempts_per_unit.clone(),
                track_completed: self.track_completed,
                units_version: self.units_version,
                unconfirmed: self.unconfirmed.values().cloned().collect(),
                inbox: self.inbox.iter().cloned().collect(),
            }),
            ..self.input.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn units(n: usize) -> Vec<Uuid> {
        (0..n).map(|_| Uuid::new_v4()).collect()
    }

    /// A started run on a track of `units`.
    fn started(units: &[Uuid]) -> LearningPathWorkflow {
        let mut run = LearningPathWorkflow::from_input(LearningPathInput::new(
            Uuid::new_v4(),
            Uuid::new_v4(),
            units.to_vec(),
        ));
        run.started = true;
        run
    }

    fn completed(unit_id: Uuid) -> Inbound {
        Inbound::UnitCompleted {
            unit_id,
            at: Utc::now(),
        }
    }

    fn attempt(unit_id: Uuid, score: f64, max_score: f64) -> AssessmentRecorded {
        AssessmentRecorded {
            unit_id,
            attempt_id: Uuid::new_v4(),
            score,
            max_score,
            passed: score >= max_score / 2.0,
        }
    }

    /// Publishes what `inbound` plans, as the run loop would; returns the actions.
    fn step(run: &mut LearningPathWorkflow, inbound: &Inbound) -> Result<Vec<Action>, String> {
        let actions = run.plan(inbound)?;
        for action in &actions {
            let seq = run.seq + 1;
            run.record_published(ProgressCommand {
                command_id: Uuid::new_v4(),
                user_id: run.input.user_id,
                track_id: run.input.track_id,
                seq,
                occurred_at: Utc::now(),
                action: action.clone(),
            });
        }
        Ok(actions)
    }

    #[test]
    fn completing_units_moves_to_the_next_and_the_last_completes_the_track() {
        let units = units(2);
        let mut run = started(&units);
        assert_eq!(
            step(&mut run, &completed(units[0])).unwrap(),
            [Action::UnitCompleted {
                unit_id: units[0],
                next_unit_id: Some(units[1]),
            }]
        );
        assert_eq!(
            step(&mut run, &completed(units[1])).unwrap(),
            [
                Action::UnitCompleted {
                    unit_id: units[1],
                    next_unit_id: None,
                },
                Action::TrackCompleted {},
            ]
        );
        assert_eq!(run.seq, 3, "one seq per command, gapless");
        assert!(
            step(&mut run, &completed(units[0]))
                .unwrap_err()
                .contains("already completed")
        );
    }

    #[test]
    fn a_unit_done_twice_or_outside_the_track_is_refused() {
        let units = units(3);
        let mut run = started(&units);
        step(&mut run, &completed(units[1])).unwrap();
        assert!(
            run.plan(&completed(units[1]))
                .unwrap_err()
                .contains("already completed")
        );
        let foreign = Uuid::new_v4();
        assert!(
            run.plan(&completed(foreign))
                .unwrap_err()
                .contains("not part of track")
        );
        assert_eq!(
            run.view().current_unit_id,
            Some(units[0]),
            "the first not done"
        );
    }

    #[test]
    fn assessments_follow_the_score_rule_and_the_attempt_limit() {
        let units = units(1);
        let mut run = started(&units);
        for (score, max, refused) in [
            (5.0, 10.0, None),
            (11.0, 10.0, Some("score must be between 0 and max_score")),
            (-1.0, 10.0, Some("score must be between 0 and max_score")),
            (1.0, 0.0, Some("max_score must be a positive number")),
            (f64::NAN, 10.0, Some("score must be between")),
        ] {
            let a = attempt(units[0], score, max);
            let planned = run.plan(&Inbound::AssessmentRecorded {
                assessment: a,
                at: Utc::now(),
            });
            match refused {
                None => assert!(planned.is_ok(), "{score}/{max}: {planned:?}"),
                Some(reason) => assert!(
                    planned.as_ref().unwrap_err().contains(reason),
                    "{score}/{max}: {planned:?}"
                ),
            }
        }
        let a = attempt(units[0], 5.0, 10.0);
        let inbound = Inbound::AssessmentRecorded {
            assessment: a,
            at: Utc::now(),
        };
        step(&mut run, &inbound).unwrap();
        assert!(
            run.plan(&inbound).unwrap_err().contains("already recorded"),
            "the same attempt id twice"
        );
        for _ in 1..MAX_ATTEMPTS_PER_UNIT {
            let more = Inbound::AssessmentRecorded {
                assessment: attempt(units[0], 1.0, 10.0),
                at: Utc::now(),
            };
            step(&mut run, &more).unwrap();
        }
        let one_more = Inbound::AssessmentRecorded {
            assessment: attempt(units[0], 1.0, 10.0),
            at: Utc::now(),
        };
        assert!(run.plan(&one_more).unwrap_err().contains("the most kept"));
    }

    #[test]
    fn a_newer_unit_list_is_taken_and_removing_what_is_left_completes_the_track() {
        let units = units(3);
        let mut run = started(&units);
        step(&mut run, &completed(units[0])).unwrap();
        assert!(run.take_units(2, vec![units[0], units[2]]));
        assert!(
            !run.take_units(1, units.clone()),
            "an older list is ignored"
        );
        assert!(
            run.plan(&completed(units[1]))
                .unwrap_err()
                .contains("not part of track"),
            "a removed unit is refused"
        );
        assert!(run.take_units(3, vec![units[0]]));
        assert_eq!(
            step(&mut run, &Inbound::UnitsChanged { at: Utc::now() }).unwrap(),
            [Action::TrackCompleted {}]
        );
        assert!(
            run.plan(&completed(units[0]))
                .unwrap_err()
                .contains("track is already completed")
        );
    }

    #[test]
    fn a_carried_over_run_resumes_the_state_it_was_handed() {
        let units = units(2);
        let mut run = started(&units);
        step(&mut run, &completed(units[0])).unwrap();
        let next = LearningPathWorkflow::from_input(run.carry_over());
        assert_eq!(next.seq, run.seq);
        assert_eq!(next.view().completed_unit_ids, [units[0]]);
        assert_eq!(next.view().unconfirmed_seqs, run.view().unconfirmed_seqs);
        assert!(next.plan(&completed(units[0])).is_err());
    }
}
