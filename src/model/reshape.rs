//! What a change of a track's units does to a learner already on it: the policy, as one pure
//! function.
//!
//! - Percent complete is recomputed over the new unit list (the view's `total_units`).
//! - A removed unit leaves the snapshot: its completion no longer counts, its attempts are no
//!   longer summarised. Both stay in the learner's ledger, the audit history.
//! - Every other timestamp is kept: `started_at`, `completed_at`, each attempt's `at`.
//! - A completed track stays completed, at its original `completed_at`, even when a unit is
//!   added; `reopen` sets it back to in progress when a unit of the new list is not done.
//! - A current unit that was removed (or a reopened track's, which had none) becomes the first
//!   unit of the new order not completed, as the workflow chooses it. `last_seq` is kept, so
//!   the learner's next command sets the current unit as before.
//! - The version always grows by one: the view changed (at least `total_units`), so readers
//!   must see a new ETag.
//!
//! A command published just before a unit was removed may still name it when it is applied:
//! it applies without that unit ([`ProgressCommand::without_units`]), as a learner's command
//! after the change would have been written.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::command::{Action, ProgressCommand};
use super::progress::{Status, UserProgress};

impl UserProgress {
    /// What a learner's history makes since the last change of its track's units: the
    /// snapshot `base` that change wrote, with the later commands (applied and no-op ones, in
    /// seq order, each at the time it was applied) merged without the units `removed` from the
    /// track by then, as the applier merged them. Without a change (`base` is `None`, nothing
    /// removed), the merge of the whole history from an empty snapshot.
    pub(crate) fn replay_since<'a>(
        base: Option<UserProgress>,
        removed: &[Uuid],
        history: impl IntoIterator<Item = (&'a ProgressCommand, DateTime<Utc>)>,
    ) -> Option<UserProgress> {
        let mut row = base;
        for (command, applied_at) in history {
            let row = row.get_or_insert_with(|| {
                UserProgress::empty(command.user_id, command.track_id, command.occurred_at)
            });
            if let Some(command) = command.without_units(|u| removed.contains(u)) {
                row.apply(&command, applied_at);
            }
        }
        row
    }
}

impl ProgressCommand {
    /// The command with the units `removed` from its track left out: the completion of a
    /// removed unit sets only the next unit, a removed next unit leaves no current unit, a
    /// removed starting unit none either. `None` when nothing is left to apply (an attempt at
    /// a removed assessment). The command's id, seq and time are kept.
    pub(crate) fn without_units(&self, removed: impl Fn(&Uuid) -> bool) -> Option<ProgressCommand> {
        let keep = |unit: Option<Uuid>| unit.filter(|u| !removed(u));
        let action = match &self.action {
            Action::TrackStarted { current_unit_id } => Action::TrackStarted {
                current_unit_id: keep(*current_unit_id),
            },
            Action::UnitCompleted {
                unit_id,
                next_unit_id,
            } if removed(unit_id) => Action::TrackStarted {
                current_unit_id: keep(*next_unit_id),
            },
            Action::UnitCompleted {
                unit_id,
                next_unit_id,
            } => Action::UnitCompleted {
                unit_id: *unit_id,
                next_unit_id: keep(*next_unit_id),
            },
            Action::AssessmentRecorded { unit_id, .. } if removed(unit_id) => return None,
            action => action.clone(),
        };
        Some(ProgressCommand {
            action,
            ..self.clone()
        })
    }
}

/// What [`UserProgress::reshape`] changed beyond the unit count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Reshaped {
    /// Completed units that left the snapshot because they left the track.
    pub completions_dropped: usize,
    /// The track was completed and is in progress again.
    pub reopened: bool,
    /// The current unit left the track (or the track was reopened) and a new one was chosen.
    pub current_moved: bool,
}

impl UserProgress {
    /// Fits the snapshot to the track's new ordered `units` (see the module's policy); the
    /// version grows by one and `updated_at` becomes `now`.
    pub(crate) fn reshape(&mut self, units: &[Uuid], reopen: bool, now: DateTime<Utc>) -> Reshaped {
        let mut reshaped = Reshaped::default();
        let before = self.completed_unit_ids.len();
        self.completed_unit_ids.retain(|u| units.contains(u));
        reshaped.completions_dropped = before - self.completed_unit_ids.len();
        self.assessment_results.retain(|u, _| units.contains(u));

        let first_open = units
            .iter()
            .copied()
            .find(|u| self.completed_unit_ids.binary_search(u).is_err());
        if reopen && self.status == Status::Completed && first_open.is_some() {
            self.status = Status::InProgress;
            self.completed_at = None;
            self.current_unit_id = first_open;
            reshaped.reopened = true;
            reshaped.current_moved = true;
        }
        if let Some(current) = self.current_unit_id
            && !units.contains(&current)
        {
            self.current_unit_id = match self.status {
                Status::Completed => None,
                Status::InProgress => first_open,
            };
            reshaped.current_moved = true;
        }
        self.version += 1;
        self.updated_at = now;
        reshaped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Action, ProgressCommand, ProgressView};

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_790_000_000 + secs, 0).unwrap()
    }

    /// A learner who completed `done` of `units` in order (and the track, if all).
    fn learner(units: &[Uuid], done: usize) -> UserProgress {
        let (user, track) = (Uuid::new_v4(), Uuid::new_v4());
        let mut progress = UserProgress::empty(user, track, at(0));
        let mut seq = 0;
        let mut next = |action| {
            seq += 1;
            ProgressCommand {
                command_id: Uuid::new_v4(),
                user_id: user,
                track_id: track,
                seq,
                occurred_at: at(seq),
                action,
            }
        };
        let start = next(Action::TrackStarted {
            current_unit_id: units.first().copied(),
        });
        progress.apply(&start, at(0));
        for (i, unit) in units.iter().take(done).enumerate() {
            let command = next(Action::UnitCompleted {
                unit_id: *unit,
                next_unit_id: units.get(i + 1).copied(),
            });
            progress.apply(&command, at(0));
        }
        if done == units.len() {
            progress.apply(&next(Action::TrackCompleted {}), at(0));
        }
        progress
    }

    fn units(n: usize) -> Vec<Uuid> {
        (0..n).map(|_| Uuid::new_v4()).collect()
    }

    #[test]
    fn an_added_unit_lowers_percent_and_a_completed_track_stays_completed() {
        let old = units(4);
        let mut progress = learner(&old, 4);
        let completed_at = progress.completed_at;
        let mut new = old.clone();
        new.push(Uuid::new_v4());
        let reshaped = progress.reshape(&new, false, at(100));
        assert_eq!(reshaped, Reshaped::default());
        assert_eq!(progress.status, Status::Completed);
        assert_eq!(progress.completed_at, completed_at);
        assert_eq!(progress.version, 7);
        assert_eq!(ProgressView::new(progress, 5).percent_complete, 80.0);
    }

    #[test]
    fn reopen_sends_a_completed_learner_to_the_new_unit() {
        let old = units(2);
        let mut progress = learner(&old, 2);
        let added = Uuid::new_v4();
        let new = vec![old[0], added, old[1]];
        let reshaped = progress.reshape(&new, true, at(100));
        assert!(reshaped.reopened && reshaped.current_moved);
        assert_eq!(progress.status, Status::InProgress);
        assert_eq!(progress.completed_at, None);
        assert_eq!(progress.current_unit_id, Some(added));
    }

    #[test]
    fn reopen_leaves_a_learner_who_still_has_everything_completed() {
        let old = units(3);
        let mut progress = learner(&old, 3);
        let reshaped = progress.reshape(&old[..2], true, at(100));
        assert!(!reshaped.reopened);
        assert_eq!(progress.status, Status::Completed);
    }

    #[test]
    fn a_removed_completed_unit_stops_counting_and_the_rest_is_kept() {
        let old = units(4);
        let mut progress = learner(&old, 2);
        let started_at = progress.started_at;
        let new = vec![old[1], old[2], old[3]];
        let reshaped = progress.reshape(&new, false, at(100));
        assert_eq!(reshaped.completions_dropped, 1);
        assert!(!reshaped.current_moved);
        assert_eq!(progress.completed_unit_ids, vec![old[1]]);
        assert_eq!(progress.current_unit_id, Some(old[2]));
        assert_eq!(progress.started_at, started_at);
        assert_eq!(ProgressView::new(progress, 3).percent_complete, 33.33);
    }

    #[test]
    fn a_command_naming_a_removed_unit_applies_without_it() {
        let (gone, next, done) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let command = |action| ProgressCommand {
            command_id: Uuid::new_v4(),
            user_id: Uuid::new_v4(),
            track_id: Uuid::new_v4(),
            seq: 4,
            occurred_at: at(4),
            action,
        };
        let removed = |u: &Uuid| *u == gone;
        let completed_before = command(Action::UnitCompleted {
            unit_id: done,
            next_unit_id: Some(gone),
        });
        assert_eq!(
            completed_before.without_units(removed).unwrap().action,
            Action::UnitCompleted {
                unit_id: done,
                next_unit_id: None
            }
        );
        let completed_gone = command(Action::UnitCompleted {
            unit_id: gone,
            next_unit_id: Some(next),
        });
        let kept = completed_gone.without_units(removed).unwrap();
        assert_eq!(
            kept.action,
            Action::TrackStarted {
                current_unit_id: Some(next)
            }
        );
        assert_eq!((kept.command_id, kept.seq), (completed_gone.command_id, 4));
        let attempt = command(Action::AssessmentRecorded {
            unit_id: gone,
            attempt_id: Uuid::new_v4(),
            score: 1.0,
            max_score: 2.0,
            passed: false,
        });
        assert_eq!(attempt.without_units(removed), None);
        let untouched = command(Action::TrackCompleted {});
        assert_eq!(untouched.without_units(removed), Some(untouched.clone()));
    }

    #[test]
    fn a_removed_current_unit_moves_the_learner_to_the_first_open_unit() {
        let old = units(4);
        let mut progress = learner(&old, 1);
        assert_eq!(progress.current_unit_id, Some(old[1]));
        let new = vec![old[0], old[2], old[3]];
        let reshaped = progress.reshape(&new, false, at(100));
        assert!(reshaped.current_moved);
        assert_eq!(progress.current_unit_id, Some(old[2]));
    }
}
