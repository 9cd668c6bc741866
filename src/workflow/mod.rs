//! Temporal: the `LearningPathWorkflow` that turns a learner's signals into progress commands,
//! its activities (publishing to JetStream, reading the projection back), the worker that
//! hosts both, and client helpers to start, signal and query the workflow.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `TEMPORAL_ADDRESS` | `127.0.0.1:7233`, or the profile's | frontend `host:port` (or a URL) |
//! | `TEMPORAL_NAMESPACE` | `default`, or the profile's | namespace of the workflows |
//! | `TEMPORAL_TASK_QUEUE` | `learning-progress` | task queue the workers share |
//!
//! TLS and Temporal Cloud's API keys and client certificates: [`security`].

mod activities;
pub mod cli;
pub mod client;
mod lenient;
pub(crate) mod security;
mod worker;
mod workflows;

pub use activities::{
    ProgressActivities, PublishFailure, PublishReceipt, ReconcileRequest, Republish, ResumePoint,
    ResumeRequest, publish, publish_copy,
};
pub use lenient::{Lenient, json_payload};
pub(crate) use security::{SecurityError, TemporalSecurity};
pub use worker::{WorkerDeps, WorkerError, run, serve};
pub use workflows::{
    AssessmentRecorded, COMMAND_ID_NAMESPACE, Carry, Inbound, LearningPathInput,
    LearningPathWorkflow, PathOutcome, PathView, TrackUnitsChanged, UnitCompleted, command_id,
};

use temporalio_client::{Client, ClientOptions, Connection, ConnectionOptions};
use uuid::Uuid;

#[derive(Debug, Clone, clap::Args)]
pub struct TemporalConfig {
    /// Temporal frontend, `host:port` or a URL; default: the Temporal profile's address
    /// (`TEMPORAL_PROFILE`), else 127.0.0.1:7233.
    #[arg(
        long = "temporal-address",
        env = "TEMPORAL_ADDRESS",
        value_name = "ADDRESS"
    )]
    pub address: Option<String>,

    /// Namespace the workflows live in; default: the Temporal profile's, else `default`.
    #[arg(
        long = "temporal-namespace",
        env = "TEMPORAL_NAMESPACE",
        value_name = "NAMESPACE"
    )]
    pub namespace: Option<String>,

    /// Task queue shared by every worker of this service.
    #[arg(
        long = "temporal-task-queue",
        env = "TEMPORAL_TASK_QUEUE",
        default_value = "learning-progress"
    )]
    pub task_queue: String,

    /// TLS and credentials; boxed, as only Temporal Cloud or a TLS frontend sets them, so the
    /// subcommands carrying a Temporal configuration stay small.
    #[command(flatten)]
    pub security: Box<TemporalSecurity>,
}

impl TemporalConfig {
    pub fn new(address: impl Into<String>, task_queue: impl Into<String>) -> TemporalConfig {
        TemporalConfig {
            address: Some(address.into()),
            namespace: None,
            task_queue: task_queue.into(),
            security: Box::default(),
        }
    }

    /// The address given, else the built-in default (a profile's is not read here): what a
    /// process started with these settings is given as `TEMPORAL_ADDRESS`.
    pub fn address_or_default(&self) -> &str {
        self.address.as_deref().unwrap_or(security::DEFAULT_ADDRESS)
    }
}

/// The one workflow per (learner, track).
pub fn workflow_id(user_id: Uuid, track_id: Uuid) -> String {
    format!("learning-path/{user_id}/{track_id}")
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Settings(#[from] SecurityError),
    #[error("connecting to Temporal at {0}")]
    Connect(
        String,
        #[source] temporalio_client::errors::ClientConnectError,
    ),
    #[error("creating the Temporal client")]
    Client(#[source] temporalio_client::errors::ClientNewError),
}

/// Connects a client bound to the configured namespace, over TLS and with the API key or
/// client certificate when configured ([`security`]).
pub async fn connect(config: &TemporalConfig, identity: &str) -> Result<Client, ConnectError> {
    let target = config
        .security
        .target(config.address.as_deref(), config.namespace.as_deref())?;
    let address = target.url.to_string();
    let connection = Connection::connect(
        ConnectionOptions::new(target.url)
            .identity(format!("learning-progress-{identity}"))
            .maybe_tls_options(target.tls)
            .maybe_api_key(target.api_key)
            .build(),
    )
    .await
    .map_err(|e| ConnectError::Connect(address, e))?;
    Client::new(connection, ClientOptions::new(target.namespace).build())
        .map_err(ConnectError::Client)
}
