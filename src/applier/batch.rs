//! One batch of decoded commands applied in one PostgreSQL transaction, each learner's in
//! `seq` order.
//!
//! Under per-learner advisory locks taken in key order (so concurrent appliers cannot
//! deadlock), it reads the affected rows, how far each learner's ledger goes, and the ledger
//! entries of the batch's ids and seqs; decides every command's outcome with the pure
//! [`UserProgress::apply`]; and writes the changed rows and the ledger rows with one batched
//! statement each.
//!
//! A learner's commands are applied strictly in `seq` order: a command whose predecessor is
//! not in the ledger yet is [`Outcome::Deferred`] (redelivered later), so outcomes, versions
//! and events are those of seq order whatever the delivery order, redeliveries or which
//! instance applied them. The ledger makes it idempotent: a command whose id is there is a
//! duplicate, and an id or seq already taken by another command is a conflict, never
//! silently deduplicated.

use std::collections::{BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::lock_turn::LockTurn;
use super::sql::{self, LedgerEntry, LedgerRow, Rejection};
use super::track_units::{TrackUnits, UnitSets, check_units};
use crate::model::{
    Action, MAX_ATTEMPTS_PER_UNIT, ProgressCommand, ProgressEvent, ProgressView, UserProgress,
};

pub(super) type Key = (Uuid, Uuid);

/// What happened to one command of the batch.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    /// It changed the row; `event` announces the snapshot right after it.
    Applied(Box<ProgressEvent>),
    /// It was new but changed nothing (e.g. a unit completed twice under two ids).
    Noop,
    /// Its id was in the ledger already. `event` re-announces, under the same id, the exact
    /// snapshot the original produced (rebuilt from the ledger) when it was applied, in case
    /// that event was never published.
    Duplicate(Option<Box<ProgressEvent>>),
    /// It can never apply: dead-lettered for `reason` (and, unless it conflicts with another
    /// command's id or seq, recorded in the ledger as rejected, so a redelivery re-sends it).
    Rejected { reason: String, error: String },
    /// Its learner was erased (`erase`) and it does not start a track again: acked and kept
    /// nowhere — no ledger row, no dead letter — so that nothing of the learner is stored again.
    Erased { error: String },
    /// A command of the same learner with a lower seq is not in the ledger yet.
    Deferred { waiting_for: i64 },
}

impl Outcome {
    fn rejected(reason: &str, error: String) -> Outcome {
        Outcome::Rejected {
            reason: reason.to_owned(),
            error,
        }
    }
}

/// Applies `commands` (in stream order) and returns one outcome per command, same order.
pub(super) async fn apply_batch(
    pool: &PgPool,
    track_units: &TrackUnits,
    turn: &LockTurn,
    commands: &[ProgressCommand],
    timeouts: &sql::Timeouts,
) -> Result<Vec<Outcome>, sqlx::Error> {
    let now = crate::model::now_micros();
    let mut tx = pool.begin().await?;
    sql::set_timeouts(&mut tx, timeouts).await?;
    let keys: Vec<Key> = commands
        .iter()
        .map(|c| (c.user_id, c.track_id))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    turn.wait().await;
    sql::lock_learners(&mut tx, &keys).await?;
    turn.taken();
    let ledger = sql::load_ledger(&mut tx, commands).await?;
    let replays = replays(commands, &ledger);
    let histories = sql::histories(&mut tx, &replays).await?;
    let bases = sql::change_bases(&mut tx, &replays).await?;
    // before the rows: a change of a track's units locks the track, then its learners' rows
    let units = track_units.for_batch(&mut tx, commands).await?;
    let read = Read {
        erased: sql::erased_learners(&mut tx, &keys).await?,
        rows: sql::load_rows(&mut tx, &keys).await?,
        applied_through: sql::applied_through(&mut tx, &keys).await?,
        ledger,
        histories,
        bases,
        units,
    };
    let decided = decide(commands, read, now);
    let changed: Vec<&UserProgress> = decided.changed.iter().map(|k| &decided.rows[k]).collect();
    sql::write_rows(&mut tx, &changed).await?;
    sql::insert_ledger(&mut tx, &decided.ledger, now).await?;
    tx.commit().await?;
    Ok(decided.outcomes)
}

/// Records one command the database refuses to apply as rejected, in a transaction of its
/// own, so the learner's later commands are not held behind it. `false` when even that fails.
pub(super) async fn record_refused(
    pool: &PgPool,
    command: &ProgressCommand,
    error: &str,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let row = LedgerRow {
        command,
        outcome: "rejected",
        rejection: Some(Rejection {
            code: "refused_by_database".to_owned(),
            reason: error.to_owned(),
        }),
        version_after: None,
    };
    sql::insert_ledger(&mut tx, &[row], crate::model::now_micros()).await?;
    tx.commit().await
}

/// What the batch read under its learners' locks.
struct Read {
    /// When each erased learner of the batch was erased (`erase`).
    erased: HashMap<Uuid, DateTime<Utc>>,
    rows: HashMap<Key, UserProgress>,
    /// The highest seq in each learner's ledger (0 when none).
    applied_through: HashMap<Key, i64>,
    ledger: Vec<LedgerEntry>,
    /// The ledgers of learners with a redelivered applied command, up to its seq.
    histories: HashMap<Key, sql::History>,
    /// Those learners' snapshots after the track changes made before that seq.
    bases: HashMap<Key, Vec<sql::ChangeBase>>,
    units: UnitSets,
}

/// The batch's outcomes and what it writes.
struct Decided<'a> {
    outcomes: Vec<Outcome>,
    ledger: Vec<LedgerRow<'a>>,
    rows: HashMap<Key, UserProgress>,
    changed: HashSet<Key>,
}

/// Decides every command's outcome, each learner's in seq order; pure given what was read.
fn decide(commands: &[ProgressCommand], read: Read, now: DateTime<Utc>) -> Decided<'_> {
    let Read {
        erased,
        mut rows,
        applied_through,
        ledger,
        histories,
        bases,
        units,
    } = read;
    let by_id: HashMap<Uuid, &LedgerEntry> = ledger.iter().map(|e| (e.command_id, e)).collect();
    let mut seq_owner: HashMap<(Key, i64), Uuid> = ledger
        .iter()
        .map(|e| (((e.user_id, e.track_id), e.seq), e.command_id))
        .collect();
    let mut next: HashMap<Key, i64> = applied_through
        .iter()
        .map(|(key, seq)| (*key, seq + 1))
        .collect();
    let mut outcomes: Vec<Option<Outcome>> = vec![None; commands.len()];
    let mut ledger_rows = Vec::with_capacity(commands.len());
    let mut changed = HashSet::new();
    let mut in_batch: HashMap<Uuid, &ProgressCommand> = HashMap::new();

    let mut order: Vec<usize> = (0..commands.len()).collect();
    order.sort_by_key(|&i| (commands[i].user_id, commands[i].track_id, commands[i].seq));
    for index in order {
        let command = &commands[index];
        let key = (command.user_id, command.track_id);
        let total_units = units
            .get(&command.track_id)
            .map_or(0, |u| u.units.len() as i64);
        let started_again = next.get(&key).is_some_and(|seq| *seq > 1);
        let outcome = if let Some(error) = erased
            .get(&command.user_id)
            .and_then(|at| refused_as_erased(command, *at, started_again))
        {
            // before the ledger: the learner's ledger is gone, and a new run's ids repeat the
            // erased ones (UUIDv5 of the workflow id and seq)
            Outcome::Erased { error }
        } else if let Some(entry) = by_id.get(&command.command_id) {
            let history = histories.get(&key).map(|h| (h, bases.get(&key)));
            duplicate(command, entry, history, total_units)
        } else if let Some(earlier) = in_batch.get(&command.command_id) {
            if *earlier == command {
                Outcome::Duplicate(None)
            } else {
                Outcome::rejected("id_conflict", id_conflict(command, earlier.seq))
            }
        } else if let Some(owner) = seq_owner.get(&(key, command.seq)) {
            Outcome::rejected(
                "seq_conflict",
                format!(
                    "seq {} of user {} on track {} is already command {owner}; {} is another command",
                    command.seq, command.user_id, command.track_id, command.command_id
                ),
            )
        } else {
            let expected = next.entry(key).or_insert(1);
            if command.seq > *expected {
                Outcome::Deferred {
                    waiting_for: *expected,
                }
            } else {
                // seq == expected; a lower one only fills a hole that an older version of the
                // applier (which did not keep seq order) left
                if command.seq == *expected {
                    *expected += 1;
                }
                in_batch.insert(command.command_id, command);
                seq_owner.insert((key, command.seq), command.command_id);
                let (outcome, row) = apply(command, &mut rows, &units, total_units, now);
                if matches!(outcome, Outcome::Applied(_)) {
                    changed.insert(key);
                }
                ledger_rows.push(row);
                outcome
            }
        };
        outcomes[index] = Some(outcome);
    }
    Decided {
        outcomes: outcomes
            .into_iter()
            .map(|o| o.expect("every command decided"))
            .collect(),
        ledger: ledger_rows,
        rows,
        changed,
    }
}

/// Why a command of an erased learner is refused, if it is: it occurred before the erasure
/// (a redelivery, a workflow's last publish), or it continues a track the learner has not
/// started again since. Only a `track_started` that occurred after the erasure starts again;
/// the commands after it in seq order follow it. Nothing is written for a refused command,
/// and no dead letter keeps it: the learner's data stays erased; the log says why.
fn refused_as_erased(
    command: &ProgressCommand,
    erased_at: DateTime<Utc>,
    started_again: bool,
) -> Option<String> {
    if command.occurred_at <= erased_at {
        return Some(format!(
            "user {} was erased at {erased_at}; this {} occurred before, at {}",
            command.user_id,
            command.kind(),
            command.occurred_at
        ));
    }
    let starts = matches!(command.action, Action::TrackStarted { .. }) && command.seq == 1;
    (!started_again && !starts).then(|| {
        format!(
            "user {} was erased at {erased_at} and has not started track {} again; only a \
             track_started (seq 1) does",
            command.user_id, command.track_id
        )
    })
}

/// A command next in its learner's seq order: rejected, applied or a no-op.
fn apply<'a>(
    command: &'a ProgressCommand,
    rows: &mut HashMap<Key, UserProgress>,
    units: &UnitSets,
    total_units: i64,
    now: DateTime<Utc>,
) -> (Outcome, LedgerRow<'a>) {
    let key = (command.user_id, command.track_id);
    let refusal = check_units(command, units.get(&command.track_id).map(|u| &**u))
        .and_then(|()| check_attempts(command, rows.get(&key)));
    if let Err((code, reason)) = refusal {
        let row = LedgerRow {
            command,
            outcome: "rejected",
            rejection: Some(Rejection {
                code: code.to_owned(),
                reason: reason.clone(),
            }),
            version_after: None,
        };
        return (Outcome::rejected(code, reason), row);
    }
    let row = rows.entry(key).or_insert_with(|| {
        UserProgress::empty(command.user_id, command.track_id, command.occurred_at)
    });
    // published before a unit it names was removed: it applies without that unit
    let removed = units.get(&command.track_id).map(|u| &u.removed);
    let applied = command
        .without_units(|u| removed.is_some_and(|r| r.contains(u)))
        .is_some_and(|command| row.apply(&command, now));
    let version = (row.version > 0).then_some(row.version);
    let outcome = if applied {
        Outcome::Applied(Box::new(event(command, row.clone(), total_units, now)))
    } else {
        Outcome::Noop
    };
    let ledger_row = LedgerRow {
        command,
        outcome: if applied { "applied" } else { "noop" },
        rejection: None,
        version_after: version,
    };
    (outcome, ledger_row)
}

/// For each learner with a command of the batch the ledger holds as applied, the highest
/// such seq: how far its history must be read to rebuild those commands' events.
fn replays(commands: &[ProgressCommand], ledger: &[LedgerEntry]) -> HashMap<Key, i64> {
    let applied: HashMap<Uuid, i64> = ledger
        .iter()
        .filter(|e| e.outcome == "applied")
        .map(|e| (e.command_id, e.seq))
        .collect();
    let mut through: HashMap<Key, i64> = HashMap::new();
    for command in commands {
        if let Some(seq) = applied.get(&command.command_id) {
            let highest = through
                .entry((command.user_id, command.track_id))
                .or_insert(*seq);
            *highest = (*highest).max(*seq);
        }
    }
    through
}

/// A learner's ledger, with their snapshots after track changes.
type Replay<'a> = (&'a sql::History, Option<&'a Vec<sql::ChangeBase>>);

/// The snapshot right after the command `seq` of a learner, when it was applied, and the
/// track's unit count then when a track change tells it: the ledger's commands replayed in seq
/// order, each at the time it was applied, on top of the snapshot the last change of the
/// track's units before that command left (the commands after that change were applied on
/// it). Seq order made the original, so this is the original exactly.
fn snapshot_at(
    (history, bases): Replay<'_>,
    seq: i64,
) -> Option<(UserProgress, DateTime<Utc>, Option<i64>)> {
    // in version order, so the last one before the command is the newest
    let base = bases.into_iter().flatten().rfind(|b| b.through_seq < seq);
    let after = base.map_or(0, |b| b.through_seq);
    let kept = || {
        history.iter().filter(|(command, outcome, _)| {
            command.seq > after && command.seq <= seq && outcome != "rejected"
        })
    };
    let (.., at) = kept().find(|(command, ..)| command.seq == seq)?;
    let row = UserProgress::replay_since(
        base.map(|b| b.progress.clone()),
        base.map_or(&[][..], |b| &b.removed[..]),
        kept().map(|(command, _, applied_at)| (command, *applied_at)),
    )?;
    Some((row, *at, base.map(|b| b.total_units)))
}

/// A command whose id is in the ledger: the same command again, or another under its id.
fn duplicate(
    command: &ProgressCommand,
    entry: &LedgerEntry,
    history: Option<Replay<'_>>,
    total_units: i64,
) -> Outcome {
    if entry
        .payload
        .as_ref()
        .is_some_and(|stored| stored != command)
    {
        return Outcome::rejected("id_conflict", id_conflict(command, entry.seq));
    }
    match (entry.outcome.as_str(), &entry.rejection) {
        ("applied", _) => Outcome::Duplicate(
            history
                .and_then(|history| snapshot_at(history, entry.seq))
                .map(|(row, applied_at, then)| {
                    Box::new(event(command, row, then.unwrap_or(total_units), applied_at))
                }),
        ),
        ("rejected", Some(rejection)) => Outcome::Rejected {
            reason: rejection.code.clone(),
            error: rejection.reason.clone(),
        },
        _ => Outcome::Duplicate(None),
    }
}

fn id_conflict(command: &ProgressCommand, stored_seq: i64) -> String {
    format!(
        "command id {} was already used for another command (seq {stored_seq}); this one \
         (seq {}, {}) is not applied",
        command.command_id,
        command.seq,
        command.kind()
    )
}

/// Beyond [`MAX_ATTEMPTS_PER_UNIT`] attempts at a unit, a new attempt is refused.
fn check_attempts(
    command: &ProgressCommand,
    row: Option<&UserProgress>,
) -> Result<(), (&'static str, String)> {
    let Action::AssessmentRecorded {
        unit_id,
        attempt_id,
        ..
    } = &command.action
    else {
        return Ok(());
    };
    let attempts = row
        .and_then(|row| row.assessment_results.get(unit_id))
        .map(|unit| &unit.attempts);
    match attempts {
        Some(attempts)
            if attempts.len() >= MAX_ATTEMPTS_PER_UNIT && !attempts.contains_key(attempt_id) =>
        {
            Err((
                "too_many_attempts",
                format!(
                    "unit {unit_id} already holds {MAX_ATTEMPTS_PER_UNIT} attempts, the most kept"
                ),
            ))
        }
        _ => Ok(()),
    }
}

fn event(
    command: &ProgressCommand,
    row: UserProgress,
    total_units: i64,
    now: DateTime<Utc>,
) -> ProgressEvent {
    ProgressEvent {
        event_id: command.command_id,
        kind: command.kind().to_owned(),
        version: row.version,
        occurred_at: command.occurred_at,
        applied_at: now,
        progress: ProgressView::new(row, total_units),
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;

    fn command(seq: i64, at: DateTime<Utc>, action: Action) -> ProgressCommand {
        ProgressCommand {
            command_id: Uuid::new_v4(),
            user_id: Uuid::new_v4(),
            track_id: Uuid::new_v4(),
            seq,
            occurred_at: at,
            action,
        }
    }

    #[test]
    fn an_erased_learner_is_taken_again_only_by_a_new_start_and_what_follows_it() {
        let erased_at = Utc::now();
        let (before, after) = (
            erased_at - TimeDelta::seconds(1),
            erased_at + TimeDelta::seconds(1),
        );
        let start = Action::TrackStarted {
            current_unit_id: None,
        };
        let done = Action::TrackCompleted {};
        let refused = |seq, at, action, started| {
            refused_as_erased(&command(seq, at, action), erased_at, started).is_some()
        };
        assert!(refused(1, before, start.clone(), false), "from before");
        assert!(
            refused(1, erased_at, start.clone(), false),
            "at the erasure"
        );
        assert!(
            refused(2, before, done.clone(), true),
            "from before, even after a start"
        );
        assert!(!refused(1, after, start.clone(), false), "a new start");
        assert!(
            refused(2, after, start, false),
            "a start that is not the first command"
        );
        assert!(refused(2, after, done.clone(), false), "not started again");
        assert!(!refused(2, after, done, true), "after the new start");
    }
}
