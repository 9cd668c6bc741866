//! The progress CRUD against real PostgreSQL, a fresh database per test.

use chrono::{DateTime, TimeDelta, Utc};
use learning_progress::db::progress::{
    AssessmentAttempt, CurrentUnit, ProgressError, UserProgressCreate, UserProgressUpdate,
    create_user_progress, delete_user_progress, get_user_progress, update_user_progress,
};
use learning_progress::db::tracks::{Track, create_track};
use learning_progress::model::{Action, Attempt, ProgressCommand, Status, UserProgress};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::PgPool;
use uuid::Uuid;

fn at(seconds: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(1_790_000_000, 0).unwrap() + TimeDelta::seconds(seconds)
}

async fn started(pool: &PgPool, units: usize) -> (Track, Uuid, UserProgress) {
    let track = create_track(pool, "Rust basics", units).await.unwrap();
    let user = Uuid::new_v4();
    let progress = create_user_progress(
        pool,
        &UserProgressCreate {
            user_id: user,
            track_id: track.id,
            current_unit_id: None,
            started_at: at(0),
        },
    )
    .await
    .unwrap();
    (track, user, progress)
}

fn completing(unit_id: Uuid, next: Option<Uuid>, seq: i64) -> UserProgressUpdate {
    UserProgressUpdate {
        completed_unit_ids_add: vec![unit_id],
        current_unit: Some(CurrentUnit { unit_id: next, seq }),
        occurred_at: Some(at(seq)),
        ..UserProgressUpdate::default()
    }
}

#[sqlx::test]
async fn creating_progress_returns_the_stored_row(pool: PgPool) {
    let track = create_track(&pool, "Rust basics", 3).await.unwrap();
    let user = Uuid::new_v4();
    let new = UserProgressCreate {
        user_id: user,
        track_id: track.id,
        current_unit_id: Some(track.units[0].id),
        started_at: at(0),
    };
    let created = create_user_progress(&pool, &new).await.unwrap();
    assert_eq!(created.status, Status::InProgress);
    assert_eq!(created.current_unit_id, Some(track.units[0].id));
    assert_eq!(created.version, 1);
    assert_eq!(created.started_at, at(0));
    assert_eq!(
        get_user_progress(&pool, user, track.id).await.unwrap(),
        Some(created)
    );
}

#[sqlx::test]
async fn creating_progress_twice_is_a_conflict(pool: PgPool) {
    let (track, user, _) = started(&pool, 3).await;
    let again = UserProgressCreate {
        user_id: user,
        track_id: track.id,
        current_unit_id: None,
        started_at: at(5),
    };
    let err = create_user_progress(&pool, &again).await.unwrap_err();
    assert!(
        matches!(err, ProgressError::AlreadyExists { .. }),
        "{err:?}"
    );
}

#[sqlx::test]
async fn creating_progress_with_a_foreign_unit_writes_nothing(pool: PgPool) {
    let track = create_track(&pool, "Rust basics", 3).await.unwrap();
    let other = create_track(&pool, "Go basics", 3).await.unwrap();
    let user = Uuid::new_v4();
    let new = UserProgressCreate {
        user_id: user,
        track_id: track.id,
        current_unit_id: Some(other.units[0].id),
        started_at: at(0),
    };
    let err = create_user_progress(&pool, &new).await.unwrap_err();
    assert!(
        matches!(err, ProgressError::ForeignUnit { unit_id, .. } if unit_id == other.units[0].id),
        "{err:?}"
    );
    assert_eq!(
        get_user_progress(&pool, user, track.id).await.unwrap(),
        None
    );
}

#[sqlx::test]
async fn creating_progress_on_an_unknown_track_is_an_error(pool: PgPool) {
    let new = UserProgressCreate {
        user_id: Uuid::new_v4(),
        track_id: Uuid::new_v4(),
        current_unit_id: None,
        started_at: at(0),
    };
    let err = create_user_progress(&pool, &new).await.unwrap_err();
    assert!(matches!(err, ProgressError::UnknownTrack(_)), "{err:?}");
}

#[sqlx::test]
async fn getting_progress_that_does_not_exist_is_none(pool: PgPool) {
    let track = create_track(&pool, "Rust basics", 3).await.unwrap();
    assert_eq!(
        get_user_progress(&pool, Uuid::new_v4(), track.id)
            .await
            .unwrap(),
        None
    );
}

#[sqlx::test]
async fn an_update_merges_units_attempts_and_the_current_unit(pool: PgPool) {
    let (track, user, _) = started(&pool, 3).await;
    let [u0, u1, u2] = [track.units[0].id, track.units[1].id, track.units[2].id];
    let after = update_user_progress(&pool, user, track.id, &completing(u0, Some(u1), 2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.completed_unit_ids, vec![u0]);
    assert_eq!(after.current_unit_id, Some(u1));
    assert_eq!((after.last_seq, after.version), (2, 2));

    let attempt = Attempt {
        score: 7.5,
        max_score: 10.0,
        passed: true,
        at: at(3),
    };
    let recording = UserProgressUpdate {
        assessment: Some(AssessmentAttempt {
            unit_id: u2,
            attempt_id: Uuid::from_u128(77),
            attempt: attempt.clone(),
        }),
        ..UserProgressUpdate::default()
    };
    let after = update_user_progress(&pool, user, track.id, &recording)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        after.assessment_results[&u2].attempts[&Uuid::from_u128(77)],
        attempt
    );
    assert_eq!(after.version, 3);

    // an older seq does not move the current unit back, but its unit still counts as completed
    let after = update_user_progress(&pool, user, track.id, &completing(u2, Some(u0), 1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.current_unit_id, Some(u1));
    let mut expected = vec![u0, u2];
    expected.sort();
    assert_eq!(after.completed_unit_ids, expected);
}

#[sqlx::test]
async fn an_update_that_changes_nothing_keeps_the_version(pool: PgPool) {
    let (track, user, _) = started(&pool, 3).await;
    let update = completing(track.units[0].id, Some(track.units[1].id), 2);
    let first = update_user_progress(&pool, user, track.id, &update)
        .await
        .unwrap()
        .unwrap();
    let second = update_user_progress(&pool, user, track.id, &update)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first, second);
}

#[sqlx::test]
async fn updating_progress_that_does_not_exist_is_none(pool: PgPool) {
    let track = create_track(&pool, "Rust basics", 3).await.unwrap();
    let update = completing(track.units[0].id, None, 1);
    assert_eq!(
        update_user_progress(&pool, Uuid::new_v4(), track.id, &update)
            .await
            .unwrap(),
        None
    );
}

#[sqlx::test]
async fn an_update_with_a_foreign_unit_writes_nothing(pool: PgPool) {
    let (track, user, before) = started(&pool, 3).await;
    let other = create_track(&pool, "Go basics", 3).await.unwrap();
    let mut update = completing(track.units[0].id, None, 2);
    update.completed_unit_ids_add.push(other.units[1].id);
    let err = update_user_progress(&pool, user, track.id, &update)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProgressError::ForeignUnit { unit_id, .. } if unit_id == other.units[1].id),
        "{err:?}"
    );
    assert_eq!(
        get_user_progress(&pool, user, track.id).await.unwrap(),
        Some(before)
    );
}

#[sqlx::test]
async fn fifty_concurrent_updates_of_one_row_lose_nothing(pool: PgPool) {
    let (track, user, _) = started(&pool, 50).await;
    let tasks: Vec<_> = track
        .units
        .iter()
        .enumerate()
        .map(|(i, unit)| {
            let (pool, unit_id, track_id) = (pool.clone(), unit.id, track.id);
            tokio::spawn(async move {
                update_user_progress(
                    &pool,
                    user,
                    track_id,
                    &completing(unit_id, Some(unit_id), i as i64 + 1),
                )
                .await
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap().unwrap();
    }
    let row = get_user_progress(&pool, user, track.id)
        .await
        .unwrap()
        .unwrap();
    let mut all: Vec<Uuid> = track.units.iter().map(|u| u.id).collect();
    all.sort();
    assert_eq!(row.completed_unit_ids, all);
    assert_eq!(row.version, 51, "every update changed the row once");
    assert_eq!(row.last_seq, 50);
    assert_eq!(
        row.current_unit_id,
        Some(track.units[49].id),
        "the highest seq wins"
    );
}

#[sqlx::test]
async fn deleting_progress_reports_whether_there_was_any(pool: PgPool) {
    let (track, user, _) = started(&pool, 3).await;
    assert!(delete_user_progress(&pool, user, track.id).await.unwrap());
    assert_eq!(
        get_user_progress(&pool, user, track.id).await.unwrap(),
        None
    );
    assert!(!delete_user_progress(&pool, user, track.id).await.unwrap());
}

/// Random command sequences through the SQL merge give the same row as the pure merge.
#[sqlx::test]
async fn the_sql_merge_agrees_with_the_pure_merge(pool: PgPool) {
    let track = create_track(&pool, "Differential", 6).await.unwrap();
    let units: Vec<Uuid> = track.units.iter().map(|u| u.id).collect();
    let mut rng = StdRng::seed_from_u64(0x5eed);
    for learner in 0..40 {
        let user = Uuid::new_v4();
        let created = create_user_progress(
            &pool,
            &UserProgressCreate {
                user_id: user,
                track_id: track.id,
                current_unit_id: None,
                started_at: at(1_000),
            },
        )
        .await
        .unwrap();
        let mut expected = created.clone();
        let count = rng.random_range(1..20);
        let commands: Vec<ProgressCommand> = (0..count)
            .map(|_| {
                let seq = rng.random_range(1..30);
                let unit = |rng: &mut StdRng| units[rng.random_range(0..units.len())];
                let action = match rng.random_range(0..4) {
                    0 => Action::TrackStarted {
                        current_unit_id: rng.random_bool(0.8).then(|| unit(&mut rng)),
                    },
                    1 => Action::UnitCompleted {
                        unit_id: unit(&mut rng),
                        next_unit_id: rng.random_bool(0.8).then(|| unit(&mut rng)),
                    },
                    2 => {
                        let attempt = rng.random_range(0..8u128);
                        Action::AssessmentRecorded {
                            unit_id: units[attempt as usize % units.len()],
                            attempt_id: Uuid::from_u128(attempt),
                            score: attempt as f64 * 1.25,
                            max_score: 10.0,
                            passed: attempt > 4,
                        }
                    }
                    _ => Action::TrackCompleted {},
                };
                ProgressCommand {
                    command_id: Uuid::new_v4(),
                    user_id: user,
                    track_id: track.id,
                    seq,
                    occurred_at: at(seq * 7 % 50),
                    action,
                }
            })
            .collect();
        let mut stored = created;
        for command in &commands {
            expected.apply(command, at(5_000));
            stored = update_user_progress(&pool, user, track.id, &command.into())
                .await
                .unwrap()
                .unwrap();
        }
        assert!(
            stored.content_eq(&expected),
            "learner {learner}: SQL {stored:#?}\npure {expected:#?}"
        );
        assert_eq!(
            stored.version, expected.version,
            "learner {learner}: versions differ"
        );
    }
}
