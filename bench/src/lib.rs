//! The benchmark harness (`learning-progress-bench`, `make bench`): side-by-side benchmarks of writes, reads, freshness and
//! Temporal. Every figure is measured next to its anchor in the same run and reported as a
//! ratio, because on a small shared machine only ratios are comparable between runs.
//!
//! Each group creates its own database (dropped at the end) and its own NATS names, runs
//! fault-free and bounded in time and count, and reports progress on stderr.
//!
//! - [`writes`]: P1 (applier vs raw batched upsert), P2 (vs one transaction per command),
//!   P1 under the NATS server's two fsync settings, and the activity's publish path.
//! - [`reads`]: P3 (cached reads vs a static route, and vs no cache), P5 (cold key), P7 (RSS).
//! - [`freshness`]: P4, publish → new version served by a second replica.
//! - [`temporal`]: P6, workflows/s with the real activities vs no-op ones.
//! - [`report`]: the table and `bench/results/latest.json`.

mod api_process;
mod freshness;
mod load;
mod nats_server;
mod reads;
mod report;
mod setup;
mod temporal;
mod write_anchors;
mod writes;

pub use report::{BenchResult, Report};
pub use temporal::NoopActivities;

use std::path::PathBuf;
use std::time::Duration;

use learning_progress::config::DbConfig;
use learning_progress::workflow::TemporalConfig;

#[derive(Debug, Clone, clap::Args)]
pub struct BenchConfig {
    /// How big: `full` for the published table, `small` for a quick look, `tiny` for smoke.
    #[arg(long, env = "BENCH_SCALE", value_enum, default_value_t = ScaleName::Full)]
    pub scale: ScaleName,

    /// Run only these groups (comma separated): writes, reads, freshness, temporal.
    #[arg(long, env = "BENCH_ONLY", value_delimiter = ',')]
    pub only: Vec<String>,

    /// Where the JSON results go.
    #[arg(long, env = "BENCH_OUT", default_value = "bench/results/latest.json")]
    pub out: PathBuf,

    /// The `learning-progress` binary to run API replicas from; the one beside this binary
    /// when unset.
    #[arg(long, env = "BENCH_API_BIN")]
    pub api_bin: Option<PathBuf>,

    /// A nats-server binary, for the runs that need a server of their own (fsync settings).
    #[arg(long, env = "NATS_SERVER_BIN", default_value = "nats-server")]
    pub nats_server_bin: PathBuf,

    /// HTTP load generator; a built-in closed loop is used when it is not installed.
    #[arg(long, env = "BENCH_WRK", default_value = "wrk")]
    pub wrk: PathBuf,

    /// NATS server of the local stack.
    #[arg(
        long = "nats-url",
        env = "NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats_url: String,

    #[command(flatten)]
    pub db: DbConfig,

    #[command(flatten)]
    pub temporal: TemporalConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ScaleName {
    Tiny,
    Small,
    Full,
}

/// Counts and durations of one scale.
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    /// P1: commands preloaded; learners are a tenth of it (10 commands each).
    pub commands: usize,
    /// P2: commands through the one-transaction-per-command anchor.
    pub seed_commands: usize,
    /// P1 under each fsync setting of a server of our own.
    pub fsync_commands: usize,
    /// The activity's publish path and its anchor.
    pub publishes: usize,
    /// Each wrk run.
    pub http: Duration,
    /// P4 commands.
    pub fresh_commands: usize,
    /// P6 workflows per side.
    pub workflows: usize,
    /// P7 cached snapshots.
    pub snapshots: usize,
}

impl ScaleName {
    pub fn scale(self) -> Scale {
        match self {
            ScaleName::Tiny => Scale {
                commands: 500,
                seed_commands: 200,
                fsync_commands: 300,
                publishes: 500,
                http: Duration::from_secs(1),
                fresh_commands: 20,
                workflows: 3,
                snapshots: 1_000,
            },
            ScaleName::Small => Scale {
                commands: 20_000,
                seed_commands: 3_000,
                fsync_commands: 10_000,
                publishes: 10_000,
                http: Duration::from_secs(5),
                fresh_commands: 200,
                workflows: 50,
                snapshots: 100_000,
            },
            ScaleName::Full => Scale {
                commands: 100_000,
                seed_commands: 5_000,
                fsync_commands: 50_000,
                publishes: 50_000,
                http: Duration::from_secs(10),
                fresh_commands: 500,
                workflows: 200,
                snapshots: 100_000,
            },
        }
    }
}

pub const GROUPS: [&str; 4] = ["writes", "reads", "freshness", "temporal"];

/// Runs the selected groups and returns every result; the caller prints and saves them.
/// Not `Send`: the Temporal group drives its workers on this task.
pub async fn run_benches(config: &BenchConfig) -> anyhow::Result<Vec<BenchResult>> {
    let scale = config.scale.scale();
    let wanted = |group: &str| config.only.is_empty() || config.only.iter().any(|g| g == group);
    let mut results = Vec::new();
    for group in GROUPS.into_iter().filter(|g| wanted(g)) {
        setup::say(format!("── {group} ──"));
        let mut found = match group {
            "writes" => writes::run(config, &scale).await?,
            "reads" => reads::run(config, &scale).await?,
            "freshness" => freshness::run(config, &scale).await?,
            _ => temporal::run(config, &scale).await?,
        };
        results.append(&mut found);
    }
    Ok(results)
}

/// Runs, prints the table, writes the JSON.
pub async fn run(config: BenchConfig) -> anyhow::Result<()> {
    let results = run_benches(&config).await?;
    let report = Report::new(&config, results);
    println!("{}", report.table());
    report.save(&config.out)?;
    setup::say(format!("wrote {}", config.out.display()));
    Ok(())
}
