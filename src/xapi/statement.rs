//! The mapping from an applied command to an xAPI statement: pure functions, no I/O.
//!
//! `docs/xapi.md` describes it, with an example of each statement. The ids are deterministic
//! UUIDv8s (RFC 9562's name-based layout with SHA-256): the statement id is the first 128 bits
//! of SHA-256(`STATEMENT_NAMESPACE` ‖ command id), the registration those of
//! SHA-256(`REGISTRATION_NAMESPACE` ‖ user id ‖ track id), with the version and variant bits
//! set; so the same command always gives the same statement, and a resent one is a duplicate
//! the LRS recognises. SHA-256 rather than v5's SHA-1: PostgreSQL computes it without an
//! extension, so the ledger is searched by statement id (`xapi_statement_id`, migrations/).

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::XapiConfig;
use crate::model::{Action, ProgressCommand};

/// The namespace of statement ids.
pub(crate) const STATEMENT_NAMESPACE: Uuid =
    Uuid::from_u128(0x6c0b_6a1e_58d4_4f0e_9a57_3a0e_2f1c_5d01);

/// The namespace of registrations, one per (learner, track).
pub(crate) const REGISTRATION_NAMESPACE: Uuid =
    Uuid::from_u128(0x6c0b_6a1e_58d4_4f0e_9a57_3a0e_2f1c_5d02);

/// ADL's verbs; `attempted` marks the start of a track (docs/xapi.md says why).
pub mod verbs {
    pub(crate) const ATTEMPTED: &str = "http://adlnet.gov/expapi/verbs/attempted";
    pub const COMPLETED: &str = "http://adlnet.gov/expapi/verbs/completed";
    pub const PASSED: &str = "http://adlnet.gov/expapi/verbs/passed";
    pub const FAILED: &str = "http://adlnet.gov/expapi/verbs/failed";
}

/// ADL's activity types.
mod activity_types {
    pub(crate) const COURSE: &str = "http://adlnet.gov/expapi/activities/course";
    pub(crate) const LESSON: &str = "http://adlnet.gov/expapi/activities/lesson";
    pub(crate) const ASSESSMENT: &str = "http://adlnet.gov/expapi/activities/assessment";
}

/// An applied command as the ledger holds it, with the catalogue's titles.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LedgerRecord {
    pub command: ProgressCommand,
    /// When the applier recorded it: the statement's `stored`.
    pub applied_at: DateTime<Utc>,
    pub track_title: String,
    /// The unit the command names, if any: its title and kind (`lesson`, `assessment`).
    pub unit: Option<UnitTitle>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct UnitTitle {
    pub title: String,
    pub kind: String,
}

/// One xAPI statement, as JSON. Kept as a value: an LRS answers statements back as JSON, and
/// the tests compare them field by field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct Statement(pub Value);

impl Statement {
    pub(crate) fn id(&self) -> Uuid {
        self.0["id"]
            .as_str()
            .and_then(|id| id.parse().ok())
            .expect("every statement built here has an id")
    }
}

pub fn statement_id(command_id: Uuid) -> Uuid {
    name_based(STATEMENT_NAMESPACE, &[command_id])
}

pub fn registration(user_id: Uuid, track_id: Uuid) -> Uuid {
    name_based(REGISTRATION_NAMESPACE, &[user_id, track_id])
}

/// UUIDv8 from SHA-256 over the namespace's and the names' bytes.
fn name_based(namespace: Uuid, names: &[Uuid]) -> Uuid {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    hash.update(namespace.as_bytes());
    for name in names {
        hash.update(name.as_bytes());
    }
    let digest = hash.finalize();
    let bytes: [u8; 16] = digest[..16].try_into().expect("SHA-256 has 32 bytes");
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// The verb a command becomes.
pub(crate) fn verb(action: &Action) -> &'static str {
    match action {
        Action::TrackStarted { .. } => verbs::ATTEMPTED,
        Action::UnitCompleted { .. } | Action::TrackCompleted {} => verbs::COMPLETED,
        Action::AssessmentRecorded { passed: true, .. } => verbs::PASSED,
        Action::AssessmentRecorded { passed: false, .. } => verbs::FAILED,
    }
}

/// The statement of an applied command. `stored` is included when `with_stored` (the read
/// view, which is the store); a statement sent to an LRS leaves it to the LRS.
pub(crate) fn statement(
    config: &XapiConfig,
    record: &LedgerRecord,
    with_stored: bool,
) -> Statement {
    let command = &record.command;
    let track = activity(
        config.track_iri(command.track_id),
        &record.track_title,
        activity_types::COURSE,
        &config.language,
    );
    let unit_activity = |unit_id: Uuid| {
        let (title, kind) = match &record.unit {
            Some(unit) => (unit.title.as_str(), unit.kind.as_str()),
            None => ("", "lesson"),
        };
        let kind = if kind == "assessment" {
            activity_types::ASSESSMENT
        } else {
            activity_types::LESSON
        };
        activity(
            config.unit_iri(command.track_id, unit_id),
            title,
            kind,
            &config.language,
        )
    };
    let (object, result, parent) = match &command.action {
        Action::TrackStarted { .. } => (track, None, None),
        Action::TrackCompleted {} => (track, Some(json!({ "completion": true })), None),
        Action::UnitCompleted { unit_id, .. } => (
            unit_activity(*unit_id),
            Some(json!({ "completion": true })),
            Some(track),
        ),
        Action::AssessmentRecorded {
            unit_id,
            score,
            max_score,
            passed,
            ..
        } => (
            unit_activity(*unit_id),
            Some(json!({
                "success": passed,
                "score": { "scaled": scaled(*score, *max_score), "raw": score, "min": 0, "max": max_score },
            })),
            Some(track),
        ),
    };
    let mut context = Map::new();
    context.insert(
        "registration".into(),
        registration(command.user_id, command.track_id)
            .to_string()
            .into(),
    );
    if let Some(parent) = parent {
        context.insert("contextActivities".into(), json!({ "parent": [parent] }));
    }
    context.insert("platform".into(), "learning-progress".into());
    if let Action::AssessmentRecorded { attempt_id, .. } = &command.action {
        let mut extensions = Map::new();
        extensions.insert(
            format!("{}/extensions/attempt-id", config.base()),
            attempt_id.to_string().into(),
        );
        context.insert("extensions".into(), Value::Object(extensions));
    }
    let mut statement = Map::new();
    statement.insert(
        "id".into(),
        statement_id(command.command_id).to_string().into(),
    );
    statement.insert(
        "actor".into(),
        json!({
            "objectType": "Agent",
            "account": { "homePage": config.home_page, "name": command.user_id },
        }),
    );
    statement.insert(
        "verb".into(),
        json!({ "id": verb(&command.action), "display": { "en-US": verb_display(&command.action) } }),
    );
    statement.insert("object".into(), object);
    if let Some(result) = result {
        statement.insert("result".into(), result);
    }
    statement.insert("context".into(), Value::Object(context));
    statement.insert("timestamp".into(), timestamp(command.occurred_at).into());
    if with_stored {
        statement.insert("stored".into(), timestamp(record.applied_at).into());
    }
    Statement(Value::Object(statement))
}

fn activity(id: String, title: &str, kind: &str, language: &str) -> Value {
    let mut definition = json!({ "type": kind });
    if !title.is_empty() {
        let mut name = Map::new();
        name.insert(language.to_owned(), title.into());
        definition["name"] = Value::Object(name);
    }
    json!({ "objectType": "Activity", "id": id, "definition": definition })
}

fn verb_display(action: &Action) -> &'static str {
    match verb(action) {
        verbs::ATTEMPTED => "attempted",
        verbs::COMPLETED => "completed",
        verbs::PASSED => "passed",
        _ => "failed",
    }
}

/// Score over maximum, within 0..=1 (the command's validation guarantees both are finite and
/// `0 <= score <= max_score`, `max_score > 0`); rounded to 4 decimals, as the spec's examples.
fn scaled(score: f64, max_score: f64) -> f64 {
    ((score / max_score).clamp(0.0, 1.0) * 10_000.0).round() / 10_000.0
}

/// RFC 3339 in UTC with the microseconds PostgreSQL keeps: the same text however often made.
pub(crate) fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(action: Action, unit: Option<(&str, &str)>) -> LedgerRecord {
        LedgerRecord {
            command: ProgressCommand {
                command_id: Uuid::from_u128(1),
                user_id: Uuid::from_u128(2),
                track_id: Uuid::from_u128(3),
                seq: 2,
                occurred_at: "2026-11-25T10:00:00.123456Z".parse().unwrap(),
                action,
            },
            applied_at: "2026-11-25T10:00:01Z".parse().unwrap(),
            track_title: "Rust basics".to_owned(),
            unit: unit.map(|(title, kind)| UnitTitle {
                title: title.to_owned(),
                kind: kind.to_owned(),
            }),
        }
    }

    fn config() -> XapiConfig {
        XapiConfig {
            home_page: "https://project.supabase.co".to_owned(),
            activity_base: "https://lp.example/activities/".to_owned(),
            language: "en".to_owned(),
        }
    }

    const TRACK: &str = "https://lp.example/activities/tracks/00000000-0000-0000-0000-000000000003";

    #[test]
    fn a_passed_assessment_is_a_passed_statement_with_its_score_under_the_track() {
        let action = Action::AssessmentRecorded {
            unit_id: Uuid::from_u128(4),
            attempt_id: Uuid::from_u128(5),
            score: 7.0,
            max_score: 8.0,
            passed: true,
        };
        let statement = statement(
            &config(),
            &record(action, Some(("Quiz", "assessment"))),
            false,
        )
        .0;
        assert_eq!(
            statement["id"],
            statement_id(Uuid::from_u128(1)).to_string()
        );
        assert_eq!(statement["verb"]["id"], verbs::PASSED);
        assert_eq!(
            statement["actor"]["account"],
            json!({"homePage": "https://project.supabase.co", "name": Uuid::from_u128(2)})
        );
        assert_eq!(
            statement["object"]["id"],
            format!("{TRACK}/units/00000000-0000-0000-0000-000000000004")
        );
        assert_eq!(statement["object"]["definition"]["name"]["en"], "Quiz");
        assert_eq!(
            statement["object"]["definition"]["type"],
            activity_types::ASSESSMENT
        );
        assert_eq!(
            statement["result"],
            json!({"success": true, "score": {"scaled": 0.875, "raw": 7.0, "min": 0, "max": 8.0}})
        );
        assert_eq!(
            statement["context"]["contextActivities"]["parent"][0]["id"],
            TRACK
        );
        assert_eq!(
            statement["context"]["registration"],
            registration(Uuid::from_u128(2), Uuid::from_u128(3)).to_string()
        );
        assert_eq!(statement["timestamp"], "2026-11-25T10:00:00.123456Z");
        assert!(statement.get("stored").is_none());
    }

    #[test]
    fn a_failed_assessment_says_failed_and_unsuccessful() {
        let action = Action::AssessmentRecorded {
            unit_id: Uuid::from_u128(4),
            attempt_id: Uuid::from_u128(5),
            score: 1.0,
            max_score: 3.0,
            passed: false,
        };
        let statement = statement(
            &config(),
            &record(action, Some(("Quiz", "assessment"))),
            true,
        )
        .0;
        assert_eq!(statement["verb"]["id"], verbs::FAILED);
        assert_eq!(statement["result"]["success"], false);
        assert_eq!(statement["result"]["score"]["scaled"], 0.3333);
        assert_eq!(statement["stored"], "2026-11-25T10:00:01.000000Z");
    }

    #[test]
    fn completing_a_unit_or_the_track_is_completed_with_completion() {
        let unit = Action::UnitCompleted {
            unit_id: Uuid::from_u128(4),
            next_unit_id: None,
        };
        let statement_of_unit =
            statement(&config(), &record(unit, Some(("Intro", "lesson"))), false).0;
        assert_eq!(statement_of_unit["verb"]["id"], verbs::COMPLETED);
        assert_eq!(statement_of_unit["result"], json!({"completion": true}));
        assert_eq!(
            statement_of_unit["object"]["definition"]["type"],
            activity_types::LESSON
        );

        let track = statement(&config(), &record(Action::TrackCompleted {}, None), false).0;
        assert_eq!(track["verb"]["id"], verbs::COMPLETED);
        assert_eq!(track["object"]["id"], TRACK);
        assert_eq!(track["object"]["definition"]["name"]["en"], "Rust basics");
        assert!(track["context"].get("contextActivities").is_none());
    }

    #[test]
    fn starting_a_track_is_attempted_on_the_track_without_a_result() {
        let action = Action::TrackStarted {
            current_unit_id: Some(Uuid::from_u128(4)),
        };
        let statement = statement(&config(), &record(action, None), false).0;
        assert_eq!(statement["verb"]["id"], verbs::ATTEMPTED);
        assert_eq!(statement["object"]["id"], TRACK);
        assert!(statement.get("result").is_none());
    }

    #[test]
    fn the_same_command_always_gives_the_same_statement_and_ids_differ_between_commands() {
        let action = Action::TrackCompleted {};
        let once = statement(&config(), &record(action.clone(), None), false);
        let again = statement(&config(), &record(action.clone(), None), false);
        assert_eq!(once, again);
        let mut other = record(action, None);
        other.command.command_id = Uuid::from_u128(9);
        assert_ne!(statement(&config(), &other, false).id(), once.id());
        assert_eq!(once.id().get_version_num(), 8);
        // the values migrations/…_xapi_statement_id.sql computes for the same ids
        assert_eq!(
            statement_id(Uuid::from_u128(1)).to_string(),
            "e0a764e3-ee30-8e4c-8d38-40dc9c434497"
        );
        assert_eq!(
            registration(Uuid::from_u128(2), Uuid::from_u128(3)).to_string(),
            "3b7650c7-03af-8855-94ef-ba842149ee6e"
        );
        assert_ne!(
            registration(Uuid::from_u128(2), Uuid::from_u128(3)),
            registration(Uuid::from_u128(3), Uuid::from_u128(2))
        );
    }

    /// `docs/xapi.md` shows one statement per command type; each must be what the mapping
    /// makes for its command, verbatim.
    #[test]
    fn the_documented_examples_are_the_statements_the_mapping_makes() {
        let docs = include_str!("../../docs/xapi.md");
        let config = XapiConfig {
            home_page: "https://abcdefghijklmnop.supabase.co".to_owned(),
            activity_base: "https://learn.example.com/xapi/activities".to_owned(),
            language: "en".to_owned(),
        };
        let unit = Uuid::parse_str("0b6f1d4e-6a43-4d8e-9a61-5c7e0f0a2b11").unwrap();
        let quiz = Uuid::parse_str("7d2c4f6a-1b3e-4c5d-8e9f-0a1b2c3d4e5f").unwrap();
        let examples = [
            (
                Action::TrackStarted {
                    current_unit_id: Some(unit),
                },
                None,
            ),
            (
                Action::UnitCompleted {
                    unit_id: unit,
                    next_unit_id: Some(quiz),
                },
                Some(("Ownership", "lesson")),
            ),
            (
                Action::AssessmentRecorded {
                    unit_id: quiz,
                    attempt_id: Uuid::parse_str("5e0c9b8a-7f6d-4e3c-9b2a-1f0e9d8c7b6a").unwrap(),
                    score: 8.5,
                    max_score: 10.0,
                    passed: true,
                },
                Some(("Ownership quiz", "assessment")),
            ),
            (Action::TrackCompleted {}, None),
        ];
        for (seq, (action, unit)) in examples.into_iter().enumerate() {
            let mut record = record(action, unit);
            record.command.command_id = Uuid::from_u128(0x1f3a_0000 + seq as u128);
            record.command.user_id =
                Uuid::parse_str("9a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d").unwrap();
            record.command.track_id =
                Uuid::parse_str("3c4d5e6f-7a8b-4c9d-8e0f-1a2b3c4d5e6f").unwrap();
            record.track_title = "Rust basics".to_owned();
            let text = serde_json::to_string_pretty(&statement(&config, &record, false)).unwrap();
            assert!(docs.contains(&text), "docs/xapi.md lacks\n{text}");
        }
    }
}
