//! Changes at scale: a track with thousands of learners, and a change while the applier
//! applies learners' commands.

use super::*;

/// A track with many learners is rewritten in batches, with progress lines, and every learner
/// gets exactly one event.
#[sqlx::test]
async fn a_large_track_is_rewritten_in_batches_with_progress_lines(pool: PgPool) {
    let (nats, js) = isolated_nats().await;
    let track = create_track(&pool, "Popular", 4).await.unwrap();
    let learners = 2_500;
    sqlx::query(
        "insert into user_progress (user_id, track_id, current_unit_id, completed_unit_ids)
         select gen_random_uuid(), $1, $2, array[$3::uuid] from generate_series(1, $4)",
    )
    .bind(track.id)
    .bind(track.units[1].id)
    .bind(track.units[0].id)
    .bind(learners)
    .execute(&pool)
    .await
    .unwrap();
    let events_before = stream_len(&js, &nats.events_stream).await;
    let output = cli(
        &pool,
        &nats,
        &[
            "tracks",
            "remove-unit",
            "--track",
            &track.id.to_string(),
            "--unit",
            &track.units[1].id.to_string(),
        ],
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    let progress_lines = stderr(&output);
    for line in [
        "learners rewritten 1000/2500 (",
        "learners rewritten 2500/2500 (",
        "events published 2500/2500 (",
        "paths told 2500/2500 (",
    ] {
        assert!(progress_lines.contains(line), "{line}: {progress_lines}");
    }
    let summary = stdout(&output);
    assert!(
        summary.contains("2500 learners rewritten (0 completions dropped, 0 reopened, 2500 current units moved); 2500 events published; 0 running paths told, 2500 in progress without one, 0 failed"),
        "{summary}"
    );
    assert_eq!(summary.lines().count(), 1);
    assert_eq!(
        stream_len(&js, &nats.events_stream).await,
        events_before + learners as u64
    );
    let moved: i64 = sqlx::query_scalar(
        "select count(*) from user_progress
         where track_id = $1 and current_unit_id = $2 and version = 2",
    )
    .bind(track.id)
    .bind(track.units[2].id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(moved, learners as i64);
    delete_streams(&js, &nats).await;
}

/// A change while the applier applies learners' commands: every learner ends rewritten exactly
/// once, no row keeps the removed unit, and no command is lost — those applied after the
/// change that still name the removed unit, as commands published just before it do, apply
/// without it.
#[sqlx::test]
async fn a_change_while_commands_are_applied_leaves_every_learner_consistent(pool: PgPool) {
    let (nats, js) = isolated_nats().await;
    let track = create_track(&pool, "Busy", 4).await.unwrap();
    let units: Vec<Uuid> = track.units.iter().map(|u| u.id).collect();
    let _applier = start_applier(&js, &pool, &nats, ApplierConfig::default());
    let learners: Vec<Uuid> = (0..40).map(|_| Uuid::new_v4()).collect();
    for user in &learners {
        drive(&pool, &js, &nats, *user, &track, path(&track, 0)).await;
    }
    // every learner completes the units in order while the last one is removed
    let publishing = {
        let (js, nats, learners, units, track) = (
            js.clone(),
            nats.clone(),
            learners.clone(),
            units.clone(),
            track.id,
        );
        tokio::spawn(async move {
            for (i, unit) in units.iter().enumerate() {
                for user in &learners {
                    let command = ProgressCommand {
                        command_id: Uuid::new_v4(),
                        user_id: *user,
                        track_id: track,
                        seq: i as i64 + 2,
                        occurred_at: at(i as i64 + 2),
                        action: Action::UnitCompleted {
                            unit_id: *unit,
                            next_unit_id: units.get(i + 1).copied(),
                        },
                    };
                    publish_command(&js, &nats, &command)
                        .await
                        .unwrap()
                        .await
                        .unwrap();
                }
            }
        })
    };
    eventually(WAIT, "some commands applied", || async {
        let applied: i64 = sqlx::query_scalar("select count(*) from progress_ledger where seq > 1")
            .fetch_one(&pool)
            .await
            .unwrap();
        (applied > 0).then_some(())
    })
    .await;
    let change = Change::RemoveUnit { unit: units[3] };
    let applied =
        track_changes::apply_change(&pool, track.id, &change, false, false, &mut |_, _| {})
            .await
            .unwrap();
    assert_eq!(applied.learners, learners.len());
    publishing.await.unwrap();
    let total = learners.len() as i64 * 5;
    eventually(WAIT, "every command decided", || async {
        let decided: i64 = sqlx::query_scalar("select count(*) from progress_ledger")
            .fetch_one(&pool)
            .await
            .unwrap();
        (decided == total).then_some(())
    })
    .await;
    let remaining = [units[0], units[1], units[2]];
    for user in &learners {
        let row = progress(&pool, *user, track.id).await;
        assert!(
            row.completed_unit_ids.iter().all(|u| remaining.contains(u)),
            "{row:?}"
        );
        assert!(
            row.current_unit_id.is_none_or(|u| remaining.contains(&u)),
            "{row:?}"
        );
        let applied: i64 = sqlx::query_scalar(
            "select count(*) from progress_ledger
             where user_id = $1 and outcome = 'applied'",
        )
        .bind(user)
        .fetch_one(&pool)
        .await
        .unwrap();
        // each applied command and the change made one version each
        assert_eq!(row.version, applied + 1, "{row:?}");
        let mut done = remaining.to_vec();
        done.sort();
        assert_eq!(
            row.completed_unit_ids, done,
            "the completions before the removed unit"
        );
        assert_eq!(row.current_unit_id, None);
    }
    let rejected: i64 =
        sqlx::query_scalar("select count(*) from progress_ledger where outcome = 'rejected'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(rejected, 0);
    assert_eq!(stream_len(&js, &nats.dlq_stream).await, 0);
    delete_streams(&js, &nats).await;
}
