//! The caller of a request, from its `Authorization: Bearer` header; each learner's requests
//! count against their rate limit ([`super::limits`]) here.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::{ApiError, ApiState};
use crate::auth::{AuthError, Principal};

impl FromRequestParts<ApiState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ApiState,
    ) -> Result<Principal, ApiError> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .ok_or(AuthError::Missing)?
            .to_str()
            .map_err(|_| AuthError::Malformed)?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or(AuthError::Missing)?;
        let principal = state.verifier().verify(token.trim()).await?;
        if !principal.admin {
            state.rate_limiter().check(principal.user_id)?;
        }
        Ok(principal)
    }
}

/// Learners read their own progress; admins read anyone's.
pub(crate) fn authorize(principal: &Principal, user_id: uuid::Uuid) -> Result<(), ApiError> {
    if principal.may_read(user_id) {
        Ok(())
    } else {
        Err(ApiError::Forbidden)
    }
}
