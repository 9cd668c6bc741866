//! Admins export a track's rows in pages.

use super::*;

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
