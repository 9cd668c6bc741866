//! The read API on a free loopback port, and the tokens it takes.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use learning_progress::api::{self, ApiConfig, ApiState};
use learning_progress::auth::{AuthConfig, Verifier};
use learning_progress::messaging::NatsConfig;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The HS256 secret the test APIs trust; test-only, trusted nowhere else.
pub const SECRET: &str = "test-only-hs256-secret-for-the-integration-tests";

/// `claims` signed with [`SECRET`].
pub fn token(claims: Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// A learner's token, as Supabase issues it, valid for an hour.
pub fn learner_token(user: Uuid) -> String {
    let now = jsonwebtoken::get_current_timestamp();
    token(json!({
        "sub": user.to_string(), "aud": "authenticated", "role": "authenticated",
        "iat": now, "exp": now + 3600,
    }))
}

/// The read API with `config`, trusting [`SECRET`], until `shutdown`; its base URL.
pub async fn serve_api(
    pool: &PgPool,
    nats: &NatsConfig,
    config: ApiConfig,
    shutdown: &CancellationToken,
) -> String {
    let verifier = Verifier::from_config(&AuthConfig::with_secret(SECRET))
        .await
        .unwrap();
    let state = ApiState::start(pool.clone(), nats, verifier, config, shutdown.clone())
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(api::serve(listener, state, shutdown.clone()));
    base
}

/// An API replica following the test's events stream, stopped when dropped.
pub struct TestApi {
    base: String,
    http: reqwest::Client,
    _shutdown: tokio_util::sync::DropGuard,
}

impl TestApi {
    pub async fn start(pool: &PgPool, nats: &NatsConfig) -> TestApi {
        let config = ApiConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            // only events may refresh what is cached
            cache_ttl_secs: 3600,
            rate_limit_per_sec: 0.0,
            ..ApiConfig::default()
        };
        let shutdown = CancellationToken::new();
        let base = serve_api(pool, nats, config, &shutdown).await;
        TestApi {
            base,
            http: reqwest::Client::new(),
            _shutdown: shutdown.drop_guard(),
        }
    }

    /// The learner's progress as the API serves it to them.
    async fn get_progress(&self, user: Uuid, track: Uuid) -> reqwest::Response {
        self.http
            .get(format!(
                "{}/api/v1/users/{user}/tracks/{track}/progress",
                self.base
            ))
            .bearer_auth(learner_token(user))
            .send()
            .await
            .expect("API reachable")
    }

    /// The learner's progress, which the API must serve.
    pub async fn progress(&self, user: Uuid, track: Uuid) -> Value {
        let response = self.get_progress(user, track).await;
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    /// The status and version (0 when none) the API answers for the learner on the track.
    pub async fn status_and_version(&self, user: Uuid, track: Uuid) -> (StatusCode, i64) {
        let response = self.get_progress(user, track).await;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or_default();
        (status, body["version"].as_i64().unwrap_or(0))
    }
}
