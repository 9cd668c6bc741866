//! The catalogue changes themselves: adding, removing, moving and reopening units, what each
//! does to every learner on the track, and the input refused.

use crate::common::api::TestApi;

use super::*;

#[sqlx::test]
async fn adding_then_removing_units_rewrites_every_learner_and_announces_each(pool: PgPool) {
    let (nats, js) = isolated_nats().await;
    let track = create_track(&pool, "Changing", 3).await.unwrap();
    let other = create_track(&pool, "Untouched", 3).await.unwrap();
    let units: Vec<Uuid> = track.units.iter().map(|u| u.id).collect();
    let _applier = start_applier(&js, &pool, &nats, ApplierConfig::default());
    let (none, some, all) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let before_none = drive(&pool, &js, &nats, none, &track, path(&track, 0)).await;
    let before_some = drive(&pool, &js, &nats, some, &track, path(&track, 2)).await;
    let before_all = drive(&pool, &js, &nats, all, &track, path(&track, 3)).await;
    let elsewhere = drive(&pool, &js, &nats, all, &other, path(&other, 1)).await;
    assert_eq!(before_all.status, Status::Completed);
    let applied_events =
        before_none.version + before_some.version + before_all.version + elsewhere.version;
    eventually(WAIT, "the applier's events", || async {
        (stream_len(&js, &nats.events_stream).await == applied_events as u64).then_some(())
    })
    .await;

    let api = TestApi::start(&pool, &nats).await;
    // cached before the change: only the change's events can refresh them
    assert_eq!(api.progress(all, track.id).await["percent_complete"], 100.0);
    assert_eq!(api.progress(some, track.id).await["total_units"], 3);

    let track_id = track.id.to_string();
    let added = change(
        &pool,
        &nats,
        &[
            "tracks",
            "add-unit",
            "--track",
            &track_id,
            "--title",
            "Bonus",
            "--position",
            "1",
        ],
    )
    .await;
    assert_eq!(added["learners"], 3, "{added}");
    assert_eq!(added["events_published"], 3);
    assert_eq!(added["units_version"], 1);
    assert_eq!(added["reopened"], 0);
    let bonus: Uuid = serde_json::from_value(added["unit_id"].clone()).unwrap();
    assert_eq!(
        serde_json::from_value::<Vec<Uuid>>(added["unit_ids"].clone()).unwrap(),
        [units[0], bonus, units[1], units[2]]
    );

    let (after_none, after_some, after_all) = (
        progress(&pool, none, track.id).await,
        progress(&pool, some, track.id).await,
        progress(&pool, all, track.id).await,
    );
    assert_eq!(after_none.version, before_none.version + 1);
    assert_eq!(after_some.version, before_some.version + 1);
    assert_eq!(after_all.version, before_all.version + 1);
    // a completed track stays completed, at the same time; nothing else of it changes
    assert_eq!(after_all.status, Status::Completed);
    assert_eq!(after_all.completed_at, before_all.completed_at);
    assert_eq!(after_all.completed_unit_ids, before_all.completed_unit_ids);
    assert_eq!(after_some.current_unit_id, before_some.current_unit_id);
    assert_eq!(progress(&pool, all, other.id).await, elsewhere);

    let announced = events(&js, &nats, applied_events as usize + 3).await;
    let changed: Vec<&ProgressEvent> = announced
        .iter()
        .filter(|e| e.kind == "track_changed")
        .collect();
    assert_eq!(changed.len(), 3);
    for (user, version, percent) in [
        (none, after_none.version, 0.0),
        (some, after_some.version, 50.0),
        (all, after_all.version, 75.0),
    ] {
        let event = changed
            .iter()
            .find(|e| e.progress.progress.user_id == user)
            .expect("an event per learner");
        assert_eq!(event.event_id, track_changes::event_id(track.id, 1, user));
        assert_eq!(event.version, version);
        assert_eq!(event.progress.total_units, 4);
        assert_eq!(event.progress.percent_complete, percent);
    }
    // the API follows the events, also for learners it had cached
    eventually(WAIT, "the API serving the new views", || async {
        let all_view = api.progress(all, track.id).await;
        let some_view = api.progress(some, track.id).await;
        (all_view["percent_complete"] == 75.0
            && all_view["status"] == "completed"
            && some_view["percent_complete"] == 50.0
            && some_view["version"] == after_some.version)
            .then_some(())
    })
    .await;

    // removing a completed unit: looked at first, then done
    let removed_unit = units[0].to_string();
    let remove = [
        "tracks",
        "remove-unit",
        "--track",
        &track_id,
        "--unit",
        &removed_unit,
    ];
    let events_before = stream_len(&js, &nats.events_stream).await;
    let dry = cli(&pool, &nats, &[&remove[..], &["--dry-run"]].concat()).await;
    assert!(dry.status.success(), "{}", stderr(&dry));
    assert!(
        stdout(&dry).contains("dry run, nothing changed")
            && stdout(&dry).contains(
                "3 learners rewritten (2 completions dropped, 0 reopened, 1 current units moved)"
            ),
        "{}",
        stdout(&dry)
    );
    assert_eq!(unit_count(&pool, track.id).await, 4);
    assert_eq!(progress(&pool, some, track.id).await, after_some);
    assert_eq!(stream_len(&js, &nats.events_stream).await, events_before);

    let removed = change(&pool, &nats, &remove).await;
    assert_eq!(removed["learners"], 3);
    assert_eq!(removed["completions_dropped"], 2);
    assert_eq!(unit_count(&pool, track.id).await, 3);
    let (none_now, some_now, all_now) = (
        progress(&pool, none, track.id).await,
        progress(&pool, some, track.id).await,
        progress(&pool, all, track.id).await,
    );
    // the learner on the removed unit moves to the first open one
    assert_eq!(none_now.current_unit_id, Some(bonus));
    assert_eq!(some_now.completed_unit_ids, vec![units[1]]);
    assert_eq!(some_now.started_at, before_some.started_at);
    assert_eq!(all_now.status, Status::Completed);
    assert_eq!(all_now.completed_at, before_all.completed_at);
    assert_eq!(all_now.version, after_all.version + 1);
    // the ledger keeps the removed unit's completion
    let kept: i64 = sqlx::query_scalar(
        "select count(*) from progress_ledger where payload->>'unit_id' = $1 and outcome = 'applied'",
    )
    .bind(&removed_unit)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(kept, 2);
    eventually(
        WAIT,
        "the API serving the views after the removal",
        || async {
            let some_view = api.progress(some, track.id).await;
            let all_view = api.progress(all, track.id).await;
            (some_view["percent_complete"] == 33.33
                && some_view["total_units"] == 3
                && all_view["percent_complete"] == 66.67)
                .then_some(())
        },
    )
    .await;

    // moving a unit changes no learner's view: no event, no new version
    let moved_unit = units[2].to_string();
    let moved = change(
        &pool,
        &nats,
        &[
            "tracks",
            "move-unit",
            "--track",
            &track_id,
            "--unit",
            &moved_unit,
            "--position",
            "0",
        ],
    )
    .await;
    assert_eq!(moved["learners"], 0);
    let order: Vec<Uuid> = learning_progress::db::tracks::unit_ids(&pool, track.id)
        .await
        .unwrap();
    assert_eq!(order, [units[2], bonus, units[1]]);
    assert_eq!(progress(&pool, some, track.id).await, some_now);
    let unannounced: i64 =
        sqlx::query_scalar("select count(*) from track_change_events where not announced")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(unannounced, 0);
    delete_streams(&js, &nats).await;
}

#[sqlx::test]
async fn reopen_sets_completed_learners_back_on_the_new_unit(pool: PgPool) {
    let (nats, js) = isolated_nats().await;
    let track = create_track(&pool, "Reopened", 2).await.unwrap();
    let _applier = start_applier(&js, &pool, &nats, ApplierConfig::default());
    let done = Uuid::new_v4();
    let before = drive(&pool, &js, &nats, done, &track, path(&track, 2)).await;
    let added = change(
        &pool,
        &nats,
        &[
            "tracks",
            "add-unit",
            "--track",
            &track.id.to_string(),
            "--assessment",
            "--reopen",
        ],
    )
    .await;
    assert_eq!(added["reopened"], 1);
    let unit: Uuid = serde_json::from_value(added["unit_id"].clone()).unwrap();
    let kind: String = sqlx::query_scalar("select kind from track_units where id = $1")
        .bind(unit)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(kind, "assessment");
    let after = progress(&pool, done, track.id).await;
    assert_eq!(after.status, Status::InProgress);
    assert_eq!(after.completed_at, None);
    assert_eq!(after.current_unit_id, Some(unit));
    assert_eq!(after.completed_unit_ids, before.completed_unit_ids);
    delete_streams(&js, &nats).await;
}

#[sqlx::test]
async fn bad_input_is_refused_with_a_message_and_changes_nothing(pool: PgPool) {
    let (nats, js) = isolated_nats().await;
    let track = create_track(&pool, "Refusals", 2).await.unwrap();
    let single = create_track(&pool, "Single", 1).await.unwrap();
    let (track_id, unit) = (track.id.to_string(), track.units[0].id.to_string());
    let stranger = Uuid::new_v4().to_string();
    let refused: [(&[&str], &str); 7] = [
        (
            &["tracks", "add-unit", "--track", &stranger],
            "does not exist",
        ),
        (
            &[
                "tracks",
                "remove-unit",
                "--track",
                &stranger,
                "--unit",
                &unit,
            ],
            "does not exist",
        ),
        (
            &[
                "tracks",
                "remove-unit",
                "--track",
                &track_id,
                "--unit",
                &stranger,
            ],
            "is not a unit of track",
        ),
        (
            &[
                "tracks",
                "add-unit",
                "--track",
                &track_id,
                "--position",
                "3",
            ],
            "position 3 is out of range: with 2 units it must be between 0 and 2",
        ),
        (
            &[
                "tracks",
                "move-unit",
                "--track",
                &track_id,
                "--unit",
                &unit,
                "--position",
                "2",
            ],
            "position 2 is out of range: with 2 units it must be between 0 and 1",
        ),
        (
            &[
                "tracks",
                "remove-unit",
                "--track",
                &single.id.to_string(),
                "--unit",
                &single.units[0].id.to_string(),
            ],
            "the track's only unit",
        ),
        (
            &["tracks", "add-unit", "--track", &track_id, "--title", " "],
            "title must not be empty",
        ),
    ];
    for (args, message) in refused {
        let output = cli(&pool, &nats, args).await;
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        let text = stderr(&output);
        assert!(
            text.starts_with("error: ") && text.contains(message),
            "{args:?}: {text}"
        );
        assert!(!text.contains("panicked"), "{text}");
    }
    // not a uuid: the parser refuses it, naming the flag
    let output = cli(
        &pool,
        &nats,
        &["tracks", "add-unit", "--track", "rust-basics"],
    )
    .await;
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("--track"), "{}", stderr(&output));
    let changes: i64 = sqlx::query_scalar("select count(*) from track_changes")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(changes, 0);
    assert_eq!(unit_count(&pool, track.id).await, 2);

    for sub in ["add-unit", "remove-unit", "move-unit", "show", "notify"] {
        let help = cli(&pool, &nats, &["tracks", sub, "--help"]).await;
        assert!(help.status.success());
        assert!(
            stdout(&help).contains("[env: TRACK_ID="),
            "{sub}: {}",
            stdout(&help)
        );
    }
    let shown = cli(&pool, &nats, &["tracks", "show", "--track", &track_id]).await;
    assert!(shown.status.success(), "{}", stderr(&shown));
    let shown: Value = serde_json::from_str(&stdout(&shown)).unwrap();
    assert_eq!(shown["units_version"], 0);
    assert_eq!(shown["units"].as_array().unwrap().len(), 2);
    delete_streams(&js, &nats).await;
}
