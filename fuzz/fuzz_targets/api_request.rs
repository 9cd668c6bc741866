//! Requests with arbitrary paths, queries and headers through the API's real router
//! (`api::router`), in process with `tower::ServiceExt::oneshot`.
//!
//! The state needs no database and no NATS: the pool is lazy, points at a socket that does
//! not exist and gives up at once, and the NATS client keeps retrying in the background. One
//! learner's snapshot is in the cache, so reads of it answer; any other key would need the
//! database and answers 500. Properties: nothing panics; every answer is one the API
//! documents (200, 304, 400, 401, 403, 404, 405, a 500 only where the database was needed,
//! a 503 only from `/readyz`); every error from the API's own routes is its JSON error body
//! (401 with `WWW-Authenticate`); a 200 on a learner's progress is only for that learner or
//! an admin, and the cached snapshot comes back exactly, with its ETag.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use arbitrary::Arbitrary;
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Method, Request, StatusCode, Uri, header};
use chrono::{TimeZone as _, Utc};
use learning_progress::api::{self, ApiConfig, ApiState, Snapshot};
use learning_progress::auth::{AuthConfig, Verifier, mint_dev_token};
use learning_progress::config::DbConfig;
use learning_progress::messaging::NatsConfig;
use learning_progress::model::{ProgressView, UserProgress};
use libfuzzer_sys::fuzz_target;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;
use uuid::Uuid;

const SECRET: &str = "fuzzing-secret-fuzzing-secret-fuzzing-secret";
const LEARNER: Uuid = Uuid::from_u128(0x0aa4_91c2_6e2f_4b7e_8d1a_5c3b_7f60_2e11);
const OTHER: Uuid = Uuid::from_u128(0x5d2c_8e71_03b4_4f9a_a6e8_91d7_c4b2_3f05);
const TRACK: Uuid = Uuid::from_u128(0x7e1f_24b8_9c3d_4a56_b0e2_68f4_1d9c_7a30);
const UNIT: Uuid = Uuid::from_u128(0x1c9b_5f30_7a2e_4d81_9e6b_02c4_58f7_a3d9);

#[derive(Arbitrary, Debug)]
struct Input {
    method: Verb,
    path: Path,
    query: Option<String>,
    auth: Auth,
    if_none_match: Option<String>,
}

#[derive(Arbitrary, Debug)]
enum Verb {
    Get,
    Head,
    Post,
    Delete,
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum Path {
    Show {
        user: Segment,
        track: Segment,
    },
    Stream {
        user: Segment,
        track: Segment,
    },
    List {
        user: Segment,
    },
    Me,
    Healthz,
    Readyz,
    Metrics,
    OpenApi,
    /// Anything after the first `/`.
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum Segment {
    Learner,
    Other,
    Track,
    /// The learner's id in another form `Uuid::parse_str` accepts: simple, braced, urn,
    /// upper case.
    LearnerAs(u8),
    Id([u8; 16]),
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum Auth {
    None,
    Learner,
    Other,
    Admin,
    /// The token after a scheme the fuzzer writes, e.g. `bearer  ` or `Basic `.
    Scheme(String),
    Raw(Vec<u8>),
}

struct Fixture {
    runtime: tokio::runtime::Runtime,
    router: Router,
    state: ApiState,
    snapshot: Snapshot,
    tokens: Tokens,
}

struct Tokens {
    learner: String,
    other: String,
    admin: String,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let auth = AuthConfig::with_secret(SECRET);
        let mint = |user, admin| {
            mint_dev_token(&auth, user, admin, Duration::from_secs(7 * 86_400)).expect("minted")
        };
        let tokens = Tokens {
            learner: mint(LEARNER, false),
            other: mint(OTHER, false),
            admin: mint(Uuid::new_v4(), true),
        };
        let (state, snapshot) = runtime.block_on(async {
            let verifier = Verifier::from_config(&auth).await.expect("a verifier");
            let mut db = DbConfig::new("postgres://fuzz@localhost/none?host=/nonexistent-fuzz");
            db.acquire_timeout_secs = 0;
            let pool = learning_progress::db::pool(&db).expect("a lazy pool");
            // nothing listens on port 1: the client retries in the background
            let nats = NatsConfig::isolated("nats://127.0.0.1:1", "fuzz");
            let config = ApiConfig {
                min_version_wait_ms: 0,
                ..ApiConfig::default()
            };
            let state = ApiState::start(pool, &nats, verifier, config, CancellationToken::new())
                .await
                .expect("the API state starts without NATS");
            let snapshot = Snapshot::new(&learner_view());
            state.cache().offer(snapshot.clone()).await;
            (state, snapshot)
        });
        Fixture {
            runtime,
            router: api::router(state.clone()),
            state,
            snapshot,
            tokens,
        }
    })
}

fn learner_view() -> ProgressView {
    let at = Utc.with_ymd_and_hms(2026, 1, 5, 9, 30, 0).unwrap();
    let mut progress = UserProgress::empty(LEARNER, TRACK, at);
    progress.completed_unit_ids = vec![UNIT];
    progress.version = 3;
    progress.last_seq = 3;
    ProgressView::new(progress, 4)
}

fuzz_target!(|input: Input| {
    let fixture = fixture();
    let Some(request) = input.request(&fixture.tokens) else {
        return;
    };
    let path = request.uri().path().to_owned();
    let conditional = request.headers().contains_key(header::IF_NONE_MATCH);
    let head = request.method() == Method::HEAD;
    fixture.runtime.block_on(async {
        // a TTL or a cleared cache must not turn the learner's reads into database reads
        fixture.state.cache().offer(fixture.snapshot.clone()).await;
        let response = fixture
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("the router is infallible");
        check(
            &input,
            &path,
            conditional,
            head,
            response,
            &fixture.snapshot,
        )
        .await;
    });
    check_metric_labels(&fixture.state);
});

async fn check(
    input: &Input,
    path: &str,
    conditional: bool,
    head: bool,
    response: axum::response::Response,
    snapshot: &Snapshot,
) {
    let status = response.status();
    let users_route = path.starts_with("/api/v1/users/");
    match status {
        StatusCode::OK | StatusCode::BAD_REQUEST | StatusCode::UNAUTHORIZED => {}
        StatusCode::FORBIDDEN | StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => {}
        StatusCode::NOT_MODIFIED => assert!(conditional, "304 without If-None-Match"),
        StatusCode::INTERNAL_SERVER_ERROR => assert!(
            users_route && !reads_cached_key(input),
            "500 where no database was needed: {input:?}"
        ),
        StatusCode::SERVICE_UNAVAILABLE => assert_eq!(path, "/readyz"),
        other => panic!("undocumented status {other} for {input:?}"),
    }
    if status == StatusCode::OK && users_route {
        // every token but the admin's is the learner's, the other learner's, or none valid
        let as_learner = matches!(input.auth, Auth::Learner | Auth::Scheme(_));
        assert!(
            matches!(input.auth, Auth::Admin) || as_learner && path_user(path) == Some(LEARNER),
            "progress read without the right token: {input:?}"
        );
    }
    let is_api_error = status.is_client_error() && status != StatusCode::METHOD_NOT_ALLOWED
        || status == StatusCode::INTERNAL_SERVER_ERROR;
    let is_show = matches!(input.path, Path::Show { .. }) && reads_cached_key(input);
    let expected_etag = format!("\"{}\"", snapshot.version());
    if is_show && matches!(status, StatusCode::OK | StatusCode::NOT_MODIFIED) {
        assert_eq!(response.headers()[header::ETAG], expected_etag.as_str());
    }
    if status == StatusCode::UNAUTHORIZED {
        assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
    }
    if !(is_api_error || is_show && status == StatusCode::OK) || head {
        return;
    }
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("a bounded body");
    if is_api_error {
        let error: serde_json::Value =
            serde_json::from_slice(&body).expect("an error body is JSON");
        assert!(
            error["error"].is_string() && error["message"].is_string(),
            "{error}"
        );
    } else {
        assert_eq!(body, snapshot.json(), "the cached snapshot, exactly");
    }
}

/// Whether the request reads the cached learner's snapshot (so needs no database).
fn reads_cached_key(input: &Input) -> bool {
    match &input.path {
        Path::Show { user, track } | Path::Stream { user, track } => {
            user.is_learner() && matches!(track, Segment::Track)
        }
        _ => false,
    }
}

/// The learner a `/api/v1/users/{user_id}/…` path names, as the router reads it.
fn path_user(path: &str) -> Option<Uuid> {
    let segment = path.strip_prefix("/api/v1/users/")?.split('/').next()?;
    let decoded = percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .ok()?;
    Uuid::parse_str(&decoded).ok()
}

/// Metric labels stay a bounded set whatever the requests: a label per method or path sent
/// would grow the registry (and `/metrics`) without limit.
fn check_metric_labels(state: &ApiState) {
    use prometheus::core::Collector as _;
    const METHODS: &[&str] = &[
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "other",
    ];
    for family in state.metrics().requests.collect() {
        for metric in family.get_metric() {
            for label in metric.get_label() {
                let value = label.value();
                match label.name() {
                    "method" => assert!(METHODS.contains(&value), "method label {value:?}"),
                    "route" => assert!(
                        value == "unmatched" || value.starts_with('/') && !value.contains('%'),
                        "route label {value:?}"
                    ),
                    _ => {}
                }
            }
        }
    }
}

impl Segment {
    fn is_learner(&self) -> bool {
        matches!(self, Segment::Learner | Segment::LearnerAs(_))
    }

    fn text(&self) -> String {
        match self {
            Segment::Learner => LEARNER.to_string(),
            Segment::Other => OTHER.to_string(),
            Segment::Track => TRACK.to_string(),
            Segment::LearnerAs(form) => match form % 4 {
                0 => LEARNER.simple().to_string(),
                1 => LEARNER.braced().to_string(),
                2 => LEARNER.urn().to_string(),
                _ => LEARNER.to_string().to_uppercase(),
            },
            Segment::Id(bytes) => Uuid::from_bytes(*bytes).to_string(),
            Segment::Raw(text) => text.clone(),
        }
    }
}

impl Input {
    fn request(&self, tokens: &Tokens) -> Option<Request<Body>> {
        let path = match &self.path {
            Path::Show { user, track } => format!(
                "/api/v1/users/{}/tracks/{}/progress",
                encode(&user.text(), b""),
                encode(&track.text(), b"")
            ),
            Path::Stream { user, track } => format!(
                "/api/v1/users/{}/tracks/{}/progress/stream",
                encode(&user.text(), b""),
                encode(&track.text(), b"")
            ),
            Path::List { user } => format!("/api/v1/users/{}/progress", encode(&user.text(), b"")),
            Path::Me => "/api/v1/me".to_owned(),
            Path::Healthz => "/healthz".to_owned(),
            Path::Readyz => "/readyz".to_owned(),
            Path::Metrics => "/metrics".to_owned(),
            Path::OpenApi => "/openapi.json".to_owned(),
            Path::Raw(rest) => format!("/{}", encode(rest, b"/")),
        };
        let uri = match &self.query {
            Some(query) => format!("{path}?{}", encode(query, b"&=+")),
            None => path,
        };
        let uri: Uri = uri.parse().ok()?;
        let method = match &self.method {
            Verb::Get => Method::GET,
            Verb::Head => Method::HEAD,
            Verb::Post => Method::POST,
            Verb::Delete => Method::DELETE,
            Verb::Other(name) => Method::from_bytes(name.as_bytes()).ok()?,
        };
        let mut request = Request::builder().method(method).uri(uri);
        let authorization = match &self.auth {
            Auth::None => None,
            Auth::Learner => Some(format!("Bearer {}", tokens.learner).into_bytes()),
            Auth::Other => Some(format!("Bearer {}", tokens.other).into_bytes()),
            Auth::Admin => Some(format!("Bearer {}", tokens.admin).into_bytes()),
            Auth::Scheme(scheme) => Some(format!("{scheme}{}", tokens.learner).into_bytes()),
            Auth::Raw(bytes) => Some(bytes.clone()),
        };
        if let Some(value) = authorization {
            request = request.header(header::AUTHORIZATION, HeaderValue::from_bytes(&value).ok()?);
        }
        if let Some(tag) = &self.if_none_match {
            request = request.header(header::IF_NONE_MATCH, HeaderValue::from_str(tag).ok()?);
        }
        request.body(Body::empty()).ok()
    }
}

/// Percent-encodes what a URI cannot hold as is, keeping `%` (so the fuzzer can write its own
/// escapes, valid or not) and the characters in `keep`.
fn encode(text: &str, keep: &[u8]) -> String {
    let mut out = String::with_capacity(text.len());
    for &byte in text.as_bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~%".contains(&byte) || keep.contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
