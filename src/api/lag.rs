//! The write path's lag as Prometheus gauges on the API's `/metrics`: the figures `status`
//! prints, read when Prometheus scrapes (at most once per [`REFRESH`] per replica, so many
//! replicas and scrapers cost NATS and the database a few cheap queries).

use std::time::{Duration, Instant};

use async_nats::jetstream;
use sqlx::PgPool;
use tokio::sync::Mutex;

use super::Metrics;
use crate::messaging::NatsConfig;
use crate::ops::status::{self, Lag};

/// How long one reading of the lag is reused.
pub(crate) const REFRESH: Duration = Duration::from_secs(5);

/// A scrape waits at most this long for NATS and the database; the gauges then say the
/// reading failed (`progress_lag_up 0`) instead of holding the scrape.
const READ_TIMEOUT: Duration = Duration::from_secs(2);

pub(crate) struct LagProbe {
    js: jetstream::Context,
    pool: PgPool,
    nats: NatsConfig,
    durable: String,
    /// When the gauges were last set; one scrape at a time reads, the others reuse it.
    last: Mutex<Option<Instant>>,
}

impl LagProbe {
    pub(crate) fn new(
        client: async_nats::Client,
        pool: PgPool,
        nats: NatsConfig,
        durable: String,
    ) -> Self {
        LagProbe {
            js: jetstream::new(client),
            pool,
            nats,
            durable,
            last: Mutex::new(None),
        }
    }

    /// Sets the lag gauges of `metrics`, reading the lag again if the last reading is older
    /// than [`REFRESH`].
    pub(crate) async fn observe(&self, metrics: &Metrics) {
        let mut last = self.last.lock().await;
        if last.is_some_and(|at| at.elapsed() < REFRESH) {
            return;
        }
        let read = status::lag(&self.js, &self.pool, &self.nats, &self.durable);
        match tokio::time::timeout(READ_TIMEOUT, read).await {
            Ok(Ok(lag)) => {
                set(metrics, &lag);
                metrics.lag_up.set(1);
            }
            Ok(Err(error)) => {
                tracing::warn!(error = %crate::telemetry::causes(&error), "reading the write path's lag for /metrics");
                metrics.lag_up.set(0);
            }
            Err(_) => {
                tracing::warn!(timeout = ?READ_TIMEOUT, "reading the write path's lag for /metrics timed out");
                metrics.lag_up.set(0);
            }
        }
        *last = Some(Instant::now());
    }
}

fn set(metrics: &Metrics, lag: &Lag) {
    let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    metrics.commands_waiting.set(gauge(lag.commands_waiting));
    metrics
        .unreconciled_learners
        .set(gauge(lag.unreconciled_learners));
    metrics.commands_pending.set(gauge(lag.pending));
    metrics.commands_ack_pending.set(gauge(lag.ack_pending));
    metrics
        .oldest_waiting_seconds
        .set(lag.oldest_waiting_seconds.unwrap_or(0.0));
    // a reason whose dead letters were all purged or redriven drops to no series
    metrics.dead_letters.reset();
    for (reason, count) in &lag.dead_letters {
        metrics
            .dead_letters
            .with_label_values(&[reason.as_str()])
            .set(gauge(*count));
    }
    metrics.unannounced.set(lag.unannounced);
    metrics
        .unannounced_over_a_minute
        .set(lag.unannounced_over_a_minute);
}
