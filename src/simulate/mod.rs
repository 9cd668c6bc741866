//! `simulate`: drives N learners through real `LearningPathWorkflow`s (units, assessments with
//! several attempts, duplicate signals), waits until every workflow ended and the projection
//! caught up, then checks every row and ledger against an in-memory model of the same commands.

mod check;
mod script;

use std::time::{Duration, Instant};

use futures::StreamExt;
use rand::SeedableRng;
use rand::rngs::StdRng;
use sqlx::PgPool;
use temporalio_client::Client;
use uuid::Uuid;

use crate::db::tracks::{self, Track};
use crate::meter::Meter;
use crate::workflow::{LearningPathInput, TemporalConfig, client};
pub use check::learner as check_learner;
pub use script::{Step, expected_actions, plan};

#[derive(Debug, Clone, clap::Args)]
pub struct SimulateConfig {
    /// How many learners to drive.
    #[arg(long, default_value_t = 20)]
    pub learners: usize,
    /// Units in the simulated track (every third is an assessment).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=200))]
    pub units: u16,
    /// Learners driven at the same time.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Seed of the learners' choices, to replay a run.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Longest wait for the workflows to end and the projection to catch up.
    #[arg(long, default_value_t = 300)]
    pub timeout_secs: u64,
}

#[derive(Debug)]
pub struct Report {
    pub track_id: Uuid,
    pub learners: usize,
    pub commands: usize,
    pub elapsed: Duration,
    pub mismatches: Vec<String>,
}

impl Report {
    pub(crate) fn commands_per_second(&self) -> f64 {
        self.commands as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "track        {}", self.track_id)?;
        writeln!(f, "learners     {}", self.learners)?;
        writeln!(f, "commands     {}", self.commands)?;
        writeln!(f, "elapsed      {:.2} s", self.elapsed.as_secs_f64())?;
        writeln!(f, "commands/s   {:.0}", self.commands_per_second())?;
        write!(f, "mismatches   {}", self.mismatches.len())?;
        for mismatch in self.mismatches.iter().take(20) {
            write!(f, "\n  {mismatch}")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("workflow: {0}")]
    Workflow(#[from] client::ClientError),
    #[error("the projection did not catch up within {0:?}: {1} of {2} commands applied")]
    Timeout(Duration, i64, usize),
}

/// Runs the simulation; a worker and an applier must be running against the same stack.
pub async fn run(
    temporal: &Client,
    temporal_config: &TemporalConfig,
    pool: &PgPool,
    config: &SimulateConfig,
) -> Result<Report, SimulateError> {
    let track = tracks::create_track(pool, "Simulated track", config.units.into()).await?;
    let mut rng = StdRng::seed_from_u64(config.seed);
    let learners: Vec<(Uuid, Vec<Step>)> = (0..config.learners)
        .map(|_| (Uuid::new_v4(), plan(&track, &mut rng)))
        .collect();
    let commands: usize = learners
        .iter()
        .map(|(_, steps)| expected_actions(&track, steps).len())
        .sum();
    tracing::info!(learners = config.learners, units = config.units, commands, track.id = %track.id, "simulating");

    let started = Instant::now();
    let mut paths = Meter::new("simulate: paths", "learners", Some(learners.len() as u64));
    let mut driven = futures::stream::iter(&learners)
        .map(|(user, steps)| drive(temporal, temporal_config, &track, *user, steps))
        .buffer_unordered(config.concurrency.max(1));
    let mut done = 0;
    while let Some(path) = driven.next().await {
        path?;
        done += 1;
        paths.update(done);
    }
    paths.finish(done);
    let timeout = Duration::from_secs(config.timeout_secs);
    wait_for_projection(pool, track.id, commands, timeout, started).await?;
    let elapsed = started.elapsed();

    let mut mismatches = Vec::new();
    for (user, steps) in &learners {
        mismatches.extend(check::learner(pool, &track, *user, steps).await?);
    }
    Ok(Report {
        track_id: track.id,
        learners: learners.len(),
        commands,
        elapsed,
        mismatches,
    })
}

/// The `simulate` subcommand: connects, runs, prints the report; fails on any mismatch.
pub async fn start(
    db: &crate::config::DbConfig,
    temporal: &TemporalConfig,
    config: &SimulateConfig,
) -> anyhow::Result<()> {
    let pool = crate::db::connect(db).await?;
    let client = crate::workflow::connect(temporal, "simulate").await?;
    let report = run(&client, temporal, &pool, config).await?;
    println!("{report}");
    anyhow::ensure!(
        report.mismatches.is_empty(),
        "{} mismatches",
        report.mismatches.len()
    );
    Ok(())
}

/// One learner: start, send every signal in order, wait for the workflow to end.
async fn drive(
    temporal: &Client,
    config: &TemporalConfig,
    track: &Track,
    user: Uuid,
    steps: &[Step],
) -> Result<(), SimulateError> {
    let units = track.units.iter().map(|u| u.id).collect();
    let input = LearningPathInput {
        reconcile_interval_ms: 500,
        ..LearningPathInput::new(user, track.id, units)
    };
    client::start(temporal, config, input).await?;
    for step in steps {
        let step = match step {
            Step::Repeat(step) => step,
            step => step,
        };
        match step {
            Step::Complete(unit) => {
                client::signal_unit_completed(temporal, user, track.id, *unit).await?
            }
            Step::Assess(a) => {
                client::signal_assessment_recorded(temporal, user, track.id, a.clone()).await?
            }
            Step::Repeat(_) => unreachable!("repeats are one level deep"),
        }
    }
    client::result(temporal, user, track.id).await?;
    Ok(())
}

async fn wait_for_projection(
    pool: &PgPool,
    track_id: Uuid,
    commands: usize,
    timeout: Duration,
    started: Instant,
) -> Result<(), SimulateError> {
    let mut applied_meter = Meter::new("simulate: applied", "commands", Some(commands as u64));
    loop {
        let applied: i64 =
            sqlx::query_scalar("select count(*) from progress_ledger where track_id = $1")
                .bind(track_id)
                .fetch_one(pool)
                .await?;
        applied_meter.update(applied.max(0) as u64);
        if applied as usize >= commands {
            applied_meter.finish(applied as u64);
            return Ok(());
        }
        if started.elapsed() > timeout {
            return Err(SimulateError::Timeout(timeout, applied, commands));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
