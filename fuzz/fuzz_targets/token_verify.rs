//! Bearer tokens through the API's verifier (HS256, a fixed secret), and development tokens
//! minted from a `--ttl` text.
//!
//! Random text never carries a valid signature, so most inputs are signed here with the
//! verifier's own secret: the fuzzer chooses the header and the claims, which is what reaches
//! the claim checks. Properties: nothing panics; a token is accepted only with `alg: HS256`,
//! a `sub` that is a user id, the configured audience and an `exp` — and then the principal is
//! exactly that user, admin only with `role: service_role`; a token clearly valid (or clearly
//! invalid) by the time checks is accepted (refused); a development token minted for a user
//! with any TTL that parses verifies as that user.
#![no_main]

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey};
use learning_progress::auth::{AuthConfig, Principal, Verifier, mint_dev_token, parse_ttl};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};
use uuid::Uuid;

const SECRET: &str = "fuzzing-secret-fuzzing-secret-fuzzing-secret";
const AUDIENCE: &str = "authenticated";
/// The verifier's leeway is 30 s; a time this far from now is clearly on one side of it.
const CLEARLY: i64 = 120;

#[derive(Arbitrary, Debug)]
enum Input {
    /// A token as it arrives, signed by nobody.
    Raw(String),
    /// A token signed with the verifier's secret.
    Signed { header: Header, claims: Claims },
    /// A development token for `user`, valid for `ttl` (the `token --ttl` text).
    Minted {
        user: [u8; 16],
        admin: bool,
        ttl: String,
    },
}

#[derive(Arbitrary, Debug)]
enum Header {
    Alg {
        alg: Alg,
        typ: bool,
        kid: Option<String>,
    },
    Json(String),
}

#[derive(Arbitrary, Debug)]
enum Alg {
    Hs256,
    Other(String),
}

#[derive(Arbitrary, Debug)]
struct Claims {
    sub: Sub,
    aud: Aud,
    exp: Time,
    nbf: Time,
    role: Option<String>,
    extra: Vec<(String, Json)>,
}

#[derive(Arbitrary, Debug)]
enum Sub {
    User([u8; 16]),
    Text(String),
    Number(i64),
    Missing,
}

#[derive(Arbitrary, Debug)]
enum Aud {
    Expected,
    Text(String),
    List(Vec<String>, bool),
    Number(i64),
    Missing,
}

#[derive(Arbitrary, Debug)]
enum Time {
    /// Seconds from now.
    FromNow(i32),
    Absolute(i64),
    Float(f64),
    Text(String),
    Missing,
}

#[derive(Arbitrary, Debug)]
enum Json {
    Null,
    Bool(bool),
    Number(i64),
    Text(String),
    List(Vec<String>),
}

struct Fixture {
    runtime: tokio::runtime::Runtime,
    verifier: Verifier,
    config: AuthConfig,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let config = AuthConfig::with_secret(SECRET);
        let verifier = runtime
            .block_on(Verifier::from_config(&config))
            .expect("a secret is a valid configuration");
        Fixture {
            runtime,
            verifier,
            config,
        }
    })
}

fuzz_target!(|input: Input| {
    let Fixture {
        runtime,
        verifier,
        config,
    } = fixture();
    let verify = |token: &str| runtime.block_on(verifier.verify(token));
    match input {
        Input::Raw(token) => {
            // a valid signature cannot be guessed; the seeds hold none
            assert!(verify(&token).is_err(), "an unsigned token was accepted");
        }
        Input::Signed { header, claims } => {
            let now = jsonwebtoken::get_current_timestamp() as i64;
            let (header, hs256) = header.json();
            let claims = claims.json(now);
            let token = sign(&header, &claims.to_string());
            let expected = match hs256 {
                Some(true) => expectation(&claims, now),
                Some(false) => Some(false),
                // a header of the fuzzer's own JSON may be refused for other fields
                None => expectation(&claims, now).filter(|accepted| !accepted),
            };
            match verify(&token) {
                Ok(principal) => {
                    assert_ne!(expected, Some(false), "accepted: {header} {claims}");
                    assert_ne!(hs256, Some(false), "accepted without alg HS256: {header}");
                    check_principal(&principal, &claims);
                }
                Err(error) => {
                    assert_ne!(expected, Some(true), "refused ({error}): {header} {claims}");
                }
            }
        }
        Input::Minted { user, admin, ttl } => {
            let Ok(duration) = parse_ttl(&ttl) else {
                return;
            };
            let user = Uuid::from_bytes(user);
            let token = mint_dev_token(config, user, admin, duration).expect("a token is minted");
            let principal = verify(&token).expect("a freshly minted token verifies");
            assert_eq!((principal.user_id, principal.admin), (user, admin));
            // it expires when the token says: its lifetime from now, give or take the clock
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("a clock after 1970")
                .as_secs();
            let expected = now.saturating_add(duration.as_secs());
            assert!(
                principal.expires_at.abs_diff(expected) <= 5,
                "expires at {} for a lifetime of {duration:?} from {now}",
                principal.expires_at
            );
        }
    }
});

/// `header.claims.signature`, signed with the verifier's secret whatever the header says.
fn sign(header: &str, claims: &str) -> String {
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    let signature =
        jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256).expect("signed");
    format!("{message}.{signature}")
}

/// `Some(accepted?)` where the claims decide it beyond doubt, `None` where they do not
/// (times near the leeway, numbers as floats or text, extra fields that shadow a claim).
fn expectation(claims: &Value, now: i64) -> Option<bool> {
    let sub_ok = claims["sub"]
        .as_str()
        .is_some_and(|s| Uuid::parse_str(s).is_ok());
    if !sub_ok || !audience_ok(claims) {
        return Some(false);
    }
    if !claims_are_plain(claims) {
        return None;
    }
    let exp = claims["exp"].as_i64();
    let exp_ok = match exp {
        Some(exp) if exp >= now + CLEARLY => Some(true),
        Some(exp) if exp <= now - CLEARLY => Some(false),
        Some(_) => None,
        None => Some(false),
    };
    let nbf_ok = match claims.get("nbf").map(Value::as_i64) {
        None => Some(true),
        Some(Some(nbf)) if nbf <= now - CLEARLY => Some(true),
        Some(Some(nbf)) if nbf >= now + CLEARLY => Some(false),
        _ => None,
    };
    if exp_ok == Some(false) || nbf_ok == Some(false) {
        return Some(false);
    }
    match (exp_ok, nbf_ok) {
        (Some(true), Some(true)) => Some(true),
        _ => None,
    }
}

/// Only types whose meaning is plain: integer times, `sub` and `aud` as built.
fn claims_are_plain(claims: &Value) -> bool {
    let integer = |v: Option<&Value>| v.is_none_or(|v| v.is_i64() && v.as_i64() >= Some(0));
    integer(claims.get("exp")) && integer(claims.get("nbf"))
}

fn audience_ok(claims: &Value) -> bool {
    match &claims["aud"] {
        Value::String(aud) => aud == AUDIENCE,
        Value::Array(list) => list.iter().any(|aud| aud.as_str() == Some(AUDIENCE)),
        _ => false,
    }
}

fn check_principal(principal: &Principal, claims: &Value) {
    let sub = claims["sub"]
        .as_str()
        .expect("an accepted token has a text sub");
    assert_eq!(Uuid::parse_str(sub).ok(), Some(principal.user_id));
    assert!(claims.get("exp").is_some(), "accepted without exp");
    if let Some(exp) = claims["exp"].as_u64() {
        assert_eq!(principal.expires_at, exp, "a stream would outlive its token");
    }
    assert!(audience_ok(claims), "accepted for another audience");
    assert_eq!(
        principal.admin,
        claims["role"].as_str() == Some("service_role"),
        "admin without the service role"
    );
}

impl Header {
    /// The header's JSON, and whether it is a plain HS256 header (`None`: the fuzzer's own
    /// JSON naming HS256, which other fields may still make invalid).
    fn json(self) -> (String, Option<bool>) {
        match self {
            Header::Alg { alg, typ, kid } => {
                let mut header = Map::new();
                let hs256 = matches!(alg, Alg::Hs256);
                let alg = match alg {
                    Alg::Hs256 => "HS256".to_owned(),
                    Alg::Other(other) => other,
                };
                let hs256 = hs256 || alg == "HS256";
                header.insert("alg".into(), alg.into());
                if typ {
                    header.insert("typ".into(), "JWT".into());
                }
                if let Some(kid) = kid {
                    header.insert("kid".into(), kid.into());
                }
                (Value::Object(header).to_string(), Some(hs256))
            }
            Header::Json(text) => {
                let hs256 = serde_json::from_str::<Value>(&text)
                    .is_ok_and(|h| h.get("alg").and_then(Value::as_str) == Some("HS256"));
                (text, if hs256 { None } else { Some(false) })
            }
        }
    }
}

impl Claims {
    fn json(self, now: i64) -> Value {
        let mut claims = Map::new();
        // extra fields first: a claim set below replaces one of the same name
        for (name, value) in self.extra {
            claims.insert(name, value.json());
        }
        let mut set = |name: &str, value: Option<Value>| match value {
            Some(value) => {
                claims.insert(name.to_owned(), value);
            }
            None => {
                claims.remove(name);
            }
        };
        set(
            "sub",
            match self.sub {
                Sub::User(bytes) => Some(Uuid::from_bytes(bytes).to_string().into()),
                Sub::Text(text) => Some(text.into()),
                Sub::Number(n) => Some(n.into()),
                Sub::Missing => None,
            },
        );
        set(
            "aud",
            match self.aud {
                Aud::Expected => Some(AUDIENCE.into()),
                Aud::Text(text) => Some(text.into()),
                Aud::List(mut list, with_expected) => {
                    if with_expected {
                        list.push(AUDIENCE.to_owned());
                    }
                    Some(list.into())
                }
                Aud::Number(n) => Some(n.into()),
                Aud::Missing => None,
            },
        );
        set("exp", self.exp.json(now));
        set("nbf", self.nbf.json(now));
        set("role", self.role.map(Value::from));
        Value::Object(claims)
    }
}

impl Time {
    fn json(self, now: i64) -> Option<Value> {
        match self {
            Time::FromNow(seconds) => Some(json!(now + i64::from(seconds))),
            Time::Absolute(at) => Some(json!(at)),
            Time::Float(at) => Some(json!(at)),
            Time::Text(text) => Some(text.into()),
            Time::Missing => None,
        }
    }
}

impl Json {
    fn json(self) -> Value {
        match self {
            Json::Null => Value::Null,
            Json::Bool(b) => b.into(),
            Json::Number(n) => n.into(),
            Json::Text(text) => text.into(),
            Json::List(list) => list.into(),
        }
    }
}
