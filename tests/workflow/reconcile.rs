//! Reconcile: commands the broker lost after acknowledging them are published again until
//! the projection has every one.

use super::*;

#[sqlx::test]
async fn a_command_lost_from_the_stream_is_republished_by_reconcile_and_applied(pool: PgPool) {
    let track = create_track(&pool, "Rust basics", 3).await.unwrap();
    let units: Vec<Uuid> = track.units.iter().map(|u| u.id).collect();
    let user = Uuid::new_v4();
    with_worker(pool.clone(), |client, temporal, nats, js| async move {
        // a short duplicate window, so a re-publish of the lost message is stored again soon
        let nats = NatsConfig {
            duplicate_window_secs: 1,
            ..nats
        };
        messaging::ensure_streams(&js, &nats).await.unwrap();
        let input = LearningPathInput {
            reconcile_rounds: Some(30),
            reconcile_interval_ms: 300,
            ..LearningPathInput::new(user, track.id, units.clone())
        };
        client::start(&client, &temporal, input).await.unwrap();
        for unit in &units {
            client::complete_unit(&client, user, track.id, *unit)
                .await
                .unwrap();
        }
        eventually(WAIT, "every command to be published", || async {
            (stream_len(&js, &nats.commands_stream).await >= 5).then_some(())
        })
        .await;
        let mut stream = js.get_stream(&nats.commands_stream).await.unwrap();
        let lost = decode_command(&stream.get_raw_message(3).await.unwrap().payload).unwrap();
        assert!(stream.delete_message(3).await.unwrap());

        // the applier starts only now, so it never saw the lost command
        let applier_shutdown = CancellationToken::new();
        let applier = tokio::spawn(applier::run(
            js.clone(),
            pool.clone(),
            nats.clone(),
            ApplierConfig {
                durable: format!("applier-{}", Uuid::new_v4().simple()),
                ..ApplierConfig::default()
            },
            Seams::default(),
            applier_shutdown.clone(),
        ));

        let outcome = tokio::time::timeout(WAIT, client::result(&client, user, track.id))
            .await
            .expect("the workflow reconciles and ends")
            .unwrap();
        assert_eq!(outcome.seq, 5);
        assert!(outcome.unreconciled_seqs.is_empty(), "{outcome:?}");

        // stored again after the five originals, and applied from there
        assert!(stream.info().await.unwrap().state.last_sequence > 5);
        let applied: String =
            sqlx::query_scalar("select outcome from progress_ledger where command_id = $1")
                .bind(lost.command_id)
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(applied, "applied");

        let progress = get_user_progress(&pool, user, track.id)
            .await
            .unwrap()
            .expect("the projection exists");
        assert_eq!(progress.status, Status::Completed);
        let mut completed = units.clone();
        completed.sort();
        assert_eq!(progress.completed_unit_ids, completed);
        assert_eq!(progress.last_seq, 5);

        applier_shutdown.cancel();
        applier.await.unwrap().unwrap();
    })
    .await;
}

/// A command the broker loses after acknowledging it is restored within seconds: reconcile
/// publishes it again as a new copy, which JetStream stores although the original's id is
/// still in the duplicate window (`make chaos`, broker-loss, found the repair waiting out the
/// whole two-minute window).
#[sqlx::test]
async fn a_lost_command_is_restored_without_waiting_out_the_duplicate_window(pool: PgPool) {
    let track = create_track(&pool, "Lost, soon found", 2).await.unwrap();
    let units: Vec<Uuid> = track.units.iter().map(|u| u.id).collect();
    let user = Uuid::new_v4();
    with_worker(pool.clone(), |client, temporal, nats, js| async move {
        assert!(
            Duration::from_secs(nats.duplicate_window_secs) > 2 * WAIT,
            "the window outlasts the wait below"
        );
        let input = LearningPathInput {
            quiet_period_ms: 300,
            reconcile_interval_ms: 100,
            ..LearningPathInput::new(user, track.id, units.clone())
        };
        client::start(&client, &temporal, input).await.unwrap();
        client::signal_unit_completed(&client, user, track.id, units[0])
            .await
            .unwrap();
        eventually(WAIT, "both commands stored", || async {
            (stream_len(&js, &nats.commands_stream).await >= 2).then_some(())
        })
        .await;
        let stream = js.get_stream(&nats.commands_stream).await.unwrap();
        assert!(
            stream.delete_message(2).await.unwrap(),
            "the broker loses seq 2"
        );
        let (stop, applier) = spawn_applier(&js, &pool, &nats);
        let row = eventually(WAIT, "the lost unit in the projection", || async {
            get_user_progress(&pool, user, track.id)
                .await
                .unwrap()
                .filter(|row| row.completed_unit_ids == vec![units[0]])
        })
        .await;
        assert_eq!(row.version, 2);
        stop.cancel();
        applier.await.unwrap().unwrap();
    })
    .await;
}

/// A command the broker loses while no applier runs outlives the quiet-period reconcile:
/// reconcile keeps going, with a growing wait, until the projection has it — the learner
/// need not come back.
#[sqlx::test]
async fn reconcile_keeps_going_until_the_projection_has_every_command(pool: PgPool) {
    use temporalio_common::protos::temporal::api::enums::v1::EventType;
    let track = create_track(&pool, "Lost and found", 2).await.unwrap();
    let units: Vec<Uuid> = track.units.iter().map(|u| u.id).collect();
    let user = Uuid::new_v4();
    with_worker(pool.clone(), |client, temporal, nats, js| async move {
        // a re-publish within this window is dropped as a duplicate, as after a real loss
        let nats = NatsConfig {
            duplicate_window_secs: 2,
            ..nats
        };
        messaging::ensure_streams(&js, &nats).await.unwrap();
        let input = LearningPathInput {
            quiet_period_ms: 300,
            reconcile_interval_ms: 100,
            ..LearningPathInput::new(user, track.id, units.clone())
        };
        let id = client::start(&client, &temporal, input).await.unwrap();
        client::signal_unit_completed(&client, user, track.id, units[0])
            .await
            .unwrap();
        eventually(WAIT, "both commands stored", || async {
            (stream_len(&js, &nats.commands_stream).await >= 2).then_some(())
        })
        .await;
        let mut stream = js.get_stream(&nats.commands_stream).await.unwrap();
        assert!(
            stream.delete_message(2).await.unwrap(),
            "the broker loses seq 2"
        );

        // the first quiet-period pass (resume, then three looks) re-publishes seq 2 and ends
        let handle = client.get_workflow_handle::<LearningPathWorkflow>(id.clone());
        eventually(WAIT, "the first reconcile pass over", || async {
            let events = history(&handle).await?;
            let done = events
                .iter()
                .filter(|e| e.event_type == EventType::ActivityTaskCompleted as i32)
                .count();
            (done >= 4).then_some(())
        })
        .await;
        // and the broker loses it again, after that pass: only a later pass can repair it
        let last = stream.info().await.unwrap().state.last_sequence;
        for sequence in 3..=last {
            if let Ok(message) = stream.get_raw_message(sequence).await
                && decode_command(&message.payload).unwrap().seq == 2
            {
                stream.delete_message(sequence).await.unwrap();
            }
        }
        let (stop, applier) = spawn_applier(&js, &pool, &nats);
        let row = eventually(WAIT, "the lost unit in the projection", || async {
            get_user_progress(&pool, user, track.id)
                .await
                .unwrap()
                .filter(|row| row.completed_unit_ids == vec![units[0]])
        })
        .await;
        assert_eq!(row.version, 2);
        let view = eventually(WAIT, "nothing left unconfirmed", || async {
            let view = client::progress(&client, user, track.id).await.ok()?;
            view.unconfirmed_seqs.is_empty().then_some(view)
        })
        .await;
        assert_eq!(view.seq, 2);
        stop.cancel();
        applier.await.unwrap().unwrap();
    })
    .await;
}
