//! Development tokens, so a person can call the API with curl, and harnesses can sign tokens
//! with the secret they configured the service with.

use std::time::Duration;

use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;
use uuid::Uuid;

use super::AuthConfig;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("no JWT secret to sign with: set SUPABASE_JWT_SECRET, or pass --dev")]
    NoSecret,
    #[error(
        "the token command mints development tokens only, which a service with a real key \
         (SUPABASE_JWT_SECRET or SUPABASE_JWKS) refuses: unset them, or sign in through \
         Supabase for a real token"
    )]
    RealKeyConfigured,
    #[error("signing the token")]
    Sign(#[source] jsonwebtoken::errors::Error),
}

/// An HS256 token for `user` signed with the configured (or development) secret, shaped like
/// a Supabase access token; `admin` makes it a service-role token.
pub fn mint_dev_token(
    config: &AuthConfig,
    user: Uuid,
    admin: bool,
    ttl: Duration,
) -> Result<String, TokenError> {
    let secret = config.hmac_secret().ok_or(TokenError::NoSecret)?;
    let now = jsonwebtoken::get_current_timestamp();
    let mut claims = json!({
        "sub": user.to_string(),
        "aud": config.jwt_audience,
        "role": if admin { "service_role" } else { "authenticated" },
        "iat": now,
        // a TTL beyond the end of time (u64 seconds) lasts until then, rather than wrapping
        "exp": now.saturating_add(ttl.as_secs()),
    });
    if let Some(issuer) = &config.jwt_issuer {
        claims["iss"] = json!(issuer);
    }
    jsonwebtoken::encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(TokenError::Sign)
}

/// The `token` command: a token signed with the public development secret, which only a
/// service in development mode accepts; refused while a real key is configured, so the
/// command can never forge a token a deployment would accept.
pub fn mint_development_token(
    config: &AuthConfig,
    user: Uuid,
    admin: bool,
    ttl: Duration,
) -> Result<String, TokenError> {
    if config.jwt_secret.is_some() || config.jwks.is_some() {
        return Err(TokenError::RealKeyConfigured);
    }
    let development = AuthConfig {
        dev: true,
        ..config.clone()
    };
    mint_dev_token(&development, user, admin, ttl)
}

/// Parses `90`, `90s`, `15m`, `1h` or `7d`.
pub fn parse_ttl(text: &str) -> Result<Duration, String> {
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let count: u64 = digits
        .parse()
        .map_err(|_| format!("expected a duration like 15m or 1h, got {text:?}"))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "unknown unit {unit:?} in {text:?}; use s, m, h or d"
            ));
        }
    };
    count
        .checked_mul(seconds)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{text:?} is longer than a duration can be"))
}
