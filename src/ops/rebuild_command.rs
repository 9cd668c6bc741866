//! `learning-progress verify` and `rebuild`: progress on stderr, the differences and a
//! one-line summary on stdout, exit 1 when `verify` finds a difference.

use std::time::Instant;

use anyhow::Context as _;
use async_nats::jetstream;
use uuid::Uuid;

use super::rebuild::{self, Report, Scope};
use crate::config::DbConfig;
use crate::messaging::{self, NatsConfig};
use crate::meter::Meter;

#[derive(Debug, Clone, clap::Args)]
pub struct ScopeArgs {
    /// Only this learner's rows.
    #[arg(long)]
    pub user: Option<Uuid>,
    /// Only this track's rows.
    #[arg(long)]
    pub track: Option<Uuid>,
    /// Learners per transaction.
    #[arg(long, env = "REBUILD_BATCH_SIZE", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch_size: u32,
    /// The differences as one JSON object per line instead of lines for a person.
    #[arg(long)]
    pub json: bool,
}

impl ScopeArgs {
    fn scope(&self) -> Scope {
        Scope {
            user: self.user,
            track: self.track,
        }
    }
}

pub async fn verify(db: &DbConfig, args: &ScopeArgs) -> anyhow::Result<()> {
    let pool = crate::db::connect(db).await?;
    let started = Instant::now();
    let mut progress = Meter::new("verify", "learners", None);
    let report = rebuild::verify(&pool, args.scope(), args.batch_size as usize, &mut |n| {
        progress.update(n)
    })
    .await
    .with_context(|| format!("reading rows and ledger from {}", db.redacted_url()))?;
    progress.finish(report.learners);
    print_differences(&report, args.json)?;
    let differing = report.differences.len();
    println!(
        "verify: {} learners, {differing} differing from their ledger, in {:.1} s",
        report.learners,
        started.elapsed().as_secs_f64()
    );
    if differing > 0 {
        anyhow::bail!(
            "{differing} rows differ from the merge of their ledger (`rebuild` rewrites them)"
        );
    }
    Ok(())
}

pub async fn rebuild(
    db: &DbConfig,
    nats: &NatsConfig,
    args: &ScopeArgs,
    dry_run: bool,
) -> anyhow::Result<()> {
    let pool = crate::db::connect(db).await?;
    let js = if dry_run {
        None
    } else {
        let client = messaging::connect(nats, "rebuild")
            .await
            .with_context(|| format!("connecting to NATS at {}", nats.url))?;
        Some(jetstream::new(client))
    };
    let started = Instant::now();
    let mut progress = Meter::new("rebuild", "learners", None);
    let report = rebuild::rebuild(
        &pool,
        js.as_ref().map(|js| (js, nats)),
        args.scope(),
        args.batch_size as usize,
        dry_run,
        &mut |n| progress.update(n),
    )
    .await
    .with_context(|| format!("rewriting rows in {}", db.redacted_url()))?;
    progress.finish(report.learners);
    print_differences(&report, args.json)?;
    let skipped = report
        .differences
        .iter()
        .filter(|d| matches!(d, rebuild::Difference::NoHistory { .. }))
        .count();
    let verb = if dry_run { "would rewrite" } else { "rewrote" };
    println!(
        "rebuild: {} learners, {} differing, {verb} {} rows ({skipped} rows without history \
         left as they are), in {:.1} s",
        report.learners,
        report.differences.len(),
        if dry_run {
            (report.differences.len() - skipped) as u64
        } else {
            report.rewritten
        },
        started.elapsed().as_secs_f64()
    );
    if report.unannounced > 0 {
        anyhow::bail!(
            "{} rewritten rows were not announced (NATS did not confirm their events); \
             API replicas holding them refresh when their cache entries expire",
            report.unannounced
        );
    }
    Ok(())
}

fn print_differences(report: &Report, json: bool) -> anyhow::Result<()> {
    for difference in &report.differences {
        if json {
            println!("{}", serde_json::to_string(difference)?);
        } else {
            println!("{}", difference.describe());
        }
    }
    Ok(())
}
