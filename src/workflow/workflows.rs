//! `LearningPathWorkflow`: one per (learner, track). It turns signals and updates into
//! [`ProgressCommand`]s with a gapless `seq`, publishes them one at a time through the
//! `update_user_progress` activity, and reconciles the projection before it ends.
//!
//! Deterministic by construction: no I/O, clocks or randomness except through the SDK.
//! Signal and update handlers only enqueue; the run loop is the single writer of `seq`.
//! What a signal may do — the checks and the commands it becomes — is plain code in [`rules`],
//! tested without Temporal.

mod rules;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use temporalio_sdk::workflows::{workflow, workflow_methods};
use temporalio_sdk::{
    ApplicationFailure, ContinueAsNewOptions, SyncWorkflowContext, WorkflowContext,
    WorkflowContextView, WorkflowResult,
};
use uuid::Uuid;

use super::activities::{
    ProgressActivities, PublishReceipt, ReconcileRequest, Republish, ResumePoint, ResumeRequest,
    publish_options, reconcile_options,
};
use super::lenient::Lenient;
use crate::model::{Action, ProgressCommand};

/// Namespace of the UUIDv5 command ids; changing it would re-identify every future command.
pub const COMMAND_ID_NAMESPACE: Uuid = Uuid::from_u128(0x5b0e_7f3c_2d4a_4c61_9e8f_61a2_b3c4_d5e6);

/// Reconcile waits double between rounds up to this, so a long applier outage is outlasted
/// without hammering it, and a re-publish eventually falls outside JetStream's duplicate window.
const MAX_RECONCILE_INTERVAL: Duration = Duration::from_secs(60);

/// While the projection still lacks commands, reconcile passes repeat with the quiet period
/// doubling up to this: an applier down for days costs a few activities an hour.
const MAX_RECONCILE_WAIT: Duration = Duration::from_secs(600);

/// Rounds of the reconcile that follows `track_completed` before the passes above take over.
const FINAL_RECONCILE_ROUNDS: u32 = 10;

/// Marks histories written since reconcile stopped giving up: a run that started before it
/// replays as it ran (one quiet-period pass, a bounded final reconcile), so upgrading the
/// workers does not break runs in flight.
const RECONCILE_UNTIL_APPLIED: &str = "reconcile-until-applied";

/// Marks histories written since reconcile re-publishes a lost command as a new copy (its own
/// `Nats-Msg-Id`): before, JetStream dropped the re-publish as a duplicate of the lost
/// original for as long as the duplicate window (2 minutes by default), and the repair waited
/// that long.
const REPUBLISH_AS_COPY: &str = "republish-as-copy";

/// The deterministic id of the command `seq` of a workflow.
pub fn command_id(workflow_id: &str, seq: i64) -> Uuid {
    Uuid::new_v5(
        &COMMAND_ID_NAMESPACE,
        format!("{workflow_id}/{seq}").as_bytes(),
    )
}

/// Start input: `{"user_id","track_id","unit_ids":[..]}`; every other field is optional so
/// other SDKs may omit them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LearningPathInput {
    pub user_id: Uuid,
    pub track_id: Uuid,
    /// The track's units in order.
    pub unit_ids: Vec<Uuid>,
    /// Reconcile after this long without new signals, while something is unconfirmed.
    #[serde(default = "default_quiet_period_ms")]
    pub quiet_period_ms: u64,
    /// Unset (the default): reconcile until the projection has every command, however long
    /// that takes. Set: the run ends after this many final rounds even with commands missing
    /// (they are listed in its outcome) — for benches and tests that run no applier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconcile_rounds: Option<u32>,
    /// The first wait between reconcile rounds; it doubles up to a minute.
    #[serde(default = "default_reconcile_interval_ms")]
    pub reconcile_interval_ms: u64,
    /// Commands one run publishes before it continues as new, keeping each run's history far
    /// below Temporal's limits; the state carries over.
    #[serde(default = "default_commands_per_run")]
    pub commands_per_run: u32,
    /// Set only by continue-as-new.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carry: Option<Carry>,
}

fn default_commands_per_run() -> u32 {
    500
}

fn default_quiet_period_ms() -> u64 {
    60_000
}

fn default_reconcile_interval_ms() -> u64 {
    2_000
}

impl LearningPathInput {
    pub fn new(user_id: Uuid, track_id: Uuid, unit_ids: Vec<Uuid>) -> LearningPathInput {
        LearningPathInput {
            user_id,
            track_id,
            unit_ids,
            quiet_period_ms: default_quiet_period_ms(),
            reconcile_rounds: None,
            reconcile_interval_ms: default_reconcile_interval_ms(),
            commands_per_run: default_commands_per_run(),
            carry: None,
        }
    }
}

/// The state a run hands to the next one on continue-as-new.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Carry {
    /// Runs before this one.
    #[serde(default)]
    pub runs: u32,
    pub seq: i64,
    pub completed_unit_ids: BTreeSet<Uuid>,
    pub attempt_ids: BTreeSet<Uuid>,
    #[serde(default)]
    pub attempts_per_unit: BTreeMap<Uuid, usize>,
    pub track_completed: bool,
    /// The version of the track's unit list the run held (see [`TrackUnitsChanged`]).
    #[serde(default)]
    pub units_version: i64,
    /// Published but not yet seen in the projection: kept so reconcile can rebuild them.
    pub unconfirmed: Vec<ProgressCommand>,
    pub inbox: Vec<Inbound>,
}

/// Signal `unit_completed` and update `complete_unit`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitCompleted {
    pub unit_id: Uuid,
}

/// Signal `assessment_recorded` and update `record_assessment`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssessmentRecorded {
    pub unit_id: Uuid,
    pub attempt_id: Uuid,
    pub score: f64,
    pub max_score: f64,
    pub passed: bool,
}

/// Signal `track_units_changed`: the track's units after a change (`tracks add-unit`,
/// `remove-unit`, `move-unit`). From then on the run accepts the new units, refuses the removed
/// ones and follows the new order; a list older than the one it holds is ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrackUnitsChanged {
    /// The catalogue's `units_version` of this list; it grows with every change.
    pub units_version: i64,
    /// The track's units in their new order.
    pub unit_ids: Vec<Uuid>,
}

/// A signal or update accepted by a handler, waiting for the run loop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Inbound {
    UnitCompleted {
        unit_id: Uuid,
        at: DateTime<Utc>,
    },
    AssessmentRecorded {
        #[serde(flatten)]
        assessment: AssessmentRecorded,
        at: DateTime<Utc>,
    },
    /// The unit list changed: if every unit left is done, the track is completed.
    UnitsChanged {
        at: DateTime<Utc>,
    },
}

impl Inbound {
    fn at(&self) -> DateTime<Utc> {
        match self {
            Inbound::UnitCompleted { at, .. }
            | Inbound::AssessmentRecorded { at, .. }
            | Inbound::UnitsChanged { at } => *at,
        }
    }
}

/// Query `progress`: the workflow's view, which may be ahead of the projection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PathView {
    pub user_id: Uuid,
    pub track_id: Uuid,
    pub unit_ids: Vec<Uuid>,
    /// In track order.
    pub completed_unit_ids: Vec<Uuid>,
    pub current_unit_id: Option<Uuid>,
    /// The highest `seq` published so far.
    pub seq: i64,
    /// Signals and updates accepted but not yet published.
    pub pending: usize,
    pub track_completed: bool,
    /// Published seqs no reconcile pass has yet found in the projection (a pass runs after
    /// each quiet period); reconcile re-publishes those still missing.
    #[serde(default)]
    pub unconfirmed_seqs: Vec<i64>,
    /// Signals of this run whose payload was not of the expected shape, ignored.
    #[serde(default)]
    pub ignored_signals: u32,
}

/// The workflow's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PathOutcome {
    pub user_id: Uuid,
    pub track_id: Uuid,
    pub seq: i64,
    pub completed_unit_ids: Vec<Uuid>,
    /// Seqs the projection still lacked when reconcile gave up; empty when all is applied.
    pub unreconciled_seqs: Vec<i64>,
    /// Runs of this execution chain, the last included (more than one after continue-as-new).
    #[serde(default)]
    pub runs: u32,
}

#[workflow]
pub struct LearningPathWorkflow {
    input: LearningPathInput,
    /// Resumed from the projection and `track_started` published.
    started: bool,
    seq: i64,
    completed: BTreeSet<Uuid>,
    attempts: BTreeSet<Uuid>,
    /// Attempts published per unit, to refuse one beyond what the projection keeps.
    attempts_per_unit: BTreeMap<Uuid, usize>,
    track_completed: bool,
    /// The catalogue version of `input.unit_ids`; 0: the list the run was started with.
    units_version: i64,
    unconfirmed: BTreeMap<i64, ProgressCommand>,
    inbox: VecDeque<Inbound>,
    /// Something was published since the last reconcile.
    dirty: bool,
    published_this_run: u32,
    /// Runs before this one (continue-as-new).
    previous_runs: u32,
    /// Signals whose payload was not of the expected shape, this run.
    ignored_signals: u32,
    /// Reconcile passes in a row that left commands unconfirmed; lengthens the next wait.
    failed_reconciles: u32,
    /// The reconcile after `track_completed` ran its rounds in this run.
    final_reconciled: bool,
}

#[workflow_methods]
impl LearningPathWorkflow {
    #[init]
    pub fn new(_ctx: &WorkflowContextView, input: LearningPathInput) -> Self {
        Self::from_input(input)
    }

    #[run(name = "LearningPathWorkflow")]
    pub async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<PathOutcome> {
        if !ctx.state(|s| s.started) {
            start(ctx).await?;
        }
        loop {
            while let Some(inbound) = ctx.state_mut(|s| s.inbox.pop_front()) {
                match ctx.state(|s| s.plan(&inbound)) {
                    Ok(actions) => {
                        for action in actions {
                            publish(ctx, action, inbound.at()).await?;
                        }
                    }
                    Err(reason) if !ctx.is_replaying() => {
                        tracing::warn!(workflow.id = ctx.workflow_id(), %reason, "ignored a signal");
                    }
                    Err(_) => {}
                }
            }

            if ctx.state(|s| s.track_completed) {
                let limit = ctx.state(|s| s.input.reconcile_rounds);
                let unreconciled_seqs = if ctx.state(|s| s.final_reconciled) {
                    ctx.state(|s| s.unconfirmed.keys().copied().collect())
                } else {
                    let rounds = limit.unwrap_or(FINAL_RECONCILE_ROUNDS);
                    let left = reconcile(ctx, rounds).await?;
                    ctx.state_mut(|s| s.final_reconciled = true);
                    left
                };
                if !unreconciled_seqs.is_empty()
                    && limit.is_none()
                    && ctx.patched(RECONCILE_UNTIL_APPLIED)
                {
                    // not done until the projection has every command: the passes below
                    // go on, with a growing wait
                    ctx.state_mut(|s| s.dirty = true);
                    wait_and_reconcile(ctx).await?;
                    continue;
                }
                let handlers = ctx.clone();
                ctx.wait_condition(move |_| handlers.all_handlers_finished())
                    .await?;
                return Ok(ctx.state(|s| PathOutcome {
                    user_id: s.input.user_id,
                    track_id: s.input.track_id,
                    seq: s.seq,
                    completed_unit_ids: s.view().completed_unit_ids,
                    unreconciled_seqs,
                    runs: s.previous_runs + 1,
                }));
            }

            if ctx.state(|s| s.published_this_run >= s.input.commands_per_run.max(1))
                || ctx.continue_as_new_suggested()
            {
                // one check without re-publishing, only to carry fewer commands over
                reconcile(ctx, 0).await?;
                let handlers = ctx.clone();
                ctx.wait_condition(move |_| handlers.all_handlers_finished())
                    .await?;
                let next = ctx.state(|s| s.carry_over());
                ctx.continue_as_new(next, ContinueAsNewOptions::default())?;
            }

            if ctx.state(|s| s.dirty) {
                wait_and_reconcile(ctx).await?;
            } else {
                ctx.wait_condition(|s: &Self| !s.inbox.is_empty()).await?;
            }
        }
    }

    /// Signals cannot be refused: an invalid one — a payload of the wrong shape included — is
    /// logged and ignored.
    #[signal(name = "unit_completed")]
    pub fn unit_completed(
        &mut self,
        ctx: &mut SyncWorkflowContext<Self>,
        input: Lenient<UnitCompleted>,
    ) {
        match input {
            Lenient::Valid(input) => {
                self.enqueue(ctx.workflow_time(), |at| Inbound::UnitCompleted {
                    unit_id: input.unit_id,
                    at,
                })
            }
            Lenient::Invalid { reason } => self.ignore_malformed(ctx, "unit_completed", &reason),
        }
    }

    #[signal(name = "assessment_recorded")]
    pub fn assessment_recorded(
        &mut self,
        ctx: &mut SyncWorkflowContext<Self>,
        input: Lenient<AssessmentRecorded>,
    ) {
        match input {
            Lenient::Valid(input) => {
                self.enqueue(ctx.workflow_time(), |at| Inbound::AssessmentRecorded {
                    assessment: input,
                    at,
                })
            }
            Lenient::Invalid { reason } => {
                self.ignore_malformed(ctx, "assessment_recorded", &reason)
            }
        }
    }

    #[signal(name = "track_units_changed")]
    pub fn track_units_changed(
        &mut self,
        ctx: &mut SyncWorkflowContext<Self>,
        input: Lenient<TrackUnitsChanged>,
    ) {
        match input {
            Lenient::Valid(change) => {
                if self.take_units(change.units_version, change.unit_ids) {
                    self.enqueue(ctx.workflow_time(), |at| Inbound::UnitsChanged { at });
                }
            }
            Lenient::Invalid { reason } => {
                self.ignore_malformed(ctx, "track_units_changed", &reason)
            }
        }
    }

    #[query(name = "progress")]
    pub fn progress(&self, _ctx: &WorkflowContextView) -> PathView {
        self.view()
    }

    #[update_validator(complete_unit)]
    fn validate_complete_unit(
        &self,
        _ctx: &WorkflowContextView,
        input: &UnitCompleted,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        if self.units_unknown(input.unit_id) {
            return Ok(());
        }
        self.check_unit_update(input.unit_id)?;
        Ok(())
    }

    /// Like the signal, but a bad request is refused: by the validator before it enters the
    /// history, or, for what only the resumed state shows (a unit a previous run of this id
    /// completed), once the run has resumed.
    #[update(name = "complete_unit")]
    pub async fn complete_unit(
        ctx: &mut WorkflowContext<Self>,
        input: UnitCompleted,
    ) -> Result<PathView, Box<dyn std::error::Error + Send + Sync>> {
        ctx.wait_condition(|s: &Self| s.started).await?;
        let at = ctx.workflow_time();
        ctx.state_mut(|s| {
            s.check_unit_update(input.unit_id)?;
            s.enqueue(at, |at| Inbound::UnitCompleted {
                unit_id: input.unit_id,
                at,
            });
            Ok(s.view())
        })
    }

    #[update_validator(record_assessment)]
    fn validate_record_assessment(
        &self,
        _ctx: &WorkflowContextView,
        input: &AssessmentRecorded,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        if self.units_unknown(input.unit_id) {
            return Ok(());
        }
        self.check_assessment_update(input)?;
        Ok(())
    }

    #[update(name = "record_assessment")]
    pub async fn record_assessment(
        ctx: &mut WorkflowContext<Self>,
        input: AssessmentRecorded,
    ) -> Result<PathView, Box<dyn std::error::Error + Send + Sync>> {
        ctx.wait_condition(|s: &Self| s.started).await?;
        let at = ctx.workflow_time();
        ctx.state_mut(|s| {
            s.check_assessment_update(&input)?;
            s.enqueue(at, |at| Inbound::AssessmentRecorded {
                assessment: input,
                at,
            });
            Ok(s.view())
        })
    }
}

/// Resumes where the projection left off (a previous run of this id may have published),
/// then announces the track.
async fn start(ctx: &mut WorkflowContext<LearningPathWorkflow>) -> WorkflowResult<()> {
    let request = ctx.state(|s| ResumeRequest {
        user_id: s.input.user_id,
        track_id: s.input.track_id,
    });
    let resumed: ResumePoint = ctx
        .execute_activity(
            ProgressActivities::resume_progress,
            request,
            reconcile_options(),
        )
        .await?;
    ctx.state_mut(|s| {
        s.seq = resumed.last_seq;
        // the track changed after the caller read its units: the catalogue's list wins
        s.take_units(resumed.units_version, resumed.unit_ids);
        s.completed = resumed
            .completed_unit_ids
            .into_iter()
            .filter(|u| s.input.unit_ids.contains(u))
            .collect();
    });
    let at = now(ctx)?;
    let current_unit_id = ctx.state(|s| s.next_unit(None));
    publish(ctx, Action::TrackStarted { current_unit_id }, at).await?;
    if current_unit_id.is_none() {
        publish(ctx, Action::TrackCompleted {}, at).await?;
    }
    ctx.state_mut(|s| s.started = true);
    Ok(())
}

/// Publishes the next command and commits its `seq` only once JetStream acknowledged it.
async fn publish(
    ctx: &mut WorkflowContext<LearningPathWorkflow>,
    action: Action,
    occurred_at: DateTime<Utc>,
) -> WorkflowResult<()> {
    let workflow_id = ctx.workflow_id().to_owned();
    let command = ctx.state(|s| {
        let seq = s.seq + 1;
        ProgressCommand {
            command_id: command_id(&workflow_id, seq),
            user_id: s.input.user_id,
            track_id: s.input.track_id,
            seq,
            occurred_at,
            action,
        }
    });
    let receipt = send(ctx, &command).await?;
    if !ctx.is_replaying() {
        tracing::debug!(
            workflow.id = workflow_id,
            command.id = %command.command_id,
            command.seq = command.seq,
            nats.seq = receipt.sequence,
            "published {}",
            command.kind()
        );
    }
    ctx.state_mut(|s| s.record_published(command));
    Ok(())
}

/// Runs the publishing activity for `command` and returns JetStream's receipt.
async fn send(
    ctx: &mut WorkflowContext<LearningPathWorkflow>,
    command: &ProgressCommand,
) -> WorkflowResult<PublishReceipt> {
    Ok(ctx
        .execute_local_activity(
            ProgressActivities::update_user_progress,
            command.clone(),
            publish_options(),
        )
        .await?)
}

/// Publishes a copy of `command` that JetStream stores even while the original's
/// `Nats-Msg-Id` is in its duplicate window.
async fn send_copy(
    ctx: &mut WorkflowContext<LearningPathWorkflow>,
    command: &ProgressCommand,
    copy: i64,
) -> WorkflowResult<PublishReceipt> {
    let request = Republish {
        command: command.clone(),
        copy,
    };
    Ok(ctx
        .execute_local_activity(
            ProgressActivities::republish_command,
            request,
            publish_options(),
        )
        .await?)
}

/// A copy number no earlier re-publish of this workflow used: the workflow time in
/// milliseconds (deterministic on replay), the round where the time is unknown.
fn copy_number(time: Option<SystemTime>, round: u32) -> i64 {
    time.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(i64::from(round), |d| d.as_millis() as i64)
}

/// Asks the projection which published seqs it lacks and re-publishes them (same command ids,
/// as new copies for JetStream), up to
/// `rounds` times with a growing wait between (the first round only looks, see below);
/// returns the seqs still missing.
async fn reconcile(
    ctx: &mut WorkflowContext<LearningPathWorkflow>,
    rounds: u32,
) -> WorkflowResult<Vec<i64>> {
    let mut interval = Duration::from_millis(ctx.state(|s| s.input.reconcile_interval_ms));
    for round in 0..=rounds {
        if ctx.state(|s| s.unconfirmed.is_empty()) {
            return Ok(Vec::new());
        }
        let request = ctx.state(|s| ReconcileRequest {
            user_id: s.input.user_id,
            track_id: s.input.track_id,
            highest_seq: s.seq,
            seqs: Some(s.unconfirmed.keys().copied().collect()),
        });
        let missing: Vec<i64> = ctx
            .execute_activity(
                ProgressActivities::reconcile_progress,
                request,
                reconcile_options(),
            )
            .await?;
        let missing: BTreeSet<i64> = missing.into_iter().collect();
        let unconfirmed = ctx.state_mut(|s| {
            s.unconfirmed.retain(|seq, _| missing.contains(seq));
            s.unconfirmed.values().cloned().collect::<Vec<_>>()
        });
        if unconfirmed.is_empty() || round == rounds {
            break;
        }
        // the first round only looks: right after a publish the applier is usually just
        // behind, and re-publishing everything it has not applied yet would double the work
        let to_publish = if round == 0 { Vec::new() } else { unconfirmed };
        let copy = match to_publish.is_empty() || !ctx.patched(REPUBLISH_AS_COPY) {
            true => None,
            false => Some(copy_number(ctx.workflow_time(), round)),
        };
        for command in to_publish {
            let receipt = match copy {
                Some(copy) => send_copy(ctx, &command, copy).await?,
                None => send(ctx, &command).await?,
            };
            if !ctx.is_replaying() {
                tracing::info!(
                    workflow.id = ctx.workflow_id(),
                    command.id = %command.command_id,
                    command.seq = command.seq,
                    nats.seq = receipt.sequence,
                    duplicate = receipt.duplicate,
                    "re-published a command the projection lacks"
                );
            }
        }
        ctx.timer(interval).await;
        interval = (interval * 2).min(MAX_RECONCILE_INTERVAL);
    }
    let unreconciled: Vec<i64> = ctx.state(|s| s.unconfirmed.keys().copied().collect());
    if !unreconciled.is_empty() && !ctx.is_replaying() && rounds > 1 {
        tracing::warn!(
            workflow.id = ctx.workflow_id(),
            seqs = ?unreconciled,
            "the projection still lacks commands after reconciling"
        );
    }
    Ok(unreconciled)
}

/// Once no signal came for the quiet period (doubled after every pass that left commands
/// unconfirmed, up to [`MAX_RECONCILE_WAIT`]), reconciles; a signal arriving first ends the
/// wait. Logs a learner whose projection still lacks commands.
async fn wait_and_reconcile(ctx: &mut WorkflowContext<LearningPathWorkflow>) -> WorkflowResult<()> {
    let wait = ctx.state(|s| s.reconcile_wait());
    let quiet_elapsed = temporalio_sdk::workflows::select! {
        _ = ctx.timer(wait) => true,
        r = ctx.wait_condition(|s: &LearningPathWorkflow| !s.inbox.is_empty()) => { r?; false }
    };
    if !quiet_elapsed {
        return Ok(());
    }
    let left = reconcile(ctx, 2).await?;
    let keep_going = !left.is_empty() && ctx.patched(RECONCILE_UNTIL_APPLIED);
    let passes = ctx.state_mut(|s| {
        if !keep_going {
            s.dirty = false;
            s.failed_reconciles = 0;
        } else {
            s.failed_reconciles += 1;
        }
        s.failed_reconciles
    });
    if keep_going && !ctx.is_replaying() {
        let next = ctx.state(|s| s.reconcile_wait());
        tracing::warn!(
            workflow.id = ctx.workflow_id(),
            seqs = ?left,
            passes,
            next_in_secs = next.as_secs(),
            "the projection still lacks published commands; reconciling again"
        );
    }
    Ok(())
}

fn now(ctx: &WorkflowContext<LearningPathWorkflow>) -> WorkflowResult<DateTime<Utc>> {
    ctx.workflow_time()
        .map(DateTime::<Utc>::from)
        .ok_or_else(|| ApplicationFailure::new("workflow time unavailable").into())
}
