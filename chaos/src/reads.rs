//! Reads while the faults run: each API replica, polled for the learners being driven, must
//! never answer with an older version than one it has already served (no stale read going
//! backwards, whatever happens to its event feed).

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use uuid::Uuid;

use crate::load::Live;

#[derive(Debug, Default, Serialize)]
pub struct ReadStats {
    pub reads: usize,
    /// Answers other than 200 and 404 (e.g. 503 while the database restarts).
    pub errors: usize,
    /// A replica answered with an older version than it served before.
    pub backwards: Vec<String>,
}

/// Polls every replica every 100 ms until `stop` turns true.
pub async fn monitor(
    api_urls: Vec<String>,
    token: String,
    track_id: Uuid,
    live: Live,
    mut stop: watch::Receiver<bool>,
) -> ReadStats {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("an HTTP client");
    let mut stats = ReadStats::default();
    let mut served: HashMap<(usize, Uuid), i64> = HashMap::new();
    loop {
        for user in live.sample(8) {
            for (replica, url) in api_urls.iter().enumerate() {
                stats.reads += 1;
                match version(&http, url, &token, user, track_id).await {
                    Ok(Some(version)) => {
                        let last = served.entry((replica, user)).or_insert(version);
                        if version < *last {
                            stats.backwards.push(format!(
                                "api-{} served version {version} of learner {user} after {last}",
                                replica + 1
                            ));
                        }
                        *last = version.max(*last);
                    }
                    Ok(None) => {}
                    Err(()) => stats.errors += 1,
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = stop.changed() => break,
        }
    }
    stats
}

/// The version a replica serves for a learner (its ETag); `None` when it has no row yet.
pub async fn version(
    http: &reqwest::Client,
    api: &str,
    token: &str,
    user: Uuid,
    track: Uuid,
) -> Result<Option<i64>, ()> {
    let response = http
        .get(format!("{api}/api/v1/users/{user}/tracks/{track}/progress"))
        .bearer_auth(token)
        .send()
        .await
        .map_err(|_| ())?;
    match response.status().as_u16() {
        200 => response
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim_matches('"').parse().ok())
            .map(Some)
            .ok_or(()),
        404 => Ok(None),
        _ => Err(()),
    }
}
