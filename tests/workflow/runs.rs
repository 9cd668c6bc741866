//! One gapless seq across runs: continue-as-new, and a new run of the same workflow id after
//! the previous one died, with its commands applied or not yet.

use super::*;

/// A path longer than one run crosses continue-as-new boundaries: the state carries over,
/// the seq stays gapless and nothing is published twice.
#[sqlx::test]
async fn a_path_across_continue_as_new_keeps_one_gapless_seq(pool: PgPool) {
    let track = create_track(&pool, "Long path", 5).await.unwrap();
    let units: Vec<Uuid> = track.units.iter().map(|u| u.id).collect();
    let user = Uuid::new_v4();
    with_worker(pool.clone(), |client, temporal, nats, js| async move {
        let (stop, applier) = spawn_applier(&js, &pool, &nats);
        let input = LearningPathInput {
            commands_per_run: 2,
            ..LearningPathInput::new(user, track.id, units.clone())
        };
        client::start(&client, &temporal, input).await.unwrap();
        for (i, unit) in units.iter().enumerate() {
            client::signal_unit_completed(&client, user, track.id, *unit)
                .await
                .unwrap();
            // one signal at a time, so each run publishes exactly its two commands
            let published = i as u64 + 2;
            eventually(WAIT, "the unit's command on the stream", || async {
                (common::ever_stored(&js, &nats.commands_stream).await >= published).then_some(())
            })
            .await;
        }
        let outcome = tokio::time::timeout(WAIT, client::result(&client, user, track.id))
            .await
            .expect("the last run ends the workflow")
            .unwrap();
        // start + u1 | u2 + u3 | u4 + u5 + completed
        assert_eq!(outcome.runs, 3, "{outcome:?}");
        assert_eq!(outcome.seq, 7);
        assert_eq!(outcome.completed_unit_ids, units);
        assert!(outcome.unreconciled_seqs.is_empty(), "{outcome:?}");

        // the applier takes commands off the stream: the ledger shows what was published
        assert_eq!(common::ever_stored(&js, &nats.commands_stream).await, 7);
        let id = workflow_id(user, track.id);
        let expected: Vec<(i64, Uuid)> = (1..=7).map(|seq| (seq, command_id(&id, seq))).collect();
        let seqs = eventually(WAIT, "all seven commands in the ledger", || async {
            let seqs = ledger_seqs(&pool, user, track.id).await;
            (seqs.len() >= 7).then_some(seqs)
        })
        .await;
        assert_eq!(seqs, expected);
        let row = eventually(WAIT, "the projection at version 7", || async {
            get_user_progress(&pool, user, track.id)
                .await
                .unwrap()
                .filter(|row| row.version == 7)
        })
        .await;
        assert_eq!(row.status, Status::Completed);
        assert_eq!(row.completed_unit_ids.len(), units.len());
        stop.cancel();
        applier.await.unwrap().unwrap();
    })
    .await;
}

/// A learner whose workflow died mid-path starts again under the same id: the new run
/// resumes the seq and the completed units from the projection instead of starting over.
#[sqlx::test]
async fn a_new_run_of_the_same_id_resumes_from_the_projection(pool: PgPool) {
    use temporalio_client::WorkflowTerminateOptions;
    let track = create_track(&pool, "Resumed path", 4).await.unwrap();
    let units: Vec<Uuid> = track.units.iter().map(|u| u.id).collect();
    let user = Uuid::new_v4();
    with_worker(pool.clone(), |client, temporal, nats, js| async move {
        let (stop, applier) = spawn_applier(&js, &pool, &nats);
        let input = LearningPathInput::new(user, track.id, units.clone());
        let id = client::start(&client, &temporal, input.clone())
            .await
            .unwrap();
        for unit in &units[..2] {
            client::complete_unit(&client, user, track.id, *unit)
                .await
                .unwrap();
        }
        eventually(WAIT, "the first run's three commands applied", || async {
            let seqs = ledger_seqs(&pool, user, track.id).await;
            (seqs.len() == 3).then_some(())
        })
        .await;
        client
            .get_workflow_handle::<LearningPathWorkflow>(id.clone())
            .terminate(WorkflowTerminateOptions::builder().reason("test").build())
            .await
            .unwrap();

        client::start(&client, &temporal, input).await.unwrap();
        let again = client::complete_unit(&client, user, track.id, units[1]).await;
        assert!(
            matches!(again, Err(ClientError::Rejected { .. })),
            "a unit the projection has is already completed: {again:?}"
        );
        for unit in &units[2..] {
            client::complete_unit(&client, user, track.id, *unit)
                .await
                .unwrap();
        }
        let outcome = tokio::time::timeout(WAIT, client::result(&client, user, track.id))
            .await
            .expect("the second run ends the workflow")
            .unwrap();
        // seq 1–3 from the first run; track_started, two units and completion from the second
        assert_eq!(outcome.seq, 7, "{outcome:?}");
        assert!(outcome.unreconciled_seqs.is_empty(), "{outcome:?}");

        let expected: Vec<(i64, Uuid)> = (1..=7).map(|seq| (seq, command_id(&id, seq))).collect();
        let seqs = eventually(WAIT, "all seven commands in the ledger", || async {
            let seqs = ledger_seqs(&pool, user, track.id).await;
            (seqs.len() >= 7).then_some(seqs)
        })
        .await;
        assert_eq!(seqs, expected, "one gapless seq across both runs");
        let row = get_user_progress(&pool, user, track.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.status, Status::Completed);
        let mut completed = units.clone();
        completed.sort();
        assert_eq!(row.completed_unit_ids, completed);
        stop.cancel();
        applier.await.unwrap().unwrap();
    })
    .await;
}

/// A run started while the previous run's commands are still unapplied continues after them:
/// it must not allocate their seqs again, whose ids JetStream and the ledger would take for
/// duplicates of the old commands.
#[sqlx::test]
async fn a_new_run_never_reuses_the_seqs_of_unapplied_commands(pool: PgPool) {
    use temporalio_client::WorkflowTerminateOptions;
    let track = create_track(&pool, "Unapplied path", 3).await.unwrap();
    let units: Vec<Uuid> = track.units.iter().map(|u| u.id).collect();
    let user = Uuid::new_v4();
    with_worker(pool.clone(), |client, temporal, nats, js| async move {
        // no applier yet: the first run's commands wait on the stream
        let input = LearningPathInput::new(user, track.id, units.clone());
        let id = client::start(&client, &temporal, input.clone())
            .await
            .unwrap();
        client::complete_unit(&client, user, track.id, units[0])
            .await
            .unwrap();
        eventually(WAIT, "the first run's two commands stored", || async {
            (stream_len(&js, &nats.commands_stream).await >= 2).then_some(())
        })
        .await;
        client
            .get_workflow_handle::<LearningPathWorkflow>(id.clone())
            .terminate(WorkflowTerminateOptions::builder().reason("test").build())
            .await
            .unwrap();

        client::start(&client, &temporal, input).await.unwrap();
        client::complete_unit(&client, user, track.id, units[1])
            .await
            .unwrap();
        eventually(WAIT, "the second run's two commands stored too", || async {
            (stream_len(&js, &nats.commands_stream).await >= 4).then_some(())
        })
        .await;

        let (stop, applier) = spawn_applier(&js, &pool, &nats);
        let row = eventually(WAIT, "both runs' units in the projection", || async {
            get_user_progress(&pool, user, track.id)
                .await
                .unwrap()
                .filter(|row| row.completed_unit_ids.len() == 2)
        })
        .await;
        let mut both = vec![units[0], units[1]];
        both.sort();
        assert_eq!(row.completed_unit_ids, both);
        let expected: Vec<(i64, Uuid)> = (1..=4).map(|seq| (seq, command_id(&id, seq))).collect();
        assert_eq!(ledger_seqs(&pool, user, track.id).await, expected);
        assert_eq!(stream_len(&js, &nats.dlq_stream).await, 0);
        stop.cancel();
        applier.await.unwrap().unwrap();
    })
    .await;
}
