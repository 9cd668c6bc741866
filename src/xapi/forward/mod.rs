//! The forwarder (`xapi-forward`): a durable consumer of its own on the events stream that
//! posts each applied command's statement to an LRS, in batches.
//!
//! An event names its command (`event_id`); the statement is built from the command's ledger
//! row, which says which unit was completed and the attempt's score (the event's snapshot does
//! not). Events are acked only once the LRS took their statements, or once a statement it
//! refused is dead-lettered (`<prefix>.dlq.xapi_refused`, with the LRS's answer); a transient
//! failure (LRS or database unreachable, 5xx, 429, refused credentials) is retried with capped
//! backoff and never dead-letters. Statement ids are derived from command ids, so a restart or
//! a replay resends the same statements, which the LRS recognises as ones it already holds.
//!
//! [`backfill`] sends a learner's or a track's history from the ledger instead.

mod backfill;
mod batch;
mod metrics;

pub(crate) use backfill::backfill;
pub use metrics::Metrics;

use std::net::SocketAddr;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::pull};
use futures::StreamExt;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::XapiConfig;
use super::lrs::{Lrs, LrsConfig};
use crate::messaging::{self, NatsConfig};

/// The dead-letter reason of a statement the LRS refused.
pub const REFUSED: &str = "xapi_refused";
/// The dead-letter reason of an event that does not decode.
pub(crate) const MALFORMED: &str = "xapi_malformed_event";

#[derive(Debug, Clone, clap::Args)]
pub struct ForwardConfig {
    #[command(flatten)]
    pub lrs: LrsConfig,

    /// The durable consumer on the events stream; forwarders sharing it share the work.
    #[arg(long, env = "XAPI_DURABLE", default_value = "xapi-forwarder")]
    pub xapi_durable: String,

    /// Statements per request to the LRS.
    #[arg(long = "xapi-batch-size", env = "XAPI_BATCH_SIZE", default_value_t = 100,
          value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub batch_size: u16,

    /// Longest wait between retries of a batch the LRS (or the database) did not take.
    #[arg(
        long = "xapi-max-backoff-ms",
        env = "XAPI_MAX_BACKOFF_MS",
        default_value_t = 30_000
    )]
    pub max_backoff_ms: u64,

    /// How long an event delivered to a forwarder may stay unacknowledged before it is
    /// delivered again (to this or another forwarder); keep it above the LRS timeout.
    #[arg(long, env = "XAPI_ACK_WAIT_SECS", default_value_t = 90)]
    pub xapi_ack_wait_secs: u64,

    /// Serve Prometheus metrics (`/metrics`) on this address; none by default.
    #[arg(long = "xapi-metrics-addr", env = "XAPI_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,

    /// Send this learner's existing history from the ledger (with `--backfill-track`: on that
    /// track only), then exit, instead of following the events.
    #[arg(long, env = "XAPI_BACKFILL_USER")]
    pub backfill_user: Option<Uuid>,

    /// Send this track's existing history from the ledger, then exit.
    #[arg(long, env = "XAPI_BACKFILL_TRACK")]
    pub backfill_track: Option<Uuid>,
}

impl ForwardConfig {
    /// A configuration for `url` with the defaults, for tests and embedding.
    pub fn new(lrs: LrsConfig) -> ForwardConfig {
        ForwardConfig {
            lrs,
            xapi_durable: "xapi-forwarder".to_owned(),
            batch_size: 100,
            max_backoff_ms: 30_000,
            xapi_ack_wait_secs: 90,
            metrics_addr: None,
            backfill_user: None,
            backfill_track: None,
        }
    }

    fn backoff(&self, failures: u32) -> Duration {
        let exponential = 250u64.saturating_mul(1 << failures.min(16));
        Duration::from_millis(exponential.min(self.max_backoff_ms))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("setting up the streams")]
    Streams(#[from] messaging::StreamSetupError),
    #[error("creating the forwarder's durable consumer {durable} on {stream}")]
    Consumer {
        durable: String,
        stream: String,
        #[source]
        source: jetstream::stream::ConsumerError,
    },
    #[error(transparent)]
    Client(#[from] super::lrs::ClientError),
}

/// Everything a batch needs.
pub(crate) struct Forwarder {
    pub js: jetstream::Context,
    pub pool: PgPool,
    pub nats: NatsConfig,
    pub xapi: XapiConfig,
    pub lrs: Lrs,
    pub metrics: Metrics,
}

/// What the forwarder reads from and where its dead letters go.
pub struct Deps {
    pub js: jetstream::Context,
    pub pool: PgPool,
    pub nats: NatsConfig,
}

/// Follows the events stream until `shutdown`; the batch in hand is finished first.
pub async fn run(
    deps: Deps,
    xapi: XapiConfig,
    config: ForwardConfig,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> Result<(), ForwardError> {
    let Deps { js, pool, nats } = deps;
    messaging::ensure_streams(&js, &nats).await?;
    let mut consumer: jetstream::consumer::Consumer<pull::Config> = js
        .create_consumer_on_stream(
            pull::Config {
                durable_name: Some(config.xapi_durable.clone()),
                filter_subject: nats.events_filter(),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(config.xapi_ack_wait_secs),
                // transient failures must never exhaust deliveries: retry for ever
                max_deliver: -1,
                // a few batches in flight at most per forwarder
                max_ack_pending: i64::from(config.batch_size) * 4,
                ..Default::default()
            },
            &nats.events_stream,
        )
        .await
        .map_err(|source| ForwardError::Consumer {
            durable: config.xapi_durable.clone(),
            stream: nats.events_stream.clone(),
            source,
        })?;
    if let Some(addr) = config.metrics_addr {
        let (metrics, shutdown) = (metrics.clone(), shutdown.clone());
        tokio::spawn(async move {
            if let Err(error) = metrics.serve(addr, shutdown).await {
                tracing::error!(%error, %addr, "cannot serve the forwarder's metrics");
            }
        });
    }
    tracing::info!(durable = %config.xapi_durable, stream = %nats.events_stream, lrs = %config.lrs.lrs_url, "xAPI forwarder following events");
    let forwarder = Forwarder {
        js,
        pool,
        nats,
        xapi,
        lrs: Lrs::new(&config.lrs)?,
        metrics,
    };
    let mut failures = 0u32;
    while !shutdown.is_cancelled() {
        let batch = tokio::select! {
            _ = shutdown.cancelled() => break,
            batch = next_batch(&consumer, config.batch_size.into()) => batch,
        };
        if let Ok(info) = consumer.info().await {
            forwarder
                .metrics
                .lag
                .set((info.num_pending + info.num_ack_pending as u64) as i64);
        }
        if batch.is_empty() {
            continue;
        }
        match forwarder.forward(&batch).await {
            Ok(()) => failures = 0,
            Err(failure) => {
                let backoff = config.backoff(failures);
                failures = failures.saturating_add(1);
                forwarder
                    .metrics
                    .failures
                    .with_label_values(&[failure.kind()])
                    .inc();
                tracing::warn!(error = %failure, retry_in_ms = backoff.as_millis() as u64, "batch not forwarded; retrying");
                for message in &batch {
                    let _ = message.ack_with(AckKind::Nak(Some(backoff))).await;
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
            }
        }
    }
    tracing::info!("xAPI forwarder stopped");
    Ok(())
}

/// Up to `size` events: as many as are there now, or the first to arrive within 5 s.
async fn next_batch(
    consumer: &jetstream::consumer::Consumer<pull::Config>,
    size: usize,
) -> Vec<jetstream::Message> {
    let messages = match consumer
        .batch()
        .max_messages(size)
        .expires(Duration::from_secs(5))
        .messages()
        .await
    {
        Ok(messages) => messages,
        Err(error) => {
            tracing::warn!(%error, "cannot pull events; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
            return Vec::new();
        }
    };
    messages
        .filter_map(|message| async move {
            message
                .inspect_err(|error| tracing::warn!(%error, "pull stream error; resuming"))
                .ok()
        })
        .collect()
        .await
}

/// The `xapi-forward` subcommand: connects, then follows the events (or backfills and exits).
pub async fn start(
    db: &crate::config::DbConfig,
    nats: &NatsConfig,
    xapi: &XapiConfig,
    config: &ForwardConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let pool = crate::db::connect(db).await?;
    if config.backfill_user.is_some() || config.backfill_track.is_some() {
        let report = backfill(&pool, xapi, config, &shutdown).await?;
        println!("{report}");
        return Ok(());
    }
    let client = messaging::connect(nats, "xapi-forwarder").await?;
    let deps = Deps {
        js: jetstream::new(client),
        pool,
        nats: nats.clone(),
    };
    run(deps, xapi.clone(), config.clone(), Metrics::new(), shutdown).await?;
    Ok(())
}
