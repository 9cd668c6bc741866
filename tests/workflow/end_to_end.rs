//! The whole write path, workflow to applier: signals end as the exact rows and events, and
//! a small simulation matches its model.

use super::*;

/// Signals in, rows and events out: the row in PostgreSQL and the events on the events
/// stream are exactly those of the commands the workflow published.
#[sqlx::test]
async fn signals_end_as_the_exact_row_and_events(pool: PgPool) {
    use learning_progress::model::ProgressEvent;
    let track = create_track(&pool, "End to end", 3).await.unwrap();
    let units: Vec<Uuid> = track.units.iter().map(|u| u.id).collect();
    let user = Uuid::new_v4();
    with_worker(pool.clone(), |client, temporal, nats, js| async move {
        let (stop, applier) = spawn_applier(&js, &pool, &nats);
        let input = LearningPathInput::new(user, track.id, units.clone());
        client::start(&client, &temporal, input).await.unwrap();
        let attempt = |id: u128, score: f64| AssessmentRecorded {
            unit_id: units[2],
            attempt_id: Uuid::from_u128(id),
            score,
            max_score: 10.0,
            passed: score >= 7.0,
        };
        client::signal_unit_completed(&client, user, track.id, units[0])
            .await
            .unwrap();
        client::signal_assessment_recorded(&client, user, track.id, attempt(1, 4.0))
            .await
            .unwrap();
        client::signal_assessment_recorded(&client, user, track.id, attempt(2, 9.0))
            .await
            .unwrap();
        client::signal_unit_completed(&client, user, track.id, units[1])
            .await
            .unwrap();
        client::signal_unit_completed(&client, user, track.id, units[2])
            .await
            .unwrap();
        let outcome = client::result(&client, user, track.id).await.unwrap();
        assert!(outcome.unreconciled_seqs.is_empty(), "{outcome:?}");

        let kinds = [
            "track_started",
            "unit_completed",
            "assessment_recorded",
            "assessment_recorded",
            "unit_completed",
            "unit_completed",
            "track_completed",
        ];
        let events: Vec<ProgressEvent> = read_stream(&js, &nats.events_stream, kinds.len(), WAIT)
            .await
            .iter()
            .map(|m| serde_json::from_slice(&m.payload).unwrap())
            .collect();
        let id = workflow_id(user, track.id);
        for (i, event) in events.iter().enumerate() {
            let seq = i as i64 + 1;
            assert_eq!(event.event_id, command_id(&id, seq));
            assert_eq!(event.kind, kinds[i]);
            assert_eq!(event.version, seq, "every command changed the row once");
        }
        assert_eq!(
            stream_len(&js, &nats.events_stream).await,
            kinds.len() as u64
        );

        let row = get_user_progress(&pool, user, track.id)
            .await
            .unwrap()
            .unwrap();
        let last = &events.last().unwrap().progress;
        assert_eq!(last.progress, row);
        assert_eq!(row.status, Status::Completed);
        assert_eq!(row.current_unit_id, None);
        let mut completed = units.clone();
        completed.sort();
        assert_eq!(row.completed_unit_ids, completed);
        assert_eq!(last.percent_complete, 100.0);
        let summary = &last.assessments[&units[2]];
        assert_eq!(summary.attempts, 2);
        assert_eq!(summary.best.attempt_id, Uuid::from_u128(2));
        stop.cancel();
        applier.await.unwrap().unwrap();
    })
    .await;
}

/// The whole write path under a small simulation: every learner's row and ledger match the
/// model of the signals they sent, duplicates included.
#[sqlx::test]
async fn a_small_simulation_ends_with_zero_mismatches(pool: PgPool) {
    use learning_progress::simulate::{self, SimulateConfig};
    with_worker(pool.clone(), |client, temporal, nats, js| async move {
        let (stop, applier) = spawn_applier(&js, &pool, &nats);
        let config = SimulateConfig {
            learners: 6,
            units: 4,
            concurrency: 6,
            seed: 7,
            timeout_secs: 120,
        };
        let report = simulate::run(&client, &temporal, &pool, &config)
            .await
            .unwrap();
        stop.cancel();
        applier.await.unwrap().unwrap();
        assert_eq!(report.learners, 6);
        assert!(report.commands >= 6 * 6, "{report}");
        assert!(report.mismatches.is_empty(), "{report}");
    })
    .await;
}
