//! The applier against real NATS JetStream and PostgreSQL: exactly-once application, events,
//! dead letters, crash recovery and database outages.

#[path = "../common/mod.rs"]
mod common;
mod faults;

use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream;
use chrono::{DateTime, Utc};
use common::commands::{at, command, path, publish, started, unit_done};
use common::{Proxy, eventually, isolated_nats, read_stream, stream_len};
use learning_progress::applier::{self, ApplierConfig, ApplierError, Seams};
use learning_progress::db::progress::get_user_progress;
use learning_progress::db::tracks::create_track;
use learning_progress::messaging::{NatsConfig, publish_command};
use learning_progress::model::{Action, ProgressCommand, ProgressEvent, UserProgress};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(20);

fn expected_row(commands: &[ProgressCommand]) -> UserProgress {
    let first = &commands[0];
    let mut progress = UserProgress::empty(first.user_id, first.track_id, first.occurred_at);
    for command in commands {
        progress.apply(command, Utc::now());
    }
    progress
}

fn start_applier(
    js: &jetstream::Context,
    pool: &PgPool,
    nats: &NatsConfig,
    config: ApplierConfig,
    seams: Seams,
) -> (CancellationToken, JoinHandle<Result<(), ApplierError>>) {
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(applier::run(
        js.clone(),
        pool.clone(),
        nats.clone(),
        config,
        seams,
        shutdown.clone(),
    ));
    (shutdown, task)
}

/// An applier with the default configuration and no test seams.
fn start_default_applier(
    js: &jetstream::Context,
    pool: &PgPool,
    nats: &NatsConfig,
) -> (CancellationToken, JoinHandle<Result<(), ApplierError>>) {
    start_applier(js, pool, nats, ApplierConfig::default(), Seams::default())
}

async fn stop(applier: (CancellationToken, JoinHandle<Result<(), ApplierError>>)) {
    applier.0.cancel();
    applier.1.await.unwrap().unwrap();
}

/// The applier's durable consumer as the server sees it (delivered, pending, unacked).
async fn applier_info(
    js: &jetstream::Context,
    nats: &NatsConfig,
) -> Option<jetstream::consumer::Info> {
    let mut consumer = js
        .get_consumer_from_stream::<jetstream::consumer::pull::Config, _, _>(
            "progress-applier",
            &nats.commands_stream,
        )
        .await
        .ok()?;
    consumer.info().await.ok().cloned()
}

/// Every ledger entry as (command id, outcome, version after, applied at).
async fn ledger_rows(pool: &PgPool) -> Vec<(Uuid, String, Option<i64>, DateTime<Utc>)> {
    sqlx::query_as(
        "select command_id, outcome, version_after, applied_at from progress_ledger order by command_id",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn ledger_count(pool: &PgPool) -> i64 {
    sqlx::query_scalar("select count(*) from progress_ledger")
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn row_at_version(
    pool: &PgPool,
    user: Uuid,
    track: Uuid,
    version: i64,
) -> Option<UserProgress> {
    get_user_progress(pool, user, track)
        .await
        .unwrap()
        .filter(|row| row.version >= version)
}

#[sqlx::test]
async fn commands_are_applied_and_announced_as_events(pool: PgPool) {
    let (nats, js) = isolated_nats().await;
    let track = create_track(&pool, "Events", 3).await.unwrap();
    let user = Uuid::new_v4();
    let commands = path(user, &track);
    let applier = start_default_applier(&js, &pool, &nats);
    for command in &commands {
        publish(&js, &nats, command).await;
    }

    let expected = expected_row(&commands);
    let row = eventually(WAIT, "the row to reach its final version", || {
        row_at_version(&pool, user, track.id, expected.version)
    })
    .await;
    assert!(row.content_eq(&expected), "{row:#?}\n{expected:#?}");
    assert_eq!(row.version, expected.version);

    let events = read_stream(&js, &nats.events_stream, commands.len(), WAIT).await;
    let events: Vec<ProgressEvent> = events
        .iter()
        .map(|m| serde_json::from_slice(&m.payload).unwrap())
        .collect();
    let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
    assert_eq!(
        ids,
        commands.iter().map(|c| c.command_id).collect::<Vec<_>>()
    );
    let versions: Vec<i64> = events.iter().map(|e| e.version).collect();
    assert_eq!(versions, (1..=commands.len() as i64).collect::<Vec<_>>());
    let last = events.last().unwrap();
    assert_eq!(last.progress.progress, row);
    assert_eq!(last.progress.percent_complete, 100.0);
    assert_eq!(last.kind, "track_completed");
    stop(applier).await;
    common::delete_streams(&js, &nats).await;
}

#[sqlx::test]
async fn a_command_published_twice_is_applied_once(pool: PgPool) {
    let (nats, js) = isolated_nats().await;
    let track = create_track(&pool, "Twice", 2).await.unwrap();
    let user = Uuid::new_v4();
    let start = started(user, &track, 1);
    let done = unit_done(user, &track, 2, 0);

    // inside the duplicate window JetStream itself drops the second copy
    publish(&js, &nats, &start).await;
    let again = publish_command(&js, &nats, &start)
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(
        again.duplicate,
        "JetStream stored a duplicate inside its window"
    );
    publish(&js, &nats, &done).await;
    // outside the window (simulated by a different message id) the ledger drops it
    let payload = serde_json::to_vec(&done).unwrap();
    js.publish(nats.command_subject(user, track.id), payload.into())
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(stream_len(&js, &nats.commands_stream).await, 3);

    let applier = start_default_applier(&js, &pool, &nats);
    eventually(WAIT, "every command acked", || async {
        let info = applier_info(&js, &nats).await?;
        (info.num_ack_pending == 0 && info.num_pending == 0 && info.delivered.stream_sequence == 3)
            .then_some(())
    })
    .await;
    let row = get_user_progress(&pool, user, track.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.version, 2, "the duplicate changed the row");
    assert_eq!(ledger_count(&pool).await, 2);
    stop(applier).await;
    common::delete_streams(&js, &nats).await;
}

#[sqlx::test]
async fn a_batch_with_duplicates_and_many_learners_commits_correctly(pool: PgPool) {
    let (nats, js) = isolated_nats().await;
    let track = create_track(&pool, "Batch", 4).await.unwrap();
    let learners: Vec<Uuid> = (0..25).map(|_| Uuid::new_v4()).collect();
    let paths: Vec<Vec<ProgressCommand>> = learners.iter().map(|u| path(*u, &track)).collect();
    // interleave learners, and send every third command twice under another message id
    let longest = paths.iter().map(Vec::len).max().unwrap();
    for i in 0..longest {
        for commands in &paths {
            publish(&js, &nats, &commands[i]).await;
            if i % 3 == 0 {
                let payload = serde_json::to_vec(&commands[i]).unwrap();
                js.publish(
                    nats.command_subject(commands[i].user_id, track.id),
                    payload.into(),
                )
                .await
                .unwrap()
                .await
                .unwrap();
            }
        }
    }
    let config = ApplierConfig {
        batch_size: 64,
        ..ApplierConfig::default()
    };
    let applier = start_applier(&js, &pool, &nats, config, Seams::default());
    let unique: i64 = paths.iter().map(|p| p.len() as i64).sum();
    eventually(WAIT, "every command in the ledger", || async {
        (ledger_count(&pool).await == unique).then_some(())
    })
    .await;
    for commands in &paths {
        let expected = expected_row(commands);
        let row = eventually(WAIT, "final version", || {
            row_at_version(&pool, expected.user_id, track.id, expected.version)
        })
        .await;
        assert!(row.content_eq(&expected));
        assert_eq!(row.version, expected.version);
    }
    stop(applier).await;
    common::delete_streams(&js, &nats).await;
}

#[sqlx::test]
async fn poison_messages_are_dead_lettered_and_the_rest_applied(pool: PgPool) {
    let (nats, js) = isolated_nats().await;
    let track = create_track(&pool, "Poison", 2).await.unwrap();
    let other = create_track(&pool, "Elsewhere", 2).await.unwrap();
    let user = Uuid::new_v4();
    let subject = nats.command_subject(user, track.id);

    let good_start = started(user, &track, 1);
    let foreign = command(
        user,
        track.id,
        2,
        Action::UnitCompleted {
            unit_id: other.units[0].id,
            next_unit_id: None,
        },
    );
    let good_done = unit_done(user, &track, 3, 0);
    let mut unknown_type = serde_json::to_value(&good_done).unwrap();
    unknown_type["type"] = "unit_teleported".into();
    unknown_type["command_id"] = Uuid::new_v4().to_string().into();
    let misplaced = command(
        Uuid::new_v4(),
        track.id,
        1,
        Action::TrackStarted {
            current_unit_id: None,
        },
    );

    publish(&js, &nats, &good_start).await;
    js.publish(subject.clone(), "{\"command_id\": not json".into())
        .await
        .unwrap()
        .await
        .unwrap();
    publish(&js, &nats, &foreign).await;
    js.publish(
        subject.clone(),
        serde_json::to_vec(&unknown_type).unwrap().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    js.publish(
        subject.clone(),
        serde_json::to_vec(&misplaced).unwrap().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    publish(&js, &nats, &good_done).await;

    let applier = start_default_applier(&js, &pool, &nats);
    let dead = read_stream(&js, &nats.dlq_stream, 4, WAIT).await;
    let mut reasons: Vec<(String, String)> = dead
        .iter()
        .map(|m| {
            let header = |name| {
                m.headers
                    .as_ref()
                    .unwrap()
                    .get(name)
                    .unwrap()
                    .as_str()
                    .to_owned()
            };
            assert!(!header("lp-dlq-error").is_empty());
            assert!(header("lp-dlq-stream-seq").parse::<u64>().unwrap() >= 2);
            assert_eq!(header("lp-dlq-deliveries"), "1");
            (m.subject.to_string(), header("lp-dlq-reason"))
        })
        .collect();
    reasons.sort();
    let dlq = |r: &str| (nats.dlq_subject(r), r.to_owned());
    let mut expected = vec![
        dlq("foreign_unit"),
        dlq("malformed"),
        dlq("unknown_type"),
        dlq("wrong_subject"),
    ];
    expected.sort();
    assert_eq!(reasons, expected);
    // the original bytes travel with the dead letter
    assert!(
        dead.iter()
            .any(|m| m.payload.as_ref() == b"{\"command_id\": not json")
    );

    let row = eventually(WAIT, "valid commands applied", || {
        row_at_version(&pool, user, track.id, 2)
    })
    .await;
    assert_eq!(row.completed_unit_ids, vec![track.units[0].id]);
    let rejected: (String, String) =
        sqlx::query_as("select outcome, reason from progress_ledger where command_id = $1")
            .bind(foreign.command_id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(rejected.0, "rejected");
    assert!(
        rejected.1.contains("does not belong to track"),
        "{}",
        rejected.1
    );
    stop(applier).await;
    common::delete_streams(&js, &nats).await;
}

#[sqlx::test]
async fn a_crash_between_commit_and_ack_applies_nothing_twice_and_still_publishes(pool: PgPool) {
    let (nats, js) = isolated_nats().await;
    let track = create_track(&pool, "Crash", 2).await.unwrap();
    let user = Uuid::new_v4();
    let commands = path(user, &track);
    for command in &commands {
        publish(&js, &nats, command).await;
    }
    // batches of two: the crash always leaves some of the path committed and some not
    let config = ApplierConfig {
        ack_wait_secs: 1,
        batch_size: 2,
        ..ApplierConfig::default()
    };
    let seams = Seams::default();
    seams.halt_after_commit.store(true, Ordering::SeqCst);
    let (_, crashed) = start_applier(&js, &pool, &nats, config.clone(), seams);
    assert!(matches!(crashed.await.unwrap(), Err(ApplierError::Halted)));
    // The first pull may hold any prefix of the path: what matters is that whatever it
    // committed is never applied again.
    let before_crash = ledger_rows(&pool).await;
    assert!(!before_crash.is_empty(), "the halted batch committed");
    assert_eq!(
        stream_len(&js, &nats.events_stream).await,
        0,
        "events published before the crash"
    );

    let applier = start_applier(&js, &pool, &nats, config, Seams::default());
    let expected = expected_row(&commands);
    let events = read_stream(&js, &nats.events_stream, commands.len(), WAIT).await;
    eventually(WAIT, "the commands acked after the restart", || async {
        let info = applier_info(&js, &nats).await?;
        (info.num_ack_pending == 0 && info.num_pending == 0).then_some(())
    })
    .await;
    let row = get_user_progress(&pool, user, track.id)
        .await
        .unwrap()
        .unwrap();
    assert!(row.content_eq(&expected), "{row:?} != {expected:?}");
    assert_eq!(
        row.version, expected.version,
        "a redelivered command changed the row again"
    );
    let after_restart = ledger_rows(&pool).await;
    assert_eq!(after_restart.len(), commands.len());
    for entry in &before_crash {
        assert!(
            after_restart.contains(entry),
            "the ledger entry {entry:?} was rewritten after the restart"
        );
    }
    // every committed command is announced once, the crashed ones by re-publishing, each
    // carrying exactly the snapshot its command produced
    let mut announced: Vec<Uuid> = events
        .iter()
        .map(|m| serde_json::from_slice::<ProgressEvent>(&m.payload).unwrap())
        .map(|event| {
            let entry = after_restart
                .iter()
                .find(|e| e.0 == event.event_id)
                .expect("an event for a command in the ledger");
            assert_eq!(
                Some(event.version),
                entry.2,
                "{event:?} is not the version its command produced ({entry:?})"
            );
            assert_eq!(event.applied_at, entry.3, "{event:?} vs {entry:?}");
            event.event_id
        })
        .collect();
    announced.sort();
    let mut ids: Vec<Uuid> = commands.iter().map(|c| c.command_id).collect();
    ids.sort();
    assert_eq!(announced, ids);
    assert_eq!(
        stream_len(&js, &nats.events_stream).await,
        commands.len() as u64
    );
    stop(applier).await;
    common::delete_streams(&js, &nats).await;
}

#[sqlx::test]
async fn while_the_database_is_unreachable_nothing_is_dead_lettered(pool: PgPool) {
    let (nats, js) = isolated_nats().await;
    let track = create_track(&pool, "Outage", 3).await.unwrap();
    let database: String = sqlx::query_scalar("select current_database()")
        .fetch_one(&pool)
        .await
        .unwrap();
    let proxy = Proxy::start("127.0.0.1:5432").await;
    let url = format!("postgres://postgres@127.0.0.1:{}/{database}", proxy.port);
    let proxied = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(1))
        .connect_lazy(&url)
        .unwrap();

    proxy.cut();
    let user = Uuid::new_v4();
    let commands = path(user, &track);
    let config = ApplierConfig {
        max_backoff_ms: 200,
        ..ApplierConfig::default()
    };
    let applier = start_applier(&js, &proxied, &nats, config, Seams::default());
    for command in &commands {
        publish(&js, &nats, command).await;
    }
    // the applier has taken the batch and is failing on it
    eventually(WAIT, "the commands delivered", || async {
        let info = applier_info(&js, &nats).await?;
        (info.delivered.stream_sequence == commands.len() as u64 && info.num_ack_pending > 0)
            .then_some(())
    })
    .await;
    assert_eq!(
        get_user_progress(&pool, user, track.id).await.unwrap(),
        None
    );

    proxy.restore();
    let expected = expected_row(&commands);
    let row = eventually(WAIT, "every command applied after the outage", || {
        row_at_version(&pool, user, track.id, expected.version)
    })
    .await;
    assert!(row.content_eq(&expected));
    assert_eq!(
        stream_len(&js, &nats.dlq_stream).await,
        0,
        "a transient fault was dead-lettered"
    );
    stop(applier).await;
    common::delete_streams(&js, &nats).await;
}

#[sqlx::test]
async fn a_nats_restart_loses_nothing_and_dead_letters_nothing(pool: PgPool) {
    let mut server = common::NatsServer::start().await;
    let nats = NatsConfig::isolated(server.url(), "restart");
    let client = learning_progress::messaging::connect(&nats, "test")
        .await
        .unwrap();
    let js = jetstream::new(client);
    learning_progress::messaging::ensure_streams(&js, &nats)
        .await
        .unwrap();
    let track = create_track(&pool, "Restart", 3).await.unwrap();
    let (before, after) = (Uuid::new_v4(), Uuid::new_v4());
    let config = ApplierConfig {
        max_backoff_ms: 200,
        ..ApplierConfig::default()
    };
    let applier = start_applier(&js, &pool, &nats, config, Seams::default());

    let first = path(before, &track);
    for command in &first {
        publish(&js, &nats, command).await;
    }
    let expected = expected_row(&first);
    eventually(WAIT, "the first learner applied", || {
        row_at_version(&pool, before, track.id, expected.version)
    })
    .await;

    server.kill().await;
    server.restart().await;
    // the clients reconnect by themselves; publishing waits until the stream answers again
    let second = path(after, &track);
    for command in &second {
        eventually(WAIT, "a publish accepted after the restart", || async {
            publish_command(&js, &nats, command).await.ok()?.await.ok()
        })
        .await;
    }
    let expected = expected_row(&second);
    let row = eventually(WAIT, "the second learner applied", || {
        row_at_version(&pool, after, track.id, expected.version)
    })
    .await;
    assert!(row.content_eq(&expected));
    assert_eq!(
        ledger_count(&pool).await,
        (first.len() + second.len()) as i64
    );
    assert_eq!(stream_len(&js, &nats.dlq_stream).await, 0);
    stop(applier).await;
}

/// The applier remembers each track's units; a unit added to a track later must still be
/// accepted, not dead-lettered against the remembered set.
#[sqlx::test]
async fn a_unit_added_to_a_track_later_is_accepted(pool: PgPool) {
    let (nats, js) = isolated_nats().await;
    let track = create_track(&pool, "Growing", 2).await.unwrap();
    let user = Uuid::new_v4();
    let applier = start_default_applier(&js, &pool, &nats);
    let started = started(user, &track, 1);
    publish(&js, &nats, &started).await;
    eventually(WAIT, "the start applied", || {
        row_at_version(&pool, user, track.id, 1)
    })
    .await;

    let added = Uuid::new_v4();
    sqlx::query(
        "insert into track_units (id, track_id, position, title, kind)
         values ($1, $2, 2, 'Added later', 'lesson')",
    )
    .bind(added)
    .bind(track.id)
    .execute(&pool)
    .await
    .unwrap();
    let completed = command(
        user,
        track.id,
        2,
        Action::UnitCompleted {
            unit_id: added,
            next_unit_id: None,
        },
    );
    publish(&js, &nats, &completed).await;
    let row = eventually(WAIT, "the added unit applied", || {
        row_at_version(&pool, user, track.id, 2)
    })
    .await;
    assert_eq!(row.completed_unit_ids, vec![added]);
    assert_eq!(
        stream_len(&js, &nats.dlq_stream).await,
        0,
        "nothing dead-lettered"
    );
    stop(applier).await;
    common::delete_streams(&js, &nats).await;
}

/// `NATS_URL` lists a cluster's nodes comma separated; the service connects through any that
/// answers (the first one listed here is down).
#[tokio::test]
async fn a_nats_url_may_list_several_servers() {
    let down = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let config = NatsConfig {
        url: format!("nats://127.0.0.1:{down}, {}", common::nats_url()),
        ..NatsConfig::isolated("unused", "servers")
    };
    assert_eq!(config.servers().len(), 2);
    let client = tokio::time::timeout(WAIT, learning_progress::messaging::connect(&config, "test"))
        .await
        .expect("connected within the wait")
        .expect("the list of servers is accepted");
    client.flush().await.expect("a listed server answers");
}
