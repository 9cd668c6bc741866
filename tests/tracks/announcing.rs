//! A change's events still reach the stream when the process that made it dies before
//! publishing them, or the applier dies between its commit and its events.

use learning_progress::applier::{self, Seams};
use tokio_util::sync::CancellationToken;

use super::*;

#[sqlx::test]
async fn events_a_change_could_not_publish_are_published_by_the_applier_sweep(pool: PgPool) {
    let (nats, js) = isolated_nats().await;
    let track = create_track(&pool, "Swept", 2).await.unwrap();
    let applier = start_applier(&js, &pool, &nats, ApplierConfig::default());
    let learners: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    for user in &learners {
        drive(&pool, &js, &nats, *user, &track, path(&track, 1)).await;
    }
    drop(applier);
    let events_before = stream_len(&js, &nats.events_stream).await;
    // committed, then the process "dies" before publishing
    let change = Change::AddUnit {
        title: "Late".to_owned(),
        position: None,
        assessment: false,
    };
    let applied =
        track_changes::apply_change(&pool, track.id, &change, false, false, &mut |_, _| {})
            .await
            .unwrap();
    assert_eq!(applied.learners, 3);
    assert_eq!(stream_len(&js, &nats.events_stream).await, events_before);
    let lag = learning_progress::ops::status::lag(&js, &pool, &nats, "progress-applier")
        .await
        .unwrap();
    assert_eq!(
        lag.unannounced, 3,
        "status counts the change's events as unannounced"
    );

    let config = ApplierConfig {
        announce_after_secs: 0,
        ..ApplierConfig::default()
    };
    let _applier = start_applier(&js, &pool, &nats, config);
    eventually(WAIT, "the sweep publishing the change's events", || async {
        let unannounced: i64 =
            sqlx::query_scalar("select count(*) from track_change_events where not announced")
                .fetch_one(&pool)
                .await
                .unwrap();
        (unannounced == 0).then_some(())
    })
    .await;
    let all = events(&js, &nats, events_before as usize + 3).await;
    let swept: Vec<Uuid> = all
        .iter()
        .filter(|e| e.kind == "track_changed")
        .map(|e| e.event_id)
        .collect();
    assert_eq!(swept.len(), 3);
    for user in &learners {
        assert!(swept.contains(&track_changes::event_id(track.id, 1, *user)));
    }
    delete_streams(&js, &nats).await;
}

/// An applier that dies between its commit and its events re-announces, on the redelivery, the
/// snapshot it committed: built from the learner's snapshot after the track change and the
/// commands after it (applied without the removed unit, as the original was), with the
/// version and unit count the original had.
#[sqlx::test]
async fn an_event_re_announced_after_a_crash_includes_the_track_change_before_it(pool: PgPool) {
    let (nats, js) = isolated_nats().await;
    let track = create_track(&pool, "Crash", 3).await.unwrap();
    let units: Vec<Uuid> = track.units.iter().map(|u| u.id).collect();
    let config = ApplierConfig {
        ack_wait_secs: 1,
        ..ApplierConfig::default()
    };
    let applier = start_applier(&js, &pool, &nats, config.clone());
    let user = Uuid::new_v4();
    drive(&pool, &js, &nats, user, &track, path(&track, 1)).await;
    drop(applier);
    let change = Change::RemoveUnit { unit: units[0] };
    track_changes::apply_change(&pool, track.id, &change, false, false, &mut |_, _| {})
        .await
        .unwrap();
    let changed = progress(&pool, user, track.id).await;
    assert!(changed.completed_unit_ids.is_empty());

    let seams = Seams::default();
    seams
        .halt_after_commit
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let crashed = tokio::spawn(applier::run(
        js.clone(),
        pool.clone(),
        nats.clone(),
        config.clone(),
        seams,
        CancellationToken::new(),
    ));
    let completed = ProgressCommand {
        command_id: Uuid::new_v4(),
        user_id: user,
        track_id: track.id,
        seq: 3,
        occurred_at: at(3),
        // written before the removal: its next unit is the removed one
        action: Action::UnitCompleted {
            unit_id: units[1],
            next_unit_id: Some(units[0]),
        },
    };
    let events_before = stream_len(&js, &nats.events_stream).await as usize;
    publish_command(&js, &nats, &completed)
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(crashed.await.unwrap().is_err(), "halted after its commit");
    let committed = progress(&pool, user, track.id).await;
    assert_eq!(committed.version, changed.version + 1);
    assert_eq!(committed.current_unit_id, None);

    let _applier = start_applier(&js, &pool, &nats, config);
    let all = events(&js, &nats, events_before + 1).await;
    let event = all.last().unwrap();
    assert_eq!(event.event_id, completed.command_id);
    assert_eq!(event.version, committed.version);
    assert_eq!(event.progress.progress, committed);
    assert_eq!(event.progress.total_units, 2);
    assert_eq!(event.progress.percent_complete, 50.0);
    delete_streams(&js, &nats).await;
}
