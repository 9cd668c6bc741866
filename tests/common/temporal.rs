//! A Temporal worker on a task queue of the test's own, next to the dev server's other tests.

use std::future::Future;

use learning_progress::applier::{self, ApplierConfig, ApplierError, Seams};
use learning_progress::workflow::WorkerError;
use tokio::task::JoinHandle;

use async_nats::jetstream;
use learning_progress::messaging::NatsConfig;
use learning_progress::workflow::{self, TemporalConfig, WorkerDeps};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The dev server (`TEMPORAL_ADDRESS`), on a task queue no other test uses.
pub fn temporal_config() -> TemporalConfig {
    let address = std::env::var("TEMPORAL_ADDRESS").unwrap_or_else(|_| "127.0.0.1:7233".to_owned());
    TemporalConfig::new(address, format!("test-{}", Uuid::new_v4()))
}

/// The write path in this process, on `temporal`'s task queue and `nats`'s streams, until
/// `shutdown`: a worker, returned as its future (it is not `Send`: the caller drives it), and
/// an applier with the default configuration, spawned.
pub fn write_path<'a>(
    temporal: &'a TemporalConfig,
    client: &temporalio_client::Client,
    nats: &NatsConfig,
    js: &jetstream::Context,
    pool: &PgPool,
    shutdown: &CancellationToken,
) -> (
    impl Future<Output = Result<(), WorkerError>> + 'a,
    JoinHandle<Result<(), ApplierError>>,
) {
    let deps = WorkerDeps {
        client: client.clone(),
        jetstream: js.clone(),
        nats: nats.clone(),
        pool: pool.clone(),
    };
    let worker = workflow::run(temporal, deps, shutdown.clone());
    let applier = tokio::spawn(applier::run(
        js.clone(),
        pool.clone(),
        nats.clone(),
        ApplierConfig::default(),
        Seams::default(),
        shutdown.clone(),
    ));
    (worker, applier)
}

/// Runs a worker on its own task queue and streams while `body` runs, then shuts it down
/// gracefully and removes the streams. The worker is not `Send`, so both are driven on this
/// task.
pub async fn with_worker<F, Fut>(pool: PgPool, body: F)
where
    F: FnOnce(temporalio_client::Client, TemporalConfig, NatsConfig, jetstream::Context) -> Fut,
    Fut: Future<Output = ()>,
{
    let temporal = temporal_config();
    let (nats, js) = super::isolated_nats().await;
    let client = workflow::connect(&temporal, "test")
        .await
        .expect("Temporal reachable");
    let deps = WorkerDeps {
        client: client.clone(),
        jetstream: js.clone(),
        nats: nats.clone(),
        pool,
    };
    let shutdown = CancellationToken::new();
    let worker = workflow::run(&temporal, deps, shutdown.clone());
    let test = async {
        body(client, temporal.clone(), nats.clone(), js.clone()).await;
        shutdown.cancel();
    };
    let (worker, ()) = tokio::join!(worker, test);
    worker.expect("the worker ran and stopped cleanly");
    super::delete_streams(&js, &nats).await;
}
