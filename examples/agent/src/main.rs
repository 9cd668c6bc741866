//! progress-agent: an example agent that follows one learner's progress events (docs/events.md)
//! with a durable consumer of its own, acts on each new version once and in version order, and
//! picks up where it left off after a restart. Its "action" is one printed line per version.

mod follow;
mod order;
mod state;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use async_nats::jetstream::{self, consumer::AckPolicy, consumer::DeliverPolicy, consumer::pull};
use clap::Parser;
use uuid::Uuid;

/// Follows one learner's progress events and prints one line per new version, in version order.
///
/// It reads `<prefix>.evt.<user>.>` (or one track's subject) from the events stream through a
/// durable consumer of its own, so events published while it is down are delivered when it
/// comes back. It keeps the last version it acted on per track in a state file and ignores
/// anything not newer, so a redelivered or republished event is never acted on twice. A version
/// that arrives ahead of the one before it is held until that one comes, or until the gap
/// timeout, after which the agent moves on (each event carries the whole snapshot).
#[derive(Debug, Parser)]
#[command(version)]
struct Config {
    /// The learner to follow.
    #[arg(long, env = "AGENT_USER")]
    user: Uuid,

    /// Follow only this track (default: every track of the learner).
    #[arg(long, env = "AGENT_TRACK")]
    track: Option<Uuid>,

    /// NATS server URL(s), comma separated.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,

    /// The service's subject prefix: events are on `<prefix>.evt.<user>.<track>`.
    #[arg(long, env = "NATS_SUBJECT_PREFIX", default_value = "progress")]
    subject_prefix: String,

    /// The stream holding progress events.
    #[arg(long, env = "NATS_EVENTS_STREAM", default_value = "PROGRESS_EVENTS")]
    events_stream: String,

    /// The agent's durable consumer [default: progress-agent-<user>, or
    /// progress-agent-<user>-<track> with --track]. Remove it with `nats consumer rm` when the
    /// agent is retired.
    #[arg(long, env = "AGENT_DURABLE")]
    durable: Option<String>,

    /// Where the last version acted on per track is kept [default:
    /// ./progress-agent-<user>.json]. One file per learner.
    #[arg(long, env = "AGENT_STATE_FILE")]
    state_file: Option<PathBuf>,

    /// How long a version that arrived early waits for the versions before it; then the agent
    /// moves on to it.
    #[arg(long, env = "AGENT_GAP_TIMEOUT_SECS", default_value_t = 30)]
    gap_timeout_secs: u64,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = Config::parse();
    match run(config).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("progress-agent: error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let durable = config
        .durable
        .clone()
        .unwrap_or_else(|| match config.track {
            Some(track) => format!("progress-agent-{}-{track}", config.user),
            None => format!("progress-agent-{}", config.user),
        });
    if durable.is_empty() || durable.contains(['.', '*', '>', ' ', '\t', '/', '\\']) {
        bail!(
            "--durable {durable:?}: a consumer name cannot be empty or contain . * > / \\ or spaces"
        );
    }
    let state_file = config
        .state_file
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("progress-agent-{}.json", config.user)));
    let state = state::load(&state_file, config.user)?;
    // a state file that cannot be written stops the agent now, not at its first event
    state::save(&state_file, &state).await?;
    let filter = format!(
        "{}.evt.{}.{}",
        config.subject_prefix,
        config.user,
        config.track.map_or(">".to_owned(), |t| t.to_string())
    );
    let gap_timeout = Duration::from_secs(config.gap_timeout_secs);

    let servers: Vec<&str> = config.nats_url.split(',').map(str::trim).collect();
    let client = async_nats::ConnectOptions::new()
        .name("progress-agent")
        .connect(servers)
        .await
        .with_context(|| format!("connecting to NATS at {}", config.nats_url))?;
    let js = jetstream::new(client);
    let stream = js
        .get_stream(&config.events_stream)
        .await
        .with_context(|| {
            format!(
                "finding the events stream {} (the service creates it; is --events-stream right?)",
                config.events_stream
            )
        })?;
    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some(durable.clone()),
            filter_subject: filter.clone(),
            // the first start reads what the stream still holds; later starts resume the durable
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::Explicit,
            // a held version stays unacked while it waits for a gap: never redelivered meanwhile
            ack_wait: gap_timeout + Duration::from_secs(30),
            // one learner's unacked events: a gap never holds more than a handful
            max_ack_pending: 1_000,
            ..Default::default()
        })
        .await
        .with_context(|| format!("creating or resuming the durable consumer {durable}"))?;
    eprintln!(
        "progress-agent: following {filter} on {} as {durable}; state in {}",
        config.events_stream,
        state_file.display()
    );
    follow::follow(consumer, state, &state_file, gap_timeout).await
}
