//! A change as part of a learner's history: `verify` and `rebuild` take it as such, and
//! `erase` removes what it kept of the learner.

use super::*;

/// `verify` merges a learner's ledger from the snapshot the last change of the track wrote, so
/// a track change is no difference, and `rebuild` leaves such a learner as it is.
#[sqlx::test]
async fn verify_and_rebuild_take_a_track_change_as_part_of_the_history(pool: PgPool) {
    use learning_progress::ops::rebuild::{self, Scope};
    let (nats, js) = isolated_nats().await;
    let track = create_track(&pool, "Verified", 3).await.unwrap();
    let units: Vec<Uuid> = track.units.iter().map(|u| u.id).collect();
    let _applier = start_applier(&js, &pool, &nats, ApplierConfig::default());
    let user = Uuid::new_v4();
    drive(&pool, &js, &nats, user, &track, path(&track, 2)).await;
    let change = Change::RemoveUnit { unit: units[0] };
    track_changes::apply_change(&pool, track.id, &change, false, false, &mut |_, _| {})
        .await
        .unwrap();
    // a command after the change, written before it: its next unit is the removed one
    let late = ProgressCommand {
        command_id: Uuid::new_v4(),
        user_id: user,
        track_id: track.id,
        seq: 4,
        occurred_at: at(4),
        action: Action::UnitCompleted {
            unit_id: units[2],
            next_unit_id: Some(units[0]),
        },
    };
    publish_command(&js, &nats, &late)
        .await
        .unwrap()
        .await
        .unwrap();
    let row = eventually(WAIT, "the late command applied", || async {
        Some(progress(&pool, user, track.id).await).filter(|p| p.last_seq == 4)
    })
    .await;
    let report = rebuild::verify(&pool, Scope::default(), 10, &mut |_| {})
        .await
        .unwrap();
    assert!(report.differences.is_empty(), "{:?}", report.differences);
    let rebuilt = rebuild::rebuild(&pool, None, Scope::default(), 10, false, &mut |_| {})
        .await
        .unwrap();
    assert_eq!(rebuilt.rewritten, 0);
    assert_eq!(progress(&pool, user, track.id).await, row);
    delete_streams(&js, &nats).await;
}

/// Erasing a learner also removes the snapshots track changes kept of them.
#[sqlx::test]
async fn erasing_a_learner_removes_their_track_change_events(pool: PgPool) {
    let (nats, js) = isolated_nats().await;
    let track = create_track(&pool, "Erased", 2).await.unwrap();
    let _applier = start_applier(&js, &pool, &nats, ApplierConfig::default());
    let (erased, kept) = (Uuid::new_v4(), Uuid::new_v4());
    for user in [erased, kept] {
        drive(&pool, &js, &nats, user, &track, path(&track, 1)).await;
    }
    change(
        &pool,
        &nats,
        &["tracks", "add-unit", "--track", &track.id.to_string()],
    )
    .await;
    let output = cli(
        &pool,
        &nats,
        &["erase", "--user", &erased.to_string(), "--yes"],
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    let left: Vec<Uuid> = sqlx::query_scalar("select user_id from track_change_events")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(left, [kept]);
    delete_streams(&js, &nats).await;
}
