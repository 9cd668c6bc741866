//! The read API's `GET /xapi/statements`: a learner's own statements, filtered and paged as
//! xAPI asks, and anyone's for an admin.

use crate::common::api::{learner_token, serve_api, token};
use learning_progress::api::ApiConfig;
use reqwest::header::HeaderMap;

use super::*;

/// The read API, its xAPI naming as the forwarder's; its base URL.
pub(super) async fn spawn_api(
    pool: &PgPool,
    nats: &NatsConfig,
    shutdown: &CancellationToken,
) -> String {
    let config = ApiConfig {
        rate_limit_per_sec: 0.0,
        xapi: xapi_config(),
        ..ApiConfig::default()
    };
    serve_api(pool, nats, config, shutdown).await
}

/// `GET /xapi/statements?<query>` as `token`, version 1.0.3: status, headers, body.
pub(super) async fn view(
    base: &str,
    token: &str,
    query: &[(&str, String)],
) -> (u16, HeaderMap, Value) {
    let response = reqwest::Client::new()
        .get(format!("{base}/xapi/statements"))
        .query(query)
        .bearer_auth(token)
        .header("X-Experience-API-Version", "1.0.3")
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.json().await.unwrap())
}

/// The project's service-role key, as Supabase issues it: an admin.
pub(super) fn admin_token() -> String {
    let now = jsonwebtoken::get_current_timestamp();
    token(json!({"iss": "supabase", "role": "service_role", "iat": now, "exp": now + 3600}))
}

fn agent(user: Uuid) -> String {
    json!({"objectType": "Agent", "account": {"homePage": xapi_config().home_page, "name": user}})
        .to_string()
}

#[sqlx::test]
async fn the_view_serves_a_learner_their_own_statements_filtered_and_paged_as_xapi_asks(
    pool: PgPool,
) {
    let track = create_track(&pool, "Rust basics", 3).await.unwrap();
    let learners = [Uuid::new_v4(), Uuid::new_v4()];
    let (nats, js) = with_learners(&pool, &track, &learners).await;
    let shutdown = CancellationToken::new();
    let base = spawn_api(&pool, &nats, &shutdown).await;
    let (me, other) = (learners[0], learners[1]);
    let own = learner_token(me);
    let mine = ledger(&pool, &[me]).await;

    // the version header is required, and named on every answer
    let response = reqwest::Client::new()
        .get(format!("{base}/xapi/statements"))
        .bearer_auth(&own)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(response.headers()["x-experience-api-version"], "1.0.3");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "bad_request");

    // a learner's own statements, newest first, with how far the ledger is consistent
    let (status, headers, body) = view(&base, &own, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-experience-api-version"], "1.0.3");
    let through: DateTime<Utc> = headers["x-experience-api-consistent-through"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let statements = body["statements"].as_array().unwrap().clone();
    check_against_ledger(&statements, &mine);
    assert_eq!(body["more"], "");
    let stored: Vec<&str> = statements
        .iter()
        .map(|s| s["stored"].as_str().unwrap())
        .collect();
    assert!(stored.windows(2).all(|w| w[0] >= w[1]), "{stored:?}");
    assert!(
        stored
            .iter()
            .all(|s| s.parse::<DateTime<Utc>>().unwrap() <= through)
    );

    // pages of 3, following `more`, give the same statements once each, oldest first
    let mut paged = Vec::new();
    let mut query = vec![("limit", "3".to_owned()), ("ascending", "true".to_owned())];
    loop {
        let (status, _, body) = view(&base, &own, &query).await;
        assert_eq!(status, 200, "{body}");
        paged.extend(body["statements"].as_array().unwrap().iter().cloned());
        let more = body["more"].as_str().unwrap();
        if more.is_empty() {
            break;
        }
        let cursor = more.rsplit_once("cursor=").unwrap().1;
        query = vec![
            ("limit", "3".to_owned()),
            ("ascending", "true".to_owned()),
            ("cursor", cursor.to_owned()),
        ];
    }
    check_against_ledger(&paged, &mine);
    let mut reversed = statements.clone();
    reversed.reverse();
    assert_eq!(paged, reversed);

    // filters: verb, activity, registration, since, agent
    let count = |query: Vec<(&'static str, String)>| {
        let (base, own) = (base.clone(), own.clone());
        async move {
            let (status, _, body) = view(&base, &own, &query).await;
            assert_eq!(status, 200, "{query:?}: {body}");
            body["statements"].as_array().unwrap().len()
        }
    };
    let config = xapi_config();
    assert_eq!(count(vec![("verb", verbs::PASSED.to_owned())]).await, 1);
    assert_eq!(count(vec![("verb", verbs::FAILED.to_owned())]).await, 1);
    assert_eq!(count(vec![("verb", verbs::COMPLETED.to_owned())]).await, 4);
    assert_eq!(
        count(vec![("activity", config.track_iri(track.id))]).await,
        2
    );
    let quiz = config.unit_iri(track.id, track.units[2].id);
    assert_eq!(count(vec![("activity", quiz.clone())]).await, 3);
    assert_eq!(
        count(vec![("activity", quiz), ("verb", verbs::PASSED.to_owned())]).await,
        1
    );
    let registration = registration(me, track.id).to_string();
    assert_eq!(count(vec![("registration", registration)]).await, 7);
    assert_eq!(
        count(vec![("registration", Uuid::new_v4().to_string())]).await,
        0
    );
    assert_eq!(
        count(vec![("since", "2999-01-01T00:00:00Z".to_owned())]).await,
        0
    );
    assert_eq!(count(vec![("agent", agent(me))]).await, 7);
    assert_eq!(
        count(vec![("verb", "http://example.com/unknown".to_owned())]).await,
        0
    );

    // one statement by id, as the LRS would give it; another learner's is not found
    let (id, _, _) = &mine[3];
    let (status, _, one) = view(
        &base,
        &own,
        &[("statementId", statement_id(*id).to_string())],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        one,
        statements
            .iter()
            .find(|s| s["id"] == one["id"])
            .unwrap()
            .clone()
    );
    let (theirs, _, _) = &ledger(&pool, &[other]).await[0];
    let (status, _, _) = view(
        &base,
        &own,
        &[("statementId", statement_id(*theirs).to_string())],
    )
    .await;
    assert_eq!(status, 404);

    // another learner's statements are forbidden; an unknown parameter is a bad request
    let (status, _, _) = view(&base, &own, &[("agent", agent(other))]).await;
    assert_eq!(status, 403);
    let (status, _, body) = view(&base, &own, &[("format", "exact".to_owned())]).await;
    assert_eq!(status, 400, "{body}");
    let (status, _, _) = view(&base, &own, &[("cursor", "nonsense".to_owned())]).await;
    assert_eq!(status, 400);

    // an admin reads anyone's, or everyone's
    let admin = admin_token();
    let (status, _, body) = view(&base, &admin, &[("agent", agent(other))]).await;
    assert_eq!(status, 200);
    check_against_ledger(
        body["statements"].as_array().unwrap(),
        &ledger(&pool, &[other]).await,
    );
    let (_, _, body) = view(&base, &admin, &[]).await;
    check_against_ledger(
        body["statements"].as_array().unwrap(),
        &ledger(&pool, &learners).await,
    );

    // statement ids as PostgreSQL computes them are the service's
    for (command_id, _, _) in &mine {
        let in_sql: Uuid = sqlx::query_scalar("select xapi_statement_id($1)")
            .bind(command_id)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(in_sql, statement_id(*command_id));
    }
    shutdown.cancel();
    delete_streams(&js, &nats).await;
}
