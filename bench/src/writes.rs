//! The write path. P1: the applier draining N preloaded commands, against the raw batched
//! upsert of the same rows (the limit); P2: the same run against the seed's one transaction
//! per command. Also P1 on a server of our own with each fsync setting, and the activity's
//! publish path against plain windowed async publishes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull};
use tokio_util::sync::CancellationToken;

use crate::nats_server::NatsServer;
use crate::report::BenchResult;
use crate::setup::{self, BenchDb, say};
use crate::{BenchConfig, Scale, write_anchors};
use learning_progress::applier::{self, ApplierConfig, Seams};
use learning_progress::db::tracks::Track;
use learning_progress::model::ProgressCommand;

/// Acks outstanding at most while preloading: deep enough to keep the server busy.
const PUBLISH_WINDOW: usize = 1_000;
/// Concurrent activity executions publishing, as a busy worker runs them.
const PUBLISH_CALLERS: usize = 100;
/// Longest any single drain may take before the bench gives up.
const DRAIN_LIMIT: Duration = Duration::from_secs(600);

pub async fn run(config: &BenchConfig, scale: &Scale) -> anyhow::Result<Vec<BenchResult>> {
    let track = setup::track(7);
    let batch_size = ApplierConfig::default().batch_size;
    let commands = setup::commands(&track, scale.commands / 10);
    let learners = scale.commands / 10;

    say(format!(
        "P1 anchor: raw batched upsert of {} commands over {learners} learners",
        commands.len()
    ));
    let db = BenchDb::create(&config.db, 10).await?;
    setup::insert_track(&db.pool, &track).await?;
    let raw = write_anchors::raw(&db.pool, &commands, batch_size).await?;
    check_applied(&db, commands.len(), learners).await?;
    db.drop().await?;
    say(format!("  {raw:.0} cmd/s"));

    say(format!(
        "P1: applier draining {} preloaded commands (stack NATS)",
        commands.len()
    ));
    let ours = applier_run(config, &config.nats_url, &track, &commands).await?;
    say(format!(
        "  {:.0} cmd/s (preload {:.0} publishes/s)",
        ours.rate, ours.preload_rate
    ));

    let seed_commands = setup::commands(&track, scale.seed_commands / 10);
    say(format!(
        "P2 anchor: one transaction per command, {} commands, 10 callers",
        seed_commands.len()
    ));
    let db = BenchDb::create(&config.db, 10).await?;
    setup::insert_track(&db.pool, &track).await?;
    let seed = write_anchors::seed(&db.pool, &seed_commands, 10).await?;
    check_applied(&db, seed_commands.len(), scale.seed_commands / 10).await?;
    db.drop().await?;
    say(format!("  {seed:.0} cmd/s"));

    let mut results = vec![
        BenchResult::ratio(
            "P1",
            "applier: preloaded commands → committed, events acked, commands acked",
            (ours.rate, "cmd/s"),
            ("raw batched unnest upsert, same rows and batch size, no NATS", raw),
            0.5,
        )
        .detail(format!(
            "{} commands over {learners} learners, batch {batch_size}; ours {:.1} s; goal also >= 20000 cmd/s: {}",
            commands.len(),
            ours.elapsed.as_secs_f64(),
            if ours.rate >= 20_000.0 { "met" } else { "missed" }
        )),
        BenchResult::ratio(
            "P2",
            "the same applier run",
            (ours.rate, "cmd/s"),
            ("one transaction per command (update_user_progress), 10 callers", seed),
            10.0,
        )
        .detail(format!("anchor over {} commands", seed_commands.len())),
    ];
    results.append(&mut fsync_runs(config, scale, &track).await?);
    results.push(publish_path(config, scale, &track).await?);
    Ok(results)
}

/// P1 on servers of our own: fsync at the default interval, then on every write.
async fn fsync_runs(
    config: &BenchConfig,
    scale: &Scale,
    track: &Track,
) -> anyhow::Result<Vec<BenchResult>> {
    let mut rates = Vec::new();
    for always in [false, true] {
        let server = NatsServer::start(&config.nats_server_bin, always).await?;
        let commands = setup::commands(track, scale.fsync_commands / 10);
        say(format!(
            "P1 with fsync {}: {} commands",
            if always { "always" } else { "default" },
            commands.len()
        ));
        let run = applier_run(config, &server.url, track, &commands).await;
        server.stop().await;
        let run = run?;
        say(format!(
            "  {:.0} cmd/s (preload {:.0} publishes/s)",
            run.rate, run.preload_rate
        ));
        rates.push(run);
    }
    let (default, always) = (&rates[0], &rates[1]);
    Ok(vec![
        BenchResult::ratio(
            "P1.fsync",
            "applier with the server fsyncing every write (sync_interval: always)",
            (always.rate, "cmd/s"),
            ("same run, server's default fsync interval", default.rate),
            0.0,
        )
        .detail(format!(
            "{} commands each; preload {:.0} publishes/s with always vs {:.0} with default",
            scale.fsync_commands, always.preload_rate, default.preload_rate
        )),
    ])
}

/// The activity's publish path (publish, await the ack) with many activities at once.
async fn publish_path(
    config: &BenchConfig,
    scale: &Scale,
    track: &Track,
) -> anyhow::Result<BenchResult> {
    let (nats, js) = setup::isolated_nats(&config.nats_url, "bench-publish").await?;
    let anchor_commands = setup::commands(track, scale.publishes / 10);
    say(format!(
        "publish path: {} windowed async publishes, then the activity's path",
        anchor_commands.len()
    ));
    let anchor = setup::preload(&js, &nats, &anchor_commands, PUBLISH_WINDOW).await?;
    let commands = Arc::new(setup::commands(track, scale.publishes / 10));
    let started = Instant::now();
    let callers: Vec<_> = (0..PUBLISH_CALLERS)
        .map(|caller| {
            let (js, nats, commands) = (js.clone(), nats.clone(), commands.clone());
            tokio::spawn(async move {
                for command in commands.iter().skip(caller).step_by(PUBLISH_CALLERS) {
                    learning_progress::workflow::publish(&js, &nats, command).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for caller in callers {
        caller.await??;
    }
    let ours = commands.len() as f64 / started.elapsed().as_secs_f64();
    setup::delete_streams(&js, &nats).await;
    say(format!(
        "  activity path {ours:.0}/s, windowed {anchor:.0}/s"
    ));
    Ok(BenchResult::ratio(
        "P1.publish",
        "the activity's publish path alone (publish + await ack), 100 concurrent activities",
        (ours, "publishes/s"),
        ("async publishes in windows of 1000, same server", anchor),
        0.0,
    )
    .detail(format!(
        "{} publishes each, stack NATS (default fsync)",
        commands.len()
    )))
}

struct AppliedRun {
    rate: f64,
    preload_rate: f64,
    elapsed: Duration,
}

/// Preloads `commands`, then times the applier from its start until every command is acked.
async fn applier_run(
    config: &BenchConfig,
    nats_url: &str,
    track: &Track,
    commands: &[ProgressCommand],
) -> anyhow::Result<AppliedRun> {
    let db = BenchDb::create(&config.db, 10).await?;
    setup::insert_track(&db.pool, track).await?;
    let (nats, js) = setup::isolated_nats(nats_url, "bench-applier").await?;
    let preload_rate = setup::preload(&js, &nats, commands, PUBLISH_WINDOW).await?;
    let applier_config = ApplierConfig {
        durable: "bench-applier".to_owned(),
        ..ApplierConfig::default()
    };
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let task = tokio::spawn(applier::run(
        js.clone(),
        db.pool.clone(),
        nats.clone(),
        applier_config,
        Seams::default(),
        shutdown.clone(),
    ));
    wait_drained(&js, &nats.commands_stream, commands.len() as u64).await?;
    let elapsed = started.elapsed();
    shutdown.cancel();
    task.await??;
    let learners = commands
        .iter()
        .map(|c| c.user_id)
        .collect::<std::collections::HashSet<_>>()
        .len();
    check_applied(&db, commands.len(), learners).await?;
    let mut events = js.get_stream(&nats.events_stream).await?;
    let published = events.info().await?.state.messages;
    anyhow::ensure!(
        published == commands.len() as u64,
        "{published} events for {} commands",
        commands.len()
    );
    setup::delete_streams(&js, &nats).await;
    db.drop().await?;
    Ok(AppliedRun {
        rate: commands.len() as f64 / elapsed.as_secs_f64(),
        preload_rate,
        elapsed,
    })
}

/// Until the durable consumer has delivered all `total` and nothing is pending or unacked.
/// Polled every 50 ms: each look is a JetStream API request to the server under test.
async fn wait_drained(js: &jetstream::Context, stream: &str, total: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + DRAIN_LIMIT;
    let mut consumer = setup::wait_until(
        Duration::from_secs(30),
        "the applier's consumer",
        || async {
            js.get_consumer_from_stream::<pull::Config, _, _>("bench-applier", stream)
                .await
                .ok()
        },
    )
    .await?;
    let mut last_report = Instant::now();
    loop {
        let info = consumer.info().await?;
        if info.delivered.stream_sequence >= total
            && info.num_pending == 0
            && info.num_ack_pending == 0
        {
            return Ok(());
        }
        if last_report.elapsed() > Duration::from_secs(2) {
            last_report = Instant::now();
            say(format!(
                "  acked {}/{total}",
                info.ack_floor.stream_sequence
            ));
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the applier did not ack every command in time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn check_applied(db: &BenchDb, commands: usize, learners: usize) -> anyhow::Result<()> {
    let (ledger, rows): (i64, i64) = sqlx::query_as(
        "select (select count(*) from progress_ledger where outcome = 'applied'),
                (select count(*) from user_progress)",
    )
    .fetch_one(&db.pool)
    .await?;
    anyhow::ensure!(
        ledger == commands as i64 && rows == learners as i64,
        "expected {commands} applied commands over {learners} learners, found {ledger} over {rows}"
    );
    Ok(())
}
