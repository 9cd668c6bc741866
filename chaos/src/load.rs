//! The workload: learners driven through real `LearningPathWorkflow`s through the Temporal
//! client, as `simulate` drives them, started continuously until the load window closes;
//! and, where a scenario asks for it, a poison mix published straight to the commands stream.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use learning_progress::db::tracks::Track;
use learning_progress::messaging::NatsConfig;
use learning_progress::model::{Action, ProgressCommand};
use learning_progress::simulate::{Step, plan};
use learning_progress::workflow::{LearningPathInput, PathOutcome, TemporalConfig, client};
use rand::SeedableRng;
use rand::rngs::StdRng;
use temporalio_client::Client;
use uuid::Uuid;

/// One learner driven to the end of the track.
pub struct LearnerRun {
    pub user: Uuid,
    pub steps: Vec<Step>,
    /// The workflow's result: every seq up to `outcome.seq` was acknowledged by JetStream
    /// (the publish activity completes only on a PubAck).
    pub outcome: Result<PathOutcome, String>,
}

/// Learners currently being driven, newest last; the read monitor samples them.
#[derive(Clone, Default)]
pub struct Live(Arc<Mutex<Vec<Uuid>>>);

impl Live {
    fn push(&self, user: Uuid) {
        let mut live = self.0.lock().unwrap();
        live.push(user);
        let excess = live.len().saturating_sub(64);
        live.drain(..excess);
    }

    pub fn sample(&self, n: usize) -> Vec<Uuid> {
        let live = self.0.lock().unwrap();
        live.iter().rev().take(n).copied().collect()
    }
}

pub struct Load {
    pub temporal: Client,
    pub temporal_config: TemporalConfig,
    pub track: Track,
    pub concurrency: usize,
    pub seed: u64,
}

impl Load {
    /// Starts learners, `concurrency` at a time, while `launching` holds; then waits (up to
    /// `drain`) for the ones in flight to finish. `on_start` is told of each learner started.
    /// Returns the finished learners and how many were still running at the drain's end.
    pub async fn run(
        &self,
        launching: &AtomicBool,
        drain: Duration,
        live: &Live,
        mut on_start: impl FnMut(usize),
    ) -> (Vec<LearnerRun>, usize) {
        let mut rng = StdRng::seed_from_u64(self.seed);
        let mut in_flight = FuturesUnordered::new();
        let mut runs = Vec::new();
        let mut started = 0;
        let mut drain_until: Option<Instant> = None;
        loop {
            if drain_until.is_none() && !launching.load(Ordering::Relaxed) {
                drain_until = Some(Instant::now() + drain);
            }
            while drain_until.is_none() && in_flight.len() < self.concurrency {
                let user = Uuid::new_v4();
                let steps = plan(&self.track, &mut rng);
                live.push(user);
                started += 1;
                on_start(started);
                in_flight.push(async move {
                    let outcome = self.drive(user, &steps).await;
                    LearnerRun {
                        user,
                        steps,
                        outcome,
                    }
                });
            }
            if in_flight.is_empty() {
                break;
            }
            // wake at least every 100 ms to notice the end of launching
            let wait = drain_until.map_or(Duration::from_millis(100), |until| {
                until.saturating_duration_since(Instant::now())
            });
            match tokio::time::timeout(wait, in_flight.next()).await {
                Ok(Some(run)) => runs.push(run),
                Ok(None) => break,
                Err(_) if drain_until.is_none_or(|until| Instant::now() < until) => {}
                Err(_) => {
                    tracing::error!(
                        in_flight = in_flight.len(),
                        "learners still running after the drain time; counted as unfinished"
                    );
                    return (runs, in_flight.len());
                }
            }
        }
        (runs, 0)
    }

    async fn drive(&self, user: Uuid, steps: &[Step]) -> Result<PathOutcome, String> {
        let track = &self.track;
        let units = track.units.iter().map(|u| u.id).collect();
        let input = LearningPathInput::new(user, track.id, units);
        retry(|| client::start(&self.temporal, &self.temporal_config, input.clone())).await?;
        for step in steps {
            let step = match step {
                Step::Repeat(step) => step.as_ref(),
                step => step,
            };
            match step {
                Step::Complete(unit) => {
                    retry(|| client::signal_unit_completed(&self.temporal, user, track.id, *unit))
                        .await?
                }
                Step::Assess(a) => {
                    retry(|| {
                        client::signal_assessment_recorded(
                            &self.temporal,
                            user,
                            track.id,
                            a.clone(),
                        )
                    })
                    .await?
                }
                Step::Repeat(_) => return Err("repeats are one level deep".to_owned()),
            }
        }
        retry(|| client::result(&self.temporal, user, track.id)).await
    }
}

/// The Temporal server is not a fault target; a call that fails is retried a few times (a
/// repeated signal is harmless: the workflow ignores what it already did).
async fn retry<T, E: std::fmt::Display, F, Fut>(mut call: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut last = String::new();
    for attempt in 0..5 {
        match call().await {
            Ok(value) => return Ok(value),
            Err(e) => {
                last = e.to_string();
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
        }
    }
    Err(last)
}

/// A command no workflow would send, published on the commands stream as a faulty client
/// could.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub enum Poison {
    Malformed,
    UnknownType,
    ForeignUnit,
    WrongSubject,
    Oversized,
}

impl Poison {
    pub const ALL: [Poison; 5] = [
        Poison::Malformed,
        Poison::UnknownType,
        Poison::ForeignUnit,
        Poison::WrongSubject,
        Poison::Oversized,
    ];

    /// The dead-letter reason it must get; `None`: the stream refuses it at the door.
    pub fn reason(self) -> Option<&'static str> {
        match self {
            Poison::Malformed => Some("malformed"),
            Poison::UnknownType => Some("unknown_type"),
            Poison::ForeignUnit => Some("foreign_unit"),
            Poison::WrongSubject => Some("wrong_subject"),
            Poison::Oversized => None,
        }
    }
}

/// What the poison publisher sent and what JetStream said.
#[derive(Default, Debug, serde::Serialize)]
pub struct PoisonSent {
    /// Acknowledged by JetStream, by the reason they must be dead-lettered with.
    pub acknowledged: BTreeMap<String, usize>,
    /// Refused by JetStream at publish (the oversized ones), as they must be.
    pub refused_at_publish: usize,
    /// Publishes that failed during a broker fault: perhaps stored, perhaps not.
    pub uncertain: BTreeMap<String, usize>,
    /// Refused when they should have been stored, or stored when they should have been
    /// refused.
    pub unexpected: Vec<String>,
    /// Their learners, none of whom is a real one.
    #[serde(skip)]
    pub learners: Vec<Uuid>,
}

pub struct PoisonPublisher {
    pub js: jetstream::Context,
    pub nats: NatsConfig,
    pub track_id: Uuid,
    pub sent: PoisonSent,
}

impl PoisonPublisher {
    pub async fn publish(&mut self, kind: Poison) {
        let user = Uuid::new_v4();
        self.sent.learners.push(user);
        let track = self.track_id;
        let command = ProgressCommand {
            command_id: Uuid::new_v4(),
            user_id: user,
            track_id: track,
            seq: 1,
            occurred_at: now(),
            action: Action::TrackStarted {
                current_unit_id: None,
            },
        };
        let mut subject = self.nats.command_subject(user, track);
        let payload: Vec<u8> = match kind {
            Poison::Malformed => br#"{"command_id": "not a uuid", "seq": "#.to_vec(),
            Poison::UnknownType => {
                let mut json = serde_json::to_value(&command).expect("a command serializes");
                json["type"] = "unit_teleported".into();
                json.to_string().into_bytes()
            }
            Poison::ForeignUnit => serde_json::to_vec(&ProgressCommand {
                action: Action::TrackStarted {
                    current_unit_id: Some(Uuid::new_v4()),
                },
                ..command
            })
            .expect("a command serializes"),
            Poison::WrongSubject => {
                subject = self.nats.command_subject(Uuid::new_v4(), track);
                serde_json::to_vec(&command).expect("a command serializes")
            }
            Poison::Oversized => {
                let mut json = serde_json::to_value(&command).expect("a command serializes");
                json["padding"] = "x".repeat(300 * 1024).into();
                json.to_string().into_bytes()
            }
        };
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", Uuid::new_v4().to_string().as_str());
        let acked = match self
            .js
            .publish_with_headers(subject, headers, payload.into())
            .await
        {
            Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match (kind.reason(), acked) {
            (Some(reason), Ok(())) => {
                *self.sent.acknowledged.entry(reason.to_owned()).or_default() += 1
            }
            (None, Err(_)) => self.sent.refused_at_publish += 1,
            (Some(reason), Err(e)) => {
                // a publish that failed during a broker fault is not an acknowledged command
                tracing::warn!(reason, error = %e, "a poison publish was not acknowledged");
                *self.sent.uncertain.entry(reason.to_owned()).or_default() += 1
            }
            (None, Ok(())) => self
                .sent
                .unexpected
                .push(format!("an oversized command was stored ({kind:?})")),
        }
    }
}

fn now() -> DateTime<Utc> {
    learning_progress::model::now_micros()
}
