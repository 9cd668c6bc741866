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
