//! What a path publishes for a learner's signals and updates: the exact commands in seq
//! order, updates refused with their reason, and malformed signals ignored.

use super::*;

#[sqlx::test]
async fn a_learner_completing_every_unit_publishes_the_exact_commands_in_seq_order(pool: PgPool) {
    let track = create_track(&pool, "Rust basics", 3).await.unwrap();
    let units: Vec<Uuid> = track.units.iter().map(|u| u.id).collect();
    let user = Uuid::new_v4();
    let attempt = AssessmentRecorded {
        unit_id: units[2],
        attempt_id: Uuid::new_v4(),
        score: 7.0,
        max_score: 10.0,
        passed: true,
    };
    with_worker(pool.clone(), |client, temporal, nats, js| async move {
        let input = LearningPathInput {
            // no applier runs here: one reconcile round, then the outcome lists what is missing
            reconcile_rounds: Some(1),
            reconcile_interval_ms: 50,
            ..LearningPathInput::new(user, track.id, units.clone())
        };
        let id = client::start(&client, &temporal, input).await.unwrap();
        assert_eq!(id, format!("learning-path/{user}/{}", track.id));

        client::signal_unit_completed(&client, user, track.id, units[0])
            .await
            .unwrap();
        client::signal_assessment_recorded(&client, user, track.id, attempt.clone())
            .await
            .unwrap();
        // ignored: a duplicate, a unit of another track, a score above the maximum
        client::signal_unit_completed(&client, user, track.id, units[0])
            .await
            .unwrap();
        client::signal_unit_completed(&client, user, track.id, Uuid::new_v4())
            .await
            .unwrap();
        let too_high = AssessmentRecorded {
            attempt_id: Uuid::new_v4(),
            score: 11.0,
            ..attempt.clone()
        };
        client::signal_assessment_recorded(&client, user, track.id, too_high)
            .await
            .unwrap();
        client::signal_unit_completed(&client, user, track.id, units[1])
            .await
            .unwrap();
        client::signal_unit_completed(&client, user, track.id, units[2])
            .await
            .unwrap();

        let outcome = tokio::time::timeout(WAIT, client::result(&client, user, track.id))
            .await
            .expect("the workflow ends after the last unit")
            .unwrap();
        assert_eq!(outcome.seq, 6);
        assert_eq!(outcome.completed_unit_ids, units);
        // the reconcile re-published all six; JetStream dropped them as duplicates
        assert_eq!(outcome.unreconciled_seqs, (1..=6).collect::<Vec<_>>());

        let commands = published(&js, &nats, 6).await;
        assert_eq!(stream_len(&js, &nats.commands_stream).await, 6);
        let workflow_id = workflow_id(user, track.id);
        for (i, command) in commands.iter().enumerate() {
            let seq = i as i64 + 1;
            assert_eq!(command.seq, seq);
            assert_eq!(command.command_id, command_id(&workflow_id, seq));
            assert_eq!((command.user_id, command.track_id), (user, track.id));
        }
        let actions: Vec<Action> = commands.into_iter().map(|c| c.action).collect();
        assert_eq!(
            actions,
            vec![
                Action::TrackStarted {
                    current_unit_id: Some(units[0])
                },
                Action::UnitCompleted {
                    unit_id: units[0],
                    next_unit_id: Some(units[1])
                },
                Action::AssessmentRecorded {
                    unit_id: units[2],
                    attempt_id: attempt.attempt_id,
                    score: 7.0,
                    max_score: 10.0,
                    passed: true,
                },
                Action::UnitCompleted {
                    unit_id: units[1],
                    next_unit_id: Some(units[2])
                },
                Action::UnitCompleted {
                    unit_id: units[2],
                    next_unit_id: None
                },
                Action::TrackCompleted {},
            ]
        );
    })
    .await;
}

#[sqlx::test]
async fn updates_outside_the_track_are_rejected_and_publish_nothing(pool: PgPool) {
    let track = create_track(&pool, "Rust basics", 3).await.unwrap();
    let units: Vec<Uuid> = track.units.iter().map(|u| u.id).collect();
    let user = Uuid::new_v4();
    with_worker(pool.clone(), |client, temporal, nats, js| async move {
        let input = LearningPathInput {
            reconcile_rounds: Some(0),
            ..LearningPathInput::new(user, track.id, units.clone())
        };
        client::start(&client, &temporal, input).await.unwrap();

        let foreign = client::complete_unit(&client, user, track.id, Uuid::new_v4()).await;
        assert!(
            matches!(&foreign, Err(ClientError::Rejected { reason, .. }) if reason.contains("not part of track")),
            "{foreign:?}"
        );
        let view = client::complete_unit(&client, user, track.id, units[0]).await.unwrap();
        assert_eq!(view.unit_ids, units);
        let again = client::complete_unit(&client, user, track.id, units[0]).await;
        assert!(
            matches!(&again, Err(ClientError::Rejected { reason, .. }) if reason.contains("already completed")),
            "{again:?}"
        );
        let bad_score = AssessmentRecorded {
            unit_id: units[2],
            attempt_id: Uuid::new_v4(),
            score: 3.0,
            max_score: 0.0,
            passed: false,
        };
        let bad = client::record_assessment(&client, user, track.id, bad_score).await;
        assert!(matches!(bad, Err(ClientError::Rejected { .. })), "{bad:?}");

        let view = eventually(WAIT, "the unit completion to be published", || async {
            let view = client::progress(&client, user, track.id).await.unwrap();
            (view.seq == 2 && view.pending == 0).then_some(view)
        })
        .await;
        assert_eq!(view.completed_unit_ids, vec![units[0]]);
        assert_eq!(view.current_unit_id, Some(units[1]));
        assert!(!view.track_completed);
        assert_eq!(stream_len(&js, &nats.commands_stream).await, 2);

        client::complete_unit(&client, user, track.id, units[1]).await.unwrap();
        client::complete_unit(&client, user, track.id, units[2]).await.unwrap();
        let outcome = tokio::time::timeout(WAIT, client::result(&client, user, track.id))
            .await
            .expect("the workflow ends after the last unit")
            .unwrap();
        assert_eq!(outcome.seq, 5);
        let kinds: Vec<&str> = published(&js, &nats, 5).await.iter().map(|c| c.kind()).collect();
        assert_eq!(
            kinds,
            ["track_started", "unit_completed", "unit_completed", "unit_completed", "track_completed"]
        );
    })
    .await;
}

/// Other SDKs' JSON converters may write `NaN`, `null` or a string where a number belongs:
/// such a signal is ignored with its reason, never wedging the run, and an unknown field is
/// no reason to refuse one.
#[sqlx::test]
async fn malformed_signal_payloads_are_ignored_and_the_path_goes_on(pool: PgPool) {
    use temporalio_client::{UntypedSignal, UntypedWorkflow, WorkflowSignalOptions};
    use temporalio_common::data_converters::RawValue;
    let track = create_track(&pool, "Malformed signals", 2).await.unwrap();
    let units: Vec<Uuid> = track.units.iter().map(|u| u.id).collect();
    let user = Uuid::new_v4();
    with_worker(pool.clone(), |client, temporal, nats, js| async move {
        let (stop, applier) = spawn_applier(&js, &pool, &nats);
        let id = client::start(&client, &temporal, LearningPathInput::new(user, track.id, units.clone()))
            .await
            .unwrap();
        let (u0, attempt) = (units[0], Uuid::new_v4());
        let bodies = [
            ("assessment_recorded", format!(r#"{{"unit_id":"{u0}","attempt_id":"{attempt}","score":NaN,"max_score":10,"passed":true}}"#)),
            ("assessment_recorded", format!(r#"{{"unit_id":"{u0}","attempt_id":"{attempt}","score":"8","max_score":10,"passed":true}}"#)),
            ("unit_completed", r#"{"unit_id":null}"#.to_owned()),
            ("unit_completed", "{}".to_owned()),
            ("unit_completed", format!(r#"{{"unit_id":"{u0}","completed_by":"another sdk"}}"#)),
        ];
        for (signal, body) in bodies {
            client
                .get_workflow_handle::<UntypedWorkflow>(id.clone())
                .signal(
                    UntypedSignal::new(signal),
                    RawValue::new(vec![workflow::json_payload(body.into_bytes())]),
                    WorkflowSignalOptions::default(),
                )
                .await
                .unwrap();
        }
        client::signal_unit_completed(&client, user, track.id, units[1])
            .await
            .unwrap();
        let outcome = tokio::time::timeout(WAIT, client::result(&client, user, track.id))
            .await
            .expect("the run finishes despite the malformed signals")
            .unwrap();
        assert_eq!(outcome.completed_unit_ids, units);
        let view = client::progress(&client, user, track.id).await.unwrap();
        assert_eq!(view.ignored_signals, 4, "{view:?}");
        stop.cancel();
        applier.await.unwrap().unwrap();
    })
    .await;
}
