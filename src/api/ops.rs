//! Operational routes: liveness, readiness, metrics and the OpenAPI document.

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use serde_json::json;

use super::ApiState;

/// The API's OpenAPI 3 document, written by hand; `tests/api/service.rs` checks it lists every route.
pub(crate) const OPENAPI: &str = include_str!("openapi.json");

pub(crate) fn router() -> Router<ApiState> {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route(
            "/openapi.json",
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) }),
        )
}

/// Ready when the database and NATS answer and the cache follows the events stream;
/// otherwise 503 naming what failed.
async fn readyz(State(state): State<ApiState>) -> impl IntoResponse {
    state
        .metrics()
        .db_queries
        .with_label_values(&["ping"])
        .inc();
    let ping = sqlx::query("select 1").execute(state.pool());
    // a readiness probe must answer quickly even when the database hangs
    let database = matches!(
        tokio::time::timeout(Duration::from_secs(2), ping).await,
        Ok(Ok(_))
    );
    let nats = state.nats().connection_state() == async_nats::connection::State::Connected;
    let events = state.feed().following();
    let status = if database && nats && events {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let check = |ok: bool| if ok { "ok" } else { "unreachable" };
    let body = json!({
        "status": if status.is_success() { "ready" } else { "not_ready" },
        "checks": {
            "database": check(database),
            "nats": check(nats),
            "events": if events { "following" } else { "not_following" },
        },
    });
    (status, Json(body))
}

async fn metrics(State(state): State<ApiState>) -> impl IntoResponse {
    let metrics = state.metrics();
    state.lag().observe(metrics).await;
    metrics
        .cache_entries
        .set(i64::try_from(state.cache().entry_count()).unwrap_or(i64::MAX));
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics.render(),
    )
}
