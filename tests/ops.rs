//! Operator subcommands against the real stack: dead letters listed, shown, redriven, purged.

mod common;

use std::process::Stdio;
use std::time::Duration;

use async_nats::jetstream;
use learning_progress::api::ApiConfig;
use learning_progress::applier::ApplierConfig;
use learning_progress::db::progress::get_user_progress;
use learning_progress::db::tracks::create_track;
use learning_progress::messaging::NatsConfig;
use learning_progress::model::Action;
use learning_progress::ops::dlq::{self, Filter};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use common::api::serve_api;
use common::binary::binary;
use common::commands::{command, publish, started, unit_done};
use common::{eventually, isolated_nats, read_stream, start_applier, stream_len};

const WAIT: Duration = Duration::from_secs(15);

/// The service's binary with `nats`'s names in its environment.
fn cli(nats: &NatsConfig, args: &[&str]) -> std::process::Output {
    binary(nats).args(args).output().unwrap()
}

#[sqlx::test]
async fn dead_letters_are_listed_shown_and_purged_by_reason(pool: PgPool) {
    let (nats, js) = isolated_nats().await;
    let track = create_track(&pool, "Dead letters", 2).await.unwrap();
    let other = create_track(&pool, "Elsewhere", 1).await.unwrap();
    let user = Uuid::new_v4();
    let malformed = b"{\"command_id\": not json".to_vec();
    js.publish(
        nats.command_subject(user, track.id),
        malformed.clone().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let foreign = command(
        user,
        track.id,
        1,
        Action::TrackStarted {
            current_unit_id: Some(other.units[0].id),
        },
    );
    publish(&js, &nats, &foreign).await;
    let _applier = start_applier(&js, &pool, &nats, ApplierConfig::default());
    read_stream(&js, &nats.dlq_stream, 2, WAIT).await;

    let mut stream = dlq::stream(&js, &nats).await.unwrap();
    let all = dlq::list(&mut stream, &Filter::default()).await.unwrap();
    let counts: Vec<(String, usize)> = dlq::by_reason(&all).into_iter().collect();
    assert_eq!(
        counts,
        [("foreign_unit".to_owned(), 1), ("malformed".to_owned(), 1)]
    );
    assert!(all.iter().all(|d| d.user_id == Some(user)));
    let only = |reason: &str| Filter {
        reason: Some(reason.to_owned()),
        ..Filter::default()
    };
    let found = dlq::list(&mut stream, &only("malformed")).await.unwrap();
    assert_eq!(found.len(), 1);
    let shown = dlq::show(&mut stream, found[0].seq).await.unwrap();
    assert_eq!(shown.payload.as_ref(), malformed.as_slice());
    assert_eq!(shown.subject, nats.command_subject(user, track.id));
    let stranger = Filter {
        user: Some(Uuid::new_v4()),
        ..Filter::default()
    };
    assert!(dlq::list(&mut stream, &stranger).await.unwrap().is_empty());
    let old = Filter {
        older_than: Some(Duration::from_secs(3600)),
        ..Filter::default()
    };
    assert!(dlq::list(&mut stream, &old).await.unwrap().is_empty());

    let listed = cli(&nats, &["dlq", "list"]);
    assert!(listed.status.success());
    let stderr = String::from_utf8_lossy(&listed.stderr);
    assert!(
        stderr.contains("2 dead letters (foreign_unit 1, malformed 1)"),
        "{stderr}"
    );
    let bare = cli(&nats, &["dlq", "purge"]);
    assert!(!bare.status.success(), "a purge must name what it purges");
    let unasked = cli(&nats, &["dlq", "purge", "--reason", "malformed"]);
    assert!(!unasked.status.success());
    assert!(String::from_utf8_lossy(&unasked.stderr).contains("--yes"));
    let dry = cli(
        &nats,
        &["dlq", "purge", "--reason", "malformed", "--dry-run"],
    );
    assert!(dry.status.success());
    assert_eq!(
        stream_len(&js, &nats.dlq_stream).await,
        2,
        "a dry run removes nothing"
    );

    let purged = cli(&nats, &["dlq", "purge", "--reason", "malformed", "--yes"]);
    assert!(
        purged.status.success(),
        "{}",
        String::from_utf8_lossy(&purged.stderr)
    );
    let left = dlq::list(&mut stream, &Filter::default()).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].reason, "foreign_unit");
    common::delete_streams(&js, &nats).await;
}

/// A command dead-lettered because its predecessor never came is applied once the
/// predecessor has been and it is redriven; a malformed one, redriven, is dead-lettered again
/// once and the commands stream empties: redriving never loops.
#[sqlx::test]
async fn a_redriven_dead_letter_is_applied_once_its_cause_is_gone(pool: PgPool) {
    let (nats, js) = isolated_nats().await;
    let track = create_track(&pool, "Redrive", 2).await.unwrap();
    let user = Uuid::new_v4();
    let first = started(user, &track, 1);
    let second = unit_done(user, &track, 2, 0);
    // no patience for a missing predecessor: seq 2 alone is dead-lettered at once
    let config = ApplierConfig {
        gap_wait_secs: 0,
        ..ApplierConfig::default()
    };
    let _applier = start_applier(&js, &pool, &nats, config);
    publish(&js, &nats, &second).await;
    read_stream(&js, &nats.dlq_stream, 1, WAIT).await;
    js.publish(nats.command_subject(user, track.id), "not json".into())
        .await
        .unwrap()
        .await
        .unwrap();
    read_stream(&js, &nats.dlq_stream, 2, WAIT).await;
    publish(&js, &nats, &first).await;
    eventually(WAIT, "seq 1 applied", || async {
        get_user_progress(&pool, user, track.id)
            .await
            .unwrap()
            .filter(|row| row.version == 1)
    })
    .await;

    let redriven = cli(&nats, &["dlq", "redrive", "--all"]);
    assert!(
        redriven.status.success(),
        "{}",
        String::from_utf8_lossy(&redriven.stderr)
    );
    let row = eventually(WAIT, "seq 2 applied after its redrive", || async {
        get_user_progress(&pool, user, track.id)
            .await
            .unwrap()
            .filter(|row| row.version == 2)
    })
    .await;
    assert_eq!(row.completed_unit_ids, vec![track.units[0].id]);

    let mut stream = dlq::stream(&js, &nats).await.unwrap();
    let again = eventually(WAIT, "the malformed one dead-lettered again", || async {
        let mut stream = dlq::stream(&js, &nats).await.unwrap();
        let dead = dlq::list(&mut stream, &Filter::default()).await.unwrap();
        (dead.len() == 1 && dead[0].seq > 2).then_some(dead)
    })
    .await;
    assert_eq!(again[0].reason, "malformed");
    eventually(WAIT, "the commands stream empty", || async {
        (stream_len(&js, &nats.commands_stream).await == 0).then_some(())
    })
    .await;
    assert_eq!(
        dlq::list(&mut stream, &Filter::default())
            .await
            .unwrap()
            .len(),
        1
    );
    common::delete_streams(&js, &nats).await;
}

#[sqlx::test]
async fn status_reports_the_backlog_its_age_and_dead_letters_by_reason(pool: PgPool) {
    let (nats, js) = isolated_nats().await;
    let track = create_track(&pool, "Status", 2).await.unwrap();
    let user = Uuid::new_v4();
    let applier = start_applier(&js, &pool, &nats, ApplierConfig::default());
    js.publish(nats.command_subject(user, track.id), "not json".into())
        .await
        .unwrap()
        .await
        .unwrap();
    read_stream(&js, &nats.dlq_stream, 1, WAIT).await;
    drop(applier);
    eventually(WAIT, "the applier stopped pulling", || async {
        let commands = js.get_stream(&nats.commands_stream).await.unwrap();
        let mut consumer: jetstream::consumer::PullConsumer =
            commands.get_consumer("progress-applier").await.ok()?;
        let info = consumer.info().await.ok()?;
        (info.num_waiting == 0).then_some(())
    })
    .await;
    // two learners behind: one by two commands, the other by one
    let (ahead, other) = (Uuid::new_v4(), Uuid::new_v4());
    for (learner, seq) in [(ahead, 1), (ahead, 2), (other, 1)] {
        let started = command(
            learner,
            track.id,
            seq,
            Action::TrackStarted {
                current_unit_id: None,
            },
        );
        publish(&js, &nats, &started).await;
    }

    let lag = learning_progress::ops::status::lag(&js, &pool, &nats, "progress-applier")
        .await
        .unwrap();
    assert_eq!(lag.commands_waiting, 3);
    assert_eq!(lag.pending, 3);
    assert_eq!(lag.unreconciled_learners, 2);
    assert!(lag.oldest_waiting_seconds.is_some());
    assert_eq!(
        lag.dead_letters.into_iter().collect::<Vec<_>>(),
        [("malformed".to_owned(), 1)]
    );
    assert_eq!(lag.unannounced, 0);

    let database: String = sqlx::query_scalar("select current_database()")
        .fetch_one(&pool)
        .await
        .unwrap();
    let url = format!("postgres://postgres@127.0.0.1:5432/{database}");
    let status = |extra: &[&str]| {
        let mut args = vec!["status"];
        args.extend_from_slice(extra);
        std::process::Command::new(env!("CARGO_BIN_EXE_learning-progress"))
            .args(&args)
            .env("DATABASE_URL", &url)
            .env("NATS_URL", &nats.url)
            .env("NATS_SUBJECT_PREFIX", &nats.subject_prefix)
            .env("NATS_COMMANDS_STREAM", &nats.commands_stream)
            .env("NATS_EVENTS_STREAM", &nats.events_stream)
            .env("NATS_DLQ_STREAM", &nats.dlq_stream)
            .output()
            .unwrap()
    };
    let printed = status(&[]);
    assert!(
        printed.status.success(),
        "{}",
        String::from_utf8_lossy(&printed.stderr)
    );
    let text = String::from_utf8_lossy(&printed.stdout);
    assert!(
        text.contains("commands waiting     3 (3 not yet delivered"),
        "{text}"
    );
    assert!(
        text.contains("learners behind      2 (commands published, not yet applied)"),
        "{text}"
    );
    assert!(
        text.contains("dead letters         1 (malformed 1)"),
        "{text}"
    );
    let probe = status(&["--fail-over", "0"]);
    assert!(!probe.status.success(), "a waiting command is over 0 s");
    assert!(String::from_utf8_lossy(&probe.stderr).contains("oldest waiting command"));
    assert!(status(&["--fail-over", "3600"]).status.success());

    // the same figures as Prometheus gauges on the API's /metrics
    let metrics = scrape_metrics(&pool, &nats).await;
    for line in [
        "progress_commands_waiting 3",
        "progress_commands_pending 3",
        "progress_unreconciled_learners 2",
        "progress_dead_letters{reason=\"malformed\"} 1",
        "progress_unannounced_changes 0",
        "progress_lag_up 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no `{line}` in:\n{metrics}"
        );
    }
    common::delete_streams(&js, &nats).await;
}

/// `/metrics` of an API started on `nats`'s streams.
async fn scrape_metrics(pool: &PgPool, nats: &NatsConfig) -> String {
    let shutdown = CancellationToken::new();
    let base = serve_api(pool, nats, ApiConfig::default(), &shutdown).await;
    let _stop = shutdown.drop_guard();
    reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// `complete-unit` and `progress` against a learner whose workflow no worker runs: each ends
/// after `--wait-secs` with a message naming the task queue nobody polls, instead of waiting
/// for ever.
#[sqlx::test]
async fn a_learner_command_with_no_worker_on_the_queue_stops_and_names_the_queue(pool: PgPool) {
    let track = create_track(&pool, "Nobody polls", 2).await.unwrap();
    let queue = format!("no-worker-{}", Uuid::new_v4().simple());
    let address = std::env::var("TEMPORAL_ADDRESS").unwrap_or_else(|_| "127.0.0.1:7233".to_owned());
    let temporal = learning_progress::workflow::TemporalConfig::new(address.clone(), &queue);
    let client = learning_progress::workflow::connect(&temporal, "test")
        .await
        .unwrap();
    let user = Uuid::new_v4();
    learning_progress::workflow::client::start_track(&client, &temporal, &pool, user, track.id)
        .await
        .unwrap();

    let (user, track_id, unit) = (
        user.to_string(),
        track.id.to_string(),
        track.units[0].id.to_string(),
    );
    for args in [&["complete-unit", "--unit", &unit][..], &["progress"][..]] {
        let started = std::time::Instant::now();
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_learning-progress"))
            .args(args)
            .args(["--user", &user, "--track", &track_id, "--wait-secs", "2"])
            .env("TEMPORAL_ADDRESS", &address)
            .env("TEMPORAL_TASK_QUEUE", &queue)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("no worker polls") && stderr.contains(&queue),
            "{args:?}: {stderr}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{args:?} took {:?}",
            started.elapsed()
        );
    }
}
