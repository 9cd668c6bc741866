//! `learning-progress xapi-forward` as its own process: killed mid-batch and restarted, and
//! its backfill of a learner's or a track's history from the ledger.

use tokio::process::Command;

use super::*;
use crate::common::binary::database_url;

/// The binary's environment for `nats` and the test's database.
async fn binary_env(pool: &PgPool, nats: &NatsConfig, ralph: &Ralph) -> Vec<(String, String)> {
    let lrs = ralph.lrs(XapiVersion::V1_0_3);
    let xapi = xapi_config();
    [
        ("DATABASE_URL", database_url(pool).await),
        ("DATABASE_MAX_CONNECTIONS", "2".to_owned()),
        ("XAPI_LRS_URL", lrs.lrs_url),
        ("XAPI_LRS_USERNAME", USER.to_owned()),
        ("XAPI_LRS_PASSWORD", PASSWORD.to_owned()),
        ("XAPI_HOME_PAGE", xapi.home_page),
        ("XAPI_ACTIVITY_BASE", xapi.activity_base),
        ("RUST_LOG", "warn".to_owned()),
    ]
    .into_iter()
    .chain(crate::common::binary::nats_env(nats))
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

fn forwarder(env: &[(String, String)], args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_learning-progress"));
    command
        .arg("xapi-forward")
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .kill_on_drop(true);
    command
}

#[sqlx::test]
async fn a_forwarder_killed_mid_batch_and_restarted_leaves_no_duplicate_in_the_lrs(pool: PgPool) {
    let ralph = Ralph::start().await;
    let track = create_track(&pool, "Go", 3).await.unwrap();
    let learners: Vec<Uuid> = (0..6).map(|_| Uuid::new_v4()).collect();
    let (nats, js) = with_learners(&pool, &track, &learners).await;
    let ledger = ledger(&pool, &learners).await;
    let mut env = binary_env(&pool, &nats, &ralph).await;
    let durable = format!("xapi-{}", Uuid::new_v4().simple());
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    env.extend([
        ("XAPI_DURABLE".to_owned(), durable.clone()),
        ("XAPI_BATCH_SIZE".to_owned(), "2".to_owned()),
        // a killed forwarder's events come back soon
        ("XAPI_ACK_WAIT_SECS".to_owned(), "3".to_owned()),
        ("XAPI_LRS_TIMEOUT_SECS".to_owned(), "2".to_owned()),
        (
            "XAPI_METRICS_ADDR".to_owned(),
            format!("127.0.0.1:{metrics_port}"),
        ),
    ]);
    let spawn = || {
        forwarder(&env, &[])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the forwarder starts")
    };

    // SIGKILL while a batch is delivered and unacknowledged, as often as it takes (up to five)
    let (mut kills, mut killed_mid_batch) = (0, 0);
    for _ in 0..5 {
        let before = ralph.stored();
        if before >= ledger.len() {
            break;
        }
        let mut child = spawn();
        eventually(WAIT, "the forwarder to send more statements", || async {
            (ralph.stored() > before).then_some(())
        })
        .await;
        child.start_kill().unwrap();
        child.wait().await.unwrap();
        kills += 1;
        let info = consumer_info(&js, &nats, &durable).await.unwrap();
        if info.num_ack_pending > 0 {
            killed_mid_batch += 1;
        }
    }
    assert!(killed_mid_batch > 0, "no kill hit a batch in flight");
    eprintln!(
        "{kills} SIGKILLs, {killed_mid_batch} with events delivered and unacknowledged, {} of {} statements stored by then",
        ralph.stored(),
        ledger.len()
    );
    let mut child = spawn();
    eventually(WAIT, "every event forwarded after the kills", || async {
        (consumer_pending(&js, &nats, &durable).await == Some(0)).then_some(())
    })
    .await;
    // its metrics say it caught up
    let metrics = format!("http://127.0.0.1:{metrics_port}/metrics");
    eventually(WAIT, "the lag metric at 0", || async {
        let text = reqwest::get(&metrics).await.ok()?.text().await.ok()?;
        (text.contains("xapi_forward_lag_events 0")
            && text.contains("xapi_statements_forwarded_total"))
        .then_some(())
    })
    .await;
    child.start_kill().unwrap();
    assert_eq!(
        ralph.stored(),
        ledger.len(),
        "Ralph's file holds each statement once"
    );
    check_against_ledger(&ralph.statements().await, &ledger);
    delete_streams(&js, &nats).await;
}

#[sqlx::test]
async fn backfill_sends_one_learners_history_from_the_ledger_and_says_how_many(pool: PgPool) {
    let ralph = Ralph::start().await;
    let track = create_track(&pool, "Python", 3).await.unwrap();
    let learners = [Uuid::new_v4(), Uuid::new_v4()];
    let (nats, js) = with_learners(&pool, &track, &learners).await;
    let env = binary_env(&pool, &nats, &ralph).await;
    let user = learners[0].to_string();
    for _ in 0..2 {
        let output = forwarder(&env, &["--backfill-user", &user])
            .output()
            .await
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&output.stdout).trim(),
            "sent 7 statements"
        );
    }
    // once each, and only that learner's
    assert_eq!(ralph.stored(), 7);
    check_against_ledger(
        &ralph.statements().await,
        &ledger(&pool, &learners[..1]).await,
    );

    let track_id = track.id.to_string();
    let output = forwarder(&env, &["--backfill-track", &track_id])
        .output()
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "sent 14 statements"
    );
    assert_eq!(ralph.stored(), 14);
    check_against_ledger(&ralph.statements().await, &ledger(&pool, &learners).await);
    delete_streams(&js, &nats).await;
}
