//! Learners whose learning-path workflow runs while their track changes: the running path is
//! told, and one started with the units before a change takes the catalogue's.

use std::future::Future;

use learning_progress::workflow::client::{self, ClientError};
use learning_progress::workflow::{self, TemporalConfig};

use super::*;

/// Runs a worker and an applier while `body` runs.
async fn with_worker<F, Fut>(pool: PgPool, body: F)
where
    F: FnOnce(temporalio_client::Client, TemporalConfig, NatsConfig, jetstream::Context) -> Fut,
    Fut: Future<Output = ()>,
{
    let db = pool.clone();
    common::temporal::with_worker(pool, |client, temporal, nats, js| async move {
        let _applier = start_applier(&js, &db, &nats, ApplierConfig::default());
        body(client, temporal, nats, js).await;
    })
    .await;
}

#[sqlx::test]
async fn a_running_path_accepts_an_added_unit_and_refuses_a_removed_one(pool: PgPool) {
    let track = create_track(&pool, "Running", 3).await.unwrap();
    let units: Vec<Uuid> = track.units.iter().map(|u| u.id).collect();
    let user = Uuid::new_v4();
    let db = pool.clone();
    with_worker(pool.clone(), |temporal, config, nats, js| async move {
        client::start_track(&temporal, &config, &db, user, track.id)
            .await
            .unwrap();
        client::complete_unit(&temporal, user, track.id, units[0])
            .await
            .unwrap();
        eventually(WAIT, "the learner's row", || async {
            get_user_progress(&db, user, track.id)
                .await
                .unwrap()
                .filter(|p| p.completed_unit_ids == [units[0]])
        })
        .await;

        let track_id = track.id.to_string();
        let added = change(&db, &nats, &["tracks", "add-unit", "--track", &track_id]).await;
        assert_eq!(added["paths"]["signalled"], 1, "{added}");
        let bonus: Uuid = serde_json::from_value(added["unit_id"].clone()).unwrap();
        let removed_unit = units[1].to_string();
        let removed = change(
            &db,
            &nats,
            &[
                "tracks",
                "remove-unit",
                "--track",
                &track_id,
                "--unit",
                &removed_unit,
            ],
        )
        .await;
        assert_eq!(removed["paths"]["signalled"], 1, "{removed}");

        match client::complete_unit(&temporal, user, track.id, units[1]).await {
            Err(ClientError::Rejected { reason, .. }) => {
                assert!(reason.contains("is not part of track"), "{reason}")
            }
            other => panic!("a removed unit was not refused: {other:?}"),
        }
        let view = client::complete_unit(&temporal, user, track.id, bonus)
            .await
            .unwrap();
        assert_eq!(view.unit_ids, [units[0], units[2], bonus]);
        client::complete_unit(&temporal, user, track.id, units[2])
            .await
            .unwrap();
        let done = eventually(WAIT, "the track completed in the projection", || async {
            get_user_progress(&db, user, track.id)
                .await
                .unwrap()
                .filter(|p| p.status == Status::Completed)
        })
        .await;
        let mut expected = vec![units[0], units[2], bonus];
        expected.sort();
        assert_eq!(done.completed_unit_ids, expected);
        // nothing the path published was refused
        assert_eq!(stream_len(&js, &nats.dlq_stream).await, 0);
    })
    .await;
}

#[sqlx::test]
async fn a_path_whose_open_units_are_all_removed_completes_the_track(pool: PgPool) {
    let track = create_track(&pool, "Shortened", 3).await.unwrap();
    let units: Vec<Uuid> = track.units.iter().map(|u| u.id).collect();
    let user = Uuid::new_v4();
    let db = pool.clone();
    with_worker(pool.clone(), |temporal, config, nats, _js| async move {
        client::start_track(&temporal, &config, &db, user, track.id)
            .await
            .unwrap();
        client::complete_unit(&temporal, user, track.id, units[0])
            .await
            .unwrap();
        client::complete_unit(&temporal, user, track.id, units[1])
            .await
            .unwrap();
        eventually(WAIT, "two units in the projection", || async {
            get_user_progress(&db, user, track.id)
                .await
                .unwrap()
                .filter(|p| p.completed_unit_ids.len() == 2)
        })
        .await;
        let last = units[2].to_string();
        let removed = change(
            &db,
            &nats,
            &[
                "tracks",
                "remove-unit",
                "--track",
                &track.id.to_string(),
                "--unit",
                &last,
            ],
        )
        .await;
        assert_eq!(removed["paths"]["signalled"], 1, "{removed}");
        let done = eventually(WAIT, "the path completing the track", || async {
            get_user_progress(&db, user, track.id)
                .await
                .unwrap()
                .filter(|p| p.status == Status::Completed)
        })
        .await;
        assert!(done.completed_at.is_some());
        let outcome = tokio::time::timeout(WAIT, client::result(&temporal, user, track.id))
            .await
            .expect("the path ended")
            .unwrap();
        assert!(outcome.unreconciled_seqs.is_empty());
    })
    .await;
}

#[sqlx::test]
async fn a_path_started_with_the_units_before_a_change_takes_the_catalogue_s(pool: PgPool) {
    let track = create_track(&pool, "Stale start", 2).await.unwrap();
    let stale: Vec<Uuid> = track.units.iter().map(|u| u.id).collect();
    let user = Uuid::new_v4();
    let db = pool.clone();
    with_worker(pool.clone(), |temporal, config, nats, _js| async move {
        // the caller read the units, then the track changed before the path started
        let added = change(
            &db,
            &nats,
            &["tracks", "add-unit", "--track", &track.id.to_string()],
        )
        .await;
        let unit: Uuid = serde_json::from_value(added["unit_id"].clone()).unwrap();
        let input = workflow::LearningPathInput::new(user, track.id, stale.clone());
        client::start(&temporal, &config, input).await.unwrap();
        let view = client::complete_unit(&temporal, user, track.id, unit)
            .await
            .unwrap();
        assert_eq!(view.unit_ids, [stale[0], stale[1], unit]);
    })
    .await;
}
