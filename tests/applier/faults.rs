//! The applier's promise under faults: nothing acknowledged is lost, nothing stalls the other
//! learners, and a learner's history does not depend on delivery order or crashes.

use std::sync::atomic::Ordering;

use async_nats::HeaderMap;
use learning_progress::applier::{ApplierConfig, ApplierError, Seams};
use learning_progress::db::tracks::create_track;
use learning_progress::model::{Action, ProgressCommand, ProgressEvent, UserProgress};
use sqlx::PgPool;
use uuid::Uuid;

use super::common::{self, eventually, isolated_nats, read_stream, stream_len};
use super::{
    WAIT, at, command, path, publish, row_at_version, start_applier, start_default_applier,
    started, stop,
};

/// What applying `commands` in seq order must leave in the ledger: (seq, outcome, version).
fn history_in_seq_order(commands: &[ProgressCommand]) -> Vec<(i64, String, Option<i64>)> {
    let mut sorted: Vec<&ProgressCommand> = commands.iter().collect();
    sorted.sort_by_key(|c| c.seq);
    let first = sorted[0];
    let mut row = UserProgress::empty(first.user_id, first.track_id, first.occurred_at);
    sorted
        .iter()
        .map(|c| {
            let outcome = if row.apply(c, at(0)) {
                "applied"
            } else {
                "noop"
            };
            let version = (row.version > 0).then_some(row.version);
            (c.seq, outcome.to_owned(), version)
        })
        .collect()
}

async fn ledger_history(pool: &PgPool, user: Uuid) -> Vec<(i64, String, Option<i64>)> {
    sqlx::query_as(
        "select seq, outcome, version_after from progress_ledger where user_id = $1 order by seq",
    )
    .bind(user)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Dead letters as (reason, error header), in stream order.
fn dead_letter_reasons(dead: &[async_nats::jetstream::Message]) -> Vec<(String, String)> {
    dead.iter()
        .map(|m| {
            let headers = m.headers.as_ref().expect("dead letters carry headers");
            let header = |name| headers.get(name).map(|v| v.as_str().to_owned());
            (
                header("lp-dlq-reason").expect("a reason"),
                header("lp-dlq-error").expect("an error"),
            )
        })
        .collect()
}

/// A redelivered `track_started` arriving after the learner's next command must not change
/// what the path produces: the same outcomes, versions and events as in seq order.
#[sqlx::test]
async fn commands_delivered_out_of_order_leave_the_history_of_seq_order(pool: PgPool) {
    let (nats, js) = isolated_nats().await;
    let track = create_track(&pool, "Out of order", 3).await.unwrap();
    let user = Uuid::new_v4();
    let commands = path(user, &track);
    // seq 2 reaches the stream before seq 1, as a redelivery after a crash would
    let mut order: Vec<&ProgressCommand> = commands.iter().collect();
    order.swap(0, 1);
    for command in &order {
        publish(&js, &nats, command).await;
    }
    let config = ApplierConfig {
        batch_size: 1,
        ..ApplierConfig::default()
    };
    let applier = start_applier(&js, &pool, &nats, config, Seams::default());
    let expected = history_in_seq_order(&commands);
    let history = eventually(WAIT, "every command in the ledger", || async {
        let history = ledger_history(&pool, user).await;
        (history.len() == commands.len()).then_some(history)
    })
    .await;
    assert_eq!(history, expected);
    let events = read_stream(&js, &nats.events_stream, commands.len(), WAIT).await;
    let mut versions: Vec<(i64, i64)> = events
        .iter()
        .map(|m| serde_json::from_slice::<ProgressEvent>(&m.payload).unwrap())
        .map(|e| {
            let seq = commands
                .iter()
                .find(|c| c.command_id == e.event_id)
                .unwrap()
                .seq;
            (seq, e.version)
        })
        .collect();
    versions.sort();
    let expected_versions: Vec<(i64, i64)> =
        expected.iter().map(|(s, _, v)| (*s, v.unwrap())).collect();
    assert_eq!(
        versions, expected_versions,
        "one event per command, at its version"
    );
    stop(applier).await;
    common::delete_streams(&js, &nats).await;
}

/// A rejected command is in the ledger before its dead letter is published: a crash between
/// the two must not turn the redelivery into a silent duplicate.
#[sqlx::test]
async fn a_rejected_command_keeps_its_dead_letter_across_a_crash(pool: PgPool) {
    let (nats, js) = isolated_nats().await;
    let track = create_track(&pool, "Rejected", 2).await.unwrap();
    let other = create_track(&pool, "Other", 1).await.unwrap();
    let user = Uuid::new_v4();
    let foreign = command(
        user,
        track.id,
        1,
        Action::TrackStarted {
            current_unit_id: Some(other.units[0].id),
        },
    );
    publish(&js, &nats, &foreign).await;
    let config = ApplierConfig {
        ack_wait_secs: 1,
        ..ApplierConfig::default()
    };
    let seams = Seams::default();
    seams.halt_after_commit.store(true, Ordering::SeqCst);
    let (_, crashed) = start_applier(&js, &pool, &nats, config.clone(), seams);
    assert!(matches!(crashed.await.unwrap(), Err(ApplierError::Halted)));
    assert_eq!(stream_len(&js, &nats.dlq_stream).await, 0);

    let applier = start_applier(&js, &pool, &nats, config, Seams::default());
    let dead = read_stream(&js, &nats.dlq_stream, 1, WAIT).await;
    assert_eq!(dead_letter_reasons(&dead)[0].0, "foreign_unit");
    assert_eq!(dead[0].payload, serde_json::to_vec(&foreign).unwrap());
    stop(applier).await;
    common::delete_streams(&js, &nats).await;
}

/// A command the database refuses for good (here: the learner's stored row no longer
/// decodes) is dead-lettered alone; the other learners of its batch are applied.
#[sqlx::test]
async fn a_command_the_database_refuses_is_dead_lettered_and_its_batch_applied(pool: PgPool) {
    let (nats, js) = isolated_nats().await;
    let track = create_track(&pool, "Refused", 2).await.unwrap();
    let broken = Uuid::new_v4();
    sqlx::query(
        "insert into user_progress (user_id, track_id, assessment_results, version)
         values ($1, $2, '{\"not a unit id\": 1}', 1)",
    )
    .bind(broken)
    .bind(track.id)
    .execute(&pool)
    .await
    .unwrap();
    let start = |user| started(user, &track, 1);
    let others: Vec<Uuid> = (0..20).map(|_| Uuid::new_v4()).collect();
    publish(&js, &nats, &start(broken)).await;
    for user in &others {
        publish(&js, &nats, &start(*user)).await;
    }
    let config = ApplierConfig {
        max_backoff_ms: 100,
        ..ApplierConfig::default()
    };
    let applier = start_applier(&js, &pool, &nats, config, Seams::default());
    let dead = read_stream(&js, &nats.dlq_stream, 1, WAIT).await;
    let (reason, error) = &dead_letter_reasons(&dead)[0];
    assert_eq!(reason, "refused_by_database");
    assert!(error.contains("decod"), "{error}");
    for user in &others {
        eventually(WAIT, "the other learners applied", || {
            row_at_version(&pool, *user, track.id, 1)
        })
        .await;
    }
    // and the applier moves on to what comes after
    let later = Uuid::new_v4();
    publish(&js, &nats, &start(later)).await;
    eventually(WAIT, "a later command applied", || {
        row_at_version(&pool, later, track.id, 1)
    })
    .await;
    assert_eq!(stream_len(&js, &nats.dlq_stream).await, 1);
    stop(applier).await;
    common::delete_streams(&js, &nats).await;
}

/// A malformed command published as ordinary JetStream clients publish (expecting the
/// commands stream) is dead-lettered, and the commands behind it are applied.
#[sqlx::test]
async fn a_dead_letter_is_published_whatever_headers_the_original_carried(pool: PgPool) {
    let (nats, js) = isolated_nats().await;
    let track = create_track(&pool, "Headers", 1).await.unwrap();
    let user = Uuid::new_v4();
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Expected-Stream", nats.commands_stream.as_str());
    headers.insert("Nats-Msg-Id", "client-chosen-id");
    js.publish_with_headers(
        nats.command_subject(user, track.id),
        headers,
        "{\"not\": \"a command\"}".into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let good = command(
        Uuid::new_v4(),
        track.id,
        1,
        Action::TrackStarted {
            current_unit_id: None,
        },
    );
    publish(&js, &nats, &good).await;
    let applier = start_default_applier(&js, &pool, &nats);
    let dead = read_stream(&js, &nats.dlq_stream, 1, WAIT).await;
    assert_eq!(dead_letter_reasons(&dead)[0].0, "malformed");
    let headers = dead[0].headers.as_ref().unwrap();
    // the original's expectations and id travel as information, not as instructions
    assert!(headers.get("Nats-Expected-Stream").is_none());
    assert_eq!(
        headers
            .get("lp-dlq-original-Nats-Expected-Stream")
            .map(|v| v.as_str()),
        Some(nats.commands_stream.as_str())
    );
    eventually(WAIT, "the command behind it applied", || {
        row_at_version(&pool, good.user_id, track.id, 1)
    })
    .await;
    stop(applier).await;
    common::delete_streams(&js, &nats).await;
}

/// Commands are small: the stream refuses a huge one at publish time, and a dead letter adds
/// only a bounded error to what the stream took, however much the error would echo.
#[sqlx::test]
async fn oversized_commands_are_refused_and_dead_letters_stay_bounded(pool: PgPool) {
    let (nats, js) = isolated_nats().await;
    let track = create_track(&pool, "Sizes", 1).await.unwrap();
    let user = Uuid::new_v4();
    let subject = nats.command_subject(user, track.id);
    // serde names an unknown variant in its error, so the error echoes the whole type
    let echoing = |size: usize| {
        serde_json::to_vec(&serde_json::json!({
            "command_id": Uuid::new_v4(), "user_id": user, "track_id": track.id, "seq": 1,
            "occurred_at": at(1), "type": "x".repeat(size),
        }))
        .unwrap()
    };
    let refused = async {
        js.publish(subject.clone(), echoing(600_000).into())
            .await?
            .await
    };
    assert!(
        refused.await.is_err(),
        "a 600 kB command was stored in the commands stream"
    );
    js.publish(subject.clone(), echoing(200_000).into())
        .await
        .unwrap()
        .await
        .unwrap();
    let applier = start_default_applier(&js, &pool, &nats);
    let dead = read_stream(&js, &nats.dlq_stream, 1, WAIT).await;
    let (reason, error) = &dead_letter_reasons(&dead)[0];
    assert_eq!(reason, "unknown_type");
    assert!(
        error.len() <= 1024,
        "an error header of {} bytes",
        error.len()
    );
    stop(applier).await;
    common::delete_streams(&js, &nats).await;
}

/// A forged `seq` far ahead, or an `occurred_at` before the platform existed, would rewrite a
/// learner's path for ever: both are dead-lettered as invalid.
#[sqlx::test]
async fn commands_out_of_bounds_are_dead_lettered(pool: PgPool) {
    let (nats, js) = isolated_nats().await;
    let track = create_track(&pool, "Bounds", 1).await.unwrap();
    let start = |user| {
        command(
            user,
            track.id,
            1,
            Action::TrackStarted {
                current_unit_id: None,
            },
        )
    };
    let far = ProgressCommand {
        seq: 1_000_000_000_000,
        ..start(Uuid::new_v4())
    };
    let ancient = ProgressCommand {
        occurred_at: "1900-01-01T00:00:00Z".parse().unwrap(),
        ..start(Uuid::new_v4())
    };
    publish(&js, &nats, &far).await;
    publish(&js, &nats, &ancient).await;
    let applier = start_default_applier(&js, &pool, &nats);
    let dead = read_stream(&js, &nats.dlq_stream, 2, WAIT).await;
    let reasons: Vec<String> = dead_letter_reasons(&dead)
        .into_iter()
        .map(|(r, _)| r)
        .collect();
    assert_eq!(reasons, ["invalid", "invalid"]);
    let rows: i64 = sqlx::query_scalar("select count(*) from user_progress")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 0);
    stop(applier).await;
    common::delete_streams(&js, &nats).await;
}

/// Two appliers share the durable, one message per batch, one learner: every command applied
/// once, in seq order, no deadlock. Events may leave out of version order (each instance
/// publishes its own), so the contract is the version they carry.
#[sqlx::test]
async fn two_appliers_apply_one_learner_in_seq_order(pool: PgPool) {
    let (nats, js) = isolated_nats().await;
    let track = create_track(&pool, "Two appliers", 1).await.unwrap();
    let user = Uuid::new_v4();
    let unit = track.units[0].id;
    let mut commands = vec![command(
        user,
        track.id,
        1,
        Action::TrackStarted {
            current_unit_id: Some(unit),
        },
    )];
    for seq in 2..=50 {
        commands.push(command(
            user,
            track.id,
            seq,
            Action::AssessmentRecorded {
                unit_id: unit,
                attempt_id: Uuid::new_v4(),
                score: 1.0,
                max_score: 2.0,
                passed: false,
            },
        ));
    }
    let config = ApplierConfig {
        batch_size: 1,
        ..ApplierConfig::default()
    };
    let first = start_applier(&js, &pool, &nats, config.clone(), Seams::default());
    let second = start_applier(&js, &pool, &nats, config, Seams::default());
    for command in &commands {
        publish(&js, &nats, command).await;
    }
    let history = eventually(WAIT, "all 50 commands in the ledger", || async {
        let history = ledger_history(&pool, user).await;
        (history.len() == commands.len()).then_some(history)
    })
    .await;
    assert_eq!(history, history_in_seq_order(&commands));
    let events = read_stream(&js, &nats.events_stream, commands.len(), WAIT).await;
    let mut versions: Vec<i64> = events
        .iter()
        .map(|m| {
            serde_json::from_slice::<ProgressEvent>(&m.payload)
                .unwrap()
                .version
        })
        .collect();
    versions.sort();
    assert_eq!(versions, (1..=50).collect::<Vec<i64>>());
    stop(first).await;
    stop(second).await;
    common::delete_streams(&js, &nats).await;
}

/// An applier outage longer than any age limit must not lose commands or dead letters: the
/// commands stream is a work queue without an age limit (a command leaves when applied), dead
/// letters never age out, and only events — derivable again — are bounded by age and bytes.
#[tokio::test]
async fn streams_keep_commands_until_applied_and_dead_letters_until_handled() {
    use async_nats::jetstream::stream::{DiscardPolicy, RetentionPolicy};
    let (nats, js) = isolated_nats().await;
    let config = |name: String| {
        let js = js.clone();
        async move {
            js.get_stream(name)
                .await
                .unwrap()
                .info()
                .await
                .unwrap()
                .config
                .clone()
        }
    };
    let commands = config(nats.commands_stream.clone()).await;
    assert_eq!(commands.retention, RetentionPolicy::WorkQueue);
    assert_eq!(commands.max_age, std::time::Duration::ZERO);
    assert_eq!(commands.discard, DiscardPolicy::New);
    let dead = config(nats.dlq_stream.clone()).await;
    assert_eq!(dead.max_age, std::time::Duration::ZERO);
    assert_eq!(dead.discard, DiscardPolicy::New);
    let events = config(nats.events_stream.clone()).await;
    assert!(events.max_age > std::time::Duration::ZERO && events.max_bytes > 0);
    assert_eq!(events.discard, DiscardPolicy::Old);

    // a commands stream of an older version, kept by age, is refused with what to do
    common::delete_streams(&js, &nats).await;
    js.create_stream(async_nats::jetstream::stream::Config {
        name: nats.commands_stream.clone(),
        subjects: vec![format!("{}.cmd.>", nats.subject_prefix)],
        ..Default::default()
    })
    .await
    .unwrap();
    let refused = learning_progress::messaging::ensure_streams(&js, &nats)
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("delete it"), "{refused}");
    common::delete_streams(&js, &nats).await;
}

/// A command redelivered long after it was applied (here: after the learner's later commands)
/// re-announces exactly the event it produced then — same version, snapshot and time — not
/// today's snapshot under its id.
#[sqlx::test]
async fn a_redelivered_command_re_announces_the_exact_event_it_produced(pool: PgPool) {
    let (nats, js) = isolated_nats().await;
    let track = create_track(&pool, "Replay", 3).await.unwrap();
    let user = Uuid::new_v4();
    let commands = path(user, &track);
    for command in &commands {
        publish(&js, &nats, command).await;
    }
    let applier = start_default_applier(&js, &pool, &nats);
    let events = read_stream(&js, &nats.events_stream, commands.len(), WAIT).await;
    stop(applier).await;
    let original = events
        .iter()
        .map(|m| serde_json::from_slice::<ProgressEvent>(&m.payload).unwrap())
        .find(|e| e.event_id == commands[1].command_id)
        .unwrap();

    // the same command again under another message id, as after JetStream's duplicate window;
    // a plain subscriber sees its event even if the stream drops it as a duplicate
    let client = learning_progress::messaging::connect(&nats, "test-observer")
        .await
        .unwrap();
    let mut announced = client
        .subscribe(nats.event_subject(user, track.id))
        .await
        .unwrap();
    client.flush().await.unwrap();
    js.publish(
        nats.command_subject(user, track.id),
        serde_json::to_vec(&commands[1]).unwrap().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let applier = start_default_applier(&js, &pool, &nats);
    let replay = tokio::time::timeout(WAIT, futures::StreamExt::next(&mut announced))
        .await
        .expect("the duplicate re-announced")
        .unwrap();
    let replay: ProgressEvent = serde_json::from_slice(&replay.payload).unwrap();
    assert_eq!(replay, original);
    stop(applier).await;
    common::delete_streams(&js, &nats).await;
}

/// Attempts per unit are bounded, so no learner's snapshot (and event) can outgrow what
/// JetStream accepts: the attempt beyond the bound is rejected with its own reason.
#[sqlx::test]
async fn attempts_beyond_the_bound_are_rejected(pool: PgPool) {
    use learning_progress::model::MAX_ATTEMPTS_PER_UNIT;
    let (nats, js) = isolated_nats().await;
    let track = create_track(&pool, "Attempts", 1).await.unwrap();
    let user = Uuid::new_v4();
    let unit = track.units[0].id;
    let attempts = MAX_ATTEMPTS_PER_UNIT as i64 + 1;
    for seq in 1..=attempts {
        let attempt = command(
            user,
            track.id,
            seq,
            Action::AssessmentRecorded {
                unit_id: unit,
                attempt_id: Uuid::new_v4(),
                score: 5.0,
                max_score: 10.0,
                passed: false,
            },
        );
        publish(&js, &nats, &attempt).await;
    }
    let applier = start_default_applier(&js, &pool, &nats);
    let dead = read_stream(&js, &nats.dlq_stream, 1, WAIT).await;
    assert_eq!(dead_letter_reasons(&dead)[0].0, "too_many_attempts");
    let row = eventually(WAIT, "the kept attempts applied", || {
        row_at_version(&pool, user, track.id, MAX_ATTEMPTS_PER_UNIT as i64)
    })
    .await;
    assert_eq!(
        row.assessment_results[&unit].attempts.len(),
        MAX_ATTEMPTS_PER_UNIT
    );
    stop(applier).await;
    common::delete_streams(&js, &nats).await;
}

/// An applier dies between its commit and its event's publish, and the broker then loses the
/// unacknowledged command, so nothing is redelivered: the sweep announces the change from the
/// ledger, once, at the version it made.
#[sqlx::test]
async fn a_change_whose_command_the_broker_lost_after_a_crash_is_still_announced(pool: PgPool) {
    let (nats, js) = isolated_nats().await;
    let track = create_track(&pool, "Unannounced", 2).await.unwrap();
    let user = Uuid::new_v4();
    let started = started(user, &track, 1);
    publish(&js, &nats, &started).await;
    let config = ApplierConfig {
        announce_after_secs: 0,
        ..ApplierConfig::default()
    };
    let seams = Seams::default();
    seams.halt_after_commit.store(true, Ordering::SeqCst);
    let (_, crashed) = start_applier(&js, &pool, &nats, config.clone(), seams);
    assert!(matches!(crashed.await.unwrap(), Err(ApplierError::Halted)));
    eventually(WAIT, "the row committed", || {
        row_at_version(&pool, user, track.id, 1)
    })
    .await;
    // the broker loses the command before anyone acknowledged it
    js.get_stream(&nats.commands_stream)
        .await
        .unwrap()
        .purge()
        .await
        .unwrap();
    assert_eq!(stream_len(&js, &nats.events_stream).await, 0);

    let applier = start_applier(&js, &pool, &nats, config, Seams::default());
    let events = read_stream(&js, &nats.events_stream, 1, WAIT).await;
    let event: ProgressEvent = serde_json::from_slice(&events[0].payload).unwrap();
    assert_eq!(event.event_id, started.command_id);
    assert_eq!(event.version, 1);
    eventually(WAIT, "the announcement recorded", || async {
        let announced: bool =
            sqlx::query_scalar("select announced from progress_ledger where command_id = $1")
                .bind(started.command_id)
                .fetch_one(&pool)
                .await
                .unwrap();
        announced.then_some(())
    })
    .await;
    stop(applier).await;
    assert_eq!(
        common::ever_stored(&js, &nats.events_stream).await,
        1,
        "announced once"
    );
    common::delete_streams(&js, &nats).await;
}
