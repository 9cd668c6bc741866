//! The read service over real HTTP, PostgreSQL (a database per test) and NATS (streams and
//! subjects per test). The keys under `tests/fixtures/` are test-only and trusted nowhere.

#[path = "../common/mod.rs"]
mod common;

mod access;
mod browsers;
mod cache;
mod export;
mod feed;
mod keys;
mod late_events;
mod limits;
mod nats_roles;
mod service;
mod streams;

// the live-stream helpers, which the limits' tests use too
use streams::{mint_ticket, next_event, refusal, stream_with_ticket, ticket_of};

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use chrono::Utc;
use futures::future::BoxFuture;
use futures::{FutureExt as _, StreamExt as _};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use learning_progress::api::{
    self, ApiConfig, ApiState, CacheConfig, Metrics, PgSource, ProgressCache, SnapshotSource,
};
use learning_progress::auth::{AuthConfig, AuthError, Verifier};
use learning_progress::config::DbConfig;
use learning_progress::db::progress::{
    CurrentUnit, ProgressError, UserProgressCreate, UserProgressUpdate, create_user_progress,
    update_user_progress,
};
use learning_progress::db::tracks::{Track, create_track};
use learning_progress::messaging::{self, NatsConfig};
use learning_progress::model::{ProgressEvent, ProgressView, UserProgress};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::sync::{Notify, oneshot};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const SECRET: &str = "test-only-hs256-secret-for-the-read-service";
const ISSUER: &str = "https://test-project.supabase.co/auth/v1";
const ES_KID: &str = "es-test";
const RS_KID: &str = "rs-test";
const ES_PRIVATE: &[u8] = include_bytes!("../fixtures/es256.key.pem");
const ES_PUBLIC: &[u8] = include_bytes!("../fixtures/es256.pub.pem");
const RS_PRIVATE: &[u8] = include_bytes!("../fixtures/rs256.key.pem");
const RS_PUBLIC: &[u8] = include_bytes!("../fixtures/rs256.pub.pem");

struct TestApi {
    base: String,
    state: ApiState,
    http: reqwest::Client,
    _shutdown: tokio_util::sync::DropGuard,
}

impl TestApi {
    async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut request = self.http.get(format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("API reachable")
    }

    fn progress_queries(&self) -> u64 {
        self.state
            .metrics()
            .db_queries
            .with_label_values(&["progress"])
            .get()
    }
}

/// A JWKS file with the public halves of both fixture keys.
fn jwks_file() -> String {
    let es = EncodingKey::from_ec_pem(ES_PRIVATE).unwrap();
    let rs = EncodingKey::from_rsa_pem(RS_PRIVATE).unwrap();
    let mut keys = vec![
        Jwk::from_encoding_key(&es, Algorithm::ES256).unwrap(),
        Jwk::from_encoding_key(&rs, Algorithm::RS256).unwrap(),
    ];
    keys[0].common.key_id = Some(ES_KID.to_owned());
    keys[1].common.key_id = Some(RS_KID.to_owned());
    let path = std::env::temp_dir().join(format!("jwks-{}.json", Uuid::new_v4()));
    std::fs::write(&path, serde_json::to_vec(&JwkSet { keys }).unwrap()).unwrap();
    path.to_string_lossy().into_owned()
}

fn auth_config() -> AuthConfig {
    AuthConfig {
        jwks: Some(jwks_file()),
        jwt_issuer: Some(ISSUER.to_owned()),
        admin_claim: Some("app_metadata.role=admin".to_owned()),
        ..AuthConfig::with_secret(SECRET)
    }
}

fn api_config() -> ApiConfig {
    ApiConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        // long enough that nothing in a test is refreshed by expiry: only events count
        cache_ttl_secs: 3600,
        min_version_wait_ms: 500,
        // tests that hammer one learner are not about the rate limit; its own test sets one
        rate_limit_per_sec: 0.0,
        ..ApiConfig::default()
    }
}

async fn spawn_api(pool: &PgPool, nats: &NatsConfig) -> TestApi {
    spawn_api_with(pool, nats, api_config()).await
}

async fn spawn_api_with(pool: &PgPool, nats: &NatsConfig, config: ApiConfig) -> TestApi {
    let verifier = Verifier::from_config(&auth_config()).await.unwrap();
    let shutdown = CancellationToken::new();
    let state = ApiState::start(pool.clone(), nats, verifier, config, shutdown.clone())
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(api::serve(listener, state.clone(), shutdown.clone()));
    TestApi {
        base,
        state,
        http: reqwest::Client::new(),
        _shutdown: shutdown.drop_guard(),
    }
}

fn claims(user: Uuid) -> Value {
    let now = jsonwebtoken::get_current_timestamp();
    json!({
        "sub": user.to_string(), "aud": "authenticated", "iss": ISSUER,
        "role": "authenticated", "iat": now, "exp": now + 3600,
    })
}

fn hs256(claims: &Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .unwrap()
}

fn signed(alg: Algorithm, kid: &str, claims: &Value) -> String {
    let key = match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(ES_PRIVATE).unwrap(),
        _ => EncodingKey::from_rsa_pem(RS_PRIVATE).unwrap(),
    };
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

fn token_for(user: Uuid) -> String {
    hs256(&claims(user), SECRET.as_bytes())
}

/// `claims` with some changed; a `null` removes the claim.
fn with(mut claims: Value, changes: Value) -> Value {
    for (key, value) in changes.as_object().unwrap() {
        if value.is_null() {
            claims.as_object_mut().unwrap().remove(key);
        } else {
            claims[key] = value.clone();
        }
    }
    claims
}

/// A learner who has started a 3-unit track: progress version 1.
async fn started(pool: &PgPool) -> (Track, Uuid, UserProgress) {
    let track = create_track(pool, "Rust basics", 3).await.unwrap();
    let user = Uuid::new_v4();
    let progress = create_user_progress(
        pool,
        &UserProgressCreate {
            user_id: user,
            track_id: track.id,
            current_unit_id: Some(track.units[0].id),
            started_at: Utc::now(),
        },
    )
    .await
    .unwrap();
    (track, user, progress)
}

/// Completes the track's unit `index` in the database; returns the row (one version newer).
async fn complete(pool: &PgPool, track: &Track, user: Uuid, index: usize) -> UserProgress {
    let update = UserProgressUpdate {
        completed_unit_ids_add: vec![track.units[index].id],
        current_unit: Some(CurrentUnit {
            unit_id: track.units.get(index + 1).map(|u| u.id),
            seq: index as i64 + 2,
        }),
        ..UserProgressUpdate::default()
    };
    update_user_progress(pool, user, track.id, &update)
        .await
        .unwrap()
        .unwrap()
}

fn event(progress: &UserProgress, total_units: usize) -> ProgressEvent {
    ProgressEvent {
        event_id: Uuid::new_v4(),
        kind: "unit_completed".to_owned(),
        version: progress.version,
        occurred_at: Utc::now(),
        applied_at: Utc::now(),
        progress: ProgressView::new(progress.clone(), total_units as i64),
    }
}

async fn publish(js: &jetstream::Context, nats: &NatsConfig, event: &ProgressEvent) {
    messaging::publish_event(js, nats, event)
        .await
        .unwrap()
        .await
        .unwrap();
}

fn progress_path(user: Uuid, track: Uuid) -> String {
    format!("/api/v1/users/{user}/tracks/{track}/progress")
}

async fn version_of(response: reqwest::Response) -> i64 {
    response.json::<Value>().await.unwrap()["version"]
        .as_i64()
        .unwrap()
}
