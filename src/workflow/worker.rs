//! The worker process: hosts the workflow and its activities on the task queue until the
//! shutdown token fires, then lets in-flight tasks finish.

use std::time::Duration;

use async_nats::jetstream;
use sqlx::PgPool;
use temporalio_client::Client;
use temporalio_sdk::runtime::RuntimeOptions;
use temporalio_sdk::{Runtime, Worker, WorkerOptions};
use tokio_util::sync::CancellationToken;

use super::{ConnectError, LearningPathWorkflow, ProgressActivities, TemporalConfig, connect};
use crate::config::DbConfig;
use crate::db;
use crate::messaging::{self, NatsConfig};

/// Everything the worker talks to, connected by the caller.
pub struct WorkerDeps {
    pub client: Client,
    pub jetstream: jetstream::Context,
    pub nats: NatsConfig,
    pub pool: PgPool,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Temporal(#[from] ConnectError),
    #[error(transparent)]
    Nats(#[from] crate::messaging::ConnectError),
    #[error("opening the database pool")]
    Database(#[from] sqlx::Error),
    /// The database cannot carry the service as configured (a transaction pooler).
    #[error(transparent)]
    DatabaseUrl(#[from] anyhow::Error),
    #[error("creating the NATS streams")]
    Streams(#[from] messaging::StreamSetupError),
    #[error("starting the Temporal worker")]
    Start(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the Temporal worker stopped with an error")]
    Run(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// How long in-flight activities get to finish once shutdown is requested.
const GRACEFUL_SHUTDOWN: Duration = Duration::from_secs(10);

/// Connects to Temporal, NATS and PostgreSQL, then runs the worker: the `worker` subcommand.
pub async fn serve(
    db_config: &DbConfig,
    nats: NatsConfig,
    temporal: &TemporalConfig,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    let client = connect(temporal, "worker").await?;
    let nats_client = messaging::connect(&nats, "worker").await?;
    let deps = WorkerDeps {
        client,
        jetstream: jetstream::new(nats_client),
        nats,
        pool: db::connect(db_config).await?,
    };
    run(temporal, deps, shutdown).await
}

/// Runs the worker until `shutdown` fires. The future is not `Send` (workflows run on a local
/// set): await it on the current task, or on a thread of its own.
pub async fn run(
    config: &TemporalConfig,
    deps: WorkerDeps,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    messaging::ensure_streams(&deps.jetstream, &deps.nats).await?;
    let start = |e| WorkerError::Start(Box::new(e));
    let runtime = Runtime::from_current_tokio(RuntimeOptions::default())
        .map_err(|e| WorkerError::Start(e.into()))?;
    let options = WorkerOptions::new(config.task_queue.as_str())
        .register_activities(ProgressActivities {
            jetstream: deps.jetstream,
            nats: deps.nats,
            pool: deps.pool,
        })
        .register_workflow::<LearningPathWorkflow>()
        .map_err(start)?
        .graceful_shutdown_period(GRACEFUL_SHUTDOWN)
        .build();
    let namespace = deps.client.options().namespace.clone();
    let mut worker =
        Worker::new(&runtime, deps.client, options).map_err(|e| WorkerError::Start(e.into()))?;
    let stop = worker.shutdown_handle();
    tracing::info!(task_queue = %config.task_queue, %namespace, "worker started");
    let running = worker.run();
    tokio::pin!(running);
    let result = tokio::select! {
        result = &mut running => result,
        () = shutdown.cancelled() => {
            stop();
            running.await
        }
    };
    result.map_err(|e| WorkerError::Run(e.into()))?;
    tracing::info!("worker stopped");
    Ok(())
}
