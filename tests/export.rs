//! `export`: a track's rows as NDJSON and CSV, every row once, with `--since` and a clear
//! error for a track that does not exist.

mod common;

use chrono::Utc;
use learning_progress::db::progress::{UserProgressCreate, create_user_progress};
use learning_progress::db::tracks::create_track;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use common::binary::database_url;

async fn export(pool: &PgPool, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_learning-progress"))
        .arg("export")
        .args(args)
        .env("DATABASE_URL", database_url(pool).await)
        .output()
        .unwrap()
}

#[sqlx::test]
async fn a_tracks_rows_are_exported_once_each_as_ndjson_and_csv(pool: PgPool) {
    let track = create_track(&pool, "Exported", 3).await.unwrap();
    let other = create_track(&pool, "Not exported", 1).await.unwrap();
    let mut learners = Vec::new();
    for i in 0..7 {
        let user = Uuid::new_v4();
        for t in [&track, &other] {
            create_user_progress(
                &pool,
                &UserProgressCreate {
                    user_id: user,
                    track_id: t.id,
                    current_unit_id: (i % 2 == 0).then(|| t.units[0].id),
                    started_at: Utc::now(),
                },
            )
            .await
            .unwrap();
        }
        learners.push(user);
    }
    learners.sort();
    let track_id = track.id.to_string();

    // pages of 3 over 7 rows: the last page is short
    let ndjson = export(&pool, &["--track", &track_id, "--page-size", "3"]).await;
    assert!(
        ndjson.status.success(),
        "{}",
        String::from_utf8_lossy(&ndjson.stderr)
    );
    let rows: Vec<Value> = String::from_utf8(ndjson.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let users: Vec<Uuid> = rows
        .iter()
        .map(|row| row["user_id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(
        users, learners,
        "each of the track's learners once, in order"
    );
    assert!(rows.iter().all(|row| row["track_id"] == track_id.as_str()));
    let summary = String::from_utf8_lossy(&ndjson.stderr);
    assert!(
        summary.contains(&format!("export: 7 rows of track {track_id}")),
        "{summary}"
    );
    let since = summary
        .split("--since ")
        .nth(1)
        .expect("the summary names the next --since")
        .trim()
        .to_owned();

    let csv = export(&pool, &["--track", &track_id, "--format", "csv"]).await;
    let text = String::from_utf8(csv.stdout).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap(),
        learning_progress::ops::export::CSV_HEADER
    );
    let first: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(first.len(), 11);
    assert_eq!(first[0], learners[0].to_string());
    assert_eq!(first[2], "in_progress");
    assert_eq!(first[5], "3", "total units");
    assert_eq!(lines.count(), 6);

    // the `since` printed is five minutes before the export: rows changed since then repeat
    let again = export(&pool, &["--track", &track_id, "--since", &since]).await;
    assert!(again.status.success());
    assert_eq!(String::from_utf8_lossy(&again.stdout).lines().count(), 7);
    let later = (Utc::now() + chrono::TimeDelta::hours(1)).to_rfc3339();
    let none = export(&pool, &["--track", &track_id, "--since", &later]).await;
    assert_eq!(String::from_utf8_lossy(&none.stdout).lines().count(), 0);

    let unknown = export(&pool, &["--track", &Uuid::new_v4().to_string()]).await;
    assert!(!unknown.status.success());
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("no track"),
        "{}",
        String::from_utf8_lossy(&unknown.stderr)
    );
    let malformed = export(&pool, &["--track", &track_id, "--since", "yesterday"]).await;
    assert!(!malformed.status.success());
}
