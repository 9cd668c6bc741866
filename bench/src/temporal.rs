//! P6: workflows per second of `LearningPathWorkflow` publishing its commands, against the same
//! workflow on a worker whose activities (same names, same types) do nothing. The ratio is what
//! the real activities — a JetStream publish and ack, two ledger reads — cost the workflow.
//!
//! Each workflow: start, three units completed by signals (five commands), one reconcile look
//! (`reconcile_rounds: Some(0)`, so no applier is needed and both sides run the same activities).

use std::sync::Arc;
use std::time::{Duration, Instant};

use temporalio_client::Client;
use temporalio_sdk::activities::{ActivityContext, ActivityError, activities};
use temporalio_sdk::runtime::RuntimeOptions;
use temporalio_sdk::{Runtime, Worker, WorkerOptions};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::report::BenchResult;
use crate::setup::{self, BenchDb, say};
use crate::{BenchConfig, Scale};
use learning_progress::db::tracks::Track;
use learning_progress::model::ProgressCommand;
use learning_progress::workflow::{
    self, LearningPathInput, LearningPathWorkflow, PublishReceipt, ReconcileRequest, ResumePoint,
    ResumeRequest, TemporalConfig, WorkerDeps, client,
};

/// Workflows in flight at once; more only queues on two cores.
const IN_FLIGHT: usize = 50;
const WARM_UP: usize = 2;

/// The workflow's activities with every effect removed.
pub struct NoopActivities;

#[activities]
impl NoopActivities {
    #[activity(name = "update_user_progress")]
    pub async fn update_user_progress(
        self: Arc<Self>,
        _ctx: ActivityContext,
        command: ProgressCommand,
    ) -> Result<PublishReceipt, ActivityError> {
        Ok(PublishReceipt {
            stream: "noop".to_owned(),
            sequence: command.seq as u64,
            duplicate: false,
        })
    }

    #[activity(name = "reconcile_progress")]
    pub async fn reconcile_progress(
        self: Arc<Self>,
        _ctx: ActivityContext,
        _request: ReconcileRequest,
    ) -> Result<Vec<i64>, ActivityError> {
        Ok(Vec::new())
    }

    #[activity(name = "resume_progress")]
    pub async fn resume_progress(
        self: Arc<Self>,
        _ctx: ActivityContext,
        _request: ResumeRequest,
    ) -> Result<ResumePoint, ActivityError> {
        Ok(ResumePoint {
            last_seq: 0,
            completed_unit_ids: Vec::new(),
            units_version: 0,
            unit_ids: Vec::new(),
        })
    }
}

pub async fn run(config: &BenchConfig, scale: &Scale) -> anyhow::Result<Vec<BenchResult>> {
    let track = setup::track(3);
    let db = BenchDb::create(&config.db, 10).await?;
    setup::insert_track(&db.pool, &track).await?;
    let (nats, js) = setup::isolated_nats(&config.nats_url, "bench-temporal").await?;
    let tag = Uuid::new_v4().simple().to_string();
    let client = workflow::connect(&config.temporal, "bench").await?;

    let noop_queue = TemporalConfig {
        task_queue: format!("bench-noop-{tag}"),
        ..config.temporal.clone()
    };
    say(format!(
        "P6 anchor: {} workflows with no-op activities",
        scale.workflows
    ));
    let shutdown = CancellationToken::new();
    let (worker, noop) = tokio::join!(
        noop_worker(&noop_queue, client.clone(), shutdown.clone()),
        async {
            let rate = drive(&client, &noop_queue, &track, scale.workflows).await;
            shutdown.cancel();
            rate
        }
    );
    worker?;
    let noop = noop?;
    say(format!("  {noop:.1} workflows/s"));

    let real_queue = TemporalConfig {
        task_queue: format!("bench-real-{tag}"),
        ..config.temporal.clone()
    };
    say(format!(
        "P6: {} workflows publishing to JetStream",
        scale.workflows
    ));
    let deps = WorkerDeps {
        client: client.clone(),
        jetstream: js.clone(),
        nats: nats.clone(),
        pool: db.pool.clone(),
    };
    let shutdown = CancellationToken::new();
    let (worker, real) = tokio::join!(workflow::run(&real_queue, deps, shutdown.clone()), async {
        let rate = drive(&client, &real_queue, &track, scale.workflows).await;
        shutdown.cancel();
        rate
    });
    worker?;
    let real = real?;
    say(format!("  {real:.1} workflows/s"));
    let published = js
        .get_stream(&nats.commands_stream)
        .await?
        .info()
        .await?
        .state
        .messages;
    setup::delete_streams(&js, &nats).await;
    db.drop().await?;
    let expected = ((scale.workflows + WARM_UP) * 5) as u64;
    anyhow::ensure!(
        published == expected,
        "{published} commands published, expected {expected}"
    );

    Ok(vec![
        BenchResult::ratio(
            "P6",
            "workflows/s: LearningPathWorkflow publishing its commands",
            (real, "workflows/s"),
            ("same workflow, no-op activities of the same names", noop),
            0.8,
        )
        .detail(format!(
            "{} workflows per side ({IN_FLIGHT} in flight), each start + 3 unit signals → 5 commands + 1 reconcile look; {published} commands on the stream",
            scale.workflows
        )),
    ])
}

/// Workflows per second: each started, its units completed by signals, its result awaited.
async fn drive(
    client: &Client,
    temporal: &TemporalConfig,
    track: &Track,
    count: usize,
) -> anyhow::Result<f64> {
    run_many(client, temporal, track, WARM_UP).await?;
    let started = Instant::now();
    run_many(client, temporal, track, count).await?;
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

async fn run_many(
    client: &Client,
    temporal: &TemporalConfig,
    track: &Track,
    count: usize,
) -> anyhow::Result<()> {
    let slots = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let units: Vec<Uuid> = track.units.iter().map(|u| u.id).collect();
    let tasks: Vec<_> = (0..count)
        .map(|_| {
            let (client, temporal, units, slots) = (
                client.clone(),
                temporal.clone(),
                units.clone(),
                slots.clone(),
            );
            let track_id = track.id;
            tokio::spawn(async move {
                let _slot = slots.acquire_owned().await?;
                let user = Uuid::new_v4();
                let input = LearningPathInput {
                    reconcile_rounds: Some(0),
                    ..LearningPathInput::new(user, track_id, units.clone())
                };
                client::start(&client, &temporal, input).await?;
                for unit in &units {
                    client::signal_unit_completed(&client, user, track_id, *unit).await?;
                }
                tokio::time::timeout(
                    Duration::from_secs(120),
                    client::result(&client, user, track_id),
                )
                .await??;
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// A worker like [`workflow::run`]'s, hosting the same workflow with [`NoopActivities`].
async fn noop_worker(
    config: &TemporalConfig,
    client: Client,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let runtime = Runtime::from_current_tokio(RuntimeOptions::default())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let options = WorkerOptions::new(config.task_queue.as_str())
        .register_activities(NoopActivities)
        .register_workflow::<LearningPathWorkflow>()
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .graceful_shutdown_period(Duration::from_secs(10))
        .build();
    let mut worker = Worker::new(&runtime, client, options).map_err(|e| anyhow::anyhow!("{e}"))?;
    let stop = worker.shutdown_handle();
    let running = worker.run();
    tokio::pin!(running);
    tokio::select! {
        result = &mut running => result,
        () = shutdown.cancelled() => {
            stop();
            running.await
        }
    }
    .map_err(|e| anyhow::anyhow!("{e}"))
}
