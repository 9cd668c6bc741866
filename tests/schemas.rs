//! The agents' contract: the checked-in JSON Schemas are what the model types generate, real
//! payloads of every kind validate against them, and invalid ones do not.

use std::path::{Path, PathBuf};
use std::process::Command;

use chrono::{DateTime, TimeDelta, Utc};
use learning_progress::model::{
    Action, ErasedEvent, ProgressCommand, ProgressEvent, ProgressView, UserProgress,
};
use learning_progress::schemas;
use serde_json::{Value, json};
use uuid::Uuid;

fn checked_in() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(schemas::DEFAULT_DIR)
}

fn validator(file: &str) -> jsonschema::Validator {
    let text = std::fs::read_to_string(checked_in().join(file)).expect("schema checked in");
    let schema: Value = serde_json::from_str(&text).expect("schema is JSON");
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("a valid JSON Schema")
}

fn assert_valid(validator: &jsonschema::Validator, payload: &Value) {
    let errors: Vec<String> = validator
        .iter_errors(payload)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(errors.is_empty(), "{payload:#}\n{errors:#?}");
}

fn at(seconds: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(1_790_000_000, 123_456_000).unwrap()
        + TimeDelta::seconds(seconds)
}

/// A learner's commands of every kind, in seq order, on a track of `units`.
fn commands(user: Uuid, track: Uuid, units: &[Uuid]) -> Vec<ProgressCommand> {
    let actions = [
        Action::TrackStarted {
            current_unit_id: Some(units[0]),
        },
        Action::TrackStarted {
            current_unit_id: None,
        },
        Action::UnitCompleted {
            unit_id: units[0],
            next_unit_id: Some(units[1]),
        },
        Action::AssessmentRecorded {
            unit_id: units[1],
            attempt_id: Uuid::new_v4(),
            score: 7.5,
            max_score: 10.0,
            passed: true,
        },
        Action::UnitCompleted {
            unit_id: units[1],
            next_unit_id: None,
        },
        Action::TrackCompleted {},
    ];
    actions
        .into_iter()
        .zip(1..)
        .map(|(action, seq)| ProgressCommand {
            command_id: Uuid::new_v4(),
            user_id: user,
            track_id: track,
            seq,
            occurred_at: at(seq),
            action,
        })
        .collect()
}

#[test]
fn the_checked_in_schemas_are_what_the_model_types_generate() {
    if let Err(error) = schemas::check(&checked_in()) {
        panic!("{error}");
    }
}

#[test]
fn an_event_type_is_a_command_type_or_an_operators() {
    let schema = |file: &str| -> Value {
        serde_json::from_str(&std::fs::read_to_string(checked_in().join(file)).unwrap()).unwrap()
    };
    let mut types: Vec<Value> = schema("progress-command.schema.json")["oneOf"]
        .as_array()
        .unwrap()
        .iter()
        .map(|variant| variant["properties"]["type"]["const"].clone())
        .collect();
    types.push(Value::from(learning_progress::ops::rebuild::REBUILT));
    types.push(Value::from(learning_progress::track_changes::EVENT_KIND));
    let event = schema("progress-event.schema.json");
    assert_eq!(event["properties"]["type"]["enum"], Value::Array(types));
}

#[test]
fn commands_of_every_kind_validate_against_the_command_schema() {
    let validator = validator("progress-command.schema.json");
    let units = [Uuid::new_v4(), Uuid::new_v4()];
    for command in commands(Uuid::new_v4(), Uuid::new_v4(), &units) {
        assert_valid(&validator, &serde_json::to_value(&command).unwrap());
    }
}

#[test]
fn events_of_every_kind_validate_against_the_event_schema() {
    let validator = validator("progress-event.schema.json");
    let (user, track) = (Uuid::new_v4(), Uuid::new_v4());
    let units = [Uuid::new_v4(), Uuid::new_v4()];
    let mut progress = UserProgress::empty(user, track, at(0));
    for command in commands(user, track, &units) {
        if progress.apply(&command, at(100)) {
            let event = ProgressEvent {
                event_id: command.command_id,
                kind: command.kind().to_owned(),
                version: progress.version,
                occurred_at: command.occurred_at,
                applied_at: at(100),
                progress: ProgressView::new(progress.clone(), 2),
            };
            assert_valid(&validator, &serde_json::to_value(&event).unwrap());
        }
    }
    assert!(!progress.assessment_results.is_empty() && progress.completed_at.is_some());
}

#[test]
fn invalid_payloads_are_refused_by_the_schemas() {
    let commands_schema = validator("progress-command.schema.json");
    let units = [Uuid::new_v4(), Uuid::new_v4()];
    let assessment = &commands(Uuid::new_v4(), Uuid::new_v4(), &units)[3];
    let valid = serde_json::to_value(assessment).unwrap();
    assert_valid(&commands_schema, &valid);
    let broken = |change: &dyn Fn(&mut Value)| {
        let mut payload = valid.clone();
        change(&mut payload);
        payload
    };
    let invalid = [
        (
            "no type",
            broken(&|p| drop(p.as_object_mut().unwrap().remove("type"))),
        ),
        (
            "an unknown type",
            broken(&|p| p["type"] = json!("unit_skipped")),
        ),
        ("a score as text", broken(&|p| p["score"] = json!("7.5"))),
        ("seq 0", broken(&|p| p["seq"] = json!(0))),
        (
            "a user id that is no uuid",
            broken(&|p| p["user_id"] = json!("learner-1")),
        ),
        (
            "a time that is no time",
            broken(&|p| p["occurred_at"] = json!("yesterday")),
        ),
        (
            "no attempt id",
            broken(&|p| drop(p.as_object_mut().unwrap().remove("attempt_id"))),
        ),
    ];
    for (what, payload) in invalid {
        assert!(
            !commands_schema.is_valid(&payload),
            "a command with {what} validated"
        );
    }

    let events_schema = validator("progress-event.schema.json");
    let event = json!({
        "event_id": Uuid::new_v4(), "type": "track_started", "version": "1",
        "occurred_at": at(0), "applied_at": at(1), "progress": {}
    });
    assert!(
        !events_schema.is_valid(&event),
        "an event with a text version and no snapshot"
    );
}

#[test]
fn the_schemas_subcommand_writes_the_schemas_and_its_check_names_a_drift() {
    let dir = std::env::temp_dir().join(format!("lp-schemas-{}", Uuid::new_v4()));
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_learning-progress"))
            .arg("schemas")
            .args(args)
            .arg("--out")
            .arg(&dir)
            .output()
            .unwrap()
    };
    assert!(run(&[]).status.success());
    for file in ["progress-command.schema.json", "progress-event.schema.json"] {
        assert_eq!(
            std::fs::read(dir.join(file)).unwrap(),
            std::fs::read(checked_in().join(file)).unwrap(),
            "{file} as written by `schemas`"
        );
    }
    assert!(run(&["--check"]).status.success());

    std::fs::write(dir.join("progress-event.schema.json"), "{}").unwrap();
    let drift = run(&["--check"]);
    let stderr = String::from_utf8_lossy(&drift.stderr);
    assert_eq!(drift.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("progress-event.schema.json") && stderr.contains(schemas::REGENERATE),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_example_events_in_docs_events_md_validate_against_the_event_schema() {
    let erased = validator("progress-erased.schema.json");
    let validator = validator("progress-event.schema.json");
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/events.md"))
        .unwrap();
    let examples: Vec<Value> = doc
        .split("```json\n")
        .skip(1)
        .map(|block| serde_json::from_str(block.split("```").next().unwrap()).unwrap())
        .collect();
    let (tombstones, examples): (Vec<Value>, Vec<Value>) =
        examples.into_iter().partition(|e| e["type"] == "erased");
    assert_eq!(examples.len(), 5, "one example per event type");
    for example in &examples {
        assert_valid(&validator, example);
        let event: ProgressEvent = serde_json::from_value(example.clone()).unwrap();
        assert_eq!(event.version, event.progress.progress.version);
    }
    assert_eq!(tombstones.len(), 1, "one example of an erasure");
    assert_valid(&erased, &tombstones[0]);
    assert!(
        !erased.is_valid(&examples[0]),
        "a progress event is no erasure"
    );
    assert!(
        !validator.is_valid(&tombstones[0]),
        "an erasure is no progress event"
    );
}

#[test]
fn an_erasure_validates_against_its_schema() {
    let validator = validator("progress-erased.schema.json");
    let event = ErasedEvent::new(Uuid::new_v4(), Uuid::new_v4(), 7, at(100));
    assert_eq!((event.kind.as_str(), event.version), ("erased", 8));
    assert_valid(&validator, &serde_json::to_value(&event).unwrap());
    let mut wrong = serde_json::to_value(&event).unwrap();
    wrong["type"] = "unit_completed".into();
    assert!(!validator.is_valid(&wrong));
}
