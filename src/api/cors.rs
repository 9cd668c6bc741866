//! Cross-origin requests from browsers: which origins may call the API and how.
//!
//! Only the origins listed in `API_CORS_ORIGINS` (exact `scheme://host[:port]` values) get CORS
//! headers; with none listed, none do, and browsers on other origins cannot read answers. In
//! development mode an empty list allows the loopback origins (`localhost`, `127.0.0.1`, `[::1]`,
//! any port), so a page served next to `make run` works. Callers authenticate with bearer
//! tokens, never cookies, so credentials are not allowed: a browser sends no cookies along.

use std::time::Duration;

use axum::http::{HeaderName, HeaderValue, Method, Uri, header};
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::ApiConfig;
use super::progress::BEHIND_HEADER;
use super::xapi;

/// How long a browser may reuse a preflight's answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// The CORS layer `config` calls for, if any.
pub(crate) fn layer(config: &ApiConfig) -> Option<CorsLayer> {
    let origins = if !config.cors_origins.is_empty() {
        AllowOrigin::list(config.cors_origins.iter().cloned())
    } else if config.cors_loopback {
        AllowOrigin::predicate(|origin, _| is_loopback(origin))
    } else {
        return None;
    };
    Some(
        CorsLayer::new()
            .allow_origin(origins)
            .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static(xapi::VERSION_HEADER),
            ])
            .expose_headers([
                header::ETAG,
                HeaderName::from_static(BEHIND_HEADER),
                HeaderName::from_static(xapi::VERSION_HEADER),
                HeaderName::from_static(xapi::CONSISTENT_THROUGH_HEADER),
            ])
            .max_age(PREFLIGHT_MAX_AGE),
    )
}

/// Parses one configured origin: `http(s)://host[:port]`, exactly as a browser sends it.
pub(crate) fn parse_origin(origin: &str) -> Result<HeaderValue, String> {
    let invalid = || format!("{origin:?} is not an origin like http://127.0.0.1:5173");
    let uri: Uri = origin.parse().map_err(|_| invalid())?;
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return Err(invalid());
    };
    if !matches!(scheme, "http" | "https")
        || authority.as_str().contains('@')
        || origin != format!("{scheme}://{authority}")
    {
        return Err(invalid());
    }
    HeaderValue::from_str(origin).map_err(|_| invalid())
}

fn is_loopback(origin: &HeaderValue) -> bool {
    let Some(uri) = origin.to_str().ok().and_then(|o| o.parse::<Uri>().ok()) else {
        return false;
    };
    matches!(uri.scheme_str(), Some("http" | "https"))
        && matches!(uri.host(), Some("localhost" | "127.0.0.1" | "[::1]"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_exact_origins_are_accepted() {
        for good in ["http://127.0.0.1:5173", "https://app.example.com"] {
            assert_eq!(parse_origin(good).unwrap(), good);
        }
        for bad in [
            "*",
            "127.0.0.1:5173",
            "http://127.0.0.1:5173/",
            "https://app.example.com/path",
            "ftp://example.com",
            "http://user@example.com",
            "",
        ] {
            assert!(parse_origin(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn loopback_origins_are_told_apart_from_others() {
        for loopback in [
            "http://localhost:5173",
            "http://127.0.0.1:8000",
            "http://[::1]:1",
        ] {
            assert!(
                is_loopback(&HeaderValue::from_static(loopback)),
                "{loopback}"
            );
        }
        for other in ["http://localhost.example.com", "http://10.0.0.1", "null"] {
            assert!(!is_loopback(&HeaderValue::from_static(other)), "{other}");
        }
    }
}
