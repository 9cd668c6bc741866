//! Publishing a command: JetStream's duplicate window, an id reused for another command, and
//! no stream answering (a leader election, a rolling restart).

use super::*;

#[tokio::test]
async fn a_command_published_twice_is_dropped_by_the_duplicate_window() {
    let (nats, js) = isolated_nats().await;
    let command = ProgressCommand {
        command_id: command_id("learning-path/test", 1),
        user_id: Uuid::new_v4(),
        track_id: Uuid::new_v4(),
        seq: 1,
        occurred_at: chrono::Utc::now(),
        action: Action::TrackStarted {
            current_unit_id: None,
        },
    };
    let first = workflow::publish(&js, &nats, &command).await.unwrap();
    let retried = workflow::publish(&js, &nats, &command).await.unwrap();
    assert!(!first.duplicate);
    assert!(retried.duplicate);
    assert_eq!(
        (retried.stream.as_str(), retried.sequence),
        (first.stream.as_str(), first.sequence)
    );
    assert_eq!(stream_len(&js, &nats.commands_stream).await, 1);
    delete_streams(&js, &nats).await;
}

/// Should an id ever be reused for another command, JetStream's duplicate answer must not
/// pass for success: the publish fails with the reason.
#[tokio::test]
async fn an_id_reused_for_another_command_is_an_error_not_a_duplicate() {
    let (nats, js) = isolated_nats().await;
    let first = ProgressCommand {
        command_id: Uuid::new_v4(),
        user_id: Uuid::new_v4(),
        track_id: Uuid::new_v4(),
        seq: 1,
        occurred_at: chrono::Utc::now(),
        action: Action::TrackStarted {
            current_unit_id: None,
        },
    };
    let other = ProgressCommand {
        action: Action::TrackCompleted {},
        ..first.clone()
    };
    workflow::publish(&js, &nats, &first).await.unwrap();
    let failure = workflow::publish(&js, &nats, &other).await.unwrap_err();
    assert!(
        matches!(failure, PublishFailure::Collision { .. }),
        "{failure:?}"
    );
    assert!(
        format!("{failure:#}").contains("another command"),
        "{failure}"
    );
    delete_streams(&js, &nats).await;
}

/// No responders (async-nats' `StreamNotFound`) is how a stream looks while it elects a
/// leader: a publish that meets it is retried, not failed for good.
#[tokio::test]
async fn a_command_no_stream_takes_is_a_transient_failure() {
    let (nats, js) = isolated_nats().await;
    let nowhere = NatsConfig {
        subject_prefix: format!("nowhere{}", Uuid::new_v4().simple()),
        ..nats.clone()
    };
    let command = ProgressCommand {
        command_id: Uuid::new_v4(),
        user_id: Uuid::new_v4(),
        track_id: Uuid::new_v4(),
        seq: 1,
        occurred_at: chrono::Utc::now(),
        action: Action::TrackCompleted {},
    };
    let failure = workflow::publish(&js, &nowhere, &command)
        .await
        .unwrap_err();
    assert!(
        matches!(failure, PublishFailure::Transient { .. }),
        "{failure:?}"
    );
    delete_streams(&js, &nats).await;
}

/// During a leader election or a rolling restart no stream answers for a while: the publish
/// is retried, and the path goes on once the stream is back.
#[sqlx::test]
async fn a_publish_while_no_stream_answers_is_retried_until_it_does(pool: PgPool) {
    use temporalio_client::WorkflowDescribeOptions;
    use temporalio_common::protos::temporal::api::enums::v1::EventType;
    let track = create_track(&pool, "No responders", 1).await.unwrap();
    let units: Vec<Uuid> = track.units.iter().map(|u| u.id).collect();
    let (warm, user) = (Uuid::new_v4(), Uuid::new_v4());
    with_worker(pool.clone(), |client, temporal, nats, js| async move {
        // a first path proves the worker (and its stream set-up) is running
        client::start(
            &client,
            &temporal,
            LearningPathInput::new(warm, track.id, units.clone()),
        )
        .await
        .unwrap();
        eventually(WAIT, "the first path's start stored", || async {
            (stream_len(&js, &nats.commands_stream).await >= 1).then_some(())
        })
        .await;
        js.delete_stream(&nats.commands_stream).await.unwrap();

        client::start(
            &client,
            &temporal,
            LearningPathInput::new(user, track.id, units.clone()),
        )
        .await
        .unwrap();
        // reading or publishing fails while no stream takes the subject, and the run keeps
        // trying: a retried activity, or a local activity's backoff timer, shows it
        let handle =
            client.get_workflow_handle::<LearningPathWorkflow>(workflow_id(user, track.id));
        let retrying = eventually(WAIT, "a retry, or the run's end", || async {
            let described = handle
                .describe(WorkflowDescribeOptions::default())
                .await
                .ok()?;
            if described
                .raw_description
                .pending_activities
                .iter()
                .any(|a| a.attempt >= 2)
            {
                return Some(true);
            }
            let events = history(&handle).await?;
            events
                .iter()
                .find_map(|e| match EventType::try_from(e.event_type) {
                    Ok(EventType::TimerStarted) => Some(true),
                    Ok(EventType::WorkflowExecutionFailed) => Some(false),
                    _ => None,
                })
        })
        .await;
        assert!(retrying, "the run failed instead of retrying the publish");
        messaging::ensure_streams(&js, &nats).await.unwrap();
        let commands = eventually(
            WAIT,
            "the start published once the stream is back",
            || async {
                let stream = js.get_stream(&nats.commands_stream).await.ok()?;
                let last = stream
                    .get_last_raw_message_by_subject(&nats.command_subject(user, track.id))
                    .await
                    .ok()?;
                decode_command(&last.payload).ok()
            },
        )
        .await;
        assert_eq!(commands.seq, 1);
        assert_eq!(commands.kind(), "track_started");
    })
    .await;
}
