//! `GET /xapi/statements`: the subset of the xAPI Statement Resource a reader needs, answered
//! from the ledger — a learner's own statements, anyone's for admins.
//!
//! Parameters: `agent`, `verb`, `activity`, `registration`, `since`, `until`, `limit`,
//! `ascending`, `statementId`, and `cursor` (the `more` link's). Any other parameter is a 400,
//! as the specification asks, and so is a request without `X-Experience-API-Version`. Every
//! answer carries `X-Experience-API-Version`; a statement list also carries
//! `X-Experience-API-Consistent-Through`: every statement stored up to then is in the ledger.
//! `since` and `until` compare with `stored`, the time the applier recorded the command.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::{ApiError, ApiState};
use crate::auth::Principal;
use crate::xapi::ledger::{self, Filter, Position};
use crate::xapi::statement::{self, timestamp, verbs};

pub(crate) const VERSION_HEADER: &str = "x-experience-api-version";
pub(crate) const CONSISTENT_THROUGH_HEADER: &str = "x-experience-api-consistent-through";
/// Statements per page when `limit` is absent or 0 (the server's maximum, as the spec says).
const MAX_LIMIT: u32 = 500;

pub(crate) fn router() -> Router<ApiState> {
    Router::new()
        .route("/xapi/statements", get(statements))
        .route_layer(axum::middleware::from_fn(versioned))
}

/// Refuses a request without a supported `X-Experience-API-Version`, and names the version
/// answered on every response (1.0.3, or 2.0.0 to a 2.0 client).
async fn versioned(request: Request, next: Next) -> Response {
    let asked = request
        .headers()
        .get(VERSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (answered, response) = match asked.as_deref() {
        Some(v) if v.starts_with("2.0") => ("2.0.0", next.run(request).await),
        Some(v) if v.starts_with("1.0") => ("1.0.3", next.run(request).await),
        _ => (
            "1.0.3",
            ApiError::BadRequest(
                "the X-Experience-API-Version header is required (1.0.x or 2.0.x)".to_owned(),
            )
            .into_response(),
        ),
    };
    let mut response = response;
    response
        .headers_mut()
        .insert(VERSION_HEADER, HeaderValue::from_static(answered));
    response
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Params {
    agent: Option<String>,
    verb: Option<String>,
    activity: Option<String>,
    registration: Option<Uuid>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    limit: Option<u32>,
    ascending: Option<bool>,
    statement_id: Option<Uuid>,
    cursor: Option<String>,
}

async fn statements(
    State(state): State<ApiState>,
    principal: Principal,
    query: Result<Query<Params>, QueryRejection>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let Query(params) = query?;
    let config = &state.config().xapi;
    if let Some(id) = params.statement_id {
        return one(&state, &principal, id).await;
    }
    let Some(filter) = filter(&state, &principal, &params)? else {
        // a verb, activity or agent this service never states: nothing matches
        return page(&state, Vec::new(), String::new()).await;
    };
    let ascending = params.ascending.unwrap_or(false);
    let after = params.cursor.as_deref().map(parse_cursor).transpose()?;
    let limit = match params.limit {
        None | Some(0) => MAX_LIMIT,
        Some(limit) => limit.min(MAX_LIMIT),
    };
    let records = ledger::applied(state.pool(), &filter, ascending, after, i64::from(limit))
        .await
        .map_err(ApiError::internal)?;
    let more = match records.last() {
        Some(last) if records.len() == limit as usize => more_link(
            raw.as_deref().unwrap_or(""),
            (last.applied_at, last.command.command_id),
        ),
        _ => String::new(),
    };
    let statements = records
        .iter()
        .map(|record| statement::statement(config, record, true).0)
        .collect();
    page(&state, statements, more).await
}

/// `statementId`: that statement, if the caller may read it; 404 otherwise, so that ids of
/// other learners' statements tell nothing.
async fn one(state: &ApiState, principal: &Principal, id: Uuid) -> Result<Response, ApiError> {
    let record = ledger::applied_by_statement_id(state.pool(), id)
        .await
        .map_err(ApiError::internal)?
        .filter(|record| principal.may_read(record.command.user_id))
        .ok_or(ApiError::NotFound)?;
    Ok(Json(statement::statement(&state.config().xapi, &record, true).0).into_response())
}

async fn page(
    state: &ApiState,
    statements: Vec<serde_json::Value>,
    more: String,
) -> Result<Response, ApiError> {
    let through = consistent_through(state)
        .await
        .map_err(ApiError::internal)?;
    let mut headers = HeaderMap::new();
    headers.insert(
        CONSISTENT_THROUGH_HEADER,
        HeaderValue::from_str(&timestamp(through)).expect("a timestamp is a header value"),
    );
    let body = json!({ "statements": statements, "more": more });
    Ok((headers, Json(body)).into_response())
}

/// The start of the oldest transaction still writing, or now: every command recorded before
/// it is visible, and none recorded later can have an earlier `stored`.
async fn consistent_through(state: &ApiState) -> Result<DateTime<Utc>, sqlx::Error> {
    sqlx::query_scalar(
        "select coalesce(min(xact_start), now()) from pg_stat_activity
         where datname = current_database() and backend_xid is not null",
    )
    .fetch_one(state.pool())
    .await
}

/// The ledger filter the parameters describe; `None` when they name nothing this service
/// states. A learner reads only their own statements.
fn filter(
    state: &ApiState,
    principal: &Principal,
    params: &Params,
) -> Result<Option<Filter>, ApiError> {
    let config = &state.config().xapi;
    let mut filter = Filter {
        since: params.since,
        until: params.until,
        registration: params.registration,
        ..Filter::default()
    };
    match params.agent.as_deref().map(agent_user).transpose()? {
        Some(Some((home_page, user))) if home_page == config.home_page => {
            if !principal.may_read(user) {
                return Err(ApiError::Forbidden);
            }
            filter.user_id = Some(user);
        }
        Some(_) => return Ok(None),
        None if principal.admin => {}
        None => filter.user_id = Some(principal.user_id),
    }
    if let Some(verb) = &params.verb {
        let (kinds, passed): (&[&str], _) = match verb.as_str() {
            verbs::ATTEMPTED => (&["track_started"], None),
            verbs::COMPLETED => (&["unit_completed", "track_completed"], None),
            verbs::PASSED => (&["assessment_recorded"], Some(true)),
            verbs::FAILED => (&["assessment_recorded"], Some(false)),
            _ => return Ok(None),
        };
        filter.kinds = Some(kinds.iter().map(|k| (*k).to_owned()).collect());
        filter.passed = passed;
    }
    if let Some(activity) = &params.activity {
        let Some(path) = activity.strip_prefix(&format!("{}/tracks/", config.base())) else {
            return Ok(None);
        };
        let (track, unit) = match path.split_once("/units/") {
            Some((track, unit)) => (track, Some(unit)),
            None => (path, None),
        };
        let Ok(track) = track.parse::<Uuid>() else {
            return Ok(None);
        };
        filter.track_id = Some(track);
        match unit.map(str::parse::<Uuid>) {
            Some(Ok(unit)) => filter.unit_id = Some(unit),
            Some(Err(_)) => return Ok(None),
            // the track itself is the object of starting and completing it
            None => {
                let kinds = ["track_started", "track_completed"];
                let wanted: Vec<String> = match &filter.kinds {
                    Some(verb_kinds) => verb_kinds
                        .iter()
                        .filter(|k| kinds.contains(&k.as_str()))
                        .cloned()
                        .collect(),
                    None => kinds.iter().map(|k| (*k).to_owned()).collect(),
                };
                if wanted.is_empty() {
                    return Ok(None);
                }
                filter.kinds = Some(wanted);
            }
        }
    }
    Ok(Some(filter))
}

/// The account of an `agent` parameter: `(homePage, user id)`; `None` for an agent of another
/// form (mbox, openid, …) or a name that is not a user id — no statement here is about it.
fn agent_user(agent: &str) -> Result<Option<(String, Uuid)>, ApiError> {
    let agent: serde_json::Value = serde_json::from_str(agent)
        .map_err(|e| ApiError::BadRequest(format!("agent is not a JSON object: {e}")))?;
    let account = &agent["account"];
    let (Some(home_page), Some(name)) = (account["homePage"].as_str(), account["name"].as_str())
    else {
        return Ok(None);
    };
    Ok(name.parse().ok().map(|user| (home_page.to_owned(), user)))
}

/// `<applied_at in microseconds>.<command id>`: where the next page starts.
fn parse_cursor(cursor: &str) -> Result<Position, ApiError> {
    let bad = || ApiError::BadRequest("cursor is not one this service gave".to_owned());
    let (micros, id) = cursor.split_once('.').ok_or_else(bad)?;
    let at = micros
        .parse::<i64>()
        .ok()
        .and_then(DateTime::<Utc>::from_timestamp_micros)
        .ok_or_else(bad)?;
    Ok((at, id.parse().map_err(|_| bad())?))
}

/// The request's own query with the next page's cursor.
fn more_link(raw: &str, (at, id): Position) -> String {
    let mut query: Vec<&str> = raw
        .split('&')
        .filter(|pair| !pair.is_empty() && !pair.starts_with("cursor="))
        .collect();
    let cursor = format!("cursor={}.{id}", at.timestamp_micros());
    query.push(&cursor);
    format!("/xapi/statements?{}", query.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_more_link_keeps_the_query_and_replaces_the_cursor() {
        let at = DateTime::<Utc>::from_timestamp_micros(1_700_000_000_123_456).unwrap();
        let id = Uuid::from_u128(7);
        let link = more_link("limit=2&cursor=1.x&verb=v", (at, id));
        assert_eq!(
            link,
            format!("/xapi/statements?limit=2&verb=v&cursor=1700000000123456.{id}")
        );
        let cursor = link.rsplit_once("cursor=").unwrap().1;
        assert_eq!(parse_cursor(cursor).unwrap(), (at, id));
        assert!(parse_cursor("nonsense").is_err());
    }
}
