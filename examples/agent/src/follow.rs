//! The agent's loop: decode each event, put it in version order, act on each new version once.
//!
//! Acting on a version means: record it in the state file, print its line, ack its message —
//! in that order. A crash after the record and before the ack is harmless (the redelivery is
//! not newer than what the file says); a crash between the record and the print loses that
//! one line. Record after printing instead if a repeated action is the lesser evil.

use std::path::Path;
use std::time::Duration;

use anyhow::bail;
use async_nats::jetstream::{AckKind, Message, consumer::PullConsumer};
use futures::StreamExt as _;
use serde::Deserialize;
use tokio::time::Instant;
use uuid::Uuid;

use crate::order::Sequencer;
use crate::state::{self, State};

/// The fields of a progress event this agent reads (docs/schemas/progress-event.schema.json).
#[derive(Debug, Deserialize)]
struct Event {
    #[serde(rename = "type")]
    kind: String,
    version: i64,
    progress: Progress,
}

#[derive(Debug, Deserialize)]
struct Progress {
    user_id: Uuid,
    track_id: Uuid,
    completed_unit_ids: Vec<Uuid>,
    total_units: i64,
}

/// An erasure (`ce-type: learning.progress.event.erased.v1`,
/// docs/schemas/progress-erased.schema.json): forget the learner's progress on the track.
#[derive(Debug, Deserialize)]
struct Erased {
    event_id: Uuid,
    user_id: Uuid,
    track_id: Uuid,
}

const ERASED_TYPE: &str = "learning.progress.event.erased.v1";

/// Consecutive errors from the consumer after which the agent gives up (and its supervisor
/// restarts it); single ones, like a missed heartbeat, the client recovers from.
const MAX_CONSECUTIVE_ERRORS: u32 = 10;

/// Follows until Ctrl-C or SIGTERM, or until the consumer fails for good.
pub async fn follow(
    consumer: PullConsumer,
    mut state: State,
    state_file: &Path,
    gap_timeout: Duration,
) -> anyhow::Result<()> {
    let mut sequencer = Sequencer::new(&state.last_versions);
    let mut messages = consumer.messages().await?;
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let mut errors = 0;
    loop {
        let gap = sequencer.gap_deadline(gap_timeout);
        let gap_ends = gap.map_or_else(Instant::now, |(at, _)| at);
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep_until(gap_ends), if gap.is_some() => {
                let track = gap.expect("guarded").1;
                if let Some((from, to)) = sequencer.skip_gap(track) {
                    eprintln!("progress-agent: versions {from}–{to} of track {track} did not arrive within {gap_timeout:?}; moving on");
                }
                act_on_ready(&mut sequencer, track, &mut state, state_file).await?;
            }
            next = messages.next() => {
                let message = match next {
                    Some(Ok(message)) => message,
                    Some(Err(error)) => {
                        errors += 1;
                        if errors >= MAX_CONSECUTIVE_ERRORS {
                            bail!("the durable consumer keeps failing: {error}");
                        }
                        eprintln!("progress-agent: consumer: {error}");
                        continue;
                    }
                    None => bail!("the durable consumer's message stream ended"),
                };
                errors = 0;
                let kind = message.headers.as_ref().and_then(|h| h.get("ce-type"));
                if kind.is_some_and(|k| k.as_str() == ERASED_TYPE) {
                    forget(message, &mut sequencer, &mut state, state_file).await?;
                    continue;
                }
                let event = match serde_json::from_slice::<Event>(&message.payload) {
                    Ok(event) if event.version >= 1 && event.progress.user_id == state.user_id => event,
                    Ok(event) => {
                        refuse(message, &format!("version {} of learner {}", event.version, event.progress.user_id)).await;
                        continue;
                    }
                    Err(error) => {
                        refuse(message, &error.to_string()).await;
                        continue;
                    }
                };
                let track = event.progress.track_id;
                if let Err((_, duplicate)) = sequencer.offer(track, event.version, (event, message)) {
                    settle(&duplicate, AckKind::Ack).await;
                    continue;
                }
                act_on_ready(&mut sequencer, track, &mut state, state_file).await?;
            }
        }
    }
    // held versions go back to the server at once, rather than after their ack wait
    for (_, message) in sequencer.drain_held() {
        settle(&message, AckKind::Nak(None)).await;
    }
    Ok(())
}

/// Acts on every version of `track` that is next in line.
async fn act_on_ready(
    sequencer: &mut Sequencer<(Event, Message)>,
    track: Uuid,
    state: &mut State,
    state_file: &Path,
) -> anyhow::Result<()> {
    while let Some((version, (event, message))) = sequencer.ready(track, Instant::now()) {
        state.last_versions.insert(track, version);
        state::save(state_file, state).await?;
        println!(
            "learner {} on track {track}: {}/{} units, version {version} ({})",
            state.user_id,
            event.progress.completed_unit_ids.len(),
            event.progress.total_units,
            event.kind
        );
        settle(&message, AckKind::Ack).await;
    }
    Ok(())
}

/// The learner was erased on a track: what the agent holds of it goes, at once and whatever
/// its version (versions start again at 1 if the learner starts again).
async fn forget(
    message: Message,
    sequencer: &mut Sequencer<(Event, Message)>,
    state: &mut State,
    state_file: &Path,
) -> anyhow::Result<()> {
    let erased = match serde_json::from_slice::<Erased>(&message.payload) {
        Ok(erased) if erased.user_id == state.user_id => erased,
        Ok(erased) => {
            refuse(
                message,
                &format!("an erasure of learner {}", erased.user_id),
            )
            .await;
            return Ok(());
        }
        Err(error) => {
            refuse(message, &error.to_string()).await;
            return Ok(());
        }
    };
    let track = erased.track_id;
    if state.erasures.get(&track) != Some(&erased.event_id) {
        for (_, held) in sequencer.forget(track) {
            settle(&held, AckKind::Ack).await;
        }
        state.last_versions.remove(&track);
        state.erasures.insert(track, erased.event_id);
        state::save(state_file, state).await?;
        println!(
            "learner {} on track {track}: erased; forgotten",
            state.user_id
        );
    }
    settle(&message, AckKind::Ack).await;
    Ok(())
}

/// A message that is not this learner's progress event: said once, never redelivered.
async fn refuse(message: Message, why: &str) {
    eprintln!(
        "progress-agent: ignoring a message on {} that is not a usable progress event: {why}",
        message.subject
    );
    settle(&message, AckKind::Term).await;
}

async fn settle(message: &Message, kind: AckKind) {
    if let Err(error) = message.ack_with(kind).await {
        // harmless: the server redelivers it, and a version already acted on is ignored
        eprintln!("progress-agent: could not acknowledge a message: {error}");
    }
}

async fn shutdown_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
