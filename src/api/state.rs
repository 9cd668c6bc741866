//! What every handler shares: pool, cache, verifier, metrics, NATS client, stream tickets and
//! configuration.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::ticket::Tickets;
use super::{ApiConfig, Metrics, PgSource, ProgressCache, feed};
use crate::auth::Verifier;
use crate::messaging::NatsConfig;

/// Cheap to clone: one `Arc`.
#[derive(Clone)]
pub struct ApiState {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    cache: ProgressCache,
    verifier: Verifier,
    metrics: Metrics,
    nats: async_nats::Client,
    tickets: Tickets,
    config: ApiConfig,
    shutdown: CancellationToken,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("connecting to NATS")]
    Connect(#[from] async_nats::ConnectError),
    #[error("subscribing to progress events")]
    Subscribe(#[from] async_nats::SubscribeError),
}

impl ApiState {
    /// Builds the cache, connects to NATS and starts applying events to the cache before it
    /// returns, so nothing published afterwards is missed. The feed and open event streams
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
        let cache = ProgressCache::new(&config.cache(), source, &metrics);
        let client = feed::connect(nats, cache.clone()).await?;
        let events = feed::subscribe(&client, nats).await?;
        // the server knows the subscription once it answers a ping sent after it
        match tokio::time::timeout(Duration::from_secs(5), client.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(%error, "NATS not reachable yet; events will follow once it is")
            }
            Err(_) => tracing::warn!("NATS not reachable yet; events will follow once it is"),
        }
        tokio::spawn(feed::run(
            events,
            cache.clone(),
            metrics.clone(),
            shutdown.clone(),
        ));
        Ok(ApiState {
            inner: Arc::new(Inner {
                pool,
                cache,
                verifier,
                metrics,
                nats: client,
                tickets: Tickets::new(
                    config.stream_ticket_secret.as_ref(),
                    config.stream_ticket_lifetime,
                ),
                config,
                shutdown,
            }),
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    pub fn cache(&self) -> &ProgressCache {
        &self.inner.cache
    }

    pub fn verifier(&self) -> &Verifier {
        &self.inner.verifier
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub fn nats(&self) -> &async_nats::Client {
        &self.inner.nats
    }

    pub fn tickets(&self) -> &Tickets {
        &self.inner.tickets
    }

    pub fn config(&self) -> &ApiConfig {
        &self.inner.config
    }

    pub fn shutdown(&self) -> &CancellationToken {
        &self.inner.shutdown
    }
}
