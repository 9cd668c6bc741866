//! One scenario: a fresh database, streams and task queue on the shared cluster; the six
//! service processes; the load, the faults and the read monitor at once; then the checker.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use learning_progress::auth::{AuthConfig, mint_dev_token};
use learning_progress::db::tracks;
use learning_progress::messaging::{self, NatsConfig};
use learning_progress::workflow::{self, TemporalConfig};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::Serialize;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::sync::{Mutex, watch};
use uuid::Uuid;

use crate::check::{Checker, Findings};
use crate::faults::{Fault, Window, World};
use crate::load::{Live, Load, Poison, PoisonPublisher, PoisonSent};
use crate::nats::{Cluster, Fsync};
use crate::plot::{self, Second};
use crate::postgres::{Postgres, Shutdown};
use crate::reads::{self, ReadStats};
use crate::service::{Deployment, JWT_SECRET};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// No faults: the reference rate.
    Baseline,
    /// kill -9 of an applier every few seconds, half of them right after a commit.
    ApplierKills,
    /// kill -9 of a Temporal worker mid-workflow.
    WorkerKills,
    /// The commands stream's leader killed, a follower killed, the leader paused.
    NatsLeader,
    /// PostgreSQL restarts (fast, immediate) and terminated connections.
    Postgres,
    /// Stored commands deleted from the stream before they are applied.
    BrokerLoss,
    /// 1% malformed, unknown-type, foreign-unit, wrong-subject and oversized commands.
    Poison,
    /// An API replica's NATS node killed while it serves.
    ApiNats,
    /// Every fault above, in a shuffled order, with the poison mix.
    Mixed,
}

impl Scenario {
    pub const ALL: [Scenario; 9] = [
        Scenario::Baseline,
        Scenario::ApplierKills,
        Scenario::WorkerKills,
        Scenario::NatsLeader,
        Scenario::Postgres,
        Scenario::BrokerLoss,
        Scenario::Poison,
        Scenario::ApiNats,
        Scenario::Mixed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Baseline => "baseline",
            Scenario::ApplierKills => "applier-kills",
            Scenario::WorkerKills => "worker-kills",
            Scenario::NatsLeader => "nats-leader",
            Scenario::Postgres => "postgres",
            Scenario::BrokerLoss => "broker-loss",
            Scenario::Poison => "poison",
            Scenario::ApiNats => "api-nats",
            Scenario::Mixed => "mixed",
        }
    }

    /// Whether the NATS cluster's fsync setting matters to it.
    pub fn cluster_faults(self) -> bool {
        matches!(
            self,
            Scenario::Baseline | Scenario::NatsLeader | Scenario::Mixed
        )
    }

    /// The faults in the order they are injected (cycled), and the pause between two.
    fn schedule(self, seed: u64) -> (Vec<Fault>, Duration) {
        let s = Duration::from_secs;
        match self {
            Scenario::Baseline | Scenario::Poison => (vec![], s(1)),
            Scenario::ApplierKills => (
                vec![
                    Fault::KillApplier { aimed: true },
                    Fault::KillApplier { aimed: false },
                ],
                s(3),
            ),
            Scenario::WorkerKills => (vec![Fault::KillWorker], s(3)),
            Scenario::NatsLeader => (
                vec![
                    Fault::KillNatsLeader,
                    Fault::KillNatsFollower,
                    Fault::PauseNatsLeader,
                ],
                s(4),
            ),
            Scenario::Postgres => (
                vec![
                    Fault::RestartPostgres(Shutdown::Fast),
                    Fault::TerminateBackends,
                    Fault::RestartPostgres(Shutdown::Immediate),
                ],
                s(4),
            ),
            Scenario::BrokerLoss => (vec![Fault::BrokerLoss], s(4)),
            Scenario::ApiNats => (vec![Fault::DropApiNats], s(5)),
            Scenario::Mixed => {
                let mut all = Fault::ALL.to_vec();
                all.shuffle(&mut StdRng::seed_from_u64(seed));
                (all, s(2))
            }
        }
    }

    fn poison(self) -> bool {
        matches!(self, Scenario::Poison | Scenario::Mixed)
    }
}

/// What the harness keeps running across scenarios.
pub struct Infra {
    pub postgres: Postgres,
    pub cluster: Cluster,
    pub temporal_address: String,
    pub service_bin: std::path::PathBuf,
    pub out: std::path::PathBuf,
}

impl Infra {
    /// A new, migrated database (dropped first if an earlier run left it); its URL.
    pub async fn fresh_database(&self, name: &str) -> anyhow::Result<String> {
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .connect(&self.postgres.url("postgres"))
            .await?;
        sqlx::query(&format!("drop database if exists {name} with (force)"))
            .execute(&admin)
            .await?;
        sqlx::query(&format!("create database {name}"))
            .execute(&admin)
            .await?;
        admin.close().await;
        let url = self.postgres.url(name);
        crate::procs::run(
            path(&self.service_bin)?,
            &["migrate", "--database-url", &url],
        )?;
        Ok(url)
    }
}

pub struct Options {
    pub seconds: u64,
    pub concurrency: usize,
    pub seed: u64,
    /// Units in the track each learner goes through.
    pub units: usize,
}

#[derive(Debug, Serialize)]
pub struct Outcome {
    pub scenario: Scenario,
    pub fsync: Fsync,
    pub load_seconds: f64,
    /// Commands applied per second while the load ran.
    pub rate: f64,
    pub faults: Vec<Window>,
    pub findings: Findings,
    pub reads: ReadStats,
    /// Acknowledged commands the broker lost on purpose (broker-loss), restored by reconcile.
    pub purged: u64,
    /// Oversized poison commands the commands stream refused at publish, as it must.
    pub refused_at_publish: usize,
    /// Service processes that exited by themselves (and were restarted).
    pub self_exits: Vec<String>,
    /// From the end of the load or the last fault, whichever is later, to the last command
    /// applied.
    pub drain_seconds: f64,
    pub worst_latency_ms: f64,
    pub timeline: String,
    pub logs: String,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.findings.ok() && self.reads.backwards.is_empty()
    }
}

pub async fn run(
    infra: &mut Infra,
    scenario: Scenario,
    options: &Options,
) -> anyhow::Result<Outcome> {
    let tag = format!("{}-{}", scenario.name(), infra.cluster.fsync);
    let logs = infra.out.join(&tag);
    std::fs::create_dir_all(&logs)?;
    tracing::info!(scenario = scenario.name(), fsync = %infra.cluster.fsync, logs = %logs.display(), "scenario starting");

    // a database, streams and a task queue of its own
    let database_url = infra
        .fresh_database(&format!("chaos_{}", tag.replace('-', "_")))
        .await?;
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(30))
        .connect_with(
            database_url
                .parse::<PgConnectOptions>()?
                .application_name("chaos"),
        )
        .await?;
    let nats = NatsConfig {
        replicas: 3,
        commands_max_bytes: -1,
        ..NatsConfig::isolated(infra.cluster.url(), &tag.replace('-', "_"))
    };
    let client = messaging::connect(&nats, "chaos").await?;
    let js = async_nats::jetstream::new(client);
    messaging::ensure_streams(&js, &nats).await?;
    let temporal = TemporalConfig::new(infra.temporal_address.clone(), format!("chaos-{tag}"));
    let deployment = Deployment {
        binary: infra.service_bin.clone(),
        database_url: database_url.clone(),
        nats: nats.clone(),
        temporal: temporal.clone(),
        api_nats_urls: [infra.cluster.node_url(0), infra.cluster.node_url(1)],
    };
    let mut service = deployment.start(&logs).await?;
    let track = tracks::create_track(&pool, "Chaos track", options.units).await?;
    let token = mint_dev_token(
        &AuthConfig::with_secret(JWT_SECRET),
        Uuid::new_v4(),
        true,
        Duration::from_secs(24 * 3600),
    )?;
    let load = Load {
        temporal: workflow::connect(&temporal, "chaos").await?,
        temporal_config: temporal.clone(),
        track: track.clone(),
        concurrency: options.concurrency,
        seed: options.seed,
    };

    let started_wall = Utc::now();
    let started = Instant::now();
    let load_window = Duration::from_secs(options.seconds);
    let until = started + load_window;
    let live = Live::default();
    let (stop_tx, stop_rx) = watch::channel(false);
    let monitor = tokio::spawn(reads::monitor(
        service.api_urls.clone(),
        token.clone(),
        track.id,
        live.clone(),
        stop_rx,
    ));

    // poison: about one per hundred commands (a learner publishes about ten)
    let learners_started = Arc::new(AtomicUsize::new(0));
    let poison = Arc::new(Mutex::new(PoisonPublisher {
        js: js.clone(),
        nats: nats.clone(),
        track_id: track.id,
        sent: PoisonSent::default(),
    }));
    let poisoner = {
        let started_count = learners_started.clone();
        let poison = poison.clone();
        let mut stop = stop_tx.subscribe();
        let enabled = scenario.poison();
        tokio::spawn(async move {
            let mut sent = 0;
            if !enabled {
                return;
            }
            loop {
                let due = started_count.load(Ordering::Relaxed) / 10;
                while sent < due {
                    let kind = Poison::ALL[sent % Poison::ALL.len()];
                    poison.lock().await.publish(kind).await;
                    sent += 1;
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    _ = stop.changed() => break,
                }
            }
        })
    };

    let (schedule, gap) = scenario.schedule(options.seed);
    let mut world = World {
        cluster: &mut infra.cluster,
        postgres: &infra.postgres,
        service: &mut service,
        pool: pool.clone(),
        js: js.clone(),
        nats: nats.clone(),
        live: live.clone(),
        started,
        kills: 0,
        self_exits: Vec::new(),
        purged: 0,
    };
    // the load runs for the window, and in the mixed scenario until every fault has struck
    let launching = AtomicBool::new(true);
    let mut load_end = options.seconds as f64;
    let faults = async {
        let mut windows = Vec::new();
        let mut next = 0;
        if !schedule.is_empty() {
            tokio::time::sleep(gap).await;
        }
        while !schedule.is_empty()
            && (Instant::now() < until || (scenario == Scenario::Mixed && next < schedule.len()))
        {
            let fault = schedule[next % schedule.len()];
            next += 1;
            let window = world.inject(fault).await;
            let window = match window {
                Ok(window) => window,
                Err(e) => {
                    launching.store(false, Ordering::Relaxed);
                    return Err(e);
                }
            };
            tracing::info!(fault = %window.label, detail = %window.detail, at = format!("{:.1}s", window.start), "fault injected");
            windows.push(window);
            tokio::time::sleep(gap).await;
        }
        tokio::time::sleep_until(until.into()).await;
        load_end = started.elapsed().as_secs_f64();
        launching.store(false, Ordering::Relaxed);
        Ok::<_, anyhow::Error>(windows)
    };
    let drain = Duration::from_secs(300);
    let counter = learners_started.clone();
    let driving = load.run(&launching, drain, &live, move |n| {
        counter.store(n, Ordering::Relaxed);
    });
    let (windows, (runs, unfinished)) = tokio::join!(faults, driving);
    let windows = windows?;
    let purged = world.purged;
    let self_exits = world.self_exits.clone();
    drop(world);
    let _ = stop_tx.send(true);
    poisoner.await?;
    let reads = monitor.await?;
    let poison = std::mem::take(&mut poison.lock().await.sent);
    let refused_at_publish = poison.refused_at_publish;

    let findings = Checker {
        pool: &pool,
        js: &js,
        nats: &nats,
        track: &track,
        api_urls: &service.api_urls,
        token: &token,
    }
    .check(&runs, unfinished, &poison)
    .await?;

    let seconds: Vec<Second> = sqlx::query_as(
        "select floor(extract(epoch from (applied_at - $2)))::bigint as second,
                count(*) as applied,
                (percentile_cont(0.5) within group
                    (order by extract(epoch from (applied_at - occurred_at)) * 1000))::float8 as p50_ms,
                (max(extract(epoch from (applied_at - occurred_at))) * 1000)::float8 as max_ms
         from progress_ledger where track_id = $1 group by 1 order by 1",
    )
    .bind(track.id)
    .bind(started_wall)
    .fetch_all(&pool)
    .await?;
    let during_load: i64 = seconds
        .iter()
        .filter(|s| (s.second as f64) < load_end)
        .map(|s| s.applied)
        .sum();
    let last_applied = seconds.last().map_or(0.0, |s| s.second as f64 + 1.0);
    let quiet_from = windows.iter().map(|w| w.end).fold(load_end, f64::max);
    let title = title(
        scenario.name(),
        &infra.cluster.fsync.to_string(),
        windows.len(),
        findings.acknowledged,
        findings.lost,
        findings.duplicated,
    );
    let svg = plot::timeline(&title, &seconds, &windows);
    let timeline = infra.out.join(format!("{tag}.svg"));
    std::fs::write(&timeline, svg)?;
    std::fs::write(
        logs.join("timeline.json"),
        serde_json::to_vec_pretty(&seconds)?,
    )?;

    // the scenario's streams go (unless it failed: they are the evidence); the cluster stays
    // for the next one
    drop(service);
    if findings.ok() {
        messaging::delete_streams(&js, &nats).await;
    } else {
        tracing::warn!(stream = %nats.commands_stream, "scenario failed; its streams are kept");
    }
    pool.close().await;

    Ok(Outcome {
        scenario,
        fsync: infra.cluster.fsync,
        load_seconds: load_end,
        rate: during_load as f64 / load_end.max(1.0),
        faults: windows,
        findings,
        reads,
        purged,
        refused_at_publish,
        self_exits,
        drain_seconds: (last_applied - quiet_from).max(0.0),
        worst_latency_ms: seconds.iter().map(|s| s.max_ms).fold(0.0, f64::max),
        timeline: timeline.display().to_string(),
        logs: logs.display().to_string(),
    })
}

/// A timeline's heading.
pub fn title(
    scenario: &str,
    fsync: &str,
    faults: usize,
    acknowledged: usize,
    lost: usize,
    duplicated: usize,
) -> String {
    format!(
        "{scenario} — fsync {fsync} — {faults} faults, {acknowledged} commands acknowledged, \
         {lost} lost, {duplicated} duplicated"
    )
}

fn path(p: &Path) -> anyhow::Result<&str> {
    p.to_str()
        .ok_or_else(|| anyhow::anyhow!("{p:?} is not UTF-8"))
}
