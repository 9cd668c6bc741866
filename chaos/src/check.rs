//! The checker: accounts for every acknowledged command once the faults are over.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use learning_progress::db::tracks::Track;
use learning_progress::messaging::{NatsConfig, header_str};
use learning_progress::model::ProgressEvent;
use learning_progress::simulate::check_learner;
use learning_progress::workflow::{command_id, workflow_id};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::load::{LearnerRun, PoisonSent};
use crate::reads;

#[derive(Debug, Default, Serialize)]
pub struct Findings {
    pub learners: usize,
    /// Commands JetStream acknowledged to the workflows (the sum of their last seqs).
    pub acknowledged: usize,
    /// Of those, in the ledger with outcome `applied`.
    pub applied: usize,
    /// Acknowledged, not in the ledger. Must be 0.
    pub lost: usize,
    /// Ledger rows beyond one per acknowledged seq. Must be 0.
    pub duplicated: usize,
    /// Dead letters by reason (the poison mix and anything else).
    pub dead_letters: BTreeMap<String, usize>,
    /// Must be empty: every line is a broken promise.
    pub unexpected: Vec<String>,
    /// Commands still on the commands stream at the end (all must be applied and acked).
    pub commands_left: u64,
    /// Commands left on the stream that the applier's consumer has already passed (its ack
    /// floor beyond them, nothing pending or unacknowledged): never delivered again. Seen after
    /// a filtered purge on a replicated work-queue stream (RELIABILITY.md, "Findings"); the
    /// commands are in the ledger through reconcile's copies.
    pub broker_orphans: u64,
    /// How long after the last learner finished the commands stream took to empty (the
    /// redeliveries of commands a killed applier held, after its ack wait).
    pub stream_drain_seconds: f64,
    /// Applied commands whose event JetStream had not confirmed once the stream drained, and
    /// how long the applier's sweep took to announce them (RELIABILITY.md, finding 8).
    pub unannounced_at_drain: i64,
    pub announce_wait_seconds: f64,
    /// (replica, learner) pairs whose final version a replica did not serve at the first read
    /// after the drain: its feed was still catching up (RELIABILITY.md, finding 7).
    pub api_late: usize,
    /// Events read, and learners whose event versions have a hole below their final version.
    pub events: usize,
    pub event_gaps: usize,
}

impl Findings {
    pub fn ok(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.unexpected.is_empty()
    }
}

pub struct Checker<'a> {
    pub pool: &'a PgPool,
    pub js: &'a jetstream::Context,
    pub nats: &'a NatsConfig,
    pub track: &'a Track,
    pub api_urls: &'a [String],
    pub token: &'a str,
}

impl Checker<'_> {
    pub async fn check(
        &self,
        runs: &[LearnerRun],
        unfinished: usize,
        poison: &PoisonSent,
    ) -> anyhow::Result<Findings> {
        let mut f = Findings {
            learners: runs.len(),
            ..Findings::default()
        };
        if unfinished > 0 {
            f.unexpected
                .push(format!("{unfinished} learners' workflows did not finish"));
        }
        f.unexpected.extend(poison.unexpected.iter().cloned());

        let ledger: Vec<(Uuid, i64, Uuid, String)> = sqlx::query_as(
            "select user_id, seq, command_id, outcome from progress_ledger where track_id = $1",
        )
        .bind(self.track.id)
        .fetch_all(self.pool)
        .await?;
        let mut by_learner: HashMap<Uuid, Vec<(i64, Uuid, String)>> = HashMap::new();
        for (user, seq, id, outcome) in ledger {
            by_learner.entry(user).or_default().push((seq, id, outcome));
        }
        let versions: HashMap<Uuid, i64> = sqlx::query_as::<_, (Uuid, i64)>(
            "select user_id, version from user_progress where track_id = $1",
        )
        .bind(self.track.id)
        .fetch_all(self.pool)
        .await?
        .into_iter()
        .collect();

        for run in runs {
            let outcome = match &run.outcome {
                Ok(outcome) => outcome,
                Err(e) => {
                    f.unexpected
                        .push(format!("learner {} could not be driven: {e}", run.user));
                    continue;
                }
            };
            if !outcome.unreconciled_seqs.is_empty() {
                f.unexpected.push(format!(
                    "learner {}: the workflow ended with seqs {:?} unapplied",
                    run.user, outcome.unreconciled_seqs
                ));
            }
            f.acknowledged += outcome.seq as usize;
            let workflow = workflow_id(run.user, self.track.id);
            let rows = by_learner.remove(&run.user).unwrap_or_default();
            let mut per_seq: BTreeMap<i64, usize> = BTreeMap::new();
            for (seq, id, result) in &rows {
                *per_seq.entry(*seq).or_default() += 1;
                if *seq > outcome.seq {
                    f.unexpected.push(format!(
                        "learner {}: seq {seq} in the ledger, beyond the last acknowledged {}",
                        run.user, outcome.seq
                    ));
                } else if *id != command_id(&workflow, *seq) {
                    f.unexpected.push(format!(
                        "learner {}: seq {seq} applied under id {id}, not the workflow's",
                        run.user
                    ));
                }
                if result != "applied" {
                    f.unexpected.push(format!(
                        "learner {}: seq {seq} has outcome {result}",
                        run.user
                    ));
                }
            }
            for seq in 1..=outcome.seq {
                match per_seq.get(&seq).copied().unwrap_or(0) {
                    0 => f.lost += 1,
                    n => {
                        f.applied += 1;
                        f.duplicated += n - 1;
                    }
                }
            }
            for mismatch in check_learner(self.pool, self.track, run.user, &run.steps).await? {
                f.unexpected.push(mismatch);
            }
        }
        // ledger rows of learners nobody drove: only the poison learners may have some
        for (user, rows) in by_learner {
            let foreign_units = rows.iter().filter(|(_, _, o)| o == "rejected").count();
            if !poison.learners.contains(&user) || foreign_units != rows.len() {
                f.unexpected.push(format!(
                    "learner {user} nobody drove has ledger rows {rows:?}"
                ));
            }
        }

        // first, the commands stream must empty: a command redelivered after a crash (the
        // applier's ack wait) or a copy re-published by reconcile is acknowledged as a
        // duplicate — and a crash between commit and publish leaves its event to that
        // redelivery, so the events are read only after it
        let mut commands = self.js.get_stream(&self.nats.commands_stream).await?;
        let waiting = Instant::now();
        let deadline = waiting + Duration::from_secs(60);
        loop {
            f.commands_left = commands.info().await?.state.messages;
            if f.commands_left == 0 || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        f.stream_drain_seconds = waiting.elapsed().as_secs_f64();
        if f.commands_left > 0 {
            let consumer: consumer::PullConsumer = commands
                .get_consumer("progress-applier")
                .await
                .map_err(|e| anyhow::anyhow!("the applier's consumer: {e}"))?;
            let info = consumer.cached_info();
            let last = commands.cached_info().state.last_sequence;
            if info.num_pending == 0
                && info.num_ack_pending == 0
                && info.ack_floor.stream_sequence >= last
            {
                f.broker_orphans = f.commands_left;
            } else {
                f.unexpected.push(format!(
                    "{} commands still on the commands stream ({} pending, {} unacknowledged)",
                    f.commands_left, info.num_pending, info.num_ack_pending
                ));
            }
        }
        // then every applied change must be announced: one whose applier died before its
        // publish and whose command the broker lost is left to the applier's sweep
        let waiting = Instant::now();
        let deadline = waiting + Duration::from_secs(60);
        let mut first = true;
        loop {
            let unannounced: i64 = sqlx::query_scalar(
                "select count(*) from progress_ledger where outcome = 'applied' and not announced",
            )
            .fetch_one(self.pool)
            .await?;
            if first {
                f.unannounced_at_drain = unannounced;
                first = false;
            }
            if unannounced == 0 {
                break;
            }
            if Instant::now() > deadline {
                f.unexpected.push(format!(
                    "{unannounced} applied commands still unannounced 60 s after the drain"
                ));
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        f.announce_wait_seconds = waiting.elapsed().as_secs_f64();
        self.check_dead_letters(&mut f, poison).await?;
        self.check_events(&mut f, runs, &versions).await?;
        self.check_api(&mut f, &versions).await;
        Ok(f)
    }

    async fn check_dead_letters(
        &self,
        f: &mut Findings,
        poison: &PoisonSent,
    ) -> anyhow::Result<()> {
        for message in read_all(self.js, &self.nats.dlq_stream).await? {
            let reason = header_str(message.headers.as_ref(), "lp-dlq-reason")
                .unwrap_or("none")
                .to_owned();
            *f.dead_letters.entry(reason).or_default() += 1;
        }
        // a poison publish whose PubAck was lost in a broker fault may still have been stored
        let reasons = f.dead_letters.keys().chain(poison.acknowledged.keys());
        for reason in reasons.collect::<std::collections::BTreeSet<_>>() {
            let got = f.dead_letters.get(reason).copied().unwrap_or(0);
            let sure = poison.acknowledged.get(reason).copied().unwrap_or(0);
            let maybe = poison.uncertain.get(reason).copied().unwrap_or(0);
            if got < sure || got > sure + maybe {
                f.unexpected.push(format!(
                    "{got} dead letters with reason {reason}; the poison mix had {sure} \
                     acknowledged and {maybe} unconfirmed"
                ));
            }
        }
        Ok(())
    }

    /// Every learner's events carry each version from 1 to the final one, and two events of
    /// the same version carry the same snapshot.
    async fn check_events(
        &self,
        f: &mut Findings,
        runs: &[LearnerRun],
        versions: &HashMap<Uuid, i64>,
    ) -> anyhow::Result<()> {
        let mut seen: HashMap<Uuid, BTreeMap<i64, String>> = HashMap::new();
        for message in read_all(self.js, &self.nats.events_stream).await? {
            f.events += 1;
            let event: ProgressEvent = match serde_json::from_slice(&message.payload) {
                Ok(event) => event,
                Err(e) => {
                    f.unexpected.push(format!("an event does not decode: {e}"));
                    continue;
                }
            };
            let snapshot = serde_json::to_string(&event.progress)?;
            let learner = seen.entry(event.progress.progress.user_id).or_default();
            if let Some(earlier) = learner.insert(event.version, snapshot.clone())
                && earlier != snapshot
            {
                f.unexpected.push(format!(
                    "learner {}: two events of version {} differ",
                    event.progress.progress.user_id, event.version
                ));
            }
        }
        for run in runs {
            let Some(&last) = versions.get(&run.user) else {
                continue;
            };
            let events = seen.get(&run.user);
            let missing = (1..=last)
                .filter(|v| !events.is_some_and(|e| e.contains_key(v)))
                .count();
            if missing > 0 {
                f.event_gaps += 1;
                f.unexpected.push(format!(
                    "learner {}: {missing} of versions 1..={last} have no event",
                    run.user
                ));
            }
        }
        Ok(())
    }

    /// Every replica serves every learner's final version within 30 s, from its events: the
    /// cache's TTL (300 s, the default) is far longer, so only the feed can bring it. One not
    /// served at the first read is counted as late (its feed was still catching up).
    async fn check_api(&self, f: &mut Findings, versions: &HashMap<Uuid, i64>) {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut behind: Vec<String> = Vec::new();
        for (replica, url) in self.api_urls.iter().enumerate() {
            for (user, version) in versions {
                let mut first = true;
                loop {
                    let served = reads::version(&http, url, self.token, *user, self.track.id).await;
                    if served == Ok(Some(*version)) {
                        break;
                    }
                    if first {
                        f.api_late += 1;
                        first = false;
                    }
                    if Instant::now() > deadline {
                        behind.push(format!(
                            "api-{} serves {served:?} for learner {user}, the row is at {version}",
                            replica + 1
                        ));
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        f.unexpected.extend(behind);
    }
}

/// Every message a stream holds, through an ordered consumer.
async fn read_all(
    js: &jetstream::Context,
    stream: &str,
) -> anyhow::Result<Vec<jetstream::Message>> {
    let mut stream = js.get_stream(stream).await?;
    let total = stream.info().await?.state.messages as usize;
    let mut messages = Vec::with_capacity(total);
    if total == 0 {
        return Ok(messages);
    }
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig::default())
        .await?;
    let mut feed = consumer.messages().await?;
    while messages.len() < total {
        match tokio::time::timeout(Duration::from_secs(10), feed.next()).await {
            Ok(Some(Ok(message))) => messages.push(message),
            Ok(Some(Err(e))) => anyhow::bail!("reading {}: {e}", stream.cached_info().config.name),
            Ok(None) | Err(_) => anyhow::bail!(
                "reading {}: {} of {total} messages",
                stream.cached_info().config.name,
                messages.len()
            ),
        }
    }
    Ok(messages)
}
