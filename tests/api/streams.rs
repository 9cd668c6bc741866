//! Live streams (SSE) and the stream tickets that open them.

use super::*;

/// The next Server-Sent Event's data, as JSON.
pub(crate) async fn next_event(
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

/// An erased learner's open stream gets a last `erased` event and ends, rather than staying
/// open on a learner who is gone.
#[sqlx::test]
async fn an_erasure_ends_the_learners_stream_with_an_erased_event(pool: PgPool) {
    let (nats, js) = common::isolated_nats().await;
    let api = spawn_api(&pool, &nats).await;
    let (track, user, _) = started(&pool).await;
    let stream_path = format!("{}/stream", progress_path(user, track.id));
    let response = api.get(&stream_path, Some(&token_for(user))).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    assert_eq!(next_event(&mut body, &mut buffer).await["version"], 1);

    let erased = learning_progress::model::ErasedEvent::new(user, track.id, 1, Utc::now());
    learning_progress::messaging::publish_erased(&js, &nats, &erased)
        .await
        .unwrap()
        .await
        .unwrap();
    let last = next_event(&mut body, &mut buffer).await;
    assert_eq!(last["user_id"], user.to_string());
    assert_eq!(last["track_id"], track.id.to_string());
    assert!(buffer.is_empty() || !buffer.contains("data:"), "{buffer}");
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        // keep-alive comments may come first; the body then ends
        while let Some(chunk) = body.next().await {
            let chunk = chunk.unwrap();
            let text = std::str::from_utf8(&chunk).unwrap();
            assert!(
                !text.contains("data:"),
                "an event after the erasure: {text}"
            );
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream stayed open after the erasure");
    common::delete_streams(&js, &nats).await;
}

/// `POST …/stream-ticket` for `user`'s progress on `track`.
pub(crate) async fn mint_ticket(
    api: &TestApi,
    user: Uuid,
    track: Uuid,
    token: &str,
) -> reqwest::Response {
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

pub(crate) async fn ticket_of(response: reqwest::Response) -> String {
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    body["ticket"].as_str().unwrap().to_owned()
}

/// Opens `user`'s stream of `track` with `ticket` and no `Authorization` header.
pub(crate) async fn stream_with_ticket(
    api: &TestApi,
    user: Uuid,
    track: Uuid,
    ticket: &str,
) -> reqwest::Response {
    let path = format!("{}/stream?ticket={ticket}", progress_path(user, track));
    api.get(&path, None).await
}

/// The JSON error of a refused request, after checking its status.
pub(crate) async fn refusal(response: reqwest::Response, status: StatusCode) -> Value {
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
