//! P1 on the cluster: how fast commands are published to, and applied from, a commands
//! stream with three replicas — measured once per fsync setting, so the cost of
//! `sync_interval: always` is a ratio from one run.

use std::time::{Duration, Instant};

use learning_progress::db::tracks;
use learning_progress::messaging::{self, NatsConfig, publish_command};
use learning_progress::model::{Action, ProgressCommand, now_micros};
use serde::Serialize;
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

use crate::procs::{Proc, wait_for};
use crate::scenario::Infra;

#[derive(Debug, Serialize)]
pub struct Throughput {
    pub fsync: crate::nats::Fsync,
    pub commands: usize,
    /// Publishes acknowledged per second, 1,000 in flight (the preload).
    pub published_per_sec: f64,
    /// Commands applied per second by one applier from the preloaded stream (P1).
    pub applied_per_sec: f64,
}

/// Ten commands per learner: started, then nine units completed in order.
pub async fn measure(infra: &Infra, learners: usize) -> anyhow::Result<Throughput> {
    let fsync = infra.cluster.fsync;
    let tag = format!("p1_{fsync}");
    let database_url = infra.fresh_database(&format!("chaos_{tag}")).await?;
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect(&database_url)
        .await?;
    let nats = NatsConfig {
        replicas: 3,
        commands_max_bytes: -1,
        events_max_bytes: -1,
        ..NatsConfig::isolated(infra.cluster.url(), &tag)
    };
    let js = async_nats::jetstream::new(messaging::connect(&nats, "chaos-p1").await?);
    messaging::ensure_streams(&js, &nats).await?;
    let track = tracks::create_track(&pool, "P1 track", 10).await?;

    let mut commands = Vec::with_capacity(learners * 10);
    for _ in 0..learners {
        let user = Uuid::new_v4();
        let units: Vec<Uuid> = track.units.iter().map(|u| u.id).collect();
        let command = |seq: i64, action: Action| ProgressCommand {
            command_id: Uuid::new_v4(),
            user_id: user,
            track_id: track.id,
            seq,
            occurred_at: now_micros(),
            action,
        };
        commands.push(command(
            1,
            Action::TrackStarted {
                current_unit_id: Some(units[0]),
            },
        ));
        for i in 0..9 {
            commands.push(command(
                i as i64 + 2,
                Action::UnitCompleted {
                    unit_id: units[i],
                    next_unit_id: Some(units[i + 1]),
                },
            ));
        }
    }
    let started = Instant::now();
    for window in commands.chunks(1000) {
        let mut acks = Vec::with_capacity(window.len());
        for command in window {
            acks.push(publish_command(&js, &nats, command).await?);
        }
        for ack in acks {
            ack.await?;
        }
    }
    let published_per_sec = commands.len() as f64 / started.elapsed().as_secs_f64();

    let env: Vec<(String, String)> = [
        ("DATABASE_URL", database_url.clone()),
        ("NATS_URL", nats.url.clone()),
        ("NATS_SUBJECT_PREFIX", nats.subject_prefix.clone()),
        ("NATS_COMMANDS_STREAM", nats.commands_stream.clone()),
        ("NATS_EVENTS_STREAM", nats.events_stream.clone()),
        ("NATS_DLQ_STREAM", nats.dlq_stream.clone()),
        ("NATS_REPLICAS", "3".to_owned()),
        ("NATS_EVENTS_MAX_BYTES", "-1".to_owned()),
        ("RUST_LOG", "warn".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let started = Instant::now();
    let mut applier = Proc::start(
        format!("p1-applier-{fsync}"),
        &infra.service_bin,
        &["consumer".to_owned()],
        &env,
        &infra.out,
    )?;
    let total = commands.len() as i64;
    wait_for(
        "the applier to apply the preloaded commands",
        Duration::from_secs(600),
        || async {
            let applied: i64 = sqlx::query_scalar("select count(*) from progress_ledger")
                .fetch_one(&pool)
                .await
                .ok()?;
            (applied >= total).then_some(())
        },
    )
    .await?;
    let applied_per_sec = commands.len() as f64 / started.elapsed().as_secs_f64();
    applier.kill9().await;
    messaging::delete_streams(&js, &nats).await;
    pool.close().await;
    Ok(Throughput {
        fsync,
        commands: commands.len(),
        published_per_sec,
        applied_per_sec,
    })
}
