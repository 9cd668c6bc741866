//! NATS credentials, TLS and the documented per-role permissions.

use super::*;

#[sqlx::test]
async fn a_missing_nats_credentials_or_certificate_file_stops_start_up_with_a_clear_error(
    pool: PgPool,
) {
    let (nats, js) = common::isolated_nats().await;
    let missing = NatsConfig {
        creds: Some("/nonexistent/api.creds".into()),
        ..nats.clone()
    };
    let verifier = Verifier::from_config(&auth_config()).await.unwrap();
    let started = ApiState::start(
        pool,
        &missing,
        verifier,
        api_config(),
        CancellationToken::new(),
    )
    .await;
    let Err(error) = started else {
        panic!("an API started without its credentials file");
    };
    let error = learning_progress::telemetry::causes(&error);
    assert!(
        error.contains("reading the NATS credentials file /nonexistent/api.creds (NATS_CREDS)")
            && error.contains("No such file"),
        "{error}"
    );

    let missing = NatsConfig {
        tls_ca: Some("/nonexistent/ca.pem".into()),
        ..nats.clone()
    };
    let error = messaging::connect(&missing, "worker").await.unwrap_err();
    assert!(
        error
            .to_string()
            .contains("reading /nonexistent/ca.pem (NATS_TLS_CA)"),
        "{error}"
    );
    common::delete_streams(&js, &nats).await;
}

/// The default stream names and subject prefix, as `deploy/nats/permissions.conf` names them,
/// as the user `role` on `server`.
fn as_role(server: &common::NatsServer, role: &str) -> NatsConfig {
    let defaults = NatsConfig::isolated("", "unused");
    NatsConfig {
        url: format!("nats://{role}:{role}-password@127.0.0.1:{}", server.port),
        subject_prefix: "progress".to_owned(),
        commands_stream: "PROGRESS_COMMANDS".to_owned(),
        events_stream: "PROGRESS_EVENTS".to_owned(),
        dlq_stream: "PROGRESS_DLQ".to_owned(),
        ..defaults
    }
}

#[sqlx::test]
async fn each_role_does_its_work_with_the_documented_nats_permissions_and_no_more(pool: PgPool) {
    use learning_progress::applier::{self, ApplierConfig, Seams};
    use learning_progress::model::{Action, ProgressCommand};

    let permissions =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nats/permissions.conf");
    let server = common::NatsServer::with_config(
        &permissions,
        &[
            ("NATS_API_PASSWORD", "api-password"),
            ("NATS_APPLIER_PASSWORD", "applier-password"),
            ("NATS_WORKER_PASSWORD", "worker-password"),
            ("NATS_XAPI_PASSWORD", "xapi-password"),
            ("NATS_OPERATOR_PASSWORD", "operator-password"),
        ],
    )
    .await;
    let (api_nats, applier_nats, worker_nats) = (
        as_role(&server, "api"),
        as_role(&server, "applier"),
        as_role(&server, "worker"),
    );
    let worker = jetstream::new(messaging::connect(&worker_nats, "worker").await.unwrap());
    messaging::ensure_streams(&worker, &worker_nats)
        .await
        .unwrap();
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let applier_js = jetstream::new(messaging::connect(&applier_nats, "applier").await.unwrap());
    let applier = tokio::spawn(applier::run(
        applier_js,
        pool.clone(),
        applier_nats.clone(),
        ApplierConfig::default(),
        Seams::default(),
        shutdown.clone(),
    ));
    let api = spawn_api(&pool, &api_nats).await;
    common::eventually(
        Duration::from_secs(5),
        "the API to follow the events",
        || {
            let following = api.state.feed().following();
            async move { following.then_some(()) }
        },
    )
    .await;

    let track = create_track(&pool, "Permissions", 3).await.unwrap();
    let user = Uuid::new_v4();
    let start = ProgressCommand {
        command_id: Uuid::new_v4(),
        user_id: user,
        track_id: track.id,
        seq: 1,
        occurred_at: Utc::now(),
        action: Action::TrackStarted {
            current_unit_id: Some(track.units[0].id),
        },
    };
    messaging::publish_command(&worker, &worker_nats, &start)
        .await
        .unwrap()
        .await
        .unwrap();
    let path = format!("{}?min_version=1", progress_path(user, track.id));
    let token = token_for(user);
    common::eventually(
        Duration::from_secs(10),
        "the applied command's event",
        || async {
            let response = api.get(&path, Some(&token)).await;
            (response.status() == StatusCode::OK
                && response.headers().get("x-progress-behind").is_none())
            .then_some(())
        },
    )
    .await;
    assert!(!applier.is_finished(), "the applier runs");

    // neither the API nor the worker may announce progress
    let observer = jetstream::new(messaging::connect(&applier_nats, "observer").await.unwrap());
    let events_before = common::ever_stored(&observer, "PROGRESS_EVENTS").await;
    let forged = serde_json::to_vec(&start).unwrap();
    for (role, nats) in [("api", &api_nats), ("worker", &worker_nats)] {
        let js = jetstream::new(messaging::connect(nats, role).await.unwrap());
        let published = tokio::time::timeout(Duration::from_secs(2), async {
            js.publish(nats.event_subject(user, track.id), forged.clone().into())
                .await?
                .await
        })
        .await;
        assert!(!matches!(published, Ok(Ok(_))), "{role} published an event");
    }
    assert_eq!(
        common::ever_stored(&observer, "PROGRESS_EVENTS").await,
        events_before
    );
}

/// A JetStream request or publish the server must refuse: it errors (the permission violation
/// leaves it unanswered) rather than succeed.
async fn refused<T, E>(what: &str, request: impl std::future::IntoFuture<Output = Result<T, E>>) {
    let outcome = tokio::time::timeout(Duration::from_secs(10), request.into_future()).await;
    assert!(!matches!(outcome, Ok(Ok(_))), "the operator could {what}");
}

#[sqlx::test]
async fn the_operators_commands_work_with_the_documented_nats_permissions_and_no_more(
    pool: PgPool,
) {
    use async_nats::jetstream::consumer::PullConsumer;
    use learning_progress::applier::{self, ApplierConfig, Seams};
    use learning_progress::model::{Action, ProgressCommand};
    use learning_progress::ops::{dlq, erase, rebuild, status};
    use learning_progress::track_changes::{Change, apply_change, outbox};
    use learning_progress::workflow::{self, TemporalConfig};

    let permissions =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nats/permissions.conf");
    let server = common::NatsServer::with_config(
        &permissions,
        &[
            ("NATS_API_PASSWORD", "api-password"),
            ("NATS_APPLIER_PASSWORD", "applier-password"),
            ("NATS_WORKER_PASSWORD", "worker-password"),
            ("NATS_XAPI_PASSWORD", "xapi-password"),
            ("NATS_OPERATOR_PASSWORD", "operator-password"),
        ],
    )
    .await;
    let (applier_nats, worker_nats, nats) = (
        as_role(&server, "applier"),
        as_role(&server, "worker"),
        as_role(&server, "operator"),
    );
    let worker = jetstream::new(messaging::connect(&worker_nats, "worker").await.unwrap());
    messaging::ensure_streams(&worker, &worker_nats)
        .await
        .unwrap();
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let applier_js = jetstream::new(messaging::connect(&applier_nats, "applier").await.unwrap());
    let applier = tokio::spawn(applier::run(
        applier_js,
        pool.clone(),
        applier_nats.clone(),
        ApplierConfig::default(),
        Seams::default(),
        shutdown.clone(),
    ));
    let js = jetstream::new(messaging::connect(&nats, "operator").await.unwrap());
    let observer = jetstream::new(messaging::connect(&applier_nats, "observer").await.unwrap());

    // a learner with progress, and a command the applier dead-letters
    let track = create_track(&pool, "Operators", 3).await.unwrap();
    let (learner, other) = (Uuid::new_v4(), Uuid::new_v4());
    let start = ProgressCommand {
        command_id: Uuid::new_v4(),
        user_id: learner,
        track_id: track.id,
        seq: 1,
        occurred_at: Utc::now(),
        action: Action::TrackStarted {
            current_unit_id: Some(track.units[0].id),
        },
    };
    messaging::publish_command(&worker, &worker_nats, &start)
        .await
        .unwrap()
        .await
        .unwrap();
    let malformed = |user: Uuid| {
        let (worker, subject) = (worker.clone(), worker_nats.command_subject(user, track.id));
        async move {
            worker
                .publish(subject, "not a command".into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
    };
    malformed(learner).await;
    let mut dead_stream = dlq::stream(&js, &nats).await.unwrap();
    let listing = dead_stream.clone();
    let letters = move |filter: dlq::Filter| {
        let mut stream = listing.clone();
        async move { dlq::list(&mut stream, &filter).await.unwrap() }
    };
    let first = common::eventually(Duration::from_secs(10), "a dead letter", || async {
        letters(dlq::Filter::default()).await.pop()
    })
    .await;
    assert_eq!(first.user_id, Some(learner));
    common::eventually(Duration::from_secs(10), "the start applied", || async {
        (common::ever_stored(&observer, "PROGRESS_EVENTS").await >= 1).then_some(())
    })
    .await;

    // status
    let lag = status::lag(&js, &pool, &nats, "progress-applier")
        .await
        .unwrap();
    assert_eq!(lag.dead_letters.values().sum::<u64>(), 1, "{lag:?}");

    // dlq show, redrive (the applier refuses it again), purge
    assert_eq!(
        dlq::show(&mut dead_stream, first.seq)
            .await
            .unwrap()
            .subject,
        first.subject
    );
    dlq::redrive(&js, &dead_stream, &nats, &first)
        .await
        .unwrap();
    let again = common::eventually(Duration::from_secs(10), "the redriven letter", || async {
        letters(dlq::Filter::default())
            .await
            .into_iter()
            .find(|letter| letter.seq != first.seq)
    })
    .await;
    assert_eq!(again.user_id, Some(learner));
    malformed(other).await;
    let others = dlq::Filter {
        user: Some(other),
        ..dlq::Filter::default()
    };
    let purged = common::eventually(Duration::from_secs(10), "another dead letter", || async {
        letters(others.clone()).await.pop()
    })
    .await;
    dlq::remove(&dead_stream, purged.seq).await.unwrap();
    let left: Vec<u64> = letters(dlq::Filter::default())
        .await
        .iter()
        .map(|l| l.seq)
        .collect();
    assert_eq!(left, [again.seq]);
    // the applier's part is done; stopped, it neither announces the changes below (its sweep
    // would race the operator) nor takes the command left waiting at the end
    shutdown.cancel();
    applier.await.unwrap().unwrap();

    // rebuild: a lost row is rewritten and announced
    sqlx::query("delete from user_progress where user_id = $1")
        .bind(learner)
        .execute(&pool)
        .await
        .unwrap();
    let scope = rebuild::Scope {
        user: Some(learner),
        track: None,
    };
    let report = rebuild::rebuild(&pool, Some((&js, &nats)), scope, 100, false, &mut |_| {})
        .await
        .unwrap();
    assert_eq!((report.rewritten, report.unannounced), (1, 0), "{report:?}");

    // tracks: a change's events
    let change = Change::AddUnit {
        title: "Added by an operator".to_owned(),
        position: None,
        assessment: false,
    };
    let applied = apply_change(&pool, track.id, &change, false, false, &mut |_, _| {})
        .await
        .unwrap();
    let published = outbox::publish_change(
        &pool,
        &js,
        &nats,
        track.id,
        applied.units_version,
        &mut |_| {},
    )
    .await
    .unwrap();
    assert_eq!(published, 1);

    // erase: the learner's events purged, their dead letter deleted, tombstones published
    let address = std::env::var("TEMPORAL_ADDRESS").unwrap_or_else(|_| "127.0.0.1:7233".to_owned());
    let temporal = TemporalConfig::new(address, format!("test-{}", Uuid::new_v4()));
    let stores = erase::Stores {
        pool: pool.clone(),
        js: js.clone(),
        nats: nats.clone(),
        temporal: workflow::connect(&temporal, "operator").await.unwrap(),
    };
    let survey = erase::survey(&stores, learner).await.unwrap();
    let erased = erase::erase(&stores, &survey, Duration::from_secs(30), |_| {})
        .await
        .unwrap();
    assert!(erased.events >= 3, "{erased:?}");
    assert_eq!(
        (erased.dead_letters, erased.tombstones),
        (1, 1),
        "{erased:?}"
    );
    assert!(letters(dlq::Filter::default()).await.is_empty());

    // what it may not do: take commands from the applier's durable...
    let waiting = ProgressCommand {
        command_id: Uuid::new_v4(),
        user_id: other,
        ..start.clone()
    };
    messaging::publish_command(&worker, &worker_nats, &waiting)
        .await
        .unwrap()
        .await
        .unwrap();
    let commands = js.get_stream("PROGRESS_COMMANDS").await.unwrap();
    let durable: PullConsumer = commands.get_consumer("progress-applier").await.unwrap();
    let pull = durable
        .fetch()
        .max_messages(1)
        .expires(Duration::from_secs(1))
        .messages()
        .await;
    let taken = match pull {
        // the refused pull is never answered: nothing arrives
        Ok(batch) => tokio::time::timeout(Duration::from_secs(5), batch.collect::<Vec<_>>())
            .await
            .unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    assert!(
        taken.iter().all(|m| m.is_err()),
        "the operator took a command from the applier's durable"
    );
    refused(
        "create a consumer of commands",
        commands.create_consumer(async_nats::jetstream::consumer::pull::Config {
            durable_name: Some("operator".to_owned()),
            ..Default::default()
        }),
    )
    .await;
    let lag = status::lag(&js, &pool, &nats, "progress-applier")
        .await
        .unwrap();
    assert_eq!(lag.commands_waiting, 1, "{lag:?}");
    // ...write a dead letter, purge all dead letters, delete a stream
    let dead_before = common::ever_stored(&observer, "PROGRESS_DLQ").await;
    refused("publish a dead letter", async {
        js.publish(nats.dlq_subject("forged"), "forged".into())
            .await?
            .await
    })
    .await;
    assert_eq!(
        common::ever_stored(&observer, "PROGRESS_DLQ").await,
        dead_before
    );
    refused("purge the dead-letter stream", dead_stream.purge()).await;
    refused(
        "delete the commands stream",
        js.delete_stream("PROGRESS_COMMANDS"),
    )
    .await;
    assert!(observer.get_stream("PROGRESS_COMMANDS").await.is_ok());
}
