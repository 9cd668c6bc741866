//! `/api/v1/users/{user_id}/…`: one snapshot, every track of a learner, and a live stream,
//! opened with a bearer token or a stream ticket ([`super::ticket`]) minted with one.

use std::convert::Infallible;

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
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::auth::authorize;
use super::cache::Key;
use super::{ApiError, ApiState, ProgressCache, Snapshot};
use crate::auth::Principal;

/// Set when `min_version` was not reached in time: the body is this replica's newest.
pub const BEHIND_HEADER: &str = "x-progress-behind";

pub fn router() -> Router<ApiState> {
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
    let views = crate::db::views::list_progress_views(state.pool(), user_id)
        .await
        .map_err(ApiError::internal)?;
    // `{"progress": [...]}`, each element the cached JSON, offered through the cache so this
    // answer is never older than a snapshot served before
    let mut body = Vec::with_capacity(16 + views.len() * 1024);
    body.extend_from_slice(b"{\"progress\":[");
    for (i, view) in views.iter().enumerate() {
        let snapshot = state.cache().offer(Snapshot::new(view)).await;
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
        ticket: tickets.mint(user_id, track_id),
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
    match options.ticket {
        Some(ticket) => state.tickets().redeem(&ticket, user_id, track_id)?,
        None => authorize(&principal?, user_id)?,
    }
    let key = (user_id, track_id);
    // subscribe before reading, so a change between the two is not lost
    let changes = state.cache().changes();
    let current = state.cache().get(key).await.map_err(ApiError::internal)?;
    let follow = Follow {
        cache: state.cache().clone(),
        key,
        pending: current,
        sent: 0,
        changes,
        shutdown: state.shutdown().clone(),
    };
    let events = futures::stream::unfold(follow, Follow::next);
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// One live stream: the newest snapshot of one key, each sent once, in version order.
struct Follow {
    cache: ProgressCache,
    key: Key,
    pending: Option<Snapshot>,
    sent: i64,
    changes: broadcast::Receiver<Snapshot>,
    shutdown: CancellationToken,
}

impl Follow {
    async fn next(mut self) -> Option<(Result<Event, Infallible>, Follow)> {
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
                change = self.changes.recv() => match change {
                    Ok(snapshot) => {
                        if snapshot.key() == self.key {
                            self.pending = Some(snapshot);
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        self.pending = self.cache.peek(self.key).await;
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
            }
        }
    }
}
