//! `GET /api/v1/tracks/{track_id}/progress`: a track's rows for admins' reporting tools, in
//! pages ([`crate::ops::export`] says how paging and `since` behave).

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{ApiError, ApiState};
use crate::auth::Principal;
use crate::model::ProgressView;
use crate::ops::export;

pub(crate) fn router() -> Router<ApiState> {
    Router::new().route("/api/v1/tracks/{track_id}/progress", get(track_progress))
}

#[derive(Debug, Deserialize)]
struct ExportOptions {
    /// Only rows updated at or after this time.
    since: Option<DateTime<Utc>>,
    /// The previous page's `next`.
    after: Option<Uuid>,
    /// Rows per page, at most [`export::MAX_PAGE`].
    limit: Option<u32>,
}

#[derive(Serialize)]
struct ExportPage {
    progress: Vec<ProgressView>,
    /// Pass as `after` for the next page; `null` on the last.
    next: Option<Uuid>,
    /// Pass as `since` to the next incremental export.
    resume_since: DateTime<Utc>,
}

async fn track_progress(
    State(state): State<ApiState>,
    principal: Principal,
    path: Result<Path<Uuid>, PathRejection>,
    query: Result<Query<ExportOptions>, QueryRejection>,
) -> Result<Json<ExportPage>, ApiError> {
    if !principal.admin {
        return Err(ApiError::AdminOnly);
    }
    let Path(track) = path?;
    let Query(options) = query?;
    let limit = options.limit.unwrap_or(500);
    if !(1..=export::MAX_PAGE).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {}",
            export::MAX_PAGE
        )));
    }
    let started = Utc::now();
    if !export::track_exists(state.pool(), track)
        .await
        .map_err(ApiError::internal)?
    {
        return Err(ApiError::NotFound);
    }
    let page = export::page(
        state.pool(),
        &export::Query {
            track,
            since: options.since,
            after: options.after,
            limit,
        },
    )
    .await
    .map_err(ApiError::internal)?;
    Ok(Json(ExportPage {
        progress: page.progress,
        next: page.next,
        resume_since: export::resume_since(started),
    }))
}
