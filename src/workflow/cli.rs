//! Entry points of the learner subcommands (`start-track`, `complete-unit`,
//! `record-assessment`, `progress`): each connects, makes one call and prints JSON.

use std::future::Future;
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;
use temporalio_client::Client;
use temporalio_common::protos::temporal::api::enums::v1::{TaskQueueKind, TaskQueueType};
use temporalio_common::protos::temporal::api::taskqueue::v1::TaskQueue;
use temporalio_common::protos::temporal::api::workflowservice::v1::DescribeTaskQueueRequest;
use uuid::Uuid;

use super::{AssessmentRecorded, TemporalConfig, client, connect, workflow_id};
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
    /// How long to wait for the learner's workflow to answer; a workflow answers only while
    /// a worker polls its task queue, and when none does the wait ends with a message saying
    /// so instead of lasting for ever.
    #[arg(long, env = "CLI_WAIT_SECS", value_name = "SECS", default_value_t = 30)]
    pub wait_secs: u64,
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

/// Runs `call` against the learner's workflow for at most `--wait-secs`; past that, says
/// why it got no answer: no worker polls the task queue, or the workers that do are busy.
async fn within_wait<T>(
    learner: &Learner,
    client: &Client,
    call: impl Future<Output = Result<T, client::ClientError>>,
) -> anyhow::Result<T> {
    let wait = Duration::from_secs(learner.wait_secs);
    match tokio::time::timeout(wait, call).await {
        Ok(answer) => Ok(answer?),
        Err(_) => Err(no_answer(learner, client, wait).await),
    }
}

async fn no_answer(learner: &Learner, client: &Client, wait: Duration) -> anyhow::Error {
    let id = workflow_id(learner.user, learner.track);
    let queue = &learner.temporal.task_queue;
    let namespace = client.options().namespace.clone();
    let request = DescribeTaskQueueRequest {
        namespace: namespace.clone(),
        task_queue: Some(TaskQueue {
            name: queue.clone(),
            kind: TaskQueueKind::Normal as i32,
            ..Default::default()
        }),
        task_queue_type: TaskQueueType::Workflow as i32,
        ..Default::default()
    };
    let described = client
        .connection()
        .workflow_service()
        .describe_task_queue(tonic::Request::new(request))
        .await;
    let waited = wait.as_secs();
    match described.map(|answer| answer.into_inner().pollers.len()) {
        Ok(0) => anyhow::anyhow!(
            "the workflow {id} did not answer within {waited} s: no worker polls its task queue \
             {queue} in namespace {namespace}. Start one (`learning-progress worker`, or `all`) \
             with TEMPORAL_TASK_QUEUE={queue}, or point this command at the queue the workers \
             poll (--temporal-task-queue)."
        ),
        Ok(pollers) => anyhow::anyhow!(
            "the workflow {id} did not answer within {waited} s, though {pollers} worker(s) \
             polled its task queue {queue} in the last minutes: they may be overloaded or \
             stopped since; try again, or wait longer (--wait-secs)."
        ),
        Err(status) => anyhow::anyhow!(
            "the workflow {id} did not answer within {waited} s, and its task queue {queue} \
             could not be described ({status}): is a worker polling it?"
        ),
    }
}

pub async fn complete_unit(learner: &Learner, unit: Uuid) -> anyhow::Result<()> {
    let client = connect(&learner.temporal, "cli").await?;
    let view = within_wait(
        learner,
        &client,
        client::complete_unit(&client, learner.user, learner.track, unit),
    )
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
    let view = within_wait(
        learner,
        &client,
        client::record_assessment(&client, learner.user, learner.track, assessment),
    )
    .await
    .context("recording the assessment")?;
    print(&view)
}

pub async fn progress(learner: &Learner) -> anyhow::Result<()> {
    let client = connect(&learner.temporal, "cli").await?;
    let view = within_wait(
        learner,
        &client,
        client::progress(&client, learner.user, learner.track),
    )
    .await?;
    print(&view)
}
