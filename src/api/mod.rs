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
//!
//! plus the database, NATS ([`crate::messaging::NatsConfig`]) and auth ([`crate::auth`]) settings.
//!
//! - [`progress`]: the progress routes (one snapshot, every track, a live stream).
//! - [`me`]: the caller, as its token identifies it.
//! - [`ops`]: health, readiness, metrics and the OpenAPI document.
//! - [`cache`]: the snapshot cache; [`feed`]: the events that keep it fresh.
//! - [`cors`]: which browser origins may call; [`ticket`]: how a browser opens a live stream.

mod auth;
pub mod cache;
mod cors;
mod error;
pub mod feed;
mod me;
pub mod metrics;
mod ops;
mod progress;
mod state;
mod ticket;

pub use cache::{CacheConfig, PgSource, ProgressCache, Snapshot, SnapshotSource};
pub use error::ApiError;
pub use metrics::Metrics;
pub use state::{ApiState, StartError};
pub use ticket::{TICKET_LIFETIME, TicketError, TicketSecret, Tickets};

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, StatusCode};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
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
}

impl Default for ApiConfig {
    fn default() -> ApiConfig {
        ApiConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            cache_capacity: 100_000,
            cache_ttl_secs: 300,
            min_version_wait_ms: 2000,
            request_timeout_secs: 10,
            cors_origins: Vec::new(),
            cors_loopback: false,
            stream_ticket_secret: None,
            stream_ticket_lifetime: TICKET_LIFETIME,
        }
    }
}

impl ApiConfig {
    pub fn cache(&self) -> CacheConfig {
        CacheConfig {
            capacity: self.cache_capacity,
            ttl: Duration::from_secs(self.cache_ttl_secs),
        }
    }

    pub fn min_version_wait(&self) -> Duration {
        Duration::from_millis(self.min_version_wait_ms)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }
}

/// Every route, with tracing, metrics, CORS (when configured) and the request timeout.
pub fn router(state: ApiState) -> Router {
    let routes = Router::new()
        .merge(progress::router())
        .merge(me::router())
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
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
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
