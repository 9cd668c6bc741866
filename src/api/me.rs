//! `GET /api/v1/me`: who the token says the caller is. Lets a client check its token (and
//! whether it is an admin one) without knowing any progress key.

use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use uuid::Uuid;

use super::ApiState;
use crate::auth::Principal;

pub(crate) fn router() -> Router<ApiState> {
    Router::new().route("/api/v1/me", get(me))
}

#[derive(Serialize)]
struct Me {
    user_id: Uuid,
    admin: bool,
}

async fn me(principal: Principal) -> Json<Me> {
    Json(Me {
        user_id: principal.user_id,
        admin: principal.admin,
    })
}
