//! Temporal: the `LearningPathWorkflow` that turns a learner's signals into progress commands,
//! its activities (publishing to JetStream, reading the projection back), the worker that
//! hosts both, and client helpers to start, signal and query the workflow.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `TEMPORAL_ADDRESS` | `127.0.0.1:7233` | frontend `host:port` (or a URL) |
//! | `TEMPORAL_NAMESPACE` | `default` | namespace of the workflows |
//! | `TEMPORAL_TASK_QUEUE` | `learning-progress` | task queue the workers share |

mod activities;
pub mod cli;
pub mod client;
mod lenient;
mod worker;
mod workflows;

pub use activities::{
    ProgressActivities, PublishFailure, PublishReceipt, ReconcileRequest, Republish, ResumePoint,
    ResumeRequest, publish, publish_copy,
};
pub use lenient::{Lenient, json_payload};
pub use worker::{WorkerDeps, WorkerError, run, serve};
pub use workflows::{
    AssessmentRecorded, COMMAND_ID_NAMESPACE, Carry, Inbound, LearningPathInput,
    LearningPathWorkflow, PathOutcome, PathView, TrackUnitsChanged, UnitCompleted, command_id,
};

use temporalio_client::{Client, ClientOptions, Connection, ConnectionOptions, Url};
use uuid::Uuid;

#[derive(Debug, Clone, clap::Args)]
pub struct TemporalConfig {
    /// Temporal frontend, `host:port` or a URL.
    #[arg(
        long = "temporal-address",
        env = "TEMPORAL_ADDRESS",
        default_value = "127.0.0.1:7233"
    )]
    pub address: String,

    /// Namespace the workflows live in.
    #[arg(
        long = "temporal-namespace",
        env = "TEMPORAL_NAMESPACE",
        default_value = "default"
    )]
    pub namespace: String,

    /// Task queue shared by every worker of this service.
    #[arg(
        long = "temporal-task-queue",
        env = "TEMPORAL_TASK_QUEUE",
        default_value = "learning-progress"
    )]
    pub task_queue: String,
}

impl TemporalConfig {
    pub fn new(address: impl Into<String>, task_queue: impl Into<String>) -> TemporalConfig {
        TemporalConfig {
            address: address.into(),
            namespace: "default".to_owned(),
            task_queue: task_queue.into(),
        }
    }
}

/// The one workflow per (learner, track).
pub fn workflow_id(user_id: Uuid, track_id: Uuid) -> String {
    format!("learning-path/{user_id}/{track_id}")
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("invalid Temporal address {address:?}: {reason}")]
    Address { address: String, reason: String },
    #[error("connecting to Temporal at {0}")]
    Connect(
        String,
        #[source] temporalio_client::errors::ClientConnectError,
    ),
    #[error("creating the Temporal client")]
    Client(#[source] temporalio_client::errors::ClientNewError),
}

/// Connects a client bound to the configured namespace.
pub async fn connect(config: &TemporalConfig, identity: &str) -> Result<Client, ConnectError> {
    let address = if config.address.contains("://") {
        config.address.clone()
    } else {
        format!("http://{}", config.address)
    };
    let url = Url::parse(&address).map_err(|e| ConnectError::Address {
        address: address.clone(),
        reason: e.to_string(),
    })?;
    let connection = Connection::connect(
        ConnectionOptions::new(url)
            .identity(format!("learning-progress-{identity}"))
            .build(),
    )
    .await
    .map_err(|e| ConnectError::Connect(address, e))?;
    Client::new(
        connection,
        ClientOptions::new(config.namespace.clone()).build(),
    )
    .map_err(ConnectError::Client)
}
