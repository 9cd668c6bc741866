//! What every handler shares: pool, cache, track catalogue, verifier, metrics, NATS client, stream tickets,
//! limits and configuration.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::feed::{self, FeedState};
use super::lag::LagProbe;
use super::limits::{RateLimiter, StreamSlots};
use super::ticket::Tickets;
use super::{ApiConfig, Metrics, PgSource, ProgressCache, TrackCatalogue};
use crate::auth::Verifier;
use crate::messaging::NatsConfig;

/// How long start-up waits for the feed before it goes on retrying in the background.
const FIRST_FOLLOW: Duration = Duration::from_secs(5);

/// Cheap to clone: one `Arc`.
#[derive(Clone)]
pub struct ApiState {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    cache: ProgressCache,
    catalogue: TrackCatalogue,
    verifier: Verifier,
    metrics: Metrics,
    nats: async_nats::Client,
    feed: FeedState,
    lag: LagProbe,
    tickets: Tickets,
    stream_slots: StreamSlots,
    rate_limiter: RateLimiter,
    config: ApiConfig,
    shutdown: CancellationToken,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Connect(#[from] crate::messaging::ConnectError),
}

impl ApiState {
    /// Builds the cache, connects to NATS and starts following the events stream. When NATS
    /// and the stream answer within a few seconds, the feed follows before this returns, so
    /// nothing published afterwards is missed; otherwise it keeps trying in the background
    /// (`/readyz` says so) while reads go to the database. The feed and open event streams
    /// stop when `shutdown` fires.
    pub async fn start(
        pool: PgPool,
        nats: &NatsConfig,
        verifier: Verifier,
        config: ApiConfig,
        shutdown: CancellationToken,
    ) -> Result<ApiState, StartError> {
        let metrics = Metrics::new();
        let source = Arc::new(PgSource::new(pool.clone(), &metrics));
        let catalogue = source.catalogue().clone();
        let cache = ProgressCache::new(&config.cache(), source, &metrics);
        let client = feed::connect(nats, cache.clone()).await?;
        let first = match tokio::time::timeout(FIRST_FOLLOW, feed::follow(&client, nats, &cache))
            .await
        {
            Ok(Ok(following)) => Some(following),
            Ok(Err(error)) => {
                tracing::warn!(error = %crate::telemetry::causes(&error), "not following progress events yet; retrying");
                None
            }
            Err(_) => {
                tracing::warn!("NATS not reachable yet; progress events will follow once it is");
                None
            }
        };
        let feed_state = FeedState::default();
        tokio::spawn(feed::run(
            client.clone(),
            nats.clone(),
            first,
            cache.clone(),
            metrics.clone(),
            feed_state.clone(),
            shutdown.clone(),
        ));
        let lag = LagProbe::new(
            client.clone(),
            pool.clone(),
            nats.clone(),
            config.applier_durable.clone(),
        );
        Ok(ApiState {
            inner: Arc::new(Inner {
                pool,
                cache,
                catalogue,
                verifier,
                metrics,
                lag,
                nats: client,
                feed: feed_state,
                tickets: Tickets::new(
                    config.stream_ticket_secret.as_ref(),
                    config.stream_ticket_lifetime,
                ),
                stream_slots: StreamSlots::new(config.max_streams_per_user, config.max_streams),
                rate_limiter: RateLimiter::new(config.rate_limit_per_sec, config.rate_limit_burst),
                config,
                shutdown,
            }),
        })
    }

    pub(crate) fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    pub fn cache(&self) -> &ProgressCache {
        &self.inner.cache
    }

    /// The tracks' unit counts, cached.
    pub(crate) fn catalogue(&self) -> &TrackCatalogue {
        &self.inner.catalogue
    }

    pub(crate) fn verifier(&self) -> &Verifier {
        &self.inner.verifier
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub(crate) fn nats(&self) -> &async_nats::Client {
        &self.inner.nats
    }

    /// Reads the write path's lag into the metrics.
    pub(crate) fn lag(&self) -> &LagProbe {
        &self.inner.lag
    }

    /// Whether the cache follows the events stream right now.
    pub fn feed(&self) -> &FeedState {
        &self.inner.feed
    }

    pub(crate) fn tickets(&self) -> &Tickets {
        &self.inner.tickets
    }

    /// Live streams open now, capped per user and in all.
    pub fn stream_slots(&self) -> &StreamSlots {
        &self.inner.stream_slots
    }

    pub(crate) fn rate_limiter(&self) -> &RateLimiter {
        &self.inner.rate_limiter
    }

    pub fn config(&self) -> &ApiConfig {
        &self.inner.config
    }

    pub(crate) fn shutdown(&self) -> &CancellationToken {
        &self.inner.shutdown
    }
}
