//! Property tests of the pure merge: idempotent, order-independent, and correct derived values.

use chrono::{DateTime, TimeDelta, Utc};
use learning_progress::model::{
    Action, ProgressCommand, ProgressView, UserProgress, decode_command,
};
use proptest::prelude::*;
use uuid::Uuid;

const UNITS: usize = 6;

fn unit(i: usize) -> Uuid {
    Uuid::from_u128(0x1000 + i as u128)
}

fn at(seconds: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(1_790_000_000, 0).unwrap() + TimeDelta::seconds(seconds)
}

/// An attempt's content is a function of its id, as it is in the workflow: one attempt, one record.
fn attempt(attempt: u8) -> Action {
    Action::AssessmentRecorded {
        unit_id: unit(attempt as usize % UNITS),
        attempt_id: Uuid::from_u128(0x2000 + attempt as u128),
        score: f64::from(attempt % 11),
        max_score: 10.0,
        passed: attempt % 11 >= 7,
    }
}

fn action() -> impl Strategy<Value = Action> {
    let maybe_unit = proptest::option::of((0..UNITS).prop_map(unit));
    prop_oneof![
        maybe_unit
            .clone()
            .prop_map(|current_unit_id| Action::TrackStarted { current_unit_id }),
        ((0..UNITS).prop_map(unit), maybe_unit).prop_map(|(unit_id, next_unit_id)| {
            Action::UnitCompleted {
                unit_id,
                next_unit_id,
            }
        }),
        (0u8..40).prop_map(attempt),
        Just(Action::TrackCompleted {}),
    ]
}

/// Commands with distinct seqs 1..=n, as one workflow produces them.
fn commands() -> impl Strategy<Value = Vec<ProgressCommand>> {
    proptest::collection::vec(action(), 1..25).prop_map(|actions| {
        actions
            .into_iter()
            .enumerate()
            .map(|(i, action)| {
                let seq = i as i64 + 1;
                ProgressCommand {
                    command_id: Uuid::from_u128(seq as u128),
                    user_id: Uuid::from_u128(1),
                    track_id: Uuid::from_u128(2),
                    seq,
                    occurred_at: at(seq),
                    action,
                }
            })
            .collect()
    })
}

fn apply_all<'a>(commands: impl IntoIterator<Item = &'a ProgressCommand>) -> UserProgress {
    let mut progress = UserProgress::empty(Uuid::from_u128(1), Uuid::from_u128(2), at(1_000));
    for command in commands {
        progress.apply(command, at(2_000));
    }
    progress
}

proptest! {
    #[test]
    fn applying_a_command_twice_equals_applying_it_once(commands in commands(), pick in any::<prop::sample::Index>()) {
        let mut once = apply_all(&commands);
        let again = pick.get(&commands);
        let before = once.clone();
        prop_assert!(!once.apply(again, at(3_000)), "a repeated command reported a change");
        prop_assert_eq!(once, before);
    }

    #[test]
    fn any_order_and_duplication_gives_the_same_state(
        (commands, reordered) in commands().prop_flat_map(|commands| {
            // every command once more, then the whole list shuffled
            let doubled: Vec<ProgressCommand> = commands.iter().chain(&commands).cloned().collect();
            (Just(commands), Just(doubled).prop_shuffle())
        }),
    ) {
        let expected = apply_all(&commands);
        let actual = apply_all(&reordered);
        prop_assert!(actual.content_eq(&expected), "\n{actual:#?}\n!=\n{expected:#?}");
    }

    #[test]
    fn applying_in_batches_equals_applying_one_by_one(commands in commands(), split in any::<prop::sample::Index>()) {
        let mid = split.index(commands.len() + 1);
        let (head, tail) = commands.split_at(mid);
        let mut batched = apply_all(tail);
        for command in head {
            batched.apply(command, at(2_000));
        }
        prop_assert!(batched.content_eq(&apply_all(&commands)));
    }

    #[test]
    fn version_counts_exactly_the_real_changes(commands in commands()) {
        let mut progress = UserProgress::empty(Uuid::from_u128(1), Uuid::from_u128(2), at(1_000));
        let mut changes = 0;
        for command in &commands {
            changes += i64::from(progress.apply(command, at(2_000)));
        }
        prop_assert_eq!(progress.version, changes);
    }

    #[test]
    fn derived_values_match_their_definitions(commands in commands()) {
        let progress = apply_all(&commands);
        let view = ProgressView::new(progress.clone(), UNITS as i64);
        let expected_percent = progress.completed_unit_ids.len() as f64 * 100.0 / UNITS as f64;
        prop_assert!((view.percent_complete - expected_percent).abs() < 0.006);
        for (unit, attempts) in &progress.assessment_results {
            let summary = &view.assessments[unit];
            prop_assert_eq!(summary.attempts, attempts.attempts.len());
            let best_ratio = attempts.attempts.values().map(|a| a.score / a.max_score).fold(f64::MIN, f64::max);
            prop_assert_eq!(summary.best.score / summary.best.max_score, best_ratio);
            let latest_at = attempts.attempts.values().map(|a| a.at).max().unwrap();
            prop_assert_eq!(summary.latest.at, latest_at);
        }
        let completed = commands.iter().any(|c| matches!(c.action, Action::TrackCompleted {}));
        prop_assert_eq!(progress.status == learning_progress::model::Status::Completed, completed);
    }

    #[test]
    fn commands_survive_a_json_round_trip(commands in commands()) {
        for command in commands {
            let bytes = serde_json::to_vec(&command).unwrap();
            prop_assert_eq!(decode_command(&bytes).unwrap(), command);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode_command(&bytes);
    }
}

#[test]
fn the_wire_format_is_the_documented_json() {
    let json = r#"{ "command_id": "6f1c1c1e-4a58-5d3b-9a43-0a0a0a0a0a0a", "user_id": "00000000-0000-0000-0000-000000000001",
        "track_id": "00000000-0000-0000-0000-000000000002", "seq": 3, "occurred_at": "2026-11-25T10:00:00Z",
        "type": "unit_completed", "unit_id": "00000000-0000-0000-0000-000000001000", "next_unit_id": null }"#;
    let command = decode_command(json.as_bytes()).unwrap();
    assert_eq!(command.seq, 3);
    assert_eq!(command.kind(), "unit_completed");
    assert_eq!(
        command.action,
        Action::UnitCompleted {
            unit_id: unit(0),
            next_unit_id: None
        }
    );
    let back: serde_json::Value = serde_json::to_value(&command).unwrap();
    assert_eq!(back["type"], "unit_completed");
    assert_eq!(back["next_unit_id"], serde_json::Value::Null);
}

#[test]
fn malformed_json_is_a_clear_decode_error() {
    let err = decode_command(b"{\"command_id\": 12").unwrap_err();
    assert_eq!(err.reason(), "malformed");
    assert!(
        err.to_string().starts_with("malformed command JSON"),
        "{err}"
    );
}

#[test]
fn an_unknown_type_is_named_in_the_error() {
    let json = r#"{ "command_id": "00000000-0000-0000-0000-000000000009", "user_id": "00000000-0000-0000-0000-000000000001",
        "track_id": "00000000-0000-0000-0000-000000000002", "seq": 1, "occurred_at": "2026-11-25T10:00:00Z",
        "type": "unit_teleported" }"#;
    let err = decode_command(json.as_bytes()).unwrap_err();
    assert_eq!(err.reason(), "unknown_type");
    assert!(err.to_string().contains("unit_teleported"), "{err}");
}

#[test]
fn impossible_scores_and_sequence_numbers_are_rejected() {
    let base = ProgressCommand {
        command_id: Uuid::from_u128(9),
        user_id: Uuid::from_u128(1),
        track_id: Uuid::from_u128(2),
        seq: 1,
        occurred_at: at(0),
        action: Action::AssessmentRecorded {
            unit_id: unit(0),
            attempt_id: unit(9),
            score: 11.0,
            max_score: 10.0,
            passed: true,
        },
    };
    let err = decode_command(&serde_json::to_vec(&base).unwrap()).unwrap_err();
    assert!(
        err.to_string()
            .contains("score must be between 0 and max_score"),
        "{err}"
    );
    let zero_seq = ProgressCommand {
        seq: 0,
        action: Action::TrackCompleted {},
        ..base
    };
    let err = decode_command(&serde_json::to_vec(&zero_seq).unwrap()).unwrap_err();
    assert!(
        err.to_string().contains("seq must be between 1 and"),
        "{err}"
    );
}

/// Found by fuzzing (`fuzz/`, target `command_decode`): serde_json's default parser misreads
/// about one 17-digit number in twenty by one ulp, so a command read back from its own JSON —
/// the ledger's copy, compared with every redelivery — came back different and a duplicate
/// would have been dead-lettered as an `id_conflict` of itself.
#[test]
fn a_command_reads_back_from_its_own_json_whatever_its_score() {
    for score in [
        "2.1791009723860965",
        "0.9856906294632869",
        "1.2935584108878302e-3",
    ] {
        let json = format!(
            r#"{{ "command_id": "00000000-0000-0000-0000-000000000009", "user_id": "00000000-0000-0000-0000-000000000001",
            "track_id": "00000000-0000-0000-0000-000000000002", "seq": 1, "occurred_at": "2026-11-25T10:00:00Z",
            "type": "assessment_recorded", "unit_id": "00000000-0000-0000-0000-000000001000",
            "attempt_id": "00000000-0000-0000-0000-000000002000", "score": {score}, "max_score": 10, "passed": true }}"#
        );
        let command = decode_command(json.as_bytes()).unwrap();
        let again = decode_command(&serde_json::to_vec(&command).unwrap()).unwrap();
        assert_eq!(again, command, "score {score}");
    }
}

/// Found by fuzzing (target `event_decode`): the API serves the snapshot an event carried,
/// and what it serves must read back as that snapshot.
#[test]
fn a_snapshot_reads_back_from_its_own_json_whatever_its_scores() {
    let mut progress = UserProgress::empty(Uuid::from_u128(1), Uuid::from_u128(2), at(0));
    let record = ProgressCommand {
        command_id: Uuid::from_u128(9),
        user_id: Uuid::from_u128(1),
        track_id: Uuid::from_u128(2),
        seq: 1,
        occurred_at: at(1),
        action: Action::AssessmentRecorded {
            unit_id: unit(0),
            attempt_id: unit(9),
            score: "2.1791009723860965".parse().unwrap(),
            max_score: 10.0,
            passed: true,
        },
    };
    progress.apply(&record, at(2));
    let view = ProgressView::new(progress, UNITS as i64);
    let text = serde_json::to_string(&view).unwrap();
    let back: ProgressView = serde_json::from_str(&text).unwrap();
    assert_eq!(back, view);
}
