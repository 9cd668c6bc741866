//! `learning-progress erase --user U`: erases a learner, printing what it found and removed.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream;
use uuid::Uuid;

use super::dlq_command::confirm;
use super::erase::{self, Erased, Stores, Survey};
use crate::config::DbConfig;
use crate::messaging::{self, NatsConfig};
use crate::workflow::{self, TemporalConfig};

#[derive(Debug, Clone, clap::Args)]
pub struct EraseConfig {
    /// The learner (user id) to erase.
    #[arg(long, env = "ERASE_USER")]
    pub user: Uuid,
    /// Print what would be removed, change nothing.
    #[arg(long, env = "ERASE_DRY_RUN")]
    pub dry_run: bool,
    /// Do not ask (needed without a terminal).
    #[arg(long, env = "ERASE_YES")]
    pub yes: bool,
    /// One JSON object (what was found, or removed) on stdout instead of lines.
    #[arg(long, env = "ERASE_JSON")]
    pub json: bool,
    /// Longest wait for the appliers to publish the learner's last applied changes before
    /// their ledger is deleted (so that no event of theirs lands after the purge).
    #[arg(long, env = "ERASE_SETTLE_SECS", default_value_t = 30)]
    pub settle_secs: u64,
}

pub async fn run(
    db: &DbConfig,
    nats: &NatsConfig,
    temporal: &TemporalConfig,
    config: &EraseConfig,
) -> anyhow::Result<()> {
    let pool = crate::db::connect(db).await?;
    let client = messaging::connect(nats, "erase")
        .await
        .with_context(|| format!("connecting to NATS at {}", nats.url))?;
    let temporal_client = workflow::connect(temporal, "erase").await?;
    let stores = Stores {
        pool,
        js: jetstream::new(client),
        nats: nats.clone(),
        temporal: temporal_client,
    };
    let survey = erase::survey(&stores, config.user)
        .await
        .with_context(|| format!("finding what is held about learner {}", config.user))?;
    let found = describe(&survey);
    if config.dry_run {
        if config.json {
            println!("{}", serde_json::to_string_pretty(&survey)?);
        }
        eprintln!("would erase learner {}: {found} (dry run)", config.user);
        return Ok(());
    }
    if !config.yes && !confirm(&format!("erase learner {} for good: {found}?", config.user))? {
        anyhow::bail!("not erased");
    }
    let erased = erase::erase(
        &stores,
        &survey,
        Duration::from_secs(config.settle_secs),
        |step| eprintln!("{step}"),
    )
    .await
    .with_context(|| {
        format!(
            "erasing learner {} (stopped part-way: run it again to finish)",
            config.user
        )
    })?;
    if config.json {
        println!("{}", serde_json::to_string_pretty(&erased)?);
    }
    eprintln!("{}", summary(&erased));
    Ok(())
}

/// "2 tracks: 2 progress rows, 9 ledger entries, 1 waiting command, 8 events, 1 dead letter,
/// 1 running workflow".
fn describe(survey: &Survey) -> String {
    let mut text = format!(
        "{}: {}, {}, {}, {}, {}, {}",
        count(survey.tracks.len() as u64, "track", "tracks"),
        count(survey.rows, "progress row", "progress rows"),
        count(survey.ledger_entries, "ledger entry", "ledger entries"),
        count(survey.commands, "waiting command", "waiting commands"),
        count(survey.events, "event", "events"),
        count(
            survey.dead_letters.len() as u64,
            "dead letter",
            "dead letters"
        ),
        count(
            survey.workflows.len() as u64,
            "running workflow",
            "running workflows"
        ),
    );
    if let Some(at) = survey.erased_before {
        text.push_str(&format!("; erased before at {at}"));
    }
    text
}

/// The one-line summary of what was removed.
fn summary(erased: &Erased) -> String {
    format!(
        "erased learner {}: terminated {}; removed {}, {}, {}, {}, {}; published {}",
        erased.user_id,
        count(erased.workflows_terminated, "workflow", "workflows"),
        count(erased.commands, "waiting command", "waiting commands"),
        count(erased.rows, "progress row", "progress rows"),
        count(erased.ledger_entries, "ledger entry", "ledger entries"),
        count(erased.events, "event", "events"),
        count(erased.dead_letters, "dead letter", "dead letters"),
        count(erased.tombstones, "erased event", "erased events"),
    )
}

fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}
