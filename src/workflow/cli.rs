//! Entry points of the learner subcommands (`start-track`, `complete-unit`,
//! `record-assessment`, `progress`): each connects, makes one call and prints JSON.

use anyhow::Context as _;
use serde::Serialize;
use uuid::Uuid;

use super::{AssessmentRecorded, TemporalConfig, client, connect};
use crate::config::DbConfig;
use crate::db;

/// Which learner on which track, and where their workflow runs.
#[derive(Debug, Clone, clap::Args)]
pub struct Learner {
    /// The learner's user id.
    #[arg(long)]
    pub user: Uuid,
    /// The track's id.
    #[arg(long)]
    pub track: Uuid,
    #[command(flatten)]
    pub temporal: TemporalConfig,
}

/// One assessment attempt, as given on the command line.
#[derive(Debug, Clone, clap::Args)]
pub struct Attempt {
    /// The assessment unit.
    #[arg(long)]
    pub unit: Uuid,
    /// The attempt's id; a new one when omitted.
    #[arg(long)]
    pub attempt: Option<Uuid>,
    /// Points scored, between 0 and the maximum.
    #[arg(long)]
    pub score: f64,
    /// The most points possible; positive.
    #[arg(long)]
    pub max_score: f64,
    /// Whether the attempt passed.
    #[arg(long)]
    pub passed: bool,
}

fn print(value: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

pub async fn start_track(learner: &Learner, db_config: &DbConfig) -> anyhow::Result<()> {
    let client = connect(&learner.temporal, "cli").await?;
    let pool = db::connect(db_config).await?;
    let id = client::start_track(
        &client,
        &learner.temporal,
        &pool,
        learner.user,
        learner.track,
    )
    .await?;
    print(&serde_json::json!({ "workflow_id": id }))
}

pub async fn complete_unit(learner: &Learner, unit: Uuid) -> anyhow::Result<()> {
    let client = connect(&learner.temporal, "cli").await?;
    let view = client::complete_unit(&client, learner.user, learner.track, unit)
        .await
        .context("completing the unit")?;
    print(&view)
}

pub async fn record_assessment(learner: &Learner, attempt: &Attempt) -> anyhow::Result<()> {
    let client = connect(&learner.temporal, "cli").await?;
    let assessment = AssessmentRecorded {
        unit_id: attempt.unit,
        attempt_id: attempt.attempt.unwrap_or_else(Uuid::new_v4),
        score: attempt.score,
        max_score: attempt.max_score,
        passed: attempt.passed,
    };
    let view = client::record_assessment(&client, learner.user, learner.track, assessment)
        .await
        .context("recording the assessment")?;
    print(&view)
}

pub async fn progress(learner: &Learner) -> anyhow::Result<()> {
    let client = connect(&learner.temporal, "cli").await?;
    print(&client::progress(&client, learner.user, learner.track).await?)
}
