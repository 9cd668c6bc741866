//! `learning-progress erase` on the real stack: a learner driven through real workflows on two
//! tracks, next to another learner, is erased — workflows, rows, ledger, messages and dead
//! letters — while an API replica that had them cached stops serving them; their later
//! commands are refused, unless they start a track again.

mod common;

use std::time::Duration;

use async_nats::jetstream;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::{FutureExt as _, StreamExt as _};
use learning_progress::api::{CacheConfig, Metrics, ProgressCache, SnapshotSource};
use learning_progress::applier::{self, ApplierConfig, Seams};
use learning_progress::db::progress::ProgressError;
use learning_progress::db::tracks::{Track, create_track};
use learning_progress::messaging::{NatsConfig, header_str};
use learning_progress::model::{Action, ErasedEvent, ProgressCommand, ProgressView, UserProgress};
use learning_progress::ops::dlq::{self, Filter};
use learning_progress::ops::erase::{self, Stores};
use learning_progress::workflow::{self, LearningPathInput, TemporalConfig, WorkerDeps, client};
use reqwest::StatusCode;
use serde_json::json;
use sqlx::PgPool;
use temporalio_client::WorkflowListOptions;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use common::api::TestApi;
use common::binary::{binary, database_url};
use common::commands::publish;
use common::temporal::temporal_config;
use common::{delete_streams, eventually, isolated_nats};

const WAIT: Duration = Duration::from_secs(30);

/// The service's binary, `erase` with `args`, against the test's database, streams and
/// Temporal; no terminal, so it never asks.
fn erase(url: &str, nats: &NatsConfig, temporal: &TemporalConfig, args: &[&str]) -> Output {
    let output = binary(nats)
        .arg("erase")
        .args(args)
        .env("DATABASE_URL", url)
        .env("TEMPORAL_ADDRESS", temporal.address_or_default())
        .env("TEMPORAL_TASK_QUEUE", &temporal.task_queue)
        .output()
        .unwrap();
    Output {
        success: output.status.success(),
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[derive(Debug)]
struct Output {
    success: bool,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

async fn rows_of(pool: &PgPool, user: Uuid) -> Vec<(Uuid, i64)> {
    sqlx::query_as(
        "select track_id, version from user_progress where user_id = $1 order by track_id",
    )
    .bind(user)
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn ledger_of(pool: &PgPool, user: Uuid) -> i64 {
    sqlx::query_scalar("select count(*) from progress_ledger where user_id = $1")
        .bind(user)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// The messages `stream` holds now on subjects of `user`, with their `ce-type`.
async fn messages_of(
    js: &jetstream::Context,
    stream: &str,
    user: Uuid,
) -> Vec<(String, String, bytes::Bytes)> {
    common::stored(js, stream)
        .await
        .into_iter()
        .filter(|m| m.subject.contains(&user.to_string()))
        .map(|m| {
            let kind = header_str(Some(&m.headers), "ce-type")
                .unwrap_or_default()
                .to_owned();
            (m.subject.to_string(), kind, m.payload)
        })
        .collect()
}

async fn dead_letters_of(
    js: &jetstream::Context,
    nats: &NatsConfig,
    user: Uuid,
) -> Vec<dlq::DeadLetter> {
    let mut stream = dlq::stream(js, nats).await.unwrap();
    let filter = Filter {
        user: Some(user),
        ..Filter::default()
    };
    dlq::list(&mut stream, &filter).await.unwrap()
}

async fn running_workflows(client: &temporalio_client::Client, user: Uuid) -> usize {
    let query = format!(
        "WorkflowType = 'LearningPathWorkflow' AND ExecutionStatus = 'Running' \
         AND WorkflowId STARTS_WITH 'learning-path/{user}/'"
    );
    client
        .list_workflows(query, WorkflowListOptions::default())
        .filter_map(|e| async move { e.ok() })
        .count()
        .await
}

fn command(
    user: Uuid,
    track: Uuid,
    seq: i64,
    at: DateTime<Utc>,
    action: Action,
) -> ProgressCommand {
    ProgressCommand {
        command_id: Uuid::new_v4(),
        user_id: user,
        track_id: track,
        seq,
        occurred_at: at,
        action,
    }
}

/// Starts the learner's workflow on the track and completes its first unit; waits until the
/// applier has both.
async fn drive(
    temporal_client: &temporalio_client::Client,
    temporal: &TemporalConfig,
    pool: &PgPool,
    user: Uuid,
    track: &Track,
) {
    client::start_track(temporal_client, temporal, pool, user, track.id)
        .await
        .unwrap();
    client::complete_unit(temporal_client, user, track.id, track.units[0].id)
        .await
        .unwrap();
    eventually(WAIT, "the learner's first unit applied", || async {
        rows_of(pool, user)
            .await
            .iter()
            .any(|(t, version)| *t == track.id && *version >= 2)
            .then_some(())
    })
    .await;
}

#[sqlx::test]
async fn an_erased_learner_is_gone_everywhere_and_only_a_new_start_brings_them_back(pool: PgPool) {
    let temporal = temporal_config();
    let (nats, js) = isolated_nats().await;
    let temporal_client = workflow::connect(&temporal, "test").await.unwrap();
    let stop = CancellationToken::new();
    let worker = workflow::run(
        &temporal,
        WorkerDeps {
            client: temporal_client.clone(),
            jetstream: js.clone(),
            nats: nats.clone(),
            pool: pool.clone(),
        },
        stop.clone(),
    );
    tokio::spawn(applier::run(
        js.clone(),
        pool.clone(),
        nats.clone(),
        ApplierConfig::default(),
        Seams::default(),
        stop.clone(),
    ));
    let api = TestApi::start(&pool, &nats).await;
    let url = database_url(&pool).await;

    let test = async {
        let first = create_track(&pool, "Erasure one", 3).await.unwrap();
        let second = create_track(&pool, "Erasure two", 3).await.unwrap();
        let (erased, other) = (Uuid::new_v4(), Uuid::new_v4());
        drive(&temporal_client, &temporal, &pool, erased, &first).await;
        drive(&temporal_client, &temporal, &pool, erased, &second).await;
        drive(&temporal_client, &temporal, &pool, other, &first).await;
        // a dead letter each, and a command of the learner's left waiting (seq far ahead)
        for user in [erased, other] {
            let subject = nats.command_subject(user, first.id);
            js.publish(subject, "not json".into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
        let ahead = command(erased, second.id, 40, Utc::now(), Action::TrackCompleted {});
        publish(&js, &nats, &ahead).await;
        for user in [erased, other] {
            eventually(WAIT, "the dead letters", || async {
                (!dead_letters_of(&js, &nats, user).await.is_empty()).then_some(())
            })
            .await;
        }
        // both cached by the API
        assert_eq!(
            api.status_and_version(erased, first.id).await,
            (StatusCode::OK, 2)
        );
        assert_eq!(
            api.status_and_version(other, first.id).await,
            (StatusCode::OK, 2)
        );
        let other_events = messages_of(&js, &nats.events_stream, other).await;
        let other_ledger = ledger_of(&pool, other).await;

        // what the dry run counts of workflows is what Temporal's visibility lists, a moment
        // behind their starts
        eventually(
            WAIT,
            "visibility to list the learner's workflows",
            || async { (running_workflows(&temporal_client, erased).await == 2).then_some(()) },
        )
        .await;
        // a dry run counts and changes nothing
        let dry = erase(
            &url,
            &nats,
            &temporal,
            &["--user", &erased.to_string(), "--dry-run", "--json"],
        );
        assert!(dry.success, "{dry:?}");
        let found: serde_json::Value = serde_json::from_str(&dry.stdout).unwrap();
        assert_eq!(found["tracks"].as_array().unwrap().len(), 2, "{found}");
        assert_eq!(
            [
                &found["rows"],
                &found["ledger_entries"],
                &found["commands"],
                &found["events"]
            ],
            [&json!(2), &json!(4), &json!(1), &json!(4)],
            "{found}"
        );
        assert!(
            dry.stderr.contains(&format!(
                "would erase learner {erased}: 2 tracks: 2 progress rows, 4 ledger entries, \
                 1 waiting command, 4 events, 1 dead letter, 2 running workflows (dry run)"
            )),
            "{dry:?}"
        );
        assert_eq!(rows_of(&pool, erased).await.len(), 2);
        assert_eq!(ledger_of(&pool, erased).await, 4);
        assert_eq!(messages_of(&js, &nats.events_stream, erased).await.len(), 4);
        assert_eq!(dead_letters_of(&js, &nats, erased).await.len(), 1);
        assert_eq!(
            api.status_and_version(erased, first.id).await,
            (StatusCode::OK, 2)
        );
        // bad input is a clear error, with nothing changed
        let bad = erase(&url, &nats, &temporal, &["--user", "not-a-uuid", "--yes"]);
        assert_eq!(bad.code, Some(2), "{bad:?}");
        assert!(bad.stderr.contains("--user"), "{bad:?}");
        // without a terminal and without --yes it refuses, and changes nothing either
        let unconfirmed = erase(&url, &nats, &temporal, &["--user", &erased.to_string()]);
        assert_eq!(unconfirmed.code, Some(1), "{unconfirmed:?}");
        assert!(unconfirmed.stderr.contains("pass --yes"), "{unconfirmed:?}");
        assert_eq!(rows_of(&pool, erased).await.len(), 2);

        let done = erase(
            &url,
            &nats,
            &temporal,
            &["--user", &erased.to_string(), "--yes"],
        );
        assert!(done.success, "{done:?}");
        assert!(
            done.stderr.contains(&format!(
                "erased learner {erased}: terminated 2 workflows; removed 1 waiting command, \
                 2 progress rows, 4 ledger entries, 4 events, 1 dead letter; published 2 \
                 erased events"
            )),
            "{done:?}"
        );

        // gone: rows, ledger, commands, dead letters, workflows; the events are the tombstones
        assert!(rows_of(&pool, erased).await.is_empty());
        assert_eq!(ledger_of(&pool, erased).await, 0);
        assert!(
            messages_of(&js, &nats.commands_stream, erased)
                .await
                .is_empty()
        );
        let left = dead_letters_of(&js, &nats, erased).await;
        assert!(left.is_empty(), "{left:?}");
        let tombstones = messages_of(&js, &nats.events_stream, erased).await;
        assert_eq!(tombstones.len(), 2, "{tombstones:?}");
        for (subject, kind, payload) in &tombstones {
            assert_eq!(kind, "learning.progress.event.erased.v1");
            let event: ErasedEvent = serde_json::from_slice(payload).unwrap();
            assert_eq!(subject, &nats.event_subject(erased, event.track_id));
            assert_eq!((event.kind.as_str(), event.version), ("erased", 3));
        }
        eventually(WAIT, "the learner's workflows ended", || async {
            (running_workflows(&temporal_client, erased).await == 0).then_some(())
        })
        .await;
        // the other learner keeps everything
        assert_eq!(rows_of(&pool, other).await, vec![(first.id, 2)]);
        assert_eq!(ledger_of(&pool, other).await, other_ledger);
        assert_eq!(
            messages_of(&js, &nats.events_stream, other).await,
            other_events
        );
        assert_eq!(dead_letters_of(&js, &nats, other).await.len(), 1);
        assert_eq!(running_workflows(&temporal_client, other).await, 1);
        // the API forgot the learner it had cached, not the other one
        eventually(
            WAIT,
            "the API to stop serving the erased learner",
            || async {
                (api.status_and_version(erased, first.id).await.0 == StatusCode::NOT_FOUND)
                    .then_some(())
            },
        )
        .await;
        assert_eq!(
            api.status_and_version(erased, second.id).await.0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            api.status_and_version(other, first.id).await,
            (StatusCode::OK, 2)
        );

        // a command of theirs from before (a redelivery), and one that does not start a track,
        // are refused: taken off the stream, and kept nowhere — no row, ledger or dead letter
        let erased_at: DateTime<Utc> =
            sqlx::query_scalar("select erased_at from erased_learners where user_id = $1")
                .bind(erased)
                .fetch_one(&pool)
                .await
                .unwrap();
        let before = command(
            erased,
            first.id,
            1,
            erased_at - chrono::TimeDelta::seconds(1),
            Action::TrackStarted {
                current_unit_id: Some(first.units[0].id),
            },
        );
        let not_a_start = command(
            erased,
            second.id,
            3,
            Utc::now(),
            Action::UnitCompleted {
                unit_id: second.units[1].id,
                next_unit_id: None,
            },
        );
        publish(&js, &nats, &before).await;
        publish(&js, &nats, &not_a_start).await;
        eventually(WAIT, "both taken off the commands stream", || async {
            messages_of(&js, &nats.commands_stream, erased)
                .await
                .is_empty()
                .then_some(())
        })
        .await;
        assert!(rows_of(&pool, erased).await.is_empty());
        assert_eq!(ledger_of(&pool, erased).await, 0);
        let left = dead_letters_of(&js, &nats, erased).await;
        assert!(left.is_empty(), "{left:?}");
        assert_eq!(
            api.status_and_version(erased, first.id).await.0,
            StatusCode::NOT_FOUND
        );

        // a new start after the erasure is accepted, through the workflow as a learner starts:
        // the new run begins at seq 1 again, under the id the first run's seq 1 had; should
        // JetStream still hold that id (its duplicate window), the run's reconcile brings the
        // command in as a copy
        let restart = LearningPathInput {
            quiet_period_ms: 300,
            ..LearningPathInput::new(erased, first.id, first.units.iter().map(|u| u.id).collect())
        };
        client::start(&temporal_client, &temporal, restart)
            .await
            .unwrap();
        eventually(WAIT, "the new start applied", || async {
            (rows_of(&pool, erased).await == vec![(first.id, 1)]).then_some(())
        })
        .await;
        assert_eq!(ledger_of(&pool, erased).await, 1);
        eventually(WAIT, "the API to serve the new start", || async {
            (api.status_and_version(erased, first.id).await == (StatusCode::OK, 1)).then_some(())
        })
        .await;
        stop.cancel();
    };
    let (worker, ()) = tokio::join!(worker, test);
    worker.expect("the worker ran and stopped cleanly");
    delete_streams(&js, &nats).await;
}

/// A batch of the learner's that the applier committed before the erasure, but whose events
/// JetStream had not yet acknowledged when the erasure began: the erasure waits for them, so
/// that none lands after its purge and outlives the learner.
#[sqlx::test]
async fn an_event_still_being_published_when_the_erasure_begins_does_not_outlive_it(pool: PgPool) {
    let temporal = temporal_config();
    let (nats, js) = isolated_nats().await;
    let temporal_client = workflow::connect(&temporal, "test").await.unwrap();
    let seams = Seams::default();
    // the applier commits, but publishes nothing until this guard is dropped
    let gate = seams.publish_gate.clone().write_owned().await;
    let stop = CancellationToken::new();
    tokio::spawn(applier::run(
        js.clone(),
        pool.clone(),
        nats.clone(),
        ApplierConfig::default(),
        seams,
        stop.clone(),
    ));

    let test = async {
        let track = create_track(&pool, "Erased mid-publish", 2).await.unwrap();
        let user = Uuid::new_v4();
        let started = Action::TrackStarted {
            current_unit_id: None,
        };
        publish(&js, &nats, &command(user, track.id, 1, Utc::now(), started)).await;
        eventually(WAIT, "the command committed", || async {
            (ledger_of(&pool, user).await == 1).then_some(())
        })
        .await;

        let stores = Stores {
            pool: pool.clone(),
            js: js.clone(),
            nats: nats.clone(),
            temporal: temporal_client.clone(),
        };
        let survey = erase::survey(&stores, user).await.unwrap();
        let (steps_tx, mut steps) = tokio::sync::mpsc::unbounded_channel::<String>();
        let erasing = tokio::spawn(async move {
            erase::erase(&stores, &survey, WAIT, move |step| {
                let _ = steps_tx.send(step.to_owned());
            })
            .await
        });
        // it waits for the applier's publish, or finishes (closing the channel) without it
        let mut waited = false;
        while let Some(step) = tokio::time::timeout(WAIT, steps.recv())
            .await
            .expect("the erasure to report a step")
        {
            if step.starts_with("waiting") {
                waited = true;
                break;
            }
        }
        drop(gate);
        let erased = erasing.await.unwrap().unwrap();
        if !waited {
            // what the applier owed lands after the purge
            eventually(WAIT, "the applier's late event", || async {
                let messages = messages_of(&js, &nats.events_stream, user).await;
                (messages.len() > erased.tombstones as usize).then_some(())
            })
            .await;
        }

        let left = messages_of(&js, &nats.events_stream, user).await;
        let kinds: Vec<&str> = left.iter().map(|(_, kind, _)| kind.as_str()).collect();
        assert_eq!(kinds, ["learning.progress.event.erased.v1"], "{left:?}");
        assert_eq!((erased.ledger_entries, erased.unannounced), (1, 0));
        assert_eq!(ledger_of(&pool, user).await, 0);
        assert!(rows_of(&pool, user).await.is_empty());
    };
    let finished = tokio::time::timeout(Duration::from_secs(120), test).await;
    stop.cancel();
    delete_streams(&js, &nats).await;
    finished.expect("the test to finish in time");
}

/// The learner's snapshot as the database held it before the erasure, handed out once and held
/// until released; every later load finds nothing, as the database after the erasure.
struct HeldSource {
    before: std::sync::Mutex<Option<ProgressView>>,
    loaded: std::sync::Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    release: std::sync::Arc<tokio::sync::Notify>,
}

impl SnapshotSource for HeldSource {
    fn load(
        &self,
        _key: (Uuid, Uuid),
    ) -> BoxFuture<'static, Result<Option<ProgressView>, ProgressError>> {
        let before = self.before.lock().unwrap().take();
        let loaded = self.loaded.lock().unwrap().take();
        let release = self.release.clone();
        async move {
            if let Some(loaded) = loaded {
                let _ = loaded.send(());
                release.notified().await;
            }
            Ok(before)
        }
        .boxed()
    }
}

#[tokio::test]
async fn a_load_that_read_the_learner_before_the_erasure_does_not_bring_them_back() {
    let (user, track) = (Uuid::new_v4(), Uuid::new_v4());
    let mut progress = UserProgress::empty(user, track, Utc::now());
    let started = command(
        user,
        track,
        1,
        Utc::now(),
        Action::TrackStarted {
            current_unit_id: None,
        },
    );
    assert!(progress.apply(&started, Utc::now()));
    let (loaded_tx, loaded) = tokio::sync::oneshot::channel();
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    let source = HeldSource {
        before: std::sync::Mutex::new(Some(ProgressView::new(progress, 3))),
        loaded: std::sync::Mutex::new(Some(loaded_tx)),
        release: release.clone(),
    };
    let config = CacheConfig {
        capacity: 100,
        ttl: Duration::from_secs(3600),
        miss_ttl: Duration::from_secs(2),
    };
    let cache = ProgressCache::new(&config, std::sync::Arc::new(source), &Metrics::new());
    let key = (user, track);

    let early = tokio::spawn({
        let cache = cache.clone();
        async move { cache.get(key).await.unwrap() }
    });
    loaded.await.unwrap(); // it has read the row the erasure is about to delete
    cache.erase(key).await;
    // a read after the erasure does not wait for that load: it asks again, and finds nothing
    let late = tokio::time::timeout(Duration::from_secs(5), cache.get(key))
        .await
        .expect("a read after the erasure does not join the load before it");
    assert!(late.unwrap().is_none());
    release.notify_one();
    // the read that asked before the erasure gets what it read; the cache keeps none of it
    assert_eq!(early.await.unwrap().map(|s| s.version()), Some(1));
    assert!(cache.peek(key).await.is_none());
    assert!(cache.get(key).await.unwrap().is_none());
}
