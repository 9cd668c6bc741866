//! Signing keys from a JWKS: refetch on an unknown kid, refresh on a timer, refusing unsafe
//! sources.

use super::*;

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
