//! The project's asymmetric signing keys, read from a JWKS file or URL and cached.
//!
//! Each key is bound to exactly one algorithm when it is loaded (its `alg`, or the one its type
//! implies), and symmetric (`oct`) keys are ignored: a token's header can never choose how a
//! public key is used.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

/// A public key and the one algorithm it verifies.
#[derive(Clone)]
pub(crate) struct PublicKey {
    pub alg: Algorithm,
    pub key: DecodingKey,
}

#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("reading JWKS file {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("fetching JWKS from {url}")]
    Fetch {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("JWKS is not a JSON object with a `keys` array")]
    Parse(#[source] serde_json::Error),
}

/// The key set, refetched when a token names a `kid` it does not know, at most once per
/// refetch interval.
pub struct Jwks {
    location: String,
    refetch_interval: Duration,
    keys: RwLock<Arc<HashMap<String, PublicKey>>>,
    /// When the keys were last fetched; held while fetching so concurrent misses fetch once.
    last_fetch: tokio::sync::Mutex<Instant>,
    http: reqwest::Client,
}

#[derive(serde::Deserialize)]
struct KeySet {
    keys: Vec<serde_json::Value>,
}

impl Jwks {
    /// Loads the key set from a path or an `http(s)://` URL; fails if it cannot be read.
    pub async fn load(location: &str, refetch_interval: Duration) -> Result<Jwks, JwksError> {
        let http = reqwest::Client::builder()
            // a key endpoint that hangs must not hold requests for long
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|source| JwksError::Fetch {
                url: location.to_owned(),
                source,
            })?;
        let jwks = Jwks {
            location: location.to_owned(),
            refetch_interval,
            keys: RwLock::new(Arc::default()),
            last_fetch: tokio::sync::Mutex::new(Instant::now()),
            http,
        };
        let keys = jwks.fetch().await?;
        tracing::info!(jwks = %location, keys = keys.len(), "loaded signing keys");
        *jwks.keys.write().expect("JWKS lock poisoned") = Arc::new(keys);
        Ok(jwks)
    }

    /// The key with this id, refetching the set once if it is unknown and the last fetch is
    /// older than the refetch interval.
    pub(crate) async fn key(&self, kid: &str) -> Option<PublicKey> {
        if let Some(key) = self.cached(kid) {
            return Some(key);
        }
        let mut last_fetch = self.last_fetch.lock().await;
        // another request may have refetched while this one waited for the lock
        if let Some(key) = self.cached(kid) {
            return Some(key);
        }
        if last_fetch.elapsed() < self.refetch_interval {
            return None;
        }
        *last_fetch = Instant::now();
        match self.fetch().await {
            Ok(keys) => {
                tracing::info!(jwks = %self.location, keys = keys.len(), "refetched signing keys");
                *self.keys.write().expect("JWKS lock poisoned") = Arc::new(keys);
            }
            Err(error) => {
                tracing::warn!(error = %error, source = ?std::error::Error::source(&error), "refetching signing keys failed; keeping the old ones");
            }
        }
        self.cached(kid)
    }

    fn cached(&self, kid: &str) -> Option<PublicKey> {
        self.keys
            .read()
            .expect("JWKS lock poisoned")
            .get(kid)
            .cloned()
    }

    async fn fetch(&self) -> Result<HashMap<String, PublicKey>, JwksError> {
        let bytes = if self.location.starts_with("http://") || self.location.starts_with("https://")
        {
            let fetch_error = |source| JwksError::Fetch {
                url: self.location.clone(),
                source,
            };
            self.http
                .get(&self.location)
                .send()
                .await
                .and_then(reqwest::Response::error_for_status)
                .map_err(fetch_error)?
                .bytes()
                .await
                .map_err(fetch_error)?
                .to_vec()
        } else {
            tokio::fs::read(&self.location)
                .await
                .map_err(|source| JwksError::Read {
                    path: self.location.clone(),
                    source,
                })?
        };
        let set: KeySet = serde_json::from_slice(&bytes).map_err(JwksError::Parse)?;
        Ok(set.keys.into_iter().filter_map(public_key).collect())
    }
}

/// A usable signing key with its id, or `None` (logged) for anything else in the set.
fn public_key(value: serde_json::Value) -> Option<(String, PublicKey)> {
    let jwk: Jwk = match serde_json::from_value(value) {
        Ok(jwk) => jwk,
        Err(error) => {
            tracing::warn!(%error, "skipping a JWKS entry that is not a valid JWK");
            return None;
        }
    };
    let kid = jwk.common.key_id.clone()?;
    if matches!(&jwk.common.public_key_use, Some(usage) if *usage != PublicKeyUse::Signature) {
        return None;
    }
    let alg = match (&jwk.algorithm, jwk.common.key_algorithm) {
        (AlgorithmParameters::EllipticCurve(ec), None | Some(KeyAlgorithm::ES256))
            if ec.curve == EllipticCurve::P256 =>
        {
            Algorithm::ES256
        }
        (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
        _ => {
            tracing::warn!(
                kid,
                "skipping a JWKS key that is neither ES256 (P-256) nor RS256"
            );
            return None;
        }
    };
    match DecodingKey::from_jwk(&jwk) {
        Ok(key) => Some((kid, PublicKey { alg, key })),
        Err(error) => {
            tracing::warn!(kid, %error, "skipping a malformed JWKS key");
            None
        }
    }
}
