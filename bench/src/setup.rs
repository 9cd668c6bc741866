//! What every group needs: a database of its own, NATS names of its own, a track, learners'
//! command paths, and progress lines on stderr.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream;
use chrono::{DateTime, TimeDelta, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions as _, Connection as _, PgPool};
use uuid::Uuid;

use learning_progress::config::DbConfig;
use learning_progress::db::tracks::{Track, TrackUnit};
use learning_progress::messaging::{self, NatsConfig};
use learning_progress::model::{Action, ProgressCommand};

/// A progress line on stderr, so stdout carries only the table.
pub fn say(line: impl std::fmt::Display) {
    eprintln!("bench: {line}");
}

/// A database created for one group and dropped by [`BenchDb::drop`].
pub struct BenchDb {
    pub pool: PgPool,
    pub url: String,
    name: String,
    server: PgConnectOptions,
}

impl BenchDb {
    pub async fn create(base: &DbConfig, max_connections: u32) -> anyhow::Result<BenchDb> {
        let server: PgConnectOptions = base.database_url.parse().context("DATABASE_URL")?;
        let server = server.database("postgres");
        let name = format!("bench_{}", Uuid::new_v4().simple());
        let mut admin = server.connect().await.context("connecting to PostgreSQL")?;
        // the name is ours: `bench_` and a uuid
        sqlx::query(&format!("create database {name}"))
            .execute(&mut admin)
            .await?;
        admin.close().await?;
        let mut url = reqwest::Url::parse(&base.database_url).context("DATABASE_URL")?;
        url.set_path(&format!("/{name}"));
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(server.clone().database(&name))
            .await?;
        learning_progress::db::MIGRATOR.run(&pool).await?;
        Ok(BenchDb {
            pool,
            url: url.to_string(),
            name,
            server,
        })
    }

    pub async fn drop(self) -> anyhow::Result<()> {
        self.pool.close().await;
        let mut admin = self.server.connect().await?;
        sqlx::query(&format!(
            "drop database if exists {} with (force)",
            self.name
        ))
        .execute(&mut admin)
        .await?;
        Ok(())
    }
}

/// A track of `units` units, in memory: each group inserts the same one into its database.
pub fn track(units: usize) -> Track {
    let id = Uuid::new_v4();
    Track {
        id,
        slug: format!("bench-{}", id.simple()),
        title: "Bench".to_owned(),
        units: (0..units)
            .map(|i| TrackUnit {
                id: Uuid::new_v4(),
                position: i as i32,
                title: format!("unit {}", i + 1),
                kind: if i % 3 == 2 { "assessment" } else { "lesson" }.to_owned(),
            })
            .collect(),
    }
}

pub async fn insert_track(pool: &PgPool, track: &Track) -> anyhow::Result<()> {
    sqlx::query("insert into learning_tracks (id, slug, title) values ($1, $2, $3)")
        .bind(track.id)
        .bind(&track.slug)
        .bind(&track.title)
        .execute(pool)
        .await?;
    for unit in &track.units {
        sqlx::query(
            "insert into track_units (id, track_id, position, title, kind) values ($1, $2, $3, $4, $5)",
        )
        .bind(unit.id)
        .bind(track.id)
        .bind(unit.position)
        .bind(&unit.title)
        .bind(&unit.kind)
        .execute(pool)
        .await?;
    }
    Ok(())
}

fn at(seq: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(1_790_000_000, 0).expect("a valid time")
        + TimeDelta::seconds(seq)
}

/// A learner's whole path: start, every unit, one assessment, completion — `units + 3` commands.
pub fn path(user: Uuid, track: &Track) -> Vec<ProgressCommand> {
    let units: Vec<Uuid> = track.units.iter().map(|u| u.id).collect();
    let mut actions = vec![Action::TrackStarted {
        current_unit_id: units.first().copied(),
    }];
    for (i, unit) in units.iter().enumerate() {
        actions.push(Action::UnitCompleted {
            unit_id: *unit,
            next_unit_id: units.get(i + 1).copied(),
        });
        if i == units.len() / 2 {
            actions.push(Action::AssessmentRecorded {
                unit_id: *unit,
                attempt_id: Uuid::new_v4(),
                score: 8.0,
                max_score: 10.0,
                passed: true,
            });
        }
    }
    actions.push(Action::TrackCompleted {});
    actions
        .into_iter()
        .enumerate()
        .map(|(i, action)| ProgressCommand {
            command_id: Uuid::new_v4(),
            user_id: user,
            track_id: track.id,
            seq: i as i64 + 1,
            occurred_at: at(i as i64 + 1),
            action,
        })
        .collect()
}

/// `learners` paths interleaved as learners progress side by side: every learner's first
/// command, then every learner's second, … — so a batch spans many learners, as in production.
pub fn commands(track: &Track, learners: usize) -> Vec<ProgressCommand> {
    let paths: Vec<Vec<ProgressCommand>> =
        (0..learners).map(|_| path(Uuid::new_v4(), track)).collect();
    let longest = paths.iter().map(Vec::len).max().unwrap_or(0);
    (0..longest)
        .flat_map(|i| paths.iter().filter_map(move |p| p.get(i).cloned()))
        .collect()
}

/// Streams and subjects unique to this run, on the server at `url`.
pub async fn isolated_nats(
    url: &str,
    name: &str,
) -> anyhow::Result<(NatsConfig, jetstream::Context)> {
    let tag = format!("b{}", &Uuid::new_v4().simple().to_string()[..12]);
    // a bench preloads far more than the small limits of test streams
    let config = NatsConfig {
        commands_max_bytes: -1,
        events_max_bytes: -1,
        dlq_max_bytes: -1,
        ..NatsConfig::isolated(url, &tag)
    };
    let client = messaging::connect(&config, name).await?;
    let js = jetstream::new(client);
    messaging::ensure_streams(&js, &config).await?;
    Ok((config, js))
}

pub use learning_progress::messaging::delete_streams;

/// A port free right now on loopback.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Polls `check` until it yields, failing after `timeout`; never a fixed sleep.
pub async fn wait_until<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Publishes `commands` asynchronously, `window` acks outstanding at most; returns the rate.
pub async fn preload(
    js: &jetstream::Context,
    nats: &NatsConfig,
    commands: &[ProgressCommand],
    window: usize,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    for chunk in commands.chunks(window) {
        let mut acks = Vec::with_capacity(chunk.len());
        for command in chunk {
            acks.push(messaging::publish_command(js, nats, command).await?);
        }
        for ack in futures::future::join_all(acks.into_iter().map(|a| a.into_future())).await {
            anyhow::ensure!(!ack?.duplicate, "a preloaded command was a duplicate");
        }
    }
    Ok(commands.len() as f64 / started.elapsed().as_secs_f64())
}
