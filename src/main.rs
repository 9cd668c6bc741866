//! The `learning-progress` binary: parses the command line and calls one entry point per
//! subcommand. Everything else lives in the library.

use clap::{Parser, Subcommand};

use learning_progress::applier::{self, ApplierConfig};
use learning_progress::config::{DbConfig, LogFormat};
use learning_progress::messaging::NatsConfig;
use learning_progress::{db, shutdown, telemetry};

/// Stores and serves every learner's progress through learning tracks.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Log output: `pretty` for people, `json` for log collectors.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t, global = true)]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the database if needed and apply pending migrations.
    Migrate {
        #[command(flatten)]
        db: DbConfig,
    },
    /// Apply progress commands from JetStream to PostgreSQL and publish progress events.
    Consumer {
        #[command(flatten)]
        db: DbConfig,
        #[command(flatten)]
        nats: NatsConfig,
        #[command(flatten)]
        applier: ApplierConfig,
    },
    /// Manage the track catalogue.
    Tracks {
        #[command(subcommand)]
        command: TracksCommand,
    },
}

#[derive(Debug, Subcommand)]
enum TracksCommand {
    /// Create a track with K units; prints its id and unit ids as JSON.
    Create {
        /// The track's title.
        #[arg(long)]
        title: String,
        /// How many units (every third is an assessment).
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=1000))]
        units: u16,
        #[command(flatten)]
        db: DbConfig,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    match cli.command {
        Command::Migrate { db } => db::migrate(&db).await,
        Command::Consumer { db, nats, applier } => {
            applier::start(&db, &nats, &applier, shutdown::on_signal()).await
        }
        Command::Tracks {
            command: TracksCommand::Create { title, units, db },
        } => {
            let pool = db::pool(&db)?;
            let track = db::tracks::create_track(&pool, &title, units.into()).await?;
            println!("{}", serde_json::to_string_pretty(&track)?);
            Ok(())
        }
    }
}
