//! The read service: learners' progress over HTTP, answered from a cache kept fresh by events.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `API_ADDR` | `127.0.0.1:8080` | where to listen |
//! | `API_CACHE_CAPACITY` | 100000 | snapshots kept per replica |
//! | `API_CACHE_TTL_SECS` | 300 | safety net: a snapshot is reloaded at least this often |
//! | `API_MIN_VERSION_WAIT_MS` | 2000 | longest wait for `?min_version=` before answering behind |
//! | `API_REQUEST_TIMEOUT_SECS` | 10 | longest time to produce a response |
//! | `API_CORS_ORIGINS` | none (loopback in development mode) | origins browsers may call from, comma-separated |
//! | `API_STREAM_TICKET_SECRET` | a random key per process | signs stream tickets; set alike on every replica |
//! | `API_MISS_TTL_MS` | 2000 | how long "no progress here" is believed without asking the database |
//! | `API_MAX_STREAMS_PER_USER` | 8 | live streams one user may hold open on a replica |
//! | `API_MAX_STREAMS` | 10000 | live streams a replica holds open in all |
//! | `API_RATE_LIMIT_PER_SEC` | 20 | requests per second per learner (0: no limit; admins have none) |
//! | `API_RATE_LIMIT_BURST` | 40 | requests a learner may make at once before the rate applies |
//! | `API_MAX_CONNECTIONS` | 10000 | connections served at once; more wait in the listen queue |
//! | `API_HEADER_READ_TIMEOUT_MS` | 10000 | longest time a client may take to send a request's headers |
//!
//! plus the database, NATS ([`crate::messaging::NatsConfig`]) and auth ([`crate::auth`]) settings.
//!
//! - [`progress`]: the progress routes (one snapshot, every track, a live stream).
//! - [`me`]: the caller, as its token identifies it.
//! - [`export`]: a track's rows, in pages, for admins' reporting tools.
//! - [`ops`]: health, readiness, metrics and the OpenAPI document; [`lag`]: the write path's
//!   backlog among the metrics.
//! - [`cache`]: the snapshot cache; [`feed`]: the events that keep it fresh; [`catalogue`]: the
//!   tracks' unit counts.
//! - [`cors`]: which browser origins may call; [`ticket`]: how a browser opens a live stream.
//! - [`xapi`]: the ledger as xAPI statements (`GET /xapi/statements`, `docs/xapi.md`).
//! - [`limits`]: what one caller may cost; [`serve`]: connections, header timeout, panics.

mod auth;
pub(crate) mod cache;
mod catalogue;
mod cors;
mod error;
mod export;
pub(crate) mod feed;
mod lag;
pub(crate) mod limits;
mod me;
pub(crate) mod metrics;
mod ops;
mod progress;
mod serve;
mod state;
mod ticket;
mod xapi;

pub use cache::{CacheConfig, Change, Changes, PgSource, ProgressCache, Snapshot, SnapshotSource};
pub(crate) use catalogue::TrackCatalogue;
pub(crate) use error::ApiError;
pub use metrics::Metrics;
pub use serve::{ConnectionLimits, serve_router};
pub use state::{ApiState, StartError};
pub(crate) use ticket::{TICKET_LIFETIME, TicketSecret};

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, StatusCode};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::auth::{AuthConfig, Verifier};
use crate::config::DbConfig;
use crate::messaging::NatsConfig;

#[derive(Debug, Clone, clap::Args)]
pub struct ApiConfig {
    /// Address the API listens on.
    #[arg(long = "api-addr", env = "API_ADDR", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Snapshots kept in this replica's cache; bounds its memory.
    #[arg(long, env = "API_CACHE_CAPACITY", default_value_t = 100_000)]
    pub cache_capacity: u64,

    /// Safety net behind the events: a cached snapshot is reloaded at least this often.
    #[arg(long, env = "API_CACHE_TTL_SECS", default_value_t = 300)]
    pub cache_ttl_secs: u64,

    /// Longest wait for `?min_version=` before answering with what this replica has.
    #[arg(long, env = "API_MIN_VERSION_WAIT_MS", default_value_t = 2000)]
    pub min_version_wait_ms: u64,

    /// Longest time to produce a response (streams only need their first bytes in time);
    /// keep it above the `min_version` wait.
    #[arg(long, env = "API_REQUEST_TIMEOUT_SECS", default_value_t = 10)]
    pub request_timeout_secs: u64,

    /// Origins browsers may call the API from, exactly as they send them
    /// (`http://127.0.0.1:5173,https://app.example.com`). None by default: no CORS headers.
    #[arg(
        long,
        env = "API_CORS_ORIGINS",
        value_delimiter = ',',
        value_parser = cors::parse_origin
    )]
    pub cors_origins: Vec<HeaderValue>,

    /// Allow every loopback origin when none is listed; set by development mode.
    #[arg(skip)]
    pub cors_loopback: bool,

    /// Signs stream tickets (at least 32 characters). Set it alike on every replica so a ticket
    /// minted by one opens a stream on any; without it, only on the replica that minted it.
    #[arg(long, env = "API_STREAM_TICKET_SECRET", hide_env_values = true)]
    pub stream_ticket_secret: Option<TicketSecret>,

    /// How long a stream ticket opens its stream.
    #[arg(skip = TICKET_LIFETIME)]
    pub stream_ticket_lifetime: Duration,

    /// How long a read that found no progress is answered from memory; an event for that
    /// learner and track ends it at once. Bounds the queries a learner without progress costs.
    #[arg(long, env = "API_MISS_TTL_MS", default_value_t = 2000)]
    pub miss_ttl_ms: u64,

    /// Live streams one user may hold open on this replica (a few tabs, not a botnet).
    #[arg(long, env = "API_MAX_STREAMS_PER_USER", default_value_t = 8)]
    pub max_streams_per_user: usize,

    /// Live streams this replica holds open in all; each costs a connection and a task.
    #[arg(long, env = "API_MAX_STREAMS", default_value_t = 10_000)]
    pub max_streams: usize,

    /// Requests per second each learner may make (a token bucket per user id); 0: no limit.
    /// Admins are not limited.
    #[arg(long, env = "API_RATE_LIMIT_PER_SEC", default_value_t = 20.0)]
    pub rate_limit_per_sec: f64,

    /// Requests a learner may make at once before the per-second rate applies.
    #[arg(long, env = "API_RATE_LIMIT_BURST", default_value_t = 40)]
    pub rate_limit_burst: u32,

    /// Connections served at once; further ones wait in the listen queue until one closes.
    #[arg(long, env = "API_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_http_connections: usize,

    /// Longest time a client may take to send a request's headers (slow-loris guard).
    #[arg(long, env = "API_HEADER_READ_TIMEOUT_MS", default_value_t = 10_000)]
    pub header_read_timeout_ms: u64,

    /// The appliers' durable consumer, whose backlog `/metrics` reports (as `status` does).
    #[arg(long, env = "APPLIER_DURABLE", default_value = "progress-applier")]
    pub applier_durable: String,

    /// How `GET /xapi/statements` names learners and activities (the forwarder's settings).
    #[command(flatten)]
    pub xapi: crate::xapi::XapiConfig,
}

impl Default for ApiConfig {
    /// The command line's defaults ([`crate::config::defaults`]).
    fn default() -> ApiConfig {
        crate::config::defaults()
    }
}

impl ApiConfig {
    pub(crate) fn cache(&self) -> CacheConfig {
        CacheConfig {
            capacity: self.cache_capacity,
            ttl: Duration::from_secs(self.cache_ttl_secs),
            miss_ttl: Duration::from_millis(self.miss_ttl_ms),
        }
    }

    pub(crate) fn min_version_wait(&self) -> Duration {
        Duration::from_millis(self.min_version_wait_ms)
    }

    pub(crate) fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }

    pub fn connection_limits(&self) -> ConnectionLimits {
        ConnectionLimits {
            max_connections: self.max_http_connections,
            header_read_timeout: Duration::from_millis(self.header_read_timeout_ms),
        }
    }
}

/// Every route, with tracing, metrics, CORS (when configured), the request timeout and a
/// panic turned into a 500.
pub fn router(state: ApiState) -> Router {
    router_with(state, Router::new())
}

/// [`router`] with `extra` routes under the same layers; tests add a route that panics.
pub fn router_with(state: ApiState, extra: Router<ApiState>) -> Router {
    let routes = extra
        .merge(progress::router())
        .merge(me::router())
        .merge(export::router())
        .merge(xapi::router())
        .merge(ops::router())
        .fallback(|| async { ApiError::NoRoute })
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            state.config().request_timeout(),
        ));
    // outside the timeout, so a browser can read a timed-out answer too
    let routes = match cors::layer(state.config()) {
        Some(cors) => routes.layer(cors),
        None => routes,
    };
    routes
        // inside the metrics and the trace, so a panic is counted and logged as a 500
        .layer(CatchPanicLayer::custom(error::panicked))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track_request,
        ))
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request| {
                // the route template, not the path: paths carry user ids
                let route = request
                    .extensions()
                    .get::<MatchedPath>()
                    .map_or("unmatched", MatchedPath::as_str);
                // never the query either: a stream's carries its ticket
                tracing::info_span!("request", method = %request.method(), route)
            }),
        )
        .with_state(state)
}

/// Serves until `shutdown` fires, then lets in-flight requests finish. Event streams end on
/// the state's own shutdown token; pass the same one.
pub async fn serve(
    listener: TcpListener,
    state: ApiState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let limits = state.config().connection_limits();
    serve_router(listener, router(state), limits, shutdown).await
}

/// The `api` subcommand: verifier, pool, event feed and server; returns after `shutdown`.
pub async fn run(
    db: &DbConfig,
    nats: &NatsConfig,
    api: ApiConfig,
    auth: &AuthConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // tokens anyone can sign must never be accepted from another machine
    if auth.development_mode() && !api.listen.ip().is_loopback() {
        anyhow::bail!(
            "development mode (LEARNING_PROGRESS_DEV / --dev, no SUPABASE_JWT_SECRET or \
             SUPABASE_JWKS) serves only on a loopback address, not {}: set API_ADDR to \
             127.0.0.1:PORT, or configure a real key",
            api.listen
        );
    }
    let verifier = Verifier::from_config(auth)
        .await
        .context("configuring token verification")?;
    let pool = crate::db::connect(db).await?;
    let listener = TcpListener::bind(api.listen)
        .await
        .with_context(|| format!("binding {}", api.listen))?;
    let api = ApiConfig {
        cors_loopback: auth.development_mode() && api.cors_origins.is_empty(),
        ..api
    };
    let state = ApiState::start(pool, nats, verifier, api, shutdown.clone())
        .await
        .context("starting the event feed")?;
    tracing::info!(addr = %listener.local_addr()?, database = %db.redacted_url(), "API listening");
    serve(listener, state, shutdown)
        .await
        .context("serving HTTP")?;
    tracing::info!("API stopped");
    Ok(())
}
