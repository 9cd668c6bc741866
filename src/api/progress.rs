//! `/api/v1/users/{user_id}/…`: one snapshot, every track of a learner, and a live stream,
//! opened with a bearer token or a stream ticket ([`super::ticket`]) minted with one.

use std::convert::Infallible;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use futures::Stream;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::auth::authorize;
use super::cache::{Change, Changes};
use super::limits::StreamSlot;
use super::{ApiError, ApiState, Snapshot};
use crate::auth::Principal;

/// Set when `min_version` was not reached in time: the body is this replica's newest.
pub(crate) const BEHIND_HEADER: &str = "x-progress-behind";

pub(crate) fn router() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/users/{user_id}/progress", get(list))
        .route(
            "/api/v1/users/{user_id}/tracks/{track_id}/progress",
            get(show),
        )
        .route(
            "/api/v1/users/{user_id}/tracks/{track_id}/progress/stream",
            get(stream),
        )
        .route(
            "/api/v1/users/{user_id}/tracks/{track_id}/progress/stream-ticket",
            post(stream_ticket),
        )
}

#[derive(Debug, Deserialize)]
struct ReadOptions {
    /// Read-your-writes: wait (bounded) until this replica has at least this version.
    min_version: Option<i64>,
}

async fn show(
    State(state): State<ApiState>,
    principal: Principal,
    path: Result<Path<(Uuid, Uuid)>, PathRejection>,
    query: Result<Query<ReadOptions>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Path((user_id, track_id)) = path?;
    authorize(&principal, user_id)?;
    let Query(options) = query?;
    let key = (user_id, track_id);
    let (snapshot, caught_up) = match options.min_version {
        Some(min_version) => {
            let wait = state.config().min_version_wait();
            state.cache().wait_for(key, min_version, wait).await
        }
        None => state.cache().get(key).await.map(|s| (s, true)),
    }
    .map_err(ApiError::internal)?;
    let snapshot = snapshot.ok_or(ApiError::NotFound)?;

    let etag = format!("\"{}\"", snapshot.version());
    let mut response = if matches_etag(&headers, &etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        json_body(snapshot.json())
    };
    let response_headers = response.headers_mut();
    response_headers.insert(
        header::ETAG,
        HeaderValue::from_str(&etag).expect("a quoted number is a valid header"),
    );
    // personal data: browsers may keep it, shared caches may not, and both must revalidate
    response_headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    if !caught_up {
        response_headers.insert(BEHIND_HEADER, HeaderValue::from_static("true"));
    }
    Ok(response)
}

fn matches_etag(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

fn json_body(body: Bytes) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

async fn list(
    State(state): State<ApiState>,
    principal: Principal,
    path: Result<Path<Uuid>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(user_id) = path?;
    authorize(&principal, user_id)?;
    state
        .metrics()
        .db_queries
        .with_label_values(&["progress_list"])
        .inc();
    let read_at = state.cache().generation();
    let rows = crate::db::views::list_user_progress(state.pool(), user_id)
        .await
        .map_err(ApiError::internal)?;
    // `{"progress": [...]}`, each element the cached JSON, offered through the cache so this
    // answer is never older than a snapshot served before
    let mut body = Vec::with_capacity(16 + rows.len() * 1024);
    body.extend_from_slice(b"{\"progress\":[");
    for (i, row) in rows.into_iter().enumerate() {
        let view = state
            .catalogue()
            .view(row)
            .await
            .map_err(ApiError::internal)?;
        let snapshot = state
            .cache()
            .offer_read(Snapshot::new(&view), Some(read_at))
            .await;
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&snapshot.json());
    }
    body.extend_from_slice(b"]}");
    Ok(json_body(Bytes::from(body)))
}

#[derive(Deserialize)]
struct StreamOptions {
    /// A stream ticket, for clients that cannot send an `Authorization` header.
    ticket: Option<String>,
}

#[derive(Serialize)]
struct StreamTicket {
    ticket: String,
    /// Seconds the ticket stays valid.
    expires_in: u64,
}

async fn stream_ticket(
    State(state): State<ApiState>,
    principal: Principal,
    path: Result<Path<(Uuid, Uuid)>, PathRejection>,
) -> Result<Json<StreamTicket>, ApiError> {
    let Path((user_id, track_id)) = path?;
    authorize(&principal, user_id)?;
    let tickets = state.tickets();
    Ok(Json(StreamTicket {
        ticket: tickets.mint(user_id, track_id, principal.expires_at),
        expires_in: tickets.lifetime().as_secs(),
    }))
}

async fn stream(
    State(state): State<ApiState>,
    principal: Result<Principal, ApiError>,
    path: Result<Path<(Uuid, Uuid)>, PathRejection>,
    query: Result<Query<StreamOptions>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let Path((user_id, track_id)) = path?;
    let Query(options) = query?;
    let (caller, expires_at) = match options.ticket {
        Some(ticket) => (user_id, state.tickets().redeem(&ticket, user_id, track_id)?),
        None => {
            let principal = principal?;
            authorize(&principal, user_id)?;
            (principal.user_id, principal.expires_at)
        }
    };
    let slot = state.stream_slots().acquire(caller)?;
    let key = (user_id, track_id);
    // subscribe before reading, so a change between the two is not lost
    let changes = state.cache().changes(key);
    let current = state.cache().get(key).await.map_err(ApiError::internal)?;
    let follow = Follow {
        pending: current,
        erased: false,
        sent: 0,
        changes,
        until: until(expires_at),
        shutdown: state.shutdown().clone(),
        _slot: slot,
    };
    let events = futures::stream::unfold(follow, Follow::next);
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// When a token expiring at `expires_at` (seconds since the epoch) runs out, on this
/// process's clock; a far-off expiry is capped at a year rather than overflowing.
fn until(expires_at: u64) -> Instant {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let left = Duration::from_secs(expires_at).saturating_sub(now);
    Instant::now() + left.min(Duration::from_secs(365 * 86_400))
}

/// One live stream: the newest snapshot of one key, each sent once, in version order, until
/// the token that opened it expires (the client reconnects with a fresh one), shutdown, or
/// the learner's erasure (told as a last `erased` event, so the client does not reconnect).
struct Follow {
    pending: Option<Snapshot>,
    erased: bool,
    sent: i64,
    changes: Changes,
    until: Instant,
    shutdown: CancellationToken,
    /// this stream's place among the open ones, given back when the stream ends
    _slot: StreamSlot,
}

impl Follow {
    async fn next(mut self) -> Option<(Result<Event, Infallible>, Follow)> {
        if self.erased {
            return None;
        }
        loop {
            if let Some(snapshot) = self.pending.take()
                && snapshot.version() > self.sent
            {
                self.sent = snapshot.version();
                let event = Event::default()
                    .event("progress")
                    .id(snapshot.version().to_string())
                    .data(snapshot.json_string());
                return Some((Ok(event), self));
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return None,
                _ = tokio::time::sleep_until(self.until) => return None,
                change = self.changes.next() => match change {
                    Change::Snapshot(snapshot) => self.pending = Some(snapshot),
                    Change::Erased => {
                        self.erased = true;
                        let (user_id, track_id) = self.changes.key();
                        let event = Event::default().event("erased").data(
                            serde_json::json!({ "user_id": user_id, "track_id": track_id })
                                .to_string(),
                        );
                        return Some((Ok(event), self));
                    }
                },
            }
        }
    }
}
