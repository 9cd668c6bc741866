//! The read service over real HTTP, PostgreSQL (a database per test) and NATS (streams and
//! subjects per test). The keys under `tests/fixtures/` are test-only and trusted nowhere.

mod common;

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
const ES_PRIVATE: &[u8] = include_bytes!("fixtures/es256.key.pem");
const ES_PUBLIC: &[u8] = include_bytes!("fixtures/es256.pub.pem");
const RS_PRIVATE: &[u8] = include_bytes!("fixtures/rs256.key.pem");
const RS_PUBLIC: &[u8] = include_bytes!("fixtures/rs256.pub.pem");

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

#[sqlx::test]
async fn each_request_gets_the_status_its_case_calls_for(pool: PgPool) {
    let (nats, js) = common::isolated_nats().await;
    let api = spawn_api(&pool, &nats).await;
    let (track, user, _) = started(&pool).await;
    let own = token_for(user);
    let stranger = token_for(Uuid::new_v4());
    // the project's legacy service_role key as Supabase issues it: no `sub`, no `aud`
    let now = jsonwebtoken::get_current_timestamp();
    let service = hs256(
        &json!({"iss": "supabase", "role": "service_role", "iat": now, "exp": now + 3600}),
        SECRET.as_bytes(),
    );
    let app_admin = hs256(
        &with(
            claims(Uuid::new_v4()),
            json!({"app_metadata": {"role": "admin"}}),
        ),
        SECRET.as_bytes(),
    );
    let path = progress_path(user, track.id);

    let response = api.get(&path, Some(&own)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["etag"], "\"1\"");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["user_id"], user.to_string());
    assert_eq!(body["total_units"], 3);
    assert_eq!(body["percent_complete"], 0.0);
    assert!(body["assessments"].is_object());

    let not_modified = api
        .http
        .get(format!("{}{path}", api.base))
        .bearer_auth(&own)
        .header("if-none-match", "\"1\"")
        .send()
        .await
        .unwrap();
    assert_eq!(not_modified.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(not_modified.headers()["etag"], "\"1\"");

    let other_track = progress_path(user, Uuid::new_v4());
    let bad_track = format!("/api/v1/users/{user}/tracks/12/progress");
    let cases: [(&str, &str, Option<&str>, StatusCode); 9] = [
        ("own progress", &path, Some(&own), StatusCode::OK),
        ("no token", &path, None, StatusCode::UNAUTHORIZED),
        (
            "another user's",
            &path,
            Some(&stranger),
            StatusCode::FORBIDDEN,
        ),
        ("service role", &path, Some(&service), StatusCode::OK),
        ("admin claim", &path, Some(&app_admin), StatusCode::OK),
        (
            "no progress yet",
            &other_track,
            Some(&own),
            StatusCode::NOT_FOUND,
        ),
        (
            "malformed user id",
            "/api/v1/users/nope/progress",
            Some(&own),
            StatusCode::BAD_REQUEST,
        ),
        (
            "malformed track id",
            &bad_track,
            Some(&own),
            StatusCode::BAD_REQUEST,
        ),
        (
            "unknown route",
            "/api/v2/anything",
            Some(&own),
            StatusCode::NOT_FOUND,
        ),
    ];
    for (case, path, token, expected) in cases {
        let response = api.get(path, token).await;
        assert_eq!(response.status(), expected, "{case}");
        if expected != StatusCode::OK {
            let body: Value = response.json().await.unwrap();
            assert!(
                body["error"].is_string() && body["message"].is_string(),
                "{case}: {body}"
            );
        }
    }
    let bad_query = api
        .get(&format!("{path}?min_version=soon"), Some(&own))
        .await;
    assert_eq!(bad_query.status(), StatusCode::BAD_REQUEST);

    let list_path = format!("/api/v1/users/{user}/progress");
    let list = api.get(&list_path, Some(&own)).await;
    assert_eq!(list.status(), StatusCode::OK);
    let list: Value = list.json().await.unwrap();
    assert_eq!(list["progress"].as_array().unwrap().len(), 1);
    assert_eq!(list["progress"][0]["track_id"], track.id.to_string());
    let foreign_list = api.get(&list_path, Some(&stranger)).await;
    assert_eq!(foreign_list.status(), StatusCode::FORBIDDEN);
    common::delete_streams(&js, &nats).await;
}

#[sqlx::test]
async fn hostile_tokens_are_refused_and_see_no_progress(pool: PgPool) {
    let (nats, js) = common::isolated_nats().await;
    let api = spawn_api(&pool, &nats).await;
    let (track, user, _) = started(&pool).await;
    let path = progress_path(user, track.id);
    let now = jsonwebtoken::get_current_timestamp();
    let valid = claims(user);
    let good = token_for(user);
    // {"alg":"none","typ":"JWT"}, then the valid token's claims and no signature
    let alg_none = format!(
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.",
        good.split('.').nth(1).unwrap()
    );
    let confused = |public: &[u8], kid: &str| {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, &valid, &EncodingKey::from_secret(public)).unwrap()
    };
    let changed = |changes: Value| hs256(&with(valid.clone(), changes), SECRET.as_bytes());
    let unauthorized = StatusCode::UNAUTHORIZED;

    let cases: Vec<(&str, String, StatusCode)> = vec![
        ("alg none", alg_none, unauthorized),
        (
            "wrong secret",
            hs256(&valid, b"not-the-secret"),
            unauthorized,
        ),
        (
            "HS256 keyed with the EC public key",
            confused(ES_PUBLIC, ES_KID),
            unauthorized,
        ),
        (
            "HS256 keyed with the RSA public key",
            confused(RS_PUBLIC, RS_KID),
            unauthorized,
        ),
        ("expired", changed(json!({"exp": now - 3600})), unauthorized),
        (
            "not valid yet",
            changed(json!({"nbf": now + 3600})),
            unauthorized,
        ),
        (
            "wrong audience",
            changed(json!({"aud": "anon"})),
            unauthorized,
        ),
        ("no audience", changed(json!({"aud": null})), unauthorized),
        (
            "wrong issuer",
            changed(json!({"iss": "https://evil.example"})),
            unauthorized,
        ),
        (
            "unknown kid",
            signed(Algorithm::ES256, "rotated-away", &valid),
            unauthorized,
        ),
        (
            "ES256 naming the RSA key",
            signed(Algorithm::ES256, RS_KID, &valid),
            unauthorized,
        ),
        ("truncated", good[..good.len() - 6].to_owned(), unauthorized),
        ("garbage", "definitely.not.a-jwt".to_owned(), unauthorized),
        ("missing sub", changed(json!({"sub": null})), unauthorized),
        (
            "the public anon role",
            changed(json!({"role": "anon"})),
            unauthorized,
        ),
        ("no role", changed(json!({"role": null})), unauthorized),
        (
            "service_role with another project's issuer",
            changed(json!({"role": "service_role", "iss": "https://evil.example"})),
            unauthorized,
        ),
        (
            "anonymous sign-in reading its own",
            changed(json!({"is_anonymous": true})),
            StatusCode::OK,
        ),
        (
            "sub not a user id",
            changed(json!({"sub": "admin"})),
            unauthorized,
        ),
        (
            "admin in user_metadata",
            hs256(
                &with(
                    claims(Uuid::new_v4()),
                    json!({"user_metadata": {"role": "admin"}}),
                ),
                SECRET.as_bytes(),
            ),
            StatusCode::FORBIDDEN,
        ),
        (
            "another user's sub",
            token_for(Uuid::new_v4()),
            StatusCode::FORBIDDEN,
        ),
        ("control: HS256", good.clone(), StatusCode::OK),
        (
            "control: ES256",
            signed(Algorithm::ES256, ES_KID, &valid),
            StatusCode::OK,
        ),
        (
            "control: RS256",
            signed(Algorithm::RS256, RS_KID, &valid),
            StatusCode::OK,
        ),
    ];
    for (case, token, expected) in cases {
        let response = api.get(&path, Some(&token)).await;
        assert_eq!(response.status(), expected, "{case}");
        let body = response.text().await.unwrap();
        if expected != StatusCode::OK {
            assert!(
                !body.contains(&track.id.to_string()) && !body.contains("percent_complete"),
                "{case} leaked progress: {body}"
            );
        }
    }
    common::delete_streams(&js, &nats).await;
}

#[sqlx::test]
async fn a_thousand_concurrent_cold_reads_make_one_database_query(pool: PgPool) {
    let (nats, js) = common::isolated_nats().await;
    let api = spawn_api(&pool, &nats).await;
    let (track, user, _) = started(&pool).await;
    let url = format!("{}{}", api.base, progress_path(user, track.id));
    let token = token_for(user);
    let reads = (0..1000).map(|_| {
        let request = api.http.get(&url).bearer_auth(&token).send();
        async move { request.await.unwrap().status() }
    });
    let statuses = futures::future::join_all(reads).await;
    assert!(statuses.iter().all(|s| *s == StatusCode::OK));
    assert_eq!(api.progress_queries(), 1);
    common::delete_streams(&js, &nats).await;
}

#[sqlx::test]
async fn a_newer_event_updates_the_cache_and_an_older_one_does_not(pool: PgPool) {
    let (nats, js) = common::isolated_nats().await;
    let api = spawn_api(&pool, &nats).await;
    let (track, user, v1) = started(&pool).await;
    let path = progress_path(user, track.id);
    let token = token_for(user);
    assert_eq!(version_of(api.get(&path, Some(&token)).await).await, 1);

    // the database moves on, but only an event tells the cache
    let v2 = complete(&pool, &track, user, 0).await;
    assert_eq!(version_of(api.get(&path, Some(&token)).await).await, 1);
    publish(&js, &nats, &event(&v2, 3)).await;
    let fresh = api
        .get(&format!("{path}?min_version=2"), Some(&token))
        .await;
    assert!(fresh.headers().get("x-progress-behind").is_none());
    let body: Value = fresh.json().await.unwrap();
    assert_eq!(body["version"], 2);
    assert_eq!(body["percent_complete"], 33.33);

    publish(&js, &nats, &event(&v1, 3)).await;
    let stale = api
        .state
        .metrics()
        .cache_events
        .with_label_values(&["stale"]);
    common::eventually(Duration::from_secs(5), "the old event to arrive", || {
        let seen = stale.get() == 1;
        async move { seen.then_some(()) }
    })
    .await;
    assert_eq!(version_of(api.get(&path, Some(&token)).await).await, 2);
    assert_eq!(api.progress_queries(), 1);
    common::delete_streams(&js, &nats).await;
}

/// Reads through to PostgreSQL, then holds the result until released.
struct HeldSource {
    db: PgSource,
    loaded: std::sync::Mutex<Option<oneshot::Sender<()>>>,
    release: Arc<Notify>,
}

impl SnapshotSource for HeldSource {
    fn load(
        &self,
        key: (Uuid, Uuid),
    ) -> BoxFuture<'static, Result<Option<ProgressView>, ProgressError>> {
        let read = self.db.load(key);
        let loaded = self.loaded.lock().unwrap().take();
        let release = self.release.clone();
        async move {
            let view = read.await;
            if let Some(loaded) = loaded {
                let _ = loaded.send(());
            }
            release.notified().await;
            view
        }
        .boxed()
    }
}

#[sqlx::test]
async fn a_slow_load_racing_an_event_never_leaves_the_older_snapshot(pool: PgPool) {
    let (track, user, _) = started(&pool).await;
    let metrics = Metrics::new();
    let (loaded_tx, loaded) = oneshot::channel();
    let release = Arc::new(Notify::new());
    let source = HeldSource {
        db: PgSource::new(pool.clone(), &metrics),
        loaded: std::sync::Mutex::new(Some(loaded_tx)),
        release: release.clone(),
    };
    let config = CacheConfig {
        capacity: 100,
        ttl: Duration::from_secs(3600),
        miss_ttl: Duration::from_secs(2),
    };
    let cache = ProgressCache::new(&config, Arc::new(source), &metrics);
    let key = (user, track.id);

    let reader = tokio::spawn({
        let cache = cache.clone();
        async move { cache.get(key).await.unwrap().unwrap() }
    });
    loaded.await.unwrap(); // the load has read version 1 and is held
    let v2 = complete(&pool, &track, user, 0).await;
    let applied = tokio::time::timeout(Duration::from_secs(2), cache.apply(&event(&v2, 3)))
        .await
        .expect("an event never waits for a database load");
    assert!(applied);
    release.notify_one();

    let answered = reader.await.unwrap();
    assert_eq!(answered.version(), 2, "the reader gets the newer snapshot");
    assert_eq!(cache.peek(key).await.unwrap().version(), 2);
    assert_eq!(cache.get(key).await.unwrap().unwrap().version(), 2);
}

#[sqlx::test]
async fn every_replica_sees_an_event_and_min_version_waits_for_it(pool: PgPool) {
    let (nats, js) = common::isolated_nats().await;
    let replicas = [spawn_api(&pool, &nats).await, spawn_api(&pool, &nats).await];
    let (track, user, _) = started(&pool).await;
    let path = progress_path(user, track.id);
    let token = token_for(user);
    for api in &replicas {
        assert_eq!(version_of(api.get(&path, Some(&token)).await).await, 1);
    }

    let v2 = complete(&pool, &track, user, 0).await;
    let wait_path = format!("{path}?min_version=2");
    let waiting = replicas.iter().map(|api| async {
        let started = Instant::now();
        let response = api.get(&wait_path, Some(&token)).await;
        (response, started.elapsed())
    });
    let waiting = futures::future::join_all(waiting);
    let publishing = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        publish(&js, &nats, &event(&v2, 3)).await;
    };
    let (answers, ()) = tokio::join!(waiting, publishing);
    for (response, took) in answers {
        assert!(response.headers().get("x-progress-behind").is_none());
        assert_eq!(version_of(response).await, 2);
        assert!(
            took < Duration::from_millis(450),
            "woken by the event, took {took:?}"
        );
    }

    let behind = replicas[0]
        .get(&format!("{path}?min_version=3"), Some(&token))
        .await;
    assert_eq!(behind.status(), StatusCode::OK);
    assert_eq!(behind.headers()["x-progress-behind"], "true");
    assert_eq!(version_of(behind).await, 2);
    for api in &replicas {
        assert_eq!(api.progress_queries(), 1);
    }
    common::delete_streams(&js, &nats).await;
}

/// The next Server-Sent Event's data, as JSON.
async fn next_event(
    body: &mut (impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    buffer: &mut String,
) -> Value {
    let read = async {
        loop {
            if let Some(end) = buffer.find("\n\n") {
                let event: String = buffer.drain(..end + 2).collect();
                let data: String = event
                    .lines()
                    .filter_map(|line| line.strip_prefix("data:"))
                    .map(str::trim_start)
                    .collect();
                if !data.is_empty() {
                    return serde_json::from_str(&data).unwrap();
                }
                continue;
            }
            let chunk = body.next().await.expect("stream open").unwrap();
            buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .expect("an event within 5 s")
}

#[sqlx::test]
async fn the_event_stream_sends_the_snapshot_then_each_update(pool: PgPool) {
    let (nats, js) = common::isolated_nats().await;
    let api = spawn_api(&pool, &nats).await;
    let (track, user, _) = started(&pool).await;
    let stream_path = format!("{}/stream", progress_path(user, track.id));

    let refused = api
        .get(&stream_path, Some(&token_for(Uuid::new_v4())))
        .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);

    let response = api.get(&stream_path, Some(&token_for(user))).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    assert_eq!(next_event(&mut body, &mut buffer).await["version"], 1);

    let v2 = complete(&pool, &track, user, 0).await;
    publish(&js, &nats, &event(&v2, 3)).await;
    let update = next_event(&mut body, &mut buffer).await;
    assert_eq!(update["version"], 2);
    assert_eq!(
        update["completed_unit_ids"][0],
        track.units[0].id.to_string()
    );
    common::delete_streams(&js, &nats).await;
}

/// `POST …/stream-ticket` for `user`'s progress on `track`.
async fn mint_ticket(api: &TestApi, user: Uuid, track: Uuid, token: &str) -> reqwest::Response {
    api.http
        .post(format!(
            "{}{}/stream-ticket",
            api.base,
            progress_path(user, track)
        ))
        .bearer_auth(token)
        .send()
        .await
        .expect("API reachable")
}

async fn ticket_of(response: reqwest::Response) -> String {
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    body["ticket"].as_str().unwrap().to_owned()
}

/// Opens `user`'s stream of `track` with `ticket` and no `Authorization` header.
async fn stream_with_ticket(
    api: &TestApi,
    user: Uuid,
    track: Uuid,
    ticket: &str,
) -> reqwest::Response {
    let path = format!("{}/stream?ticket={ticket}", progress_path(user, track));
    api.get(&path, None).await
}

/// The JSON error of a refused request, after checking its status.
async fn refusal(response: reqwest::Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status);
    response.json().await.unwrap()
}

#[sqlx::test]
async fn a_stream_ticket_opens_its_own_stream_once(pool: PgPool) {
    let (nats, js) = common::isolated_nats().await;
    let api = spawn_api(&pool, &nats).await;
    let (track, user, _) = started(&pool).await;
    let other_track = create_track(&pool, "Other", 2).await.unwrap();
    let token = token_for(user);

    let minted = mint_ticket(&api, user, track.id, &token_for(Uuid::new_v4())).await;
    assert_eq!(
        minted.status(),
        StatusCode::FORBIDDEN,
        "another learner's stream"
    );
    let minted = mint_ticket(&api, user, track.id, &token).await;
    assert_eq!(minted.status(), StatusCode::OK);
    let body: Value = minted.json().await.unwrap();
    assert_eq!(body["expires_in"], 30);
    let ticket = body["ticket"].as_str().unwrap().to_owned();

    let response = stream_with_ticket(&api, user, track.id, &ticket).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    assert_eq!(next_event(&mut body, &mut buffer).await["version"], 1);
    let v2 = complete(&pool, &track, user, 0).await;
    publish(&js, &nats, &event(&v2, 3)).await;
    assert_eq!(next_event(&mut body, &mut buffer).await["version"], 2);

    let reused = stream_with_ticket(&api, user, track.id, &ticket).await;
    let error = refusal(reused, StatusCode::UNAUTHORIZED).await;
    assert_eq!(error["error"], "unauthorized");
    assert_eq!(error["message"], "the stream ticket has been used");

    let for_track = ticket_of(mint_ticket(&api, user, track.id, &token).await).await;
    let elsewhere = stream_with_ticket(&api, user, other_track.id, &for_track).await;
    let error = refusal(elsewhere, StatusCode::UNAUTHORIZED).await;
    assert_eq!(error["message"], "the stream ticket is for another stream");
    let other_user = stream_with_ticket(&api, Uuid::new_v4(), track.id, &for_track).await;
    refusal(other_user, StatusCode::UNAUTHORIZED).await;

    for forged in ["", "x", &format!("{for_track}A"), &token] {
        let response = stream_with_ticket(&api, user, track.id, forged).await;
        let error = refusal(response, StatusCode::UNAUTHORIZED).await;
        assert_eq!(
            error["message"], "the stream ticket is not valid",
            "{forged:?}"
        );
    }
    // refused tickets were not consumed: the one for this track still opens it
    let response = stream_with_ticket(&api, user, track.id, &for_track).await;
    assert_eq!(response.status(), StatusCode::OK);

    let metrics = api.get("/metrics", None).await.text().await.unwrap();
    assert!(!metrics.contains(&ticket) && !metrics.contains(&for_track));
    assert!(metrics.contains(
        r#"route="/api/v1/users/{user_id}/tracks/{track_id}/progress/stream",status="401"}"#
    ));
    common::delete_streams(&js, &nats).await;
}

#[sqlx::test]
async fn an_expired_stream_ticket_is_refused(pool: PgPool) {
    let (nats, js) = common::isolated_nats().await;
    let config = ApiConfig {
        stream_ticket_lifetime: Duration::ZERO,
        ..api_config()
    };
    let api = spawn_api_with(&pool, &nats, config).await;
    let (track, user, _) = started(&pool).await;

    let ticket = ticket_of(mint_ticket(&api, user, track.id, &token_for(user)).await).await;
    let response = stream_with_ticket(&api, user, track.id, &ticket).await;
    let error = refusal(response, StatusCode::UNAUTHORIZED).await;
    assert_eq!(error["message"], "the stream ticket has expired");
    common::delete_streams(&js, &nats).await;
}

#[sqlx::test]
async fn the_stream_needs_a_token_or_a_ticket(pool: PgPool) {
    let (nats, js) = common::isolated_nats().await;
    let api = spawn_api(&pool, &nats).await;
    let (track, user, _) = started(&pool).await;
    let stream_path = format!("{}/stream", progress_path(user, track.id));

    let error = refusal(api.get(&stream_path, None).await, StatusCode::UNAUTHORIZED).await;
    assert_eq!(error["error"], "unauthorized");
    let minted = mint_ticket(&api, user, track.id, "not-a-token").await;
    refusal(minted, StatusCode::UNAUTHORIZED).await;
    let bad_path = api
        .http
        .post(format!(
            "{}/api/v1/users/nope/tracks/{}/progress/stream-ticket",
            api.base, track.id
        ))
        .bearer_auth(token_for(user))
        .send()
        .await
        .unwrap();
    refusal(bad_path, StatusCode::BAD_REQUEST).await;
    common::delete_streams(&js, &nats).await;
}

/// An `OPTIONS` preflight from `origin` for a `GET` with an `Authorization` header.
async fn preflight(api: &TestApi, path: &str, origin: &str) -> reqwest::Response {
    api.http
        .request(reqwest::Method::OPTIONS, format!("{}{path}", api.base))
        .header("origin", origin)
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .expect("API reachable")
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).map(|v| v.to_str().unwrap())
}

#[sqlx::test]
async fn browsers_on_a_listed_origin_may_call_and_others_get_no_cors_headers(pool: PgPool) {
    const ALLOWED: &str = "http://127.0.0.1:5173";
    const OTHER: &str = "http://127.0.0.1:5174";
    let (nats, js) = common::isolated_nats().await;
    let config = ApiConfig {
        cors_origins: vec![reqwest::header::HeaderValue::from_static(ALLOWED)],
        ..api_config()
    };
    let api = spawn_api_with(&pool, &nats, config).await;
    let (track, user, _) = started(&pool).await;
    let path = progress_path(user, track.id);

    let allowed = preflight(&api, &path, ALLOWED).await;
    assert!(allowed.status().is_success(), "{}", allowed.status());
    assert_eq!(
        header(&allowed, "access-control-allow-origin"),
        Some(ALLOWED)
    );
    let methods = header(&allowed, "access-control-allow-methods").unwrap();
    assert!(
        methods.contains("GET") && methods.contains("POST"),
        "{methods}"
    );
    let headers = header(&allowed, "access-control-allow-headers").unwrap();
    assert!(
        headers.contains("authorization") && headers.contains("content-type"),
        "{headers}"
    );
    assert_eq!(header(&allowed, "access-control-allow-credentials"), None);

    let other = preflight(&api, &path, OTHER).await;
    assert_eq!(header(&other, "access-control-allow-origin"), None);

    let read = |origin: &'static str| {
        api.http
            .get(format!("{}{path}", api.base))
            .header("origin", origin)
            .bearer_auth(token_for(user))
            .send()
    };
    let response = read(ALLOWED).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header(&response, "access-control-allow-origin"),
        Some(ALLOWED)
    );
    let exposed = header(&response, "access-control-expose-headers").unwrap();
    assert!(exposed.contains("etag"), "{exposed}");
    let response = read(OTHER).await.unwrap();
    assert_eq!(header(&response, "access-control-allow-origin"), None);

    // a refusal is readable too, so a page can tell a stale token from a network failure
    let refused = api
        .http
        .get(format!("{}{path}", api.base))
        .header("origin", ALLOWED)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        header(&refused, "access-control-allow-origin"),
        Some(ALLOWED)
    );
    common::delete_streams(&js, &nats).await;
}

#[sqlx::test]
async fn without_listed_origins_no_cors_headers_are_sent(pool: PgPool) {
    let (nats, js) = common::isolated_nats().await;
    let api = spawn_api(&pool, &nats).await;
    let (track, user, _) = started(&pool).await;
    let path = progress_path(user, track.id);
    for origin in ["http://127.0.0.1:5173", "http://localhost:8000"] {
        let response = preflight(&api, &path, origin).await;
        assert_eq!(header(&response, "access-control-allow-origin"), None);
    }
    common::delete_streams(&js, &nats).await;
}

#[sqlx::test]
async fn health_metrics_and_the_openapi_document_are_served(pool: PgPool) {
    let (nats, js) = common::isolated_nats().await;
    let api = spawn_api(&pool, &nats).await;
    let (track, user, _) = started(&pool).await;
    let token = token_for(user);
    api.get(&progress_path(user, track.id), Some(&token)).await;
    api.get(&progress_path(user, track.id), Some(&token)).await;

    assert_eq!(api.get("/healthz", None).await.status(), StatusCode::OK);
    let ready = api.get("/readyz", None).await;
    assert_eq!(ready.status(), StatusCode::OK);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(
        ready["checks"],
        json!({"database": "ok", "nats": "ok", "events": "following"})
    );

    let metrics = api.get("/metrics", None).await.text().await.unwrap();
    for expected in [
        r#"http_requests_total{method="GET",route="/api/v1/users/{user_id}/tracks/{track_id}/progress",status="200"} 2"#,
        "http_request_duration_seconds_bucket",
        "progress_cache_hits_total 1",
        "progress_cache_misses_total 1",
        "progress_cache_entries",
        r#"db_queries_total{query="progress"} 1"#,
    ] {
        assert!(
            metrics.contains(expected),
            "missing {expected} in\n{metrics}"
        );
    }

    let document: Value = api.get("/openapi.json", None).await.json().await.unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    let paths = document["paths"].as_object().unwrap();
    let routes = [
        "/api/v1/users/{user_id}/tracks/{track_id}/progress",
        "/api/v1/users/{user_id}/tracks/{track_id}/progress/stream",
        "/api/v1/users/{user_id}/tracks/{track_id}/progress/stream-ticket",
        "/api/v1/users/{user_id}/progress",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
        "/api/v1/me",
        "/api/v1/tracks/{track_id}/progress",
        "/xapi/statements",
    ];
    for route in routes {
        assert!(paths.contains_key(route), "{route} is not documented");
    }
    assert_eq!(paths.len(), routes.len(), "every documented path is served");
    common::delete_streams(&js, &nats).await;
}

#[sqlx::test]
async fn me_names_the_caller_of_a_valid_token(pool: PgPool) {
    let (nats, js) = common::isolated_nats().await;
    let api = spawn_api(&pool, &nats).await;
    let user = Uuid::new_v4();
    let response = api.get("/api/v1/me", Some(&token_for(user))).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, json!({ "user_id": user.to_string(), "admin": false }));
    let anonymous = api.get("/api/v1/me", None).await;
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    common::delete_streams(&js, &nats).await;
}

#[tokio::test]
async fn readiness_names_an_unreachable_database() {
    let (nats, js) = common::isolated_nats().await;
    let db = DbConfig {
        acquire_timeout_secs: 1,
        ..DbConfig::new("postgres://postgres@127.0.0.1:1/nowhere")
    };
    let pool = learning_progress::db::pool(&db).unwrap();
    let api = spawn_api(&pool, &nats).await;
    let ready = api.get("/readyz", None).await;
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(
        ready["checks"],
        json!({"database": "unreachable", "nats": "ok", "events": "following"})
    );
    common::delete_streams(&js, &nats).await;
}

#[tokio::test]
async fn starting_without_a_key_is_an_error_outside_development_mode() {
    let none = AuthConfig {
        jwt_secret: None,
        ..AuthConfig::with_secret("unused")
    };
    let error = Verifier::from_config(&none).await.err().expect("refused");
    assert!(error.to_string().contains("SUPABASE_JWT_SECRET"));

    let dev = AuthConfig { dev: true, ..none };
    let verifier = Verifier::from_config(&dev).await.unwrap();
    let user = Uuid::new_v4();
    let token =
        learning_progress::auth::mint_dev_token(&dev, user, true, Duration::from_secs(60)).unwrap();
    let principal = verifier.verify(&token).await.unwrap();
    assert_eq!(principal.user_id, user);
    assert!(principal.admin);
    let with_secret = AuthConfig::with_secret("hunter2-but-longer");
    assert!(!format!("{with_secret:?}").contains("hunter2"));

    // a user may edit their own user_metadata: it cannot make anyone admin
    let editable = AuthConfig {
        admin_claim: Some("user_metadata.role=admin".to_owned()),
        ..AuthConfig::with_secret("unused")
    };
    let error = Verifier::from_config(&editable)
        .await
        .err()
        .expect("refused");
    assert!(error.to_string().contains("app_metadata"), "{error}");
}

/// A JWK for the fixture key of `alg`, under `kid`.
fn jwk(alg: Algorithm, kid: &str) -> Jwk {
    let key = match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(ES_PRIVATE).unwrap(),
        _ => EncodingKey::from_rsa_pem(RS_PRIVATE).unwrap(),
    };
    let mut jwk = Jwk::from_encoding_key(&key, alg).unwrap();
    jwk.common.key_id = Some(kid.to_owned());
    jwk
}

fn key_set(keys: Vec<Jwk>) -> Vec<u8> {
    serde_json::to_vec(&JwkSet { keys }).unwrap()
}

fn jwks_config(location: String, refetch_interval_secs: u64, refresh_secs: u64) -> AuthConfig {
    AuthConfig {
        jwt_secret: None,
        jwks: Some(location),
        jwt_issuer: Some(ISSUER.to_owned()),
        jwks_refetch_interval_secs: refetch_interval_secs,
        jwks_refresh_secs: refresh_secs,
        ..AuthConfig::with_secret("unused")
    }
}

#[tokio::test]
async fn an_unknown_kid_refetches_the_key_set_at_most_once_per_interval() {
    let path = std::env::temp_dir().join(format!("jwks-{}.json", Uuid::new_v4()));
    std::fs::write(&path, key_set(vec![])).unwrap();
    let location = path.to_string_lossy().into_owned();
    let patient = Verifier::from_config(&jwks_config(location.clone(), 3600, 3600))
        .await
        .unwrap();
    let eager = Verifier::from_config(&jwks_config(location, 0, 3600))
        .await
        .unwrap();
    let rotated = signed(Algorithm::RS256, "rotated-in", &claims(Uuid::new_v4()));
    assert!(eager.verify(&rotated).await.is_err());
    let mut confused = Header::new(Algorithm::HS256);
    confused.kid = Some("rotated-in".to_owned());
    let confused = jsonwebtoken::encode(
        &confused,
        &claims(Uuid::new_v4()),
        &EncodingKey::from_secret(RS_PUBLIC),
    )
    .unwrap();

    std::fs::write(&path, key_set(vec![jwk(Algorithm::RS256, "rotated-in")])).unwrap();
    assert!(
        eager.verify(&rotated).await.is_ok(),
        "refetched on an unknown kid"
    );
    assert!(
        patient.verify(&rotated).await.is_ok(),
        "the first unknown kid after start-up refetches at once"
    );
    std::fs::write(
        &path,
        key_set(vec![
            jwk(Algorithm::RS256, "rotated-in"),
            jwk(Algorithm::ES256, "rotated-again"),
        ]),
    )
    .unwrap();
    let again = signed(Algorithm::ES256, "rotated-again", &claims(Uuid::new_v4()));
    assert!(eager.verify(&again).await.is_ok());
    assert!(
        patient.verify(&again).await.is_err(),
        "not refetched again within the interval"
    );
    assert!(
        matches!(eager.verify(&confused).await, Err(AuthError::Algorithm)),
        "HS256 is never verified with a public key"
    );
}

/// What a [`KeyEndpoint`] answers: status, extra headers and body.
type Answer = (u16, Vec<(&'static str, String)>, Vec<u8>);

/// A key endpoint on loopback whose answer the test changes.
struct KeyEndpoint {
    url: String,
    answer: Arc<std::sync::Mutex<Answer>>,
    _shutdown: tokio_util::sync::DropGuard,
}

impl KeyEndpoint {
    async fn start(body: Vec<u8>) -> KeyEndpoint {
        let answer: Arc<std::sync::Mutex<Answer>> =
            Arc::new(std::sync::Mutex::new((200, Vec::new(), body)));
        let served = answer.clone();
        let app = axum::Router::new().route(
            "/jwks.json",
            axum::routing::get(move || {
                let served = served.clone();
                async move {
                    let (status, headers, body) = served.lock().unwrap().clone();
                    let mut response = axum::response::Response::new(axum::body::Body::from(body));
                    *response.status_mut() = axum::http::StatusCode::from_u16(status).unwrap();
                    for (name, value) in headers {
                        response.headers_mut().insert(name, value.parse().unwrap());
                    }
                    response
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
                .unwrap()
        });
        KeyEndpoint {
            url,
            answer,
            _shutdown: shutdown.drop_guard(),
        }
    }

    fn answer(&self, status: u16, headers: Vec<(&'static str, String)>, body: Vec<u8>) {
        *self.answer.lock().unwrap() = (status, headers, body);
    }
}

#[tokio::test]
async fn the_key_set_is_refreshed_on_a_timer_so_a_revoked_key_stops_being_trusted() {
    let endpoint = KeyEndpoint::start(key_set(vec![jwk(Algorithm::ES256, "current")])).await;
    // unknown kids never refetch here: only the timer can bring a change
    let verifier = Verifier::from_config(&jwks_config(endpoint.url.clone(), 3600, 1))
        .await
        .unwrap();
    let token = signed(Algorithm::ES256, "current", &claims(Uuid::new_v4()));
    assert!(verifier.verify(&token).await.is_ok());

    endpoint.answer(
        200,
        Vec::new(),
        key_set(vec![jwk(Algorithm::RS256, "next")]),
    );
    common::eventually(
        Duration::from_secs(10),
        "the revoked key refused",
        || async { verifier.verify(&token).await.is_err().then_some(()) },
    )
    .await;
    let next = signed(Algorithm::RS256, "next", &claims(Uuid::new_v4()));
    assert!(verifier.verify(&next).await.is_ok());
}

#[tokio::test]
async fn a_key_source_that_is_not_https_redirects_or_is_oversized_is_refused() {
    for insecure in [
        "http://example.com/auth/v1/.well-known/jwks.json",
        "ftp://127.0.0.1/jwks.json",
    ] {
        let error = Verifier::from_config(&jwks_config(insecure.to_owned(), 60, 600))
            .await
            .err()
            .unwrap_or_else(|| panic!("{insecure} accepted"));
        assert!(error.to_string().contains("https"), "{error}");
    }

    let endpoint = KeyEndpoint::start(Vec::new()).await;
    endpoint.answer(
        302,
        vec![("location", "https://elsewhere.example/jwks.json".to_owned())],
        Vec::new(),
    );
    let error = Verifier::from_config(&jwks_config(endpoint.url.clone(), 60, 600))
        .await
        .err()
        .expect("a redirect is not followed");
    assert!(error.to_string().contains("302"), "{error}");

    let mut huge = br#"{"keys": [], "padding": ""#.to_vec();
    huge.extend(std::iter::repeat_n(b'x', 1024 * 1024));
    huge.extend(br#""}"#);
    endpoint.answer(200, Vec::new(), huge);
    let error = Verifier::from_config(&jwks_config(endpoint.url.clone(), 60, 600))
        .await
        .err()
        .expect("an oversized key set is refused");
    assert!(error.to_string().contains("larger than"), "{error}");

    endpoint.answer(200, Vec::new(), key_set(vec![jwk(Algorithm::ES256, "ok")]));
    let verifier = Verifier::from_config(&jwks_config(endpoint.url.clone(), 60, 600))
        .await
        .unwrap();
    let token = signed(Algorithm::ES256, "ok", &claims(Uuid::new_v4()));
    assert!(
        verifier.verify(&token).await.is_ok(),
        "http on loopback is allowed"
    );
}

/// An API whose NATS connection goes through a proxy of the test's (one that reads the NATS
/// protocol, so it can both cut the connection and hide deliveries).
async fn spawn_api_behind_a_proxy(pool: &PgPool, nats: &NatsConfig) -> (TestApi, common::Proxy) {
    let server: &'static str = Box::leak(
        common::nats_url()
            .trim_start_matches("nats://")
            .to_owned()
            .into_boxed_str(),
    );
    let proxy = common::Proxy::nats(server).await;
    let through_proxy = NatsConfig {
        url: format!("nats://127.0.0.1:{}", proxy.port),
        ..nats.clone()
    };
    (spawn_api(pool, &through_proxy).await, proxy)
}

#[sqlx::test]
async fn a_nats_reconnect_clears_the_cache_so_missed_events_cannot_leave_it_stale(pool: PgPool) {
    let (nats, js) = common::isolated_nats().await;
    let (api, proxy) = spawn_api_behind_a_proxy(&pool, &nats).await;
    let (track, user, _) = started(&pool).await;
    let path = progress_path(user, track.id);
    let token = token_for(user);
    assert_eq!(version_of(api.get(&path, Some(&token)).await).await, 1);

    proxy.cut();
    let v2 = complete(&pool, &track, user, 0).await;
    publish(&js, &nats, &event(&v2, 3)).await; // this replica cannot hear it
    proxy.restore();

    common::eventually(
        Duration::from_secs(10),
        "version 2 after the reconnect",
        || async {
            let version = version_of(api.get(&path, Some(&token)).await).await;
            (version == 2).then_some(())
        },
    )
    .await;
    assert_eq!(api.progress_queries(), 2);
    common::delete_streams(&js, &nats).await;
}

#[sqlx::test]
async fn an_event_this_replica_never_received_reaches_its_cache_from_the_stream(pool: PgPool) {
    let (nats, js) = common::isolated_nats().await;
    let (api, proxy) = spawn_api_behind_a_proxy(&pool, &nats).await;
    let (track, lost, _) = started(&pool).await;
    let (other_track, other, _) = started(&pool).await;
    let (lost_path, lost_token) = (progress_path(lost, track.id), token_for(lost));
    let (other_path, other_token) = (progress_path(other, other_track.id), token_for(other));
    assert_eq!(
        version_of(api.get(&lost_path, Some(&lost_token)).await).await,
        1
    );
    assert_eq!(
        version_of(api.get(&other_path, Some(&other_token)).await).await,
        1
    );

    // the replica's connection stays up, but this learner's event never reaches it
    proxy.hide(Some(&lost.to_string()));
    let v2 = complete(&pool, &track, lost, 0).await;
    publish(&js, &nats, &event(&v2, 3)).await;
    proxy.hide(None);
    // the next event it does receive shows the gap
    let other_v2 = complete(&pool, &other_track, other, 0).await;
    publish(&js, &nats, &event(&other_v2, 3)).await;

    common::eventually(
        Duration::from_secs(10),
        "the missed version 2, from the stream",
        || async {
            let lost = version_of(api.get(&lost_path, Some(&lost_token)).await).await;
            let other = version_of(api.get(&other_path, Some(&other_token)).await).await;
            (lost == 2 && other == 2).then_some(())
        },
    )
    .await;
    // both learners loaded once; version 2 came from events, not from a cleared cache
    assert_eq!(api.progress_queries(), 2);
    common::delete_streams(&js, &nats).await;
}

#[sqlx::test]
async fn a_replica_started_before_the_events_stream_exists_follows_it_once_it_does(pool: PgPool) {
    let tag = format!("t{}", &Uuid::new_v4().simple().to_string()[..12]);
    let nats = NatsConfig::isolated(common::nats_url(), &tag);
    let api = spawn_api(&pool, &nats).await;
    let ready = api.get("/readyz", None).await;
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["checks"]["events"], "not_following");

    let client = messaging::connect(&nats, "test").await.unwrap();
    let js = jetstream::new(client);
    messaging::ensure_streams(&js, &nats).await.unwrap();
    common::eventually(Duration::from_secs(10), "the replica to follow", || async {
        let ready = api.get("/readyz", None).await;
        (ready.status() == StatusCode::OK).then_some(())
    })
    .await;

    let (track, user, _) = started(&pool).await;
    let path = progress_path(user, track.id);
    let token = token_for(user);
    assert_eq!(version_of(api.get(&path, Some(&token)).await).await, 1);
    let v2 = complete(&pool, &track, user, 0).await;
    publish(&js, &nats, &event(&v2, 3)).await;
    common::eventually(
        Duration::from_secs(10),
        "version 2 from the event",
        || async {
            let version = version_of(api.get(&path, Some(&token)).await).await;
            (version == 2).then_some(())
        },
    )
    .await;
    assert_eq!(api.progress_queries(), 1, "version 2 came from the event");
    common::delete_streams(&js, &nats).await;
}

#[tokio::test]
async fn development_mode_refuses_to_serve_beyond_loopback() {
    let development = AuthConfig {
        jwt_secret: None,
        dev: true,
        ..AuthConfig::with_secret("unused")
    };
    let open = ApiConfig {
        listen: "0.0.0.0:0".parse().unwrap(),
        ..api_config()
    };
    let nats = NatsConfig::isolated(common::nats_url(), "unused");
    let db = DbConfig::new("postgres://postgres@127.0.0.1:1/nowhere");
    let error = api::run(&db, &nats, open, &development, CancellationToken::new())
        .await
        .unwrap_err();
    assert!(format!("{error:#}").contains("loopback"), "{error:#}");
}

/// Reads a live stream until the server ends it; panics if it is still open after `timeout`.
async fn until_stream_ends(response: reqwest::Response, timeout: Duration) {
    let mut body = response.bytes_stream();
    let ended = tokio::time::timeout(timeout, async {
        while let Some(chunk) = body.next().await {
            if chunk.is_err() {
                break;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream was still open after {timeout:?}");
}

#[sqlx::test]
async fn a_change_wakes_only_the_waiters_of_its_key_and_a_key_is_watched_only_while_waited_on(
    pool: PgPool,
) {
    let (track, user, v1) = started(&pool).await;
    let metrics = Metrics::new();
    let config = CacheConfig {
        capacity: 100,
        ttl: Duration::from_secs(3600),
        miss_ttl: Duration::from_secs(2),
    };
    let source = Arc::new(PgSource::new(pool.clone(), &metrics));
    let cache = ProgressCache::new(&config, source, &metrics);
    let key = (user, track.id);
    assert_eq!(cache.get(key).await.unwrap().unwrap().version(), 1);
    let mut first = cache.changes(key);
    let mut second = cache.changes(key);
    assert_eq!(cache.watched_keys(), 1);

    let someone_else = UserProgress {
        user_id: Uuid::new_v4(),
        ..v1.clone()
    };
    assert!(
        !cache.apply(&event(&someone_else, 3)).await,
        "a learner not cached is left to the database"
    );
    assert!(
        first.next().now_or_never().is_none(),
        "woken by another key"
    );

    let v2 = complete(&pool, &track, user, 0).await;
    assert!(cache.apply(&event(&v2, 3)).await);
    assert_eq!(first.next().now_or_never().unwrap().version(), 2);
    assert_eq!(second.next().now_or_never().unwrap().version(), 2);
    assert!(first.next().now_or_never().is_none(), "each change once");

    drop(first);
    assert_eq!(cache.watched_keys(), 1, "one waiter is left");
    drop(second);
    assert_eq!(
        cache.watched_keys(),
        0,
        "nobody waits: the key is forgotten"
    );
}

#[sqlx::test]
async fn live_streams_are_capped_per_user_and_in_all_and_a_closed_one_frees_its_place(
    pool: PgPool,
) {
    let (nats, js) = common::isolated_nats().await;
    let config = ApiConfig {
        max_streams_per_user: 2,
        max_streams: 3,
        ..api_config()
    };
    let api = spawn_api_with(&pool, &nats, config).await;
    let (track, ann, _) = started(&pool).await;
    let bob = Uuid::new_v4();
    let carl = Uuid::new_v4();
    let stream = |user: Uuid| format!("{}/stream", progress_path(user, track.id));

    let mut open = Vec::new();
    for _ in 0..2 {
        let response = api.get(&stream(ann), Some(&token_for(ann))).await;
        assert_eq!(response.status(), StatusCode::OK);
        open.push(response);
    }
    let refused = api.get(&stream(ann), Some(&token_for(ann))).await;
    assert_eq!(refused.headers()["retry-after"], "5");
    let body = refusal(refused, StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(body["error"], "too_many_streams");
    assert!(body["message"].as_str().unwrap().contains("this user"));

    let bobs = api.get(&stream(bob), Some(&token_for(bob))).await;
    assert_eq!(bobs.status(), StatusCode::OK);
    let body = refusal(
        api.get(&stream(carl), Some(&token_for(carl))).await,
        StatusCode::TOO_MANY_REQUESTS,
    )
    .await;
    assert!(body["message"].as_str().unwrap().contains("this server"));
    assert_eq!(api.state.cache().watched_keys(), 2);

    drop(open.pop());
    drop(bobs);
    common::eventually(Duration::from_secs(5), "closed streams to leave", || {
        let open = api.state.stream_slots().open();
        async move { (open == 1).then_some(()) }
    })
    .await;
    let again = api.get(&stream(ann), Some(&token_for(ann))).await;
    assert_eq!(again.status(), StatusCode::OK);
    drop(again);
    drop(open);
    common::eventually(Duration::from_secs(5), "every stream to leave", || {
        let (open, watched) = (
            api.state.stream_slots().open(),
            api.state.cache().watched_keys(),
        );
        async move { (open == 0 && watched == 0).then_some(()) }
    })
    .await;
    common::delete_streams(&js, &nats).await;
}

#[sqlx::test]
async fn a_live_stream_ends_when_the_token_that_opened_it_expires(pool: PgPool) {
    let (nats, js) = common::isolated_nats().await;
    let api = spawn_api(&pool, &nats).await;
    let (track, user, _) = started(&pool).await;
    let soon = jsonwebtoken::get_current_timestamp() + 2;
    let short_lived = hs256(
        &with(claims(user), json!({ "exp": soon })),
        SECRET.as_bytes(),
    );
    let stream_path = format!("{}/stream", progress_path(user, track.id));

    let response = api.get(&stream_path, Some(&short_lived)).await;
    assert_eq!(response.status(), StatusCode::OK);
    until_stream_ends(response, Duration::from_secs(10)).await;

    // a ticket minted with that token lives no longer than it
    let soon = jsonwebtoken::get_current_timestamp() + 2;
    let short_lived = hs256(
        &with(claims(user), json!({ "exp": soon })),
        SECRET.as_bytes(),
    );
    let ticket = ticket_of(mint_ticket(&api, user, track.id, &short_lived).await).await;
    let response = stream_with_ticket(&api, user, track.id, &ticket).await;
    assert_eq!(response.status(), StatusCode::OK);
    until_stream_ends(response, Duration::from_secs(10)).await;

    // a token valid for an hour keeps its stream open past that
    let response = api.get(&stream_path, Some(&token_for(user))).await;
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    assert_eq!(next_event(&mut body, &mut buffer).await["version"], 1);
    assert_eq!(api.state.stream_slots().open(), 1);
    common::delete_streams(&js, &nats).await;
}

#[sqlx::test]
async fn a_learner_without_progress_costs_one_query_until_an_event_or_the_miss_ttl(pool: PgPool) {
    let (nats, js) = common::isolated_nats().await;
    let config = ApiConfig {
        miss_ttl_ms: 300,
        ..api_config()
    };
    let api = spawn_api_with(&pool, &nats, config).await;
    let track = create_track(&pool, "Not started", 3).await.unwrap();
    let user = Uuid::new_v4();
    let token = token_for(user);
    let path = progress_path(user, track.id);
    for _ in 0..5 {
        assert_eq!(
            api.get(&path, Some(&token)).await.status(),
            StatusCode::NOT_FOUND
        );
    }
    assert_eq!(api.progress_queries(), 1);

    // started meanwhile: the event ends the remembered miss at once
    let create = UserProgressCreate {
        user_id: user,
        track_id: track.id,
        current_unit_id: Some(track.units[0].id),
        started_at: Utc::now(),
    };
    let v1 = create_user_progress(&pool, &create).await.unwrap();
    publish(&js, &nats, &event(&v1, 3)).await;
    let found = api
        .get(&format!("{path}?min_version=1"), Some(&token))
        .await;
    assert_eq!(found.status(), StatusCode::OK);
    // the event ended the remembered miss; the learner, not cached, is read from the database
    // (an event never creates an entry: RELIABILITY.md, finding 9)
    assert_eq!(api.progress_queries(), 2);

    // started without an event reaching this replica: found once the miss expires
    let other = Uuid::new_v4();
    let other_token = token_for(other);
    let other_path = progress_path(other, track.id);
    assert_eq!(
        api.get(&other_path, Some(&other_token)).await.status(),
        StatusCode::NOT_FOUND
    );
    create_user_progress(
        &pool,
        &UserProgressCreate {
            user_id: other,
            ..create
        },
    )
    .await
    .unwrap();
    common::eventually(Duration::from_secs(5), "the miss to expire", || async {
        let status = api.get(&other_path, Some(&other_token)).await.status();
        (status == StatusCode::OK).then_some(())
    })
    .await;
    common::delete_streams(&js, &nats).await;
}

#[sqlx::test]
async fn the_track_catalogue_is_read_once_for_every_learner_on_a_track(pool: PgPool) {
    let (nats, js) = common::isolated_nats().await;
    let api = spawn_api(&pool, &nats).await;
    let (track, first, _) = started(&pool).await;
    let mut learners = vec![first];
    for _ in 0..3 {
        let user = Uuid::new_v4();
        create_user_progress(
            &pool,
            &UserProgressCreate {
                user_id: user,
                track_id: track.id,
                current_unit_id: Some(track.units[0].id),
                started_at: Utc::now(),
            },
        )
        .await
        .unwrap();
        learners.push(user);
    }
    for user in &learners {
        let response = api
            .get(&progress_path(*user, track.id), Some(&token_for(*user)))
            .await;
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["total_units"], 3);
        let list = api
            .get(
                &format!("/api/v1/users/{user}/progress"),
                Some(&token_for(*user)),
            )
            .await;
        let list: Value = list.json().await.unwrap();
        assert_eq!(list["progress"][0]["total_units"], 3);
    }
    let queries = |query: &str| {
        api.state
            .metrics()
            .db_queries
            .with_label_values(&[query])
            .get()
    };
    assert_eq!(queries("progress"), 4);
    assert_eq!(queries("track_units"), 1);
    common::delete_streams(&js, &nats).await;
}

#[sqlx::test]
async fn a_learner_over_the_rate_limit_is_told_when_to_retry_and_others_are_not_slowed(
    pool: PgPool,
) {
    let (nats, js) = common::isolated_nats().await;
    let config = ApiConfig {
        rate_limit_per_sec: 0.5,
        rate_limit_burst: 3,
        ..api_config()
    };
    let api = spawn_api_with(&pool, &nats, config).await;
    let (track, user, _) = started(&pool).await;
    let path = progress_path(user, track.id);
    let token = token_for(user);
    for _ in 0..3 {
        assert_eq!(api.get(&path, Some(&token)).await.status(), StatusCode::OK);
    }
    let limited = api.get(&path, Some(&token)).await;
    assert_eq!(limited.headers()["retry-after"], "2");
    let body = refusal(limited, StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(body["error"], "rate_limited");
    let limited = api.get("/api/v1/me", Some(&token)).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);

    let other = Uuid::new_v4();
    assert_eq!(
        api.get("/api/v1/me", Some(&token_for(other)))
            .await
            .status(),
        StatusCode::OK
    );
    let admin = hs256(
        &with(
            claims(other),
            json!({ "app_metadata": { "role": "admin" } }),
        ),
        SECRET.as_bytes(),
    );
    for _ in 0..10 {
        assert_eq!(api.get(&path, Some(&admin)).await.status(), StatusCode::OK);
    }
    // unauthenticated routes are bounded by the connection limit, not per user
    assert_eq!(api.get("/healthz", None).await.status(), StatusCode::OK);
    common::delete_streams(&js, &nats).await;
}

#[sqlx::test]
async fn an_event_about_another_learner_than_its_subject_names_is_dropped_and_counted(
    pool: PgPool,
) {
    let (nats, js) = common::isolated_nats().await;
    let api = spawn_api(&pool, &nats).await;
    let (track, user, _) = started(&pool).await;
    let path = progress_path(user, track.id);
    let token = token_for(user);
    assert_eq!(version_of(api.get(&path, Some(&token)).await).await, 1);

    let v2 = complete(&pool, &track, user, 0).await;
    let forged = serde_json::to_vec(&event(&v2, 3)).unwrap();
    for subject in [
        nats.event_subject(Uuid::new_v4(), track.id),
        nats.event_subject(user, Uuid::new_v4()),
    ] {
        js.publish(subject, forged.clone().into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let mismatched = api
        .state
        .metrics()
        .cache_events
        .with_label_values(&["mismatched"]);
    common::eventually(Duration::from_secs(5), "both events to be dropped", || {
        let seen = mismatched.get() == 2;
        async move { seen.then_some(()) }
    })
    .await;
    assert_eq!(version_of(api.get(&path, Some(&token)).await).await, 1);

    publish(&js, &nats, &event(&v2, 3)).await;
    let fresh = api
        .get(&format!("{path}?min_version=2"), Some(&token))
        .await;
    assert_eq!(version_of(fresh).await, 2);
    common::delete_streams(&js, &nats).await;
}

#[sqlx::test]
async fn a_panicking_handler_answers_a_json_500_and_the_server_goes_on(pool: PgPool) {
    let (nats, js) = common::isolated_nats().await;
    let verifier = Verifier::from_config(&auth_config()).await.unwrap();
    let shutdown = CancellationToken::new();
    let state = ApiState::start(pool, &nats, verifier, api_config(), shutdown.clone())
        .await
        .unwrap();
    let boom = axum::Router::new().route(
        "/boom",
        axum::routing::get(|| async {
            panic!("a bug in a handler");
            #[allow(unreachable_code)]
            ""
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let limits = state.config().connection_limits();
    let server = tokio::spawn(api::serve_router(
        listener,
        api::router_with(state.clone(), boom),
        limits,
        shutdown.clone(),
    ));
    let http = reqwest::Client::new();
    let response = http.get(format!("{base}/boom")).send().await.unwrap();
    let body = refusal(response, StatusCode::INTERNAL_SERVER_ERROR).await;
    assert_eq!(
        body,
        json!({"error": "internal", "message": "internal error"})
    );
    let health = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let metrics = http.get(format!("{base}/metrics")).send().await.unwrap();
    assert!(
        metrics
            .text()
            .await
            .unwrap()
            .contains(r#"http_requests_total{method="GET",route="/boom",status="500"} 1"#)
    );

    // shutdown drains: the idle keep-alive connection closes and the server returns
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the server stops on shutdown")
        .unwrap()
        .unwrap();
    common::delete_streams(&js, &nats).await;
}

/// Reads what the server sends on `stream` until it closes it; panics after `timeout`.
async fn read_until_closed(stream: &mut tokio::net::TcpStream, timeout: Duration) -> String {
    use tokio::io::AsyncReadExt as _;
    let mut read = Vec::new();
    let closed = tokio::time::timeout(timeout, async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => read.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the connection was still open after {timeout:?}"
    );
    String::from_utf8_lossy(&read).into_owned()
}

#[sqlx::test]
async fn a_silent_connection_is_closed_and_connections_past_the_limit_wait_their_turn(
    pool: PgPool,
) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (nats, js) = common::isolated_nats().await;
    let config = ApiConfig {
        max_http_connections: 1,
        header_read_timeout_ms: 500,
        ..api_config()
    };
    let api = spawn_api_with(&pool, &nats, config).await;
    let address = api.base.trim_start_matches("http://").to_owned();

    // half a request's headers, then nothing: it holds the only connection until the timeout
    let mut slow = tokio::net::TcpStream::connect(&address).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut waiting = tokio::net::TcpStream::connect(&address).await.unwrap();
    waiting
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 1];
    let served_early = tokio::time::timeout(Duration::from_millis(200), waiting.read(&mut first))
        .await
        .is_ok();
    assert!(!served_early, "a connection past the limit was served");

    read_until_closed(&mut slow, Duration::from_secs(5)).await;
    let answer = read_until_closed(&mut waiting, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    common::delete_streams(&js, &nats).await;
}

#[sqlx::test]
async fn a_missing_nats_credentials_or_certificate_file_stops_start_up_with_a_clear_error(
    pool: PgPool,
) {
    let (nats, js) = common::isolated_nats().await;
    let missing = NatsConfig {
        creds: Some("/nonexistent/api.creds".into()),
        ..nats.clone()
    };
    let verifier = Verifier::from_config(&auth_config()).await.unwrap();
    let started = ApiState::start(
        pool,
        &missing,
        verifier,
        api_config(),
        CancellationToken::new(),
    )
    .await;
    let Err(error) = started else {
        panic!("an API started without its credentials file");
    };
    let error = learning_progress::telemetry::causes(&error);
    assert!(
        error.contains("reading the NATS credentials file /nonexistent/api.creds (NATS_CREDS)")
            && error.contains("No such file"),
        "{error}"
    );

    let missing = NatsConfig {
        tls_ca: Some("/nonexistent/ca.pem".into()),
        ..nats.clone()
    };
    let error = messaging::connect(&missing, "worker").await.unwrap_err();
    assert!(
        error
            .to_string()
            .contains("reading /nonexistent/ca.pem (NATS_TLS_CA)"),
        "{error}"
    );
    common::delete_streams(&js, &nats).await;
}

/// The default stream names and subject prefix, as `deploy/nats/permissions.conf` names them,
/// as the user `role` on `server`.
fn as_role(server: &common::NatsServer, role: &str) -> NatsConfig {
    let defaults = NatsConfig::isolated("", "unused");
    NatsConfig {
        url: format!("nats://{role}:{role}-password@127.0.0.1:{}", server.port),
        subject_prefix: "progress".to_owned(),
        commands_stream: "PROGRESS_COMMANDS".to_owned(),
        events_stream: "PROGRESS_EVENTS".to_owned(),
        dlq_stream: "PROGRESS_DLQ".to_owned(),
        ..defaults
    }
}

#[sqlx::test]
async fn each_role_does_its_work_with_the_documented_nats_permissions_and_no_more(pool: PgPool) {
    use learning_progress::applier::{self, ApplierConfig, Seams};
    use learning_progress::model::{Action, ProgressCommand};

    let permissions =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nats/permissions.conf");
    let server = common::NatsServer::with_config(
        &permissions,
        &[
            ("NATS_API_PASSWORD", "api-password"),
            ("NATS_APPLIER_PASSWORD", "applier-password"),
            ("NATS_WORKER_PASSWORD", "worker-password"),
            ("NATS_XAPI_PASSWORD", "xapi-password"),
        ],
    )
    .await;
    let (api_nats, applier_nats, worker_nats) = (
        as_role(&server, "api"),
        as_role(&server, "applier"),
        as_role(&server, "worker"),
    );
    let worker = jetstream::new(messaging::connect(&worker_nats, "worker").await.unwrap());
    messaging::ensure_streams(&worker, &worker_nats)
        .await
        .unwrap();
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let applier_js = jetstream::new(messaging::connect(&applier_nats, "applier").await.unwrap());
    let applier = tokio::spawn(applier::run(
        applier_js,
        pool.clone(),
        applier_nats.clone(),
        ApplierConfig::default(),
        Seams::default(),
        shutdown.clone(),
    ));
    let api = spawn_api(&pool, &api_nats).await;
    common::eventually(
        Duration::from_secs(5),
        "the API to follow the events",
        || {
            let following = api.state.feed().following();
            async move { following.then_some(()) }
        },
    )
    .await;

    let track = create_track(&pool, "Permissions", 3).await.unwrap();
    let user = Uuid::new_v4();
    let start = ProgressCommand {
        command_id: Uuid::new_v4(),
        user_id: user,
        track_id: track.id,
        seq: 1,
        occurred_at: Utc::now(),
        action: Action::TrackStarted {
            current_unit_id: Some(track.units[0].id),
        },
    };
    messaging::publish_command(&worker, &worker_nats, &start)
        .await
        .unwrap()
        .await
        .unwrap();
    let path = format!("{}?min_version=1", progress_path(user, track.id));
    let token = token_for(user);
    common::eventually(
        Duration::from_secs(10),
        "the applied command's event",
        || async {
            let response = api.get(&path, Some(&token)).await;
            (response.status() == StatusCode::OK
                && response.headers().get("x-progress-behind").is_none())
            .then_some(())
        },
    )
    .await;
    assert!(!applier.is_finished(), "the applier runs");

    // neither the API nor the worker may announce progress
    let observer = jetstream::new(messaging::connect(&applier_nats, "observer").await.unwrap());
    let events_before = common::ever_stored(&observer, "PROGRESS_EVENTS").await;
    let forged = serde_json::to_vec(&start).unwrap();
    for (role, nats) in [("api", &api_nats), ("worker", &worker_nats)] {
        let js = jetstream::new(messaging::connect(nats, role).await.unwrap());
        let published = tokio::time::timeout(Duration::from_secs(2), async {
            js.publish(nats.event_subject(user, track.id), forged.clone().into())
                .await?
                .await
        })
        .await;
        assert!(!matches!(published, Ok(Ok(_))), "{role} published an event");
    }
    assert_eq!(
        common::ever_stored(&observer, "PROGRESS_EVENTS").await,
        events_before
    );
}

/// RELIABILITY.md, finding 9: a learner's events can reach the stream out of version order (an
/// event announced late, after a crash), so an event must never create the entry of a learner
/// the cache does not hold — after a clear, that pinned an old version until the TTL.
#[sqlx::test]
async fn a_late_event_never_puts_an_old_version_into_an_emptied_cache(pool: PgPool) {
    let (track, user, v1) = started(&pool).await;
    let metrics = Metrics::new();
    let config = CacheConfig {
        capacity: 100,
        ttl: Duration::from_secs(3600),
        miss_ttl: Duration::from_secs(2),
    };
    let cache = ProgressCache::new(
        &config,
        Arc::new(PgSource::new(pool.clone(), &metrics)),
        &metrics,
    );
    let key = (user, track.id);
    complete(&pool, &track, user, 0).await;
    assert_eq!(cache.get(key).await.unwrap().unwrap().version(), 2);

    // the cache empties (a NATS reconnect), then version 1's event arrives late
    cache.clear();
    assert!(!cache.apply(&event(&v1, 3)).await);
    assert_eq!(
        cache.get(key).await.unwrap().unwrap().version(),
        2,
        "read from the database, not pinned at the late event's version"
    );
    // and a cached learner ignores it as before
    assert!(!cache.apply(&event(&v1, 3)).await);
    assert_eq!(cache.get(key).await.unwrap().unwrap().version(), 2);
}

#[sqlx::test]
async fn an_admin_pages_through_a_tracks_rows_and_no_one_else_may(pool: PgPool) {
    let (nats, _js) = common::isolated_nats().await;
    let api = spawn_api(&pool, &nats).await;
    let track = create_track(&pool, "Exported", 2).await.unwrap();
    let mut learners = Vec::new();
    for _ in 0..5 {
        let user = Uuid::new_v4();
        create_user_progress(
            &pool,
            &UserProgressCreate {
                user_id: user,
                track_id: track.id,
                current_unit_id: None,
                started_at: Utc::now(),
            },
        )
        .await
        .unwrap();
        learners.push(user);
    }
    learners.sort();
    let now = jsonwebtoken::get_current_timestamp();
    let admin = hs256(
        &json!({"iss": "supabase", "role": "service_role", "iat": now, "exp": now + 3600}),
        SECRET.as_bytes(),
    );
    let path = format!("/api/v1/tracks/{}/progress", track.id);

    let mut seen = Vec::new();
    let mut pages = 0;
    let mut after: Option<String> = None;
    loop {
        let query = match &after {
            Some(after) => format!("{path}?limit=2&after={after}"),
            None => format!("{path}?limit=2"),
        };
        let response = api.get(&query, Some(&admin)).await;
        assert_eq!(response.status(), StatusCode::OK);
        let page: Value = response.json().await.unwrap();
        pages += 1;
        for row in page["progress"].as_array().unwrap() {
            assert_eq!(row["total_units"], 2);
            seen.push(row["user_id"].as_str().unwrap().parse::<Uuid>().unwrap());
        }
        assert!(page["resume_since"].is_string());
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, learners, "every row once, in learner order");
    assert_eq!(pages, 3);

    let later = (Utc::now() + chrono::TimeDelta::hours(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let none: Value = api
        .get(&format!("{path}?since={later}"), Some(&admin))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(none["progress"], json!([]), "nothing updated after `since`");

    let learner = api.get(&path, Some(&token_for(learners[0]))).await;
    assert_eq!(learner.status(), StatusCode::FORBIDDEN);
    assert_eq!(learner.json::<Value>().await.unwrap()["error"], "forbidden");
    let unknown = format!("/api/v1/tracks/{}/progress", Uuid::new_v4());
    assert_eq!(
        api.get(&unknown, Some(&admin)).await.status(),
        StatusCode::NOT_FOUND
    );
    let too_many = api.get(&format!("{path}?limit=0"), Some(&admin)).await;
    assert_eq!(too_many.status(), StatusCode::BAD_REQUEST);
    assert!(
        too_many.json::<Value>().await.unwrap()["message"]
            .as_str()
            .unwrap()
            .contains("limit")
    );
}
