//! The learning-path workflow on a real Temporal dev server, NATS and PostgreSQL: the exact
//! commands it publishes, its validated updates, its query, and JetStream deduplication.
//! Every test has its own task queue, streams and database.

mod common;

use std::future::Future;
use std::time::Duration;

use async_nats::jetstream;
use common::{delete_streams, eventually, isolated_nats, read_stream, stream_len};
use learning_progress::applier::{self, ApplierConfig, Seams};
use learning_progress::db::progress::get_user_progress;
use learning_progress::db::tracks::create_track;
use learning_progress::messaging::{self, NatsConfig, header_str};
use learning_progress::model::{Action, ProgressCommand, Status, decode_command};
use learning_progress::workflow::client::{self, ClientError};
use learning_progress::workflow::{
    self, AssessmentRecorded, LearningPathInput, LearningPathWorkflow, PublishFailure,
    TemporalConfig, WorkerDeps, command_id, workflow_id,
};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);

fn temporal_config() -> TemporalConfig {
    let address = std::env::var("TEMPORAL_ADDRESS").unwrap_or_else(|_| "127.0.0.1:7233".to_owned());
    TemporalConfig::new(address, format!("test-{}", Uuid::new_v4()))
}

/// Runs a worker on its own task queue while `body` runs, then shuts it down gracefully.
/// The worker is not `Send`, so both are driven on this task.
async fn with_worker<F, Fut>(pool: PgPool, body: F)
where
    F: FnOnce(temporalio_client::Client, TemporalConfig, NatsConfig, jetstream::Context) -> Fut,
    Fut: Future<Output = ()>,
{
    let temporal = temporal_config();
    let (nats, js) = isolated_nats().await;
    let client = workflow::connect(&temporal, "test")
        .await
        .expect("Temporal reachable");
    let deps = WorkerDeps {
        client: client.clone(),
        jetstream: js.clone(),
        nats: nats.clone(),
        pool,
    };
    let shutdown = CancellationToken::new();
    let worker = workflow::run(&temporal, deps, shutdown.clone());
    let test = async {
        body(client, temporal.clone(), nats.clone(), js.clone()).await;
        shutdown.cancel();
    };
    let (worker, ()) = tokio::join!(worker, test);
    worker.expect("the worker ran and stopped cleanly");
    delete_streams(&js, &nats).await;
}

/// The commands on the stream, in stream order, checked against their headers.
async fn published(
    js: &jetstream::Context,
    nats: &NatsConfig,
    count: usize,
) -> Vec<ProgressCommand> {
    let messages = eventually(WAIT, "the commands stored", || async {
        let messages = common::stored(js, &nats.commands_stream).await;
        (messages.len() >= count).then_some(messages)
    })
    .await;
    messages
        .iter()
        .map(|m| {
            let command = decode_command(&m.payload).expect("a valid command");
            let id = command.command_id.to_string();
            let kind = format!("learning.progress.command.{}.v1", command.kind());
            assert_eq!(
                header_str(Some(&m.headers), "Nats-Msg-Id"),
                Some(id.as_str())
            );
            assert_eq!(header_str(Some(&m.headers), "ce-id"), Some(id.as_str()));
            assert_eq!(header_str(Some(&m.headers), "ce-type"), Some(kind.as_str()));
            command
        })
        .collect()
}

#[sqlx::test]
async fn a_learner_completing_every_unit_publishes_the_exact_commands_in_seq_order(pool: PgPool) {
    let track = create_track(&pool, "Rust basics", 3).await.unwrap();
    let units: Vec<Uuid> = track.units.iter().map(|u| u.id).collect();
    let user = Uuid::new_v4();
    let attempt = AssessmentRecorded {
        unit_id: units[2],
        attempt_id: Uuid::new_v4(),
        score: 7.0,
        max_score: 10.0,
        passed: true,
    };
    with_worker(pool.clone(), |client, temporal, nats, js| async move {
        let input = LearningPathInput {
            // no applier runs here: one reconcile round, then the outcome lists what is missing
            reconcile_rounds: Some(1),
            reconcile_interval_ms: 50,
            ..LearningPathInput::new(user, track.id, units.clone())
        };
        let id = client::start(&client, &temporal, input).await.unwrap();
        assert_eq!(id, format!("learning-path/{user}/{}", track.id));

        client::signal_unit_completed(&client, user, track.id, units[0])
            .await
            .unwrap();
        client::signal_assessment_recorded(&client, user, track.id, attempt.clone())
            .await
            .unwrap();
        // ignored: a duplicate, a unit of another track, a score above the maximum
        client::signal_unit_completed(&client, user, track.id, units[0])
            .await
            .unwrap();
        client::signal_unit_completed(&client, user, track.id, Uuid::new_v4())
            .await
            .unwrap();
        let too_high = AssessmentRecorded {
            attempt_id: Uuid::new_v4(),
            score: 11.0,
            ..attempt.clone()
        };
        client::signal_assessment_recorded(&client, user, track.id, too_high)
            .await
            .unwrap();
        client::signal_unit_completed(&client, user, track.id, units[1])
            .await
            .unwrap();
        client::signal_unit_completed(&client, user, track.id, units[2])
            .await
            .unwrap();

        let outcome = tokio::time::timeout(WAIT, client::result(&client, user, track.id))
            .await
            .expect("the workflow ends after the last unit")
            .unwrap();
        assert_eq!(outcome.seq, 6);
        assert_eq!(outcome.completed_unit_ids, units);
        // the reconcile re-published all six; JetStream dropped them as duplicates
        assert_eq!(outcome.unreconciled_seqs, (1..=6).collect::<Vec<_>>());

        let commands = published(&js, &nats, 6).await;
        assert_eq!(stream_len(&js, &nats.commands_stream).await, 6);
        let workflow_id = workflow_id(user, track.id);
        for (i, command) in commands.iter().enumerate() {
            let seq = i as i64 + 1;
            assert_eq!(command.seq, seq);
            assert_eq!(command.command_id, command_id(&workflow_id, seq));
            assert_eq!((command.user_id, command.track_id), (user, track.id));
        }
        let actions: Vec<Action> = commands.into_iter().map(|c| c.action).collect();
        assert_eq!(
            actions,
            vec![
                Action::TrackStarted {
                    current_unit_id: Some(units[0])
                },
                Action::UnitCompleted {
                    unit_id: units[0],
                    next_unit_id: Some(units[1])
                },
                Action::AssessmentRecorded {
                    unit_id: units[2],
                    attempt_id: attempt.attempt_id,
                    score: 7.0,
                    max_score: 10.0,
                    passed: true,
                },
                Action::UnitCompleted {
                    unit_id: units[1],
                    next_unit_id: Some(units[2])
                },
                Action::UnitCompleted {
                    unit_id: units[2],
                    next_unit_id: None
                },
                Action::TrackCompleted {},
            ]
        );
    })
    .await;
}

#[sqlx::test]
async fn updates_outside_the_track_are_rejected_and_publish_nothing(pool: PgPool) {
    let track = create_track(&pool, "Rust basics", 3).await.unwrap();
    let units: Vec<Uuid> = track.units.iter().map(|u| u.id).collect();
    let user = Uuid::new_v4();
    with_worker(pool.clone(), |client, temporal, nats, js| async move {
        let input = LearningPathInput {
            reconcile_rounds: Some(0),
            ..LearningPathInput::new(user, track.id, units.clone())
        };
        client::start(&client, &temporal, input).await.unwrap();

        let foreign = client::complete_unit(&client, user, track.id, Uuid::new_v4()).await;
        assert!(
            matches!(&foreign, Err(ClientError::Rejected { reason, .. }) if reason.contains("not part of track")),
            "{foreign:?}"
        );
        let view = client::complete_unit(&client, user, track.id, units[0]).await.unwrap();
        assert_eq!(view.unit_ids, units);
        let again = client::complete_unit(&client, user, track.id, units[0]).await;
        assert!(
            matches!(&again, Err(ClientError::Rejected { reason, .. }) if reason.contains("already completed")),
            "{again:?}"
        );
        let bad_score = AssessmentRecorded {
            unit_id: units[2],
            attempt_id: Uuid::new_v4(),
            score: 3.0,
            max_score: 0.0,
            passed: false,
        };
        let bad = client::record_assessment(&client, user, track.id, bad_score).await;
        assert!(matches!(bad, Err(ClientError::Rejected { .. })), "{bad:?}");

        let view = eventually(WAIT, "the unit completion to be published", || async {
            let view = client::progress(&client, user, track.id).await.unwrap();
            (view.seq == 2 && view.pending == 0).then_some(view)
        })
        .await;
        assert_eq!(view.completed_unit_ids, vec![units[0]]);
        assert_eq!(view.current_unit_id, Some(units[1]));
        assert!(!view.track_completed);
        assert_eq!(stream_len(&js, &nats.commands_stream).await, 2);

        client::complete_unit(&client, user, track.id, units[1]).await.unwrap();
        client::complete_unit(&client, user, track.id, units[2]).await.unwrap();
        let outcome = tokio::time::timeout(WAIT, client::result(&client, user, track.id))
            .await
            .expect("the workflow ends after the last unit")
            .unwrap();
        assert_eq!(outcome.seq, 5);
        let kinds: Vec<&str> = published(&js, &nats, 5).await.iter().map(|c| c.kind()).collect();
        assert_eq!(
            kinds,
            ["track_started", "unit_completed", "unit_completed", "unit_completed", "track_completed"]
        );
    })
    .await;
}

#[tokio::test]
async fn a_command_published_twice_is_dropped_by_the_duplicate_window() {
    let (nats, js) = isolated_nats().await;
    let command = ProgressCommand {
        command_id: command_id("learning-path/test", 1),
        user_id: Uuid::new_v4(),
        track_id: Uuid::new_v4(),
        seq: 1,
        occurred_at: chrono::Utc::now(),
        action: Action::TrackStarted {
            current_unit_id: None,
        },
    };
    let first = workflow::publish(&js, &nats, &command).await.unwrap();
    let retried = workflow::publish(&js, &nats, &command).await.unwrap();
    assert!(!first.duplicate);
    assert!(retried.duplicate);
    assert_eq!(
        (retried.stream.as_str(), retried.sequence),
        (first.stream.as_str(), first.sequence)
    );
    assert_eq!(stream_len(&js, &nats.commands_stream).await, 1);
    delete_streams(&js, &nats).await;
}

#[sqlx::test]
async fn a_command_lost_from_the_stream_is_republished_by_reconcile_and_applied(pool: PgPool) {
    let track = create_track(&pool, "Rust basics", 3).await.unwrap();
    let units: Vec<Uuid> = track.units.iter().map(|u| u.id).collect();
    let user = Uuid::new_v4();
    with_worker(pool.clone(), |client, temporal, nats, js| async move {
        // a short duplicate window, so a re-publish of the lost message is stored again soon
        let nats = NatsConfig {
            duplicate_window_secs: 1,
            ..nats
        };
        messaging::ensure_streams(&js, &nats).await.unwrap();
        let input = LearningPathInput {
            reconcile_rounds: Some(30),
            reconcile_interval_ms: 300,
            ..LearningPathInput::new(user, track.id, units.clone())
        };
        client::start(&client, &temporal, input).await.unwrap();
        for unit in &units {
            client::complete_unit(&client, user, track.id, *unit)
                .await
                .unwrap();
        }
        eventually(WAIT, "every command to be published", || async {
            (stream_len(&js, &nats.commands_stream).await >= 5).then_some(())
        })
        .await;
        let mut stream = js.get_stream(&nats.commands_stream).await.unwrap();
        let lost = decode_command(&stream.get_raw_message(3).await.unwrap().payload).unwrap();
        assert!(stream.delete_message(3).await.unwrap());

        // the applier starts only now, so it never saw the lost command
        let applier_shutdown = CancellationToken::new();
        let applier = tokio::spawn(applier::run(
            js.clone(),
            pool.clone(),
            nats.clone(),
            ApplierConfig {
                durable: format!("applier-{}", Uuid::new_v4().simple()),
                ..ApplierConfig::default()
            },
            Seams::default(),
            applier_shutdown.clone(),
        ));

        let outcome = tokio::time::timeout(WAIT, client::result(&client, user, track.id))
            .await
            .expect("the workflow reconciles and ends")
            .unwrap();
        assert_eq!(outcome.seq, 5);
        assert!(outcome.unreconciled_seqs.is_empty(), "{outcome:?}");

        // stored again after the five originals, and applied from there
        assert!(stream.info().await.unwrap().state.last_sequence > 5);
        let applied: String =
            sqlx::query_scalar("select outcome from progress_ledger where command_id = $1")
                .bind(lost.command_id)
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(applied, "applied");

        let progress = get_user_progress(&pool, user, track.id)
            .await
            .unwrap()
            .expect("the projection exists");
        assert_eq!(progress.status, Status::Completed);
        let mut completed = units.clone();
        completed.sort();
        assert_eq!(progress.completed_unit_ids, completed);
        assert_eq!(progress.last_seq, 5);

        applier_shutdown.cancel();
        applier.await.unwrap().unwrap();
    })
    .await;
}

/// The whole write path under a small simulation: every learner's row and ledger match the
/// model of the signals they sent, duplicates included.
#[sqlx::test]
async fn a_small_simulation_ends_with_zero_mismatches(pool: PgPool) {
    use learning_progress::simulate::{self, SimulateConfig};
    with_worker(pool.clone(), |client, temporal, nats, js| async move {
        let (stop, applier) = spawn_applier(&js, &pool, &nats);
        let config = SimulateConfig {
            learners: 6,
            units: 4,
            concurrency: 6,
            seed: 7,
            timeout_secs: 120,
        };
        let report = simulate::run(&client, &temporal, &pool, &config)
            .await
            .unwrap();
        stop.cancel();
        applier.await.unwrap().unwrap();
        assert_eq!(report.learners, 6);
        assert!(report.commands >= 6 * 6, "{report}");
        assert!(report.mismatches.is_empty(), "{report}");
    })
    .await;
}

/// Signals in, rows and events out: the row in PostgreSQL and the events on the events
/// stream are exactly those of the commands the workflow published.
#[sqlx::test]
async fn signals_end_as_the_exact_row_and_events(pool: PgPool) {
    use learning_progress::model::ProgressEvent;
    let track = create_track(&pool, "End to end", 3).await.unwrap();
    let units: Vec<Uuid> = track.units.iter().map(|u| u.id).collect();
    let user = Uuid::new_v4();
    with_worker(pool.clone(), |client, temporal, nats, js| async move {
        let (stop, applier) = spawn_applier(&js, &pool, &nats);
        let input = LearningPathInput::new(user, track.id, units.clone());
        client::start(&client, &temporal, input).await.unwrap();
        let attempt = |id: u128, score: f64| AssessmentRecorded {
            unit_id: units[2],
            attempt_id: Uuid::from_u128(id),
            score,
            max_score: 10.0,
            passed: score >= 7.0,
        };
        client::signal_unit_completed(&client, user, track.id, units[0])
            .await
            .unwrap();
        client::signal_assessment_recorded(&client, user, track.id, attempt(1, 4.0))
            .await
            .unwrap();
        client::signal_assessment_recorded(&client, user, track.id, attempt(2, 9.0))
            .await
            .unwrap();
        client::signal_unit_completed(&client, user, track.id, units[1])
            .await
            .unwrap();
        client::signal_unit_completed(&client, user, track.id, units[2])
            .await
            .unwrap();
        let outcome = client::result(&client, user, track.id).await.unwrap();
        assert!(outcome.unreconciled_seqs.is_empty(), "{outcome:?}");

        let kinds = [
            "track_started",
            "unit_completed",
            "assessment_recorded",
            "assessment_recorded",
            "unit_completed",
            "unit_completed",
            "track_completed",
        ];
        let events: Vec<ProgressEvent> = read_stream(&js, &nats.events_stream, kinds.len(), WAIT)
            .await
            .iter()
            .map(|m| serde_json::from_slice(&m.payload).unwrap())
            .collect();
        let id = workflow_id(user, track.id);
        for (i, event) in events.iter().enumerate() {
            let seq = i as i64 + 1;
            assert_eq!(event.event_id, command_id(&id, seq));
            assert_eq!(event.kind, kinds[i]);
            assert_eq!(event.version, seq, "every command changed the row once");
        }
        assert_eq!(
            stream_len(&js, &nats.events_stream).await,
            kinds.len() as u64
        );

        let row = get_user_progress(&pool, user, track.id)
            .await
            .unwrap()
            .unwrap();
        let last = &events.last().unwrap().progress;
        assert_eq!(last.progress, row);
        assert_eq!(row.status, Status::Completed);
        assert_eq!(row.current_unit_id, None);
        let mut completed = units.clone();
        completed.sort();
        assert_eq!(row.completed_unit_ids, completed);
        assert_eq!(last.percent_complete, 100.0);
        let summary = &last.assessments[&units[2]];
        assert_eq!(summary.attempts, 2);
        assert_eq!(summary.best.attempt_id, Uuid::from_u128(2));
        stop.cancel();
        applier.await.unwrap().unwrap();
    })
    .await;
}

/// The event types of a workflow's history so far; `None` while it cannot be read.
async fn history(
    handle: &temporalio_client::WorkflowHandle<temporalio_client::Client, LearningPathWorkflow>,
) -> Option<Vec<temporalio_common::protos::temporal::api::history::v1::HistoryEvent>> {
    handle
        .fetch_history(temporalio_client::WorkflowFetchHistoryOptions::default())
        .into_events()
        .await
        .ok()
}

/// Runs an applier on the test's streams until the returned token is cancelled.
fn spawn_applier(
    js: &jetstream::Context,
    pool: &PgPool,
    nats: &NatsConfig,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<Result<(), applier::ApplierError>>,
) {
    let stop = CancellationToken::new();
    let applier = tokio::spawn(applier::run(
        js.clone(),
        pool.clone(),
        nats.clone(),
        ApplierConfig::default(),
        Seams::default(),
        stop.clone(),
    ));
    (stop, applier)
}

/// The ledger's (seq, command id) of one learner, in seq order.
async fn ledger_seqs(pool: &PgPool, user: Uuid, track: Uuid) -> Vec<(i64, Uuid)> {
    sqlx::query_as(
        "select seq, command_id from progress_ledger
         where user_id = $1 and track_id = $2 order by seq, command_id",
    )
    .bind(user)
    .bind(track)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// A path longer than one run crosses continue-as-new boundaries: the state carries over,
/// the seq stays gapless and nothing is published twice.
#[sqlx::test]
async fn a_path_across_continue_as_new_keeps_one_gapless_seq(pool: PgPool) {
    let track = create_track(&pool, "Long path", 5).await.unwrap();
    let units: Vec<Uuid> = track.units.iter().map(|u| u.id).collect();
    let user = Uuid::new_v4();
    with_worker(pool.clone(), |client, temporal, nats, js| async move {
        let (stop, applier) = spawn_applier(&js, &pool, &nats);
        let input = LearningPathInput {
            commands_per_run: 2,
            ..LearningPathInput::new(user, track.id, units.clone())
        };
        client::start(&client, &temporal, input).await.unwrap();
        for (i, unit) in units.iter().enumerate() {
            client::signal_unit_completed(&client, user, track.id, *unit)
                .await
                .unwrap();
            // one signal at a time, so each run publishes exactly its two commands
            let published = i as u64 + 2;
            eventually(WAIT, "the unit's command on the stream", || async {
                (common::ever_stored(&js, &nats.commands_stream).await >= published).then_some(())
            })
            .await;
        }
        let outcome = tokio::time::timeout(WAIT, client::result(&client, user, track.id))
            .await
            .expect("the last run ends the workflow")
            .unwrap();
        // start + u1 | u2 + u3 | u4 + u5 + completed
        assert_eq!(outcome.runs, 3, "{outcome:?}");
        assert_eq!(outcome.seq, 7);
        assert_eq!(outcome.completed_unit_ids, units);
        assert!(outcome.unreconciled_seqs.is_empty(), "{outcome:?}");

        // the applier takes commands off the stream: the ledger shows what was published
        assert_eq!(common::ever_stored(&js, &nats.commands_stream).await, 7);
        let id = workflow_id(user, track.id);
        let expected: Vec<(i64, Uuid)> = (1..=7).map(|seq| (seq, command_id(&id, seq))).collect();
        let seqs = eventually(WAIT, "all seven commands in the ledger", || async {
            let seqs = ledger_seqs(&pool, user, track.id).await;
            (seqs.len() >= 7).then_some(seqs)
        })
        .await;
        assert_eq!(seqs, expected);
        let row = eventually(WAIT, "the projection at version 7", || async {
            get_user_progress(&pool, user, track.id)
                .await
                .unwrap()
                .filter(|row| row.version == 7)
        })
        .await;
        assert_eq!(row.status, Status::Completed);
        assert_eq!(row.completed_unit_ids.len(), units.len());
        stop.cancel();
        applier.await.unwrap().unwrap();
    })
    .await;
}

/// A learner whose workflow died mid-path starts again under the same id: the new run
/// resumes the seq and the completed units from the projection instead of starting over.
#[sqlx::test]
async fn a_new_run_of_the_same_id_resumes_from_the_projection(pool: PgPool) {
    use temporalio_client::WorkflowTerminateOptions;
    let track = create_track(&pool, "Resumed path", 4).await.unwrap();
    let units: Vec<Uuid> = track.units.iter().map(|u| u.id).collect();
    let user = Uuid::new_v4();
    with_worker(pool.clone(), |client, temporal, nats, js| async move {
        let (stop, applier) = spawn_applier(&js, &pool, &nats);
        let input = LearningPathInput::new(user, track.id, units.clone());
        let id = client::start(&client, &temporal, input.clone())
            .await
            .unwrap();
        for unit in &units[..2] {
            client::complete_unit(&client, user, track.id, *unit)
                .await
                .unwrap();
        }
        eventually(WAIT, "the first run's three commands applied", || async {
            let seqs = ledger_seqs(&pool, user, track.id).await;
            (seqs.len() == 3).then_some(())
        })
        .await;
        client
            .get_workflow_handle::<LearningPathWorkflow>(id.clone())
            .terminate(WorkflowTerminateOptions::builder().reason("test").build())
            .await
            .unwrap();

        client::start(&client, &temporal, input).await.unwrap();
        let again = client::complete_unit(&client, user, track.id, units[1]).await;
        assert!(
            matches!(again, Err(ClientError::Rejected { .. })),
            "a unit the projection has is already completed: {again:?}"
        );
        for unit in &units[2..] {
            client::complete_unit(&client, user, track.id, *unit)
                .await
                .unwrap();
        }
        let outcome = tokio::time::timeout(WAIT, client::result(&client, user, track.id))
            .await
            .expect("the second run ends the workflow")
            .unwrap();
        // seq 1–3 from the first run; track_started, two units and completion from the second
        assert_eq!(outcome.seq, 7, "{outcome:?}");
        assert!(outcome.unreconciled_seqs.is_empty(), "{outcome:?}");

        let expected: Vec<(i64, Uuid)> = (1..=7).map(|seq| (seq, command_id(&id, seq))).collect();
        let seqs = eventually(WAIT, "all seven commands in the ledger", || async {
            let seqs = ledger_seqs(&pool, user, track.id).await;
            (seqs.len() >= 7).then_some(seqs)
        })
        .await;
        assert_eq!(seqs, expected, "one gapless seq across both runs");
        let row = get_user_progress(&pool, user, track.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.status, Status::Completed);
        let mut completed = units.clone();
        completed.sort();
        assert_eq!(row.completed_unit_ids, completed);
        stop.cancel();
        applier.await.unwrap().unwrap();
    })
    .await;
}

/// A run started while the previous run's commands are still unapplied continues after them:
/// it must not allocate their seqs again, whose ids JetStream and the ledger would take for
/// duplicates of the old commands.
#[sqlx::test]
async fn a_new_run_never_reuses_the_seqs_of_unapplied_commands(pool: PgPool) {
    use temporalio_client::WorkflowTerminateOptions;
    let track = create_track(&pool, "Unapplied path", 3).await.unwrap();
    let units: Vec<Uuid> = track.units.iter().map(|u| u.id).collect();
    let user = Uuid::new_v4();
    with_worker(pool.clone(), |client, temporal, nats, js| async move {
        // no applier yet: the first run's commands wait on the stream
        let input = LearningPathInput::new(user, track.id, units.clone());
        let id = client::start(&client, &temporal, input.clone())
            .await
            .unwrap();
        client::complete_unit(&client, user, track.id, units[0])
            .await
            .unwrap();
        eventually(WAIT, "the first run's two commands stored", || async {
            (stream_len(&js, &nats.commands_stream).await >= 2).then_some(())
        })
        .await;
        client
            .get_workflow_handle::<LearningPathWorkflow>(id.clone())
            .terminate(WorkflowTerminateOptions::builder().reason("test").build())
            .await
            .unwrap();

        client::start(&client, &temporal, input).await.unwrap();
        client::complete_unit(&client, user, track.id, units[1])
            .await
            .unwrap();
        eventually(WAIT, "the second run's two commands stored too", || async {
            (stream_len(&js, &nats.commands_stream).await >= 4).then_some(())
        })
        .await;

        let (stop, applier) = spawn_applier(&js, &pool, &nats);
        let row = eventually(WAIT, "both runs' units in the projection", || async {
            get_user_progress(&pool, user, track.id)
                .await
                .unwrap()
                .filter(|row| row.completed_unit_ids.len() == 2)
        })
        .await;
        let mut both = vec![units[0], units[1]];
        both.sort();
        assert_eq!(row.completed_unit_ids, both);
        let expected: Vec<(i64, Uuid)> = (1..=4).map(|seq| (seq, command_id(&id, seq))).collect();
        assert_eq!(ledger_seqs(&pool, user, track.id).await, expected);
        assert_eq!(stream_len(&js, &nats.dlq_stream).await, 0);
        stop.cancel();
        applier.await.unwrap().unwrap();
    })
    .await;
}

/// Should an id ever be reused for another command, JetStream's duplicate answer must not
/// pass for success: the publish fails with the reason.
#[tokio::test]
async fn an_id_reused_for_another_command_is_an_error_not_a_duplicate() {
    let (nats, js) = isolated_nats().await;
    let first = ProgressCommand {
        command_id: Uuid::new_v4(),
        user_id: Uuid::new_v4(),
        track_id: Uuid::new_v4(),
        seq: 1,
        occurred_at: chrono::Utc::now(),
        action: Action::TrackStarted {
            current_unit_id: None,
        },
    };
    let other = ProgressCommand {
        action: Action::TrackCompleted {},
        ..first.clone()
    };
    workflow::publish(&js, &nats, &first).await.unwrap();
    let failure = workflow::publish(&js, &nats, &other).await.unwrap_err();
    assert!(
        matches!(failure, PublishFailure::Collision { .. }),
        "{failure:?}"
    );
    assert!(
        format!("{failure:#}").contains("another command"),
        "{failure}"
    );
    delete_streams(&js, &nats).await;
}

/// During a leader election or a rolling restart no stream answers for a while: the publish
/// is retried, and the path goes on once the stream is back.
#[sqlx::test]
async fn a_publish_while_no_stream_answers_is_retried_until_it_does(pool: PgPool) {
    use temporalio_client::WorkflowDescribeOptions;
    use temporalio_common::protos::temporal::api::enums::v1::EventType;
    let track = create_track(&pool, "No responders", 1).await.unwrap();
    let units: Vec<Uuid> = track.units.iter().map(|u| u.id).collect();
    let (warm, user) = (Uuid::new_v4(), Uuid::new_v4());
    with_worker(pool.clone(), |client, temporal, nats, js| async move {
        // a first path proves the worker (and its stream set-up) is running
        client::start(
            &client,
            &temporal,
            LearningPathInput::new(warm, track.id, units.clone()),
        )
        .await
        .unwrap();
        eventually(WAIT, "the first path's start stored", || async {
            (stream_len(&js, &nats.commands_stream).await >= 1).then_some(())
        })
        .await;
        js.delete_stream(&nats.commands_stream).await.unwrap();

        client::start(
            &client,
            &temporal,
            LearningPathInput::new(user, track.id, units.clone()),
        )
        .await
        .unwrap();
        // reading or publishing fails while no stream takes the subject, and the run keeps
        // trying: a retried activity, or a local activity's backoff timer, shows it
        let handle =
            client.get_workflow_handle::<LearningPathWorkflow>(workflow_id(user, track.id));
        let retrying = eventually(WAIT, "a retry, or the run's end", || async {
            let described = handle
                .describe(WorkflowDescribeOptions::default())
                .await
                .ok()?;
            if described
                .raw_description
                .pending_activities
                .iter()
                .any(|a| a.attempt >= 2)
            {
                return Some(true);
            }
            let events = history(&handle).await?;
            events
                .iter()
                .find_map(|e| match EventType::try_from(e.event_type) {
                    Ok(EventType::TimerStarted) => Some(true),
                    Ok(EventType::WorkflowExecutionFailed) => Some(false),
                    _ => None,
                })
        })
        .await;
        assert!(retrying, "the run failed instead of retrying the publish");
        messaging::ensure_streams(&js, &nats).await.unwrap();
        let commands = eventually(
            WAIT,
            "the start published once the stream is back",
            || async {
                let stream = js.get_stream(&nats.commands_stream).await.ok()?;
                let last = stream
                    .get_last_raw_message_by_subject(&nats.command_subject(user, track.id))
                    .await
                    .ok()?;
                decode_command(&last.payload).ok()
            },
        )
        .await;
        assert_eq!(commands.seq, 1);
        assert_eq!(commands.kind(), "track_started");
    })
    .await;
}

/// No responders (async-nats' `StreamNotFound`) is how a stream looks while it elects a
/// leader: a publish that meets it is retried, not failed for good.
#[tokio::test]
async fn a_command_no_stream_takes_is_a_transient_failure() {
    let (nats, js) = isolated_nats().await;
    let nowhere = NatsConfig {
        subject_prefix: format!("nowhere{}", Uuid::new_v4().simple()),
        ..nats.clone()
    };
    let command = ProgressCommand {
        command_id: Uuid::new_v4(),
        user_id: Uuid::new_v4(),
        track_id: Uuid::new_v4(),
        seq: 1,
        occurred_at: chrono::Utc::now(),
        action: Action::TrackCompleted {},
    };
    let failure = workflow::publish(&js, &nowhere, &command)
        .await
        .unwrap_err();
    assert!(
        matches!(failure, PublishFailure::Transient { .. }),
        "{failure:?}"
    );
    delete_streams(&js, &nats).await;
}

/// Other SDKs' JSON converters may write `NaN`, `null` or a string where a number belongs:
/// such a signal is ignored with its reason, never wedging the run, and an unknown field is
/// no reason to refuse one.
#[sqlx::test]
async fn malformed_signal_payloads_are_ignored_and_the_path_goes_on(pool: PgPool) {
    use temporalio_client::{UntypedSignal, UntypedWorkflow, WorkflowSignalOptions};
    use temporalio_common::data_converters::RawValue;
    let track = create_track(&pool, "Malformed signals", 2).await.unwrap();
    let units: Vec<Uuid> = track.units.iter().map(|u| u.id).collect();
    let user = Uuid::new_v4();
    with_worker(pool.clone(), |client, temporal, nats, js| async move {
        let (stop, applier) = spawn_applier(&js, &pool, &nats);
        let id = client::start(&client, &temporal, LearningPathInput::new(user, track.id, units.clone()))
            .await
            .unwrap();
        let (u0, attempt) = (units[0], Uuid::new_v4());
        let bodies = [
            ("assessment_recorded", format!(r#"{{"unit_id":"{u0}","attempt_id":"{attempt}","score":NaN,"max_score":10,"passed":true}}"#)),
            ("assessment_recorded", format!(r#"{{"unit_id":"{u0}","attempt_id":"{attempt}","score":"8","max_score":10,"passed":true}}"#)),
            ("unit_completed", r#"{"unit_id":null}"#.to_owned()),
            ("unit_completed", "{}".to_owned()),
            ("unit_completed", format!(r#"{{"unit_id":"{u0}","completed_by":"another sdk"}}"#)),
        ];
        for (signal, body) in bodies {
            client
                .get_workflow_handle::<UntypedWorkflow>(id.clone())
                .signal(
                    UntypedSignal::new(signal),
                    RawValue::new(vec![workflow::json_payload(body.into_bytes())]),
                    WorkflowSignalOptions::default(),
                )
                .await
                .unwrap();
        }
        client::signal_unit_completed(&client, user, track.id, units[1])
            .await
            .unwrap();
        let outcome = tokio::time::timeout(WAIT, client::result(&client, user, track.id))
            .await
            .expect("the run finishes despite the malformed signals")
            .unwrap();
        assert_eq!(outcome.completed_unit_ids, units);
        let view = client::progress(&client, user, track.id).await.unwrap();
        assert_eq!(view.ignored_signals, 4, "{view:?}");
        stop.cancel();
        applier.await.unwrap().unwrap();
    })
    .await;
}

/// A command the broker loses after acknowledging it is restored within seconds: reconcile
/// publishes it again as a new copy, which JetStream stores although the original's id is
/// still in the duplicate window (`make chaos`, broker-loss, found the repair waiting out the
/// whole two-minute window).
#[sqlx::test]
async fn a_lost_command_is_restored_without_waiting_out_the_duplicate_window(pool: PgPool) {
    let track = create_track(&pool, "Lost, soon found", 2).await.unwrap();
    let units: Vec<Uuid> = track.units.iter().map(|u| u.id).collect();
    let user = Uuid::new_v4();
    with_worker(pool.clone(), |client, temporal, nats, js| async move {
        assert!(
            Duration::from_secs(nats.duplicate_window_secs) > 2 * WAIT,
            "the window outlasts the wait below"
        );
        let input = LearningPathInput {
            quiet_period_ms: 300,
            reconcile_interval_ms: 100,
            ..LearningPathInput::new(user, track.id, units.clone())
        };
        client::start(&client, &temporal, input).await.unwrap();
        client::signal_unit_completed(&client, user, track.id, units[0])
            .await
            .unwrap();
        eventually(WAIT, "both commands stored", || async {
            (stream_len(&js, &nats.commands_stream).await >= 2).then_some(())
        })
        .await;
        let stream = js.get_stream(&nats.commands_stream).await.unwrap();
        assert!(
            stream.delete_message(2).await.unwrap(),
            "the broker loses seq 2"
        );
        let (stop, applier) = spawn_applier(&js, &pool, &nats);
        let row = eventually(WAIT, "the lost unit in the projection", || async {
            get_user_progress(&pool, user, track.id)
                .await
                .unwrap()
                .filter(|row| row.completed_unit_ids == vec![units[0]])
        })
        .await;
        assert_eq!(row.version, 2);
        stop.cancel();
        applier.await.unwrap().unwrap();
    })
    .await;
}

/// A command the broker loses while no applier runs outlives the quiet-period reconcile:
/// reconcile keeps going, with a growing wait, until the projection has it — the learner
/// need not come back.
#[sqlx::test]
async fn reconcile_keeps_going_until_the_projection_has_every_command(pool: PgPool) {
    use temporalio_common::protos::temporal::api::enums::v1::EventType;
    let track = create_track(&pool, "Lost and found", 2).await.unwrap();
    let units: Vec<Uuid> = track.units.iter().map(|u| u.id).collect();
    let user = Uuid::new_v4();
    with_worker(pool.clone(), |client, temporal, nats, js| async move {
        // a re-publish within this window is dropped as a duplicate, as after a real loss
        let nats = NatsConfig {
            duplicate_window_secs: 2,
            ..nats
        };
        messaging::ensure_streams(&js, &nats).await.unwrap();
        let input = LearningPathInput {
            quiet_period_ms: 300,
            reconcile_interval_ms: 100,
            ..LearningPathInput::new(user, track.id, units.clone())
        };
        let id = client::start(&client, &temporal, input).await.unwrap();
        client::signal_unit_completed(&client, user, track.id, units[0])
            .await
            .unwrap();
        eventually(WAIT, "both commands stored", || async {
            (stream_len(&js, &nats.commands_stream).await >= 2).then_some(())
        })
        .await;
        let mut stream = js.get_stream(&nats.commands_stream).await.unwrap();
        assert!(
            stream.delete_message(2).await.unwrap(),
            "the broker loses seq 2"
        );

        // the first quiet-period pass (resume, then three looks) re-publishes seq 2 and ends
        let handle = client.get_workflow_handle::<LearningPathWorkflow>(id.clone());
        eventually(WAIT, "the first reconcile pass over", || async {
            let events = history(&handle).await?;
            let done = events
                .iter()
                .filter(|e| e.event_type == EventType::ActivityTaskCompleted as i32)
                .count();
            (done >= 4).then_some(())
        })
        .await;
        // and the broker loses it again, after that pass: only a later pass can repair it
        let last = stream.info().await.unwrap().state.last_sequence;
        for sequence in 3..=last {
            if let Ok(message) = stream.get_raw_message(sequence).await
                && decode_command(&message.payload).unwrap().seq == 2
            {
                stream.delete_message(sequence).await.unwrap();
            }
        }
        let (stop, applier) = spawn_applier(&js, &pool, &nats);
        let row = eventually(WAIT, "the lost unit in the projection", || async {
            get_user_progress(&pool, user, track.id)
                .await
                .unwrap()
                .filter(|row| row.completed_unit_ids == vec![units[0]])
        })
        .await;
        assert_eq!(row.version, 2);
        let view = eventually(WAIT, "nothing left unconfirmed", || async {
            let view = client::progress(&client, user, track.id).await.ok()?;
            view.unconfirmed_seqs.is_empty().then_some(view)
        })
        .await;
        assert_eq!(view.seq, 2);
        stop.cancel();
        applier.await.unwrap().unwrap();
    })
    .await;
}
