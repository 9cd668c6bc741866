//! The project's asymmetric signing keys, read from a JWKS file or URL and cached.
//!
//! Each key is bound to exactly one algorithm when it is loaded (its `alg`, or the one its type
//! implies), and symmetric (`oct`) keys are ignored: a token's header can never choose how a
//! public key is used.
//!
//! The set is fetched again on a timer (`JWKS_REFRESH_SECS`, 10 minutes by default, as
//! Supabase's client libraries do: with the 10 minutes its edge caches the endpoint, a revoked
//! key stops being trusted within 20 minutes) and when a token names an unknown `kid` (at
//! most once per `JWKS_REFETCH_INTERVAL_SECS`, except that the first one after start-up fetches
//! at once, as a key rotated in just before start-up would be). A URL must be `https` unless
//! it names the loopback host; redirects are not followed and a body over 256 KiB is refused,
//! so the key source cannot be swapped or used to exhaust memory. A failed refresh keeps the
//! keys already loaded, and says so in the log.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

/// The largest key set accepted; Supabase's holds a few keys of a few hundred bytes each.
const MAX_BODY_BYTES: usize = 256 * 1024;

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
    #[error("SUPABASE_JWKS {0:?} is not a valid URL")]
    Url(String),
    #[error(
        "SUPABASE_JWKS {0:?} must be an https URL (plain http only on the loopback host), \
         or a file path"
    )]
    Insecure(String),
    #[error("JWKS {url} answered {status}; redirects are not followed")]
    Status {
        url: String,
        status: reqwest::StatusCode,
    },
    #[error("JWKS {0} is larger than {MAX_BODY_BYTES} bytes")]
    TooLarge(String),
    #[error("JWKS is not a JSON object with a `keys` array")]
    Parse(#[source] serde_json::Error),
}

/// The key set, refreshed on a timer and on unknown `kid`s. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Jwks {
    inner: Arc<Inner>,
}

struct Inner {
    location: String,
    refetch_interval: Duration,
    keys: RwLock<Arc<HashMap<String, PublicKey>>>,
    /// When an unknown `kid` last caused a fetch (none yet: the first one fetches at once);
    /// held while fetching so concurrent misses fetch once.
    last_refetch: tokio::sync::Mutex<Option<Instant>>,
    http: reqwest::Client,
}

#[derive(serde::Deserialize)]
struct KeySet {
    keys: Vec<serde_json::Value>,
}

impl Jwks {
    /// Loads the key set from a path or a URL and refreshes it every `refresh` while the set
    /// is in use; fails if it cannot be read.
    pub(crate) async fn load(
        location: &str,
        refetch_interval: Duration,
        refresh: Duration,
    ) -> Result<Jwks, JwksError> {
        if is_url(location) {
            check_url(location)?;
        }
        let http = reqwest::Client::builder()
            // a key endpoint that hangs must not hold requests for long
            .timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|source| JwksError::Fetch {
                url: location.to_owned(),
                source,
            })?;
        let inner = Arc::new(Inner {
            location: location.to_owned(),
            refetch_interval,
            keys: RwLock::new(Arc::default()),
            last_refetch: tokio::sync::Mutex::new(None),
            http,
        });
        let keys = inner.fetch().await?;
        tracing::info!(jwks = %location, keys = keys.len(), "loaded signing keys");
        inner.replace(keys);
        tokio::spawn(refresh_every(Arc::downgrade(&inner), refresh));
        Ok(Jwks { inner })
    }

    /// The key with this id, refetching the set once if it is unknown and the last refetch
    /// for an unknown key is older than the refetch interval.
    pub(crate) async fn key(&self, kid: &str) -> Option<PublicKey> {
        let inner = &self.inner;
        if let Some(key) = inner.cached(kid) {
            return Some(key);
        }
        let mut last_refetch = inner.last_refetch.lock().await;
        // another request may have refetched while this one waited for the lock
        if let Some(key) = inner.cached(kid) {
            return Some(key);
        }
        if last_refetch.is_some_and(|at| at.elapsed() < inner.refetch_interval) {
            return None;
        }
        *last_refetch = Some(Instant::now());
        inner.refresh("unknown kid").await;
        inner.cached(kid)
    }
}

/// Fetches the set every `every` until the last [`Jwks`] is dropped.
async fn refresh_every(inner: Weak<Inner>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        inner.refresh("timer").await;
    }
}

impl Inner {
    fn cached(&self, kid: &str) -> Option<PublicKey> {
        self.keys
            .read()
            .expect("JWKS lock poisoned")
            .get(kid)
            .cloned()
    }

    fn replace(&self, keys: HashMap<String, PublicKey>) {
        *self.keys.write().expect("JWKS lock poisoned") = Arc::new(keys);
    }

    /// Fetches the set and replaces the cached one; on failure keeps it, logged.
    async fn refresh(&self, why: &str) {
        match self.fetch().await {
            Ok(keys) => {
                tracing::info!(jwks = %self.location, keys = keys.len(), why, "refetched signing keys");
                self.replace(keys);
            }
            Err(error) => {
                tracing::warn!(error = %crate::telemetry::causes(&error), why, "refetching signing keys failed; keeping the old ones");
            }
        }
    }

    async fn fetch(&self) -> Result<HashMap<String, PublicKey>, JwksError> {
        let bytes = if is_url(&self.location) {
            self.download().await?
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

    /// The body of a successful answer, refused past [`MAX_BODY_BYTES`].
    async fn download(&self) -> Result<Vec<u8>, JwksError> {
        let fetch_error = |source| JwksError::Fetch {
            url: self.location.clone(),
            source,
        };
        let mut response = self
            .http
            .get(&self.location)
            .send()
            .await
            .map_err(fetch_error)?;
        if !response.status().is_success() {
            return Err(JwksError::Status {
                url: self.location.clone(),
                status: response.status(),
            });
        }
        let too_large = || JwksError::TooLarge(self.location.clone());
        if response
            .content_length()
            .is_some_and(|length| length > MAX_BODY_BYTES as u64)
        {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(fetch_error)? {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

fn is_url(location: &str) -> bool {
    location.contains("://")
}

/// `https`, or `http` to the loopback host only.
fn check_url(location: &str) -> Result<(), JwksError> {
    let url = reqwest::Url::parse(location).map_err(|_| JwksError::Url(location.to_owned()))?;
    let host = url.host_str().unwrap_or_default();
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match url.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(JwksError::Insecure(location.to_owned())),
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
