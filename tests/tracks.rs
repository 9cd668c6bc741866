//! Changing the units of a track learners are already on (`tracks add-unit`, `remove-unit`,
//! `move-unit`), through the real binary, against real PostgreSQL (a database per test), NATS
//! (streams per test), Temporal (a task queue per test), the applier and the read API.

mod common;

use std::future::Future;
use std::process::{Output, Stdio};
use std::time::Duration;

use async_nats::jetstream;
use chrono::{DateTime, Utc};
use common::{delete_streams, eventually, isolated_nats, read_stream, start_applier, stream_len};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use learning_progress::api::{self, ApiConfig, ApiState};
use learning_progress::applier::{self, ApplierConfig, Seams};
use learning_progress::auth::{AuthConfig, Verifier};
use learning_progress::db::progress::get_user_progress;
use learning_progress::db::tracks::{Track, create_track};
use learning_progress::messaging::{NatsConfig, publish_command};
use learning_progress::model::{Action, ProgressCommand, ProgressEvent, Status, UserProgress};
use learning_progress::track_changes::{self, Change};
use learning_progress::workflow::client::{self, ClientError};
use learning_progress::workflow::{self, TemporalConfig, WorkerDeps};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);
const SECRET: &str = "test-only-hs256-secret-for-track-changes";

fn at(secs: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(1_790_000_000 + secs, 0).unwrap()
}

fn temporal_config() -> TemporalConfig {
    let address = std::env::var("TEMPORAL_ADDRESS").unwrap_or_else(|_| "127.0.0.1:7233".to_owned());
    TemporalConfig::new(address, format!("test-{}", Uuid::new_v4()))
}

/// The service's binary, pointed at this test's database, streams and Temporal.
async fn cli(pool: &PgPool, nats: &NatsConfig, args: &[&str]) -> Output {
    let database: String = sqlx::query_scalar("select current_database()")
        .fetch_one(pool)
        .await
        .unwrap();
    let temporal = temporal_config();
    let (args, nats, url) = (
        args.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        nats.clone(),
        format!("postgres://postgres@127.0.0.1:5432/{database}"),
    );
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_learning-progress"))
            .args(&args)
            .env("DATABASE_URL", url)
            .env("NATS_URL", &nats.url)
            .env("NATS_SUBJECT_PREFIX", &nats.subject_prefix)
            .env("NATS_COMMANDS_STREAM", &nats.commands_stream)
            .env("NATS_EVENTS_STREAM", &nats.events_stream)
            .env("NATS_DLQ_STREAM", &nats.dlq_stream)
            .env("TEMPORAL_ADDRESS", temporal.address_or_default())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs `args`, expects success, returns the `--json` summary.
async fn change(pool: &PgPool, nats: &NatsConfig, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    let output = cli(pool, nats, &args).await;
    assert!(output.status.success(), "{args:?}: {}", stderr(&output));
    serde_json::from_str(&stdout(&output)).unwrap()
}

/// Publishes a learner's commands (seq 1, 2, …) and waits until the applier applied them.
async fn drive(
    pool: &PgPool,
    js: &jetstream::Context,
    nats: &NatsConfig,
    user: Uuid,
    track: &Track,
    actions: Vec<Action>,
) -> UserProgress {
    let count = actions.len() as i64;
    for (i, action) in actions.into_iter().enumerate() {
        let seq = i as i64 + 1;
        let command = ProgressCommand {
            command_id: Uuid::new_v4(),
            user_id: user,
            track_id: track.id,
            seq,
            occurred_at: at(seq),
            action,
        };
        publish_command(js, nats, &command)
            .await
            .unwrap()
            .await
            .unwrap();
    }
    eventually(WAIT, "the learner's commands applied", || async {
        let applied: i64 = sqlx::query_scalar(
            "select count(*) from progress_ledger where user_id = $1 and track_id = $2",
        )
        .bind(user)
        .bind(track.id)
        .fetch_one(pool)
        .await
        .unwrap();
        (applied == count).then_some(())
    })
    .await;
    get_user_progress(pool, user, track.id)
        .await
        .unwrap()
        .unwrap()
}

/// A learner who completed the first `done` units of `track` (and the track, when all).
fn path(track: &Track, done: usize) -> Vec<Action> {
    let units: Vec<Uuid> = track.units.iter().map(|u| u.id).collect();
    let mut actions = vec![Action::TrackStarted {
        current_unit_id: Some(units[0]),
    }];
    for i in 0..done {
        actions.push(Action::UnitCompleted {
            unit_id: units[i],
            next_unit_id: units.get(i + 1).copied(),
        });
    }
    if done == units.len() {
        actions.push(Action::TrackCompleted {});
    }
    actions
}

async fn progress(pool: &PgPool, user: Uuid, track: Uuid) -> UserProgress {
    get_user_progress(pool, user, track).await.unwrap().unwrap()
}

async fn unit_count(pool: &PgPool, track: Uuid) -> i64 {
    sqlx::query_scalar("select count(*) from track_units where track_id = $1")
        .bind(track)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// The events on the stream after the first `skip`, decoded.
async fn events(js: &jetstream::Context, nats: &NatsConfig, count: usize) -> Vec<ProgressEvent> {
    read_stream(js, &nats.events_stream, count, WAIT)
        .await
        .iter()
        .map(|m| serde_json::from_slice(&m.payload).unwrap())
        .collect()
}

struct TestApi {
    base: String,
    http: reqwest::Client,
    _shutdown: tokio_util::sync::DropGuard,
}

impl TestApi {
    async fn start(pool: &PgPool, nats: &NatsConfig) -> TestApi {
        let verifier = Verifier::from_config(&AuthConfig::with_secret(SECRET))
            .await
            .unwrap();
        let config = ApiConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            // only events refresh what is cached
            cache_ttl_secs: 3600,
            rate_limit_per_sec: 0.0,
            ..ApiConfig::default()
        };
        let shutdown = CancellationToken::new();
        let state = ApiState::start(pool.clone(), nats, verifier, config, shutdown.clone())
            .await
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(api::serve(listener, state, shutdown.clone()));
        TestApi {
            base,
            http: reqwest::Client::new(),
            _shutdown: shutdown.drop_guard(),
        }
    }

    /// The learner's progress as the API serves it.
    async fn progress(&self, user: Uuid, track: Uuid) -> Value {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = json!({
            "sub": user.to_string(), "aud": "authenticated", "role": "authenticated",
            "iat": now, "exp": now + 3600,
        });
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        let response = self
            .http
            .get(format!(
                "{}/api/v1/users/{user}/tracks/{track}/progress",
                self.base
            ))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }
}

#[sqlx::test]
async fn adding_then_removing_units_rewrites_every_learner_and_announces_each(pool: PgPool) {
    let (nats, js) = isolated_nats().await;
    let track = create_track(&pool, "Changing", 3).await.unwrap();
    let other = create_track(&pool, "Untouched", 3).await.unwrap();
    let units: Vec<Uuid> = track.units.iter().map(|u| u.id).collect();
    let _applier = start_applier(&js, &pool, &nats, ApplierConfig::default());
    let (none, some, all) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let before_none = drive(&pool, &js, &nats, none, &track, path(&track, 0)).await;
    let before_some = drive(&pool, &js, &nats, some, &track, path(&track, 2)).await;
    let before_all = drive(&pool, &js, &nats, all, &track, path(&track, 3)).await;
    let elsewhere = drive(&pool, &js, &nats, all, &other, path(&other, 1)).await;
    assert_eq!(before_all.status, Status::Completed);
    let applied_events =
        before_none.version + before_some.version + before_all.version + elsewhere.version;
    eventually(WAIT, "the applier's events", || async {
        (stream_len(&js, &nats.events_stream).await == applied_events as u64).then_some(())
    })
    .await;

    let api = TestApi::start(&pool, &nats).await;
    // cached before the change: only the change's events can refresh them
    assert_eq!(api.progress(all, track.id).await["percent_complete"], 100.0);
    assert_eq!(api.progress(some, track.id).await["total_units"], 3);

    let track_id = track.id.to_string();
    let added = change(
        &pool,
        &nats,
        &[
            "tracks",
            "add-unit",
            "--track",
            &track_id,
            "--title",
            "Bonus",
            "--position",
            "1",
        ],
    )
    .await;
    assert_eq!(added["learners"], 3, "{added}");
    assert_eq!(added["events_published"], 3);
    assert_eq!(added["units_version"], 1);
    assert_eq!(added["reopened"], 0);
    let bonus: Uuid = serde_json::from_value(added["unit_id"].clone()).unwrap();
    assert_eq!(
        serde_json::from_value::<Vec<Uuid>>(added["unit_ids"].clone()).unwrap(),
        [units[0], bonus, units[1], units[2]]
    );

    let (after_none, after_some, after_all) = (
        progress(&pool, none, track.id).await,
        progress(&pool, some, track.id).await,
        progress(&pool, all, track.id).await,
    );
    assert_eq!(after_none.version, before_none.version + 1);
    assert_eq!(after_some.version, before_some.version + 1);
    assert_eq!(after_all.version, before_all.version + 1);
    // a completed track stays completed, at the same time; nothing else of it changes
    assert_eq!(after_all.status, Status::Completed);
    assert_eq!(after_all.completed_at, before_all.completed_at);
    assert_eq!(after_all.completed_unit_ids, before_all.completed_unit_ids);
    assert_eq!(after_some.current_unit_id, before_some.current_unit_id);
    assert_eq!(progress(&pool, all, other.id).await, elsewhere);

    let announced = events(&js, &nats, applied_events as usize + 3).await;
    let changed: Vec<&ProgressEvent> = announced
        .iter()
        .filter(|e| e.kind == "track_changed")
        .collect();
    assert_eq!(changed.len(), 3);
    for (user, version, percent) in [
        (none, after_none.version, 0.0),
        (some, after_some.version, 50.0),
        (all, after_all.version, 75.0),
    ] {
        let event = changed
            .iter()
            .find(|e| e.progress.progress.user_id == user)
            .expect("an event per learner");
        assert_eq!(event.event_id, track_changes::event_id(track.id, 1, user));
        assert_eq!(event.version, version);
        assert_eq!(event.progress.total_units, 4);
        assert_eq!(event.progress.percent_complete, percent);
    }
    // the API follows the events, also for learners it had cached
    eventually(WAIT, "the API serving the new views", || async {
        let all_view = api.progress(all, track.id).await;
        let some_view = api.progress(some, track.id).await;
        (all_view["percent_complete"] == 75.0
            && all_view["status"] == "completed"
            && some_view["percent_complete"] == 50.0
            && some_view["version"] == after_some.version)
            .then_some(())
    })
    .await;

    // removing a completed unit: looked at first, then done
    let removed_unit = units[0].to_string();
    let remove = [
        "tracks",
        "remove-unit",
        "--track",
        &track_id,
        "--unit",
        &removed_unit,
    ];
    let events_before = stream_len(&js, &nats.events_stream).await;
    let dry = cli(&pool, &nats, &[&remove[..], &["--dry-run"]].concat()).await;
    assert!(dry.status.success(), "{}", stderr(&dry));
    assert!(
        stdout(&dry).contains("dry run, nothing changed")
            && stdout(&dry).contains(
                "3 learners rewritten (2 completions dropped, 0 reopened, 1 current units moved)"
            ),
        "{}",
        stdout(&dry)
    );
    assert_eq!(unit_count(&pool, track.id).await, 4);
    assert_eq!(progress(&pool, some, track.id).await, after_some);
    assert_eq!(stream_len(&js, &nats.events_stream).await, events_before);

    let removed = change(&pool, &nats, &remove).await;
    assert_eq!(removed["learners"], 3);
    assert_eq!(removed["completions_dropped"], 2);
    assert_eq!(unit_count(&pool, track.id).await, 3);
    let (none_now, some_now, all_now) = (
        progress(&pool, none, track.id).await,
        progress(&pool, some, track.id).await,
        progress(&pool, all, track.id).await,
    );
    // the learner on the removed unit moves to the first open one
    assert_eq!(none_now.current_unit_id, Some(bonus));
    assert_eq!(some_now.completed_unit_ids, vec![units[1]]);
    assert_eq!(some_now.started_at, before_some.started_at);
    assert_eq!(all_now.status, Status::Completed);
    assert_eq!(all_now.completed_at, before_all.completed_at);
    assert_eq!(all_now.version, after_all.version + 1);
    // the ledger keeps the removed unit's completion
    let kept: i64 = sqlx::query_scalar(
        "select count(*) from progress_ledger where payload->>'unit_id' = $1 and outcome = 'applied'",
    )
    .bind(&removed_unit)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(kept, 2);
    eventually(
        WAIT,
        "the API serving the views after the removal",
        || async {
            let some_view = api.progress(some, track.id).await;
            let all_view = api.progress(all, track.id).await;
            (some_view["percent_complete"] == 33.33
                && some_view["total_units"] == 3
                && all_view["percent_complete"] == 66.67)
                .then_some(())
        },
    )
    .await;

    // moving a unit changes no learner's view: no event, no new version
    let moved_unit = units[2].to_string();
    let moved = change(
        &pool,
        &nats,
        &[
            "tracks",
            "move-unit",
            "--track",
            &track_id,
            "--unit",
            &moved_unit,
            "--position",
            "0",
        ],
    )
    .await;
    assert_eq!(moved["learners"], 0);
    let order: Vec<Uuid> = learning_progress::db::tracks::unit_ids(&pool, track.id)
        .await
        .unwrap();
    assert_eq!(order, [units[2], bonus, units[1]]);
    assert_eq!(progress(&pool, some, track.id).await, some_now);
    let unannounced: i64 =
        sqlx::query_scalar("select count(*) from track_change_events where not announced")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(unannounced, 0);
    delete_streams(&js, &nats).await;
}

#[sqlx::test]
async fn reopen_sets_completed_learners_back_on_the_new_unit(pool: PgPool) {
    let (nats, js) = isolated_nats().await;
    let track = create_track(&pool, "Reopened", 2).await.unwrap();
    let _applier = start_applier(&js, &pool, &nats, ApplierConfig::default());
    let done = Uuid::new_v4();
    let before = drive(&pool, &js, &nats, done, &track, path(&track, 2)).await;
    let added = change(
        &pool,
        &nats,
        &[
            "tracks",
            "add-unit",
            "--track",
            &track.id.to_string(),
            "--assessment",
            "--reopen",
        ],
    )
    .await;
    assert_eq!(added["reopened"], 1);
    let unit: Uuid = serde_json::from_value(added["unit_id"].clone()).unwrap();
    let kind: String = sqlx::query_scalar("select kind from track_units where id = $1")
        .bind(unit)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(kind, "assessment");
    let after = progress(&pool, done, track.id).await;
    assert_eq!(after.status, Status::InProgress);
    assert_eq!(after.completed_at, None);
    assert_eq!(after.current_unit_id, Some(unit));
    assert_eq!(after.completed_unit_ids, before.completed_unit_ids);
    delete_streams(&js, &nats).await;
}

#[sqlx::test]
async fn bad_input_is_refused_with_a_message_and_changes_nothing(pool: PgPool) {
    let (nats, js) = isolated_nats().await;
    let track = create_track(&pool, "Refusals", 2).await.unwrap();
    let single = create_track(&pool, "Single", 1).await.unwrap();
    let (track_id, unit) = (track.id.to_string(), track.units[0].id.to_string());
    let stranger = Uuid::new_v4().to_string();
    let refused: [(&[&str], &str); 7] = [
        (
            &["tracks", "add-unit", "--track", &stranger],
            "does not exist",
        ),
        (
            &[
                "tracks",
                "remove-unit",
                "--track",
                &stranger,
                "--unit",
                &unit,
            ],
            "does not exist",
        ),
        (
            &[
                "tracks",
                "remove-unit",
                "--track",
                &track_id,
                "--unit",
                &stranger,
            ],
            "is not a unit of track",
        ),
        (
            &[
                "tracks",
                "add-unit",
                "--track",
                &track_id,
                "--position",
                "3",
            ],
            "position 3 is out of range: with 2 units it must be between 0 and 2",
        ),
        (
            &[
                "tracks",
                "move-unit",
                "--track",
                &track_id,
                "--unit",
                &unit,
                "--position",
                "2",
            ],
            "position 2 is out of range: with 2 units it must be between 0 and 1",
        ),
        (
            &[
                "tracks",
                "remove-unit",
                "--track",
                &single.id.to_string(),
                "--unit",
                &single.units[0].id.to_string(),
            ],
            "the track's only unit",
        ),
        (
            &["tracks", "add-unit", "--track", &track_id, "--title", " "],
            "title must not be empty",
        ),
    ];
    for (args, message) in refused {
        let output = cli(&pool, &nats, args).await;
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        let text = stderr(&output);
        assert!(
            text.starts_with("error: ") && text.contains(message),
            "{args:?}: {text}"
        );
        assert!(!text.contains("panicked"), "{text}");
    }
    // not a uuid: the parser refuses it, naming the flag
    let output = cli(
        &pool,
        &nats,
        &["tracks", "add-unit", "--track", "rust-basics"],
    )
    .await;
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("--track"), "{}", stderr(&output));
    let changes: i64 = sqlx::query_scalar("select count(*) from track_changes")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(changes, 0);
    assert_eq!(unit_count(&pool, track.id).await, 2);

    for sub in ["add-unit", "remove-unit", "move-unit", "show", "notify"] {
        let help = cli(&pool, &nats, &["tracks", sub, "--help"]).await;
        assert!(help.status.success());
        assert!(
            stdout(&help).contains("[env: TRACK_ID="),
            "{sub}: {}",
            stdout(&help)
        );
    }
    let shown = cli(&pool, &nats, &["tracks", "show", "--track", &track_id]).await;
    assert!(shown.status.success(), "{}", stderr(&shown));
    let shown: Value = serde_json::from_str(&stdout(&shown)).unwrap();
    assert_eq!(shown["units_version"], 0);
    assert_eq!(shown["units"].as_array().unwrap().len(), 2);
    delete_streams(&js, &nats).await;
}

#[sqlx::test]
async fn events_a_change_could_not_publish_are_published_by_the_applier_sweep(pool: PgPool) {
    let (nats, js) = isolated_nats().await;
    let track = create_track(&pool, "Swept", 2).await.unwrap();
    let applier = start_applier(&js, &pool, &nats, ApplierConfig::default());
    let learners: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    for user in &learners {
        drive(&pool, &js, &nats, *user, &track, path(&track, 1)).await;
    }
    drop(applier);
    let events_before = stream_len(&js, &nats.events_stream).await;
    // committed, then the process "dies" before publishing
    let change = Change::AddUnit {
        title: "Late".to_owned(),
        position: None,
        assessment: false,
    };
    let applied =
        track_changes::apply_change(&pool, track.id, &change, false, false, &mut |_, _| {})
            .await
            .unwrap();
    assert_eq!(applied.learners, 3);
    assert_eq!(stream_len(&js, &nats.events_stream).await, events_before);
    let lag = learning_progress::ops::status::lag(&js, &pool, &nats, "progress-applier")
        .await
        .unwrap();
    assert_eq!(
        lag.unannounced, 3,
        "status counts the change's events as unannounced"
    );

    let config = ApplierConfig {
        announce_after_secs: 0,
        ..ApplierConfig::default()
    };
    let _applier = start_applier(&js, &pool, &nats, config);
    eventually(WAIT, "the sweep publishing the change's events", || async {
        let unannounced: i64 =
            sqlx::query_scalar("select count(*) from track_change_events where not announced")
                .fetch_one(&pool)
                .await
                .unwrap();
        (unannounced == 0).then_some(())
    })
    .await;
    let all = events(&js, &nats, events_before as usize + 3).await;
    let swept: Vec<Uuid> = all
        .iter()
        .filter(|e| e.kind == "track_changed")
        .map(|e| e.event_id)
        .collect();
    assert_eq!(swept.len(), 3);
    for user in &learners {
        assert!(swept.contains(&track_changes::event_id(track.id, 1, *user)));
    }
    delete_streams(&js, &nats).await;
}

/// An applier that dies between its commit and its events re-announces, on the redelivery, the
/// snapshot it committed: built from the learner's snapshot after the track change and the
/// commands after it (applied without the removed unit, as the original was), with the
/// version and unit count the original had.
#[sqlx::test]
async fn an_event_re_announced_after_a_crash_includes_the_track_change_before_it(pool: PgPool) {
    let (nats, js) = isolated_nats().await;
    let track = create_track(&pool, "Crash", 3).await.unwrap();
    let units: Vec<Uuid> = track.units.iter().map(|u| u.id).collect();
    let config = ApplierConfig {
        ack_wait_secs: 1,
        ..ApplierConfig::default()
    };
    let applier = start_applier(&js, &pool, &nats, config.clone());
    let user = Uuid::new_v4();
    drive(&pool, &js, &nats, user, &track, path(&track, 1)).await;
    drop(applier);
    let change = Change::RemoveUnit { unit: units[0] };
    track_changes::apply_change(&pool, track.id, &change, false, false, &mut |_, _| {})
        .await
        .unwrap();
    let changed = progress(&pool, user, track.id).await;
    assert!(changed.completed_unit_ids.is_empty());

    let seams = Seams::default();
    seams
        .halt_after_commit
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let crashed = tokio::spawn(applier::run(
        js.clone(),
        pool.clone(),
        nats.clone(),
        config.clone(),
        seams,
        CancellationToken::new(),
    ));
    let completed = ProgressCommand {
        command_id: Uuid::new_v4(),
        user_id: user,
        track_id: track.id,
        seq: 3,
        occurred_at: at(3),
        // written before the removal: its next unit is the removed one
        action: Action::UnitCompleted {
            unit_id: units[1],
            next_unit_id: Some(units[0]),
        },
    };
    let events_before = stream_len(&js, &nats.events_stream).await as usize;
    publish_command(&js, &nats, &completed)
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(crashed.await.unwrap().is_err(), "halted after its commit");
    let committed = progress(&pool, user, track.id).await;
    assert_eq!(committed.version, changed.version + 1);
    assert_eq!(committed.current_unit_id, None);

    let _applier = start_applier(&js, &pool, &nats, config);
    let all = events(&js, &nats, events_before + 1).await;
    let event = all.last().unwrap();
    assert_eq!(event.event_id, completed.command_id);
    assert_eq!(event.version, committed.version);
    assert_eq!(event.progress.progress, committed);
    assert_eq!(event.progress.total_units, 2);
    assert_eq!(event.progress.percent_complete, 50.0);
    delete_streams(&js, &nats).await;
}

/// Runs a worker and an applier while `body` runs.
async fn with_worker<F, Fut>(pool: PgPool, body: F)
where
    F: FnOnce(temporalio_client::Client, TemporalConfig, NatsConfig, jetstream::Context) -> Fut,
    Fut: Future<Output = ()>,
{
    let temporal = temporal_config();
    let (nats, js) = isolated_nats().await;
    let client = workflow::connect(&temporal, "test").await.unwrap();
    let _applier = start_applier(&js, &pool, &nats, ApplierConfig::default());
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

#[sqlx::test]
async fn a_running_path_accepts_an_added_unit_and_refuses_a_removed_one(pool: PgPool) {
    let track = create_track(&pool, "Running", 3).await.unwrap();
    let units: Vec<Uuid> = track.units.iter().map(|u| u.id).collect();
    let user = Uuid::new_v4();
    let db = pool.clone();
    with_worker(pool.clone(), |temporal, config, nats, js| async move {
        client::start_track(&temporal, &config, &db, user, track.id)
            .await
            .unwrap();
        client::complete_unit(&temporal, user, track.id, units[0])
            .await
            .unwrap();
        eventually(WAIT, "the learner's row", || async {
            get_user_progress(&db, user, track.id)
                .await
                .unwrap()
                .filter(|p| p.completed_unit_ids == [units[0]])
        })
        .await;

        let track_id = track.id.to_string();
        let added = change(&db, &nats, &["tracks", "add-unit", "--track", &track_id]).await;
        assert_eq!(added["paths"]["signalled"], 1, "{added}");
        let bonus: Uuid = serde_json::from_value(added["unit_id"].clone()).unwrap();
        let removed_unit = units[1].to_string();
        let removed = change(
            &db,
            &nats,
            &[
                "tracks",
                "remove-unit",
                "--track",
                &track_id,
                "--unit",
                &removed_unit,
            ],
        )
        .await;
        assert_eq!(removed["paths"]["signalled"], 1, "{removed}");

        match client::complete_unit(&temporal, user, track.id, units[1]).await {
            Err(ClientError::Rejected { reason, .. }) => {
                assert!(reason.contains("is not part of track"), "{reason}")
            }
            other => panic!("a removed unit was not refused: {other:?}"),
        }
        let view = client::complete_unit(&temporal, user, track.id, bonus)
            .await
            .unwrap();
        assert_eq!(view.unit_ids, [units[0], units[2], bonus]);
        client::complete_unit(&temporal, user, track.id, units[2])
            .await
            .unwrap();
        let done = eventually(WAIT, "the track completed in the projection", || async {
            get_user_progress(&db, user, track.id)
                .await
                .unwrap()
                .filter(|p| p.status == Status::Completed)
        })
        .await;
        let mut expected = vec![units[0], units[2], bonus];
        expected.sort();
        assert_eq!(done.completed_unit_ids, expected);
        // nothing the path published was refused
        assert_eq!(stream_len(&js, &nats.dlq_stream).await, 0);
    })
    .await;
}

#[sqlx::test]
async fn a_path_whose_open_units_are_all_removed_completes_the_track(pool: PgPool) {
    let track = create_track(&pool, "Shortened", 3).await.unwrap();
    let units: Vec<Uuid> = track.units.iter().map(|u| u.id).collect();
    let user = Uuid::new_v4();
    let db = pool.clone();
    with_worker(pool.clone(), |temporal, config, nats, _js| async move {
        client::start_track(&temporal, &config, &db, user, track.id)
            .await
            .unwrap();
        client::complete_unit(&temporal, user, track.id, units[0])
            .await
            .unwrap();
        client::complete_unit(&temporal, user, track.id, units[1])
            .await
            .unwrap();
        eventually(WAIT, "two units in the projection", || async {
            get_user_progress(&db, user, track.id)
                .await
                .unwrap()
                .filter(|p| p.completed_unit_ids.len() == 2)
        })
        .await;
        let last = units[2].to_string();
        let removed = change(
            &db,
            &nats,
            &[
                "tracks",
                "remove-unit",
                "--track",
                &track.id.to_string(),
                "--unit",
                &last,
            ],
        )
        .await;
        assert_eq!(removed["paths"]["signalled"], 1, "{removed}");
        let done = eventually(WAIT, "the path completing the track", || async {
            get_user_progress(&db, user, track.id)
                .await
                .unwrap()
                .filter(|p| p.status == Status::Completed)
        })
        .await;
        assert!(done.completed_at.is_some());
        let outcome = tokio::time::timeout(WAIT, client::result(&temporal, user, track.id))
            .await
            .expect("the path ended")
            .unwrap();
        assert!(outcome.unreconciled_seqs.is_empty());
    })
    .await;
}

#[sqlx::test]
async fn a_path_started_with_the_units_before_a_change_takes_the_catalogue_s(pool: PgPool) {
    let track = create_track(&pool, "Stale start", 2).await.unwrap();
    let stale: Vec<Uuid> = track.units.iter().map(|u| u.id).collect();
    let user = Uuid::new_v4();
    let db = pool.clone();
    with_worker(pool.clone(), |temporal, config, nats, _js| async move {
        // the caller read the units, then the track changed before the path started
        let added = change(
            &db,
            &nats,
            &["tracks", "add-unit", "--track", &track.id.to_string()],
        )
        .await;
        let unit: Uuid = serde_json::from_value(added["unit_id"].clone()).unwrap();
        let input = workflow::LearningPathInput::new(user, track.id, stale.clone());
        client::start(&temporal, &config, input).await.unwrap();
        let view = client::complete_unit(&temporal, user, track.id, unit)
            .await
            .unwrap();
        assert_eq!(view.unit_ids, [stale[0], stale[1], unit]);
    })
    .await;
}

/// A track with many learners is rewritten in batches, with progress lines, and every learner
/// gets exactly one event.
#[sqlx::test]
async fn a_large_track_is_rewritten_in_batches_with_progress_lines(pool: PgPool) {
    let (nats, js) = isolated_nats().await;
    let track = create_track(&pool, "Popular", 4).await.unwrap();
    let learners = 2_500;
    sqlx::query(
        "insert into user_progress (user_id, track_id, current_unit_id, completed_unit_ids)
         select gen_random_uuid(), $1, $2, array[$3::uuid] from generate_series(1, $4)",
    )
    .bind(track.id)
    .bind(track.units[1].id)
    .bind(track.units[0].id)
    .bind(learners)
    .execute(&pool)
    .await
    .unwrap();
    let events_before = stream_len(&js, &nats.events_stream).await;
    let output = cli(
        &pool,
        &nats,
        &[
            "tracks",
            "remove-unit",
            "--track",
            &track.id.to_string(),
            "--unit",
            &track.units[1].id.to_string(),
        ],
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    let progress_lines = stderr(&output);
    for line in [
        "learners rewritten 1000/2500 (",
        "learners rewritten 2500/2500 (",
        "events published 2500/2500 (",
        "paths told 2500/2500 (",
    ] {
        assert!(progress_lines.contains(line), "{line}: {progress_lines}");
    }
    let summary = stdout(&output);
    assert!(
        summary.contains("2500 learners rewritten (0 completions dropped, 0 reopened, 2500 current units moved); 2500 events published; 0 running paths told, 2500 in progress without one, 0 failed"),
        "{summary}"
    );
    assert_eq!(summary.lines().count(), 1);
    assert_eq!(
        stream_len(&js, &nats.events_stream).await,
        events_before + learners as u64
    );
    let moved: i64 = sqlx::query_scalar(
        "select count(*) from user_progress
         where track_id = $1 and current_unit_id = $2 and version = 2",
    )
    .bind(track.id)
    .bind(track.units[2].id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(moved, learners as i64);
    delete_streams(&js, &nats).await;
}

/// A change while the applier applies learners' commands: every learner ends rewritten exactly
/// once, no row keeps the removed unit, and no command is lost — those applied after the
/// change that still name the removed unit, as commands published just before it do, apply
/// without it.
#[sqlx::test]
async fn a_change_while_commands_are_applied_leaves_every_learner_consistent(pool: PgPool) {
    let (nats, js) = isolated_nats().await;
    let track = create_track(&pool, "Busy", 4).await.unwrap();
    let units: Vec<Uuid> = track.units.iter().map(|u| u.id).collect();
    let _applier = start_applier(&js, &pool, &nats, ApplierConfig::default());
    let learners: Vec<Uuid> = (0..40).map(|_| Uuid::new_v4()).collect();
    for user in &learners {
        drive(&pool, &js, &nats, *user, &track, path(&track, 0)).await;
    }
    // every learner completes the units in order while the last one is removed
    let publishing = {
        let (js, nats, learners, units, track) = (
            js.clone(),
            nats.clone(),
            learners.clone(),
            units.clone(),
            track.id,
        );
        tokio::spawn(async move {
            for (i, unit) in units.iter().enumerate() {
                for user in &learners {
                    let command = ProgressCommand {
                        command_id: Uuid::new_v4(),
                        user_id: *user,
                        track_id: track,
                        seq: i as i64 + 2,
                        occurred_at: at(i as i64 + 2),
                        action: Action::UnitCompleted {
                            unit_id: *unit,
                            next_unit_id: units.get(i + 1).copied(),
                        },
                    };
                    publish_command(&js, &nats, &command)
                        .await
                        .unwrap()
                        .await
                        .unwrap();
                }
            }
        })
    };
    eventually(WAIT, "some commands applied", || async {
        let applied: i64 = sqlx::query_scalar("select count(*) from progress_ledger where seq > 1")
            .fetch_one(&pool)
            .await
            .unwrap();
        (applied > 0).then_some(())
    })
    .await;
    let change = Change::RemoveUnit { unit: units[3] };
    let applied =
        track_changes::apply_change(&pool, track.id, &change, false, false, &mut |_, _| {})
            .await
            .unwrap();
    assert_eq!(applied.learners, learners.len());
    publishing.await.unwrap();
    let total = learners.len() as i64 * 5;
    eventually(WAIT, "every command decided", || async {
        let decided: i64 = sqlx::query_scalar("select count(*) from progress_ledger")
            .fetch_one(&pool)
            .await
            .unwrap();
        (decided == total).then_some(())
    })
    .await;
    let remaining = [units[0], units[1], units[2]];
    for user in &learners {
        let row = progress(&pool, *user, track.id).await;
        assert!(
            row.completed_unit_ids.iter().all(|u| remaining.contains(u)),
            "{row:?}"
        );
        assert!(
            row.current_unit_id.is_none_or(|u| remaining.contains(&u)),
            "{row:?}"
        );
        let applied: i64 = sqlx::query_scalar(
            "select count(*) from progress_ledger
             where user_id = $1 and outcome = 'applied'",
        )
        .bind(user)
        .fetch_one(&pool)
        .await
        .unwrap();
        // each applied command and the change made one version each
        assert_eq!(row.version, applied + 1, "{row:?}");
        let mut done = remaining.to_vec();
        done.sort();
        assert_eq!(
            row.completed_unit_ids, done,
            "the completions before the removed unit"
        );
        assert_eq!(row.current_unit_id, None);
    }
    let rejected: i64 =
        sqlx::query_scalar("select count(*) from progress_ledger where outcome = 'rejected'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(rejected, 0);
    assert_eq!(stream_len(&js, &nats.dlq_stream).await, 0);
    delete_streams(&js, &nats).await;
}

/// `verify` merges a learner's ledger from the snapshot the last change of the track wrote, so
/// a track change is no difference, and `rebuild` leaves such a learner as it is.
#[sqlx::test]
async fn verify_and_rebuild_take_a_track_change_as_part_of_the_history(pool: PgPool) {
    use learning_progress::ops::rebuild::{self, Scope};
    let (nats, js) = isolated_nats().await;
    let track = create_track(&pool, "Verified", 3).await.unwrap();
    let units: Vec<Uuid> = track.units.iter().map(|u| u.id).collect();
    let _applier = start_applier(&js, &pool, &nats, ApplierConfig::default());
    let user = Uuid::new_v4();
    drive(&pool, &js, &nats, user, &track, path(&track, 2)).await;
    let change = Change::RemoveUnit { unit: units[0] };
    track_changes::apply_change(&pool, track.id, &change, false, false, &mut |_, _| {})
        .await
        .unwrap();
    // a command after the change, written before it: its next unit is the removed one
    let late = ProgressCommand {
        command_id: Uuid::new_v4(),
        user_id: user,
        track_id: track.id,
        seq: 4,
        occurred_at: at(4),
        action: Action::UnitCompleted {
            unit_id: units[2],
            next_unit_id: Some(units[0]),
        },
    };
    publish_command(&js, &nats, &late)
        .await
        .unwrap()
        .await
        .unwrap();
    let row = eventually(WAIT, "the late command applied", || async {
        Some(progress(&pool, user, track.id).await).filter(|p| p.last_seq == 4)
    })
    .await;
    let report = rebuild::verify(&pool, Scope::default(), 10, &mut |_| {})
        .await
        .unwrap();
    assert!(report.differences.is_empty(), "{:?}", report.differences);
    let rebuilt = rebuild::rebuild(&pool, None, Scope::default(), 10, false, &mut |_| {})
        .await
        .unwrap();
    assert_eq!(rebuilt.rewritten, 0);
    assert_eq!(progress(&pool, user, track.id).await, row);
    delete_streams(&js, &nats).await;
}

/// Erasing a learner also removes the snapshots track changes kept of them.
#[sqlx::test]
async fn erasing_a_learner_removes_their_track_change_events(pool: PgPool) {
    let (nats, js) = isolated_nats().await;
    let track = create_track(&pool, "Erased", 2).await.unwrap();
    let _applier = start_applier(&js, &pool, &nats, ApplierConfig::default());
    let (erased, kept) = (Uuid::new_v4(), Uuid::new_v4());
    for user in [erased, kept] {
        drive(&pool, &js, &nats, user, &track, path(&track, 1)).await;
    }
    change(
        &pool,
        &nats,
        &["tracks", "add-unit", "--track", &track.id.to_string()],
    )
    .await;
    let output = cli(
        &pool,
        &nats,
        &["erase", "--user", &erased.to_string(), "--yes"],
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    let left: Vec<Uuid> = sqlx::query_scalar("select user_id from track_change_events")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(left, [kept]);
    delete_streams(&js, &nats).await;
}
