//! The forwarder's Prometheus metrics, served on `XAPI_METRICS_ADDR` when it is set.

use std::net::SocketAddr;

use axum::routing::get;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Statements the LRS took (a duplicate it already held counts again).
    pub forwarded: IntCounter,
    /// Statements the LRS refused, each dead-lettered.
    pub refused: IntCounter,
    /// Failed attempts to post, by kind: `lrs` (unreachable, 5xx, 429, auth) or `database`.
    pub failures: IntCounterVec,
    /// Events not forwarded yet: pending in the durable consumer plus delivered, unacked.
    pub lag: IntGauge,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let forwarded = IntCounter::new(
            "xapi_statements_forwarded_total",
            "Statements the LRS accepted",
        )
        .expect("valid metric");
        let refused = IntCounter::new(
            "xapi_statements_refused_total",
            "Statements the LRS refused as invalid, dead-lettered",
        )
        .expect("valid metric");
        let failures = IntCounterVec::new(
            Opts::new(
                "xapi_forward_failures_total",
                "Transient failures of a batch, retried with backoff",
            ),
            &["kind"],
        )
        .expect("valid metric");
        let lag = IntGauge::new(
            "xapi_forward_lag_events",
            "Progress events not forwarded yet (pending and unacknowledged)",
        )
        .expect("valid metric");
        for collector in [
            Box::new(forwarded.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(refused.clone()),
            Box::new(failures.clone()),
            Box::new(lag.clone()),
        ] {
            registry
                .register(collector)
                .expect("metric names are unique");
        }
        Metrics {
            registry,
            forwarded,
            refused,
            failures,
            lag,
        }
    }

    pub(crate) fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .expect("metrics encode as text")
    }

    /// Serves `GET /metrics` on `addr` until `shutdown`.
    pub(crate) async fn serve(
        self,
        addr: SocketAddr,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        tracing::info!(addr = %listener.local_addr()?, "xAPI forwarder metrics listening");
        let app = axum::Router::new().route(
            "/metrics",
            get(move || {
                let metrics = self.clone();
                async move { metrics.render() }
            }),
        );
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}
