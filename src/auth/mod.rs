//! Supabase access tokens: verification for the API and development tokens for people.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `SUPABASE_JWT_SECRET` | none | the project's HS256 secret |
//! | `SUPABASE_JWKS` | none | path or URL of the project's JWKS (ES256/RS256 signing keys) |
//! | `JWKS_REFETCH_INTERVAL_SECS` | 60 | least time between two fetches caused by an unknown `kid` |
//! | `JWT_AUDIENCE` | `authenticated` | required `aud` of user tokens (the service role has none) |
//! | `JWT_ISSUER` | none | required `iss`, when set |
//! | `ADMIN_CLAIM` | none | `path.to.claim=value` that makes a token admin, e.g. `app_metadata.role=admin` (never `user_metadata`, which users edit) |
//! | `LEARNING_PROGRESS_DEV` | off | development mode: a fixed, public secret when none is given |
//!
//! At least one key source is required outside development mode. Secrets are never printed.

mod jwks;
mod token;
mod verifier;

pub use token::{TokenError, mint_dev_token, mint_development_token, parse_ttl};
pub use verifier::{AuthError, Principal, Verifier, VerifierError};

use std::time::Duration;

/// Used only in development mode when no secret is configured. Public by design: tokens it
/// signs prove nothing, which is why it is refused outside `--dev`.
pub const DEV_JWT_SECRET: &str = "learning-progress-insecure-development-secret-not-for-production";

#[derive(Clone, clap::Args)]
pub struct AuthConfig {
    /// The Supabase project's JWT secret (HS256).
    #[arg(long, env = "SUPABASE_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// Path or http(s) URL of a JWKS with the project's asymmetric signing keys.
    #[arg(long, env = "SUPABASE_JWKS")]
    pub jwks: Option<String>,

    /// Least time between two JWKS fetches caused by an unknown `kid`, so garbage tokens
    /// cannot make the service hammer the key endpoint.
    #[arg(long, env = "JWKS_REFETCH_INTERVAL_SECS", default_value_t = 60)]
    pub jwks_refetch_interval_secs: u64,

    /// How often the JWKS is fetched again in any case: a key revoked in Supabase stops being
    /// trusted within this time plus the 10 minutes Supabase's edge caches the endpoint.
    #[arg(long, env = "JWKS_REFRESH_SECS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    pub jwks_refresh_secs: u64,

    /// Audience every token must carry.
    #[arg(long, env = "JWT_AUDIENCE", default_value = "authenticated")]
    pub jwt_audience: String,

    /// Issuer every token must carry, when set (e.g. `https://<ref>.supabase.co/auth/v1`).
    #[arg(long, env = "JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// A claim that makes a token admin, as `path.to.claim=value`; `role=service_role` always does.
    #[arg(long, env = "ADMIN_CLAIM")]
    pub admin_claim: Option<String>,

    /// Development mode: sign and accept tokens with a fixed, public secret if none is given.
    #[arg(
        long = "dev",
        env = "LEARNING_PROGRESS_DEV",
        value_parser = clap::builder::FalseyValueParser::new()
    )]
    pub dev: bool,
}

impl AuthConfig {
    /// A configuration with only an HS256 secret and Supabase's defaults.
    pub fn with_secret(secret: impl Into<String>) -> AuthConfig {
        AuthConfig {
            jwt_secret: Some(secret.into()),
            jwks: None,
            jwks_refetch_interval_secs: 60,
            jwks_refresh_secs: 600,
            jwt_audience: "authenticated".to_owned(),
            jwt_issuer: None,
            admin_claim: None,
            dev: false,
        }
    }

    /// The HS256 secret: the configured one, or the development secret in development mode.
    pub(crate) fn hmac_secret(&self) -> Option<&str> {
        match &self.jwt_secret {
            Some(secret) => Some(secret),
            None if self.development_mode() => Some(DEV_JWT_SECRET),
            None => None,
        }
    }

    /// Development mode takes effect only while no real key (secret or JWKS) is configured:
    /// a deployment that has one never also accepts tokens anyone can sign.
    pub fn development_mode(&self) -> bool {
        self.dev && self.jwt_secret.is_none() && self.jwks.is_none()
    }

    pub(crate) fn jwks_refetch_interval(&self) -> Duration {
        Duration::from_secs(self.jwks_refetch_interval_secs)
    }

    pub(crate) fn jwks_refresh(&self) -> Duration {
        Duration::from_secs(self.jwks_refresh_secs.max(1))
    }
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("jwt_secret", &self.jwt_secret.as_ref().map(|_| "***"))
            .field("jwks", &self.jwks)
            .field(
                "jwks_refetch_interval_secs",
                &self.jwks_refetch_interval_secs,
            )
            .field("jwks_refresh_secs", &self.jwks_refresh_secs)
            .field("jwt_audience", &self.jwt_audience)
            .field("jwt_issuer", &self.jwt_issuer)
            .field("admin_claim", &self.admin_claim)
            .field("dev", &self.dev)
            .finish()
    }
}
