//! Erasing a learner (GDPR's right to erasure, Supabase's "delete user"): everything the
//! service holds about them goes, and a tombstone keeps it gone.
//!
//! In this order, so that nothing re-creates what was removed:
//! 1. their running `LearningPathWorkflow`s are terminated, so they publish nothing more;
//! 2. their commands still waiting are purged from the commands stream (by subject);
//! 3. in one transaction, under the applier's locks of each of their tracks: their rows and
//!    ledger are deleted and the tombstone (`erased_learners`) is written. A batch of theirs
//!    the applier was applying commits before; any command of theirs that comes later (a
//!    redelivery, an activity that was publishing when its workflow was terminated) finds the
//!    tombstone and is refused (dead-lettered as `erased`), unless it starts a track again.
//!    A batch that committed before but whose events JetStream has not yet acknowledged (its
//!    ledger entries are not `announced`) would publish them after step 4 and leave them
//!    there: so while any of their changes is unannounced, the transaction is rolled back and
//!    retried until the appliers have published them (for at most `settle`; an applier that
//!    died meanwhile publishes nothing once the ledger is gone);
//! 4. their events are purged from the events stream (by subject), and their dead letters
//!    removed — after the transaction, so that what a batch in flight left there goes too;
//! 5. an `erased` event per track is published on their event subject, the marker that stays:
//!    every API replica forgets them, agents learn of it.
//!
//! Every step is idempotent: running it again (say, after it failed half-way) finishes the
//! job and removes whatever arrived meanwhile.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream::Stream};
use chrono::{DateTime, Utc};
use futures::{StreamExt as _, TryStreamExt as _};
use serde::Serialize;
use sqlx::PgPool;
use temporalio_client::errors::WorkflowInteractionError;
use temporalio_client::{Client, WorkflowListOptions, WorkflowTerminateOptions};
use uuid::Uuid;

use super::dlq::{self, DlqError, Filter};
use crate::applier::sql as applier_sql;
use crate::messaging::{self, NatsConfig};
use crate::model::ErasedEvent;
use crate::workflow::{LearningPathWorkflow, workflow_id};

/// What erasing needs to reach: the database, JetStream and Temporal.
pub struct Stores {
    pub pool: PgPool,
    pub js: jetstream::Context,
    pub nats: NatsConfig,
    pub temporal: Client,
}

/// What the service holds about one learner, found before anything is removed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Survey {
    pub user_id: Uuid,
    /// Every track they have anything on: a row, the ledger, a message, a workflow.
    pub tracks: BTreeSet<Uuid>,
    pub rows: u64,
    pub ledger_entries: u64,
    /// Their commands waiting in the commands stream.
    pub commands: u64,
    /// Their events kept in the events stream.
    pub events: u64,
    /// Sequences of their dead letters.
    pub dead_letters: Vec<u64>,
    /// Ids of their workflows that run now.
    pub workflows: BTreeSet<String>,
    /// Their last progress version per track (rows first, else the ledger's).
    #[serde(skip)]
    pub last_versions: BTreeMap<Uuid, i64>,
    /// When they were erased before, if they were.
    pub erased_before: Option<DateTime<Utc>>,
}

/// What one erasure removed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Erased {
    pub user_id: Uuid,
    pub erased_at: DateTime<Utc>,
    pub workflows_terminated: u64,
    pub commands: u64,
    pub rows: u64,
    pub ledger_entries: u64,
    pub events: u64,
    pub dead_letters: u64,
    /// `erased` events published, one per track.
    pub tombstones: u64,
    /// Their changes still unannounced when `settle` ran out: an applier that publishes them
    /// later leaves them in the events stream until erase runs again.
    pub unannounced: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum EraseError {
    #[error("reading the learner's data from the database")]
    Database(#[from] sqlx::Error),
    #[error("looking up stream {0}")]
    Stream(String, #[source] jetstream::context::GetStreamError),
    #[error("counting the learner's messages in stream {0}")]
    Count(String, #[source] jetstream::context::RequestError),
    #[error("purging {1} from stream {0}")]
    Purge(String, String, #[source] jetstream::stream::PurgeError),
    #[error("the learner's dead letters")]
    DeadLetters(#[from] DlqError),
    #[error("listing the learner's workflows in Temporal")]
    ListWorkflows(#[source] temporalio_client::errors::ClientError),
    #[error("terminating workflow {0}")]
    Terminate(String, #[source] WorkflowInteractionError),
    #[error("publishing the erasure of track {0} on the events stream")]
    Tombstone(Uuid, #[source] jetstream::context::PublishError),
}

/// Finds everything the service holds about `user_id`; changes nothing.
pub async fn survey(stores: &Stores, user_id: Uuid) -> Result<Survey, EraseError> {
    let mut survey = Survey {
        user_id,
        ..Survey::default()
    };
    let rows: Vec<(Uuid, i64)> =
        sqlx::query_as("select track_id, version from user_progress where user_id = $1")
            .bind(user_id)
            .fetch_all(&stores.pool)
            .await?;
    survey.rows = rows.len() as u64;
    let ledger: Vec<(Uuid, i64, Option<i64>)> = sqlx::query_as(
        "select track_id, count(*), max(version_after) from progress_ledger
         where user_id = $1 group by track_id",
    )
    .bind(user_id)
    .fetch_all(&stores.pool)
    .await?;
    for (track, entries, version) in ledger {
        survey.tracks.insert(track);
        survey.ledger_entries += entries as u64;
        survey.last_versions.insert(track, version.unwrap_or(0));
    }
    for (track, version) in rows {
        survey.tracks.insert(track);
        survey.last_versions.insert(track, version);
    }
    survey.erased_before =
        sqlx::query_scalar("select erased_at from erased_learners where user_id = $1")
            .bind(user_id)
            .fetch_optional(&stores.pool)
            .await?;

    let nats = &stores.nats;
    let commands = subjects(
        stores,
        &nats.commands_stream,
        &commands_filter(nats, user_id),
    )
    .await?;
    let events = subjects(stores, &nats.events_stream, &events_filter(nats, user_id)).await?;
    for (track, count) in commands.iter() {
        survey.tracks.insert(*track);
        survey.commands += count;
    }
    for (track, count) in events.iter() {
        survey.tracks.insert(*track);
        survey.events += count;
    }
    for letter in dead_letters(stores, user_id).await? {
        survey.tracks.extend(letter.track_id);
        survey.dead_letters.push(letter.seq);
    }
    survey.workflows = running_workflows(&stores.temporal, user_id).await?;
    for id in &survey.workflows {
        if let Some(track) = id.rsplit('/').next().and_then(|t| t.parse().ok()) {
            survey.tracks.insert(track);
        }
    }
    Ok(survey)
}

/// Erases the learner `survey` found, reporting each step to `step`; see the module's order.
/// It waits at most `settle` for the appliers to publish the learner's last changes.
pub async fn erase(
    stores: &Stores,
    survey: &Survey,
    settle: Duration,
    mut step: impl FnMut(&str),
) -> Result<Erased, EraseError> {
    let user_id = survey.user_id;
    let nats = &stores.nats;
    let mut erased = Erased {
        user_id,
        ..Erased::default()
    };

    // the workflows visibility lists, and those of every track known, which it may not list
    // yet (it lags behind a start by a moment)
    let mut workflows = survey.workflows.clone();
    workflows.extend(survey.tracks.iter().map(|t| workflow_id(user_id, *t)));
    for id in &workflows {
        if terminate(&stores.temporal, id).await? {
            erased.workflows_terminated += 1;
        }
    }
    step(&format!(
        "terminated {} running workflows",
        erased.workflows_terminated
    ));

    erased.commands = purge(
        stores,
        &nats.commands_stream,
        &commands_filter(nats, user_id),
    )
    .await?;
    step(&format!("purged {} waiting commands", erased.commands));

    let deadline = Instant::now() + settle;
    let mut waiting = false;
    let deleted = loop {
        let late = Instant::now() >= deadline;
        match delete_rows(&stores.pool, user_id, &survey.tracks, late).await? {
            Deletion::Done(deleted) => break deleted,
            Deletion::Unannounced(count) => {
                if !waiting {
                    step(&format!(
                        "waiting up to {}s for the appliers to publish {count} applied changes of theirs",
                        settle.as_secs()
                    ));
                    waiting = true;
                }
                tokio::time::sleep(SETTLE_POLL).await;
            }
        }
    };
    let Deleted {
        rows,
        ledger,
        unannounced,
        erased_at,
    } = deleted;
    (erased.rows, erased.ledger_entries, erased.erased_at) = (rows, ledger, erased_at);
    erased.unannounced = unannounced;
    step(&format!(
        "deleted {rows} progress rows and {ledger} ledger entries; tombstone at {erased_at}"
    ));
    if unannounced > 0 {
        step(&format!(
            "warning: {unannounced} changes of theirs were still unpublished after {}s; \
             if an applier publishes them later they stay in the events stream until erase runs again",
            settle.as_secs()
        ));
    }

    erased.events = purge(stores, &nats.events_stream, &events_filter(nats, user_id)).await?;
    step(&format!("purged {} events", erased.events));

    let letters = dead_letters(stores, user_id).await?;
    if let Some(stream) = dlq_stream(stores).await? {
        for letter in &letters {
            dlq::remove(&stream, letter.seq).await?;
            erased.dead_letters += 1;
        }
    }
    step(&format!("removed {} dead letters", erased.dead_letters));

    for track in &survey.tracks {
        let last = survey.last_versions.get(track).copied().unwrap_or(0);
        let event = ErasedEvent::new(user_id, *track, last, erased_at);
        let failed = |e| EraseError::Tombstone(*track, e);
        messaging::publish_erased(&stores.js, nats, &event)
            .await
            .map_err(failed)?
            .await
            .map_err(failed)?;
        erased.tombstones += 1;
    }
    step(&format!(
        "published {} erased events (one per track)",
        erased.tombstones
    ));
    Ok(erased)
}

/// `<prefix>.cmd.<user>.*`: the learner's commands on every track.
fn commands_filter(nats: &NatsConfig, user_id: Uuid) -> String {
    format!("{}.cmd.{user_id}.*", nats.subject_prefix)
}

/// `<prefix>.evt.<user>.*`: the learner's events on every track.
fn events_filter(nats: &NatsConfig, user_id: Uuid) -> String {
    format!("{}.evt.{user_id}.*", nats.subject_prefix)
}

async fn stream(stores: &Stores, name: &str) -> Result<Option<Stream>, EraseError> {
    match stores.js.get_stream(name).await {
        Ok(stream) => Ok(Some(stream)),
        Err(e)
            if matches!(
                e.kind(),
                jetstream::context::GetStreamErrorKind::JetStream(ref api)
                    if api.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(EraseError::Stream(name.to_owned(), e)),
    }
}

/// Messages per track on the subjects `filter` matches in `stream_name` (none when the
/// stream does not exist: nothing ever ran there).
async fn subjects(
    stores: &Stores,
    stream_name: &str,
    filter: &str,
) -> Result<BTreeMap<Uuid, u64>, EraseError> {
    let Some(stream) = stream(stores, stream_name).await? else {
        return Ok(BTreeMap::new());
    };
    let counted = |e| EraseError::Count(stream_name.to_owned(), e);
    let subjects: Vec<(String, usize)> = stream
        .info_with_subjects(filter)
        .await
        .map_err(counted)?
        .try_collect()
        .await
        .map_err(counted)?;
    let mut counts = BTreeMap::new();
    for (subject, count) in subjects {
        if let Some(track) = subject.rsplit('.').next().and_then(|t| t.parse().ok()) {
            *counts.entry(track).or_default() += count as u64;
        }
    }
    Ok(counts)
}

/// Removes the messages on the subjects `filter` matches from `stream_name`; how many.
async fn purge(stores: &Stores, stream_name: &str, filter: &str) -> Result<u64, EraseError> {
    let Some(stream) = stream(stores, stream_name).await? else {
        return Ok(0);
    };
    let response = stream
        .purge()
        .filter(filter)
        .await
        .map_err(|e| EraseError::Purge(stream_name.to_owned(), filter.to_owned(), e))?;
    Ok(response.purged)
}

async fn dlq_stream(stores: &Stores) -> Result<Option<Stream>, EraseError> {
    stream(stores, &stores.nats.dlq_stream).await
}

/// The learner's dead letters (named by their subject, or by the payload when the subject
/// does not say).
async fn dead_letters(stores: &Stores, user_id: Uuid) -> Result<Vec<dlq::DeadLetter>, EraseError> {
    let Some(mut stream) = dlq_stream(stores).await? else {
        return Ok(Vec::new());
    };
    let filter = Filter {
        user: Some(user_id),
        ..Filter::default()
    };
    Ok(dlq::list(&mut stream, &filter).await?)
}

/// The learner's `LearningPathWorkflow`s that run now, as Temporal's visibility lists them.
async fn running_workflows(client: &Client, user_id: Uuid) -> Result<BTreeSet<String>, EraseError> {
    let query = format!(
        "WorkflowType = 'LearningPathWorkflow' AND ExecutionStatus = 'Running' \
         AND WorkflowId STARTS_WITH 'learning-path/{user_id}/'"
    );
    let mut found = BTreeSet::new();
    let mut listed = client.list_workflows(query, WorkflowListOptions::default());
    while let Some(execution) = listed.next().await {
        let execution = execution.map_err(EraseError::ListWorkflows)?;
        found.insert(execution.id().to_owned());
    }
    Ok(found)
}

/// Terminates the workflow `id`'s current run; `false` when none runs.
async fn terminate(client: &Client, id: &str) -> Result<bool, EraseError> {
    let options = WorkflowTerminateOptions::builder()
        .reason("the learner was erased".to_owned())
        .build();
    match client
        .get_workflow_handle::<LearningPathWorkflow>(id.to_owned())
        .terminate(options)
        .await
    {
        Ok(()) => Ok(true),
        // never started, or closed already
        Err(WorkflowInteractionError::NotFound(_)) => Ok(false),
        Err(e) => Err(EraseError::Terminate(id.to_owned(), e)),
    }
}

/// How often erasure looks again whether the appliers published the learner's last changes.
const SETTLE_POLL: Duration = Duration::from_millis(100);

/// What the transaction of step 3 did.
enum Deletion {
    Done(Deleted),
    /// Nothing: this many of the learner's applied changes wait for JetStream's ack.
    Unannounced(u64),
}

struct Deleted {
    rows: u64,
    ledger: u64,
    /// Changes deleted while still unannounced (only when forced to).
    unannounced: u64,
    erased_at: DateTime<Utc>,
}

/// Deletes the learner's rows, ledger and track change events and writes their tombstone, in
/// one transaction under the applier's lock of each of their tracks. While a change of theirs
/// is still unannounced it changes nothing, unless `anyway`.
async fn delete_rows(
    pool: &PgPool,
    user_id: Uuid,
    tracks: &BTreeSet<Uuid>,
    anyway: bool,
) -> Result<Deletion, sqlx::Error> {
    let keys: Vec<(Uuid, Uuid)> = tracks.iter().map(|track| (user_id, *track)).collect();
    let mut tx = pool.begin().await?;
    applier_sql::lock_learners(&mut tx, &keys).await?;
    // under the locks, no batch of theirs commits: what is unannounced now is all there is
    let unannounced: i64 = sqlx::query_scalar(
        "select (select count(*) from progress_ledger
                  where user_id = $1 and outcome = 'applied' and not announced)
              + (select count(*) from track_change_events
                  where user_id = $1 and not announced)",
    )
    .bind(user_id)
    .fetch_one(&mut *tx)
    .await?;
    let unannounced = unannounced as u64;
    if unannounced > 0 && !anyway {
        tx.rollback().await?;
        return Ok(Deletion::Unannounced(unannounced));
    }
    let erased_at: DateTime<Utc> = sqlx::query_scalar(
        "insert into erased_learners (user_id, erased_at) values ($1, clock_timestamp())
         on conflict (user_id) do update set erased_at = excluded.erased_at
         returning erased_at",
    )
    .bind(user_id)
    .fetch_one(&mut *tx)
    .await?;
    let rows = sqlx::query("delete from user_progress where user_id = $1")
        .bind(user_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    let ledger = sqlx::query("delete from progress_ledger where user_id = $1")
        .bind(user_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    // the snapshots track changes kept for the learner (and any not yet published)
    sqlx::query("delete from track_change_events where user_id = $1")
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Deletion::Done(Deleted {
        rows,
        ledger,
        unannounced,
        erased_at,
    }))
}
