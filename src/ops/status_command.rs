//! `learning-progress status`: the write path's lag and failures, for a person or a probe.

use anyhow::Context as _;
use async_nats::jetstream;

use super::status::{self, Lag};
use crate::config::DbConfig;
use crate::messaging::{self, NatsConfig};

#[derive(Debug, Clone, clap::Args)]
pub struct StatusConfig {
    /// The applier's durable consumer, as the applier names it.
    #[arg(long, env = "APPLIER_DURABLE", default_value = "progress-applier")]
    pub durable: String,
    /// One JSON object instead of lines for a person.
    #[arg(long)]
    pub json: bool,
    /// Exit with status 1 when the oldest waiting command has waited longer than this many
    /// seconds, or any applied change is unannounced after a minute: a probe for cron or CI.
    #[arg(long)]
    pub fail_over: Option<f64>,
}

pub async fn run(db: &DbConfig, nats: &NatsConfig, config: &StatusConfig) -> anyhow::Result<()> {
    let pool = crate::db::connect(db).await?;
    let client = messaging::connect(nats, "status")
        .await
        .with_context(|| format!("connecting to NATS at {}", nats.url))?;
    let js = jetstream::new(client);
    let lag = status::lag(&js, &pool, nats, &config.durable)
        .await
        .with_context(|| format!("reading the lag from NATS and {}", db.redacted_url()))?;
    if config.json {
        println!("{}", serde_json::to_string_pretty(&lag)?);
    } else {
        print!("{}", describe(&lag));
    }
    if let Some(limit) = config.fail_over {
        let waited = lag.oldest_waiting_seconds.unwrap_or(0.0);
        if waited > limit {
            anyhow::bail!("the oldest waiting command has waited {waited:.1} s, over {limit} s");
        }
        if lag.unannounced_over_a_minute > 0 {
            anyhow::bail!(
                "{} applied changes are unannounced after a minute",
                lag.unannounced_over_a_minute
            );
        }
    }
    Ok(())
}

/// The lag as lines for a person.
fn describe(lag: &Lag) -> String {
    let oldest = match lag.oldest_waiting_seconds {
        Some(seconds) => format!(", the oldest for {seconds:.1} s"),
        None => String::new(),
    };
    let dead: u64 = lag.dead_letters.values().sum();
    let reasons: Vec<String> = lag
        .dead_letters
        .iter()
        .map(|(reason, count)| format!("{reason} {count}"))
        .collect();
    let reasons = if reasons.is_empty() {
        String::new()
    } else {
        format!(" ({})", reasons.join(", "))
    };
    format!(
        "commands waiting     {} ({} not yet delivered, {} being applied){oldest}\n\
         learners behind      {} (commands published, not yet applied)\n\
         dead letters         {dead}{reasons}\n\
         unannounced changes  {} ({} over a minute)\n",
        lag.commands_waiting,
        lag.pending,
        lag.ack_pending,
        lag.unreconciled_learners,
        lag.unannounced,
        lag.unannounced_over_a_minute,
    )
}
