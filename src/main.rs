//! The `learning-progress` binary: parses the command line and calls one entry point per
//! subcommand. Everything else lives in the library.

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use learning_progress::all::{self, AllConfig};
use learning_progress::api::{self, ApiConfig};
use learning_progress::applier::{self, ApplierConfig};
use learning_progress::auth::{self, AuthConfig};
use learning_progress::config::{DbConfig, LogFormat};
use learning_progress::messaging::NatsConfig;
use learning_progress::ops::{
    dlq_command, erase_command, export_command, rebuild_command, status_command,
};
use learning_progress::simulate::{self, SimulateConfig};
use learning_progress::workflow::{self, TemporalConfig, cli::Attempt, cli::Learner};
use learning_progress::xapi::{self, XapiConfig};
use learning_progress::{db, schemas, shutdown, telemetry, track_changes};

/// jemalloc rather than the system allocator: with glibc, an API replica that cached 100,000
/// snapshots held ~90 MiB more than the snapshots themselves, freed but fragmented.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
    /// Run the worker, the applier and the API in one process (migrates first).
    All(AllConfig),
    /// Drive N learners through real workflows, then check every row against a model.
    Simulate {
        #[command(flatten)]
        db: DbConfig,
        #[command(flatten)]
        temporal: TemporalConfig,
        #[command(flatten)]
        simulate: SimulateConfig,
    },
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
    /// Run the Temporal worker: the learning-path workflows and their activities.
    Worker {
        #[command(flatten)]
        db: DbConfig,
        #[command(flatten)]
        nats: NatsConfig,
        #[command(flatten)]
        temporal: TemporalConfig,
    },
    /// Start a learner's workflow on a track (does nothing if it already runs).
    StartTrack {
        #[command(flatten)]
        learner: Learner,
        #[command(flatten)]
        db: DbConfig,
    },
    /// Complete a unit for a learner; refused if it is not in the track or already done.
    CompleteUnit {
        #[command(flatten)]
        learner: Learner,
        /// The unit completed.
        #[arg(long)]
        unit: uuid::Uuid,
    },
    /// Record an assessment attempt for a learner.
    RecordAssessment {
        #[command(flatten)]
        learner: Learner,
        #[command(flatten)]
        attempt: Attempt,
    },
    /// Print the learner's workflow view of their progress.
    Progress {
        #[command(flatten)]
        learner: Learner,
    },
    /// Serve learners' progress over HTTP from a cache kept fresh by progress events.
    Api {
        #[command(flatten)]
        db: DbConfig,
        #[command(flatten)]
        nats: NatsConfig,
        #[command(flatten)]
        api: ApiConfig,
        #[command(flatten)]
        auth: AuthConfig,
    },
    /// Mint a development access token (signed with the public development secret, which
    /// only a service in development mode accepts) and print it.
    Token {
        /// The user (`sub`) the token is for.
        #[arg(long)]
        user: uuid::Uuid,
        /// Make it a service-role token, which may read anyone's progress.
        #[arg(long)]
        admin: bool,
        /// How long it is valid: `90s`, `15m`, `1h`, `7d`.
        #[arg(long, default_value = "1h", value_parser = auth::parse_ttl)]
        ttl: std::time::Duration,
        #[command(flatten)]
        auth: AuthConfig,
    },
    /// Manage the track catalogue.
    Tracks {
        #[command(subcommand)]
        command: TracksCommand,
    },
    /// The write path's lag: commands waiting and for how long, dead letters by reason,
    /// unannounced changes.
    Status {
        #[command(flatten)]
        db: DbConfig,
        #[command(flatten)]
        nats: NatsConfig,
        #[command(flatten)]
        status: status_command::StatusConfig,
    },
    /// Write the JSON Schemas of the command and event payloads (the agents' contract), or
    /// check that the files there are what the model types generate.
    Schemas {
        /// The directory to write them into (created if missing).
        #[arg(long, default_value = schemas::DEFAULT_DIR)]
        out: std::path::PathBuf,
        /// Write nothing; exit 1 if a file there is missing or differs.
        #[arg(long)]
        check: bool,
    },
    /// Check every progress row against the merge of its learner's ledger; exit 1 on any
    /// difference. Reads only; safe while the service runs.
    Verify {
        #[command(flatten)]
        scope: rebuild_command::ScopeArgs,
        #[command(flatten)]
        db: DbConfig,
    },
    /// Rewrite the progress rows that differ from the merge of their ledger (or are missing),
    /// in batches, under the applier's per-learner locks, while the service runs; each
    /// rewritten row is announced with a `rebuilt` event.
    Rebuild {
        #[command(flatten)]
        scope: rebuild_command::ScopeArgs,
        /// Print what would be rewritten, change nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        db: DbConfig,
        #[command(flatten)]
        nats: NatsConfig,
    },
    /// Write a track's progress rows as NDJSON or CSV to stdout, for reporting tools; says
    /// on stderr which `--since` the next incremental export should use.
    Export {
        #[command(flatten)]
        export: export_command::ExportArgs,
        #[command(flatten)]
        db: DbConfig,
    },
    /// Erase a learner (GDPR): terminate their workflows, remove their progress, ledger,
    /// commands, events and dead letters, and leave a tombstone that refuses their later
    /// commands until they start again; prints what it removed.
    Erase {
        #[command(flatten)]
        db: DbConfig,
        #[command(flatten)]
        nats: NatsConfig,
        #[command(flatten)]
        temporal: TemporalConfig,
        #[command(flatten)]
        erase: erase_command::EraseConfig,
    },
    /// Post every applied command's xAPI statement to an LRS as its event arrives, or send a
    /// learner's or a track's history (`--backfill-user`, `--backfill-track`) and exit.
    XapiForward {
        #[command(flatten)]
        db: DbConfig,
        #[command(flatten)]
        nats: NatsConfig,
        #[command(flatten)]
        xapi: XapiConfig,
        #[command(flatten)]
        forward: xapi::forward::ForwardConfig,
    },
    /// Dead letters: the commands the applier could never apply, and why.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
}

#[derive(Debug, Subcommand)]
enum DlqCommand {
    /// List dead letters, oldest first, and count them by reason (on stderr).
    List {
        #[command(flatten)]
        select: dlq_command::Select,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        nats: NatsConfig,
    },
    /// Show one dead letter: why, where from, its headers and the original bytes.
    Show {
        /// Its sequence, as `dlq list` prints it.
        seq: u64,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        nats: NatsConfig,
    },
    /// Republish dead letters to the commands stream; the applier decides again, and one that
    /// fails again becomes a new dead letter.
    Redrive {
        #[command(flatten)]
        select: dlq_command::Select,
        /// Print what would be redriven, change nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        nats: NatsConfig,
    },
    /// Remove dead letters for good, after a confirmation.
    Purge {
        #[command(flatten)]
        select: dlq_command::Select,
        /// Print what would be purged, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Do not ask (needed without a terminal).
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        nats: NatsConfig,
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
    /// Add a unit to a track, also for the learners already on it: percent complete is
    /// recomputed, a completed track stays completed unless `--reopen`.
    AddUnit(track_changes::cli::AddUnit),
    /// Remove a unit from a track: learners' completions of it stop counting (the ledger keeps
    /// them), a learner on it moves to their first open unit.
    RemoveUnit(track_changes::cli::RemoveUnit),
    /// Move a unit to another position; learners' paths follow the new order.
    MoveUnit(track_changes::cli::MoveUnit),
    /// Print a track: its units in order, its units version, how many learners are on it.
    Show(track_changes::cli::Show),
    /// Tell every learner's running path the track's current units again.
    Notify(track_changes::cli::Notify),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // a command whose output a person reads logs only what is wrong
    let quiet = matches!(
        cli.command,
        Command::Dlq { .. }
            | Command::Erase { .. }
            | Command::Status { .. }
            | Command::Token { .. }
            | Command::Tracks { .. }
            | Command::Schemas { .. }
            | Command::Verify { .. }
            | Command::Export { .. }
            | Command::Rebuild { .. }
    );
    telemetry::init(cli.log_format, quiet);
    match run(cli.command).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // one line with the whole cause chain: what failed, and why
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::All(config) => all::run(config, shutdown::on_signal()).await,
        Command::Simulate {
            db,
            temporal,
            simulate,
        } => simulate::start(&db, &temporal, &simulate).await,
        Command::Migrate { db } => db::migrate(&db).await,
        Command::Consumer { db, nats, applier } => {
            applier::start(&db, &nats, &applier, shutdown::on_signal()).await
        }
        Command::Worker { db, nats, temporal } => {
            Ok(workflow::serve(&db, nats, &temporal, shutdown::on_signal()).await?)
        }
        Command::StartTrack { learner, db } => workflow::cli::start_track(&learner, &db).await,
        Command::CompleteUnit { learner, unit } => {
            workflow::cli::complete_unit(&learner, unit).await
        }
        Command::RecordAssessment { learner, attempt } => {
            workflow::cli::record_assessment(&learner, &attempt).await
        }
        Command::Progress { learner } => workflow::cli::progress(&learner).await,
        Command::Api {
            db,
            nats,
            api,
            auth,
        } => api::run(&db, &nats, api, &auth, shutdown::on_signal()).await,
        Command::Token {
            user,
            admin,
            ttl,
            auth,
        } => {
            println!("{}", auth::mint_development_token(&auth, user, admin, ttl)?);
            Ok(())
        }
        Command::Tracks { command } => match command {
            TracksCommand::Create { title, units, db } => {
                let pool = db::connect(&db).await?;
                let track = db::tracks::create_track(&pool, &title, units.into())
                    .await
                    .with_context(|| format!("creating the track in {}", db.redacted_url()))?;
                println!("{}", serde_json::to_string_pretty(&track)?);
                Ok(())
            }
            TracksCommand::AddUnit(args) => track_changes::cli::add_unit(&args).await,
            TracksCommand::RemoveUnit(args) => track_changes::cli::remove_unit(&args).await,
            TracksCommand::MoveUnit(args) => track_changes::cli::move_unit(&args).await,
            TracksCommand::Show(args) => track_changes::cli::show(&args).await,
            TracksCommand::Notify(args) => track_changes::cli::notify(&args).await,
        },
        Command::XapiForward {
            db,
            nats,
            xapi,
            forward,
        } => xapi::forward::start(&db, &nats, &xapi, &forward, shutdown::on_signal()).await,
        Command::Status { db, nats, status } => status_command::run(&db, &nats, &status).await,
        Command::Schemas { out, check: true } => Ok(schemas::check(&out)?),
        Command::Schemas { out, check: false } => {
            for path in schemas::write(&out)? {
                println!("wrote {}", path.display());
            }
            Ok(())
        }
        Command::Export { export, db } => export_command::run(&db, &export).await,
        Command::Verify { scope, db } => rebuild_command::verify(&db, &scope).await,
        Command::Rebuild {
            scope,
            dry_run,
            db,
            nats,
        } => rebuild_command::rebuild(&db, &nats, &scope, dry_run).await,
        Command::Erase {
            db,
            nats,
            temporal,
            erase,
        } => erase_command::run(&db, &nats, &temporal, &erase).await,
        Command::Dlq { command } => match command {
            DlqCommand::List { select, json, nats } => {
                dlq_command::list(&nats, &select, json).await
            }
            DlqCommand::Show { seq, json, nats } => dlq_command::show(&nats, seq, json).await,
            DlqCommand::Redrive {
                select,
                dry_run,
                nats,
            } => dlq_command::redrive(&nats, &select, dry_run).await,
            DlqCommand::Purge {
                select,
                dry_run,
                yes,
                nats,
            } => dlq_command::purge(&nats, &select, dry_run, yes).await,
        },
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    /// Every subcommand's flags are unique, as clap checks when the binary starts.
    #[test]
    fn every_subcommand_parses_its_configuration() {
        super::Cli::command().debug_assert();
    }

    /// `docs/configuration.md` is what the command line says, so it cannot drift: this fails
    /// when they differ, and `UPDATE_DOCS=1 cargo test -p learning-progress --bin
    /// learning-progress` rewrites it.
    #[test]
    fn the_configuration_reference_is_generated_from_the_command_line() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md");
        let generated = configuration_reference(&super::Cli::command());
        if std::env::var_os("UPDATE_DOCS").is_some() {
            std::fs::write(&path, &generated).unwrap();
        }
        let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            checked_in == generated,
            "{} differs from the command line; regenerate it with UPDATE_DOCS=1 cargo test -p \
             learning-progress --bin learning-progress",
            path.display()
        );
    }

    /// Every subcommand, by its path (`tracks add-unit`), with its one-line description.
    fn subcommands(command: &clap::Command, path: &str, out: &mut Vec<(String, String)>) {
        for sub in command.get_subcommands() {
            if sub.get_name() == "help" {
                continue;
            }
            let name = format!("{path} {}", sub.get_name()).trim().to_owned();
            let about = sub
                .get_about()
                .map(|a| a.to_string().replace('\n', " ").replace('|', "\\|"))
                .unwrap_or_default();
            out.push((name.clone(), about));
            subcommands(sub, &name, out);
        }
    }

    /// README's table of subcommands names every one the command line has: a new subcommand
    /// without a line there fails here.
    #[test]
    fn the_readme_lists_every_subcommand() {
        let readme = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"),
        )
        .unwrap();
        let start = readme
            .find("| subcommand | what it runs |")
            .expect("README has the subcommands table");
        let table: String = readme[start..]
            .lines()
            .take_while(|line| line.starts_with('|'))
            .collect::<Vec<_>>()
            .join("\n");
        let mut all = Vec::new();
        subcommands(&super::Cli::command(), "", &mut all);
        let missing: Vec<&String> = all
            .iter()
            .map(|(name, _)| name)
            .filter(|name| {
                let last = name.rsplit(' ').next().unwrap_or(name);
                ![
                    format!("`{name}`"),
                    format!("`{name} "),
                    format!("`{last}`"),
                ]
                .iter()
                .any(|form| table.contains(form.as_str()))
            })
            .collect();
        assert!(missing.is_empty(), "not in README's table: {missing:?}");
    }

    /// A markdown table of every subcommand, then one of every environment variable any
    /// subcommand reads.
    fn configuration_reference(cli: &clap::Command) -> String {
        use std::collections::BTreeMap;
        struct Var {
            default: String,
            help: String,
            used_by: Vec<String>,
        }
        fn visit(command: &clap::Command, path: &str, vars: &mut BTreeMap<String, Var>) {
            for arg in command.get_arguments() {
                let Some(env) = arg.get_env() else { continue };
                let default: Vec<String> = arg
                    .get_default_values()
                    .iter()
                    .map(|v| v.to_string_lossy().into_owned())
                    .collect();
                let help = arg
                    .get_help()
                    .map(|h| h.to_string().replace('\n', " ").replace('|', "\\|"))
                    .unwrap_or_default();
                let var = vars
                    .entry(env.to_string_lossy().into_owned())
                    .or_insert_with(|| Var {
                        default: default.join(","),
                        help,
                        used_by: Vec::new(),
                    });
                if !path.is_empty() && !var.used_by.iter().any(|u| u == path) {
                    var.used_by.push(path.to_owned());
                }
            }
            for sub in command.get_subcommands() {
                let name = if path.is_empty() {
                    sub.get_name().to_owned()
                } else {
                    format!("{path} {}", sub.get_name())
                };
                visit(sub, &name, vars);
            }
        }
        let mut vars = BTreeMap::new();
        visit(cli, "", &mut vars);
        let mut out = String::from(
            "# Configuration\n\n\
             Every subcommand of `learning-progress` and every environment variable it reads, \
             generated from its command line (`src/main.rs` checks this file against it). Each \
             variable has a flag of the same meaning; `learning-progress <subcommand> --help` \
             shows them.\n\n\
             ## Subcommands\n\n| subcommand | what it does |\n|---|---|\n",
        );
        let mut all = Vec::new();
        subcommands(cli, "", &mut all);
        for (name, about) in &all {
            out.push_str(&format!("| `{name}` | {about} |\n"));
        }
        out.push_str(
            "\n## Environment variables\n\n\
             | variable | default | read by | meaning |\n|---|---|---|---|\n",
        );
        for (name, var) in &vars {
            let used_by = if var.used_by.is_empty() {
                "every subcommand".to_owned()
            } else {
                var.used_by
                    .iter()
                    .map(|u| format!("`{u}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let default = if var.default.is_empty() {
                String::new()
            } else {
                format!("`{}`", var.default)
            };
            out.push_str(&format!(
                "| `{name}` | {default} | {used_by} | {} |\n",
                var.help
            ));
        }
        out
    }
}
