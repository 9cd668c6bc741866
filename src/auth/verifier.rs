//! Verifies a bearer token and says who it is for.

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use uuid::Uuid;

use super::jwks::{Jwks, JwksError};
use super::{AuthConfig, DEV_JWT_SECRET};

/// The caller, as proven by a valid token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Principal {
    pub user_id: Uuid,
    /// Service role, or the configured admin claim: may read anyone's progress.
    pub admin: bool,
    /// The token's `exp`, in seconds since the Unix epoch: a live stream it opened ends then.
    pub expires_at: u64,
}

impl Principal {
    pub(crate) fn may_read(&self, user_id: Uuid) -> bool {
        self.admin || self.user_id == user_id
    }
}

/// Why a token was refused. Shown to the caller, so it names the rule, never key material.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token")]
    Missing,
    #[error("malformed token")]
    Malformed,
    #[error("token algorithm not accepted")]
    Algorithm,
    #[error("unknown signing key")]
    UnknownKey,
    #[error("invalid token: {}", describe(.0))]
    Rejected(#[source] jsonwebtoken::errors::Error),
    #[error("token subject is not a user id")]
    Subject,
    #[error("token role may not read progress (only `authenticated` users and `service_role`)")]
    Role,
}

fn describe(error: &jsonwebtoken::errors::Error) -> &'static str {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::ExpiredSignature => "expired",
        ErrorKind::ImmatureSignature => "not valid yet",
        ErrorKind::InvalidAudience => "wrong audience",
        ErrorKind::InvalidIssuer => "wrong issuer",
        ErrorKind::MissingRequiredClaim(_) => "missing a required claim",
        ErrorKind::InvalidSignature => "bad signature",
        ErrorKind::InvalidAlgorithm => "algorithm does not match the key",
        _ => "malformed",
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VerifierError {
    #[error(
        "no token key configured: set SUPABASE_JWT_SECRET and/or SUPABASE_JWKS \
         (or LEARNING_PROGRESS_DEV=1 for the development secret)"
    )]
    NoKeySource,
    #[error("ADMIN_CLAIM must look like `path.to.claim=value`, got {0:?}")]
    AdminClaim(String),
    #[error(
        "ADMIN_CLAIM {0:?} points into user_metadata, which every user may edit for \
         themselves; use a claim only the project sets, e.g. app_metadata.role=admin"
    )]
    UserEditableAdminClaim(String),
    #[error(transparent)]
    Jwks(#[from] JwksError),
}

/// The `iss` of a Supabase project's legacy API keys (`anon`, `service_role`).
const LEGACY_KEY_ISSUER: &str = "supabase";

/// Checks signature, `exp`, `nbf` and (when configured) `iss`; then either the service role
/// (admin, no `sub` or `aud` needed), or `aud`, `role: authenticated` and a user id in `sub`.
pub struct Verifier {
    hmac: Option<DecodingKey>,
    jwks: Option<Jwks>,
    audience: String,
    issuer: Option<String>,
    admin_claim: Option<(Vec<String>, String)>,
}

impl Verifier {
    pub async fn from_config(config: &AuthConfig) -> Result<Verifier, VerifierError> {
        if config.development_mode() {
            tracing::warn!(
                "development mode: accepting tokens signed with the public development secret"
            );
        }
        let hmac = config
            .hmac_secret()
            .map(|secret| DecodingKey::from_secret(secret.as_bytes()));
        let jwks = match &config.jwks {
            Some(location) => Some(
                Jwks::load(
                    location,
                    config.jwks_refetch_interval(),
                    config.jwks_refresh(),
                )
                .await?,
            ),
            None => None,
        };
        if hmac.is_none() && jwks.is_none() {
            return Err(VerifierError::NoKeySource);
        }
        let admin_claim = config
            .admin_claim
            .as_deref()
            .map(|claim| match claim.split_once('=') {
                // Supabase lets a signed-in user write their own user_metadata
                Some((path, _)) if path.split('.').next() == Some("user_metadata") => {
                    Err(VerifierError::UserEditableAdminClaim(claim.to_owned()))
                }
                Some((path, value)) if !path.is_empty() => Ok((
                    path.split('.').map(str::to_owned).collect(),
                    value.to_owned(),
                )),
                _ => Err(VerifierError::AdminClaim(claim.to_owned())),
            })
            .transpose()?;
        Ok(Verifier {
            hmac,
            jwks,
            audience: config.jwt_audience.clone(),
            issuer: config.jwt_issuer.clone(),
            admin_claim,
        })
    }

    /// A verifier that accepts only the development secret, for tests and `--dev`.
    pub async fn development() -> Verifier {
        let mut config = AuthConfig::with_secret(DEV_JWT_SECRET);
        config.dev = true;
        Verifier::from_config(&config)
            .await
            .expect("a secret alone is a valid configuration")
    }

    pub async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        // The key decides the algorithm, never the header: HS256 only with the shared secret,
        // ES256/RS256 only with a JWKS key bound to exactly that algorithm.
        let jwks_key;
        let key = match header.alg {
            Algorithm::HS256 => self.hmac.as_ref().ok_or(AuthError::Algorithm)?,
            Algorithm::ES256 | Algorithm::RS256 => {
                let jwks = self.jwks.as_ref().ok_or(AuthError::Algorithm)?;
                let kid = header.kid.as_deref().ok_or(AuthError::UnknownKey)?;
                jwks_key = jwks.key(kid).await.ok_or(AuthError::UnknownKey)?;
                if jwks_key.alg != header.alg {
                    return Err(AuthError::Algorithm);
                }
                &jwks_key.key
            }
            _ => return Err(AuthError::Algorithm),
        };
        let claims =
            jsonwebtoken::decode::<serde_json::Value>(token, key, &self.validation(header.alg))
                .map_err(AuthError::Rejected)?
                .claims;
        let claim = |name: &str| claims.get(name).and_then(serde_json::Value::as_str);
        let rejected = |kind: jsonwebtoken::errors::ErrorKind| AuthError::Rejected(kind.into());
        let service_role = claim("role") == Some("service_role");
        if let Some(issuer) = &self.issuer {
            // the project's legacy service_role key says `supabase`, its user tokens the
            // auth URL
            let iss = claim("iss");
            if iss != Some(issuer.as_str()) && !(service_role && iss == Some(LEGACY_KEY_ISSUER)) {
                return Err(rejected(jsonwebtoken::errors::ErrorKind::InvalidIssuer));
            }
        }
        let user_id = claim("sub").and_then(|sub| Uuid::parse_str(sub).ok());
        // required and checked by the validation; a fractional or huge `exp` reads as far away
        let expires_at = claims
            .get("exp")
            .and_then(|exp| exp.as_u64().or_else(|| exp.as_f64().map(|exp| exp as u64)))
            .unwrap_or(u64::MAX);
        if service_role {
            // a legacy service_role key carries no `sub` and no `aud`: it is the project's
            // server, which may read anyone's progress
            return Ok(Principal {
                user_id: user_id.unwrap_or(Uuid::nil()),
                admin: true,
                expires_at,
            });
        }
        let audience = match claims.get("aud") {
            Some(serde_json::Value::String(aud)) => aud == &self.audience,
            Some(serde_json::Value::Array(auds)) => {
                auds.iter().any(|a| a.as_str() == Some(&self.audience))
            }
            None | Some(serde_json::Value::Null) => {
                return Err(rejected(
                    jsonwebtoken::errors::ErrorKind::MissingRequiredClaim("aud".to_owned()),
                ));
            }
            Some(_) => false,
        };
        if !audience {
            return Err(rejected(jsonwebtoken::errors::ErrorKind::InvalidAudience));
        }
        // `anon` is the public key's role: signed by the project, but nobody in particular
        if claim("role") != Some("authenticated") {
            return Err(AuthError::Role);
        }
        Ok(Principal {
            user_id: user_id.ok_or(AuthError::Subject)?,
            admin: self.is_admin(&claims),
            expires_at,
        })
    }

    /// Signature, `exp` and `nbf`; the audience, issuer and subject rules depend on the role
    /// and are checked after.
    fn validation(&self, alg: Algorithm) -> Validation {
        let mut validation = Validation::new(alg);
        // tolerate small clock differences between Supabase and this host, no more
        validation.leeway = 30;
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp"]);
        validation
    }

    fn is_admin(&self, claims: &serde_json::Value) -> bool {
        if claims.get("role").and_then(serde_json::Value::as_str) == Some("service_role") {
            return true;
        }
        let Some((path, expected)) = &self.admin_claim else {
            return false;
        };
        path.iter()
            .try_fold(claims, |value, key| value.get(key))
            .and_then(serde_json::Value::as_str)
            == Some(expected.as_str())
    }
}
