//! P4: how soon after a command is published a second API replica serves its new version,
//! while a first replica is under read load. The commands go through the real applier; the
//! arrival is timed on replica B's live stream (SSE) by a reader that stamps each event as
//! it is read, so a late look never counts as a late arrival.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::api_process::ApiProcess;
use crate::load::{self, percentile};
use crate::reads::{ApiFixture, progress_path};
use crate::report::BenchResult;
use crate::setup::{self, say};
use crate::{BenchConfig, Scale};
use learning_progress::applier::{self, ApplierConfig, Seams};
use learning_progress::messaging;
use learning_progress::model::{Action, ProgressCommand};

const ARRIVAL_LIMIT: Duration = Duration::from_secs(10);

pub async fn run(config: &BenchConfig, scale: &Scale) -> anyhow::Result<Vec<BenchResult>> {
    let ApiFixture {
        bin,
        token,
        track,
        db,
    } = ApiFixture::create(config).await?;
    let (nats, js) = setup::isolated_nats(&config.nats_url, "bench-fresh").await?;
    let shutdown = CancellationToken::new();
    let applier = tokio::spawn(applier::run(
        js.clone(),
        db.pool.clone(),
        nats.clone(),
        ApplierConfig {
            durable: "bench-fresh".to_owned(),
            ..ApplierConfig::default()
        },
        Seams::default(),
        shutdown.clone(),
    ));

    let user = Uuid::new_v4();
    let mut seq = 1;
    let start = ProgressCommand {
        command_id: Uuid::new_v4(),
        user_id: user,
        track_id: track.id,
        seq,
        occurred_at: chrono::Utc::now(),
        action: Action::TrackStarted {
            current_unit_id: Some(track.units[0].id),
        },
    };
    messaging::publish_command(&js, &nats, &start)
        .await?
        .await?;
    let path = progress_path(user, track.id);
    let replica_a = ApiProcess::spawn(&bin, &db.url, &nats, 100_000).await?;
    let replica_b = ApiProcess::spawn(&bin, &db.url, &nats, 100_000).await?;
    let mut arrivals = follow(&replica_b.base, &path, &token).await?;
    next_arrival(&mut arrivals, 1).await?;

    let background = scale.http * 2 + Duration::from_secs(60);
    let mut wrk = load::background(
        &config.wrk,
        &replica_a.base,
        std::slice::from_ref(&path),
        &token,
        background,
    )?;
    say(format!(
        "P4: {} commands, replica A under {}",
        scale.fresh_commands,
        if wrk.is_some() {
            "wrk -t1 -c32"
        } else {
            "no load (wrk not installed)"
        }
    ));
    let mut latencies = Vec::with_capacity(scale.fresh_commands);
    for _ in 0..scale.fresh_commands {
        seq += 1;
        let command = ProgressCommand {
            command_id: Uuid::new_v4(),
            user_id: user,
            track_id: track.id,
            seq,
            occurred_at: chrono::Utc::now(),
            action: Action::AssessmentRecorded {
                // spread over the units: a unit keeps at most MAX_ATTEMPTS_PER_UNIT attempts
                unit_id: track.units[seq as usize % track.units.len()].id,
                attempt_id: Uuid::new_v4(),
                score: 7.0,
                max_score: 10.0,
                passed: true,
            },
        };
        let published = Instant::now();
        messaging::publish_command(&js, &nats, &command)
            .await?
            .await?;
        let arrived = next_arrival(&mut arrivals, seq).await?;
        latencies.push(arrived.duration_since(published).as_secs_f64() * 1000.0);
    }
    if let Some(mut wrk) = wrk.take() {
        let _ = wrk.kill().await;
    }
    shutdown.cancel();
    applier.await??;
    replica_a.stop().await;
    replica_b.stop().await;
    setup::delete_streams(&js, &nats).await;
    db.drop().await?;

    latencies.sort_by(f64::total_cmp);
    let (p50, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
    let max = latencies.last().copied().unwrap_or(f64::NAN);
    say(format!("  p50 {p50:.2} ms, p99 {p99:.2} ms"));
    Ok(vec![
        BenchResult::absolute(
            "P4",
            "freshness: command published → new version served by replica B (p99)",
            (p99, "ms"),
            "p99 <= 10 ms",
            p99 <= 10.0,
        )
        .detail(format!(
            "p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms over {} commands, one at a time, through the real applier; replica A under wrk -t1 -c32 cached reads",
            latencies.len()
        )),
    ])
}

/// Reads replica B's live stream for one key and sends `(version, when read)` per event.
async fn follow(
    base: &str,
    path: &str,
    token: &str,
) -> anyhow::Result<mpsc::UnboundedReceiver<(i64, Instant)>> {
    let mut response = reqwest::Client::new()
        .get(format!("{base}{path}/stream"))
        .bearer_auth(token)
        .send()
        .await?
        .error_for_status()?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut buffer = String::new();
        while let Ok(Some(chunk)) = response.chunk().await {
            let now = Instant::now();
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find("\n\n") {
                let event: String = buffer.drain(..end + 2).collect();
                let version = event
                    .lines()
                    .find_map(|l| l.strip_prefix("id:"))
                    .and_then(|v| v.trim().parse::<i64>().ok());
                if let Some(version) = version
                    && tx.send((version, now)).is_err()
                {
                    return;
                }
            }
        }
    });
    Ok(rx)
}

async fn next_arrival(
    arrivals: &mut mpsc::UnboundedReceiver<(i64, Instant)>,
    version: i64,
) -> anyhow::Result<Instant> {
    let deadline = tokio::time::Instant::now() + ARRIVAL_LIMIT;
    loop {
        match tokio::time::timeout_at(deadline, arrivals.recv()).await {
            Ok(Some((seen, at))) if seen >= version => return Ok(at),
            Ok(Some(_)) => continue,
            Ok(None) => anyhow::bail!("replica B's stream ended"),
            Err(_) => anyhow::bail!("version {version} never reached replica B"),
        }
    }
}
