//! The forwarder in this process: every statement reaches the LRS once, also on a replay;
//! a refused statement is dead-lettered, an unreachable LRS retried; and the forwarder works
//! with the NATS permissions `deploy/nats/permissions.conf` documents.

use crate::common::commands::publish;

use super::statements::{admin_token, spawn_api, view};
use super::*;

#[sqlx::test]
async fn learners_statements_reach_a_real_lrs_once_each_matching_the_ledger_even_when_replayed(
    pool: PgPool,
) {
    let ralph = Ralph::start().await;
    let track = create_track(&pool, "Rust basics", 3).await.unwrap();
    let learners = [Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4()];
    let (nats, js) = with_learners(&pool, &track, &learners).await;
    let ledger = ledger(&pool, &learners).await;
    assert_eq!(ledger.len(), 21);

    let config = forward_config(&ralph, XapiVersion::V2_0_0);
    let metrics = forward_until(&pool, &nats, &js, config.clone(), || async {
        eventually(WAIT, "every statement in the LRS", || async {
            (ralph.statements().await.len() >= ledger.len()).then_some(())
        })
        .await;
    })
    .await;
    check_against_ledger(&ralph.statements().await, &ledger);
    assert_eq!(metrics.forwarded.get(), 21);
    assert_eq!(metrics.refused.get(), 0);
    // titles, parent and registration: one registration per learner and track
    let statements = ralph.statements().await;
    let unit = statements
        .iter()
        .find(|s| s["object"]["id"].as_str().unwrap().contains("/units/"))
        .unwrap();
    assert_eq!(
        unit["context"]["contextActivities"]["parent"][0]["definition"]["name"]["en"],
        "Rust basics"
    );
    let registrations: BTreeSet<&str> = statements
        .iter()
        .map(|s| s["context"]["registration"].as_str().unwrap())
        .collect();
    assert_eq!(registrations.len(), learners.len());

    // the read view gives the statements the LRS holds, but for what each store adds
    let shutdown = CancellationToken::new();
    let base = spawn_api(&pool, &nats, &shutdown).await;
    let (status, _, body) = view(&base, &admin_token(), &[]).await;
    assert_eq!(status, 200);
    let strip = |statement: &Value| {
        let mut statement = statement.clone();
        for added in ["stored", "authority", "version"] {
            statement.as_object_mut().unwrap().remove(added);
        }
        statement
    };
    let served: BTreeMap<String, Value> = body["statements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["id"].as_str().unwrap().to_owned(), strip(s)))
        .collect();
    let held: BTreeMap<String, Value> = statements
        .iter()
        .map(|s| (s["id"].as_str().unwrap().to_owned(), strip(s)))
        .collect();
    assert_eq!(served, held);
    shutdown.cancel();

    // a replay of the whole stream, by a forwarder with a new durable, stores nothing twice
    let replay = ForwardConfig {
        xapi_durable: format!("xapi-{}", Uuid::new_v4().simple()),
        ..config
    };
    let durable = replay.xapi_durable.clone();
    let replayed = forward_until(&pool, &nats, &js, replay, || async {
        eventually(WAIT, "the replay forwarded", || async {
            (consumer_pending(&js, &nats, &durable).await == Some(0)).then_some(())
        })
        .await;
    })
    .await;
    assert_eq!(
        replayed.forwarded.get(),
        21,
        "the LRS took the replay as duplicates"
    );
    assert_eq!(
        ralph.stored(),
        ledger.len(),
        "Ralph's file holds each statement once"
    );
    check_against_ledger(&ralph.statements().await, &ledger);
    delete_streams(&js, &nats).await;
}

#[sqlx::test]
async fn a_statement_the_lrs_refuses_is_dead_lettered_with_its_answer_and_the_rest_go_through(
    pool: PgPool,
) {
    let ralph = Ralph::start().await;
    let track = create_track(&pool, "SQL", 3).await.unwrap();
    let learners = [Uuid::new_v4(), Uuid::new_v4()];
    let (nats, js) = with_learners(&pool, &track, &learners).await;
    let ledger = ledger(&pool, &learners).await;
    // the LRS already holds another statement under the id of one command's statement
    let (taken, _, _) = &ledger[3];
    let squatter = json!({
        "id": statement_id(*taken),
        "actor": { "objectType": "Agent", "account": { "homePage": "https://elsewhere.example", "name": "someone" } },
        "verb": { "id": "http://adlnet.gov/expapi/verbs/experienced" },
        "object": { "objectType": "Activity", "id": "https://elsewhere.example/page" },
    });
    assert!(ralph.post(&squatter).await.is_success());
    // an erasure's tombstone on the events stream announces no command: no statement, and no
    // dead letter either
    let erased =
        learning_progress::model::ErasedEvent::new(Uuid::new_v4(), track.id, 3, Utc::now());
    learning_progress::messaging::publish_erased(&js, &nats, &erased)
        .await
        .unwrap()
        .await
        .unwrap();

    let config = forward_config(&ralph, XapiVersion::V1_0_3);
    let durable = config.xapi_durable.clone();
    let metrics = forward_until(&pool, &nats, &js, config, || async {
        eventually(WAIT, "every event handled", || async {
            (consumer_pending(&js, &nats, &durable).await == Some(0)).then_some(())
        })
        .await;
    })
    .await;
    assert_eq!(metrics.refused.get(), 1);
    assert_eq!(metrics.forwarded.get(), ledger.len() as u64 - 1);
    let ours: Vec<Value> = ralph
        .statements()
        .await
        .into_iter()
        .filter(|s| s["verb"]["id"] != "http://adlnet.gov/expapi/verbs/experienced")
        .collect();
    let rest: Vec<_> = ledger
        .iter()
        .filter(|(id, _, _)| id != taken)
        .cloned()
        .collect();
    check_against_ledger(&ours, &rest);

    assert_eq!(common::stream_len(&js, &nats.dlq_stream).await, 1);
    let dead = common::read_stream(&js, &nats.dlq_stream, 1, WAIT).await;
    let headers = dead[0].headers.as_ref();
    assert_eq!(header_str(headers, "lp-dlq-reason"), Some(forward::REFUSED));
    assert_eq!(
        header_str(headers, "lp-dlq-stream"),
        Some(nats.events_stream.as_str())
    );
    let error = header_str(headers, "lp-dlq-error").unwrap();
    assert!(
        error.starts_with("409") && error.contains("Differing"),
        "{error}"
    );
    let event: ProgressEvent = serde_json::from_slice(&dead[0].payload).unwrap();
    assert_eq!(event.event_id, *taken);
    delete_streams(&js, &nats).await;
}

#[sqlx::test]
async fn an_unreachable_lrs_is_retried_with_backoff_and_never_dead_letters(pool: PgPool) {
    let ralph = Ralph::start().await;
    let target: &'static str = ralph.base.trim_start_matches("http://").to_owned().leak();
    let proxy = common::Proxy::start(target).await;
    let track = create_track(&pool, "Haskell", 3).await.unwrap();
    let learners = [Uuid::new_v4()];
    let (nats, js) = with_learners(&pool, &track, &learners).await;
    let ledger = ledger(&pool, &learners).await;

    proxy.cut();
    let mut lrs = ralph.lrs(XapiVersion::V1_0_3);
    lrs.lrs_url = format!("http://127.0.0.1:{}/xAPI", proxy.port);
    let config = ForwardConfig {
        lrs,
        max_backoff_ms: 300,
        ..forward_config(&ralph, XapiVersion::V1_0_3)
    };
    let durable = config.xapi_durable.clone();
    let shutdown = CancellationToken::new();
    let metrics = Metrics::new();
    let deps = Deps {
        js: js.clone(),
        pool: pool.clone(),
        nats: nats.clone(),
    };
    let forwarder = tokio::spawn(forward::run(
        deps,
        xapi_config(),
        config,
        metrics.clone(),
        shutdown.clone(),
    ));
    let failures = metrics.failures.with_label_values(&["lrs"]);
    eventually(WAIT, "several failed attempts", || async {
        (failures.get() >= 3).then_some(())
    })
    .await;
    assert_eq!(ralph.stored(), 0);
    assert_eq!(common::stream_len(&js, &nats.dlq_stream).await, 0);
    assert_eq!(consumer_pending(&js, &nats, &durable).await, Some(7));

    proxy.restore();
    eventually(
        WAIT,
        "every event forwarded once the LRS is back",
        || async { (consumer_pending(&js, &nats, &durable).await == Some(0)).then_some(()) },
    )
    .await;
    shutdown.cancel();
    forwarder.await.unwrap().unwrap();
    check_against_ledger(&ralph.statements().await, &ledger);
    assert_eq!(ralph.stored(), 7);
    assert_eq!(common::stream_len(&js, &nats.dlq_stream).await, 0);
    assert_eq!(metrics.refused.get(), 0);
    delete_streams(&js, &nats).await;
}

#[sqlx::test]
async fn the_forwarder_works_with_the_documented_nats_permissions_and_no_more(pool: PgPool) {
    use learning_progress::messaging;
    use learning_progress::model::{Action, ProgressCommand};

    let ralph = Ralph::start().await;
    let permissions = repo().join("deploy/nats/permissions.conf");
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
    // the default stream names and subject prefix, which the file names, as user `role`
    let as_role = |role: &str| NatsConfig {
        url: format!("nats://{role}:{role}-password@127.0.0.1:{}", server.port),
        subject_prefix: "progress".to_owned(),
        commands_stream: "PROGRESS_COMMANDS".to_owned(),
        events_stream: "PROGRESS_EVENTS".to_owned(),
        dlq_stream: "PROGRESS_DLQ".to_owned(),
        ..NatsConfig::isolated("", "unused")
    };
    let (worker_nats, applier_nats, xapi_nats) =
        (as_role("worker"), as_role("applier"), as_role("xapi"));
    let connect = |nats: NatsConfig, role: &'static str| async move {
        jetstream::new(messaging::connect(&nats, role).await.unwrap())
    };
    let worker = connect(worker_nats.clone(), "worker").await;
    messaging::ensure_streams(&worker, &worker_nats)
        .await
        .unwrap();
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    tokio::spawn(applier::run(
        connect(applier_nats.clone(), "applier").await,
        pool.clone(),
        applier_nats,
        ApplierConfig::default(),
        Seams::default(),
        shutdown.clone(),
    ));
    let xapi_js = connect(xapi_nats.clone(), "xapi").await;
    let config = forward_config(&ralph, XapiVersion::V1_0_3);
    let durable = config.xapi_durable.clone();
    let metrics = Metrics::new();
    let deps = Deps {
        js: xapi_js.clone(),
        pool: pool.clone(),
        nats: xapi_nats.clone(),
    };
    let forwarder = tokio::spawn(forward::run(
        deps,
        xapi_config(),
        config,
        metrics.clone(),
        shutdown.clone(),
    ));

    let track = create_track(&pool, "Permissions", 1).await.unwrap();
    let user = Uuid::new_v4();
    let actions = [
        Action::TrackStarted {
            current_unit_id: Some(track.units[0].id),
        },
        Action::TrackCompleted {},
    ];
    for (seq, action) in actions.into_iter().enumerate() {
        let command = ProgressCommand {
            command_id: Uuid::new_v4(),
            user_id: user,
            track_id: track.id,
            seq: seq as i64 + 1,
            occurred_at: Utc::now(),
            action,
        };
        publish(&worker, &worker_nats, &command).await;
    }
    eventually(WAIT, "both statements in the LRS", || async {
        (ralph.statements().await.len() == 2).then_some(())
    })
    .await;
    check_against_ledger(&ralph.statements().await, &ledger(&pool, &[user]).await);
    // and acknowledged: nothing left pending
    eventually(WAIT, "both events acknowledged", || async {
        (consumer_pending(&xapi_js, &xapi_nats, &durable).await == Some(0)).then_some(())
    })
    .await;
    assert!(!forwarder.is_finished(), "the forwarder runs");

    // the forwarder may not announce progress
    let published = tokio::time::timeout(Duration::from_secs(2), async {
        xapi_js
            .publish(xapi_nats.event_subject(user, track.id), "{}".into())
            .await?
            .await
    })
    .await;
    assert!(
        !matches!(published, Ok(Ok(_))),
        "the forwarder published an event"
    );
}
