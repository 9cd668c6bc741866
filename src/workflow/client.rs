//! Starting, signalling, updating and querying `LearningPathWorkflow`s, for the CLI and
//! for anything else that drives learners (e.g. a simulation).

use sqlx::PgPool;
use temporalio_client::errors::{
    WorkflowGetResultError, WorkflowInteractionError, WorkflowQueryError, WorkflowStartError,
    WorkflowUpdateError,
};
use temporalio_client::{
    Client, WorkflowExecuteUpdateOptions, WorkflowGetResultOptions, WorkflowIdConflictPolicy,
    WorkflowIdReusePolicy, WorkflowQueryOptions, WorkflowSignalOptions, WorkflowStartOptions,
};
use uuid::Uuid;

use super::Lenient;
use super::{
    AssessmentRecorded, LearningPathInput, LearningPathWorkflow, PathOutcome, PathView,
    TemporalConfig, TrackUnitsChanged, UnitCompleted, workflow_id,
};
use crate::db;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("track {0} does not exist or has no units")]
    UnknownTrack(Uuid),
    #[error("reading the track's units")]
    Database(#[from] sqlx::Error),
    #[error("starting workflow {0}")]
    Start(String, #[source] WorkflowStartError),
    #[error("signalling workflow {0}")]
    Signal(String, #[source] WorkflowInteractionError),
    #[error("workflow {id} refused: {reason}")]
    Rejected { id: String, reason: String },
    #[error("updating workflow {0}")]
    Update(String, #[source] WorkflowUpdateError),
    #[error("querying workflow {0}")]
    Query(String, #[source] WorkflowQueryError),
    #[error("waiting for workflow {0}")]
    Result(String, #[source] WorkflowGetResultError),
}

/// Starts the learner's workflow on the track, with the track's units read from the
/// database. Starting one that already runs is not an error; returns the workflow id.
pub async fn start_track(
    client: &Client,
    config: &TemporalConfig,
    pool: &PgPool,
    user_id: Uuid,
    track_id: Uuid,
) -> Result<String, ClientError> {
    let unit_ids = db::tracks::unit_ids(pool, track_id).await?;
    if unit_ids.is_empty() {
        return Err(ClientError::UnknownTrack(track_id));
    }
    start(
        client,
        config,
        LearningPathInput::new(user_id, track_id, unit_ids),
    )
    .await
}

/// Starts the workflow with an explicit input (e.g. a shorter quiet period).
pub async fn start(
    client: &Client,
    config: &TemporalConfig,
    input: LearningPathInput,
) -> Result<String, ClientError> {
    let id = workflow_id(input.user_id, input.track_id);
    let options = WorkflowStartOptions::new(config.task_queue.clone(), id.clone())
        // a learner may start a track again after finishing it; seq continues from the ledger
        .id_reuse_policy(WorkflowIdReusePolicy::AllowDuplicate)
        .id_conflict_policy(WorkflowIdConflictPolicy::UseExisting)
        .build();
    client
        .start_workflow(LearningPathWorkflow::run, input, options)
        .await
        .map_err(|e| ClientError::Start(id.clone(), e))?;
    Ok(id)
}

pub async fn signal_unit_completed(
    client: &Client,
    user_id: Uuid,
    track_id: Uuid,
    unit_id: Uuid,
) -> Result<(), ClientError> {
    let id = workflow_id(user_id, track_id);
    client
        .get_workflow_handle::<LearningPathWorkflow>(id.clone())
        .signal(
            LearningPathWorkflow::unit_completed,
            Lenient::Valid(UnitCompleted { unit_id }),
            WorkflowSignalOptions::default(),
        )
        .await
        .map_err(|e| ClientError::Signal(id, e))
}

pub async fn signal_assessment_recorded(
    client: &Client,
    user_id: Uuid,
    track_id: Uuid,
    assessment: AssessmentRecorded,
) -> Result<(), ClientError> {
    let id = workflow_id(user_id, track_id);
    client
        .get_workflow_handle::<LearningPathWorkflow>(id.clone())
        .signal(
            LearningPathWorkflow::assessment_recorded,
            Lenient::Valid(assessment),
            WorkflowSignalOptions::default(),
        )
        .await
        .map_err(|e| ClientError::Signal(id, e))
}

/// Tells the learner's running workflow the track's new units; `false` when none runs.
pub(crate) async fn signal_track_units_changed(
    client: &Client,
    user_id: Uuid,
    track_id: Uuid,
    change: TrackUnitsChanged,
) -> Result<bool, ClientError> {
    let id = workflow_id(user_id, track_id);
    let signalled = client
        .get_workflow_handle::<LearningPathWorkflow>(id.clone())
        .signal(
            LearningPathWorkflow::track_units_changed,
            Lenient::Valid(change),
            WorkflowSignalOptions::default(),
        )
        .await;
    match signalled {
        Ok(()) => Ok(true),
        Err(WorkflowInteractionError::NotFound(_)) => Ok(false),
        Err(e) => Err(ClientError::Signal(id, e)),
    }
}

/// Completes a unit through the validated update: a unit outside the track or already
/// completed comes back as [`ClientError::Rejected`] and nothing is published.
pub async fn complete_unit(
    client: &Client,
    user_id: Uuid,
    track_id: Uuid,
    unit_id: Uuid,
) -> Result<PathView, ClientError> {
    let id = workflow_id(user_id, track_id);
    let result = client
        .get_workflow_handle::<LearningPathWorkflow>(id.clone())
        .execute_update(
            LearningPathWorkflow::complete_unit,
            UnitCompleted { unit_id },
            WorkflowExecuteUpdateOptions::default(),
        )
        .await;
    update_result(id, result)
}

/// Records an assessment attempt through the validated update; see [`complete_unit`].
pub async fn record_assessment(
    client: &Client,
    user_id: Uuid,
    track_id: Uuid,
    assessment: AssessmentRecorded,
) -> Result<PathView, ClientError> {
    let id = workflow_id(user_id, track_id);
    let result = client
        .get_workflow_handle::<LearningPathWorkflow>(id.clone())
        .execute_update(
            LearningPathWorkflow::record_assessment,
            assessment,
            WorkflowExecuteUpdateOptions::default(),
        )
        .await;
    update_result(id, result)
}

fn update_result(
    id: String,
    result: Result<PathView, WorkflowUpdateError>,
) -> Result<PathView, ClientError> {
    match result {
        Ok(view) => Ok(view),
        Err(WorkflowUpdateError::Failed(failure)) => Err(ClientError::Rejected {
            id,
            reason: failure.message,
        }),
        Err(e) => Err(ClientError::Update(id, e)),
    }
}

/// The workflow's view of the learner's progress (query `progress`).
pub async fn progress(
    client: &Client,
    user_id: Uuid,
    track_id: Uuid,
) -> Result<PathView, ClientError> {
    let id = workflow_id(user_id, track_id);
    client
        .get_workflow_handle::<LearningPathWorkflow>(id.clone())
        .query(
            LearningPathWorkflow::progress,
            (),
            WorkflowQueryOptions::default(),
        )
        .await
        .map_err(|e| ClientError::Query(id, e))
}

/// Waits until the workflow ends (following continue-as-new) and returns its outcome.
pub async fn result(
    client: &Client,
    user_id: Uuid,
    track_id: Uuid,
) -> Result<PathOutcome, ClientError> {
    let id = workflow_id(user_id, track_id);
    client
        .get_workflow_handle::<LearningPathWorkflow>(id.clone())
        .get_result(WorkflowGetResultOptions::default())
        .await
        .map_err(|e| ClientError::Result(id, e))
}
