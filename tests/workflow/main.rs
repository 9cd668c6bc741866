//! The learning-path workflow on a real Temporal dev server, NATS and PostgreSQL: the exact
//! commands it publishes, its validated updates, its query, and JetStream deduplication.
//! Every test has its own task queue, streams and database.

#[path = "../common/mod.rs"]
mod common;

mod commands;
mod end_to_end;
mod publishing;
mod reconcile;
mod runs;

use std::time::Duration;

use async_nats::jetstream;
use common::temporal::with_worker;
use common::{delete_streams, eventually, isolated_nats, read_stream, stream_len};
use learning_progress::applier::{self, ApplierConfig, Seams};
use learning_progress::db::progress::get_user_progress;
use learning_progress::db::tracks::create_track;
use learning_progress::messaging::{self, NatsConfig, header_str};
use learning_progress::model::{Action, ProgressCommand, Status, decode_command};
use learning_progress::workflow::client::{self, ClientError};
use learning_progress::workflow::{
    self, AssessmentRecorded, LearningPathInput, LearningPathWorkflow, PublishFailure, command_id,
    workflow_id,
};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);

/// The commands on the stream, in stream order, checked against their headers.
async fn published(
    js: &jetstream::Context,
    nats: &NatsConfig,
    count: usize,
) -> Vec<ProgressCommand> {
    let messages = eventually(WAIT, "the commands stored", || async {
        let messages = common::stored(js, &nats.commands_stream).await;
        (messages.len() >= count).then_some(messages)
    })
    .await;
    messages
        .iter()
        .map(|m| {
            let command = decode_command(&m.payload).expect("a valid command");
            let id = command.command_id.to_string();
            let kind = format!("learning.progress.command.{}.v1", command.kind());
            assert_eq!(
                header_str(Some(&m.headers), "Nats-Msg-Id"),
                Some(id.as_str())
            );
            assert_eq!(header_str(Some(&m.headers), "ce-id"), Some(id.as_str()));
            assert_eq!(header_str(Some(&m.headers), "ce-type"), Some(kind.as_str()));
            command
        })
        .collect()
}

/// The event types of a workflow's history so far; `None` while it cannot be read.
async fn history(
    handle: &temporalio_client::WorkflowHandle<temporalio_client::Client, LearningPathWorkflow>,
) -> Option<Vec<temporalio_common::protos::temporal::api::history::v1::HistoryEvent>> {
    handle
        .fetch_history(temporalio_client::WorkflowFetchHistoryOptions::default())
        .into_events()
        .await
        .ok()
}

/// Runs an applier on the test's streams until the returned token is cancelled.
fn spawn_applier(
    js: &jetstream::Context,
    pool: &PgPool,
    nats: &NatsConfig,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<Result<(), applier::ApplierError>>,
) {
    let stop = CancellationToken::new();
    let applier = tokio::spawn(applier::run(
        js.clone(),
        pool.clone(),
        nats.clone(),
        ApplierConfig::default(),
        Seams::default(),
        stop.clone(),
    ));
    (stop, applier)
}

/// The ledger's (seq, command id) of one learner, in seq order.
async fn ledger_seqs(pool: &PgPool, user: Uuid, track: Uuid) -> Vec<(i64, Uuid)> {
    sqlx::query_as(
        "select seq, command_id from progress_ledger
         where user_id = $1 and track_id = $2 order by seq, command_id",
    )
    .bind(user)
    .bind(track)
    .fetch_all(pool)
    .await
    .unwrap()
}
