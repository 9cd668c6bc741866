//! `chaos`: runs learning-progress under real faults and accounts for every acknowledged
//! command. It starts everything itself on free loopback ports — a PostgreSQL cluster, a
//! three-node JetStream cluster, the Temporal dev server, and the service as six processes —
//! drives learners through real workflows, injects faults, and ends each scenario with a
//! checker. Results: a table on stdout, `results.json` and one SVG timeline per scenario in
//! the output folder. Exit status 1 when any scenario loses, duplicates or contradicts
//! anything.

mod check;
mod faults;
mod load;
mod nats;
mod plot;
mod postgres;
mod procs;
mod reads;
mod scenario;
mod service;
mod throughput;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use nats::{Cluster, Fsync};
use postgres::Postgres;
use scenario::{Infra, Options, Outcome, Scenario};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Mode {
    /// The mixed scenario alone (every fault once, the poison mix), default fsync: a few
    /// minutes.
    Quick,
    /// Every scenario alone, then mixed, with the default fsync; then the cluster scenarios
    /// again with `sync_interval: always`.
    Full,
}

/// Runs learning-progress under real faults — kill -9 of appliers and workers, JetStream leader
/// kills and pauses, PostgreSQL restarts, lost broker messages, poison commands — and checks
/// that every acknowledged command is applied exactly once.
#[derive(Debug, Parser)]
#[command(name = "chaos", version)]
struct Cli {
    /// quick (a few minutes) or full (the published figures).
    #[arg(long, value_enum, default_value_t = Mode::Quick)]
    mode: Mode,

    /// Run only these scenarios (repeatable); overrides the mode's list.
    #[arg(long = "scenario", value_enum)]
    scenarios: Vec<Scenario>,

    /// Run only with this fsync setting of the NATS cluster.
    #[arg(long, value_enum)]
    fsync: Option<Fsync>,

    /// Seconds of load per scenario (the mixed one gets at least 90 in full mode).
    #[arg(long)]
    seconds: Option<u64>,

    /// Learners driven at the same time.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,

    /// Units in the track (every third is an assessment).
    #[arg(long, default_value_t = 6)]
    units: usize,

    /// Seed of the learners' choices and of the mixed scenario's fault order.
    #[arg(long, default_value_t = 1)]
    seed: u64,

    /// Learners (ten commands each) of the P1 measurement run on each cluster before its
    /// scenarios [default: 2000 in full mode, 0 (skipped) in quick mode].
    #[arg(long)]
    p1_learners: Option<usize>,

    /// Only redraw the timelines of an earlier run's folder (its results.json and each
    /// scenario's timeline.json), then exit.
    #[arg(long, value_name = "DIR")]
    replot: Option<PathBuf>,

    /// Where logs, results.json and the timelines go [default: target/chaos/<time>].
    #[arg(long, env = "CHAOS_OUT")]
    out: Option<PathBuf>,

    /// The service binary [default: learning-progress beside this executable].
    #[arg(long, env = "CHAOS_SERVICE_BIN")]
    service_bin: Option<PathBuf>,

    /// A nats-server with `sync_interval` (2.10 or later).
    #[arg(
        long,
        env = "CHAOS_NATS_SERVER",
        default_value = ".stack/venv/bin/nats-server"
    )]
    nats_server: PathBuf,

    /// The Temporal CLI, for its dev server.
    #[arg(
        long,
        env = "CHAOS_TEMPORAL",
        default_value = ".stack/venv/bin/temporal"
    )]
    temporal: PathBuf,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,learning_progress=warn,async_nats=warn".into()),
        )
        .with_target(false)
        .init();
    match run(Cli::parse()).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("chaos: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<bool> {
    if let Some(dir) = &cli.replot {
        replot(dir)?;
        return Ok(true);
    }
    let out = match &cli.out {
        Some(out) => out.clone(),
        None => PathBuf::from("target/chaos")
            .join(chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string()),
    };
    std::fs::create_dir_all(&out).with_context(|| format!("creating {out:?}"))?;
    let out = out.canonicalize()?;
    let service_bin = match &cli.service_bin {
        Some(bin) => bin.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("this executable has no folder")?
            .join("learning-progress"),
    };
    for (what, path) in [
        ("the service binary (cargo build)", &service_bin),
        ("nats-server (make stack installs it)", &cli.nats_server),
        ("temporal (make stack installs it)", &cli.temporal),
    ] {
        anyhow::ensure!(path.exists(), "{what} not found at {path:?}");
    }

    // (fsync, scenarios) in the order they run
    let plan: Vec<(Fsync, Vec<Scenario>)> = {
        let chosen = |all: Vec<Scenario>| {
            if cli.scenarios.is_empty() {
                all
            } else {
                cli.scenarios.clone()
            }
        };
        let runs = match cli.mode {
            Mode::Quick => vec![(Fsync::Default, chosen(vec![Scenario::Mixed]))],
            Mode::Full => vec![
                (Fsync::Default, chosen(Scenario::ALL.to_vec())),
                (
                    Fsync::Always,
                    chosen(Scenario::ALL.to_vec())
                        .into_iter()
                        .filter(|s| s.cluster_faults())
                        .collect(),
                ),
            ],
        };
        runs.into_iter()
            .filter(|(fsync, list)| cli.fsync.is_none_or(|f| f == *fsync) && !list.is_empty())
            .collect()
    };
    let default_seconds = match cli.mode {
        Mode::Quick => 60,
        Mode::Full => 60,
    };

    tracing::info!(out = %out.display(), "starting PostgreSQL and the Temporal dev server");
    let postgres = Postgres::start(&out).await?;
    let temporal = temporal::Temporal::start(&cli.temporal, &out).await?;
    let mut outcomes: Vec<Outcome> = Vec::new();
    let mut p1: Vec<throughput::Throughput> = Vec::new();
    let p1_learners = cli.p1_learners.unwrap_or(match cli.mode {
        Mode::Quick => 0,
        Mode::Full => 2000,
    });
    let mut postgres = Some(postgres);
    for (fsync, scenarios) in plan {
        tracing::info!(%fsync, "starting a 3-node NATS cluster");
        let cluster_dir = out.join(format!("nats-{fsync}"));
        std::fs::create_dir_all(&cluster_dir)?;
        let cluster = Cluster::start(&cli.nats_server, &cluster_dir, &out, fsync).await?;
        let mut infra = Infra {
            postgres: postgres.take().expect("the cluster is handed back"),
            cluster,
            temporal_address: temporal.address.clone(),
            service_bin: service_bin.clone(),
            out: out.clone(),
        };
        if p1_learners > 0 {
            let measured = throughput::measure(&infra, p1_learners).await?;
            println!(
                "P1 on 3 replicas, fsync {}: {} commands, published {:.0}/s, applied {:.0}/s",
                measured.fsync,
                measured.commands,
                measured.published_per_sec,
                measured.applied_per_sec
            );
            p1.push(measured);
            std::fs::write(out.join("p1.json"), serde_json::to_vec_pretty(&p1)?)?;
        }
        for scenario in scenarios {
            let seconds = cli.seconds.unwrap_or(match (cli.mode, scenario) {
                (Mode::Full, Scenario::Mixed) => 120,
                _ => default_seconds,
            });
            let options = Options {
                seconds,
                concurrency: cli.concurrency,
                seed: cli.seed,
                units: cli.units,
            };
            let outcome = scenario::run(&mut infra, scenario, &options)
                .await
                .with_context(|| format!("scenario {}", scenario.name()))?;
            println!("{}", report::line(&outcome));
            outcomes.push(outcome);
            std::fs::write(
                out.join("results.json"),
                serde_json::to_vec_pretty(&outcomes)?,
            )?;
        }
        postgres = Some(infra.postgres);
    }
    println!("\n{}", report::table(&outcomes));
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| !o.ok()).collect();
    for outcome in &failed {
        eprintln!(
            "chaos: {} (fsync {}) broke a promise:",
            outcome.scenario.name(),
            outcome.fsync
        );
        for line in outcome
            .findings
            .unexpected
            .iter()
            .chain(&outcome.reads.backwards)
            .take(30)
        {
            eprintln!("  {line}");
        }
    }
    println!("results: {}", out.join("results.json").display());
    Ok(failed.is_empty())
}

mod temporal;

/// Redraws every scenario's SVG from what an earlier run wrote.
fn replot(dir: &std::path::Path) -> anyhow::Result<()> {
    #[derive(serde::Deserialize)]
    struct Row {
        scenario: String,
        fsync: String,
        faults: Vec<faults::Window>,
        findings: Counts,
    }
    #[derive(serde::Deserialize)]
    struct Counts {
        acknowledged: usize,
        lost: usize,
        duplicated: usize,
    }
    let rows: Vec<Row> = serde_json::from_slice(&std::fs::read(dir.join("results.json"))?)
        .context("reading results.json")?;
    for row in rows {
        let fsync = row.fsync.to_lowercase();
        let tag = format!("{}-{fsync}", row.scenario);
        let seconds: Vec<plot::Second> =
            serde_json::from_slice(&std::fs::read(dir.join(&tag).join("timeline.json"))?)?;
        let title = scenario::title(
            &row.scenario,
            &fsync,
            row.faults.len(),
            row.findings.acknowledged,
            row.findings.lost,
            row.findings.duplicated,
        );
        let file = dir.join(format!("{tag}.svg"));
        std::fs::write(&file, plot::timeline(&title, &seconds, &row.faults))?;
        tracing::info!(file = %file.display(), "timeline redrawn");
    }
    Ok(())
}

mod report {
    //! The table RELIABILITY.md holds.

    use crate::scenario::Outcome;

    pub fn line(o: &Outcome) -> String {
        format!(
            "{} (fsync {}): {} faults, {:.0} commands/s, {} acknowledged, {} applied, {} lost, \
             {} duplicated, dead letters {:?}, {} unexpected, {} backwards reads, {} late API reads, \
             {} unannounced at the drain, drained {:.1} s",
            o.scenario.name(),
            o.fsync,
            o.faults.len(),
            o.rate,
            o.findings.acknowledged,
            o.findings.applied,
            o.findings.lost,
            o.findings.duplicated,
            o.findings.dead_letters,
            o.findings.unexpected.len(),
            o.reads.backwards.len(),
            o.findings.api_late,
            o.findings.unannounced_at_drain,
            o.drain_seconds
        )
    }

    pub fn table(outcomes: &[Outcome]) -> String {
        let mut out = String::from(
            "| scenario | fsync | commands/s | faults | acknowledged | applied | lost | duplicated | broker lost, restored | dead letters (refused at publish) | orphans | unexpected | reads (backwards) | drain s | worst latency |\n\
             |---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|\n",
        );
        for o in outcomes {
            let dead: Vec<String> = o
                .findings
                .dead_letters
                .iter()
                .map(|(reason, n)| format!("{reason} {n}"))
                .collect();
            out.push_str(&format!(
                "| {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} ({}) | {} | {} | {} ({}) | {:.1} | {:.1} s |\n",
                o.scenario.name(),
                o.fsync,
                o.rate,
                o.faults.len(),
                o.findings.acknowledged,
                o.findings.applied,
                o.findings.lost,
                o.findings.duplicated,
                o.purged,
                if dead.is_empty() { "—".to_owned() } else { dead.join(", ") },
                o.refused_at_publish,
                o.findings.broker_orphans,
                o.findings.unexpected.len(),
                o.reads.reads,
                o.reads.backwards.len(),
                o.drain_seconds,
                o.worst_latency_ms / 1000.0,
            ));
        }
        out
    }
}
