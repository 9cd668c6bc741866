//! Prometheus metrics, one registry per [`super::ApiState`] so several APIs in one process
//! (tests) never share counters.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use prometheus::{
    Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use super::ApiState;

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// By matched route, method and status.
    pub requests: IntCounterVec,
    /// By matched route.
    pub latency: HistogramVec,
    pub cache_hits: IntCounter,
    pub cache_misses: IntCounter,
    pub cache_entries: IntGauge,
    /// Events received, by outcome: `applied`, `stale` (not newer than the cache), `uncached`
    /// (the learner is not cached: read from the database next time), `malformed`,
    /// `mismatched` (about another learner or track than the subject names).
    pub cache_events: IntCounterVec,
    /// Database queries, by query: `progress`, `progress_list`, `ping`.
    pub db_queries: IntCounterVec,
    /// The write path's lag (`status`), read when scraped ([`super::lag`]).
    pub commands_waiting: IntGauge,
    pub unreconciled_learners: IntGauge,
    pub commands_pending: IntGauge,
    pub commands_ack_pending: IntGauge,
    pub oldest_waiting_seconds: Gauge,
    /// By reason.
    pub dead_letters: IntGaugeVec,
    pub unannounced: IntGauge,
    pub unannounced_over_a_minute: IntGauge,
    /// 1 when the last reading of the lag succeeded, 0 when NATS or the database failed it.
    pub lag_up: IntGauge,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests answered"),
            &["route", "method", "status"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "Time to answer a request")
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ]),
            &["route"],
        )
        .expect("valid metric");
        let cache_hits =
            IntCounter::new("progress_cache_hits_total", "Reads answered from the cache")
                .expect("valid metric");
        let cache_misses = IntCounter::new(
            "progress_cache_misses_total",
            "Reads that needed the database",
        )
        .expect("valid metric");
        let cache_entries = IntGauge::new("progress_cache_entries", "Snapshots in the cache")
            .expect("valid metric");
        let cache_events = IntCounterVec::new(
            Opts::new(
                "progress_cache_events_total",
                "Progress events received, by outcome",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        let db_queries = IntCounterVec::new(
            Opts::new("db_queries_total", "Database queries made by the API"),
            &["query"],
        )
        .expect("valid metric");
        let int_gauge = |name: &str, help: &str| IntGauge::new(name, help).expect("valid metric");
        let commands_waiting = int_gauge(
            "progress_commands_waiting",
            "Commands stored and not yet applied and acknowledged",
        );
        let unreconciled_learners = int_gauge(
            "progress_unreconciled_learners",
            "Learners (learner and track) with commands published and not yet applied",
        );
        let commands_pending = int_gauge(
            "progress_commands_pending",
            "Waiting commands not yet delivered to an applier",
        );
        let commands_ack_pending = int_gauge(
            "progress_commands_ack_pending",
            "Commands delivered to an applier and not yet acknowledged",
        );
        let oldest_waiting_seconds = Gauge::new(
            "progress_oldest_waiting_command_seconds",
            "How long the oldest waiting command has waited (0 when none waits)",
        )
        .expect("valid metric");
        let dead_letters = IntGaugeVec::new(
            Opts::new("progress_dead_letters", "Dead letters stored, by reason"),
            &["reason"],
        )
        .expect("valid metric");
        let unannounced = int_gauge(
            "progress_unannounced_changes",
            "Applied changes whose event JetStream has not confirmed yet",
        );
        let unannounced_over_a_minute = int_gauge(
            "progress_unannounced_changes_over_a_minute",
            "Applied changes unannounced for more than a minute",
        );
        let lag_up = int_gauge(
            "progress_lag_up",
            "1 when the last reading of the write path's lag succeeded",
        );
        for collector in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(cache_hits.clone()),
            Box::new(cache_misses.clone()),
            Box::new(cache_entries.clone()),
            Box::new(cache_events.clone()),
            Box::new(db_queries.clone()),
            Box::new(commands_waiting.clone()),
            Box::new(unreconciled_learners.clone()),
            Box::new(commands_pending.clone()),
            Box::new(commands_ack_pending.clone()),
            Box::new(oldest_waiting_seconds.clone()),
            Box::new(dead_letters.clone()),
            Box::new(unannounced.clone()),
            Box::new(unannounced_over_a_minute.clone()),
            Box::new(lag_up.clone()),
        ] {
            registry
                .register(collector)
                .expect("metric names are unique");
        }
        Metrics {
            registry,
            requests,
            latency,
            cache_hits,
            cache_misses,
            cache_entries,
            cache_events,
            db_queries,
            commands_waiting,
            unreconciled_learners,
            commands_pending,
            commands_ack_pending,
            oldest_waiting_seconds,
            dead_letters,
            unannounced,
            unannounced_over_a_minute,
            lag_up,
        }
    }

    /// Every metric in the Prometheus text format.
    pub(crate) fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .expect("metrics encode as text")
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

/// Counts and times every request by its route template (never the raw path: it holds ids).
pub(crate) async fn track_request(
    State(state): State<ApiState>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let method = method_label(request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    let metrics = state.metrics();
    metrics
        .requests
        .with_label_values(&[route.as_str(), method, response.status().as_str()])
        .inc();
    metrics
        .latency
        .with_label_values(&[route.as_str()])
        .observe(started.elapsed().as_secs_f64());
    response
}

/// The method as a label: HTTP's own methods by name, any other as `other`. A client can send
/// any token as a method, and a label per token would grow the registry without bound.
fn method_label(method: &Method) -> &'static str {
    static KNOWN: [Method; 9] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::CONNECT,
        Method::OPTIONS,
        Method::TRACE,
        Method::PATCH,
    ];
    KNOWN
        .iter()
        .find(|known| *known == method)
        .map_or("other", Method::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_outside_http_share_one_label() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::PATCH), "PATCH");
        for invented in ["PURGE", "get", "X-ANYTHING"] {
            let method = Method::from_bytes(invented.as_bytes()).unwrap();
            assert_eq!(method_label(&method), "other", "{invented}");
        }
    }
}
